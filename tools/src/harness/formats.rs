//! `polyattn sweep formats`: the polynomial algorithm in narrow and exponent-limited
//! floating-point formats, with entries up to poly(n) (docs/math.md §5.7).
//!
//! The papers' O(log n)-bit hypothesis is about input encoding: every entry is a
//! poly(n)-bounded number of O(log n) bits, which the proofs use to absorb their n d
//! and n^2 factors. `sweep bits` runs the algorithm with p = c log2 n significand bits
//! for c >= 1 and an unbounded exponent. This sweep goes where that one does not:
//!
//! - fewer bits than log2 n (c = 0.5, 0.75), and
//! - formats whose exponent is limited, so that large or small intermediates overflow
//!   or underflow: IEEE binary16 (f16: 11 bits, exponents -14..15, subnormals), bfloat16
//!   (8 bits, exponents -126..127) and a p-bit format with a 5-bit exponent
//!   (p = ceil(log2 n)),
//! - with entries of Q, K, V, dO up to s = 1, sqrt(n) or n in magnitude (uniform in
//!   [-s, s]) and tau = 1 / (d s^2), so that |tau q.k| <= 1 whatever s: the scores stay
//!   in the polynomial regime and only the number formats change.
//!
//! Emulation is exact: [`Fmt`] performs each `+ - * /` in f64 and rounds the result to
//! the format ([`Format::round`], the storage module's correctly rounded narrowing:
//! round to nearest even, subnormals, overflow to infinity). For p <= 25 the f64 result of an operation on two p-bit values, rounded
//! to p bits, is the correctly rounded p-bit result (f64 has 53 >= 2 p + 2 bits), so
//! the double rounding is innocuous. Inputs, tau and the polynomial's coefficients are
//! rounded to the format first, as a device in that format would hold them. Each row is
//! compared with the same algorithm in f64 (its rounding) and certified against exact
//! attention (the f64 reference with its a priori bound, [`exact_reference`]).

use super::{ensure_dir, markdown_table, sig3, text_table, write_json, write_text, Preset};
use crate::plot::{LogLogChart, Series, Style};
use polyattn::attention::exact::reference::exact_reference;
use polyattn::attention::poly::core::{backward, forward, GradientKind};
use polyattn::attention::poly::{self, Accuracy, PolyConfig};
use polyattn::attention::{AttentionConfig, Mask};
use polyattn::error::{Error, Result};
use polyattn::rng::SplitMix64;
use polyattn::scalar::Field;
use polyattn::tensor::Matrix;
use serde::Serialize;
use std::ops::{Add, Div, Mul, Neg, Sub};
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

/// A binary floating-point format: `p` significand bits (the leading bit included),
/// normal exponents `emin..=emax`, gradual underflow, overflow to infinity.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Format {
    /// Significand bits.
    pub p: u32,
    /// Smallest normal exponent (the smallest normal number is 2^emin).
    pub emin: i32,
    /// Largest exponent (the largest finite number is (2 - 2^(1-p)) 2^emax).
    pub emax: i32,
}

impl Format {
    /// IEEE binary16.
    pub const F16: Format = Format {
        p: 11,
        emin: -14,
        emax: 15,
    };
    /// bfloat16.
    pub const BF16: Format = Format {
        p: 8,
        emin: -126,
        emax: 127,
    };

    /// `p` bits with a `k`-bit exponent field (IEEE layout: emax = 2^(k-1) - 1,
    /// emin = 1 - emax); `k = 0` means an exponent range wider than any value here
    /// (f64's).
    pub fn with_exponent_bits(p: u32, k: u32) -> Result<Self> {
        if !(2..=25).contains(&p) || k == 1 || k > 11 {
            return Err(Error::InvalidParameter {
                name: "format",
                value: format!("p = {p}, k = {k}"),
                reason: "2 <= p <= 25 (exact emulation in f64) and k = 0 or 2..=11".into(),
            });
        }
        let emax = if k == 0 { 1000 } else { (1 << (k - 1)) - 1 };
        Ok(Self {
            p,
            emin: 1 - emax,
            emax,
        })
    }

    /// `x` rounded to this format: to nearest, ties to even, gradual underflow,
    /// overflow to +-infinity ([`polyattn::storage::round_to`]).
    pub fn round(&self, x: f64) -> f64 {
        polyattn::storage::round_to(x, self.p, self.emin, self.emax)
    }
}

/// The format every [`Fmt`] operation rounds to (one sweep point at a time; set while
/// holding [`FORMAT_LOCK`], as `bits.rs` does for MPFR's precision).
static FMT_P: AtomicI32 = AtomicI32::new(53);
static FMT_EMIN: AtomicI32 = AtomicI32::new(-1022);
static FMT_EMAX: AtomicI32 = AtomicI32::new(1023);
static FORMAT_LOCK: Mutex<()> = Mutex::new(());

fn current() -> Format {
    Format {
        p: FMT_P.load(Ordering::Relaxed) as u32,
        emin: FMT_EMIN.load(Ordering::Relaxed),
        emax: FMT_EMAX.load(Ordering::Relaxed),
    }
}

/// A value of the current [`Format`], held in an f64; every operation is computed in
/// f64 and rounded to the format (exact emulation for p <= 25, module docs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fmt(pub f64);

fn fmt(x: f64) -> Fmt {
    Fmt(current().round(x))
}

macro_rules! fmt_binop {
    ($tr:ident, $f:ident, $op:tt) => {
        impl $tr for Fmt {
            type Output = Fmt;
            fn $f(self, o: Fmt) -> Fmt {
                fmt(self.0 $op o.0)
            }
        }
    };
}
fmt_binop!(Add, add, +);
fmt_binop!(Sub, sub, -);
fmt_binop!(Mul, mul, *);
fmt_binop!(Div, div, /);

impl Neg for Fmt {
    type Output = Fmt;
    fn neg(self) -> Fmt {
        Fmt(-self.0)
    }
}

impl Field for Fmt {
    fn zero() -> Self {
        Fmt(0.0)
    }
    fn one() -> Self {
        Fmt(1.0)
    }
    fn from_u64(k: u64) -> Self {
        fmt(k as f64)
    }
}

/// An arithmetic of the sweep.
#[derive(Clone, Debug, Serialize)]
pub enum Arith {
    /// p = ceil(c log2 n) bits, unbounded exponent.
    Bits {
        /// The multiplier c.
        c: f64,
    },
    /// A fixed format.
    Fixed {
        /// Its name in the tables.
        name: &'static str,
        /// The format.
        format: Format,
    },
    /// p = ceil(log2 n) bits with a `k`-bit exponent.
    LogBits {
        /// Exponent bits.
        k: u32,
    },
}

impl Arith {
    fn format(&self, n: usize) -> Result<Format> {
        let l = (n as f64).log2();
        match *self {
            Arith::Bits { c } => Format::with_exponent_bits(((c * l).ceil() as u32).max(2), 0),
            Arith::Fixed { format, .. } => Ok(format),
            Arith::LogBits { k } => Format::with_exponent_bits((l.ceil() as u32).max(2), k),
        }
    }

    fn name(&self) -> String {
        match self {
            Arith::Bits { c } => format!("{c} log2 n bits"),
            Arith::Fixed { name, .. } => (*name).to_string(),
            Arith::LogBits { k } => format!("log2 n bits, {k}-bit exponent"),
        }
    }
}

/// The grid.
#[derive(Clone, Debug, Serialize)]
pub struct Grid {
    /// Head dimension.
    pub d: usize,
    /// log2 n values.
    pub log2_ns: Vec<u32>,
    /// Entry magnitudes s as powers of n: s = n^a for a in `scale_powers`.
    pub scale_powers: Vec<f64>,
    /// The arithmetics.
    pub ariths: Vec<Arith>,
}

impl Grid {
    /// Small: n in {64, 128}, s in {1, sqrt(n)}; full: n in {64, 256, 1024, 4096},
    /// s in {1, sqrt(n), n}. Both: d = 4; c in {0.5, 0.75, 1, 2}; f16, bf16, log2 n
    /// bits with a 5-bit exponent.
    pub fn preset(p: Preset) -> Self {
        let ariths = vec![
            Arith::Bits { c: 0.5 },
            Arith::Bits { c: 0.75 },
            Arith::Bits { c: 1.0 },
            Arith::Bits { c: 2.0 },
            Arith::Fixed {
                name: "f16",
                format: Format::F16,
            },
            Arith::Fixed {
                name: "bf16",
                format: Format::BF16,
            },
            Arith::LogBits { k: 5 },
        ];
        match p {
            Preset::Small => Self {
                d: 4,
                log2_ns: vec![6, 7],
                scale_powers: vec![0.0, 0.5],
                ariths,
            },
            Preset::Full => Self {
                d: 4,
                log2_ns: vec![6, 8, 10, 12],
                scale_powers: vec![0.0, 0.5, 1.0],
                ariths,
            },
        }
    }
}

/// One (n, s, arithmetic) point.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    /// Sequence length.
    pub n: usize,
    /// Entry magnitude s (entries uniform in [-s, s]; tau = 1 / (d s^2)).
    pub s: f64,
    /// The arithmetic's name.
    pub arith: String,
    /// Its format at this n.
    pub format: Format,
    /// Degree (eps = 1/n on O, planned in f64).
    pub degree: usize,
    /// Entries of O or dQ that came out NaN or infinite.
    pub non_finite: usize,
    /// max |O_fmt - O_f64| over finite entries (the format's rounding).
    pub rounding_o: f64,
    /// Certified max |O_fmt - O_exact| / max |O_exact| (infinite when any entry is not
    /// finite).
    pub rel_total_o: f64,
    /// Certified max |dQ_fmt - dQ_exact| / max |dQ_exact|.
    pub rel_total_dq: f64,
}

/// The sweep's results.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The grid.
    pub grid: Grid,
    /// The records.
    pub records: Vec<Record>,
}

/// O and dQ of the generic algorithm in `format` (inputs rounded to it), as f64.
fn run_in(
    format: Format,
    x: &[Vec<f64>; 4],
    dims: (usize, usize),
    plan: &poly::Plan,
    tau: f64,
) -> (Vec<f64>, Vec<f64>) {
    // A poisoned lock only means another run panicked; the format is set afresh.
    let _turn = FORMAT_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    FMT_P.store(format.p as i32, Ordering::Relaxed);
    FMT_EMIN.store(format.emin, Ordering::Relaxed);
    FMT_EMAX.store(format.emax, Ordering::Relaxed);
    let (n, d) = dims;
    let conv = |v: &[f64]| v.iter().map(|&z| fmt(z)).collect::<Vec<Fmt>>();
    let (q, k, v, g) = (conv(&x[0]), conv(&x[1]), conv(&x[2]), conv(&x[3]));
    let p = plan.low_rank_problem((&q, &k, &v), (n, n, d, d), tau, Mask::None, 32, fmt);
    let f = forward(&p, &plan.monomials);
    let gr = backward(&p, &plan.monomials, &f, &g, GradientKind::Substituted);
    let back = |v: Vec<Fmt>| v.into_iter().map(|z| z.0).collect::<Vec<f64>>();
    (back(f.o), back(gr.dq))
}

/// The same algorithm in f64.
fn run_f64(
    x: &[Vec<f64>; 4],
    (n, d): (usize, usize),
    plan: &poly::Plan,
    tau: f64,
) -> (Vec<f64>, Vec<f64>) {
    let p = plan.low_rank_problem(
        (&x[0], &x[1], &x[2]),
        (n, n, d, d),
        tau,
        Mask::None,
        32,
        |z| z,
    );
    let f = forward(&p, &plan.monomials);
    let gr = backward(&p, &plan.monomials, &f, &x[3], GradientKind::Substituted);
    (f.o, gr.dq)
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// Certified max |a - exact| / max |exact| from the reference `r` with radius `rad`
/// (infinite when an entry of `a` is not finite).
fn rel_certified(a: &[f64], r: &[f64], rad: &[f64]) -> f64 {
    let worst = a
        .iter()
        .zip(r)
        .zip(rad)
        .map(|((x, y), e)| {
            if x.is_finite() {
                (x - y).abs() + e
            } else {
                f64::INFINITY
            }
        })
        .fold(0.0, f64::max);
    worst / max_abs(r)
}

/// Runs the sweep.
pub fn sweep(preset: Preset) -> Result<Report> {
    let grid = Grid::preset(preset);
    let d = grid.d;
    let mut records = Vec::new();
    let points = grid.log2_ns.len() * grid.scale_powers.len();
    let mut bar = super::progress::Progress::new("sweep formats", points);
    for &l in &grid.log2_ns {
        let n = 1usize << l;
        for &a in &grid.scale_powers {
            let s = (n as f64).powf(a);
            bar.step(&format!("n = {n}, s = n^{a}"));
            let mut r = SplitMix64::new(9000 + l as u64);
            let mut gen = |s: f64| (0..n * d).map(|_| r.range(-s, s)).collect::<Vec<f64>>();
            let x = [gen(s), gen(s), gen(s), gen(s)];
            let m = |v: &[f64]| Matrix::from_vec(n, d, v.to_vec());
            let (q, k, v, g) = (m(&x[0])?, m(&x[1])?, m(&x[2])?, m(&x[3])?);
            let tau = 1.0 / (d as f64 * s * s);
            let cfg = PolyConfig {
                scale: Some(tau),
                accuracy: Accuracy::Eps(1.0 / n as f64),
                max_cost_ratio: f64::INFINITY,
                ..PolyConfig::default()
            };
            let plan = poly::forward(q.view(), k.view(), v.view(), &cfg)?.plan;
            let acfg = AttentionConfig {
                scale: Some(tau),
                mask: Mask::None,
                softcap: None,
            };
            let reference = exact_reference(q.view(), k.view(), v.view(), Some(g.view()), &acfg)?;
            let rg = reference
                .grads
                .as_ref()
                .ok_or_else(|| Error::InvalidParameter {
                    name: "formats sweep",
                    value: "reference".into(),
                    reason: "the reference returned no gradients".into(),
                })?;
            let (o64, _) = run_f64(&x, (n, d), &plan, tau);
            for arith in &grid.ariths {
                let format = arith.format(n)?;
                let (o, dq) = run_in(format, &x, (n, d), &plan, tau);
                let non_finite = o.iter().chain(&dq).filter(|z| !z.is_finite()).count();
                let rounding_o = o
                    .iter()
                    .zip(&o64)
                    .filter(|(z, _)| z.is_finite())
                    .map(|(z, w)| (z - w).abs())
                    .fold(0.0, f64::max);
                records.push(Record {
                    n,
                    s,
                    arith: arith.name(),
                    format,
                    degree: plan.regime.degree,
                    non_finite,
                    rounding_o,
                    rel_total_o: rel_certified(&o, &reference.o, &reference.bound_o),
                    rel_total_dq: rel_certified(&dq, &rg.dq, &rg.bound_dq),
                });
            }
        }
    }
    bar.finish();
    Ok(Report { grid, records })
}

const HEADERS: [&str; 9] = [
    "n",
    "s",
    "arithmetic",
    "p, emin..emax",
    "degree",
    "non-finite",
    "rounding O (abs)",
    "certified rel. error O",
    "certified rel. error dQ",
];

fn rows(r: &Report) -> Vec<Vec<String>> {
    r.records
        .iter()
        .map(|x| {
            let range = if x.format.emax >= 1000 {
                format!("{}, unbounded", x.format.p)
            } else {
                format!("{}, {}..{}", x.format.p, x.format.emin, x.format.emax)
            };
            vec![
                x.n.to_string(),
                sig3(x.s),
                x.arith.clone(),
                range,
                x.degree.to_string(),
                x.non_finite.to_string(),
                sig3(x.rounding_o),
                sig3(x.rel_total_o),
                sig3(x.rel_total_dq),
            ]
        })
        .collect()
}

/// The terminal summary.
pub fn terminal_summary(r: &Report) -> String {
    format!(
        "polynomial algorithm in narrow and exponent-limited formats\n{}",
        text_table(&HEADERS, &rows(r))
    )
}

/// Writes formats.md, formats.json and formats.svg to `out`.
pub fn write_outputs(r: &Report, out: &Path) -> Result<()> {
    ensure_dir(out)?;
    write_json(&out.join("formats.json"), r)?;
    let md = format!(
        "# The polynomial algorithm in narrow and exponent-limited formats\n\n\
         The generic low-rank algorithm with every operation rounded to the format \
         (exact emulation: each operation in f64, then rounded; subnormals, overflow to \
         infinity), inputs rounded to it; d = {}, degree for eps = 1/n, Q, K, V, dO \
         uniform in [-s, s], tau = 1/(d s^2) (so |tau q.k| <= 1 for every s), no mask, \
         the substituted gradient. *Rounding O* is the largest absolute difference from \
         the same algorithm in f64 over finite entries; the *certified relative errors* \
         are max |y - exact| / max |exact| against the f64 reference with its a priori \
         bound, infinite when an entry came out NaN or infinite. `c log2 n bits` have an \
         unbounded exponent (p = ceil(c log2 n)).\n\n{}\n![formats](formats.svg)\n",
        r.grid.d,
        markdown_table(&HEADERS, &rows(r))
    );
    write_text(&out.join("formats.md"), &md)?;
    // One series per arithmetic at s = 1: the certified relative error of O against n
    // (points that are not finite are left out and counted by the chart's legend).
    let mut series = Vec::new();
    for arith in &r.grid.ariths {
        let name = arith.name();
        let pts = r
            .records
            .iter()
            .filter(|x| x.arith == name && x.s == 1.0)
            .map(|x| (x.n as f64, x.rel_total_o))
            .collect();
        // A series drawn exactly over an earlier one would be hidden: say so.
        let pts: Vec<(f64, f64)> = pts;
        let same = series
            .iter()
            .find(|s: &&Series| s.points == pts)
            .map(|s| s.name.clone());
        series.push(Series {
            name: match same {
                Some(other) => format!("{name}, s = 1 (same values as {other}, drawn over it)"),
                None => format!("{name}, s = 1"),
            },
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
        title: "Certified relative error of O by number format (entries in [-1, 1])".into(),
        x_label: "n (log scale)".into(),
        y_label: "max |O - O_exact| / max |O_exact|, certified (log scale)".into(),
        series,
    }
    .write_svg(&out.join("formats.svg"), 900, 600)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Format::round` against the `half` crate's conversions from f32 (independent
    /// code, one rounding each; its f64 conversions may round through f32 first, which
    /// double-rounds) on random f32 values across the normal, subnormal and overflow
    /// ranges of f16 and bf16.
    #[test]
    fn rounding_matches_the_half_crate() {
        let mut r = SplitMix64::new(5);
        for _ in 0..200_000 {
            let e = r.range(-30.0, 17.0);
            let x = (r.range(-1.0, 1.0) * 2f64.powf(e)) as f32;
            let want = half::f16::from_f32(x).to_f64();
            let got = Format::F16.round(x as f64);
            assert!(
                got == want || (got.is_nan() && want.is_nan()),
                "f16 {x:e}: {got:e} vs {want:e}"
            );
            let y = (r.range(-1.0, 1.0) * 2f64.powf(r.range(-140.0, 130.0))) as f32;
            let want = half::bf16::from_f32(y).to_f64();
            let got = Format::BF16.round(y as f64);
            assert!(got == want, "bf16 {y:e}: {got:e} vs {want:e}");
        }
        // Edges: the largest finite value, the tie just above it, the smallest
        // subnormal and half of it (ties to even: 0); and an f64 just below a tie,
        // which a conversion through f32 would round up (1327.5 - 2.6e-5 quanta).
        let x = 0.040512084152783505;
        assert_eq!(Format::F16.round(x), 1327.0 * 2f64.powi(-15));
        assert_eq!(Format::F16.round(65504.0), 65504.0);
        assert_eq!(Format::F16.round(65520.0), f64::INFINITY);
        assert_eq!(Format::F16.round(2f64.powi(-24)), 2f64.powi(-24));
        assert_eq!(Format::F16.round(2f64.powi(-25)), 0.0);
    }

    #[test]
    fn exponent_fields_follow_the_ieee_layout() {
        assert_eq!(Format::with_exponent_bits(11, 5).unwrap(), Format::F16);
        assert_eq!(Format::with_exponent_bits(8, 8).unwrap(), Format::BF16);
        assert!(Format::with_exponent_bits(26, 5).is_err());
        assert!(Format::with_exponent_bits(8, 1).is_err());
    }
}
