#!/usr/bin/env python3
"""Markdown tables from the device check's result files (docs/cuda/<gpu>/).

Reads every run*-bench.json (cuda_bench) and run*-torch_sdpa.json
(scripts/cuda_torch.py time) in DIR; a configuration measured twice keeps the later
run. Prints: (1) the exact f16 kernels against torch's flash and cuDNN backends on the
same shapes (TFLOP/s and the fraction of each backend's throughput), (2) the
polynomial engine (eps 1e-3, d = 8, causal, one head, end-to-end time) against the
flash backend at d = 8 (kernel time), (3) a summary of the device-vs-emulation
comparison.

    python3 scripts/cuda_report.py docs/cuda/h200
"""

import glob
import json
import os
import sys


def load(pattern):
    out = []
    for path in sorted(glob.glob(pattern)):
        with open(path) as f:
            out.append(json.load(f))
    return out


def main(d):
    benches = load(os.path.join(d, "run*-bench.json"))
    torches = load(os.path.join(d, "run*-torch_sdpa.json"))
    exact, poly, compare = {}, {}, []
    for b in benches:
        for r in b.get("exact", []):
            if "forward_s" in r:
                exact[(r["d"], r["n"], r["mask"])] = r
        for r in b.get("poly", []):
            if "forward_s" in r:
                poly[(r["d"], r["n"])] = {**poly.get((r["d"], r["n"]), {}), **{k: v for k, v in r.items() if v is not None}}
        compare += b.get("compare", [])
    torch = {}
    for t in torches:
        for r in t["rows"]:
            if "forward_ms" in r:
                torch[(r["backend"], r["dtype"], r["d"], r["n"], "causal" if r["causal"] else "none")] = r
    print("### Exact f16 kernels against PyTorch SDPA (f16), kernel time\n")
    print("| d | n | mask | heads | ours fwd TFLOP/s | flash | cuDNN | ours / flash | ours bwd TFLOP/s | flash | cuDNN | ours / flash |")
    print("|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for (dd, n, mask), r in sorted(exact.items()):
        fl = torch.get(("flash", "f16", dd, n, mask), {})
        cu = torch.get(("cudnn", "f16", dd, n, mask), {})
        f = lambda x, k: f"{x[k]:.1f}" if k in x else "-"
        rf = f"{r['forward_tflops'] / fl['forward_tflops']:.3f}" if fl else "-"
        rb = f"{r['backward_tflops'] / fl['backward_tflops']:.3f}" if fl else "-"
        print(f"| {dd} | {n} | {mask} | {r['heads']} | {r['forward_tflops']:.2f} | {f(fl, 'forward_tflops')} | "
              f"{f(cu, 'forward_tflops')} | {rf} | {r['backward_tflops']:.2f} | {f(fl, 'backward_tflops')} | "
              f"{f(cu, 'backward_tflops')} | {rb} |")
    print("\n### Polynomial engine (f16, eps 1e-3, causal, one head) against the flash backend (f16, causal, one head)\n")
    print("| d | n | degree | rank | poly fwd ms | flash fwd ms | poly / flash | poly bwd ms | flash bwd ms | poly / flash | f16 bound O (all rows) |")
    print("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for (dd, n), r in sorted(poly.items()):
        fl = torch.get(("flash", "f16", dd, n, "causal"))
        pf, pb = r["forward_s"] * 1e3, r["backward_s"] * 1e3
        ff = f"{fl['forward_ms']:.1f}" if fl else "-"
        fb = f"{fl['backward_ms']:.1f}" if fl else "-"
        rf = f"{pf / fl['forward_ms']:.2f}" if fl else "-"
        rb = f"{pb / fl['backward_ms']:.2f}" if fl else "-"
        bo = f"{r['bound_o']:.2e}" if "bound_o" in r else "-"
        print(f"| {dd} | {n} | {r['degree']} | {r['rank']} | {pf:.1f} | {ff} | {rf} | {pb:.1f} | {fb} | {rb} | {bo} |")
    if compare:
        print("\n### Device against its CPU emulation, bit for bit\n")
        print("| kernels | tensor | entries | identical | max distance (ulps of the stored format) | max abs difference |")
        print("|---|---|--:|--:|--:|--:|")
        groups = {}
        for r in compare:
            kind = "exact" if r["problem"].startswith("exact") else "polynomial"
            g = groups.setdefault((kind, r["tensor"]), {"entries": 0, "identical": 0, "ulps": 0, "abs": 0.0, "of": r["ulp_of"]})
            g["entries"] += r["entries"]
            g["identical"] += r["identical"]
            g["ulps"] = max(g["ulps"], r["max_ulps"])
            g["abs"] = max(g["abs"], r["max_abs_diff"])
        for (kind, t), g in groups.items():
            print(f"| {kind} | {t} | {g['entries']} | {g['identical']} ({100 * g['identical'] / g['entries']:.2f}%) | "
                  f"{g['ulps']} ({g['of']}) | {g['abs']:.2e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/cuda/h200"))
