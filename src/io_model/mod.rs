//! The I/O complexity of attention, simulated (docs/math.md §8; IO24: Li, Liang,
//! Shi, Song, Zhou, *Fine-grained Attention I/O Complexity*, arXiv 2410.09397).
//!
//! IO24 proves that exact attention, forward and backward, needs
//! `Theta(min{n^2 d^2 / M, n^2 d / sqrt(M)})` transfers between a cache of `M` words and
//! slow memory, with the crossover at `M = Theta(d^2)`. This module makes that
//! checkable: a two-level memory with a hard capacity ([`sim`]), and the algorithms
//! of the theorem computing real results through it (f64), so that each count belongs
//! to an algorithm whose output is checked against the exact engine:
//!
//! | [`Algorithm`] | what | transfers |
//! |---|---|---|
//! | `Standard` | `S`, `P` in slow memory, head dimension never split | `Theta(n^2 d^2/M)` below `d^2`, `Theta(n^2 d/sqrt(M) + n^2)` above |
//! | `Flash` | FlashAttention tiling, block sizes from `M`, `d` | `Theta(n^2 d^2 / M)` |
//! | `SmallCache` | IO24's small-cache algorithm, tiles `sqrt(M/3)` | `Theta(n^2 d / sqrt(M) + n^2)` |
//!
//! `Flash` with a [`BlockMask`] is block-sparse attention: it skips the tiles the mask
//! hides. [`bounds`] holds the formulas the counts are compared with.

pub mod bounds;
pub mod flash;
pub mod kernels;
pub mod materialised;
pub mod pattern;
pub mod sim;

pub use flash::FlashBlocks;
pub use kernels::Tiles;
pub use materialised::TilePolicy;
pub use pattern::{BlockMask, Pattern};
pub use sim::{Buf, IoCounts, Sim, SlowId};

use crate::error::{Error, Result};
use crate::tensor::{MatRef, Matrix};

/// Sequence lengths and head dimensions of one attention head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    /// Queries.
    pub n_q: usize,
    /// Keys.
    pub n_k: usize,
    /// Head dimension of `Q`, `K`.
    pub d: usize,
    /// Head dimension of `V`.
    pub d_v: usize,
}

/// The inputs of one head in slow memory, and the scale `tau` of `S = tau Q K^T`.
#[derive(Clone, Copy, Debug)]
pub struct Inputs {
    /// `Q`, `n_q x d`.
    pub q: SlowId,
    /// `K`, `n_k x d`.
    pub k: SlowId,
    /// `V`, `n_k x d_v`.
    pub v: SlowId,
    /// The score scale.
    pub tau: f64,
}

impl Inputs {
    /// The dimensions, checked for consistency.
    pub fn dims(&self, sim: &Sim) -> Result<Dims> {
        let [n_q, d] = sim.shape(self.q)?;
        let [n_k, dk] = sim.shape(self.k)?;
        let [n_v, d_v] = sim.shape(self.v)?;
        if dk != d || n_v != n_k {
            return Err(Error::ShapeMismatch {
                what: "k, v".into(),
                expected: format!("k: n_k x {d}, v: n_k x d_v"),
                got: format!("k: {n_k} x {dk}, v: {n_v} x {d_v}"),
            });
        }
        Ok(Dims { n_q, n_k, d, d_v })
    }
}

/// Where a forward left `O` (`n_q x d_v`) and `lse` (`n_q x 1`).
#[derive(Clone, Copy, Debug)]
pub struct FwdIds {
    /// The output.
    pub o: SlowId,
    /// The row log-sum-exp.
    pub lse: SlowId,
}

/// Where a backward left the gradients.
#[derive(Clone, Copy, Debug)]
pub struct GradIds {
    /// dL/dQ.
    pub dq: SlowId,
    /// dL/dK.
    pub dk: SlowId,
    /// dL/dV.
    pub dv: SlowId,
}

/// The simulated algorithms (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Algorithm {
    /// Standard attention, `S` and `P` materialised, head dimension never split.
    Standard,
    /// FlashAttention (block-sparse when the pattern is a [`BlockMask`]).
    Flash,
    /// IO24's small-cache algorithm: square tiles of side `sqrt(M / 3)`.
    SmallCache,
}

impl Algorithm {
    /// All of them.
    pub const ALL: [Algorithm; 3] = [Algorithm::Standard, Algorithm::Flash, Algorithm::SmallCache];

    /// A short name for tables and files.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Standard => "standard",
            Algorithm::Flash => "flash",
            Algorithm::SmallCache => "small-cache",
        }
    }

    /// The forward through `sim`.
    pub fn forward(self, sim: &mut Sim, x: &Inputs, pattern: &Pattern) -> Result<FwdIds> {
        match self {
            Algorithm::Standard => materialised::forward(sim, x, pattern, TilePolicy::Standard),
            Algorithm::Flash => flash::forward(sim, x, pattern),
            Algorithm::SmallCache => materialised::forward(sim, x, pattern, TilePolicy::Square),
        }
    }

    /// The backward through `sim`.
    pub fn backward(
        self,
        sim: &mut Sim,
        x: &Inputs,
        fwd: &FwdIds,
        d_o: SlowId,
        pattern: &Pattern,
    ) -> Result<GradIds> {
        match self {
            Algorithm::Standard => {
                materialised::backward(sim, x, fwd, d_o, pattern, TilePolicy::Standard)
            }
            Algorithm::Flash => flash::backward(sim, x, fwd, d_o, pattern),
            Algorithm::SmallCache => {
                materialised::backward(sim, x, fwd, d_o, pattern, TilePolicy::Square)
            }
        }
    }
}

/// The results and transfer counts of one forward and one backward.
#[derive(Clone, Debug)]
pub struct Run {
    /// `O`.
    pub o: Matrix<f64>,
    /// `lse` (length `n_q`).
    pub lse: Vec<f64>,
    /// dL/dQ.
    pub dq: Matrix<f64>,
    /// dL/dK.
    pub dk: Matrix<f64>,
    /// dL/dV.
    pub dv: Matrix<f64>,
    /// Transfers of the forward.
    pub fwd: IoCounts,
    /// Transfers of the backward (inputs `Q, K, V, O, lse, dO` start in slow memory).
    pub bwd: IoCounts,
}

/// Runs `alg`'s forward and then its backward, each on a fresh machine with a cache
/// of `capacity` words, and returns the results with the two passes' counts.
#[allow(clippy::too_many_arguments)]
pub fn run(
    alg: Algorithm,
    q: MatRef<'_, f64>,
    k: MatRef<'_, f64>,
    v: MatRef<'_, f64>,
    d_o: MatRef<'_, f64>,
    tau: f64,
    pattern: &Pattern,
    capacity: usize,
) -> Result<Run> {
    if !tau.is_finite() {
        return Err(Error::InvalidParameter {
            name: "tau",
            value: tau.to_string(),
            reason: "the scale must be finite".into(),
        });
    }
    let setup = |sim: &mut Sim| Inputs {
        q: sim.put(q),
        k: sim.put(k),
        v: sim.put(v),
        tau,
    };
    let mut sim = Sim::new(capacity)?;
    let x = setup(&mut sim);
    let dims = x.dims(&sim)?;
    if d_o.shape() != [dims.n_q, dims.d_v] {
        return Err(Error::ShapeMismatch {
            what: "dO".into(),
            expected: format!("{:?}", [dims.n_q, dims.d_v]),
            got: format!("{:?}", d_o.shape()),
        });
    }
    let f = alg.forward(&mut sim, &x, pattern)?;
    let o = sim.get(f.o)?;
    let lse = sim.get(f.lse)?.into_vec();
    let fwd = sim.counts();

    let mut sim = Sim::new(capacity)?;
    let x = setup(&mut sim);
    let lse_m = Matrix::from_vec(dims.n_q, 1, lse.clone())?;
    let f = FwdIds {
        o: sim.put(o.view()),
        lse: sim.put(lse_m.view()),
    };
    let d_o = sim.put(d_o);
    let g = alg.backward(&mut sim, &x, &f, d_o, pattern)?;
    Ok(Run {
        o,
        lse,
        dq: sim.get(g.dq)?,
        dk: sim.get(g.dk)?,
        dv: sim.get(g.dv)?,
        fwd,
        bwd: sim.counts(),
    })
}

#[cfg(test)]
mod tests;
