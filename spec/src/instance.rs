//! Seeded random instances for the lemma checks (the tests and the register).
//!
//! Every entry is a dyadic rational `k / 16` (so `f64` holds it exactly, and
//! so do the products and sums of a few of them: `X W` and `X W_V` are exact in
//! `f64`, which lets the causal check reuse [`crate::attention::forward`]).
//! Shapes are small and deliberately non-square (`n != d != d_v`); `W` is not
//! symmetric unless asked for.

use crate::as24;
use crate::linalg::{Mat, Poly};
use crate::ml24::blocks::{Head, Mlp};
use crate::ml24::Layer;

/// The sizes of an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Tokens `n`.
    pub n: usize,
    /// Width `d`.
    pub d: usize,
    /// Value width `d_v`.
    pub d_v: usize,
}

/// Everything the lemma probes need, drawn from one seed.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    /// The seed it was drawn from.
    pub seed: u64,
    /// Whether `W` (and every head's `W_h`) was made symmetric.
    pub symmetric: bool,
    /// One attention layer (ML24 notation).
    pub layer: Layer,
    /// `G = dL/ds`, `n x d_v`.
    pub g: Mat<f64>,
    /// Output projection for the residual lemma J.3, `d_v x d`.
    pub w_o: Mat<f64>,
    /// `dL/dT` for J.3, `n x d`.
    pub g_res: Mat<f64>,
    /// Two heads for K.2 (the first is `layer`'s).
    pub heads: Vec<Head>,
    /// `G` for K.2, `n x (d_v + 1)`.
    pub g_heads: Mat<f64>,
    /// The MLP block of H.1/H.2.
    pub mlp: Mlp,
    /// `dL/dT` for H.1/H.2.
    pub g_mlp: Mat<f64>,
    /// AS24's problem (`A1, A2, A3` are `n x d`, `X, Y` are `d x d`).
    pub as24: as24::Problem,
    /// Factors `U1, V1` (`n x 2`), `U2, V2` (`n x 3`) and `Y` (`n x 2`) for
    /// Fact C.2 and Lemmas I.3, I.6.
    pub factors: [Mat<f64>; 5],
    /// A low-degree polynomial for the exact identities (Taylor degree 4).
    pub poly_exact: Poly,
    /// A polynomial close to `exp` on the score range (Taylor degree 8).
    pub poly_close: Poly,
    /// The same for AS24's Theorem 1.6 (Taylor degree 6: its factors `U3`
    /// have `r (r + d)` columns, so a lower degree keeps the check fast).
    pub poly_as24: Poly,
}

/// Dyadic test matrices from the spec's generator ([`crate::rng::SplitMix64`]).
struct Rng(crate::rng::SplitMix64);

impl Rng {
    /// `k / 16` with `k` uniform in `-m..=m`.
    fn dyadic(&mut self, m: u64) -> f64 {
        let k = (self.0.next_u64() % (2 * m + 1)) as f64 - m as f64;
        k / 16.0
    }

    fn mat(&mut self, r: usize, c: usize, m: u64) -> Mat<f64> {
        Mat::from_fn(r, c, |_, _| self.dyadic(m))
    }
}

fn symmetrise(w: &Mat<f64>) -> Mat<f64> {
    // (w + w^T) / 2 is exact: the entries are k / 16 with small k.
    (w + w.transpose()) * 0.5
}

impl Instance {
    /// The default shape `n = 5, d = 3, d_v = 2`.
    pub const SHAPE: Shape = Shape { n: 5, d: 3, d_v: 2 };

    /// An instance of the default shape.
    pub fn random(seed: u64, symmetric: bool) -> Instance {
        Instance::with_shape(seed, Instance::SHAPE, symmetric)
    }

    /// An instance of the given shape. `X`, `W`, `W_V` have entries in
    /// `[-1/2, 1/2]` (scores stay below 1 in magnitude for `d <= 4`, so the
    /// degree-8 Taylor polynomial is within `1e-6` of `exp`, relative); `G` and the
    /// other inputs in `[-1, 1]`.
    pub fn with_shape(seed: u64, s: Shape, symmetric: bool) -> Instance {
        let mut rng = Rng(crate::rng::SplitMix64::new(seed ^ 0x5EED_0000_0000_0000));
        let Shape { n, d, d_v } = s;
        let mut w = rng.mat(d, d, 8);
        if symmetric {
            w = symmetrise(&w);
        }
        let layer = Layer {
            x: rng.mat(n, d, 8),
            w,
            w_v: rng.mat(d, d_v, 8),
            tau: 0.75,
        };
        let g = rng.mat(n, d_v, 16);
        let w_o = rng.mat(d_v, d, 8);
        let g_res = rng.mat(n, d, 16);
        let mut w2 = rng.mat(d, d, 8);
        if symmetric {
            w2 = symmetrise(&w2);
        }
        let heads = vec![
            Head {
                w: layer.w.clone(),
                w_v: layer.w_v.clone(),
                tau: layer.tau,
            },
            Head {
                w: w2,
                w_v: rng.mat(d, 1, 8),
                tau: 0.5,
            },
        ];
        let g_heads = rng.mat(n, d_v + 1, 16);
        let mlp = Mlp {
            z: rng.mat(n, d_v, 16),
            w_g: rng.mat(d_v, d + 1, 16),
        };
        let g_mlp = rng.mat(n, d + 1, 16);
        let as24 = as24::Problem {
            a1: rng.mat(n, d, 8),
            a2: rng.mat(n, d, 8),
            a3: rng.mat(n, d, 16),
            x: rng.mat(d, d, 8),
            y: rng.mat(d, d, 16),
            e: rng.mat(n, d, 16),
        };
        let factors = [
            rng.mat(n, 2, 16),
            rng.mat(n, 2, 16),
            rng.mat(n, 3, 16),
            rng.mat(n, 3, 16),
            rng.mat(n, 2, 16),
        ];
        Instance {
            seed,
            symmetric,
            layer,
            g,
            w_o,
            g_res,
            heads,
            g_heads,
            mlp,
            g_mlp,
            as24,
            factors,
            poly_exact: Poly::taylor_exp(4),
            poly_close: Poly::taylor_exp(8),
            poly_as24: Poly::taylor_exp(6),
        }
    }
}
