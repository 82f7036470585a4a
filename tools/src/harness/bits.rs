//! `polyattn sweep bits`: the polynomial algorithm evaluated in MPFR at p = c log2(n)
//! bits (docs/math.md §5.7: the O(log n)-bit hypothesis, tested directly).
//!
//! The papers' algorithms are analysed in O(log n)-bit arithmetic. Here the one
//! generic low-rank algorithm ([`polyattn::attention::poly::core`]) runs on MPFR floats of
//! p bits (inputs rounded to p bits too), and its O and dQ are compared with
//! (a) the same algorithm at 256 bits, which isolates the rounding of p-bit arithmetic,
//! and (b) exact attention (f64 reference with its rounding bound), the total error
//! including the polynomial's. The degree is fixed by eps = 1/n on O as in
//! `sweep error-n`; inputs as there (B = 1, tau = 1/d).

use super::{ensure_dir, markdown_table, sig3, text_table, write_json, write_text, Preset};
use crate::plot::{LogLogChart, Series, Style};
use polyattn::attention::exact::reference::exact_reference;
use polyattn::attention::poly::core::{backward, forward, GradientKind};
use polyattn::attention::poly::{self, Accuracy, PolyConfig};
use polyattn::attention::{AttentionConfig, Mask};
use polyattn::error::Result;
use polyattn::rng::SplitMix64;
use polyattn::scalar::Field;
use polyattn::tensor::Matrix;
use rug::Float;
use serde::Serialize;
use std::ops::{Add, Div, Mul, Neg, Sub};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

/// The working precision of [`Mp`] values created from constants (one sweep point at
/// a time; the harness sets it before each run, holding [`PRECISION_LOCK`]).
/// `Field::zero()`/`one()` take no context, so the precision cannot travel with the
/// values; the lock makes concurrent runs (parallel tests, two sweeps in one process)
/// take turns instead of racing on it.
static PRECISION: AtomicU32 = AtomicU32::new(53);

/// Held for the whole of every run that sets [`PRECISION`].
static PRECISION_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// An MPFR float whose every operation rounds to the current `PRECISION` (round to
/// nearest): p-bit floating-point arithmetic for the generic algorithm.
#[derive(Clone, Debug, PartialEq)]
pub struct Mp(pub Float);

fn prec() -> u32 {
    PRECISION.load(Ordering::Relaxed)
}

macro_rules! mp_binop {
    ($tr:ident, $f:ident) => {
        impl $tr for Mp {
            type Output = Mp;
            fn $f(self, o: Mp) -> Mp {
                Mp(Float::with_val(prec(), (&self.0).$f(&o.0)))
            }
        }
    };
}
mp_binop!(Add, add);
mp_binop!(Sub, sub);
mp_binop!(Mul, mul);
mp_binop!(Div, div);

impl Neg for Mp {
    type Output = Mp;
    fn neg(self) -> Mp {
        Mp(-self.0)
    }
}

impl Field for Mp {
    fn zero() -> Self {
        Mp(Float::new(prec()))
    }
    fn one() -> Self {
        Mp(Float::with_val(prec(), 1))
    }
    fn from_u64(k: u64) -> Self {
        Mp(Float::with_val(prec(), k))
    }
}

fn mp(x: f64) -> Mp {
    Mp(Float::with_val(prec(), x))
}

/// The grid.
#[derive(Clone, Debug, Serialize)]
pub struct Grid {
    /// Head dimension.
    pub d: usize,
    /// log2 n values.
    pub log2_ns: Vec<u32>,
    /// Multipliers c of p = ceil(c log2 n).
    pub cs: Vec<f64>,
}

impl Grid {
    /// Small: n in {64, 128}; full: n in {64, 256, 1024, 4096}; d = 4, c in 1..4.
    pub fn preset(p: Preset) -> Self {
        match p {
            Preset::Small => Self {
                d: 4,
                log2_ns: vec![6, 7],
                cs: vec![1.0, 2.0, 4.0],
            },
            Preset::Full => Self {
                d: 4,
                log2_ns: vec![6, 8, 10, 12],
                cs: vec![1.0, 1.5, 2.0, 3.0, 4.0],
            },
        }
    }
}

/// One (n, c) point.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    /// Sequence length.
    pub n: usize,
    /// The multiplier c.
    pub c: f64,
    /// Bits p = ceil(c log2 n).
    pub bits: u32,
    /// Degree used.
    pub degree: usize,
    /// max |O_p - O_256|: the rounding of p-bit arithmetic.
    pub rounding_o: f64,
    /// max |dQ_p - dQ_256|.
    pub rounding_dq: f64,
    /// Certified max |O_p - O_exact| (total).
    pub total_o: f64,
    /// Certified max |dQ_p - dQ_exact|.
    pub total_dq: f64,
}

/// The sweep's results.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The grid.
    pub grid: Grid,
    /// The records.
    pub records: Vec<Record>,
}

/// O and dQ of the generic algorithm at `bits` bits, as f64.
fn run_at(
    bits: u32,
    x: &[Vec<f64>; 4],
    n: usize,
    d: usize,
    plan: &poly::Plan,
    tau: f64,
) -> (Vec<f64>, Vec<f64>) {
    // A poisoned lock only means another run panicked; the precision is set afresh.
    let _turn = PRECISION_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    PRECISION.store(bits, Ordering::Relaxed);
    let conv = |v: &[f64]| v.iter().map(|&z| mp(z)).collect::<Vec<Mp>>();
    let (q, k, v, g) = (conv(&x[0]), conv(&x[1]), conv(&x[2]), conv(&x[3]));
    let p = plan.low_rank_problem((&q, &k, &v), (n, n, d, d), tau, Mask::None, 32, mp);
    let f = forward(&p, &plan.monomials);
    let gr = backward(&p, &plan.monomials, &f, &g, GradientKind::Substituted);
    let back = |v: Vec<Mp>| v.into_iter().map(|z| z.0.to_f64()).collect::<Vec<f64>>();
    (back(f.o), back(gr.dq))
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn max_cert(a: &[f64], r: &[f64], rad: &[f64]) -> f64 {
    a.iter()
        .zip(r)
        .zip(rad)
        .map(|((x, y), e)| (x - y).abs() + e)
        .fold(0.0, f64::max)
}

/// Runs the sweep.
pub fn sweep(preset: Preset) -> Result<Report> {
    let grid = Grid::preset(preset);
    let d = grid.d;
    let mut records = Vec::new();
    let mut bar = super::progress::Progress::new("sweep bits", grid.log2_ns.len());
    for &l in &grid.log2_ns {
        let n = 1usize << l;
        bar.step(&format!("n = {n}"));
        let mut r = SplitMix64::new(7000 + l as u64);
        let mut gen = |s: f64| (0..n * d).map(|_| r.range(-s, s)).collect::<Vec<f64>>();
        let x = [gen(1.0), gen(1.0), gen(1.0), gen(1.0)];
        let m = |v: &[f64]| Matrix::from_vec(n, d, v.to_vec());
        let (q, k, v, g) = (m(&x[0])?, m(&x[1])?, m(&x[2])?, m(&x[3])?);
        let tau = 1.0 / d as f64;
        let cfg = PolyConfig {
            scale: Some(tau),
            accuracy: Accuracy::Eps(1.0 / n as f64),
            max_cost_ratio: f64::INFINITY,
            ..PolyConfig::default()
        };
        let plan = poly::forward(q.view(), k.view(), v.view(), &cfg)?.plan;
        let reference = exact_reference(
            q.view(),
            k.view(),
            v.view(),
            Some(g.view()),
            &AttentionConfig {
                scale: Some(tau),
                mask: Mask::None,
                softcap: None,
            },
        )?;
        let rg =
            reference
                .grads
                .as_ref()
                .ok_or_else(|| polyattn::error::Error::InvalidParameter {
                    name: "bits sweep",
                    value: "reference".into(),
                    reason: "the reference returned no gradients".into(),
                })?;
        let (o_hi, dq_hi) = run_at(256, &x, n, d, &plan, tau);
        for &c in &grid.cs {
            let bits = ((c * l as f64).ceil() as u32).max(2);
            let (o, dq) = run_at(bits, &x, n, d, &plan, tau);
            records.push(Record {
                n,
                c,
                bits,
                degree: plan.regime.degree,
                rounding_o: max_diff(&o, &o_hi),
                rounding_dq: max_diff(&dq, &dq_hi),
                total_o: max_cert(&o, &reference.o, &reference.bound_o),
                total_dq: max_cert(&dq, &rg.dq, &rg.bound_dq),
            });
        }
    }
    bar.finish();
    Ok(Report { grid, records })
}

const HEADERS: [&str; 8] = [
    "n",
    "c",
    "bits",
    "degree",
    "rounding O",
    "rounding dQ",
    "total O",
    "total dQ",
];

fn rows(r: &Report) -> Vec<Vec<String>> {
    r.records
        .iter()
        .map(|x| {
            vec![
                x.n.to_string(),
                format!("{}", x.c),
                x.bits.to_string(),
                x.degree.to_string(),
                sig3(x.rounding_o),
                sig3(x.rounding_dq),
                sig3(x.total_o),
                sig3(x.total_dq),
            ]
        })
        .collect()
}

/// The terminal summary.
pub fn terminal_summary(r: &Report) -> String {
    format!(
        "polynomial algorithm at p = c log2(n) bits\n{}",
        text_table(&HEADERS, &rows(r))
    )
}

/// Writes bits.md, bits.json and bits.svg to `out`.
pub fn write_outputs(r: &Report, out: &Path) -> Result<()> {
    ensure_dir(out)?;
    write_json(&out.join("bits.json"), r)?;
    let md = format!(
        "# The polynomial algorithm at p = c log2(n) bits\n\nThe generic low-rank algorithm on MPFR floats of p bits (inputs rounded to p bits), d = {}, degree for eps = 1/n, Q, K, V, dO uniform in [-1, 1], tau = 1/d, no mask. *Rounding* compares with the same algorithm at 256 bits; *total* is certified against exact attention (f64 reference with its rounding bound).\n\n{}\n![bits](bits.svg)\n",
        r.grid.d,
        markdown_table(&HEADERS, &rows(r))
    );
    write_text(&out.join("bits.md"), &md)?;
    let mut series = Vec::new();
    for &c in &r.grid.cs {
        let pts = r
            .records
            .iter()
            .filter(|x| x.c == c)
            .map(|x| (x.n as f64, x.rounding_o))
            .collect();
        series.push(Series {
            name: format!("rounding of O, p = {c} log2 n"),
            points: pts,
            style: Style::Line,
        });
    }
    let ns: Vec<f64> = r.grid.log2_ns.iter().map(|&l| (1u64 << l) as f64).collect();
    series.push(Series {
        name: "1/n".into(),
        points: ns.iter().map(|&n| (n, 1.0 / n)).collect(),
        style: Style::Reference,
    });
    LogLogChart {
        title: "Rounding error of the polynomial algorithm at p = c log2(n) bits".into(),
        x_label: "n".into(),
        y_label: "max |O_p - O_256|".into(),
        series,
    }
    .write_svg(&out.join("bits.svg"), 900, 600)
}
