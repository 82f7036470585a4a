#!/usr/bin/env python3
"""PyTorch's CPU SDPA and polyattn on the same attention shapes, in one run.

For each shape: torch.nn.functional.scaled_dot_product_attention forward and
forward+backward (median of --reps after a warm-up, torch.set_num_threads(THREADS)),
then `tools/examples/time_attention.rs` (polyattn, RAYON_NUM_THREADS=THREADS, same medians) on
the same shape, and the ratio torch time / polyattn time (> 1: polyattn faster). FLOPs
as FlashAttention counts them (forward 4 n^2 d per head, half when causal; backward
2.5x forward). Not run by CI.

Setup (torch's PyPI wheel pulls ~6 GB of CUDA libraries it does not use on a CPU):
    python3 -m venv ~/venv-torch && ~/venv-torch/bin/pip install torch
    cargo build --release --example time_attention
    ~/venv-torch/bin/python benches/torch_side_by_side.py [--quick] [--threads 2]
        [--out docs/perf/side_by_side.md]
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import time

import torch

# (label, engine, n, d, causal, dtype, extra args for polyattn)
FULL = [
    ("exact f32", "exact", 1024, 64, False, "f32", []),
    ("exact f32", "exact", 4096, 64, False, "f32", []),
    ("exact f32", "exact", 16384, 64, False, "f32", []),
    ("exact f32", "exact", 1024, 128, False, "f32", []),
    ("exact f32", "exact", 4096, 128, False, "f32", []),
    ("exact f32", "exact", 16384, 128, False, "f32", []),
    ("exact f32 causal", "exact", 4096, 64, True, "f32", []),
    ("exact f32 causal", "exact", 16384, 64, True, "f32", []),
    ("exact f64", "exact", 4096, 64, False, "f64", []),
    ("exact f32 small head", "exact", 16384, 8, False, "f32", []),
    ("exact f32 small head", "exact", 16384, 16, False, "f32", []),
    ("poly eps 1e-3", "poly", 65536, 8, False, "f32", ["--eps", "1e-3", "--qk-scale", "0.25"]),
    ("poly eps 1e-3 causal", "poly", 65536, 8, True, "f32", ["--eps", "1e-3", "--qk-scale", "0.25"]),
    ("exact f32 (poly's shape)", "exact", 65536, 8, False, "f32", []),
]
QUICK = [FULL[1], FULL[6], FULL[8], FULL[9]]


def flops(n, d, causal):
    return 4.0 * n * n * d * (0.5 if causal else 1.0)


def time_torch(n, d, causal, dtype, reps, qk_scale):
    dt = torch.float64 if dtype == "f64" else torch.float32
    g = torch.Generator().manual_seed(7)
    q = (torch.randn(1, 1, n, d, generator=g, dtype=dt) * qk_scale).requires_grad_(True)
    k = (torch.randn(1, 1, n, d, generator=g, dtype=dt) * qk_scale).requires_grad_(True)
    v = torch.randn(1, 1, n, d, generator=g, dtype=dt).requires_grad_(True)
    do = torch.randn(1, 1, n, d, generator=g, dtype=dt)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    fwd, both = [], []
    for rep in range(reps + 1):
        for t in (q, k, v):
            t.grad = None
        t0 = time.perf_counter()
        o = sdpa(q, k, v, is_causal=causal)
        t1 = time.perf_counter()
        o.backward(do)
        t2 = time.perf_counter()
        if rep > 0:
            fwd.append(t1 - t0)
            both.append(t2 - t0)
    return 1e3 * statistics.median(fwd), 1e3 * statistics.median(both)


def time_polyattn(exe, engine, n, d, causal, dtype, reps, extra, threads):
    cmd = [exe, "--engine", engine, "--n", str(n), "--d", str(d), "--reps", str(reps)]
    cmd += (["--causal"] if causal else []) + (["--f64"] if dtype == "f64" else []) + extra
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--exe", default="target/release/examples/time_attention")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shapes = QUICK if args.quick else FULL
    head = (
        f"CPU: {cpu_name()}, {args.threads} threads both sides, torch {torch.__version__}, "
        f"median of {args.reps} after a warm-up (1 for n >= 65536)\n"
    )
    rows = []
    print(head)
    hdr = (
        "| shape (1 head) | polyattn | torch fwd ms | ours fwd ms | fwd ratio | torch fwd+bwd ms "
        "| ours fwd+bwd ms | fwd+bwd ratio | ours fwd GFLOP/s | notes |"
    )
    print(hdr)
    print("|" + "---|" * 10)
    for label, engine, n, d, causal, dtype, extra in shapes:
        reps = 1 if n >= 65536 else args.reps
        qk = float(extra[extra.index("--qk-scale") + 1]) if "--qk-scale" in extra else 1.0
        tf, tb = time_torch(n, d, causal, dtype, reps, qk)
        ours = time_polyattn(args.exe, engine, n, d, causal, dtype, reps, extra, args.threads)
        notes = ""
        if engine == "poly":
            notes = (
                f"degree {ours['degree']}, rank {ours['rank']}, R {ours['radius']:.2f}, "
                f"certified max\\|O~-O\\| <= {ours['bound_o']:.1e}"
            )
        gfl = flops(n, d, causal) / (ours["fwd_ms"] * 1e-3) / 1e9
        row = (
            f"| n={n} d={d}{' causal' if causal else ''} {dtype} | {label} | {tf:.1f} | "
            f"{ours['fwd_ms']:.1f} | {tf / ours['fwd_ms']:.2f}x | {tb:.1f} | "
            f"{ours['fwd_bwd_ms']:.1f} | {tb / ours['fwd_bwd_ms']:.2f}x | {gfl:.0f} | {notes} |"
        )
        print(row, flush=True)
        rows.append(row)
    if args.out:
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            f.write("# polyattn against PyTorch SDPA on the CPU\n\n")
            f.write("Made by `benches/torch_side_by_side.py" + (" --quick" if args.quick else "") + "`.\n")
            f.write(head + "\n" + hdr + "\n|" + "---|" * 10 + "\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
