"""float16 / bfloat16: exact conversion in, round-to-nearest-even out, checked against
independent decoders and an independent nearest-value search."""

from __future__ import annotations

import math

import numpy as np
import pytest

import polyattn
from polyattn._arrays import Storage, from_compute, to_compute
from conftest import LD_SLACK, np_attention, qkv

ALL16 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)


def decode(bits: np.ndarray, exp_bits: int, man_bits: int) -> np.ndarray:
    """IEEE binary format decoder, from the definition, in float64."""
    b = bits.astype(np.int64)
    sign = np.where(b >> (exp_bits + man_bits) & 1, -1.0, 1.0)
    e = (b >> man_bits) & ((1 << exp_bits) - 1)
    m = (b & ((1 << man_bits) - 1)).astype(np.float64)
    bias = (1 << (exp_bits - 1)) - 1
    emax = (1 << exp_bits) - 1
    normal = sign * (1 + m / 2.0**man_bits) * np.exp2((e - bias).astype(np.float64))
    sub = sign * (m / 2.0**man_bits) * 2.0 ** (1 - bias)
    special = np.where(m == 0, sign * np.inf, np.nan)
    return np.where(e == emax, special, np.where(e == 0, sub, normal))


FORMATS = {"bfloat16": (8, 7), "float16": (5, 10)}


@pytest.mark.parametrize("fmt", ["bfloat16", "float16"])
def test_exact_decode_of_every_bit_pattern(fmt):
    with np.errstate(invalid="ignore"):  # NaN payloads
        got = to_compute(ALL16, Storage(fmt, True)).astype(np.float64)
    want = decode(ALL16, *FORMATS[fmt])
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert np.array_equal(got[~nan], want[~nan])
    # signed zeros survive
    assert np.array_equal(np.signbit(got[~nan]), np.signbit(want[~nan]))


def nearest_even(x: np.ndarray, fmt: str) -> np.ndarray:
    """Independent rounding: search the sorted table of all finite values (plus inf as
    the value one ulp past the largest, where IEEE rounding overflows), nearest wins,
    ties go to the even bit pattern."""
    eb, mb = FORMATS[fmt]
    finite_bits = ALL16[np.isfinite(decode(ALL16, eb, mb))]
    vals = decode(finite_bits, eb, mb)
    top = decode(np.array([(((1 << eb) - 2) << mb) | ((1 << mb) - 1)], dtype=np.uint16), eb, mb)[0]
    ulp = 2.0 ** (math.floor(math.log2(top)) - mb)
    inf_bits = np.uint16(((1 << eb) - 1) << mb)
    vals = np.concatenate([vals, [top + ulp, -(top + ulp)]])
    finite_bits = np.concatenate([finite_bits, [inf_bits, inf_bits | np.uint16(0x8000)]])
    # +0 and -0 share a value; keep +0 for the search, fix the sign after
    keep = ~((vals == 0) & (finite_bits >= 0x8000))
    vals, finite_bits = vals[keep], finite_bits[keep]
    order = np.argsort(vals, kind="stable")
    vals, finite_bits = vals[order], finite_bits[order]
    xs = x.astype(np.float64)
    hi = np.clip(np.searchsorted(vals, xs, side="left"), 1, len(vals) - 1)
    lo = hi - 1
    dlo, dhi = xs - vals[lo], vals[hi] - xs
    pick_hi = (dhi < dlo) | ((dhi == dlo) & (finite_bits[hi] & 1 == 0))
    out = np.where(pick_hi, finite_bits[hi], finite_bits[lo]).astype(np.uint16)
    zero = out & 0x7FFF == 0
    out[zero & np.signbit(xs)] |= 0x8000
    return out


@pytest.mark.parametrize("fmt", ["bfloat16", "float16"])
def test_round_to_nearest_even(fmt):
    r = np.random.default_rng(0)
    eb, mb = FORMATS[fmt]
    # random float32 bit patterns in the format's range, and exact ties: the midpoints
    # between consecutive representable values (exactly representable in float32)
    lim = 70000.0 if fmt == "float16" else 3.4e38
    x = r.standard_normal(20000).astype(np.float32) * np.float32(10.0) ** r.integers(-8, 5, 20000).astype(np.float32)
    x = x[np.abs(x) < lim]
    fin_bits = ALL16[np.isfinite(decode(ALL16, eb, mb))]
    fin = np.sort(decode(fin_bits, eb, mb))
    mids = ((fin[:-1] + fin[1:]) / 2).astype(np.float32)
    assert np.array_equal(mids.astype(np.float64), (fin[:-1] + fin[1:]) / 2)  # exact ties
    extreme = np.array([6.5519e4, 6.552e4, 6.6e4, 3.39e38, 3.4e38], dtype=np.float32)
    x = np.concatenate([x, mids, extreme, -mids[:50], np.float32([0.0, -0.0])])
    if fmt == "float16":
        x = x[np.abs(x) < 3e38]
    got = from_compute(x, Storage(fmt, True))
    want = nearest_even(x, fmt)
    bad = got != want
    assert not bad.any(), (x[bad][:5], got[bad][:5], want[bad][:5])


def test_ml_dtypes_agree():
    ml = pytest.importorskip("ml_dtypes")
    vals = ALL16.view(ml.bfloat16)
    got = to_compute(vals, Storage("bfloat16", False))
    want = vals.astype(np.float32)
    nan = np.isnan(want)
    assert np.array_equal(got[~nan], want[~nan]) and np.array_equal(np.isnan(got), nan)
    x = np.random.default_rng(1).standard_normal(10000).astype(np.float32)
    np.testing.assert_array_equal(from_compute(x, Storage("bfloat16", False)).view(np.uint16), x.astype(ml.bfloat16).view(np.uint16))


@pytest.mark.parametrize("fmt", ["bfloat16", "float16"])
def test_attention_half_is_f32_compute_rounded_once(fmt):
    q, k, v, do = qkv((2, 24, 8), seed=21, dtype=np.float32, with_do=True)
    s_raw = Storage(fmt, True)
    bits = [from_compute(x, s_raw) for x in (q, k, v, do)]  # half inputs as uint16
    f32 = [to_compute(b, s_raw) for b in bits]  # their exact float32 values
    want = polyattn.attention_backward(*f32, is_causal=True)
    got = polyattn.attention_backward(*bits, is_causal=True, dtype=fmt)
    for name in ("o", "lse", "dq", "dk", "dv"):
        g = getattr(got, name)
        assert g.dtype == np.uint16, name
        np.testing.assert_array_equal(g, nearest_even(getattr(want, name).ravel(), fmt).reshape(g.shape), err_msg=name)
    # The typed-array path gives the same bits.
    if fmt == "float16":
        typed = [b.view(np.float16) for b in bits]
    else:
        ml = pytest.importorskip("ml_dtypes")
        typed = [b.view(ml.bfloat16) for b in bits]
    t = polyattn.attention_backward(*typed, is_causal=True)
    assert t.o.dtype == typed[0].dtype
    for name in ("o", "lse", "dq", "dk", "dv"):
        np.testing.assert_array_equal(getattr(t, name).view(np.uint16), getattr(got, name), err_msg=name)


def test_half_poly_bound_covers_final_rounding():
    q, k, v, do = qkv((2, 64, 8), seed=22, scale=0.3, dtype=np.float32, with_do=True)
    s = Storage("bfloat16", True)
    bits = [from_compute(x, s) for x in (q, k, v, do)]
    r = polyattn.attention_backward(*bits, engine="poly", eps=1e-5, dtype="bfloat16")
    f32 = [to_compute(b, s) for b in bits]
    ref = polyattn.reference(*f32)
    npr = np_attention(*f32, tau=ref.scale)
    for name in ("o", "dq", "dk", "dv"):
        val = to_compute(getattr(r, name), s)
        tol = getattr(r, name + "_bound") + getattr(ref, name + "_bound") * LD_SLACK
        assert np.all(np.abs(val.astype(np.longdouble) - npr[name]) <= tol), name
    # the bound grew by the bfloat16 rounding (about 2^-9 |o|) over the f32 one
    f = polyattn.attention(*f32[:3], engine="poly", eps=1e-5)
    assert np.all(r.o_bound >= f.o_bound)
    assert r.o_bound.max() > 100 * f.o_bound.max()
