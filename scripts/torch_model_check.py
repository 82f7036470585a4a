#!/usr/bin/env python3
"""Cross-check of `polyattn model` against PyTorch autodiff in float64.

For each configuration below this script (another tool) writes the weights and the
input with its own random generator, runs `polyattn model` on them, and rebuilds the
same model in PyTorch from the README's definition (docs/math.md §7.1):

    T_0 = X or E[tokens];  Z_l = T_{l-1} + MHA_l(LN1_l(T_{l-1}));
    T_l = Z_l + act(LN2_l(Z_l) W1_l + b1_l) W2_l + b2_l
    MSE: 1/(2n) ||T_m - Y||_F^2;  CE: mean_i -log softmax(LNf(T_m) W_out)_{i, y_i}

with torch.autograd supplying every gradient. Pass criteria:
- exact engine (F64): every gradient's max |polyattn - torch| / max |torch| <= 1e-10.
  Both sides are float64 evaluations of the same formulas in different orders; at
  these sizes (n <= 48, d_model <= 16, sums of <= 64 terms, 3 layers) their rounding
  differences are ~1e-14 relative, so 1e-10 leaves four orders of margin while an
  error in any formula (a transposed weight, a wrong scale, a missing residual) shows
  as O(1).
- polynomial engine (F64, bounded scores): ||grad.x - torch dX||_F is at most the
  propagated bound `dx_error_bound` polyattn writes in the output's metadata
  (docs/math.md §7.3), and for every layer l the Frobenius norm of the difference of all
  `grad.layers.{l}.*` tensors is at most that layer's entry of `weight_error_bounds`;
  and `polyattn certify --weights` on the same files (the MPFR reference and the
  double-double balls) reports, for the loss and every gradient, a certified error
  that bounds |polyattn - torch| up to torch's own float64 rounding (1e-13 of the
  tensor's largest entry: the same margin argument as above).

Usage: torch_model_check.py --bin target/release/polyattn [--workdir DIR]
Needs torch (see the README: a virtual environment with `pip install torch`).
"""
import argparse
import os
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from independent_check import read_safetensors, write_safetensors  # noqa: E402

torch.set_default_dtype(torch.float64)

CONFIGS = [
    # name, layers, heads, d_model, d_ff, act, layer_norm, causal, loss, n, tokens, qk_scale
    ("mse-gelu-ln-causal", 2, 2, 8, 16, "gelu", True, True, "mse", 24, False, 1.0),
    ("mse-relu-noln-nomask", 3, 4, 16, 32, "relu", False, False, "mse", 17, False, 1.0),
    ("ce-gelu-ln-causal-tokens", 2, 2, 8, 24, "gelu", True, True, "cross-entropy", 20, True, 1.0),
    ("ce-relu-ln-nomask-x", 1, 2, 12, 12, "relu", True, False, "cross-entropy", 31, False, 1.0),
    ("mse-gelu-ln-causal-n48", 3, 4, 16, 32, "gelu", True, True, "mse", 48, False, 1.0),
]
# Polynomial-engine runs: bounded scores (W_Q, W_K scaled), MSE and feature input.
POLY_CONFIGS = [
    ("poly-mse-gelu-ln-causal", 2, 2, 8, 16, "gelu", True, True, "mse", 40, False, 0.25),
    ("poly-mse-relu-ln-nomask", 3, 4, 16, 32, "relu", True, False, "mse", 33, False, 0.25),
]


def make_model(cfg, gen):
    name, m, h, d, dff, act, ln, causal, loss, n, tokens, qk = cfg
    vocab = 11
    w = {}

    def rnd(*shape, scale):
        return torch.randn(*shape, generator=gen) * scale

    for l in range(m):
        p = f"layers.{l}."
        if ln:
            w[p + "ln1.gain"] = 1.0 + rnd(d, scale=0.1)
            w[p + "ln1.bias"] = rnd(d, scale=0.1)
            w[p + "ln2.gain"] = 1.0 + rnd(d, scale=0.1)
            w[p + "ln2.bias"] = rnd(d, scale=0.1)
        for k in ("wq", "wk"):
            w[p + "attn." + k] = rnd(d, d, scale=qk / d**0.5)
        for k in ("wv", "wo"):
            w[p + "attn." + k] = rnd(d, d, scale=1.0 / d**0.5)
        w[p + "mlp.w1"] = rnd(d, dff, scale=1.0 / d**0.5)
        w[p + "mlp.b1"] = rnd(dff, scale=0.1)
        w[p + "mlp.w2"] = rnd(dff, d, scale=1.0 / dff**0.5)
        w[p + "mlp.b2"] = rnd(d, scale=0.1)
    if loss == "cross-entropy":
        if ln:
            w["lnf.gain"] = 1.0 + rnd(d, scale=0.1)
            w["lnf.bias"] = rnd(d, scale=0.1)
        w["head.w_out"] = rnd(d, vocab, scale=1.0 / d**0.5)
    if tokens:
        w["embedding"] = rnd(vocab, d, scale=1.0)
    meta = {
        "n_layers": str(m),
        "n_heads": str(h),
        "d_model": str(d),
        "d_ff": str(dff),
        "activation": act,
        "layer_norm": "true" if ln else "false",
        "causal": "true" if causal else "false",
        "loss": loss,
    }
    if loss == "cross-entropy" or tokens:
        meta["vocab"] = str(vocab)
    inp = {}
    if tokens:
        inp["tokens"] = torch.randint(0, vocab, (n,), generator=gen).to(torch.float64)
    else:
        inp["x"] = torch.randn(n, d, generator=gen)
    if loss == "mse":
        inp["y"] = torch.randn(n, d, generator=gen)
    else:
        inp["labels"] = torch.randint(0, vocab, (n,), generator=gen).to(torch.float64)
    return w, meta, inp


def to_file(path, tensors, meta=None):
    t = {k: ("F64", list(v.shape), v.flatten().tolist()) for k, v in tensors.items()}
    if meta is not None:
        write_safetensors_with_meta(path, t, meta)
    else:
        write_safetensors(path, t)


def write_safetensors_with_meta(path, tensors, meta):
    # independent_check.write_safetensors writes no metadata; add it by rewriting the
    # header (the format: u64 header length, JSON header, data).
    import json
    import struct

    write_safetensors(path, tensors)
    with open(path, "rb") as f:
        raw = f.read()
    (hn,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + hn])
    header["__metadata__"] = meta
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + raw[8 + hn :])


def layer_norm(x, gain, bias):
    mu = x.mean(dim=1, keepdim=True)
    var = ((x - mu) ** 2).mean(dim=1, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-5) * gain + bias


def torch_model(cfg, w, inp):
    """Loss and autograd gradients {'grad.<name>': tensor} of the README's model."""
    name, m, h, d, dff, act, ln, causal, loss, n, tokens, qk = cfg
    params = {k: v.clone().requires_grad_(True) for k, v in w.items()}
    if tokens:
        t = params["embedding"][inp["tokens"].long()]
        x = None
    else:
        x = inp["x"].clone().requires_grad_(True)
        t = x
    dh = d // h
    mask = torch.tril(torch.ones(n, n, dtype=torch.bool)) if causal else None
    f = torch.nn.functional
    for l in range(m):
        p = f"layers.{l}."
        x1 = layer_norm(t, params[p + "ln1.gain"], params[p + "ln1.bias"]) if ln else t
        q, k, v = (x1 @ params[p + "attn." + s] for s in ("wq", "wk", "wv"))
        heads = []
        for c in range(h):
            sl = slice(c * dh, (c + 1) * dh)
            s = q[:, sl] @ k[:, sl].T / dh**0.5
            if mask is not None:
                s = s.masked_fill(~mask, float("-inf"))
            heads.append(torch.softmax(s, dim=1) @ v[:, sl])
        z = t + torch.cat(heads, dim=1) @ params[p + "attn.wo"]
        x2 = layer_norm(z, params[p + "ln2.gain"], params[p + "ln2.bias"]) if ln else z
        hid = x2 @ params[p + "mlp.w1"] + params[p + "mlp.b1"]
        a = f.gelu(hid, approximate="tanh") if act == "gelu" else torch.relu(hid)
        t = z + a @ params[p + "mlp.w2"] + params[p + "mlp.b2"]
    if loss == "mse":
        L = ((t - inp["y"]) ** 2).sum() / (2 * n)
    else:
        xf = layer_norm(t, params["lnf.gain"], params["lnf.bias"]) if ln else t
        logits = xf @ params["head.w_out"]
        L = f.cross_entropy(logits, inp["labels"].long(), reduction="mean")
    L.backward()
    grads = {"grad." + k: v.grad for k, v in params.items()}
    if x is not None:
        grads["grad.x"] = x.grad
    return L.item(), grads


def certified_errors(args, wf, xf, reference):
    """`polyattn certify --weights` on the files: {tensor: certified max abs error}
    and the engine of each layer."""
    import json

    d = tempfile.mkdtemp(dir=args.workdir)
    cmd = [args.bin, "certify", "--weights", wf, "--input", xf, "--eps", "1e-6",
           "--power-iters", "0", "--reference", reference, "--out", d]
    subprocess.run(cmd, check=True, capture_output=True)
    with open(os.path.join(d, "report.json")) as f:
        rep = json.load(f)
    errs = {t["name"]: t["max_abs_error"] for t in rep["tensors"]}
    return errs, [l["engine"] for l in rep["layers"]], rep["reference"]["kind"]


def run_case(args, cfg, engine, gen, files=None):
    w, meta, inp = make_model(cfg, gen)
    d = tempfile.mkdtemp(dir=args.workdir)
    wf, xf, gf = (os.path.join(d, s) for s in ("w.safetensors", "x.safetensors", "g.safetensors"))
    to_file(wf, w, meta)
    to_file(xf, inp)
    cmd = [args.bin, "model", "--weights", wf, "--input", xf, "--output", gf, "--engine", engine]
    if engine == "poly":
        cmd += ["--eps", "1e-6"]
    subprocess.run(cmd, check=True, capture_output=True)
    out = read_safetensors(gf)
    loss, ref = torch_model(cfg, w, inp)
    if files is not None:
        files.extend([wf, xf])
    return out, loss, ref


def as_tensor(out, key):
    # read_safetensors returns (dtype, shape, flat list)
    _, shape, data = out[key]
    return torch.tensor(data).reshape(shape)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/polyattn")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(20261125)
    failures = 0
    print("exact engine, F64: max |polyattn - torch autodiff| / max |torch| per gradient")
    for cfg in CONFIGS:
        out, loss, ref = run_case(args, cfg, "exact", gen)
        worst, worst_name = 0.0, ""
        loss_rel = abs(as_tensor(out, "loss").item() - loss) / abs(loss)
        names = sorted(ref)
        missing = [k for k in names if k not in out]
        if missing:
            print(f"  {cfg[0]}: FAIL, missing {missing}")
            failures += 1
            continue
        for k in names:
            r = ref[k]
            e = (as_tensor(out, k) - r).abs().max().item() / max(r.abs().max().item(), 1e-300)
            if e > worst:
                worst, worst_name = e, k
        ok = worst <= 1e-10 and loss_rel <= 1e-10
        failures += not ok
        print(
            f"  {cfg[0]:28s} {len(names):2d} gradients  worst {worst:.2e} ({worst_name})"
            f"  loss {loss_rel:.1e}  {'ok' if ok else 'FAIL'}"
        )
    print("polynomial engine (eps 1e-6 per head), F64: ||grad.x - torch dX||_F against dx_error_bound,")
    print("  each layer's weight gradients (Frobenius, all tensors) against weight_error_bounds")
    for cfg in POLY_CONFIGS:
        files = []
        out, loss, ref = run_case(args, cfg, "poly", gen, files)
        meta = out["__metadata__"]
        engines = meta.get("engines", "")
        bound = float(meta.get("dx_error_bound", "nan"))
        diff = (as_tensor(out, "grad.x") - ref["grad.x"]).norm().item()
        wbounds = [float(b) for b in meta.get("weight_error_bounds", "").split(",") if b]
        wdiffs = []
        for l in range(len(wbounds)):
            keys = [k for k in ref if k.startswith(f"grad.layers.{l}.")]
            sq = sum(((as_tensor(out, k) - ref[k]) ** 2).sum().item() for k in keys)
            wdiffs.append(sq ** 0.5)
        wok = len(wbounds) > 0 and all(m <= b for m, b in zip(wdiffs, wbounds))
        ok = "poly" in engines and diff <= bound and wok
        failures += not ok
        wtext = ", ".join(f"{m:.1e} <= {b:.1e}" for m, b in zip(wdiffs, wbounds))
        print(
            f"  {cfg[0]:28s} engines {engines:12s} dX measured {diff:.2e}  bound {bound:.2e}"
            f"  ({bound / diff if diff > 0 else float('inf'):.0f}x)  per-layer weights [{wtext}]"
            f"  {'ok' if ok else 'FAIL'}"
        )
        # The certified reports of the same run: |polyattn - torch| <= certified + torch's rounding.
        layer_engines = engines.split(",")
        for reference in ("mpfr", "ball"):
            errs, rep_engines, kind = certified_errors(args, files[0], files[1], reference)
            worst, worst_name = 0.0, ""
            cok = rep_engines == layer_engines and kind == reference
            for k in ["loss"] + sorted(ref):
                r = torch.tensor([loss]) if k == "loss" else ref[k]
                diff = (as_tensor(out, k).reshape(r.shape) - r).abs().max().item()
                allowed = errs[k] + 1e-13 * max(r.abs().max().item(), 1e-300)
                cok &= diff <= allowed
                if allowed > 0 and diff / allowed > worst:
                    worst, worst_name = diff / allowed, k
            failures += not cok
            print(
                f"  {'':28s} certify --reference {reference}: every |polyattn - torch| within the"
                f" certified error (worst {worst:.2f} of it, {worst_name})  {'ok' if cok else 'FAIL'}"
            )
    if failures:
        print(f"{failures} case(s) failed")
        sys.exit(1)
    print("all cases pass")


if __name__ == "__main__":
    main()
