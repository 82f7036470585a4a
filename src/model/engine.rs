//! Which attention engine a layer runs, and the record of what it ran (docs/math.md §2
//! for the exact engine, §3 and §4 for the polynomial one; ML24 Lemma K.2 for the heads).
//!
//! A layer's heads all run through one engine, in its forward and in its backward: the
//! polynomial backward continues from the polynomial forward (ML24's ALTGrad, or the
//! exact gradient of the polynomial model, per [`GradientKind`]). `Auto` tries the
//! polynomial engine with the given configuration and falls back to the exact engine
//! for the whole layer when any head is refused ([`Error::PolyRefused`]), recording
//! the reason.

use crate::attention::poly::{self, GradientKind, PolyConfig, PolyForward, Regime};
use crate::attention::{exact, AttentionConfig, Mask};
use crate::error::{Error, Result};
use crate::scalar::Real;
use crate::tensor::Tensor3;

/// The polynomial engine's settings for a layer. The model overrides the
/// configuration's `scale`, `mask` and `radius_floor` (from the model's [`Scores`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PolySettings {
    /// Accuracy, limits, polynomial kind.
    pub config: PolyConfig,
    /// Which approximate gradient the backward returns.
    pub kind: GradientKind,
}

impl Default for PolySettings {
    fn default() -> Self {
        Self {
            config: PolyConfig::default(),
            kind: GradientKind::Substituted,
        }
    }
}

/// The engine requested for a layer's attention.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EngineChoice {
    /// The tiled exact engine.
    Exact,
    /// The polynomial engine; a refusal is an error.
    Poly(PolySettings),
    /// The polynomial engine where it does not refuse, else the exact engine.
    Auto(PolySettings),
}

impl EngineChoice {
    /// `exact`, `poly` or `auto`.
    pub fn name(&self) -> &'static str {
        match self {
            EngineChoice::Exact => "exact",
            EngineChoice::Poly(_) => "poly",
            EngineChoice::Auto(_) => "auto",
        }
    }
}

/// One head's polynomial-engine facts.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HeadReport {
    /// Radius, entry bound, degree, rank, eps_P and costs of this head's plan.
    pub regime: Regime,
    /// max entrywise bound on |O~ - O| (against exact attention on the same Q, K, V).
    pub bound_o: f64,
    /// max entrywise bounds on |dQ~ - dQ|, |dK~ - dK|, |dV~ - dV| (given the same
    /// Q, K, V and dO); `None` until the backward ran.
    pub bound_dq: Option<f64>,
    /// See `bound_dq`.
    pub bound_dk: Option<f64>,
    /// See `bound_dq`.
    pub bound_dv: Option<f64>,
}

/// What one layer's attention ran and why.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LayerReport {
    /// The engine asked for (`exact`, `poly`, `auto`).
    pub requested: &'static str,
    /// The engine used (`exact` or `poly`).
    pub engine: &'static str,
    /// Why: `requested`, or for `auto` the certification or the refusal.
    pub reason: String,
    /// Per head, when the polynomial engine ran; empty for the exact engine.
    pub heads: Vec<HeadReport>,
}

impl LayerReport {
    /// The largest degree over the heads (`None` for the exact engine).
    pub fn degree(&self) -> Option<usize> {
        self.heads.iter().map(|h| h.regime.degree).max()
    }

    /// The largest of the per-head bounds on O, dQ, dK, dV (0 for the exact engine):
    /// this layer's own attention error e_l of docs/math.md §7.3, before propagation.
    pub fn max_bound(&self) -> f64 {
        self.heads
            .iter()
            .flat_map(|h| [Some(h.bound_o), h.bound_dq, h.bound_dk, h.bound_dv])
            .flatten()
            .fold(0.0, f64::max)
    }
}

/// How a layer's heads score: the mask, the scale tau in `S = tau Q K^T` (`None`:
/// `1/sqrt(d_qk)`; cosine attention folds its per-head temperature into Q and passes
/// 1), and the radius the planner is given as a floor (`tau_max` for cosine attention,
/// see [`PolyConfig::radius_floor`]; 0 otherwise).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scores {
    /// The mask.
    pub mask: Mask,
    /// The scale; `None` is `1/sqrt(d_qk)`.
    pub scale: Option<f64>,
    /// The planner's radius floor.
    pub radius_floor: f64,
}

impl Scores {
    /// Dot-product scores `S = Q K^T / sqrt(d_qk)` under `mask`, no floor.
    pub fn dot(mask: Mask) -> Self {
        Self {
            mask,
            scale: None,
            radius_floor: 0.0,
        }
    }
}

/// The forward state of one layer's heads, for the backward.
#[derive(Clone, Debug)]
pub enum HeadsForward<T> {
    /// Exact forward (O and lse per head).
    Exact(exact::MultiHeadForward<T>),
    /// Polynomial forward per head, with its settings.
    Poly(Vec<PolyForward<T>>, PolySettings),
}

fn poly_config(s: &PolySettings, sc: Scores) -> PolyConfig {
    PolyConfig {
        scale: sc.scale,
        mask: sc.mask,
        radius_floor: sc.radius_floor,
        ..s.config
    }
}

fn exact_config(sc: Scores) -> AttentionConfig {
    AttentionConfig {
        scale: sc.scale,
        mask: sc.mask,
        softcap: None,
    }
}

fn run_poly<T: Real>(
    q: &Tensor3<T>,
    k: &Tensor3<T>,
    v: &Tensor3<T>,
    s: &PolySettings,
    sc: Scores,
) -> Result<(Tensor3<T>, HeadsForward<T>, Vec<HeadReport>)> {
    let fwd = poly::forward_multihead(q, k, v, &poly_config(s, sc))?;
    let mut data = Vec::with_capacity(q.heads() * q.rows() * v.cols());
    for f in &fwd {
        data.extend_from_slice(f.o.as_slice());
    }
    let o = Tensor3::from_vec(q.heads(), q.rows(), v.cols(), data)?;
    let heads = fwd
        .iter()
        .map(|f| HeadReport {
            regime: f.plan.regime.clone(),
            bound_o: f.bound.max_total(),
            bound_dq: None,
            bound_dk: None,
            bound_dv: None,
        })
        .collect();
    Ok((o, HeadsForward::Poly(fwd, *s), heads))
}

/// Attention forward of all heads (`[h, n, d_qk]` query and key stacks, `[h, n, d_v]`
/// values, scored as `sc` says): the outputs, the state for the backward, and the
/// layer's report.
pub fn forward<T: Real>(
    q: &Tensor3<T>,
    k: &Tensor3<T>,
    v: &Tensor3<T>,
    sc: Scores,
    choice: &EngineChoice,
) -> Result<(Tensor3<T>, HeadsForward<T>, LayerReport)> {
    let report = |engine, reason: String, heads| LayerReport {
        requested: choice.name(),
        engine,
        reason,
        heads,
    };
    let exact_run = |reason: String| -> Result<_> {
        let f = exact::forward_multihead(q, k, v, &exact_config(sc))?;
        Ok((
            f.o.clone(),
            HeadsForward::Exact(f),
            report("exact", reason, vec![]),
        ))
    };
    match choice {
        EngineChoice::Exact => exact_run("requested".into()),
        EngineChoice::Poly(s) => {
            let (o, f, heads) = run_poly(q, k, v, s, sc)?;
            Ok((o, f, report("poly", "requested".into(), heads)))
        }
        EngineChoice::Auto(s) => match run_poly(q, k, v, s, sc) {
            Ok((o, f, heads)) => {
                let g = heads.iter().map(|h: &HeadReport| h.regime.degree).max();
                let reason = format!("certified (max degree {})", g.unwrap_or(0));
                Ok((o, f, report("poly", reason, heads)))
            }
            Err(Error::PolyRefused { reason, .. }) => {
                exact_run(format!("polynomial engine refused: {reason}"))
            }
            Err(e) => Err(e),
        },
    }
}

/// Attention backward of all heads given `d_o`, through the engine the forward used;
/// fills the report's gradient bounds. Returns `(dQ, dK, dV)` stacks.
pub fn backward<T: Real>(
    q: &Tensor3<T>,
    k: &Tensor3<T>,
    v: &Tensor3<T>,
    fwd: &HeadsForward<T>,
    d_o: &Tensor3<T>,
    sc: Scores,
    report: &mut LayerReport,
) -> Result<(Tensor3<T>, Tensor3<T>, Tensor3<T>)> {
    match fwd {
        HeadsForward::Exact(f) => {
            let g = exact::backward_multihead(q, k, v, f, d_o, &exact_config(sc))?;
            Ok((g.dq, g.dk, g.dv))
        }
        HeadsForward::Poly(f, s) => {
            let cfg = poly_config(s, sc);
            let g = poly::backward_multihead(q, k, v, f, d_o, s.kind, &cfg)?;
            let (h, n, dh) = (q.heads(), q.rows(), q.cols());
            let dv_cols = v.cols();
            let (mut dq, mut dk, mut dv) = (Vec::new(), Vec::new(), Vec::new());
            for (gh, rh) in g.iter().zip(report.heads.iter_mut()) {
                dq.extend_from_slice(gh.dq.as_slice());
                dk.extend_from_slice(gh.dk.as_slice());
                dv.extend_from_slice(gh.dv.as_slice());
                rh.bound_dq = Some(gh.bound_dq.max_total());
                rh.bound_dk = Some(gh.bound_dk.max_total());
                rh.bound_dv = Some(gh.bound_dv.max_total());
            }
            Ok((
                Tensor3::from_vec(h, n, dh, dq)?,
                Tensor3::from_vec(h, k.rows(), dh, dk)?,
                Tensor3::from_vec(h, k.rows(), dv_cols, dv)?,
            ))
        }
    }
}
