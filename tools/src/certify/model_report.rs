//! A whole-model run certified tensor by tensor (docs/math.md §5.3 and §7): the loss
//! and every gradient of the run through the requested engines, against the exact
//! real-number gradients of the same model.
//!
//! Reference (feature `certify`): an enclosure of the whole model's exact real loss
//! and gradients, from `polyattn_spec::model` via [`super::model_ref`]; for a computed
//! entry y with enclosure [lo, hi] the certified error is `max(|y - lo|, |y - hi|)`.
//! * MPFR intervals (precision raised until every enclosure is narrower than 1e-30
//!   relative) for small models (`n^2 d_model m <= `[`MPFR_MODEL_LIMIT`]);
//! * double-double balls (`polyattn_spec::ball`: about 106 bits with the rounding
//!   bound carried along, docs/math.md §5.2's f64 computation plus a rigorous rounding
//!   bound at twice the precision, because ball arithmetic's wrapping through a
//!   transformer amplifies rounding by ~1e18 and would leave f64 balls wider than the
//!   values) up to [`BALL_MODEL_LIMIT`], or at any size with `ReferenceChoice::Ball`:
//!   attention streams its rows (no n x n matrix) in parallel, so n = 16 384 fits;
//! * beyond that (or with `ReferenceChoice::F64`) the exact engine in f64: the errors
//!   are then *measured* against it, not certified, and the report says so.
//!
//! The split: for every tensor the report gives the run's error (certified, or measured
//! against f64), the exact engine's own error against the same reference (the rounding
//! part: both runs round alike outside attention), and max |run - exact f64| (the
//! polynomial part, measured); for `grad.x` and every layer's parameter gradients also
//! docs/math.md §7.3's propagated bound ([`polyattn::model::sensitivity`], MSE loss, feature
//! input; a layer's bound covers all its tensors together). Per layer: the engine that
//! ran and why, each head's R, B, sqrt(ln n), degree, rank, eps_P and its a priori
//! bounds on O, dQ, dK, dV; and the time of each engine and of the reference.
//!
//! JSON schema `polyattn.certify.model/1`: the serialised [`ModelReport`].

use super::report::ReferenceChoice;
use crate::table::{markdown_table, sig3, sig3_up};
use polyattn::error::Result;
use polyattn::model::sensitivity::propagated_bound;
use polyattn::model::{Batch, EngineChoice, LayerReport, LossKind, Model, Source};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

/// Largest `n^2 d_model m` (score-dimension products times layers) the `auto`
/// reference sends to MPFR: about a minute of interval arithmetic at 128-256 bits on
/// the development machine.
pub const MPFR_MODEL_LIMIT: f64 = 2.0e6;

/// Largest `n^2 d_model m` the `auto` reference sends to the double-double balls
/// (above it: the f64 exact engine, errors measured): n = 8192 with d_model = 16 and
/// two layers (2.1e9), about half a minute of balls on the 2-core development machine
/// (the time grows as n^2: `--reference ball` forces them at any size).
pub const BALL_MODEL_LIMIT: f64 = 2.2e9;

/// The reference a model report used.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ModelReference {
    /// MPFR interval enclosures of the whole model at `prec` bits: errors certified.
    Mpfr {
        /// Precision in bits.
        prec: u32,
    },
    /// Double-double ball enclosures of the whole model (about 106 bits, radius
    /// carried along; `polyattn_spec::ball`): errors certified.
    Ball {
        /// The widest ball's radius relative to its tensor's largest entry.
        max_rel_radius: f64,
    },
    /// The exact engine in f64: errors measured, not certified.
    F64Exact,
}

/// One gradient tensor (or the loss).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelTensor {
    /// `loss`, `grad.x` or `grad.<parameter>`.
    pub name: String,
    /// Number of entries.
    pub entries: usize,
    /// max |exact| (from the reference's midpoints).
    pub max_abs_value: f64,
    /// The run's max |y - exact|: certified upper bound (MPFR) or measured (f64).
    pub max_abs_error: f64,
    /// The run's ||y - exact||_F / ||exact||_F, same kind.
    pub rel_fro_error: f64,
    /// The exact engine's own max |y - exact| against the same reference (rounding).
    pub exact_engine_max_abs_error: f64,
    /// max |run - exact engine in f64| (the polynomial part, measured).
    pub poly_part_max_abs: f64,
    /// docs/math.md §7.3's propagated bound on the Frobenius error: `grad.x`'s, or for a
    /// tensor of layer l the bound on all of that layer's parameter gradients together
    /// (MSE, feature input, some layer on the polynomial engine; `None` otherwise).
    pub a_priori_fro_bound: Option<f64>,
    /// The run's Frobenius error (to compare with `a_priori_fro_bound`).
    pub fro_error: f64,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct ModelReport {
    /// `polyattn.certify.model/1`.
    pub schema: String,
    /// The configuration (as in the weights file's metadata).
    pub config: BTreeMap<String, String>,
    /// Sequence length.
    pub n: usize,
    /// The reference.
    pub reference: ModelReference,
    /// Per layer: engine, reason, heads' regimes and bounds.
    pub layers: Vec<LayerReport>,
    /// The loss first, then every gradient.
    pub tensors: Vec<ModelTensor>,
    /// Seconds: the run, the exact engine, the reference. Not in the report's JSON or
    /// Markdown (reproducible to the byte): see [`ModelReport::timings`].
    #[serde(skip)]
    pub seconds_run: f64,
    /// See `seconds_run`.
    #[serde(skip)]
    pub seconds_exact: f64,
    /// See `seconds_run`.
    #[serde(skip)]
    pub seconds_reference: f64,
}

/// Per-tensor exact values: MPFR `[lo, hi]` or f64 points (lo = hi).
struct RefTensor {
    lo: Vec<f64>,
    hi: Vec<f64>,
}

fn ref_error(y: &[f64], r: &RefTensor) -> (f64, f64, f64) {
    let (mut max, mut sq, mut ref_sq) = (0.0f64, 0.0, 0.0);
    for ((&y, &lo), &hi) in y.iter().zip(&r.lo).zip(&r.hi) {
        let e = (y - lo).abs().max((y - hi).abs());
        max = max.max(e);
        sq += e * e;
        let mid = 0.5 * (lo + hi);
        ref_sq += mid * mid;
    }
    let rel = if ref_sq > 0.0 {
        (sq / ref_sq).sqrt()
    } else {
        sq.sqrt()
    };
    (max, rel, sq.sqrt())
}

/// Enclosures of the loss and of every gradient as `[lo, hi]` per entry, row-major (the
/// spec's matrices are column-major); `ends` gives an entry's outward `f64` ends.
#[cfg(feature = "certify")]
fn ref_tensors<E>(
    loss: &E,
    grads: BTreeMap<String, nalgebra::DMatrix<E>>,
    ends: impl Fn(&E) -> (f64, f64),
) -> BTreeMap<String, RefTensor>
where
    E: nalgebra::Scalar,
{
    let tensor = |entries: Vec<(f64, f64)>| RefTensor {
        lo: entries.iter().map(|e| e.0).collect(),
        hi: entries.iter().map(|e| e.1).collect(),
    };
    let mut out = BTreeMap::new();
    out.insert("loss".to_string(), tensor(vec![ends(loss)]));
    for (name, m) in grads {
        out.insert(name, tensor(m.transpose().iter().map(&ends).collect()));
    }
    out
}

#[cfg(feature = "certify")]
fn mpfr_reference(
    model: &Model<f64>,
    batch: &Batch<f64>,
) -> Result<(BTreeMap<String, RefTensor>, u32)> {
    let (loss, grads, prec) = super::model_ref::spec_enclosures(model, batch, 1e-30)?;
    Ok((
        ref_tensors(&loss, grads, |iv| (iv.lo_f64(), iv.hi_f64())),
        prec,
    ))
}

/// The double-double ball enclosures as `[lo, hi]` per entry, and the widest ball's
/// radius relative to its tensor's largest entry.
#[cfg(feature = "certify")]
fn ball_reference(
    model: &Model<f64>,
    batch: &Batch<f64>,
) -> Result<(BTreeMap<String, RefTensor>, f64)> {
    let (loss, grads) = super::model_ref::spec_balls(model, batch)?;
    // A ball that left the f64 range certifies nothing: say so rather than report it.
    if let Some((name, _)) = std::iter::once(("loss", &loss))
        .chain(
            grads
                .iter()
                .flat_map(|(n, m)| m.iter().map(move |b| (n.as_str(), b))),
        )
        .find(|(_, b)| !(b.is_finite() && b.lo_f64().is_finite() && b.hi_f64().is_finite()))
    {
        return Err(polyattn::error::Error::InvalidParameter {
            name: "reference",
            value: "ball".into(),
            reason: format!(
                "the double-double enclosure of {name} is not finite (values beyond the f64 \
                 range); use --reference mpfr (small models) or f64"
            ),
        });
    }
    let widest = grads
        .values()
        .map(|m| {
            let scale = m.iter().map(|b| b.mag()).fold(0.0f64, f64::max);
            let rad = m.iter().map(|b| b.rad()).fold(0.0f64, f64::max);
            match (rad > 0.0, scale > 0.0) {
                (false, _) => 0.0,
                (true, true) => rad / scale,
                (true, false) => f64::INFINITY,
            }
        })
        .fold(0.0f64, f64::max);
    Ok((
        ref_tensors(&loss, grads, |b| (b.lo_f64(), b.hi_f64())),
        widest,
    ))
}

/// Which reference a model report uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RefKind {
    Mpfr,
    Ball,
    F64,
}

fn reference_kind(choice: ReferenceChoice, model: &Model<f64>, n: usize) -> RefKind {
    let c = model.config();
    let size = (n * n) as f64 * c.d_model as f64 * c.n_layers as f64;
    match choice {
        ReferenceChoice::Mpfr => RefKind::Mpfr,
        ReferenceChoice::Ball => RefKind::Ball,
        ReferenceChoice::F64 => RefKind::F64,
        ReferenceChoice::Auto if !cfg!(feature = "certify") => RefKind::F64,
        ReferenceChoice::Auto if size <= MPFR_MODEL_LIMIT => RefKind::Mpfr,
        ReferenceChoice::Auto if size <= BALL_MODEL_LIMIT => RefKind::Ball,
        ReferenceChoice::Auto => RefKind::F64,
    }
}

/// The error for a reference that needs feature `certify`.
#[cfg(not(feature = "certify"))]
fn needs_certify(what: &str) -> polyattn::error::Error {
    polyattn::error::Error::InvalidParameter {
        name: "reference",
        value: what.into(),
        reason: "needs feature `certify` (polyattn-spec)".into(),
    }
}

/// Power iterations per norm of the propagated bound in [`certify_model`].
pub const PROPAGATION_ITERS: usize = 20;

/// Runs `model` on `batch` through `engines` and through the exact engine, and
/// certifies the loss and every gradient against the reference `choice` selects (see
/// the module documentation). Errors: those of the runs, and of the enclosures
/// (`ReferenceChoice::Mpfr` or `Ball` without feature `certify` is an
/// `InvalidParameter`).
pub fn certify_model(
    model: &Model<f64>,
    batch: &Batch<f64>,
    engines: &[EngineChoice],
    choice: ReferenceChoice,
) -> Result<ModelReport> {
    certify_model_with(model, batch, engines, choice, PROPAGATION_ITERS)
}

/// [`certify_model`] with `iters` power iterations per norm for docs/math.md §7.3's
/// propagated bound; `0` leaves the bound out (it costs some `iters` exact
/// forward and backward passes per layer, minutes at n = 16 384).
pub fn certify_model_with(
    model: &Model<f64>,
    batch: &Batch<f64>,
    engines: &[EngineChoice],
    choice: ReferenceChoice,
    iters: usize,
) -> Result<ModelReport> {
    let t = Instant::now();
    let (loss_run, g_run) = model.loss_and_gradients(batch, engines)?;
    let seconds_run = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let (loss_exact, g_exact) = model.loss_and_gradients(batch, &[EngineChoice::Exact])?;
    let seconds_exact = t.elapsed().as_secs_f64();
    let run: Vec<(String, Vec<f64>)> = std::iter::once(("loss".to_string(), vec![loss_run]))
        .chain(g_run.named().into_iter().map(|(n, _, d)| (n, d)))
        .collect();
    let exact: BTreeMap<String, Vec<f64>> = std::iter::once(("loss".to_string(), vec![loss_exact]))
        .chain(g_exact.named().into_iter().map(|(n, _, d)| (n, d)))
        .collect();
    let t = Instant::now();
    let kind = reference_kind(choice, model, batch.len());
    let (reference, refs) = if kind == RefKind::Mpfr {
        #[cfg(feature = "certify")]
        {
            let (refs, prec) = mpfr_reference(model, batch)?;
            (ModelReference::Mpfr { prec }, refs)
        }
        #[cfg(not(feature = "certify"))]
        {
            return Err(needs_certify("mpfr"));
        }
    } else if kind == RefKind::Ball {
        #[cfg(feature = "certify")]
        {
            let (refs, max_rel_radius) = ball_reference(model, batch)?;
            (ModelReference::Ball { max_rel_radius }, refs)
        }
        #[cfg(not(feature = "certify"))]
        {
            return Err(needs_certify("ball"));
        }
    } else {
        let refs: BTreeMap<String, RefTensor> = exact
            .iter()
            .map(|(n, d)| {
                (
                    n.clone(),
                    RefTensor {
                        lo: d.clone(),
                        hi: d.clone(),
                    },
                )
            })
            .collect();
        (ModelReference::F64Exact, refs)
    };
    let seconds_reference = t.elapsed().as_secs_f64();
    let ran_poly = g_run.reports.iter().any(|r| !r.heads.is_empty());
    let propagated = if ran_poly
        && iters > 0
        && model.config().loss == LossKind::Mse
        && matches!(batch.source, Source::Embeddings(_))
    {
        Some(propagated_bound(model, batch, &g_run.reports, iters)?)
    } else {
        None
    };
    // grad.x takes G_0; every tensor of layer l takes W_l, the bound on the Frobenius
    // error of all the layer's parameter gradients together.
    let a_priori = |name: &str| -> Option<f64> {
        let b = propagated.as_ref()?;
        if name == "grad.x" {
            return Some(b.dx_bound);
        }
        let rest = name.strip_prefix("grad.layers.")?;
        let l: usize = rest.split('.').next()?.parse().ok()?;
        b.layers.get(l).map(|t| t.weight_bound)
    };
    let mut tensors = Vec::with_capacity(run.len());
    for (name, y) in &run {
        let (Some(r), Some(e)) = (refs.get(name), exact.get(name)) else {
            continue;
        };
        let (max_abs_error, rel_fro_error, fro_error) = ref_error(y, r);
        let (exact_err, _, _) = ref_error(e, r);
        let poly_part = y
            .iter()
            .zip(e)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        let max_abs_value =
            r.lo.iter()
                .zip(&r.hi)
                .fold(0.0f64, |m, (lo, hi)| m.max((0.5 * (lo + hi)).abs()));
        tensors.push(ModelTensor {
            name: name.clone(),
            entries: y.len(),
            max_abs_value,
            max_abs_error,
            rel_fro_error,
            exact_engine_max_abs_error: exact_err,
            poly_part_max_abs: poly_part,
            a_priori_fro_bound: a_priori(name),
            fro_error,
        });
    }
    Ok(ModelReport {
        schema: "polyattn.certify.model/1".into(),
        config: model.config().to_metadata().into_iter().collect(),
        n: batch.len(),
        reference,
        layers: g_run.reports,
        tensors,
        seconds_run,
        seconds_exact,
        seconds_reference,
    })
}

impl ModelReport {
    /// Column headers of [`tensor_rows`](Self::tensor_rows).
    pub const TENSOR_HEADERS: [&'static str; 7] = [
        "tensor",
        "max |exact|",
        "max abs error",
        "rel. error (Frobenius)",
        "exact engine's error",
        "poly part (vs f64 exact)",
        "propagated bound (Frobenius) / error",
    ];

    /// One row per tensor.
    pub fn tensor_rows(&self) -> Vec<Vec<String>> {
        let certified = !matches!(self.reference, ModelReference::F64Exact);
        self.tensors
            .iter()
            .map(|t| {
                // Errors against an enclosure are certified upper bounds: rounded up;
                // against the f64 exact engine they are measured: to nearest.
                let err = |x: f64| {
                    if certified {
                        sig3_up(x)
                    } else {
                        sig3(x)
                    }
                };
                vec![
                    t.name.clone(),
                    sig3(t.max_abs_value),
                    err(t.max_abs_error),
                    err(t.rel_fro_error),
                    err(t.exact_engine_max_abs_error),
                    sig3(t.poly_part_max_abs),
                    t.a_priori_fro_bound.map_or("-".into(), |b| {
                        format!("{} / {}", sig3_up(b), err(t.fro_error))
                    }),
                ]
            })
            .collect()
    }

    /// What the error columns mean, given the reference.
    pub fn reference_text(&self) -> String {
        match self.reference {
            ModelReference::Mpfr { prec } => format!(
                "MPFR interval enclosures of the whole model at {prec} bits: every error is certified (an upper bound on the distance to the exact real result)"
            ),
            ModelReference::Ball { max_rel_radius } => format!(
                "double-double ball enclosures of the whole model (about 106 bits with a rigorous radius; widest radius {} of its tensor's largest entry): every error is certified (an upper bound on the distance to the exact real result)",
                sig3_up(max_rel_radius)
            ),
            ModelReference::F64Exact => "the exact engine in f64: errors are measured against it, not certified (no enclosure was computed: `--reference f64`, or the model is above the ball reference's size limit)".into(),
        }
    }

    /// Writes `errors.svg` into `dir`: one point per tensor (loss and gradients) at its
    /// magnitude, for this run's error (certified or measured, as the reference
    /// allows), the exact engine's own error and, where it exists, the propagated
    /// bound; returns the file's path.
    pub fn write_plot(&self, dir: &std::path::Path) -> Result<std::path::PathBuf> {
        use crate::plot::{LogLogChart, Series, Style};
        let pts = |f: &dyn Fn(&ModelTensor) -> Option<f64>| -> Vec<(f64, f64)> {
            self.tensors
                .iter()
                .filter_map(|t| Some((t.max_abs_value, f(t)?)))
                .collect()
        };
        let certified = !matches!(self.reference, ModelReference::F64Exact);
        let run = if certified {
            "this run: certified max |y - exact|"
        } else {
            "this run: max |y - exact f64| (measured)"
        };
        let path = dir.join("errors.svg");
        let series: Vec<Series> = vec![
            Series {
                name: run.into(),
                points: pts(&|t| Some(t.max_abs_error)),
                style: Style::Points,
            },
            Series {
                name: "exact engine, own error (rounding)".into(),
                points: pts(&|t| Some(t.exact_engine_max_abs_error)),
                style: Style::Points,
            },
            Series {
                name: "propagated bound (Frobenius, docs/math.md §7.3)".into(),
                points: pts(&|t| t.a_priori_fro_bound),
                style: Style::Points,
            },
        ];
        LogLogChart {
            title: format!("Gradient errors, one point per tensor (n = {})", self.n),
            x_label: "max |exact| of the tensor".into(),
            y_label: "error".into(),
            // A series without points (no propagated bound) would only crowd the legend.
            series: series
                .into_iter()
                .filter(|s| !s.points.is_empty())
                .collect(),
        }
        .write_svg(&path, 900, 560)?;
        Ok(path)
    }

    /// The wall times, kept apart from the reproducible report (`timings.json`).
    pub fn timings(&self) -> serde_json::Value {
        serde_json::json!({
            "seconds_run": self.seconds_run,
            "seconds_exact": self.seconds_exact,
            "seconds_reference": self.seconds_reference,
        })
    }

    /// The Markdown report.
    pub fn to_markdown(&self) -> String {
        let cfg: Vec<String> = self
            .config
            .iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
        let mut s = format!(
            "# Model error report\n\nModel: {}; n = {}.\nReference: {}.\nWall times are in `timings.json` (everything else here is the same for the same inputs, flags and version).\n\n",
            cfg.join(", "),
            self.n,
            self.reference_text(),
        );
        s.push_str(&markdown_table(&Self::TENSOR_HEADERS, &self.tensor_rows()));
        s.push_str("\n![errors per tensor](errors.svg)\n");
        s.push_str("\n## Layers\n\n");
        let mut rows = Vec::new();
        for (l, r) in self.layers.iter().enumerate() {
            if r.heads.is_empty() {
                rows.push(vec![
                    l.to_string(),
                    r.engine.into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    r.reason.clone(),
                ]);
            }
            for (h, hr) in r.heads.iter().enumerate() {
                let g = &hr.regime;
                rows.push(vec![
                    l.to_string(),
                    format!("{} head {h}", r.engine),
                    sig3_up(g.radius),
                    sig3_up(g.entry_bound),
                    sig3(g.sqrt_ln_n),
                    format!("{} / {}", g.degree, g.rank),
                    sig3_up(g.eps_poly),
                    format!(
                        "{} / {}",
                        sig3_up(hr.bound_o),
                        sig3_up(hr.bound_dq.unwrap_or(f64::NAN))
                    ),
                    r.reason.clone(),
                ]);
            }
        }
        s.push_str(&markdown_table(
            &[
                "layer",
                "engine",
                "R",
                "B",
                "sqrt(ln n)",
                "degree / rank",
                "eps_P",
                "bound O / dQ",
                "why",
            ],
            &rows,
        ));
        s
    }
}
