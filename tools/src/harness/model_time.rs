//! `polyattn sweep time-n`: the whole model's forward+backward through the exact and
//! the polynomial engine against n, on a log-log scale, with fitted slopes (about 2
//! and about 1 are expected: ML24's almost-linear claim) and the crossover n.
//!
//! The model is a seeded causal pre-norm stack ([`polyattn::model::fixtures::bounded_model`]) whose W_Q and W_K
//! are scaled so the attention scores stay in the polynomial regime (R ~ 0.5 per
//! head): the method's sweet spot, stated rather than hidden. Each point also records
//! the largest difference between the two engines' gradients, relative to the largest
//! exact gradient entry.

use super::fit::loglog_slope;
use super::{ensure_dir, markdown_table, sig3, text_table, write_json, write_text, Preset};
use crate::plot::{LogLogChart, Series, Style};
use polyattn::error::Result;
use polyattn::model::fixtures::{bounded_model, poly_choice, small_head_config, QK_SCALE};
use polyattn::model::EngineChoice;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// One n.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    /// Sequence length.
    pub n: usize,
    /// Seconds for loss and gradients, exact engine.
    pub seconds_exact: f64,
    /// Seconds for loss and gradients, polynomial engine.
    pub seconds_poly: f64,
    /// Largest degree over layers and heads.
    pub degree: usize,
    /// max |grad_poly - grad_exact| / max |grad_exact| over all gradients.
    pub rel_gradient_difference: f64,
}

/// The sweep's results.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Layers of the model.
    pub layers: usize,
    /// The per-head eps.
    pub eps: f64,
    /// The records.
    pub records: Vec<Record>,
    /// Fitted log-log slopes of time against n: exact, poly.
    pub slope_exact: Option<f64>,
    /// See `slope_exact`.
    pub slope_poly: Option<f64>,
    /// The n where the fitted lines cross (poly faster above), if they do.
    pub crossover_n: Option<f64>,
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0f64, |a, x| a.max(x.abs()))
}

/// Runs the sweep.
pub fn sweep(preset: Preset) -> Result<Report> {
    let (layers, log2_ns): (usize, Vec<u32>) = match preset {
        Preset::Small => (2, vec![7, 8, 9]),
        Preset::Full => (2, (8..=14).collect()),
    };
    let eps = 1e-3;
    let mut records = Vec::new();
    let mut bar = super::progress::Progress::new("sweep time-n", log2_ns.len());
    for l in log2_ns {
        let n = 1usize << l;
        bar.step(&format!("n = {n}"));
        let (model, batch) = bounded_model(small_head_config(layers), QK_SCALE, n, 11)?;
        let t0 = Instant::now();
        let (_, ge) = model.loss_and_gradients(&batch, &[EngineChoice::Exact])?;
        let seconds_exact = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let (_, gp) = model.loss_and_gradients(&batch, &[poly_choice(eps)])?;
        let seconds_poly = t1.elapsed().as_secs_f64();
        let (ne, np) = (ge.named(), gp.named());
        let scale = ne.iter().map(|(_, _, v)| max_abs(v)).fold(0.0, f64::max);
        let diff = ne
            .iter()
            .zip(&np)
            .map(|((_, _, a), (_, _, b))| {
                a.iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f64::max)
            })
            .fold(0.0, f64::max);
        let degree = gp
            .reports
            .iter()
            .filter_map(|r| r.degree())
            .max()
            .unwrap_or(0);
        records.push(Record {
            n,
            seconds_exact,
            seconds_poly,
            degree,
            rel_gradient_difference: diff / scale,
        });
    }
    let fit = |f: &dyn Fn(&Record) -> f64| {
        loglog_slope(
            &records
                .iter()
                .map(|r| (r.n as f64, f(r)))
                .collect::<Vec<_>>(),
        )
    };
    let (fe, fp) = (fit(&|r| r.seconds_exact), fit(&|r| r.seconds_poly));
    let crossover_n = match (fe, fp) {
        // ln t = a ln n + b for each; equal where (a_e - a_p) ln n = b_p - b_e.
        (Some((ae, be)), Some((ap, bp))) if ae > ap => Some(((bp - be) / (ae - ap)).exp()),
        _ => None,
    };
    bar.finish();
    Ok(Report {
        layers,
        eps,
        records,
        slope_exact: fe.map(|f| f.0),
        slope_poly: fp.map(|f| f.0),
        crossover_n,
    })
}

const HEADERS: [&str; 6] = [
    "n",
    "exact s",
    "poly s",
    "speedup",
    "degree",
    "rel. gradient difference",
];

fn rows(r: &Report) -> Vec<Vec<String>> {
    r.records
        .iter()
        .map(|x| {
            vec![
                x.n.to_string(),
                sig3(x.seconds_exact),
                sig3(x.seconds_poly),
                sig3(x.seconds_exact / x.seconds_poly),
                x.degree.to_string(),
                sig3(x.rel_gradient_difference),
            ]
        })
        .collect()
}

fn summary(r: &Report) -> String {
    let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.2}"));
    format!(
        "fitted slopes of time against n: exact {}, poly {}; fitted crossover n = {}\n",
        f(r.slope_exact),
        f(r.slope_poly),
        r.crossover_n.map_or("-".to_string(), |v| format!("{v:.0}"))
    )
}

/// The terminal summary.
pub fn terminal_summary(r: &Report) -> String {
    format!(
        "model forward+backward time ({} layers, d_model 16, 4 heads of 4, causal, eps {} per head)\n{}{}",
        r.layers,
        r.eps,
        text_table(&HEADERS, &rows(r)),
        summary(r)
    )
}

/// Writes time_n.md, time_n.json and time_n.svg to `out`.
pub fn write_outputs(r: &Report, out: &Path) -> Result<()> {
    ensure_dir(out)?;
    write_json(&out.join("time_n.json"), r)?;
    let md = format!(
        "# Model forward+backward time against n\n\n{} layers, d_model = 16, 4 heads of d_head = 4, d_ff = 32, GELU, layer norm, causal, MSE; W_Q, W_K scaled by {QK_SCALE} (R ~ 0.5 per head); polynomial engine at eps = {} per head (substituted gradient). Loss and every gradient, both threads.\n\n{}\n{}\n![time vs n](time_n.svg)\n",
        r.layers,
        r.eps,
        markdown_table(&HEADERS, &rows(r)),
        summary(r)
    );
    write_text(&out.join("time_n.md"), &md)?;
    let pts = |f: &dyn Fn(&Record) -> f64| r.records.iter().map(|x| (x.n as f64, f(x))).collect();
    LogLogChart {
        title: "Whole-model loss and gradients: time against n".into(),
        x_label: "n".into(),
        y_label: "seconds".into(),
        series: vec![
            Series {
                name: "exact engine".into(),
                points: pts(&|x| x.seconds_exact),
                style: Style::Line,
            },
            Series {
                name: "polynomial engine".into(),
                points: pts(&|x| x.seconds_poly),
                style: Style::Line,
            },
        ],
    }
    .write_svg(&out.join("time_n.svg"), 900, 600)
}
