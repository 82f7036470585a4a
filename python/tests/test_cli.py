"""Cross-check against the Rust CLI (`polyattn attention`): the same engines through
another front end (safetensors files, multi-head API) must give the same bits.

Runs where a `polyattn` binary is found: $POLYATTN_BIN, or release/polyattn under
$CARGO_TARGET_DIR or the repository's target/ (`cargo build --release --bin polyattn`;
`--no-default-features` is enough). Skipped otherwise.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

import polyattn
from polyattn._model import safetensors_bytes
from conftest import qkv

ROOT = Path(__file__).resolve().parents[2]


def find_bin():
    cands = [os.environ.get("POLYATTN_BIN")]
    for base in (os.environ.get("CARGO_TARGET_DIR"), str(ROOT / "target")):
        if base:
            cands.append(os.path.join(base, "release", "polyattn"))
    return next((c for c in cands if c and os.access(c, os.X_OK)), None)


BIN = find_bin()
pytestmark = pytest.mark.skipif(BIN is None, reason="no polyattn binary (set POLYATTN_BIN)")


def read_safetensors(path):
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    body = data[8 + n :]
    kinds = {"F32": "<f4", "F64": "<f8"}
    out = {}
    for name, h in header.items():
        a, b = h["data_offsets"]
        out[name] = np.frombuffer(body[a:b], dtype=kinds[h["dtype"]]).reshape(h["shape"])
    return out, meta


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mask", ["none", "causal", "causal-bottom-right"])
@pytest.mark.parametrize("engine", ["exact", "poly"])
def test_same_bits_as_the_cli(tmp_path, dtype, mask, engine):
    q, k, v, do = qkv((2, 3, 40, 8), 48, 6, seed=61, scale=0.3, dtype=dtype, with_do=True)
    inp, outp = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    inp.write_bytes(safetensors_bytes({"q": q, "k": k, "v": v, "do": do}))
    cmd = [BIN, "attention", "--input", str(inp), "--output", str(outp), "--mask", mask, "--engine", engine]
    if engine == "poly":
        cmd += ["--eps", "1e-6"]
    subprocess.run(cmd, check=True, capture_output=True)
    cli, meta = read_safetensors(outp)
    causal = mask != "none"
    align = "bottom-right" if mask == "causal-bottom-right" else "top-left"
    kw = dict(eps=1e-6) if engine == "poly" else {}
    r = polyattn.attention_backward(q, k, v, do, is_causal=causal, causal_alignment=align, engine=engine, **kw)
    assert meta["engine"] == r.engine == engine
    names = ["o", "lse", "dq", "dk", "dv"] + (["o_bound", "dq_bound", "dk_bound", "dv_bound"] if engine == "poly" else [])
    for name in names:
        np.testing.assert_array_equal(getattr(r, name), cli[name], err_msg=name)
    if engine == "poly":
        assert int(float(meta["degree"])) == r.degree and int(float(meta["rank"])) == r.rank
