"""Overhead of the Python binding against the Rust API, same shape, back to back.

Times ``polyattn.attention`` (forward) and ``polyattn.attention_backward`` (forward +
backward) on float32 ``[8, 4096, 64]`` inputs (N(0, 1) entries), exact engine, and the
Rust API on the same shape through ``tools/examples/time_attention.rs`` (which builds its own
seeded N(0, 1) inputs; the exact engine's time does not depend on the values). The two
alternate for ``--rounds`` rounds (machine load drifts); printed: medians over all
repetitions (Rust: median of its per-round medians), the Python/Rust ratios, the fixed
per-call cost of the binding on a tiny ``[1, 16, 16]`` input, and the CPU model, as one
JSON object.

Usage (from the repository root, after building the example):

    (cd python && cargo build --release --example time_attention)
    python python/bench/overhead.py --example $CARGO_TARGET_DIR/release/examples/time_attention
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time

import numpy as np

import polyattn


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--example", required=True, help="path of the time_attention binary")
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()

    r = np.random.default_rng(7)
    q, k, v, do = (r.standard_normal((a.heads, a.n, a.d)).astype(np.float32) for _ in range(4))
    polyattn.attention(q, k, v)  # warm-up (thread pool, pages)
    fwd, both, rust_fwd, rust_both = [], [], [], []
    cmd = [a.example, "--engine", "exact", "--n", str(a.n), "--d", str(a.d), "--heads", str(a.heads), "--reps", str(a.reps)]
    for _ in range(a.rounds):
        for _ in range(a.reps):
            t = time.perf_counter()
            polyattn.attention(q, k, v)
            fwd.append(time.perf_counter() - t)
            t = time.perf_counter()
            polyattn.attention_backward(q, k, v, do)
            both.append(time.perf_counter() - t)
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rust = json.loads(out.strip().splitlines()[-1])
        rust_fwd.append(rust["fwd_ms"])
        rust_both.append(rust["fwd_bwd_ms"])
    tiny = [x[:1, :16, :16].copy() for x in (q, k, v)]
    calls = []
    for _ in range(2000):
        t = time.perf_counter()
        polyattn.attention(*tiny)
        calls.append(time.perf_counter() - t)
    rust = {"fwd_ms": statistics.median(rust_fwd), "fwd_bwd_ms": statistics.median(rust_both)}
    py_fwd, py_both = 1e3 * statistics.median(fwd), 1e3 * statistics.median(both)
    print(
        json.dumps(
            {
                "cpu": cpu_name(),
                "threads": os.environ.get("RAYON_NUM_THREADS", str(os.cpu_count())),
                "shape": [a.heads, a.n, a.d],
                "dtype": "float32",
                "reps": a.reps,
                "rounds": a.rounds,
                "python_fwd_ms": round(py_fwd, 2),
                "rust_fwd_ms": rust["fwd_ms"],
                "fwd_ratio": round(py_fwd / rust["fwd_ms"], 3),
                "python_fwd_bwd_ms": round(py_both, 2),
                "rust_fwd_bwd_ms": rust["fwd_bwd_ms"],
                "fwd_bwd_ratio": round(py_both / rust["fwd_bwd_ms"], 3),
                "python_call_us_1x16x16": round(1e6 * statistics.median(calls), 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
