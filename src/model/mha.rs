//! Multi-head attention `MHA(x) = concat_c(Attn(x W_Q^c, x W_K^c, x W_V^c)) W_O` with
//! heads splitting the columns of `x W_Q`, `x W_K` (`d_qk` each) and `x W_V` (`d_v =
//! d_model / h` each) (docs/math.md §7; ML24 Lemma K.2). Backward (ML24 Lemma 3.4 / C.4
//! through the projections):
//!
//! ```text
//! dW_O = O_cat^T dy,  dO_cat = dy W_O^T  -> per head dO -> engine -> dQ, dK, dV
//! dW_Q = x^T dQ,  dW_K = x^T dK,  dW_V = x^T dV,
//! dx = dQ W_Q^T + dK W_K^T + dV W_V^T
//! ```
//! (dQ, dK, dV concatenated over heads.)
//!
//! Dot-product attention scores `S = Q K^T / sqrt(d_qk)`. Cosine attention
//! ([`CosineAttention`], docs/math.md §7.4) normalises each row as `F.normalize` does,
//! `q_hat = q / max(||q||, 1e-12)`, and scores `S = tau q_hat k_hat^T`; the engines are
//! given `Q' = tau Q_hat`, `K' = K_hat` with scale 1 and the planner the radius floor
//! `tau_max`. Its backward, per head and row (`r = ||q||`, `dQ'` from the engine):
//!
//! ```text
//! dq_hat = tau dq',   dtau = sum_i q_hat_i . dq'_i
//! dq     = (dq_hat - q_hat (q_hat . dq_hat)) / r      (r > 1e-12; else dq_hat / 1e-12)
//! dk     = the same with k_hat, dk' (no tau)
//! d log_tau = dtau tau  when exp(log_tau) <= tau_max, else 0 (the clamp's gradient)
//! ```

use super::config::{CosineAttention, ModelConfig};
use super::dense::{add, merge_heads, mm, mm_nt, mm_tn, split_heads};
use super::engine::{self, EngineChoice, HeadsForward, LayerReport, Scores};
use crate::error::Result;
use crate::scalar::Real;
use crate::tensor::{Matrix, Tensor3};

/// `F.normalize`'s floor on the norm: rows shorter than this are divided by it.
pub const NORM_EPS: f64 = 1e-12;

/// The attention weights of one layer, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct MhaWeights<'a, T> {
    /// W_Q, `d_model x h d_qk`.
    pub wq: &'a Matrix<T>,
    /// W_K, `d_model x h d_qk`.
    pub wk: &'a Matrix<T>,
    /// W_V, `d_model x d_model`.
    pub wv: &'a Matrix<T>,
    /// W_O, `d_model x d_model`.
    pub wo: &'a Matrix<T>,
    /// `ln tau` per head (learnable cosine temperature).
    pub log_tau: Option<&'a [T]>,
}

/// Cosine attention's forward quantities, per head.
#[derive(Clone, Debug)]
struct CosineCache<T> {
    /// Q_hat, `[h, n, d_qk]` (K_hat is the engine's K).
    q_hat: Tensor3<T>,
    /// `max(||q_i||, eps)` per head and row, `h n` values (head-major).
    q_den: Vec<T>,
    /// The same for K.
    k_den: Vec<T>,
    /// tau per head.
    tau: Vec<T>,
    /// Whether d tau / d log_tau = tau (learnable and below or at the cap) per head.
    live: Vec<bool>,
}

/// What the backward needs.
#[derive(Clone, Debug)]
pub struct MhaCache<T> {
    x: Matrix<T>,
    q: Tensor3<T>,
    k: Tensor3<T>,
    v: Tensor3<T>,
    o_cat: Matrix<T>,
    heads: HeadsForward<T>,
    scores: Scores,
    cosine: Option<CosineCache<T>>,
}

impl<T> MhaCache<T> {
    /// The per-head temperatures of a cosine layer (`None` for dot-product attention).
    pub fn tau(&self) -> Option<&[T]> {
        self.cosine.as_ref().map(|c| c.tau.as_slice())
    }
}

/// Gradients of the attention weights.
#[derive(Clone, Debug)]
pub struct MhaGrads<T> {
    /// dL/dW_Q.
    pub wq: Matrix<T>,
    /// dL/dW_K.
    pub wk: Matrix<T>,
    /// dL/dW_V.
    pub wv: Matrix<T>,
    /// dL/dW_O.
    pub wo: Matrix<T>,
    /// dL/d log_tau (learnable cosine temperature).
    pub log_tau: Option<Vec<T>>,
}

/// The per-head temperatures and whether the clamp passes the gradient.
fn temperatures<T: Real>(
    c: &CosineAttention,
    log_tau: Option<&[T]>,
    h: usize,
) -> (Vec<T>, Vec<bool>) {
    let cap = T::from_f64(c.tau_max);
    match log_tau {
        Some(s) if c.learnable => s
            .iter()
            .map(|&s| {
                let e = s.exp();
                if e <= cap {
                    (e, true)
                } else {
                    (cap, false)
                }
            })
            .unzip(),
        _ => (vec![T::from_f64(c.tau_init); h], vec![false; h]),
    }
}

/// Normalises every row of every head: `(x_hat, max(||x_i||, eps))`.
fn normalize<T: Real>(x: &Tensor3<T>) -> Result<(Tensor3<T>, Vec<T>)> {
    let d = x.cols();
    let eps = T::from_f64(NORM_EPS);
    let mut out = x.as_slice().to_vec();
    let mut den = Vec::with_capacity(x.heads() * x.rows());
    if d > 0 {
        for row in out.chunks_mut(d) {
            let r = row.iter().map(|&a| a * a).sum::<T>().sqrt().max(eps);
            for a in row.iter_mut() {
                *a /= r;
            }
            den.push(r);
        }
    }
    Ok((Tensor3::from_vec(x.heads(), x.rows(), d, out)?, den))
}

/// Backward of [`normalize`] given `d x_hat`: per row `(g - x_hat (x_hat . g)) / r` when
/// the norm exceeds eps, `g / eps` where the floor is active.
fn normalize_backward<T: Real>(
    x_hat: &Tensor3<T>,
    den: &[T],
    g: &Tensor3<T>,
) -> Result<Tensor3<T>> {
    let d = x_hat.cols();
    let eps = T::from_f64(NORM_EPS);
    let mut out = g.as_slice().to_vec();
    if d > 0 {
        for ((o, xh), &r) in out.chunks_mut(d).zip(x_hat.as_slice().chunks(d)).zip(den) {
            if r > eps {
                let dot = o.iter().zip(xh).map(|(&a, &b)| a * b).sum::<T>();
                for (a, &b) in o.iter_mut().zip(xh) {
                    *a = (*a - b * dot) / r;
                }
            } else {
                for a in o.iter_mut() {
                    *a /= eps;
                }
            }
        }
    }
    Tensor3::from_vec(g.heads(), g.rows(), d, out)
}

/// `x` with head `h`'s rows multiplied by `s[h]`.
fn scale_heads<T: Real>(x: &Tensor3<T>, s: &[T]) -> Result<Tensor3<T>> {
    let per = x.rows() * x.cols();
    let mut out = x.as_slice().to_vec();
    if per > 0 {
        for (chunk, &t) in out.chunks_mut(per).zip(s) {
            for a in chunk.iter_mut() {
                *a *= t;
            }
        }
    }
    Tensor3::from_vec(x.heads(), x.rows(), x.cols(), out)
}

/// `MHA(x)` for the layer configuration `cfg` through `choice`; the cache and the
/// engine report.
pub fn forward<T: Real>(
    w: MhaWeights<'_, T>,
    cfg: &ModelConfig,
    choice: &EngineChoice,
    x: &Matrix<T>,
) -> Result<(Matrix<T>, MhaCache<T>, LayerReport)> {
    let heads = cfg.n_heads;
    let q = split_heads(&mm(x, w.wq)?, heads)?;
    let k = split_heads(&mm(x, w.wk)?, heads)?;
    let v = split_heads(&mm(x, w.wv)?, heads)?;
    let (q, k, scores, cosine) = match &cfg.cosine {
        None => (q, k, Scores::dot(cfg.mask()), None),
        Some(c) => {
            let (tau, live) = temperatures(c, w.log_tau, heads);
            let (q_hat, q_den) = normalize(&q)?;
            let (k_hat, k_den) = normalize(&k)?;
            let scores = Scores {
                mask: cfg.mask(),
                scale: Some(1.0),
                radius_floor: c.tau_max,
            };
            let q_scaled = scale_heads(&q_hat, &tau)?;
            let cache = CosineCache {
                q_hat,
                q_den,
                k_den,
                tau,
                live,
            };
            (q_scaled, k_hat, scores, Some(cache))
        }
    };
    let (o, state, report) = engine::forward(&q, &k, &v, scores, choice)?;
    let o_cat = merge_heads(&o)?;
    let y = mm(&o_cat, w.wo)?;
    Ok((
        y,
        MhaCache {
            x: x.clone(),
            q,
            k,
            v,
            o_cat,
            heads: state,
            scores,
            cosine,
        },
        report,
    ))
}

/// Backward of [`forward`] given `dy`: `dx` and the weight gradients; the report's
/// gradient bounds are filled when the polynomial engine ran.
pub fn backward<T: Real>(
    w: MhaWeights<'_, T>,
    cache: &MhaCache<T>,
    dy: &Matrix<T>,
    report: &mut LayerReport,
) -> Result<(Matrix<T>, MhaGrads<T>)> {
    let heads = cache.q.heads();
    let dwo = mm_tn(&cache.o_cat, dy)?;
    let d_o = split_heads(&mm_nt(dy, w.wo)?, heads)?;
    let (dq, dk, dv) = engine::backward(
        &cache.q,
        &cache.k,
        &cache.v,
        &cache.heads,
        &d_o,
        cache.scores,
        report,
    )?;
    let (dq, dk, d_log_tau) = match &cache.cosine {
        None => (dq, dk, None),
        Some(c) => {
            let per = dq.rows() * dq.cols();
            // dtau_h = sum over the head's rows of q_hat . dq' (ascending order).
            let dtau: Vec<T> = (0..heads)
                .map(|h| {
                    let a = &c.q_hat.as_slice()[h * per..(h + 1) * per];
                    let b = &dq.as_slice()[h * per..(h + 1) * per];
                    a.iter().zip(b).map(|(&x, &y)| x * y).sum::<T>()
                })
                .collect();
            let dq_hat = scale_heads(&dq, &c.tau)?;
            let dq = normalize_backward(&c.q_hat, &c.q_den, &dq_hat)?;
            let dk = normalize_backward(&cache.k, &c.k_den, &dk)?;
            let d_log_tau = w.log_tau.map(|_| {
                dtau.iter()
                    .zip(&c.tau)
                    .zip(&c.live)
                    .map(|((&g, &t), &live)| if live { g * t } else { T::ZERO })
                    .collect()
            });
            (dq, dk, d_log_tau)
        }
    };
    let (dq, dk, dv) = (merge_heads(&dq)?, merge_heads(&dk)?, merge_heads(&dv)?);
    let dx = add(
        &add(&mm_nt(&dq, w.wq)?, &mm_nt(&dk, w.wk)?)?,
        &mm_nt(&dv, w.wv)?,
    )?;
    Ok((
        dx,
        MhaGrads {
            wq: mm_tn(&cache.x, &dq)?,
            wk: mm_tn(&cache.x, &dk)?,
            wv: mm_tn(&cache.x, &dv)?,
            wo: dwo,
            log_tau: d_log_tau,
        },
    ))
}
