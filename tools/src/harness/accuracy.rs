//! `polyattn sweep error-n`: the polynomial engine's certified error against n, with
//! the degree chosen for a target eps = 1/n on O (ML24/AS24's "error 1/poly(n)"
//! claim, checked rather than assumed; docs/math.md §5).
//!
//! Inputs: Q, K with entries uniform in [-B, B] (B = 1), V and dO uniform in [-1, 1],
//! no mask, tau = 1/d (the papers' scaling, so |S_ij| <= d tau B^2 = B^2). For each
//! head dimension and n the engine plans for eps = 1/n, runs forward and backward
//! (substituted gradient), and every output is certified against exact attention:
//! for n up to `full_reference_max_n` against the whole f64 reference with its a
//! priori rounding bound, beyond it on `sampled_rows` query rows (O and dQ only: a row
//! of each needs only that query and all keys, O(n d) per row), since the exact
//! reference costs O(n^2 d).

use super::fit::loglog_slope;
use super::{ensure_dir, markdown_table, sig3, text_table, write_json, write_text, Preset};
use crate::certify::report::{certify_attention, ReferenceChoice};
use crate::plot::{LogLogChart, Series, Style};
use polyattn::attention::exact::reference::exact_reference;
use polyattn::attention::poly::{self, Accuracy, GradientKind, PolyConfig};
use polyattn::attention::AttentionConfig;
use polyattn::error::Result;
use polyattn::rng::SplitMix64;
use polyattn::tensor::{Matrix, Tensor3};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// The grid of the sweep.
#[derive(Clone, Debug, Serialize)]
pub struct Grid {
    /// Head dimensions.
    pub ds: Vec<usize>,
    /// log2 n values per head dimension (same order as `ds`).
    pub log2_ns: Vec<Vec<u32>>,
    /// The entry bound B of Q and K.
    pub entry_bound: f64,
    /// Up to this n the whole reference is computed; beyond, sampled rows.
    pub full_reference_max_n: usize,
    /// Rows certified when sampling.
    pub sampled_rows: usize,
}

impl Grid {
    /// Small: d = 4, n = 2^8 .. 2^10 (seconds); full: d = 4 up to 2^16, d = 8 up to
    /// 2^14 (minutes; d = 8 at eps = 2^-16 needs rank C(15, 7) = 6435, too slow here).
    pub fn preset(p: Preset) -> Self {
        match p {
            Preset::Small => Self {
                ds: vec![4],
                log2_ns: vec![vec![8, 9, 10]],
                entry_bound: 1.0,
                full_reference_max_n: 1 << 9,
                sampled_rows: 16,
            },
            Preset::Full => Self {
                ds: vec![4, 8],
                log2_ns: vec![(8..=16).step_by(2).collect(), (8..=14).step_by(2).collect()],
                entry_bound: 1.0,
                full_reference_max_n: 1 << 12,
                sampled_rows: 64,
            },
        }
    }
}

/// One grid point's results.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    /// Head dimension.
    pub d: usize,
    /// Sequence length.
    pub n: usize,
    /// The target eps = 1/n on max |O~ - O|.
    pub eps: f64,
    /// Degree and rank the planner chose.
    pub degree: usize,
    /// See `degree`.
    pub rank: usize,
    /// The certified radius R.
    pub radius: f64,
    /// The engine's a priori bound on max |O~ - O|.
    pub a_priori_o: f64,
    /// Certified max |error| of O, dQ, and (full reference only) dK, dV.
    pub err_o: f64,
    /// See `err_o`.
    pub err_dq: f64,
    /// See `err_o`; `None` when rows were sampled.
    pub err_dk: Option<f64>,
    /// See `err_dk`.
    pub err_dv: Option<f64>,
    /// "full" or "sampled".
    pub reference: String,
    /// Seconds of the polynomial forward + backward.
    pub seconds_poly: f64,
}

/// The sweep's results and fitted slopes.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The grid.
    pub grid: Grid,
    /// One record per (d, n).
    pub records: Vec<Record>,
    /// Per d: fitted log-log slope of the certified O error and of the dQ error against n.
    pub slopes: Vec<(usize, Option<f64>, Option<f64>)>,
    /// Whether every certified O error is at most 1/n.
    pub all_o_below_one_over_n: bool,
}

fn inputs(seed: u64, n: usize, d: usize, b: f64) -> Result<[Tensor3<f64>; 4]> {
    let mut r = SplitMix64::new(seed);
    let mut t = |s: f64| Tensor3::from_vec(1, n, d, (0..n * d).map(|_| r.range(-s, s)).collect());
    Ok([t(b)?, t(b)?, t(1.0)?, t(1.0)?])
}

/// Certified max |y - exact| over sampled rows (O and dQ).
fn sampled_errors(
    x: &[Tensor3<f64>; 4],
    cfg: &PolyConfig,
    rows: usize,
) -> Result<(f64, f64, f64, f64)> {
    let (q, k, v, g) = (x[0].head(0), x[1].head(0), x[2].head(0), x[3].head(0));
    let t0 = Instant::now();
    let f = poly::forward(q, k, v, cfg)?;
    let gr = poly::backward(q, k, v, &f, g, GradientKind::Substituted, cfg)?;
    let secs = t0.elapsed().as_secs_f64();
    let (n, d, d_v) = (q.rows(), q.cols(), v.cols());
    let acfg = AttentionConfig {
        scale: cfg.scale,
        mask: polyattn::attention::Mask::None,
        softcap: None,
    };
    let (mut eo, mut edq) = (0.0f64, 0.0f64);
    for s in 0..rows {
        let i = s * (n - 1) / (rows - 1).max(1);
        let one =
            |m: polyattn::tensor::MatRef<'_, f64>, w| Matrix::from_vec(1, w, m.row(i).to_vec());
        let (qi, gi) = (one(q, d)?, one(g, d_v)?);
        let r = exact_reference(qi.view(), k, v, Some(gi.view()), &acfg)?;
        for c in 0..d_v {
            eo = eo.max((f.o.at(i, c) - r.o[c]).abs() + r.bound_o[c]);
        }
        if let Some(rg) = r.grads {
            for c in 0..d {
                edq = edq.max((gr.dq.at(i, c) - rg.dq[c]).abs() + rg.bound_dq[c]);
            }
        }
    }
    Ok((eo, edq, f.bound.max_total(), secs))
}

/// Runs the sweep.
pub fn sweep(preset: Preset) -> Result<Report> {
    let grid = Grid::preset(preset);
    let mut records = Vec::new();
    let points = grid.log2_ns.iter().map(Vec::len).sum();
    let mut bar = super::progress::Progress::new("sweep error-n", points);
    for (di, &d) in grid.ds.iter().enumerate() {
        for &l in &grid.log2_ns[di] {
            let n = 1usize << l;
            bar.step(&format!("d = {d}, n = {n}"));
            let eps = 1.0 / n as f64;
            let x = inputs(1000 + l as u64 * 10 + d as u64, n, d, grid.entry_bound)?;
            let cfg = PolyConfig {
                scale: Some(1.0 / d as f64),
                accuracy: Accuracy::Eps(eps),
                max_cost_ratio: f64::INFINITY,
                ..PolyConfig::default()
            };
            let rec = if n <= grid.full_reference_max_n {
                let t0 = Instant::now();
                let rep = certify_attention(
                    &x[0],
                    &x[1],
                    &x[2],
                    Some(&x[3]),
                    &cfg,
                    GradientKind::Substituted,
                    ReferenceChoice::F64,
                )?;
                let secs = t0.elapsed().as_secs_f64() - rep.seconds_reference;
                let reg = &rep.heads[0].regime;
                let t = |i: usize| rep.tensors[i].certified_max_abs;
                Record {
                    d,
                    n,
                    eps,
                    degree: reg.degree,
                    rank: reg.rank,
                    radius: reg.radius,
                    a_priori_o: rep.tensors[0].a_priori_total,
                    err_o: t(0),
                    err_dq: t(1),
                    err_dk: Some(t(2)),
                    err_dv: Some(t(3)),
                    reference: "full".into(),
                    seconds_poly: secs,
                }
            } else {
                let f = poly::forward(x[0].head(0), x[1].head(0), x[2].head(0), &cfg)?;
                let reg = f.plan.regime.clone();
                let (eo, edq, a_o, secs) = sampled_errors(&x, &cfg, grid.sampled_rows)?;
                Record {
                    d,
                    n,
                    eps,
                    degree: reg.degree,
                    rank: reg.rank,
                    radius: reg.radius,
                    a_priori_o: a_o,
                    err_o: eo,
                    err_dq: edq,
                    err_dk: None,
                    err_dv: None,
                    reference: format!("{} sampled rows", grid.sampled_rows),
                    seconds_poly: secs,
                }
            };
            records.push(rec);
        }
    }
    let slopes = grid
        .ds
        .iter()
        .map(|&d| {
            let pts = |f: &dyn Fn(&Record) -> f64| {
                records
                    .iter()
                    .filter(|r| r.d == d)
                    .map(|r| (r.n as f64, f(r)))
                    .collect::<Vec<_>>()
            };
            (
                d,
                loglog_slope(&pts(&|r| r.err_o)).map(|s| s.0),
                loglog_slope(&pts(&|r| r.err_dq)).map(|s| s.0),
            )
        })
        .collect();
    let all_o_below_one_over_n = records.iter().all(|r| r.err_o <= r.eps);
    bar.finish();
    Ok(Report {
        grid,
        records,
        slopes,
        all_o_below_one_over_n,
    })
}

const HEADERS: [&str; 12] = [
    "d",
    "n",
    "eps = 1/n",
    "degree",
    "rank",
    "R",
    "a priori O",
    "O error",
    "dQ error",
    "dK error",
    "dV error",
    "reference",
];

fn rows(r: &Report) -> Vec<Vec<String>> {
    let opt = |x: Option<f64>| x.map_or("-".to_string(), sig3);
    r.records
        .iter()
        .map(|x| {
            vec![
                x.d.to_string(),
                x.n.to_string(),
                sig3(x.eps),
                x.degree.to_string(),
                x.rank.to_string(),
                sig3(x.radius),
                sig3(x.a_priori_o),
                sig3(x.err_o),
                sig3(x.err_dq),
                opt(x.err_dk),
                opt(x.err_dv),
                x.reference.clone(),
            ]
        })
        .collect()
}

fn slope_lines(r: &Report) -> String {
    let mut s = String::new();
    for (d, so, sq) in &r.slopes {
        let f = |x: &Option<f64>| x.map_or("-".into(), |v| format!("{v:.2}"));
        s += &format!(
            "d = {d}: fitted log-log slope of the certified O error {}, of dQ {}\n",
            f(so),
            f(sq)
        );
    }
    s += &format!(
        "every certified O error <= 1/n: {}\n",
        if r.all_o_below_one_over_n {
            "yes"
        } else {
            "NO"
        }
    );
    s
}

/// The terminal summary.
pub fn terminal_summary(r: &Report) -> String {
    format!(
        "error vs n (certified, eps = 1/n on O)\n{}{}",
        text_table(&HEADERS, &rows(r)),
        slope_lines(r)
    )
}

/// Writes error_n.md, error_n.json and error_n.svg to `out`.
pub fn write_outputs(r: &Report, out: &Path) -> Result<()> {
    ensure_dir(out)?;
    write_json(&out.join("error_n.json"), r)?;
    let md = format!(
        "# Certified error against n\n\nThe polynomial engine with the degree chosen for eps = 1/n on max|O~ - O|; Q, K entries uniform in [-{b}, {b}], V, dO uniform in [-1, 1], tau = 1/d, no mask. Errors are certified upper bounds against exact attention (f64 reference with its a priori rounding bound; sampled rows beyond n = {m}).\n\n{}\n{}\n![error vs n](error_n.svg)\n",
        markdown_table(&HEADERS, &rows(r)),
        slope_lines(r).replace('\n', "\n\n"),
        b = r.grid.entry_bound,
        m = r.grid.full_reference_max_n
    );
    write_text(&out.join("error_n.md"), &md)?;
    let mut series = Vec::new();
    for &d in &r.grid.ds {
        let pts = |f: &dyn Fn(&Record) -> f64| {
            r.records
                .iter()
                .filter(|x| x.d == d)
                .map(|x| (x.n as f64, f(x)))
                .collect()
        };
        series.push(Series {
            name: format!("O error, d = {d}"),
            points: pts(&|x| x.err_o),
            style: Style::Line,
        });
        series.push(Series {
            name: format!("dQ error, d = {d}"),
            points: pts(&|x| x.err_dq),
            style: Style::Line,
        });
        series.push(Series {
            name: format!("a priori O bound, d = {d}"),
            points: pts(&|x| x.a_priori_o),
            style: Style::Points,
        });
    }
    let ns: Vec<f64> = r.records.iter().map(|x| x.n as f64).collect();
    series.push(Series {
        name: "1/n".into(),
        points: ns.iter().map(|&n| (n, 1.0 / n)).collect(),
        style: Style::Reference,
    });
    LogLogChart {
        title: "Certified error of the polynomial engine, eps = 1/n".into(),
        x_label: "n".into(),
        y_label: "max |computed - exact|".into(),
        series,
    }
    .write_svg(&out.join("error_n.svg"), 900, 600)
}
