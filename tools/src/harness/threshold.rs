//! `polyattn sweep bound`: where the polynomial engine stops paying, against the entry
//! bound B and n, timed at a fixed d. Not a picture of AS23/AS24's threshold B ~
//! sqrt(ln n), which is asymptotic and concerns d = Theta(log n): at fixed d the method is
//! almost linear for any B = n^{o(1)} (see [`super::exponent`] for the plan-only map).
//!
//! For each n and B (log-spaced from 0.1 to 4 sqrt(ln n)): Q and K with every entry
//! +B or -B (random signs; so the certified radius is R = B^2 sqrt(d) for tau =
//! 1/sqrt(d)), V ~ N(0, 1), d = d_v = 4, no mask. The planner picks the degree and rank
//! for eps = 1/n (no cost limit, rank limit 20 000). Then:
//! - the polynomial forward is timed where its predicted cost is affordable
//!   ([`Grid::poly_flops_budget`]); else the outcome uses the predicted cost ratio;
//! - the exact forward is timed once per n up to [`Grid::exact_max_n`]; above, its
//!   time is extrapolated from the largest measured n by the n^2 law (stated in the
//!   report);
//! - the measured error max |O~ - O| against the exact engine where both ran.
//!
//! Outcome per point: `refused` (no certified degree at rank <= 20 000), `slower`
//! (poly time >= exact time), `faster`.

use super::{ensure_dir, markdown_table, sig3, text_table, write_json, write_text, Preset};
use crate::plot::{LogLogChart, Series, Style};
use polyattn::attention::poly::{self, Accuracy, PolyConfig};
use polyattn::attention::{exact, AttentionConfig, Mask, Problem};
use polyattn::error::{Error, Result};
use polyattn::rng::SplitMix64;
use polyattn::tensor::Matrix;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// The grid of a preset.
#[derive(Clone, Debug, Serialize)]
pub struct Grid {
    /// log2 n values.
    pub log2_n: Vec<u32>,
    /// B values per n.
    pub b_points: usize,
    /// Head dimension (d = d_v).
    pub d: usize,
    /// Largest n where the exact engine is timed (above: extrapolated by n^2).
    pub exact_max_n: usize,
    /// Poly forwards predicted above this many flops are not run.
    pub poly_flops_budget: f64,
    /// Largest n where the measured error is computed.
    pub error_max_n: usize,
}

impl Grid {
    /// The preset's grid: small n in {2^8, 2^9, 2^10}, 5 B values; full n in
    /// {2^8, .., 2^16}, 9 B values.
    pub fn of(preset: Preset) -> Self {
        match preset {
            Preset::Small => Self {
                log2_n: vec![8, 9, 10],
                b_points: 5,
                d: 4,
                exact_max_n: 1 << 10,
                poly_flops_budget: 2e8,
                error_max_n: 1 << 10,
            },
            Preset::Full => Self {
                log2_n: (8..=16).collect(),
                b_points: 9,
                d: 4,
                exact_max_n: 1 << 13,
                poly_flops_budget: 3e9,
                error_max_n: 1 << 13,
            },
        }
    }
}

/// One (n, B) point.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    /// Sequence length.
    pub n: usize,
    /// Entry bound B.
    pub b: f64,
    /// B / sqrt(ln n).
    pub b_over_threshold: f64,
    /// Certified radius R.
    pub radius: f64,
    /// Degree chosen for eps = 1/n (None: refused).
    pub degree: Option<usize>,
    /// Rank C(d + g, g).
    pub rank: Option<usize>,
    /// The refusal, if any.
    pub refusal: Option<String>,
    /// Predicted exact / poly flops.
    pub predicted_speedup: Option<f64>,
    /// Measured poly seconds (None: not run).
    pub seconds_poly: Option<f64>,
    /// Exact seconds, measured or extrapolated.
    pub seconds_exact: f64,
    /// Whether `seconds_exact` is extrapolated.
    pub exact_extrapolated: bool,
    /// max |O~ - O| against the exact engine (None: not measured).
    pub measured_error: Option<f64>,
    /// The certified max bound on |O~ - O|.
    pub certified_bound: Option<f64>,
    /// `faster`, `slower` or `refused`.
    pub outcome: String,
}

/// The sweep's results.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The preset.
    pub preset: Preset,
    /// Its grid.
    pub grid: Grid,
    /// The points, n-major.
    pub points: Vec<Point>,
}

fn time<R>(f: impl FnOnce() -> R) -> (R, f64) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed().as_secs_f64())
}

/// The inputs of one point: Q, K entries +-B (random signs), V ~ N(0, 1).
fn inputs(n: usize, d: usize, b: f64, seed: u64) -> Result<[Matrix<f64>; 3]> {
    let mut r = SplitMix64::new(seed);
    let mut pm = |len: usize| -> Vec<f64> {
        (0..len)
            .map(|_| if r.uniform() < 0.5 { -b } else { b })
            .collect()
    };
    let q = Matrix::from_vec(n, d, pm(n * d))?;
    let k = Matrix::from_vec(n, d, pm(n * d))?;
    let v = Matrix::from_vec(n, d, SplitMix64::new(seed ^ 1).normal_vec(n * d, 1.0))?;
    Ok([q, k, v])
}

/// Runs the sweep.
pub fn sweep(preset: Preset) -> Result<Report> {
    let grid = Grid::of(preset);
    let d = grid.d;
    let mut points = Vec::new();
    let mut exact_ref: Option<(usize, f64)> = None; // largest measured (n, seconds)
    let mut bar = super::progress::Progress::new("sweep bound", grid.log2_n.len() * grid.b_points);
    for &l in &grid.log2_n {
        let n = 1usize << l;
        let thr = (n as f64).ln().sqrt();
        let (b_lo, b_hi) = (0.1, 4.0 * thr);
        let cfg = PolyConfig {
            accuracy: Accuracy::Eps(1.0 / n as f64),
            max_cost_ratio: f64::INFINITY,
            ..PolyConfig::default()
        };
        let att = AttentionConfig {
            scale: None,
            mask: Mask::None,
            softcap: None,
        };
        // Exact time does not depend on B: once per n.
        let (seconds_exact, exact_extrapolated) = if n <= grid.exact_max_n {
            let [q, k, v] = inputs(n, d, 1.0, 7)?;
            let (res, s) = time(|| exact::forward(q.view(), k.view(), v.view(), &att));
            res?;
            exact_ref = Some((n, s));
            (s, false)
        } else {
            let (n0, s0) = exact_ref.ok_or_else(|| Error::InvalidParameter {
                name: "grid",
                value: format!("{n}"),
                reason: "no measured exact time to extrapolate from".into(),
            })?;
            (s0 * (n as f64 / n0 as f64).powi(2), true)
        };
        for i in 0..grid.b_points {
            let t = i as f64 / (grid.b_points - 1).max(1) as f64;
            let b = b_lo * (b_hi / b_lo).powf(t);
            bar.step(&format!("n = {n}, B = {b:.3}"));
            let [q, k, v] = inputs(n, d, b, 1000 + i as u64)?;
            let p = Problem::new(q.view(), k.view(), v.view(), &att)?;
            let radius = poly::plan::rigorous_radius(&p);
            let mut pt = Point {
                n,
                b,
                b_over_threshold: b / thr,
                radius,
                degree: None,
                rank: None,
                refusal: None,
                predicted_speedup: None,
                seconds_poly: None,
                seconds_exact,
                exact_extrapolated,
                measured_error: None,
                certified_bound: None,
                outcome: "refused".into(),
            };
            match poly::plan::plan(&p, &cfg) {
                Err(Error::PolyRefused { reason, .. }) => pt.refusal = Some(reason),
                Err(e) => return Err(e),
                Ok(plan) => {
                    let reg = &plan.regime;
                    pt.degree = Some(reg.degree);
                    pt.rank = Some(reg.rank);
                    pt.predicted_speedup = Some(reg.predicted_speedup());
                    let faster = if reg.poly_flops <= grid.poly_flops_budget {
                        let (f, s) = time(|| poly::forward(q.view(), k.view(), v.view(), &cfg));
                        let f = f?;
                        pt.seconds_poly = Some(s);
                        pt.certified_bound = Some(f.bound.max_total());
                        if n <= grid.error_max_n {
                            let e = exact::forward(q.view(), k.view(), v.view(), &att)?;
                            pt.measured_error = Some(
                                f.o.as_slice()
                                    .iter()
                                    .zip(e.o.as_slice())
                                    .fold(0.0f64, |m, (a, b)| m.max((a - b).abs())),
                            );
                        }
                        s < seconds_exact
                    } else {
                        reg.predicted_speedup() > 1.0
                    };
                    pt.outcome = if faster { "faster" } else { "slower" }.into();
                }
            }
            points.push(pt);
        }
    }
    bar.finish();
    Ok(Report {
        preset,
        grid,
        points,
    })
}

const HEADERS: [&str; 11] = [
    "n",
    "B",
    "B/sqrt(ln n)",
    "R",
    "degree",
    "rank",
    "poly s",
    "exact s",
    "error",
    "bound",
    "outcome",
];

fn opt<T: Copy>(x: Option<T>, f: impl Fn(T) -> String) -> String {
    x.map_or_else(|| "-".into(), f)
}

fn rows(r: &Report) -> Vec<Vec<String>> {
    r.points
        .iter()
        .map(|p| {
            vec![
                p.n.to_string(),
                sig3(p.b),
                sig3(p.b_over_threshold),
                sig3(p.radius),
                opt(p.degree, |g| g.to_string()),
                opt(p.rank, |g| g.to_string()),
                opt(p.seconds_poly, sig3),
                format!(
                    "{}{}",
                    sig3(p.seconds_exact),
                    if p.exact_extrapolated { "*" } else { "" }
                ),
                opt(p.measured_error, sig3),
                opt(p.certified_bound, sig3),
                p.outcome.clone(),
            ]
        })
        .collect()
}

/// Per n: the largest B where the polynomial engine was faster, and the smallest B
/// where it was refused, against sqrt(ln n).
pub fn line(r: &Report) -> Vec<(usize, Option<f64>, Option<f64>, f64)> {
    let mut ns: Vec<usize> = r.points.iter().map(|p| p.n).collect();
    ns.dedup();
    ns.into_iter()
        .map(|n| {
            let pts = r.points.iter().filter(|p| p.n == n);
            let last_fast = pts
                .clone()
                .filter(|p| p.outcome == "faster")
                .map(|p| p.b)
                .fold(None, |m: Option<f64>, b| Some(m.map_or(b, |x| x.max(b))));
            let first_refused = pts
                .filter(|p| p.outcome == "refused")
                .map(|p| p.b)
                .fold(None, |m: Option<f64>, b| Some(m.map_or(b, |x| x.min(b))));
            (n, last_fast, first_refused, (n as f64).ln().sqrt())
        })
        .collect()
}

fn summary(r: &Report) -> String {
    let mut s = String::from(
        "Per n: the largest B where the polynomial engine was faster than exact, the smallest B it refused, and sqrt(ln n):\n\n",
    );
    let rows: Vec<Vec<String>> = line(r)
        .into_iter()
        .map(|(n, f, rf, t)| {
            vec![
                n.to_string(),
                opt(f, sig3),
                opt(rf, sig3),
                sig3(t),
                opt(f, |b| sig3(b / t)),
            ]
        })
        .collect();
    s.push_str(&markdown_table(
        &[
            "n",
            "largest B faster",
            "smallest B refused",
            "sqrt(ln n)",
            "(largest B faster)/sqrt(ln n)",
        ],
        &rows,
    ));
    s
}

/// The terminal table.
pub fn terminal_summary(r: &Report) -> String {
    text_table(&HEADERS, &rows(r))
}

/// Writes bound.md, bound.json and bound.svg to `out`.
pub fn write_outputs(r: &Report, out: &Path) -> Result<()> {
    ensure_dir(out)?;
    write_json(&out.join("bound.json"), r)?;
    let g = &r.grid;
    let md = format!(
        "# Where the polynomial engine stops paying: B against n\n\nCommand: `polyattn sweep bound --preset {}`. Q, K entries all +-B (random signs, so R = B^2 sqrt(d)), V ~ N(0,1), d = d_v = {}, no mask, eps = 1/n, rank limit 20 000, no cost limit. Exact forward timed for n <= {} (`*`: extrapolated from the largest measured n by n^2); poly forward run where predicted <= {:e} flops (otherwise the outcome is the predicted cost ratio); error = max |O~ - O| against the exact engine for n <= {}. Single measurements, both threads of this machine.\n\n{}\n{}\n![B against n](bound.svg)\n",
        match r.preset {
            Preset::Small => "small",
            Preset::Full => "full",
        },
        g.d,
        g.exact_max_n,
        g.poly_flops_budget,
        g.error_max_n,
        summary(r),
        markdown_table(&HEADERS, &rows(r)),
    );
    write_text(&out.join("bound.md"), &md)?;
    let pts = |o: &str| {
        r.points
            .iter()
            .filter(|p| p.outcome == o)
            .map(|p| (p.n as f64, p.b))
            .collect::<Vec<_>>()
    };
    let ns: Vec<f64> = {
        let mut v: Vec<f64> = r.points.iter().map(|p| p.n as f64).collect();
        v.dedup();
        v
    };
    LogLogChart {
        title: "Polynomial engine (eps = 1/n) against exact: B vs n".into(),
        x_label: "n".into(),
        y_label: "entry bound B".into(),
        series: vec![
            Series {
                name: "faster than exact".into(),
                points: pts("faster"),
                style: Style::Points,
            },
            Series {
                name: "slower than exact".into(),
                points: pts("slower"),
                style: Style::Points,
            },
            Series {
                name: "refused (no certified degree at rank <= 20000)".into(),
                points: pts("refused"),
                style: Style::Points,
            },
            Series {
                name: "B = sqrt(ln n)".into(),
                points: ns.iter().map(|&n| (n, n.ln().sqrt())).collect(),
                style: Style::Reference,
            },
        ],
    }
    .write_svg(&out.join("bound.svg"), 900, 600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_preset_maps_both_sides_of_the_line() {
        let r = sweep(Preset::Small).unwrap();
        assert_eq!(r.points.len(), 3 * 5);
        // Smallest B (0.1): R = 0.04, a low degree, certified and measured within bound.
        for p in r.points.iter().filter(|p| p.b == 0.1) {
            assert!(p.degree.is_some(), "{p:?}");
            let (e, b) = (p.measured_error.unwrap(), p.certified_bound.unwrap());
            assert!(e <= b, "{p:?}");
        }
        // Largest B (4 sqrt(ln n), R = 16 ln(n) sqrt(d) > 170): no certified degree.
        for p in r.points.iter().filter(|p| p.b_over_threshold > 3.9) {
            assert_eq!(p.outcome, "refused", "{p:?}");
        }
        let dir = std::env::temp_dir().join(format!("polyattn-bound-{}", std::process::id()));
        write_outputs(&r, &dir).unwrap();
        for f in ["bound.md", "bound.json", "bound.svg"] {
            assert!(dir.join(f).metadata().unwrap().len() > 100, "{f}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
