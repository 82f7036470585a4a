"""polyattn.torch: autograd, gradcheck, and agreement with torch's own SDPA."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import polyattn  # noqa: E402
import polyattn.torch as pt  # noqa: E402
from conftest import F32_FACTOR  # noqa: E402

F = torch.nn.functional


def inputs(shape, seed=0, dtype=torch.float64, scale=1.0, n_k=None):
    g = torch.Generator().manual_seed(seed)
    *lead, n, d = shape
    n_k = n if n_k is None else n_k
    q = (torch.randn(*lead, n, d, generator=g, dtype=torch.float64) * scale).to(dtype)
    k = (torch.randn(*lead, n_k, d, generator=g, dtype=torch.float64) * scale).to(dtype)
    v = torch.randn(*lead, n_k, d, generator=g, dtype=torch.float64).to(dtype)
    return [t.requires_grad_() for t in (q, k, v)]


@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck_exact(causal):
    q, k, v = inputs((2, 6, 4), seed=1)
    f = lambda a, b, c: pt.scaled_dot_product_attention(a, b, c, is_causal=causal)
    assert torch.autograd.gradcheck(f, (q, k, v))


@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck_poly_polynomial_model_taylor_fixed_degree(causal):
    q, k, v = inputs((2, 6, 3), seed=2, scale=0.5)
    f = lambda a, b, c: pt.scaled_dot_product_attention(
        a, b, c, is_causal=causal, engine="poly", degree=4, polynomial="taylor"
    )
    assert torch.autograd.gradcheck(f, (q, k, v))


def numerical_jacobian(f, args, idx, h=1e-6):
    x = args[idx].detach()
    cols = []
    for i in range(x.numel()):
        out = []
        for s in (h, -h):
            xp = x.clone().view(-1)
            xp[i] += s
            a = [t.detach() for t in args]
            a[idx] = xp.view(x.shape)
            out.append(f(*a).detach().reshape(-1))
        cols.append((out[0] - out[1]) / (2 * h))
    return torch.stack(cols, dim=1)


def test_chebyshev_jacobian_matches_except_the_rows_that_set_R():
    """Chebyshev P is fit on [-R, R], R = tau max||q_i|| max||k_j||: the P-fixed
    derivative misses dP/dR, which only the largest-norm rows of q and k feel."""
    q, k, v = inputs((2, 6, 3), seed=2, scale=0.5)
    f = lambda a, b, c: pt.scaled_dot_product_attention(a, b, c, engine="poly", degree=3)
    jac = torch.autograd.functional.jacobian(f, (q, k, v))
    for idx, x in enumerate((q, k, v)):
        num = numerical_jacobian(f, (q, k, v), idx)
        ana = jac[idx].reshape(num.shape)
        diff = (num - ana).abs().amax(dim=0).view(x.shape).amax(dim=-1)  # per (head, row)
        top = x.detach().norm(dim=-1).argmax(dim=-1)  # the row setting R, per head
        for h in range(2):
            for r in range(6):
                # central differences at h = 1e-6: truncation ~1e-12, rounding ~1e-10
                if idx < 2 and r == top[h]:
                    assert diff[h, r] > 1e-6, (idx, h, r)  # the missing dP/dR term
                else:
                    assert diff[h, r] < 1e-7, (idx, h, r, diff[h, r])


def test_substituted_gradient_is_not_the_derivative_of_the_forward():
    q, k, v = inputs((1, 6, 3), seed=3, scale=0.5)
    f = lambda a, b, c: pt.scaled_dot_product_attention(
        a, b, c, engine="poly", degree=2, polynomial="taylor", gradient="substituted"
    )
    assert not torch.autograd.gradcheck(f, (q, k, v), raise_exception=False)


def certified(q, k, v, out, causal):
    return polyattn.certify_outputs(*(t.detach().numpy() for t in (q, k, v)), o=out.detach().numpy(), is_causal=causal)["o"]


@pytest.mark.parametrize("causal", [False, True])
def test_forward_and_backward_match_torch_sdpa(causal):
    q, k, v = inputs((2, 3, 50, 16), seed=4)
    ours = pt.scaled_dot_product_attention(q, k, v, is_causal=causal)
    theirs = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    # both within their certified distance of exact attention
    dist = certified(q, k, v, ours, causal).max_abs_error_upper + certified(q, k, v, theirs, causal).max_abs_error_upper
    assert (ours - theirs).abs().max().item() <= dist
    go = torch.randn_like(ours)
    g1 = torch.autograd.grad(ours, (q, k, v), go)
    g2 = torch.autograd.grad(theirs, (q, k, v), go)
    qn, kn, vn, gn = (t.detach().numpy() for t in (q, k, v, go))
    rep_ours = polyattn.certify_outputs(qn, kn, vn, do=gn, is_causal=causal, **{n: t.numpy() for n, t in zip(("dq", "dk", "dv"), g1)})
    rep_theirs = polyattn.certify_outputs(qn, kn, vn, do=gn, is_causal=causal, **{n: t.numpy() for n, t in zip(("dq", "dk", "dv"), g2)})
    for i, n in enumerate(("dq", "dk", "dv")):
        assert (g1[i] - g2[i]).abs().max().item() <= rep_ours[n].max_abs_error_upper + rep_theirs[n].max_abs_error_upper
        # and ours is within the float64 rounding bound (the exact engine is what
        # reference() runs): upper <= 2 x the reference bound
        assert rep_ours[n].max_abs_error_upper <= 2 * rep_ours[n].max_reference_bound


def test_float32_against_torch_float64():
    q, k, v = inputs((2, 40, 8), seed=5, dtype=torch.float32)
    ours = pt.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert ours.dtype == torch.float32
    ref64 = F.scaled_dot_product_attention(*(t.double() for t in (q, k, v)), is_causal=True)
    qn, kn, vn = (t.detach().numpy() for t in (q, k, v))
    ref = polyattn.reference(qn, kn, vn, is_causal=True)
    rep64 = certified(q.double(), k.double(), v.double(), ref64, True)
    # |ours - torch64| <= |ours - exact| + |torch64 - exact|: the float32 engine's a
    # priori bound (the float64 one scaled, see conftest) plus torch's certified distance
    tol = torch.from_numpy(ref.o_bound * F32_FACTOR) + rep64.max_abs_error_upper
    assert torch.all((ours.double() - ref64).abs() <= tol)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_dtypes_round_once_and_backprop(dtype):
    q, k, v = inputs((2, 32, 8), seed=6, dtype=dtype)
    ours = pt.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert ours.dtype == dtype
    # the same as float32 compute on the exact float32 values, rounded once
    f32 = pt.scaled_dot_product_attention(*(t.detach().float() for t in (q, k, v)), is_causal=True)
    assert torch.equal(ours, f32.to(dtype))  # torch's .to() rounds to nearest even
    # Within one rounding of exact attention: |o - exact| <= u |f32 o| + the float32
    # engine's error (the float64 bound scaled by 2^29, see conftest); u = 2^-8 for
    # bfloat16, 2^-11 for float16 (unit roundoff of 8- and 11-bit significands).
    u = 2.0 ** -(8 if dtype == torch.bfloat16 else 11)
    qn, kn, vn = (t.detach().float().numpy() for t in (q, k, v))
    ref = polyattn.reference(qn, kn, vn, is_causal=True)
    rep = polyattn.certify_outputs(qn, kn, vn, o=ours.detach().float().numpy(), is_causal=True)["o"]
    limit = u * np.abs(f32.detach().numpy()).max() + (ref.o_bound * F32_FACTOR).max()
    assert rep.max_abs_error_upper <= limit * 1.01
    ours.sum().backward()
    assert q.grad.dtype == dtype and torch.isfinite(q.grad.double()).all()


def test_loss_backward_poly_within_certified_bound():
    q, k, v = inputs((2, 64, 8), seed=7, scale=0.3)
    out = pt.scaled_dot_product_attention(q, k, v, engine="poly", eps=1e-8)
    out.pow(2).sum().backward()
    do = 2 * out.detach().numpy()
    qn, kn, vn = (t.detach().numpy() for t in (q, k, v))
    r = polyattn.attention_backward(qn, kn, vn, do, engine="poly", eps=1e-8, gradient="polynomial-model")
    np.testing.assert_array_equal(out.detach().numpy(), r.o)
    np.testing.assert_array_equal(q.grad.numpy(), r.dq)
    ref = polyattn.reference(qn, kn, vn, do)
    assert np.all(np.abs(q.grad.numpy() - ref.dq) <= r.dq_bound + ref.dq_bound)


def test_in_place_change_after_forward_is_caught():
    q, k, v = inputs((4, 8), seed=9)
    out = pt.scaled_dot_product_attention(q, k, v)
    with torch.no_grad():
        v.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_unsupported_arguments():
    q, k, v = inputs((4, 8), seed=8)
    with pytest.raises(NotImplementedError, match="dropout"):
        pt.scaled_dot_product_attention(q, k, v, dropout_p=0.1)
    with pytest.raises(TypeError, match="attn_mask"):
        pt.scaled_dot_product_attention(q, k, v, attn_mask=[[True] * 4] * 4)
    meta = [torch.empty(4, 8, device="meta") for _ in range(3)]
    with pytest.raises(ValueError, match="CPU tensors only"):
        pt.scaled_dot_product_attention(*meta)
    with pytest.raises(polyattn.PolyattnError, match="dtype"):
        pt.scaled_dot_product_attention(*(t.detach().to(torch.int32) for t in (q, k, v)))
    with pytest.raises(polyattn.PolyattnError, match="share one dtype"):
        pt.scaled_dot_product_attention(q, k.float(), v)
    with pytest.raises(polyattn.RefusedError):
        pt.scaled_dot_product_attention(*(t * 20 for t in (q, k)), v, engine="poly")


@pytest.mark.parametrize("causal", [False, True])
def test_enable_gqa_against_torch_sdpa(causal):
    """GQA 8:2 against torch's own SDPA with enable_gqa (float64): outputs and every
    gradient, through autograd."""
    g = torch.Generator().manual_seed(5)
    q = torch.randn(2, 8, 40, 16, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 2, 40, 16, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 2, 40, 16, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 8, 40, 16, generator=g, dtype=torch.float64)
    ours = pt.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
    (ours * w).sum().backward()
    mine = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    theirs = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
    (theirs * w).sum().backward()
    # Both float64: the difference is two float64 roundings of O(1) values, far below
    # 1e-12 (the a priori bound of the reference is about 1e-14 here).
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-12)
    for a, t in zip(mine, (q, k, v)):
        assert a.shape == t.shape
        assert torch.allclose(a, t.grad, rtol=0, atol=1e-12)


def agree_with_sdpa(qkvw, ours_fn, theirs_fn):
    """polyattn's and torch's outputs, and the gradients of sum(w * out) through
    autograd, agree to 1e-12 (float64: two computations of O(1) values, each within a
    few 1e-16 of exact)."""
    q, k, v, w = qkvw
    ours = ours_fn()
    (ours * w).sum().backward()
    mine = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    theirs = theirs_fn()
    (theirs * w).sum().backward()
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-12)
    for a, t in zip(mine, (q, k, v)):
        assert torch.allclose(a, t.grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("window,align", [((6, 0), "bottom-right"), ((3, 4), "top-left")])
def test_window_against_torch_sdpa_with_its_boolean_mask(window, align):
    """A sliding window against torch's SDPA given the same window as a boolean
    attn_mask (True = attend, built here from FlashAttention's rule), float64, with
    n_q != n_k: outputs and every gradient through autograd."""
    left, right = window
    n_q, n_k = 30, 44
    i = torch.arange(n_q)[:, None]
    j = torch.arange(n_k)[None, :]
    c = i if align == "top-left" else i + n_k - n_q
    allowed = (c - left <= j) & (j <= c + right)
    assert allowed.any(dim=1).all()  # torch's math backend gives NaN for empty rows
    g = torch.Generator().manual_seed(11)
    q = torch.randn(2, 3, n_q, 8, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 3, n_k, 8, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 3, n_k, 8, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 3, n_q, 8, generator=g, dtype=torch.float64)
    agree_with_sdpa(
        (q, k, v, w),
        lambda: pt.scaled_dot_product_attention(q, k, v, window=window, causal_alignment=align),
        lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=allowed),
    )


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_attn_mask_against_torch_sdpa(kind):
    """A boolean mask (key padding per batch) and a float ALiBi bias against torch's
    SDPA with the same attn_mask, float64: outputs and gradients through autograd."""
    g = torch.Generator().manual_seed(13)
    n_q, n_k = 20, 28
    q = torch.randn(2, 3, n_q, 8, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 3, n_k, 8, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 3, n_k, 8, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 3, n_q, 8, generator=g, dtype=torch.float64)
    if kind == "bool":
        lengths = torch.tensor([21, 28])
        mask = (torch.arange(n_k)[None, :] < lengths[:, None])[:, None, None, :]
    else:
        i = torch.arange(n_q)[:, None]
        j = torch.arange(n_k)[None, :]
        slopes = 2.0 ** (-8.0 * (torch.arange(3) + 1) / 3)
        mask = (-slopes[:, None, None] * (i + n_k - n_q - j).abs()).to(torch.float64)
    agree_with_sdpa(
        (q, k, v, w),
        lambda: pt.scaled_dot_product_attention(q, k, v, attn_mask=mask),
        lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
    )
    with pytest.raises(NotImplementedError, match="grad"):
        pt.scaled_dot_product_attention(q, k, v, attn_mask=mask.double().requires_grad_(True))


def test_alibi_slopes_against_torch_sdpa_with_the_bias():
    """``alibi_slopes`` (FlashAttention's) against torch's SDPA given the ALiBi bias as
    a float attn_mask built here from FlashAttention's formula, float64, n_q != n_k,
    slopes per batch and head: outputs and gradients through autograd."""
    g = torch.Generator().manual_seed(17)
    n_q, n_k = 19, 26
    q = torch.randn(2, 3, n_q, 8, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 3, n_k, 8, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 3, n_k, 8, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 3, n_q, 8, generator=g, dtype=torch.float64)
    slopes = torch.rand(2, 3, generator=g, dtype=torch.float32)
    i = torch.arange(n_q)[:, None]
    j = torch.arange(n_k)[None, :]
    bias = -slopes.double()[:, :, None, None] * (i + n_k - n_q - j).abs().double()
    agree_with_sdpa(
        (q, k, v, w),
        lambda: pt.scaled_dot_product_attention(q, k, v, alibi_slopes=slopes),
        lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias),
    )


@pytest.mark.parametrize("cap", [0.5, 3.0])
def test_softcap_against_torch_autograd(cap):
    """softcap=c against FlashAttention's reference written in torch float64 (scores
    / c, tanh, * c, softmax; torch's autograd differentiates it), values and gradients;
    and torch.autograd.gradcheck through polyattn's backward with the cap."""
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 3, 12, 8, generator=g, dtype=torch.float64) * 1.5 for _ in range(3))
    for t in (q, k, v):
        t.requires_grad_(True)
    o = pt.scaled_dot_product_attention(q, k, v, is_causal=True, softcap=cap)
    s = (q @ k.transpose(-1, -2)) / 8**0.5
    s = torch.tanh(s / cap) * cap
    s = s.masked_fill(torch.ones(12, 12, dtype=torch.bool).triu(1), float("-inf"))
    want = torch.softmax(s, dim=-1) @ v
    do = torch.randn(want.shape, generator=g, dtype=torch.float64)
    got = torch.autograd.grad(o, (q, k, v), do)
    ref = torch.autograd.grad(want, (q, k, v), do)
    torch.testing.assert_close(o, want, rtol=0, atol=1e-12)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    small = [t.detach()[:1, :1, :5].clone().requires_grad_(True) for t in (q, k, v)]
    assert torch.autograd.gradcheck(
        lambda a, b, c: pt.scaled_dot_product_attention(a, b, c, softcap=cap), small
    )
