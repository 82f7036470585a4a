"""FlashAttention's packed variable-length layout in ``certify_outputs``
(``cu_seqlens_q``, ``cu_seqlens_k``; q, o, dq, do ``[total_q, heads, d]``, k, v, dk, dv
``[total_k, heads_kv, d]``).

Candidates are computed here sequence by sequence by the longdouble reference of
``conftest`` (written from the definition) and packed; a certified error must then be
within the reference's own bound, and swapping two sequences' outputs must be caught.
"""

from __future__ import annotations

import numpy as np
import pytest

import polyattn
from conftest import np_attention, qkv

LENS_Q = [5, 9, 1, 7]
LENS_K = [7, 9, 4, 12]


def packed(heads=3, heads_kv=3, d=8, d_v=6, seed=0):
    """Per-sequence inputs [heads, n, d] and their longdouble results, packed."""
    seqs = []
    for b, (nq, nk) in enumerate(zip(LENS_Q, LENS_K)):
        q, k, v, do = qkv((heads, nq, d), nk, d_v, seed=seed + b, with_do=True)
        k, v = k[:heads_kv], v[:heads_kv]
        g = heads // heads_kv
        want = np_attention(q, np.repeat(k, g, 0), np.repeat(v, g, 0), do, mask="bottom-right")
        # Grouped heads: dk, dv of a key head are the sums over its group.
        for name in ("dk", "dv"):
            want[name] = want[name].reshape(heads_kv, g, *want[name].shape[1:]).sum(axis=1)
        seqs.append(dict(q=q, k=k, v=v, do=do, **want))

    def pack(name):
        # Results are longdouble: rounded to float64, the dtype a candidate file holds.
        return np.concatenate([np.swapaxes(s[name], 0, 1) for s in seqs], axis=0).astype(np.float64)

    cu_q = np.concatenate([[0], np.cumsum(LENS_Q)]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum(LENS_K)]).astype(np.int32)
    return {n: pack(n) for n in ("q", "k", "v", "do", "o", "dq", "dk", "dv")}, cu_q, cu_k


KW = dict(is_causal=True, causal_alignment="bottom-right")


@pytest.mark.parametrize("heads_kv", [3, 1])
def test_packed_candidates_are_certified_per_sequence(heads_kv):
    x, cu_q, cu_k = packed(heads_kv=heads_kv)
    rep = polyattn.certify_outputs(
        x["q"], x["k"], x["v"], o=x["o"], dq=x["dq"], dk=x["dk"], dv=x["dv"], do=x["do"],
        cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, enable_gqa=heads_kv != 3, **KW,
    )
    for t in rep.tensors:
        # The candidate is the longdouble result rounded to float64: within
        # 2^-53 |x| (+ the longdouble error, far below) of exact; the reference within
        # its bound; so the certified error is at most 2 bound + 2^-52 max|x|.
        slack = 2.0**-52 * np.abs(x[t.name]).max()
        assert t.max_abs_error_upper <= 2 * t.max_reference_bound + slack, t
        assert t.max_abs_error_lower == 0.0, t
        rows = sum(LENS_Q) if t.name in ("o", "dq") else sum(LENS_K)
        assert t.row_mean_error.shape == (rows, 3 if t.name in ("o", "dq") else heads_kv)


def test_the_same_as_certifying_each_sequence_and_a_swap_is_caught():
    x, cu_q, cu_k = packed()
    rep = polyattn.certify_outputs(x["q"], x["k"], x["v"], o=x["o"], cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, **KW)
    worst = 0.0
    for b in range(len(LENS_Q)):
        sl = lambda a, cu: np.ascontiguousarray(np.swapaxes(a[cu[b]:cu[b + 1]], 0, 1))
        one = polyattn.certify_outputs(
            sl(x["q"], cu_q), sl(x["k"], cu_k), sl(x["v"], cu_k), o=sl(x["o"], cu_q), **KW
        )
        worst = max(worst, one["o"].max_abs_error_upper)
    assert rep["o"].max_abs_error_upper == worst
    # The first 5 output rows of sequence 1 put in place of sequence 0's and back:
    # certified wrong.
    bad = x["o"].copy()
    bad[0:5], bad[5:10] = x["o"][5:10].copy(), x["o"][0:5].copy()
    rep = polyattn.certify_outputs(x["q"], x["k"], x["v"], o=bad, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, **KW)
    assert rep["o"].max_abs_error_lower > 1e-3


@pytest.mark.parametrize(
    "cu_q, cu_k, kind",
    [
        ([0, 5, 14, 15, 22], None, "invalid_parameter"),  # one given alone
        ([0, 5, 14, 15, 21], [0, 7, 16, 20, 32], "invalid_parameter"),  # does not end at total_q
        ([0, 9, 5, 15, 22], [0, 7, 16, 20, 32], "invalid_parameter"),  # decreasing
        ([0, 5, 14, 22], [0, 7, 16, 20, 32], "shape_mismatch"),  # batch differs
        ([0.0, 5, 14, 15, 22], [0, 7, 16, 20, 32], "invalid_parameter"),  # not integers
        ([0, 5, 14, 15, 22], [0, 7, 16, 16, 32], "invalid_parameter"),  # queries without keys
    ],
)
def test_bad_offsets_are_typed_errors(cu_q, cu_k, kind):
    x, _, _ = packed()
    with pytest.raises(polyattn.PolyattnError) as e:
        polyattn.certify_outputs(
            x["q"], x["k"], x["v"], o=x["o"],
            cu_seqlens_q=np.asarray(cu_q), cu_seqlens_k=None if cu_k is None else np.asarray(cu_k), **KW,
        )
    assert e.value.kind == kind, str(e.value)


def test_attn_mask_and_wrong_packed_shapes_are_refused():
    x, cu_q, cu_k = packed()
    with pytest.raises(polyattn.PolyattnError, match="packed"):
        polyattn.certify_outputs(x["q"], x["k"], x["v"], o=x["o"], cu_seqlens_q=cu_q, cu_seqlens_k=cu_k,
                                 attn_mask=np.ones((22, 32), dtype=bool))
    with pytest.raises(polyattn.PolyattnError) as e:
        polyattn.certify_outputs(x["q"], x["k"], x["v"], o=x["o"][:-1], cu_seqlens_q=cu_q, cu_seqlens_k=cu_k)
    assert e.value.kind == "shape_mismatch"
