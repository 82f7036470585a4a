//! Attention with the `n x n` intermediates (`S`, `P`, `dP`, `dS`) in slow memory,
//! each product a blocked matrix product through the cache (docs/math.md §8).
//!
//! One pipeline, two tile policies:
//! - [`TilePolicy::Standard`]: standard attention as a GPU kernel author writes it
//!   (FlashAttention's "Algorithm 0"): a product's head dimension (`d` or `d_v`) is
//!   never split, the other two sides are `b` with `b^2 + 2 b d <= M`. Below
//!   `M = d^2` this gives `b ~ M / 2d` and `Theta(n^2 d^2 / M)` transfers; above it
//!   `Theta(n^2 d / sqrt(M) + n^2)`.
//! - [`TilePolicy::Square`]: the small-cache algorithm of IO24: square tiles of side
//!   `sqrt(M / 3)` in every product, the head dimension split too:
//!   `Theta(n^2 d / sqrt(M) + n^2)` transfers, optimal for `M < d^2`.

use super::kernels::{map_elementwise, matmul, row_dots, row_lse, Operand, Tiles};
use super::pattern::Pattern;
use super::sim::{Sim, SlowId};
use super::{Dims, FwdIds, GradIds, Inputs};
use crate::error::{Error, Result};

/// How the blocked products of the pipeline are tiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum TilePolicy {
    /// Head dimension whole, other sides `b = floor(sqrt(d^2 + M) - d)`.
    Standard,
    /// Square tiles of side `floor(sqrt(M / 3))` ([`Tiles::square`]).
    Square,
}

impl TilePolicy {
    /// Tiles for a product whose head-dimension side has length `h` and is the inner
    /// dimension (`head_inner`, as in `Q K^T`) or the columns of the result (as in `P V`).
    pub fn tiles(self, capacity: usize, h: usize, head_inner: bool) -> Result<Tiles> {
        match self {
            TilePolicy::Square => Tiles::square(capacity),
            TilePolicy::Standard => {
                // Largest b >= 1 with b^2 + 2 b h <= M.
                let guess = (((h * h + capacity) as f64).sqrt() - h as f64).max(0.0) as usize;
                let b = (0..=guess + 1)
                    .rev()
                    .find(|b| b * b + 2 * b * h <= capacity)
                    .unwrap_or(0);
                if b == 0 {
                    return Err(Error::InvalidParameter {
                        name: "cache capacity M",
                        value: capacity.to_string(),
                        reason: format!("standard tiling needs 2 h + 1 = {} words", 2 * h + 1),
                    });
                }
                Ok(if head_inner {
                    Tiles { m: b, p: b, k: h }
                } else {
                    Tiles { m: b, p: h, k: b }
                })
            }
        }
    }
}

/// `S = tau Q K^T` and `P = e^{S - lse}` (0 where masked) in slow memory; `lse` is
/// computed from `S` when not given. Returns `(P, lse)`.
fn probabilities(
    sim: &mut Sim,
    x: &Inputs,
    pattern: &Pattern,
    policy: TilePolicy,
    lse: Option<SlowId>,
) -> Result<(SlowId, SlowId)> {
    let Dims { n_q, n_k, d, .. } = x.dims(sim)?;
    let s = sim.slow_zeros(n_q, n_k)?;
    let t = policy.tiles(sim.capacity(), d, true)?;
    matmul(sim, Operand::n(x.q), Operand::t(x.k), x.tau, s, t)?;
    let lse = match lse {
        Some(l) => l,
        None => row_lse(sim, s, pattern)?,
    };
    let p = sim.slow_zeros(n_q, n_k)?;
    map_elementwise(sim, &[s], &[lse], p, |i, j, v, r| {
        if r[0] > f64::NEG_INFINITY && pattern.visible(i, j, n_q, n_k) {
            (v[0] - r[0]).exp()
        } else {
            0.0
        }
    })?;
    Ok((p, lse))
}

/// The forward: `S`, `lse`, `P`, then `O = P V`.
pub fn forward(sim: &mut Sim, x: &Inputs, pattern: &Pattern, policy: TilePolicy) -> Result<FwdIds> {
    let Dims { n_q, d_v, .. } = x.dims(sim)?;
    let (p, lse) = probabilities(sim, x, pattern, policy, None)?;
    let o = sim.slow_zeros(n_q, d_v)?;
    let t = policy.tiles(sim.capacity(), d_v, false)?;
    matmul(sim, Operand::n(p), Operand::n(x.v), 1.0, o, t)?;
    Ok(FwdIds { o, lse })
}

/// The backward (docs/math.md §2.3), every intermediate in slow memory: `P` recomputed
/// from `lse`, `dV = P^T dO`, `dP = dO V^T`, `delta = rowsum(dO o O)`,
/// `dS = P o (dP - delta)`, `dQ = tau dS K`, `dK = tau dS^T Q`.
pub fn backward(
    sim: &mut Sim,
    x: &Inputs,
    fwd: &FwdIds,
    d_o: SlowId,
    pattern: &Pattern,
    policy: TilePolicy,
) -> Result<GradIds> {
    let Dims { n_q, n_k, d, d_v } = x.dims(sim)?;
    let cap = sim.capacity();
    let (p, _) = probabilities(sim, x, pattern, policy, Some(fwd.lse))?;
    let g = GradIds {
        dq: sim.slow_zeros(n_q, d)?,
        dk: sim.slow_zeros(n_k, d)?,
        dv: sim.slow_zeros(n_k, d_v)?,
    };
    matmul(
        sim,
        Operand::t(p),
        Operand::n(d_o),
        1.0,
        g.dv,
        policy.tiles(cap, d_v, false)?,
    )?;
    let dp = sim.slow_zeros(n_q, n_k)?;
    matmul(
        sim,
        Operand::n(d_o),
        Operand::t(x.v),
        1.0,
        dp,
        policy.tiles(cap, d_v, true)?,
    )?;
    let delta = row_dots(sim, d_o, fwd.o)?;
    let ds = sim.slow_zeros(n_q, n_k)?;
    map_elementwise(sim, &[p, dp], &[delta], ds, |_, _, v, r| {
        v[0] * (v[1] - r[0])
    })?;
    let t = policy.tiles(cap, d, false)?;
    matmul(sim, Operand::n(ds), Operand::n(x.k), x.tau, g.dq, t)?;
    matmul(sim, Operand::t(ds), Operand::n(x.q), x.tau, g.dk, t)?;
    Ok(g)
}
