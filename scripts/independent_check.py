#!/usr/bin/env python3
"""Independent check of `polyattn attention` from another tool.

Pure Python (standard library only): writes safetensors files by hand, runs the CLI,
reads its output by hand, and compares O, lse, dQ, dK, dV with a float64 attention
written here from the formulas (docs/math.md §2), its sums done with math.fsum (correctly
rounded sums, so this reference is more accurate than any blocked float64 kernel).

Also checks the polynomial engine: on inputs with R <= 2 its O, dQ, dK, dV differ from
this exact reference by no more than the entrywise bounds it writes, and its O bound is
at most the requested eps; and `--engine auto` falls back to exact with a reason when
the scores are far outside the polynomial regime.

Pass: every tensor's max |polyattn - reference| / max |reference| is below 1e-12 for
F64 inputs (a float64 kernel's rounding over sums of at most a few hundred terms is
~1e-14 relative; 1e-12 leaves two orders of margin) and below 1e-5 for F32 inputs
(f32 unit roundoff 6e-8 times the same sum lengths).

Usage: independent_check.py --bin target/release/polyattn [--workdir DIR]
"""
import argparse
import json
import math
import os
import random
import struct
import subprocess
import sys
import tempfile

FMT = {"F64": ("d", 8), "F32": ("f", 4)}


def write_safetensors(path, tensors):
    """tensors: dict name -> (dtype, shape, flat list)."""
    header, blobs, offset = {}, [], 0
    for name, (dtype, shape, data) in tensors.items():
        code, size = FMT[dtype]
        blob = struct.pack("<%d%s" % (len(data), code), *data)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            out[name] = info
            continue
        code, size = FMT[info["dtype"]]
        a, b = info["data_offsets"]
        blob = raw[8 + n + a : 8 + n + b]
        out[name] = (info["dtype"], info["shape"], list(struct.unpack("<%d%s" % (len(blob) // size, code), blob)))
    return out


def round_f32(xs):
    return list(struct.unpack("<%df" % len(xs), struct.pack("<%df" % len(xs), *xs)))


def visible(mask, i, n_q, n_k):
    if mask == "none":
        return n_k
    if mask == "causal":
        return min(i + 1, n_k)
    return max(0, min(i + 1 + n_k - n_q, n_k))  # causal-bottom-right


def attention_head(q, k, v, do, n_q, n_k, d, dv, tau, mask):
    """One head, row-major flat lists. Returns o, lse, dq, dk, dv."""
    row = lambda m, i, w: m[i * w : (i + 1) * w]
    P = [[0.0] * n_k for _ in range(n_q)]
    lse = [-math.inf] * n_q
    for i in range(n_q):
        vis = visible(mask, i, n_q, n_k)
        if vis == 0:
            continue
        s = [tau * math.fsum(a * b for a, b in zip(row(q, i, d), row(k, j, d))) for j in range(vis)]
        m = max(s)
        e = [math.exp(x - m) for x in s]
        z = math.fsum(e)
        lse[i] = m + math.log(z)
        for j in range(vis):
            P[i][j] = e[j] / z
    o = [math.fsum(P[i][j] * v[j * dv + c] for j in range(n_k)) for i in range(n_q) for c in range(dv)]
    dq = [0.0] * (n_q * d)
    dk = [0.0] * (n_k * d)
    dvv = [math.fsum(P[i][j] * do[i * dv + c] for i in range(n_q)) for j in range(n_k) for c in range(dv)]
    dS = [[0.0] * n_k for _ in range(n_q)]
    for i in range(n_q):
        delta = math.fsum(a * b for a, b in zip(row(do, i, dv), row(o, i, dv)))
        for j in range(n_k):
            if P[i][j] != 0.0:
                dp = math.fsum(a * b for a, b in zip(row(do, i, dv), row(v, j, dv)))
                dS[i][j] = P[i][j] * (dp - delta)
    for i in range(n_q):
        for l in range(d):
            dq[i * d + l] = tau * math.fsum(dS[i][j] * k[j * d + l] for j in range(n_k))
    for j in range(n_k):
        for l in range(d):
            dk[j * d + l] = tau * math.fsum(dS[i][j] * q[i * d + l] for i in range(n_q))
    return o, lse, dq, dk, dvv


def check_case(binary, workdir, name, lead, n_q, n_k, d, dv, mask, scale, dtype, rng, mag):
    heads = 1
    for x in lead:
        heads *= x
    gen = lambda cnt: [rng.gauss(0.0, mag) for _ in range(cnt)]
    q, k, v, do = gen(heads * n_q * d), gen(heads * n_k * d), gen(heads * n_k * dv), gen(heads * n_q * dv)
    if dtype == "F32":
        q, k, v, do = map(round_f32, (q, k, v, do))
    tau = scale if scale is not None else 1.0 / math.sqrt(d)
    if dtype == "F32":
        tau = round_f32([tau])[0]
    inp = os.path.join(workdir, name + "_in.safetensors")
    out = os.path.join(workdir, name + "_out.safetensors")
    write_safetensors(inp, {
        "q": (dtype, lead + [n_q, d], q), "k": (dtype, lead + [n_k, d], k),
        "v": (dtype, lead + [n_k, dv], v), "do": (dtype, lead + [n_q, dv], do),
    })
    cmd = [binary, "attention", "--input", inp, "--output", out, "--mask", mask]
    if scale is not None:
        cmd += ["--scale", repr(scale)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        print("FAIL %s: polyattn exited %d: %s" % (name, res.returncode, res.stderr.strip()))
        return False
    got = read_safetensors(out)
    ref = {"o": [], "lse": [], "dq": [], "dk": [], "dv": []}
    for h in range(heads):
        sl = lambda m, rows, w: m[h * rows * w : (h + 1) * rows * w]
        r = attention_head(sl(q, n_q, d), sl(k, n_k, d), sl(v, n_k, dv), sl(do, n_q, dv), n_q, n_k, d, dv, tau, mask)
        for key, val in zip(["o", "lse", "dq", "dk", "dv"], r):
            ref[key] += val
    tol = 1e-12 if dtype == "F64" else 1e-5
    ok = True
    worst = 0.0
    expect_shape = {"o": lead + [n_q, dv], "lse": lead + [n_q], "dq": lead + [n_q, d], "dk": lead + [n_k, d], "dv": lead + [n_k, dv]}
    for key in ref:
        gdt, gshape, gdata = got[key]
        if gdt != dtype or gshape != expect_shape[key]:
            print("FAIL %s: %s has dtype %s shape %s, expected %s %s" % (name, key, gdt, gshape, dtype, expect_shape[key]))
            ok = False
            continue
        finite = [(a, b) for a, b in zip(gdata, ref[key]) if not (math.isinf(b) and a == b)]
        scale_ = max([abs(b) for _, b in finite] + [1e-300])
        err = max([abs(a - b) for a, b in finite] + [0.0]) / scale_
        worst = max(worst, err)
        if not err <= tol:
            print("FAIL %s: %s relative error %.3e > %.0e" % (name, key, err, tol))
            ok = False
    meta = got.get("__metadata__", {})
    if meta.get("mask") != mask or meta.get("engine") != "exact":
        print("FAIL %s: metadata %s" % (name, meta))
        ok = False
    print("%s %-42s worst relative error %.2e (tolerance %.0e)" % ("ok  " if ok else "FAIL", name, worst, tol))
    return ok


def check_poly_case(binary, workdir, name, lead, n_q, n_k, d, dv, mask, radius, eps, rng, gradient="substituted"):
    """The polynomial engine on inputs scaled so that R = tau max|q| max|k| <= radius:
    every output must lie within its reported entrywise bound of this exact float64
    reference (plus 1e-12 relative for the reference's own rounding), and the O bound
    must be at most the requested eps."""
    heads = 1
    for x in lead:
        heads *= x
    gen = lambda cnt: [rng.gauss(0.0, 1.0) for _ in range(cnt)]
    q, k, v, do = gen(heads * n_q * d), gen(heads * n_k * d), gen(heads * n_k * dv), gen(heads * n_q * dv)
    tau = 1.0 / math.sqrt(d)
    norm = lambda m, i: math.sqrt(sum(x * x for x in m[i * d : (i + 1) * d]))
    qn = max(norm(q, i) for i in range(heads * n_q))
    kn = max(norm(k, j) for j in range(heads * n_k))
    s = radius * 0.999 / (tau * qn * kn)
    q = [x * s for x in q]
    inp = os.path.join(workdir, name + "_in.safetensors")
    out = os.path.join(workdir, name + "_out.safetensors")
    write_safetensors(inp, {
        "q": ("F64", lead + [n_q, d], q), "k": ("F64", lead + [n_k, d], k),
        "v": ("F64", lead + [n_k, dv], v), "do": ("F64", lead + [n_q, dv], do),
    })
    cmd = [binary, "attention", "--input", inp, "--output", out, "--mask", mask, "--engine", "poly",
           "--eps", repr(eps), "--gradient", gradient]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        print("FAIL %s: polyattn exited %d: %s" % (name, res.returncode, res.stderr.strip()))
        return False
    got = read_safetensors(out)
    ref = {"o": [], "dq": [], "dk": [], "dv": []}
    for h in range(heads):
        sl = lambda m, rows, w: m[h * rows * w : (h + 1) * rows * w]
        o, _, dq, dk, dvv = attention_head(sl(q, n_q, d), sl(k, n_k, d), sl(v, n_k, dv), sl(do, n_q, dv), n_q, n_k, d, dv, tau, mask)
        ref["o"] += o
        ref["dq"] += dq
        ref["dk"] += dk
        ref["dv"] += dvv
    ok = True
    worst = 0.0
    for key in ref:
        _, _, vals = got[key]
        _, _, bounds = got[key + "_bound"]
        scale_ = max(abs(x) for x in ref[key])
        for a, b, bd in zip(vals, ref[key], bounds):
            err = abs(a - b)
            if err > bd + 1e-12 * scale_:
                print("FAIL %s: %s error %.3e exceeds its bound %.3e" % (name, key, err, bd))
                ok = False
                break
            if bd > 0:
                worst = max(worst, err / bd)
    meta = got["__metadata__"]
    if meta.get("engine") != "poly" or float(meta["bound_o"]) > eps:
        print("FAIL %s: engine %s, bound_o %s vs eps %g" % (name, meta.get("engine"), meta.get("bound_o"), eps))
        ok = False
    print("%s %-42s degree %s rank %s R %.2f: max error/bound %.3f, bound_o %.2e <= eps %.0e"
          % ("ok  " if ok else "FAIL", name, meta.get("degree"), meta.get("rank"), float(meta.get("radius", "nan")),
             worst, float(meta.get("bound_o", "nan")), eps))
    return ok


def check_auto_fallback(binary, workdir, rng):
    """Scores far outside the polynomial regime: auto must fall back to exact and say why."""
    n, d = 32, 16
    gen = lambda cnt: [rng.gauss(0.0, 4.0) for _ in range(cnt)]
    inp = os.path.join(workdir, "auto_in.safetensors")
    out = os.path.join(workdir, "auto_out.safetensors")
    write_safetensors(inp, {"q": ("F64", [n, d], gen(n * d)), "k": ("F64", [n, d], gen(n * d)), "v": ("F64", [n, d], gen(n * d))})
    res = subprocess.run([binary, "attention", "--input", inp, "--output", out, "--engine", "auto"], capture_output=True, text=True)
    meta = read_safetensors(out)["__metadata__"] if res.returncode == 0 else {}
    ok = meta.get("engine") == "exact" and "refused" in meta.get("auto_reason", "")
    print("%s auto on |S| ~ 60 falls back to exact: %s" % ("ok  " if ok else "FAIL", meta.get("auto_reason", res.stderr.strip())))
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--workdir")
    args = ap.parse_args()
    rng = random.Random(20241125)
    workdir = args.workdir or tempfile.mkdtemp(prefix="polyattn-check-")
    cases = []
    for mask in ["none", "causal", "causal-bottom-right"]:
        cases += [
            ("f64_%s_rank2_nq>nk" % mask, [], 37, 20, 8, 5, mask, None, "F64", 1.0),
            ("f64_%s_rank3_nq<nk" % mask, [3], 19, 70, 4, 6, mask, 0.5, "F64", 1.0),
            ("f64_%s_rank4_large_scores" % mask, [2, 2], 66, 66, 16, 16, mask, None, "F64", 3.0),
            ("f32_%s_rank3" % mask, [2], 40, 33, 8, 8, mask, None, "F32", 1.0),
        ]
    results = [check_case(args.bin, workdir, *c[:-1], rng=rng, mag=c[-1]) for c in cases]
    for mask in ["none", "causal", "causal-bottom-right"]:
        results.append(check_poly_case(args.bin, workdir, "poly_%s_R2" % mask, [2], 48, 40, 4, 3, mask, 2.0, 1e-4, rng))
        results.append(check_poly_case(args.bin, workdir, "poly_%s_R1_model_grad" % mask, [], 30, 30, 3, 2, mask, 1.0, 1e-6, rng,
                                       gradient="polynomial-model"))
    results.append(check_auto_fallback(args.bin, workdir, rng))
    passed = sum(results)
    print("%d passed, %d failed" % (passed, len(results) - passed))
    ok = passed == len(results)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
