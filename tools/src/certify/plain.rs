//! Plain (textbook, non-fused) attention in a low-precision dtype on the CPU: the
//! *baseline* of FlashAttention's acceptance rule, forward and backward, generic over
//! the storage format.
//!
//! FlashAttention's tests accept a kernel when its error is at most twice that of
//! `attention_ref(upcast=False, reorder_ops=True)` (plain PyTorch attention in the
//! kernel's dtype) plus a small tolerance. [`plain_head`] computes that reference
//! operation for operation, for one head (`q` `n_q x d`, `k` `n_k x d`, `v` `n_k x d_v`,
//! row-major, values given as f64 and first rounded to the storage dtype `X`):
//!
//! ```text
//! K'   = st(tau K)                       (attention_ref scales K: reorder_ops=True)
//! S    = st(Q K'^T)                      sums in A, one rounding to storage
//! m_i  = max_j S_ij,  z_i = sum_j e(S_ij - m_i),  P_ij = st(e(S_ij - m_i) / z_i)
//! O    = st(P V),     lse_i = m_i + ln z_i (in A, not rounded: lse is kept in f32)
//! dV   = st(P^T dO),  dP = st(dO V^T)
//! dS_ij = st(P_ij (dP_ij - sum_j' P_ij' dP_ij'))   (autograd's softmax backward)
//! dQ   = st(dS K'),   dK = st(st(dS^T Q) tau)
//! ```
//! With a softcap `c` (FlashAttention's reference: `scores / softcap`, `.tanh()`,
//! `* softcap`, each a stored op) the stored score becomes
//! `S = st(st(tanh(st(S / c))) c)` before the bias, and autograd's backward through
//! those three ops turns `dS` into `st(st(st(dS c) (1 - t^2)) / c)` with `t` the stored
//! tanh (PyTorch's `tanh_backward` computes `grad (1 - t^2)` in A and rounds once); `c`,
//! a Python float there, enters the arithmetic in A (rounded to f32 for 16- and 32-bit
//! dtypes, as PyTorch casts a scalar operand to the op's math type). This follows
//! PyTorch's CPU kernels, where `/ softcap` is a true division; its CUDA kernels
//! multiply by the reciprocal, one rounding apart (FlashAttention's tests run there).
//! FlashAttention's `softcap=0.0` means no cap; so does `None` here.
//!
//! `st` rounds to the storage dtype (nearest even), A is the accumulation type: f32,
//! or f64 when `X` is F64; every sum is sequential in A (each `+` and `*` rounded to
//! A), `e` and `ln` are evaluated in f64 and rounded to A (PyTorch's f32 `exp` is
//! within about 1 ulp of that). Masked scores are excluded; a row that sees no key
//! has `O = 0`, `lse = -inf` and no gradient (attention_ref fills it with 0).
//! attention_ref divides K by `sqrt(d)` where this multiplies by `tau`: identical
//! when `1/tau` is a power of two (d = 4, 16, 64, 256), otherwise one rounding apart.
//!
//!
//! **The lse baseline is our own construction**, not FlashAttention's code:
//! `attention_ref` returns no log-sum-exp and FlashAttention's tests compare no lse
//! against it. To judge a candidate's lse by the same rule we define the plain lse as
//! what the operations above give, precisely: `m_i` the largest stored score
//! `S_ij = st(...)` of the row (a value of the storage dtype), `z_i` the sequential sum
//! in A of the `e(S_ij - m_i)` (each `exp` evaluated in f64 from the A difference and
//! rounded to A), then `lse_i = fl_A(m_i + fl_A(ln z_i))` with `ln` evaluated in f64
//! and rounded to A; it is not rounded to the storage dtype (FlashAttention's kernels
//! return lse in f32). Under [`PlainRule::Upcast`] the scores are not rounded to the
//! storage dtype either. This is neither PyTorch's `torch.logsumexp` (which sums
//! differently) nor FlashAttention's online rescaled lse; it is the textbook
//! two-pass formula in A.
//!
//! [`PlainRule::Storage`] is that baseline (for an F32 candidate it is plain f32
//! attention); [`PlainRule::Upcast`] is `attention_ref(upcast=True)` / PyTorch's math
//! backend on upcast inputs: the same operations with every intermediate in f32 (f64
//! for F64) and only the results rounded to `X`.

use half::{bf16, f16};
use polyattn::attention::Mask;
use polyattn::io::DType;

/// One head's `q`, `k`, `v` and optional `dO`, row-major f64 values.
pub type HeadInputs<'a> = (&'a [f64], &'a [f64], &'a [f64], Option<&'a [f64]>);

/// Which plain computation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlainRule {
    /// Intermediates S, P, dP, dS (and K') stored in the dtype; sums in f32.
    Storage,
    /// Everything in f32 (f64 for F64), the results rounded to the dtype at the end.
    Upcast,
}

/// One head's plain results (f64 holding values of the output dtype), row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct PlainHead {
    /// O, `n_q x d_v`.
    pub o: Vec<f64>,
    /// lse, `n_q` (`-inf` for a row that sees no key), in the accumulation type A
    /// (f32, or f64 for F64): frameworks keep lse in f32 even for 16-bit runs.
    pub lse: Vec<f64>,
    /// (dQ, dK, dV) when a dO was given.
    pub grads: Option<[Vec<f64>; 3]>,
}

/// The accumulation types: f32 and f64, with the storage rounding.
trait Acc: Copy + PartialOrd + std::ops::Add<Output = Self> + std::ops::Sub<Output = Self> {
    const ZERO: Self;
    fn of(x: f64) -> Self;
    fn wide(self) -> f64;
    fn mul(self, o: Self) -> Self;
    fn div(self, o: Self) -> Self;
    /// Rounds to the storage dtype (a value of the dtype, held in `Self`).
    fn store(self, dt: DType) -> Self;
}

impl Acc for f32 {
    const ZERO: Self = 0.0;
    fn of(x: f64) -> Self {
        x as f32
    }
    fn wide(self) -> f64 {
        self as f64
    }
    fn mul(self, o: Self) -> Self {
        self * o
    }
    fn div(self, o: Self) -> Self {
        self / o
    }
    fn store(self, dt: DType) -> Self {
        // f32 -> f16/bf16 in `half` rounds to nearest even (one rounding).
        match dt {
            DType::F16 => f16::from_f32(self).to_f32(),
            DType::BF16 => bf16::from_f32(self).to_f32(),
            DType::F32 | DType::F64 => self,
        }
    }
}

impl Acc for f64 {
    const ZERO: Self = 0.0;
    fn of(x: f64) -> Self {
        x
    }
    fn wide(self) -> f64 {
        self
    }
    fn mul(self, o: Self) -> Self {
        self * o
    }
    fn div(self, o: Self) -> Self {
        self / o
    }
    fn store(self, dt: DType) -> Self {
        dt.round(self)
    }
}

/// Plain attention of one head under `rule` for storage dtype `dtype` (see the module
/// doc); `dims = (n_q, n_k, d, d_v)`; `d_o` adds the backward. Slices must hold
/// `n_q d`, `n_k d`, `n_k d_v` and `n_q d_v` values (the caller's shapes are checked).
///
/// `bias` (`n_q x n_k`, finite or `-inf`) is an additive score bias in the inputs'
/// dtype, added to the stored scores and the sum stored again (FlashAttention's
/// reference: `scores + attn_bias`); `-inf` hides the key. `softcap` caps the scores
/// before the bias (module docs).
pub fn plain_head(
    (q, k, v, d_o): HeadInputs<'_>,
    dims: (usize, usize, usize, usize),
    scores: (f64, Mask, Option<&[f64]>, Option<f64>),
    dtype: DType,
    rule: PlainRule,
) -> PlainHead {
    if dtype == DType::F64 {
        run::<f64>((q, k, v, d_o), dims, scores, dtype, rule)
    } else {
        run::<f32>((q, k, v, d_o), dims, scores, dtype, rule)
    }
}

fn dot<A: Acc>(a: impl Iterator<Item = (A, A)>) -> A {
    let mut acc = A::ZERO;
    for (x, y) in a {
        acc = acc + x.mul(y);
    }
    acc
}

fn run<A: Acc>(
    (q, k, v, d_o): HeadInputs<'_>,
    (n_q, n_k, d, d_v): (usize, usize, usize, usize),
    (tau, mask, bias, softcap): (f64, Mask, Option<&[f64]>, Option<f64>),
    dtype: DType,
    rule: PlainRule,
) -> PlainHead {
    // Intermediates are stored in `st`; inputs and results are of `dtype`.
    let st = match rule {
        PlainRule::Storage => dtype,
        PlainRule::Upcast => DType::F64, // no rounding beyond A's own
    };
    let input = |x: &[f64]| -> Vec<A> { x.iter().map(|&z| A::of(dtype.round(z))).collect() };
    let out = |x: A| dtype.round(x.wide());
    let (q, k, v) = (input(q), input(k), input(v));
    let tau_a = A::of(tau);
    let ks: Vec<A> = k.iter().map(|&x| x.mul(tau_a).store(st)).collect();
    let keys: Vec<std::ops::Range<usize>> = (0..n_q).map(|i| mask.key_range(i, n_q, n_k)).collect();
    let mut p = vec![A::ZERO; n_q * n_k];
    // The stored tanh of each capped score, for the backward.
    let mut t = vec![A::ZERO; if softcap.is_some() { n_q * n_k } else { 0 }];
    let cap = softcap.map(A::of);
    let mut o = vec![0.0f64; n_q * d_v];
    let mut lse = vec![f64::NEG_INFINITY; n_q];
    for i in 0..n_q {
        let ks_i = keys[i].clone();
        if ks_i.is_empty() {
            continue;
        }
        let qi = &q[i * d..(i + 1) * d];
        let s: Vec<A> = ks_i
            .clone()
            .map(|j| {
                let kj = &ks[j * d..(j + 1) * d];
                let s = dot(qi.iter().copied().zip(kj.iter().copied())).store(st);
                let s = match cap {
                    Some(c) => {
                        let y = s.div(c).store(st);
                        let tij = A::of(y.wide().tanh()).store(st);
                        t[i * n_k + j] = tij;
                        tij.mul(c).store(st)
                    }
                    None => s,
                };
                match bias {
                    Some(b) => (s + A::of(dtype.round(b[i * n_k + j]))).store(st),
                    None => s,
                }
            })
            .collect();
        let m = s
            .iter()
            .copied()
            .fold(s[0], |a, b| if b > a { b } else { a });
        if m.wide() == f64::NEG_INFINITY {
            continue; // every visible key hidden by a -inf bias: a row with no key
        }
        let e: Vec<A> = s.iter().map(|&x| A::of((x - m).wide().exp())).collect();
        let mut z = A::ZERO;
        for &x in &e {
            z = z + x;
        }
        for (j, &ej) in ks_i.clone().zip(&e) {
            p[i * n_k + j] = ej.div(z).store(st);
        }
        lse[i] = (m + A::of(z.wide().ln())).wide();
        for c in 0..d_v {
            let acc = dot(ks_i.clone().map(|j| (p[i * n_k + j], v[j * d_v + c])));
            o[i * d_v + c] = out(acc.store(st));
        }
    }
    let grads = d_o.map(|g| {
        let g = input(g);
        let mut ds = vec![A::ZERO; n_q * n_k];
        for i in 0..n_q {
            let ks_i = keys[i].clone();
            let gi = &g[i * d_v..(i + 1) * d_v];
            let dp: Vec<A> = ks_i
                .clone()
                .map(|j| {
                    let vj = &v[j * d_v..(j + 1) * d_v];
                    dot(gi.iter().copied().zip(vj.iter().copied())).store(st)
                })
                .collect();
            let sum = dot(ks_i.clone().zip(&dp).map(|(j, &x)| (p[i * n_k + j], x)));
            for (j, &x) in ks_i.zip(&dp) {
                let g = p[i * n_k + j].mul(x - sum).store(st);
                ds[i * n_k + j] = match cap {
                    Some(c) => {
                        let tij = t[i * n_k + j];
                        let g = g.mul(c).store(st);
                        let g = g.mul(A::of(1.0) - tij.mul(tij)).store(st);
                        g.div(c).store(st)
                    }
                    None => g,
                };
            }
        }
        let dq: Vec<f64> = (0..n_q * d)
            .map(|il| {
                let (i, l) = (il / d, il % d);
                let acc = dot(keys[i].clone().map(|j| (ds[i * n_k + j], ks[j * d + l])));
                out(acc.store(st))
            })
            .collect();
        let rows: Vec<std::ops::Range<usize>> =
            (0..n_k).map(|j| mask.query_range(j, n_q, n_k)).collect();
        let dk: Vec<f64> = (0..n_k * d)
            .map(|jl| {
                let (j, l) = (jl / d, jl % d);
                let acc = dot(rows[j].clone().map(|i| (ds[i * n_k + j], q[i * d + l])));
                out(acc.store(st).mul(tau_a).store(st))
            })
            .collect();
        let dv: Vec<f64> = (0..n_k * d_v)
            .map(|jc| {
                let (j, c) = (jc / d_v, jc % d_v);
                let acc = dot(rows[j].clone().map(|i| (p[i * n_k + j], g[i * d_v + c])));
                out(acc.store(st))
            })
            .collect();
        [dq, dk, dv]
    });
    PlainHead { o, lse, grads }
}
