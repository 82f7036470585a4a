//! `polyattn sweep depth`: how the polynomial engine's gradient error grows with the
//! number of layers (docs/math.md §7.3; ML24's multi-layer claim).
//!
//! For m = 1 .. 8 layers of the bounded-score model of [`super::model_time`] at a fixed
//! n, loss and gradients go through the exact and the polynomial engine; the sweep
//! records the largest difference of dX and of each layer's weight gradients
//! (W_Q, W_K, W_V, W_O, W1, W2 together), relative to the largest exact entry, and
//! fits the growth per added layer. The reference is the exact engine in f64 (its
//! rounding, ~1e-13 relative at these sizes, is far below the differences measured).
//!
//! Beside the measured side, each depth gets docs/math.md §7.3's propagated bound on
//! `||dX~ - dX||_F`, `sum_l e_l prod_{k<l} kappa_k` (plus the loss-gradient term), and
//! on each layer's weight gradients (`W_l`, Frobenius over all the layer's tensors),
//! computed from the actual activations by [`polyattn::model::sensitivity`]: the per-layer
//! norms kappa_l, the engine's certified per-head bounds, and how loose the result is
//! (predicted / measured). Predicted >= measured is checked at every depth, for dX and
//! for every layer's weight gradients (tests).

use super::fit::loglog_slope;
use super::{ensure_dir, markdown_table, sig3, text_table, write_json, write_text, Preset};
use crate::plot::{LogLogChart, Series, Style};
use polyattn::error::Result;
use polyattn::model::fixtures::{bounded_model, poly_choice, small_head_config, QK_SCALE};
use polyattn::model::sensitivity::propagated_bound;
use polyattn::model::EngineChoice;
use serde::Serialize;
use std::path::Path;

/// One depth.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    /// Layers m.
    pub layers: usize,
    /// max |dX_poly - dX_exact| / max |dX_exact|.
    pub rel_dx: f64,
    /// Per layer l (0 = first): max weight-gradient difference / max exact entry.
    pub rel_layer: Vec<f64>,
    /// The largest per-head a priori bound on |O~ - O| over all layers.
    pub max_attention_bound: f64,
    /// Measured `||dX~ - dX||_F`.
    pub fro_dx: f64,
    /// docs/math.md §7.3's propagated bound on `||dX~ - dX||_F`.
    pub predicted_dx: f64,
    /// kappa_l per layer (the norms of the backward maps).
    pub kappa: Vec<f64>,
    /// e_l per layer (each layer's own contribution).
    pub own_error: Vec<f64>,
    /// Per layer: measured `||dtheta~_l - dtheta_l||_F` over all the layer's tensors.
    pub fro_weights: Vec<f64>,
    /// Per layer: the propagated bound `W_l` on it.
    pub predicted_weights: Vec<f64>,
}

impl Record {
    /// min over layers of `W_l / ||dtheta~_l - dtheta_l||_F` (>= 1 when every layer's
    /// weight-gradient bound holds).
    pub fn weight_bound_ratio(&self) -> f64 {
        self.predicted_weights
            .iter()
            .zip(&self.fro_weights)
            .map(|(b, m)| b / m)
            .fold(f64::INFINITY, f64::min)
    }
}

/// The sweep's results.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Sequence length.
    pub n: usize,
    /// eps per head.
    pub eps: f64,
    /// One record per depth.
    pub records: Vec<Record>,
    /// Geometric mean growth of the dX error per added layer (fitted on log scale).
    pub growth_per_layer: Option<f64>,
    /// The same fit for the propagated bound.
    pub predicted_growth_per_layer: Option<f64>,
}

fn rel(a: &[f64], b: &[f64]) -> f64 {
    let scale = a.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    if scale > 0.0 {
        diff / scale
    } else {
        diff
    }
}

fn fro_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

/// Power iterations per norm in the propagated bound (the estimates settle to 3 digits
/// within about 10 at these sizes).
const POWER_ITERATIONS: usize = 20;

/// ln y = a m + b fitted over the depths: the growth per added layer e^a (a semi-log
/// fit through `loglog_slope` on (e^m, y)).
fn growth(records: &[Record], y: fn(&Record) -> f64) -> Option<f64> {
    let pts: Vec<(f64, f64)> = records
        .iter()
        .map(|r| ((r.layers as f64).exp(), y(r)))
        .collect();
    loglog_slope(&pts).map(|(a, _)| a.exp())
}

/// Runs the sweep.
pub fn sweep(preset: Preset) -> Result<Report> {
    let (n, depths): (usize, Vec<usize>) = match preset {
        Preset::Small => (128, vec![1, 2, 3]),
        Preset::Full => (512, (1..=8).collect()),
    };
    let eps = 1e-4;
    let mut records = Vec::new();
    let mut bar = super::progress::Progress::new("sweep depth", depths.len());
    for m in depths {
        bar.step(&format!("{m} layers, n = {n}"));
        let (model, batch) = bounded_model(small_head_config(m), QK_SCALE, n, 21)?;
        let (_, ge) = model.loss_and_gradients(&batch, &[EngineChoice::Exact])?;
        let (_, gp) = model.loss_and_gradients(&batch, &[poly_choice(eps)])?;
        let rel_dx = rel(ge.dx.as_slice(), gp.dx.as_slice());
        let rel_layer = ge
            .params
            .layers
            .iter()
            .zip(&gp.params.layers)
            .map(|(a, b)| {
                let cat = |l: &polyattn::model::LayerParams<f64>| {
                    [&l.wq, &l.wk, &l.wv, &l.wo, &l.w1, &l.w2]
                        .iter()
                        .flat_map(|w| w.as_slice().to_vec())
                        .collect::<Vec<f64>>()
                };
                rel(&cat(a), &cat(b))
            })
            .collect();
        let max_attention_bound = gp.reports.iter().map(|r| r.max_bound()).fold(0.0, f64::max);
        let fro_dx = fro_diff(ge.dx.as_slice(), gp.dx.as_slice());
        let fro_weights = ge
            .params
            .layers
            .iter()
            .zip(&gp.params.layers)
            .map(|(a, b)| fro_diff(&a.to_flat(), &b.to_flat()))
            .collect();
        let bound = propagated_bound(&model, &batch, &gp.reports, POWER_ITERATIONS)?;
        records.push(Record {
            layers: m,
            rel_dx,
            rel_layer,
            max_attention_bound,
            fro_dx,
            predicted_dx: bound.dx_bound,
            kappa: bound.layers.iter().map(|t| t.kappa).collect(),
            own_error: bound.layers.iter().map(|t| t.own_error).collect(),
            fro_weights,
            predicted_weights: bound.layers.iter().map(|t| t.weight_bound).collect(),
        });
    }
    bar.finish();
    Ok(Report {
        n,
        eps,
        growth_per_layer: growth(&records, |r| r.rel_dx),
        predicted_growth_per_layer: growth(&records, |r| r.predicted_dx),
        records,
    })
}

const HEADERS: [&str; 10] = [
    "layers",
    "rel. dX difference",
    "first layer's weights",
    "last layer's weights",
    "max attention O bound",
    "||dX~ - dX||_F measured",
    "propagated bound",
    "bound / measured",
    "weights ||.||_F measured (max layer)",
    "weights bound / measured (min layer)",
];

fn rows(r: &Report) -> Vec<Vec<String>> {
    r.records
        .iter()
        .map(|x| {
            vec![
                x.layers.to_string(),
                sig3(x.rel_dx),
                sig3(x.rel_layer.first().copied().unwrap_or(0.0)),
                sig3(x.rel_layer.last().copied().unwrap_or(0.0)),
                sig3(x.max_attention_bound),
                sig3(x.fro_dx),
                sig3(x.predicted_dx),
                sig3(x.predicted_dx / x.fro_dx),
                sig3(x.fro_weights.iter().copied().fold(0.0, f64::max)),
                sig3(x.weight_bound_ratio()),
            ]
        })
        .collect()
}

fn summary(r: &Report) -> String {
    let g = |x: Option<f64>| x.map_or("-".into(), |g| format!("{g:.3}x"));
    let kappas: Vec<String> = r
        .records
        .last()
        .map(|x| x.kappa.iter().map(|k| format!("{k:.3}")).collect())
        .unwrap_or_default();
    format!(
        "fitted growth per added layer: measured dX difference {}, propagated bound {}\nkappa_l of the deepest model: [{}]\n",
        g(r.growth_per_layer),
        g(r.predicted_growth_per_layer),
        kappas.join(", ")
    )
}

/// The terminal summary.
pub fn terminal_summary(r: &Report) -> String {
    format!(
        "gradient difference against depth (n = {}, eps {} per head)\n{}{}",
        r.n,
        r.eps,
        text_table(&HEADERS, &rows(r)),
        summary(r)
    )
}

/// Writes depth.md, depth.json and depth.svg to `out`.
pub fn write_outputs(r: &Report, out: &Path) -> Result<()> {
    ensure_dir(out)?;
    write_json(&out.join("depth.json"), r)?;
    let md = format!(
        "# Gradient difference against depth\n\nThe bounded-score causal model (d_model = 16, 4 heads of d_head = 4, W_Q, W_K scaled by {QK_SCALE}), n = {}, polynomial engine at eps = {} per head; differences against the exact engine in f64, relative to the largest exact entry, and the Frobenius norm of the dX difference beside docs/math.md §7.3's propagated bound sum_l e_l prod_(k<l) kappa_l (plus the loss-gradient term; src/model/sensitivity.rs: first order in the errors, norms by power iteration at the exact activations, the heads' certified bounds as e_l's source), and per layer the Frobenius norm of the difference of all its parameter gradients beside the propagated bound W_l = beta_l G_l + chi_l D_(l-1) + w_l (the last two columns: the largest measured over the layers, and the smallest bound / measured ratio, which must be >= 1).\n\n{}\n{}\n![depth](depth.svg)\n",
        r.n,
        r.eps,
        markdown_table(&HEADERS, &rows(r)),
        summary(r)
    );
    write_text(&out.join("depth.md"), &md)?;
    let pts =
        |f: &dyn Fn(&Record) -> f64| r.records.iter().map(|x| (x.layers as f64, f(x))).collect();
    LogLogChart {
        title: "Gradient difference (poly vs exact) against depth".into(),
        x_label: "layers".into(),
        y_label: "relative max difference".into(),
        series: vec![
            Series {
                name: "dX".into(),
                points: pts(&|x| x.rel_dx),
                style: Style::Line,
            },
            Series {
                name: "first layer's weights".into(),
                points: pts(&|x| x.rel_layer[0]),
                style: Style::Line,
            },
            Series {
                name: "attention O bound (max head)".into(),
                points: pts(&|x| x.max_attention_bound),
                style: Style::Points,
            },
            Series {
                name: "||dX~ - dX||_F measured".into(),
                points: pts(&|x| x.fro_dx),
                style: Style::Line,
            },
            Series {
                name: "propagated bound on ||dX~ - dX||_F".into(),
                points: pts(&|x| x.predicted_dx),
                style: Style::Line,
            },
            Series {
                name: "weights ||.||_F measured (max layer)".into(),
                points: pts(&|x| x.fro_weights.iter().copied().fold(0.0, f64::max)),
                style: Style::Line,
            },
            Series {
                name: "propagated weight bound (max layer)".into(),
                points: pts(&|x| x.predicted_weights.iter().copied().fold(0.0, f64::max)),
                style: Style::Line,
            },
        ],
    }
    .write_svg(&out.join("depth.svg"), 900, 600)
}
