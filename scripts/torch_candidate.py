#!/usr/bin/env python3
"""Certify PyTorch's scaled_dot_product_attention with `polyattn certify --candidate`.

Runs torch SDPA on the CPU with autograd, causal, batch 2, 8 heads of dimension 64,
n = 1024 (--n), optionally with fewer key/value heads (--kv-heads, torch's
enable_gqa) and a sliding window (--window L,R, given to torch as its boolean attn_mask,
to polyattn as --window), in float32 and in bfloat16; writes the inputs (the exact values the
candidate consumed: the bf16 run gets bf16 inputs) and the candidate files (o, dq, dk,
dv in the run's dtype; lse from torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
when this torch has it, in f32), then runs `polyattn certify --candidate` on each and
prints one Markdown table of the results (certified max error of each tensor, its
certified bias: the interval of the mean signed error over all entries and how many
rows' mean errors are certified nonzero, the baseline's error, the ratio and
FlashAttention's rule).

Needs torch and safetensors; without torch it prints a message and exits 0.

    python3 scripts/torch_candidate.py [--polyattn target/release/polyattn] [--n 1024]
        [--kv-heads 2] [--window 256,0] [--out results/torch_candidate]
"""

import argparse
import json
import os
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--polyattn", default="target/release/polyattn")
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--kv-heads", type=int, default=None, help="key/value heads (GQA); default: --heads")
    ap.add_argument("--window", default=None, help="LEFT,RIGHT sliding window (-1 unbounded), bottom-right aligned")
    ap.add_argument("--out", default="results/torch_candidate")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    try:
        import torch
        import torch.nn.functional as F
        from safetensors.torch import save_file
    except ImportError as e:
        print(f"torch_candidate.py: skipped ({e}); install torch and safetensors to run it")
        return 0
    os.makedirs(args.out, exist_ok=True)
    g = torch.Generator().manual_seed(args.seed)
    kv = args.kv_heads or args.heads
    if args.heads % kv:
        print(f"--kv-heads {kv} must divide --heads {args.heads}", file=sys.stderr)
        return 2
    shapes = {"q": args.heads, "k": kv, "v": kv, "do": args.heads}
    base = {
        name: torch.randn((args.batch, h, args.n, args.d), generator=g, dtype=torch.float32)
        for name, h in shapes.items()
    }
    sdpa = {"enable_gqa": True} if kv != args.heads else {}
    mask_args = ["--mask", "causal"]
    if args.window is not None:
        left, right = (int(x) for x in args.window.split(","))
        i = torch.arange(args.n)[:, None]
        j = torch.arange(args.n)[None, :]
        allowed = j <= i  # causal, n_q = n_k: both alignments agree
        if left >= 0:
            allowed &= i - left <= j
        if right >= 0:
            allowed &= j <= i + right
        sdpa["attn_mask"] = allowed
        mask_args += ["--window", args.window]
    else:
        sdpa["is_causal"] = True
    rows = []
    for dtype, dname in ((torch.float32, "f32"), (torch.bfloat16, "bf16")):
        x = {name: t.to(dtype).contiguous() for name, t in base.items()}
        inp = os.path.join(args.out, f"in_{dname}.safetensors")
        save_file(x, inp)
        q, k, v = (x[n].clone().requires_grad_(True) for n in ("q", "k", "v"))
        o = F.scaled_dot_product_attention(q, k, v, **sdpa)
        o.backward(x["do"])
        cand = {"o": o.detach().contiguous(), "dq": q.grad.contiguous(), "dk": k.grad.contiguous(), "dv": v.grad.contiguous()}
        lse_note = "no lse (this torch lacks _scaled_dot_product_flash_attention_for_cpu)"
        fa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
        if args.window is not None:
            lse_note = "no lse (torch's CPU flash op takes no window mask)"
        elif fa is not None:
            # lse does not depend on how key heads are shared: repeat them per query head.
            kv_rep = {n: x[n].repeat_interleave(args.heads // kv, dim=1) for n in ("k", "v")}
            with torch.no_grad():
                res = fa(x["q"], kv_rep["k"], kv_rep["v"], 0.0, True)
            cand["lse"] = res[1].float().contiguous()
            lse_note = "lse from aten._scaled_dot_product_flash_attention_for_cpu"
        cpath = os.path.join(args.out, f"cand_{dname}.safetensors")
        save_file(cand, cpath)
        rep = os.path.join(args.out, f"report_{dname}")
        tensors = certify_candidate(args.polyattn, inp, cpath, rep, mask_args, lse_note)
        if isinstance(tensors, int):
            return tensors
        rows += [(dname, t) for t in tensors]
    print()
    win = f", window {args.window}" if args.window else ""
    print(
        f"torch {torch.__version__}, CPU SDPA, causal{win}, batch {args.batch}, {args.heads} query heads, "
        f"{kv} key/value heads, n = {args.n}, d = {args.d}"
    )
    print()
    print_table(rows)
    return 0


def certify_candidate(polyattn, inp, cand, rep, mask_args, note=""):
    """Runs `polyattn certify --input INP --candidate CAND --out REP MASK_ARGS`, echoing
    the command and its output; returns report.json's tensors, or the exit status when
    it failed (its stderr printed)."""
    cmd = [polyattn, "certify", "--input", inp, "--candidate", cand, "--out", rep, *mask_args]
    print("$", " ".join(cmd), f"  # {note}" if note else "", flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True)
    print(r.stdout, end="")
    if r.returncode != 0:
        print(r.stderr, file=sys.stderr)
        return r.returncode
    with open(os.path.join(rep, "report.json")) as f:
        return json.load(f)["tensors"]


def print_table(rows):
    """One Markdown row per certified tensor; `rows` holds (run label, report.json tensor)."""
    print(
        "| run | tensor | dtype | certified max error | certified lower bound | rel. Frobenius | mean error (certified) "
        "| rows with mean error != 0 | baseline error | ratio | rule | upcast error | rule (upcast) |"
    )
    print("|---|---|---|---:|---:|---:|---|---:|---:|---:|---|---:|---|")
    for dname, t in rows:
        b, u, bias = t["baseline"], t["upcast"], t["bias"]
        lo, hi = bias["overall"]["lo"], bias["overall"]["hi"]
        print(
            f"| {dname} | {t['name']} | {t['dtype']} | {t['certified_max_abs']:.3g} | {t['certified_lower_max_abs']:.3g} | "
            f"{t['certified_rel_fro']:.3g} | [{lo:.2g}, {hi:.2g}] | {bias['rows_nonzero']}/{bias['rows']} | "
            f"{b['certified_max_abs']:.3g} | {b['ratio']:.3g} | {b['verdict']} | "
            f"{u['certified_max_abs']:.3g} | {u['verdict']} |"
        )


if __name__ == "__main__":
    sys.exit(main())
