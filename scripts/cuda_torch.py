#!/usr/bin/env python3
"""PyTorch's CUDA attention kernels beside polyattn's: timings, and outputs to certify.

Three subcommands; the first two need torch with a CUDA device, the third only the
`polyattn` binary (run it where that was built):

  time     Forward and backward of torch's SDPA backends (flash, memory-efficient,
           cuDNN) in f16 (flash also in bf16) on the shapes of
           `cuda_bench` (d = 64, 128; n = 4096 .. 65536; heads = 65536 / n, 1 .. 16;
           no mask and causal), and the flash backend at d = 8, causal, one head,
           n = 16384 .. 1048576 (the polynomial engine's shapes). Median of 5 (--reps) timed
           calls after one warm-up, CUDA events; TFLOP/s with FlashAttention's count (forward
           4 n^2 d per head, halved when causal; backward 2.5 x forward). A time budget
           (--budget-s) skips what would overrun. Writes <out>/torch_sdpa.json.
  dump     Causal attention of one problem (batch 1, 2 heads, n = 2048, d = 64; inputs
           N(0, 1) rounded to the dtype) through each backend in f16 and bf16: writes
           in_<dtype>.safetensors (q, k, v, do: the exact values consumed) and
           cand_<dtype>_<backend>.safetensors (o, dq, dk, dv in the dtype, and lse in f32
           from the backend's own aten op, since the public SDPA returns none).
           With --softcap C (Gemma 2's attention logit softcapping, which SDPA lacks) the
           backend is FlexAttention instead (`torch.compile(flex_attention)`, a Triton
           kernel; its eager path if compiling fails, recorded): score_mod
           `C tanh(score / C)`, a causal block mask, `return_lse=True`; --q-scale S
           multiplies q so that the scores reach the cap.
  certify  Runs `polyattn certify --input in_X --candidate cand_X_B --mask causal` (and
           `--softcap C` when the dump had one) on each dumped pair and prints one
           Markdown table (scripts/torch_candidate.py's).

    python3 scripts/cuda_torch.py time --out DIR [--budget-s 120] [--quick]
    python3 scripts/cuda_torch.py dump --out DIR [--softcap 20 --q-scale 8]
    python3 scripts/cuda_torch.py certify --dir DIR [--polyattn target/release/polyattn]
"""

import argparse
import json
import os
import platform
import sys
import time


def provenance(torch):
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0),
        "capability": list(torch.cuda.get_device_capability(0)),
        "host": platform.processor() or platform.machine(),
        "revision": os.environ.get("POLYATTN_REVISION", "unknown"),
    }


def backends(torch):
    from torch.nn.attention import SDPBackend

    return {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
    }


def median_ms(torch, fn, reps=5):
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e))
    return sorted(ts)[len(ts) // 2]


def cmd_time(args):
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import sdpa_kernel

    bk = backends(torch)
    start = time.monotonic()
    doc = {**provenance(torch), "rows": []}
    ns = [4096] if args.quick else [4096, 8192, 16384, 32768, 65536]
    configs = []
    for d in args.d:
        for n in ns:
            for causal in (False, True):
                heads = max(1, min(16, 65536 // n))
                for name in ("flash", "efficient", "cudnn"):
                    configs.append((name, "f16", d, n, causal, heads))
                configs.append(("flash", "bf16", d, n, causal, heads))
    for n in [16384] if args.quick else args.poly_n:
        configs.append(("flash", "f16", 8, n, True, 1))
    print("| backend | dtype | d | n | mask | heads | fwd ms | fwd TFLOP/s | bwd ms | bwd TFLOP/s |")
    print("|---|---|--:|--:|---|--:|--:|--:|--:|--:|")
    for name, dn, d, n, causal, heads in configs:
        row = {"backend": name, "dtype": dn, "d": d, "n": n, "causal": causal, "heads": heads}
        if time.monotonic() - start > args.budget_s:
            row["skipped"] = "time budget"
            doc["rows"].append(row)
            continue
        dtype = torch.float16 if dn == "f16" else torch.bfloat16
        try:
            g = torch.Generator(device="cuda").manual_seed(n + d)
            q, k, v, do = (
                torch.randn(1, heads, n, d, device="cuda", dtype=dtype, generator=g) for _ in range(4)
            )
            q.requires_grad_(True)
            k.requires_grad_(True)
            v.requires_grad_(True)
            with sdpa_kernel([bk[name]]):
                fwd = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                t_f = median_ms(torch, fwd, args.reps)
                o = fwd()
                t_b = median_ms(torch, lambda: torch.autograd.grad(o, (q, k, v), do, retain_graph=True), args.reps)
            flops = 4.0 * n * n * d * heads * (0.5 if causal else 1.0)
            row.update(forward_ms=t_f, backward_ms=t_b, forward_tflops=flops / t_f / 1e9,
                       backward_tflops=2.5 * flops / t_b / 1e9)
            print(f"| {name} | {dn} | {d} | {n} | {'causal' if causal else 'none'} | {heads} | {t_f:.3f} | "
                  f"{row['forward_tflops']:.1f} | {t_b:.3f} | {row['backward_tflops']:.1f} |", flush=True)
            del q, k, v, do, o
        except Exception as e:  # an unsupported shape or an OOM is a finding, not a stop
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            print(f"| {name} | {dn} | {d} | {n} | {'causal' if causal else 'none'} | {heads} | {row['error']} |||||", flush=True)
        torch.cuda.empty_cache()
        doc["rows"].append(row)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "torch_sdpa.json"), "w") as f:
        json.dump(doc, f, indent=1)
    return 0


def lse_of(torch, name, q, k, v, n):
    """The backend's log-sum-exp (natural log of the sum of exp of the scaled scores)."""
    a = torch.ops.aten
    with torch.no_grad():
        if name == "flash":
            lse = a._scaled_dot_product_flash_attention(q, k, v, 0.0, True)[1]
        elif name == "efficient":
            lse = a._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, True)[1]
        else:
            lse = a._scaled_dot_product_cudnn_attention(q, k, v, None, True, 0.0, True)[1]
    lse = lse.reshape(lse.shape[0], lse.shape[1], -1)[..., :n]  # efficient pads to 32
    return lse.float().contiguous().cpu()


def cmd_dump(args):
    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file
    from torch.nn.attention import sdpa_kernel

    bk = backends(torch)
    os.makedirs(args.out, exist_ok=True)
    b, h, n, d = 1, args.heads, args.n, args.d
    gen = torch.Generator().manual_seed(args.seed)
    base = {name: torch.randn((b, h, n, d), generator=gen) for name in ("q", "k", "v", "do")}
    base["q"] = base["q"] * args.q_scale
    meta = {**provenance(torch), "shape": [b, h, n, d], "mask": "causal", "runs": {}}
    if args.softcap:
        meta["softcap"] = args.softcap
        meta["q_scale"] = args.q_scale
        return dump_flex(torch, args, base, meta, save_file)
    for dtype, dn in ((torch.float16, "f16"), (torch.bfloat16, "bf16")):
        x = {name: t.to(dtype).contiguous() for name, t in base.items()}
        save_file(x, os.path.join(args.out, f"in_{dn}.safetensors"))
        for name in ("flash", "efficient", "cudnn"):
            label = f"{dn}_{name}"
            try:
                q, k, v = (x[t].cuda().requires_grad_(True) for t in ("q", "k", "v"))
                with sdpa_kernel([bk[name]]):
                    o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                    dq, dk, dv = torch.autograd.grad(o, (q, k, v), x["do"].cuda())
                cand = {t: y.detach().contiguous().cpu() for t, y in (("o", o), ("dq", dq), ("dk", dk), ("dv", dv))}
                try:
                    cand["lse"] = lse_of(torch, name, q.detach(), k.detach(), v.detach(), n)
                    meta["runs"][label] = "o, lse, dq, dk, dv"
                except Exception as e:
                    meta["runs"][label] = f"o, dq, dk, dv (no lse: {type(e).__name__}: {str(e).splitlines()[0]})"
                save_file(cand, os.path.join(args.out, f"cand_{label}.safetensors"))
            except Exception as e:
                meta["runs"][label] = f"not run: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            print(label, meta["runs"][label], flush=True)
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return 0


def dump_flex(torch, args, base, meta, save_file):
    """FlexAttention with a softcap score_mod (see the module docs): in_X and cand_X_flex
    as the SDPA dump writes them, lse from return_lse (natural log of the sum of exp of
    the modified scores)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    c = float(args.softcap)
    n = base["q"].shape[2]

    def softcap(score, b, h, q_idx, kv_idx):
        return c * torch.tanh(score / c)

    def causal(b, h, q_idx, kv_idx):
        return q_idx >= kv_idx

    block = create_block_mask(causal, None, None, n, n, device="cuda")
    try:
        run, how = torch.compile(flex_attention), "torch.compile (Triton)"
        probe = base["q"][:, :, :128].to(torch.float16).cuda()
        run(probe, probe, probe, score_mod=softcap)
    except Exception as e:
        run, how = flex_attention, f"eager ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    meta["flex"] = how
    for dtype, dn in ((torch.float16, "f16"), (torch.bfloat16, "bf16")):
        x = {name: t.to(dtype).contiguous() for name, t in base.items()}
        save_file(x, os.path.join(args.out, f"in_{dn}.safetensors"))
        label = f"{dn}_flex"
        try:
            q, k, v = (x[t].cuda().requires_grad_(True) for t in ("q", "k", "v"))
            o, lse = run(q, k, v, score_mod=softcap, block_mask=block, return_lse=True)
            dq, dk, dv = torch.autograd.grad(o, (q, k, v), x["do"].cuda())
            cand = {t: y.detach().contiguous().cpu() for t, y in (("o", o), ("dq", dq), ("dk", dk), ("dv", dv))}
            cand["lse"] = lse.detach().float().contiguous().cpu()
            save_file(cand, os.path.join(args.out, f"cand_{label}.safetensors"))
            meta["runs"][label] = "o, lse, dq, dk, dv"
        except Exception as e:
            meta["runs"][label] = f"not run: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        print(label, meta["runs"][label], flush=True)
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return 0


def cmd_certify(args):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from torch_candidate import certify_candidate, print_table

    with open(os.path.join(args.dir, "meta.json")) as f:
        meta = json.load(f)
    rows = []
    for label in sorted(meta["runs"]):
        cand = os.path.join(args.dir, f"cand_{label}.safetensors")
        if not os.path.exists(cand):
            continue
        dn = label.split("_")[0]
        rep = os.path.join(args.dir, f"report_{label}")
        inp = os.path.join(args.dir, f"in_{dn}.safetensors")
        extra = ["--mask", "causal"]
        if meta.get("softcap"):
            extra += ["--softcap", str(meta["softcap"])]
        tensors = certify_candidate(args.polyattn, inp, cand, rep, extra)
        if isinstance(tensors, int):
            return tensors
        rows += [(label.replace("_", " "), t) for t in tensors]
    b, h, n, d = meta["shape"]
    print()
    what = (f"FlexAttention ({meta.get('flex')}), softcap {meta['softcap']}, q x {meta['q_scale']}"
            if meta.get("softcap") else "SDPA backends")
    print(f"torch {meta['torch']} (CUDA {meta['cuda']}) on {meta['device']}, {what}, causal, "
          f"batch {b}, {h} heads, n = {n}, d = {d}; outputs certified on the development machine")
    print()
    print_table(rows)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("time")
    t.add_argument("--out", required=True)
    t.add_argument("--budget-s", type=float, default=120.0)
    t.add_argument("--quick", action="store_true")
    t.add_argument("--reps", type=int, default=5, help="timed calls per measurement (median)")
    t.add_argument("--d", type=lambda s: [int(x) for x in s.split(",") if x], default=[64, 128],
                   help="head dimensions of the exact shapes (empty: none)")
    t.add_argument("--poly-n", type=lambda s: [int(x) for x in s.split(",") if x],
                   default=[16384, 65536, 262144, 1048576], help="n of the d = 8 causal shapes")
    dmp = sub.add_parser("dump")
    dmp.add_argument("--out", required=True)
    dmp.add_argument("--n", type=int, default=2048)
    dmp.add_argument("--heads", type=int, default=2)
    dmp.add_argument("--d", type=int, default=64)
    dmp.add_argument("--seed", type=int, default=0)
    dmp.add_argument("--softcap", type=float, default=0.0,
                     help="FlexAttention with this score softcap instead of SDPA (0: SDPA)")
    dmp.add_argument("--q-scale", type=float, default=1.0, help="multiply q by this")
    c = sub.add_parser("certify")
    c.add_argument("--dir", required=True)
    c.add_argument("--polyattn", default="target/release/polyattn")
    args = ap.parse_args()
    if args.cmd in ("time", "dump"):
        try:
            import torch
        except ImportError as e:
            print(f"cuda_torch.py: torch is not importable ({e})")
            return 0
        if not torch.cuda.is_available():
            print("cuda_torch.py: torch sees no CUDA device; nothing to do")
            return 0
    return {"time": cmd_time, "dump": cmd_dump, "certify": cmd_certify}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
