//! FlashAttention forward and backward through the simulated cache (docs/math.md §8; the
//! tiling of Dao et al. 2022, Algorithms 1 and 2, whose optimality for `M >= d^2` is
//! IO24's large-cache theorem).
//!
//! Loop order as in FlashAttention-1: the outer loop runs over key/value blocks of
//! `B_c` rows kept resident; the inner loop streams query blocks of `B_r` rows and
//! their running statistics through the cache. Each outer step moves `Theta(n d)`
//! words, and there are `n / B_c = Theta(n d / M)` of them: `Theta(n^2 d^2 / M)`.
//! Score tiles where the [`Pattern`] shows nothing are skipped, which makes this also
//! the block-sparse algorithm.

use super::pattern::Pattern;
use super::sim::{Buf, Sim, SlowId};
use super::{Dims, FwdIds, GradIds, Inputs};
use crate::error::{Error, Result};

/// Block sizes `B_r` (query rows) and `B_c` (key rows) of a FlashAttention pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FlashBlocks {
    /// Query rows per block.
    pub b_r: usize,
    /// Key rows per block.
    pub b_c: usize,
}

impl FlashBlocks {
    /// FlashAttention's rule `B_c = ceil(M / 4d)`, `B_r = min(B_c, d)` (docs/math.md §8),
    /// clamped to the sequence lengths, then with `B_c` lowered one at a time until the
    /// pass's working set `ws(B_r, B_c)` fits the hard capacity `M`.
    fn fit(capacity: usize, dims: &Dims, ws: impl Fn(usize, usize) -> usize) -> Result<Self> {
        let mut b_c = capacity.div_ceil(4 * dims.d).min(dims.n_k);
        while b_c > 0 {
            let b_r = b_c.min(dims.d).min(dims.n_q);
            if ws(b_r, b_c) <= capacity {
                return Ok(Self { b_r, b_c });
            }
            b_c -= 1;
        }
        Err(Error::InvalidParameter {
            name: "cache capacity M",
            value: capacity.to_string(),
            reason: format!(
                "FlashAttention needs at least {} words (one row of each operand) at d = {}",
                ws(1, 1),
                dims.d
            ),
        })
    }

    /// Forward blocks: resident `K_j, V_j` (`B_c (d + d_v)`), `Q_i` and the output
    /// accumulator (`B_r (d + d_v)`), the score tile (`B_r B_c`), and the running max
    /// and sum (`2 B_r`).
    pub fn forward(capacity: usize, dims: &Dims) -> Result<Self> {
        let (d, dv) = (dims.d, dims.d_v);
        Self::fit(capacity, dims, |r, c| {
            c * (d + dv) + r * (d + dv) + r * c + 2 * r
        })
    }

    /// Backward blocks: resident `K_j, V_j, dK_j, dV_j` (`2 B_c (d + d_v)`), `Q_i, dQ_i,
    /// dO_i` (`B_r (2 d + d_v)`), the `P` and `dS` tiles (`2 B_r B_c`), and `lse_i`,
    /// `delta_i` (`2 B_r`).
    pub fn backward(capacity: usize, dims: &Dims) -> Result<Self> {
        let (d, dv) = (dims.d, dims.d_v);
        Self::fit(capacity, dims, |r, c| {
            2 * c * (d + dv) + r * (2 * d + dv) + 2 * r * c + 2 * r
        })
    }
}

/// `x . y` left to right.
#[inline]
fn dot(x: &[f64], y: &[f64]) -> f64 {
    x.iter().zip(y).fold(0.0, |s, (a, b)| s + a * b)
}

/// Row `r` of a buffer.
#[inline]
fn row(b: &Buf, r: usize) -> &[f64] {
    &b.data()[r * b.cols()..(r + 1) * b.cols()]
}

/// The forward: `O` and `lse` in slow memory (docs/math.md §2.2), FlashAttention-1 order.
pub fn forward(sim: &mut Sim, x: &Inputs, pattern: &Pattern) -> Result<FwdIds> {
    let dims = x.dims(sim)?;
    let Dims { n_q, n_k, d, d_v } = dims;
    let FlashBlocks { b_r, b_c } = FlashBlocks::forward(sim.capacity(), &dims)?;
    // Unnormalised accumulators and running statistics live in slow memory between
    // visits; a query block's first visit starts them in the cache (no read).
    let acc_id = sim.slow_zeros(n_q, d_v)?;
    let m_id = sim.slow_zeros(n_q, 1)?;
    let l_id = sim.slow_zeros(n_q, 1)?;
    let mut started = vec![false; n_q.div_ceil(b_r)];
    for j0 in (0..n_k).step_by(b_c) {
        let cj = b_c.min(n_k - j0);
        if !pattern.any_in(0..n_q, j0..j0 + cj, n_q, n_k) {
            continue;
        }
        let kt = sim.load(x.k, j0, 0, cj, d)?;
        let vt = sim.load(x.v, j0, 0, cj, d_v)?;
        for (bi, i0) in (0..n_q).step_by(b_r).enumerate() {
            let ri = b_r.min(n_q - i0);
            if !pattern.any_in(i0..i0 + ri, j0..j0 + cj, n_q, n_k) {
                continue;
            }
            let qt = sim.load(x.q, i0, 0, ri, d)?;
            let (mut acc, mut m, mut l) = if started[bi] {
                (
                    sim.load(acc_id, i0, 0, ri, d_v)?,
                    sim.load(m_id, i0, 0, ri, 1)?,
                    sim.load(l_id, i0, 0, ri, 1)?,
                )
            } else {
                let mut m = sim.alloc(ri, 1)?;
                m.data_mut().fill(f64::NEG_INFINITY);
                (sim.alloc(ri, d_v)?, m, sim.alloc(ri, 1)?)
            };
            let mut s = sim.alloc(ri, cj)?;
            for r in 0..ri {
                for c in 0..cj {
                    *s.at_mut(r, c) = if pattern.visible(i0 + r, j0 + c, n_q, n_k) {
                        x.tau * dot(row(&qt, r), row(&kt, c))
                    } else {
                        f64::NEG_INFINITY
                    };
                }
                let m_old = m.at(r, 0);
                let m_new = (0..cj).fold(m_old, |a, c| a.max(s.at(r, c)));
                if m_new == f64::NEG_INFINITY {
                    (0..cj).for_each(|c| *s.at_mut(r, c) = 0.0);
                    continue;
                }
                let alpha = if m_old == f64::NEG_INFINITY {
                    0.0
                } else {
                    (m_old - m_new).exp()
                };
                let mut sum = 0.0;
                for c in 0..cj {
                    let p = (s.at(r, c) - m_new).exp(); // e^{-inf} = 0 where masked
                    *s.at_mut(r, c) = p;
                    sum += p;
                }
                *l.at_mut(r, 0) = alpha * l.at(r, 0) + sum;
                *m.at_mut(r, 0) = m_new;
                for e in 0..d_v {
                    *acc.at_mut(r, e) *= alpha;
                }
            }
            for r in 0..ri {
                for c in 0..cj {
                    let p = s.at(r, c);
                    for e in 0..d_v {
                        *acc.at_mut(r, e) += p * vt.at(c, e);
                    }
                }
            }
            sim.free(s);
            sim.free(qt);
            sim.store_free(acc, acc_id, i0, 0)?;
            sim.store_free(m, m_id, i0, 0)?;
            sim.store_free(l, l_id, i0, 0)?;
            started[bi] = true;
        }
        sim.free(kt);
        sim.free(vt);
    }
    // Normalise: O_i = acc_i / l_i, lse_i = m_i + ln l_i (O = 0, lse = -inf for a row
    // that saw no key, the exact engine's convention).
    let o = sim.slow_zeros(n_q, d_v)?;
    let lse = sim.slow_zeros(n_q, 1)?;
    for (bi, i0) in (0..n_q).step_by(b_r).enumerate() {
        let ri = b_r.min(n_q - i0);
        let (mut acc, mut m, l) = if started[bi] {
            (
                sim.load(acc_id, i0, 0, ri, d_v)?,
                sim.load(m_id, i0, 0, ri, 1)?,
                sim.load(l_id, i0, 0, ri, 1)?,
            )
        } else {
            (sim.alloc(ri, d_v)?, sim.alloc(ri, 1)?, sim.alloc(ri, 1)?)
        };
        for r in 0..ri {
            let lr = l.at(r, 0);
            let inv = if lr > 0.0 { 1.0 / lr } else { 0.0 };
            (0..d_v).for_each(|e| *acc.at_mut(r, e) *= inv);
            *m.at_mut(r, 0) = if lr > 0.0 {
                m.at(r, 0) + lr.ln()
            } else {
                f64::NEG_INFINITY
            };
        }
        sim.free(l);
        sim.store_free(acc, o, i0, 0)?;
        sim.store_free(m, lse, i0, 0)?;
    }
    Ok(FwdIds { o, lse })
}

/// The backward (docs/math.md §2.3): `dV = P^T dO`, `dS = P o (dO V^T - delta)`,
/// `dQ = tau dS K`, `dK = tau dS^T Q`, with `P` recomputed tile by tile from `lse`
/// and `delta = rowsum(dO o O)` computed first in one streaming pass (as
/// FlashAttention-2 does). Outer loop over key blocks (their gradients stay resident),
/// inner loop over query blocks (their `dQ` is read, updated and written back).
pub fn backward(
    sim: &mut Sim,
    x: &Inputs,
    fwd: &FwdIds,
    d_o: SlowId,
    pattern: &Pattern,
) -> Result<GradIds> {
    let dims = x.dims(sim)?;
    let Dims { n_q, n_k, d, d_v } = dims;
    let delta = super::kernels::row_dots(sim, d_o, fwd.o)?;
    let FlashBlocks { b_r, b_c } = FlashBlocks::backward(sim.capacity(), &dims)?;
    let g = GradIds {
        dq: sim.slow_zeros(n_q, d)?,
        dk: sim.slow_zeros(n_k, d)?,
        dv: sim.slow_zeros(n_k, d_v)?,
    };
    let mut started = vec![false; n_q.div_ceil(b_r)];
    for j0 in (0..n_k).step_by(b_c) {
        let cj = b_c.min(n_k - j0);
        let mut dkt = sim.alloc(cj, d)?;
        let mut dvt = sim.alloc(cj, d_v)?;
        if pattern.any_in(0..n_q, j0..j0 + cj, n_q, n_k) {
            let kt = sim.load(x.k, j0, 0, cj, d)?;
            let vt = sim.load(x.v, j0, 0, cj, d_v)?;
            for (bi, i0) in (0..n_q).step_by(b_r).enumerate() {
                let ri = b_r.min(n_q - i0);
                if !pattern.any_in(i0..i0 + ri, j0..j0 + cj, n_q, n_k) {
                    continue;
                }
                let qt = sim.load(x.q, i0, 0, ri, d)?;
                let dot_t = sim.load(d_o, i0, 0, ri, d_v)?;
                let lse_t = sim.load(fwd.lse, i0, 0, ri, 1)?;
                let del_t = sim.load(delta, i0, 0, ri, 1)?;
                let mut dqt = if started[bi] {
                    sim.load(g.dq, i0, 0, ri, d)?
                } else {
                    sim.alloc(ri, d)?
                };
                let mut p = sim.alloc(ri, cj)?;
                let mut ds = sim.alloc(ri, cj)?;
                for r in 0..ri {
                    let lse = lse_t.at(r, 0);
                    for c in 0..cj {
                        let pv = if lse > f64::NEG_INFINITY
                            && pattern.visible(i0 + r, j0 + c, n_q, n_k)
                        {
                            (x.tau * dot(row(&qt, r), row(&kt, c)) - lse).exp()
                        } else {
                            0.0
                        };
                        *p.at_mut(r, c) = pv;
                        let dp = dot(row(&dot_t, r), row(&vt, c));
                        *ds.at_mut(r, c) = pv * (dp - del_t.at(r, 0));
                    }
                }
                for r in 0..ri {
                    for c in 0..cj {
                        let (pv, dsv) = (p.at(r, c), ds.at(r, c));
                        for e in 0..d_v {
                            *dvt.at_mut(c, e) += pv * dot_t.at(r, e);
                        }
                        for e in 0..d {
                            *dqt.at_mut(r, e) += x.tau * dsv * kt.at(c, e);
                            *dkt.at_mut(c, e) += x.tau * dsv * qt.at(r, e);
                        }
                    }
                }
                for b in [p, ds, qt, dot_t, lse_t, del_t] {
                    sim.free(b);
                }
                sim.store_free(dqt, g.dq, i0, 0)?;
                started[bi] = true;
            }
            sim.free(kt);
            sim.free(vt);
        }
        sim.store_free(dkt, g.dk, j0, 0)?;
        sim.store_free(dvt, g.dv, j0, 0)?;
    }
    // Query blocks that saw no key: their dQ is zero and must still be written.
    for (bi, i0) in (0..n_q).step_by(b_r).enumerate() {
        if !started[bi] {
            let z = sim.alloc(b_r.min(n_q - i0), d)?;
            sim.store_free(z, g.dq, i0, 0)?;
        }
    }
    Ok(g)
}
