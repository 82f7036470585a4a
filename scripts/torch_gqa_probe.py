#!/usr/bin/env python3
"""Where PyTorch's bf16 grouped-query backward loses accuracy (CPU SDPA).

Computes dV of causal attention (batch 1, 8 query heads, 2 key/value heads, n = 1024,
d = 64, seed 0; --n to change) three ways in bfloat16 and prints each one's largest
distance to a float64 computation on the same bf16 inputs:

1. `scaled_dot_product_attention(..., enable_gqa=True)`;
2. the same attention with k, v expanded by `repeat_interleave` (autograd then sums
   the query heads' shares);
3. the shares computed in bf16 with the expanded k, v, summed in float32 and rounded
   to bf16 once (what `polyattn certify --candidate` takes as the plain baseline).

Needs torch; without it prints a message and exits 0.

    python3 scripts/torch_gqa_probe.py [--n 1024]
"""

import argparse
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1024)
    args = ap.parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        print(f"torch_gqa_probe.py: skipped ({e})")
        return 0
    torch.manual_seed(0)
    b, h, hk, n, d = 1, 8, 2, args.n, 64
    g = h // hk
    q, k, v, do = (torch.randn(b, hh, n, d) for hh in (h, hk, hk, h))
    bf = torch.bfloat16

    def dv(dtype, kind):
        qq, kk, vv = (t.to(dtype).clone().requires_grad_(True) for t in (q, k, v))
        if kind == "enable_gqa":
            o = F.scaled_dot_product_attention(qq, kk, vv, is_causal=True, enable_gqa=True)
            o.backward(do.to(dtype))
            return vv.grad.double()
        kr = kk.detach().repeat_interleave(g, 1).requires_grad_(True)
        vr = vv.detach().repeat_interleave(g, 1).requires_grad_(True)
        if kind == "repeat_interleave":
            o = F.scaled_dot_product_attention(qq, kk.repeat_interleave(g, 1), vv.repeat_interleave(g, 1), is_causal=True)
            o.backward(do.to(dtype))
            return vv.grad.double()
        o = F.scaled_dot_product_attention(qq, kr, vr, is_causal=True)
        o.backward(do.to(dtype))
        return vr.grad.float().view(b, hk, g, n, d).sum(2).to(dtype).double()

    # float64 on the bf16-rounded inputs.
    q64, k64, v64, do64 = (t.to(bf).double() for t in (q, k, v, do))
    vv = v64.clone().requires_grad_(True)
    o = F.scaled_dot_product_attention(q64, k64, vv, is_causal=True, enable_gqa=True)
    o.backward(do64)
    ref = vv.grad
    print(f"torch {torch.__version__}, CPU, bf16, causal, {h}:{hk} heads, n = {n}, d = {d}")
    for kind in ("enable_gqa", "repeat_interleave", "shares summed in f32, rounded once"):
        err = float((dv(bf, kind) - ref).abs().max())
        print(f"  {kind:38s} max |dV - dV_f64| = {err:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
