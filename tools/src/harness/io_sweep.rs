//! `polyattn sweep io`: the simulated I/O of attention over grids of `n`, `d` and `M`
//! (docs/math.md §8, IO24).
//!
//! For every grid point and [`Algorithm`], the forward and the backward run through
//! the two-level simulator on seeded inputs; each count is divided by the two orders
//! of IO24's bound, `n^2 d^2 / M` and `n^2 d / sqrt(M)`, and by the bound itself
//! `min{..}` (constant 1). The summaries are
//! - the *bands*: the range of each ratio per algorithm, pass and regime
//!   (`M < d^2`, `M >= d^2`): a constant band is the `Theta` statement;
//! - the *crossover*: the `M` where FlashAttention and the small-cache algorithm move
//!   equally many words (log-linear interpolation between grid points), over `d^2`;
//! - the *floor*: the smallest ratio to the bound and to the compulsory traffic;
//! - the *sparse* check: FlashAttention with block masks against docs/math.md §8's
//!   conjectured `min{Z^2 / M, Z sqrt(Z_QK) / sqrt(M)}` (`Z = n d`).
//!
//! Grids keep `M <= n d / 2`: beyond it the whole problem nearly fits in the cache and
//! every algorithm's count tends to the compulsory `Theta(n d)`, which IO24's
//! formula (without an `n d` term) does not describe.

use super::{ensure_dir, markdown_table, sig3, text_table, write_json, write_text};
// Small: n = 512, d in {32, 64} (the test's grid); full: n in {1024, 2048},
// d in {16, 32, 64, 128} (the README's).
use crate::plot::{LogLogChart, Series, Style};
use polyattn::attention::Mask;
use polyattn::error::Result;
use polyattn::io_model::{bounds, run, Algorithm, BlockMask, FlashBlocks, Pattern};
use polyattn::rng::SplitMix64;
use polyattn::tensor::Matrix;
use rayon::prelude::*;
use serde::Serialize;
use std::path::Path;

pub use super::Preset;

/// The grid of a sweep.
#[derive(Clone, Debug, Serialize)]
pub struct Grid {
    /// Sequence lengths.
    pub ns: Vec<usize>,
    /// Head dimensions.
    pub ds: Vec<usize>,
    /// Half-exponents `h` of `M = 2^(h/2) d^2` (points outside the valid range are
    /// dropped).
    pub m_half_exponents: Vec<i32>,
    /// Sparse check: sequence lengths.
    pub sparse_ns: Vec<usize>,
    /// Sparse check: head dimension.
    pub sparse_d: usize,
    /// Sparse check: `M / d^2` values.
    pub sparse_m_over_d2: Vec<f64>,
    /// Sparse check: mask block side.
    pub sparse_block: usize,
    /// Sparse check: densities of the random block masks.
    pub densities: Vec<f64>,
}

impl Grid {
    /// The grid of a preset.
    pub fn preset(p: Preset) -> Self {
        match p {
            Preset::Small => Self {
                ns: vec![512],
                ds: vec![32, 64],
                m_half_exponents: (-8..=6).collect(),
                sparse_ns: vec![256, 512],
                sparse_d: 16,
                sparse_m_over_d2: vec![0.5, 4.0],
                sparse_block: 16,
                densities: vec![1.0, 0.25, 0.0625],
            },
            Preset::Full => Self {
                ns: vec![1024, 2048],
                ds: vec![16, 32, 64, 128],
                m_half_exponents: (-8..=12).collect(),
                sparse_ns: vec![512, 1024, 2048, 4096],
                sparse_d: 32,
                sparse_m_over_d2: vec![0.5, 4.0],
                sparse_block: 32,
                densities: vec![1.0, 0.5, 0.25, 0.125, 0.0625],
            },
        }
    }

    /// The valid capacities for `(n, d)`: `M = 2^(h/2) d^2` with FlashAttention's backward
    /// able to hold one row of each operand, and `M <= n d / 2`.
    pub fn capacities(&self, n: usize, d: usize) -> Vec<usize> {
        let dims = polyattn::io_model::Dims {
            n_q: n,
            n_k: n,
            d,
            d_v: d,
        };
        self.m_half_exponents
            .iter()
            .map(|&h| ((d * d) as f64 * 2f64.powf(h as f64 / 2.0)).round() as usize)
            .filter(|&m| m <= n * d / 2 && FlashBlocks::backward(m, &dims).is_ok())
            .collect()
    }
}

/// One count: an algorithm's pass at one grid point.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    /// The algorithm.
    pub alg: &'static str,
    /// `"forward"` or `"backward"`.
    pub pass: &'static str,
    /// Sequence length.
    pub n: usize,
    /// Head dimension.
    pub d: usize,
    /// Cache capacity in words.
    pub m: usize,
    /// Words read.
    pub reads: u64,
    /// Words written.
    pub writes: u64,
    /// `reads + writes`.
    pub total: u64,
    /// Most words resident (`<= m`).
    pub peak: usize,
    /// `total / (n^2 d^2 / M)`.
    pub ratio_large: f64,
    /// `total / (n^2 d / sqrt(M))`.
    pub ratio_small: f64,
    /// `total / min{..}`: at least 1 if the count respects the bound with constant 1.
    pub ratio_bound: f64,
    /// `total / compulsory traffic`.
    pub ratio_compulsory: f64,
}

impl Record {
    /// `"small"` for `M < d^2`, `"large"` otherwise.
    pub fn regime(&self) -> &'static str {
        if self.m < self.d * self.d {
            "small"
        } else {
            "large"
        }
    }
}

/// The range of a ratio over the points of one algorithm, pass and regime.
#[derive(Clone, Debug, Serialize)]
pub struct Band {
    /// The algorithm.
    pub alg: &'static str,
    /// The pass.
    pub pass: &'static str,
    /// `"small"` (`M < d^2`) or `"large"`.
    pub regime: &'static str,
    /// Points in the band.
    pub points: usize,
    /// min and max of `total / (n^2 d^2 / M)`.
    pub large: (f64, f64),
    /// min and max of `total / (n^2 d / sqrt(M))`.
    pub small: (f64, f64),
    /// min of `total / min{..}`.
    pub min_ratio_bound: f64,
    /// min of `total / compulsory`.
    pub min_ratio_compulsory: f64,
}

/// Where FlashAttention and the small-cache algorithm cross for one `(n, d, pass)`.
#[derive(Clone, Debug, Serialize)]
pub struct Crossover {
    /// Sequence length.
    pub n: usize,
    /// Head dimension.
    pub d: usize,
    /// The pass.
    pub pass: &'static str,
    /// `M*` (interpolated), if the two counts cross inside the grid.
    pub m_star: Option<f64>,
    /// `M* / d^2`.
    pub m_star_over_d2: Option<f64>,
}

/// One sparse measurement (FlashAttention with a block mask).
#[derive(Clone, Debug, Serialize)]
pub struct SparseRecord {
    /// `"random p"` or `"band w"`.
    pub pattern: String,
    /// Sequence length.
    pub n: usize,
    /// Head dimension.
    pub d: usize,
    /// Cache words.
    pub m: usize,
    /// Visible scores `Z_QK`.
    pub z_qk: u64,
    /// `Z_QK / n^2`.
    pub fill: f64,
    /// Forward transfers.
    pub forward: u64,
    /// Backward transfers.
    pub backward: u64,
    /// The conjectured bound `min{Z^2/M, Z sqrt(Z_QK)/sqrt(M)}`, `Z = n d`.
    pub conjecture: f64,
    /// `forward / conjecture`.
    pub ratio_forward: f64,
    /// `backward / conjecture`.
    pub ratio_backward: f64,
}

/// Everything a sweep produces.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The preset.
    pub preset: Preset,
    /// The grid.
    pub grid: Grid,
    /// Every count.
    pub records: Vec<Record>,
    /// The ratio bands.
    pub bands: Vec<Band>,
    /// The crossovers.
    pub crossovers: Vec<Crossover>,
    /// The sparse measurements.
    pub sparse: Vec<SparseRecord>,
    /// One line on whether the sparse measurements contradict the conjecture.
    pub sparse_verdict: String,
}

/// Seeded inputs `Q, K, V, dO` (`N(0, 1)` entries), `n x d` each.
fn inputs(n: usize, d: usize, seed: u64) -> Result<[Matrix<f64>; 4]> {
    let mut r = SplitMix64::new(seed);
    let mut m = || Matrix::from_vec(n, d, r.normal_vec(n * d, 1.0));
    Ok([m()?, m()?, m()?, m()?])
}

/// The dense grid: every `(n, d, M, algorithm)`, both passes.
pub fn dense_records(grid: &Grid) -> Result<Vec<Record>> {
    let mut jobs = Vec::new();
    for &n in &grid.ns {
        for &d in &grid.ds {
            for m in grid.capacities(n, d) {
                for alg in Algorithm::ALL {
                    jobs.push((n, d, m, alg));
                }
            }
        }
    }
    let per_job: Vec<Result<[Record; 2]>> = jobs
        .par_iter()
        .map(|&(n, d, m, alg)| {
            let [q, k, v, d_o] = inputs(n, d, (n * 1000 + d) as u64)?;
            let tau = 1.0 / (d as f64).sqrt();
            let pat = Pattern::Prefix(Mask::None);
            let r = run(alg, q.view(), k.view(), v.view(), d_o.view(), tau, &pat, m)?;
            let rec = |pass, c: polyattn::io_model::IoCounts| {
                let t = c.total() as f64;
                Record {
                    alg: alg.name(),
                    pass,
                    n,
                    d,
                    m,
                    reads: c.reads,
                    writes: c.writes,
                    total: c.total(),
                    peak: c.peak,
                    ratio_large: t / bounds::large_cache_scale(n, d, m),
                    ratio_small: t / bounds::small_cache_scale(n, d, m),
                    ratio_bound: t / bounds::dense_lower_bound(n, d, m),
                    ratio_compulsory: t / bounds::compulsory(n, d, pass == "backward"),
                }
            };
            Ok([rec("forward", r.fwd), rec("backward", r.bwd)])
        })
        .collect();
    let mut out = Vec::new();
    for r in per_job {
        out.extend(r?);
    }
    Ok(out)
}

fn min_max(xs: impl Iterator<Item = f64>) -> (f64, f64) {
    xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    })
}

/// The bands of every algorithm, pass and regime present in `records`.
pub fn bands(records: &[Record]) -> Vec<Band> {
    let mut out = Vec::new();
    for alg in Algorithm::ALL.map(Algorithm::name) {
        for pass in ["forward", "backward"] {
            for regime in ["small", "large"] {
                let pts: Vec<&Record> = records
                    .iter()
                    .filter(|r| r.alg == alg && r.pass == pass && r.regime() == regime)
                    .collect();
                if pts.is_empty() {
                    continue;
                }
                out.push(Band {
                    alg,
                    pass,
                    regime,
                    points: pts.len(),
                    large: min_max(pts.iter().map(|r| r.ratio_large)),
                    small: min_max(pts.iter().map(|r| r.ratio_small)),
                    min_ratio_bound: min_max(pts.iter().map(|r| r.ratio_bound)).0,
                    min_ratio_compulsory: min_max(pts.iter().map(|r| r.ratio_compulsory)).0,
                });
            }
        }
    }
    out
}

/// The count of `alg`'s `pass` at `(n, d)`, as `(M, total)` sorted by `M`.
pub fn curve(
    records: &[Record],
    alg: Algorithm,
    pass: &str,
    n: usize,
    d: usize,
) -> Vec<(usize, f64)> {
    let mut c: Vec<(usize, f64)> = records
        .iter()
        .filter(|r| r.alg == alg.name() && r.pass == pass && r.n == n && r.d == d)
        .map(|r| (r.m, r.total as f64))
        .collect();
    c.sort_by_key(|p| p.0);
    c
}

/// The first `M` (log-linear interpolation) where FlashAttention's count falls to the
/// small-cache algorithm's, for every `(n, d, pass)` in `records`.
pub fn crossovers(records: &[Record]) -> Vec<Crossover> {
    let mut keys: Vec<(usize, usize)> = records.iter().map(|r| (r.n, r.d)).collect();
    keys.sort();
    keys.dedup();
    let mut out = Vec::new();
    for (n, d) in keys {
        for pass in ["forward", "backward"] {
            let f = curve(records, Algorithm::Flash, pass, n, d);
            let s = curve(records, Algorithm::SmallCache, pass, n, d);
            // g(M) = ln(flash / small): positive while the small-cache algorithm wins.
            let g: Vec<(f64, f64)> = f
                .iter()
                .zip(&s)
                .map(|(a, b)| ((a.0 as f64).ln(), (a.1 / b.1).ln()))
                .collect();
            let m_star = g
                .windows(2)
                .find(|w| w[0].1 > 0.0 && w[1].1 <= 0.0)
                .map(|w| {
                    let t = w[0].1 / (w[0].1 - w[1].1);
                    (w[0].0 + t * (w[1].0 - w[0].0)).exp()
                });
            out.push(Crossover {
                n,
                d,
                pass,
                m_star,
                m_star_over_d2: m_star.map(|m| m / (d * d) as f64),
            });
        }
    }
    out
}

/// FlashAttention on block-sparse masks: random masks of each density and the band
/// masks of half-width 0 and 1 (local attention), for each `n` and `M`.
pub fn sparse_records(grid: &Grid) -> Result<Vec<SparseRecord>> {
    let d = grid.sparse_d;
    let b = grid.sparse_block;
    let mut jobs = Vec::new();
    for &n in &grid.sparse_ns {
        for &f in &grid.sparse_m_over_d2 {
            let m = ((d * d) as f64 * f).round() as usize;
            for &p in &grid.densities {
                jobs.push((
                    n,
                    m,
                    format!("random {p}"),
                    BlockMask::random(b, n, n, p, 11)?,
                ));
            }
            for w in [0, 1] {
                jobs.push((n, m, format!("band {w}"), BlockMask::band(b, n, n, w)?));
            }
        }
    }
    jobs.into_par_iter()
        .map(|(n, m, name, mask)| {
            let [q, k, v, d_o] = inputs(n, d, 7)?;
            let pat = Pattern::Blocks(mask);
            let tau = 1.0 / (d as f64).sqrt();
            let r = run(
                Algorithm::Flash,
                q.view(),
                k.view(),
                v.view(),
                d_o.view(),
                tau,
                &pat,
                m,
            )?;
            let z_qk = pat.nnz(n, n);
            let conj = bounds::sparse_conjecture((n * d) as f64, z_qk as f64, m);
            Ok(SparseRecord {
                pattern: name,
                n,
                d,
                m,
                z_qk,
                fill: z_qk as f64 / (n * n) as f64,
                forward: r.fwd.total(),
                backward: r.bwd.total(),
                conjecture: conj,
                ratio_forward: r.fwd.total() as f64 / conj,
                ratio_backward: r.bwd.total() as f64 / conj,
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .collect()
}

/// States whether the sparse counts fall below the conjectured bound (constant 1),
/// and how the band-0 (block-diagonal) ratio moves as `n` grows: a ratio that keeps
/// falling with `n` cannot be rescued by any constant.
pub fn sparse_verdict(sparse: &[SparseRecord]) -> String {
    let below: Vec<&SparseRecord> = sparse.iter().filter(|r| r.ratio_forward < 1.0).collect();
    let mut s = if below.is_empty() {
        "no sparse count fell below the conjectured bound (constant 1)".to_string()
    } else {
        format!(
            "{} of {} sparse forward counts fall below the conjectured bound (constant 1), lowest ratio {} ({} at n = {}, M = {})",
            below.len(),
            sparse.len(),
            sig3(below.iter().map(|r| r.ratio_forward).fold(f64::INFINITY, f64::min)),
            below.iter().min_by(|a, b| a.ratio_forward.total_cmp(&b.ratio_forward)).map_or("", |r| &r.pattern),
            below.iter().min_by(|a, b| a.ratio_forward.total_cmp(&b.ratio_forward)).map_or(0, |r| r.n),
            below.iter().min_by(|a, b| a.ratio_forward.total_cmp(&b.ratio_forward)).map_or(0, |r| r.m),
        )
    };
    let mut ms: Vec<usize> = sparse.iter().map(|r| r.m).collect();
    ms.sort();
    ms.dedup();
    for m in ms {
        let mut band: Vec<&SparseRecord> = sparse
            .iter()
            .filter(|r| r.pattern == "band 0" && r.m == m)
            .collect();
        band.sort_by_key(|r| r.n);
        if let (Some(a), Some(b)) = (band.first(), band.last()) {
            if a.n < b.n {
                let slope =
                    (b.ratio_forward / a.ratio_forward).ln() / (b.n as f64 / a.n as f64).ln();
                s.push_str(&format!(
                    "; block-diagonal at M = {m}: ratio {} at n = {} -> {} at n = {} (~ n^{:.2})",
                    sig3(a.ratio_forward),
                    a.n,
                    sig3(b.ratio_forward),
                    b.n,
                    slope
                ));
            }
        }
    }
    s
}

/// Runs the whole sweep of a preset.
pub fn sweep(preset: Preset) -> Result<Report> {
    let grid = Grid::preset(preset);
    let records = dense_records(&grid)?;
    let sparse = sparse_records(&grid)?;
    Ok(Report {
        preset,
        bands: bands(&records),
        crossovers: crossovers(&records),
        sparse_verdict: sparse_verdict(&sparse),
        grid,
        records,
        sparse,
    })
}

fn range(r: (f64, f64)) -> String {
    format!("{} .. {}", sig3(r.0), sig3(r.1))
}

/// The bands as table rows.
fn band_rows(report: &Report) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let h = vec![
        "algorithm",
        "pass",
        "regime",
        "points",
        "I/O / (n^2 d^2/M)",
        "I/O / (n^2 d/sqrt M)",
        "min I/O / bound",
        "min I/O / compulsory",
    ];
    let rows = report
        .bands
        .iter()
        .map(|b| {
            vec![
                b.alg.to_string(),
                b.pass.to_string(),
                if b.regime == "small" {
                    "M < d^2"
                } else {
                    "M >= d^2"
                }
                .to_string(),
                b.points.to_string(),
                range(b.large),
                range(b.small),
                sig3(b.min_ratio_bound),
                sig3(b.min_ratio_compulsory),
            ]
        })
        .collect();
    (h, rows)
}

fn crossover_rows(report: &Report) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let h = vec![
        "n",
        "d",
        "pass",
        "d^2",
        "M* (flash = small-cache)",
        "M* / d^2",
    ];
    let rows = report
        .crossovers
        .iter()
        .map(|c| {
            vec![
                c.n.to_string(),
                c.d.to_string(),
                c.pass.to_string(),
                (c.d * c.d).to_string(),
                c.m_star.map_or("none in grid".into(), sig3),
                c.m_star_over_d2.map_or("-".into(), sig3),
            ]
        })
        .collect();
    (h, rows)
}

fn sparse_rows(report: &Report) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let h = vec![
        "mask",
        "n",
        "d",
        "M",
        "Z_QK / n^2",
        "forward",
        "backward",
        "conjecture",
        "fwd / conj",
        "bwd / conj",
    ];
    let rows = report
        .sparse
        .iter()
        .map(|r| {
            vec![
                r.pattern.clone(),
                r.n.to_string(),
                r.d.to_string(),
                r.m.to_string(),
                sig3(r.fill),
                r.forward.to_string(),
                r.backward.to_string(),
                sig3(r.conjecture),
                sig3(r.ratio_forward),
                sig3(r.ratio_backward),
            ]
        })
        .collect();
    (h, rows)
}

/// The per-point table of one `(n, d)`: for each `M`, each algorithm's
/// forward and backward count over the bound.
fn point_rows(report: &Report, n: usize, d: usize) -> (Vec<String>, Vec<Vec<String>>) {
    let mut h = vec!["M".to_string(), "M / d^2".to_string()];
    for pass in ["fwd", "bwd"] {
        for a in Algorithm::ALL {
            h.push(format!("{} {pass}", a.name()));
        }
    }
    let rows = report
        .grid
        .capacities(n, d)
        .into_iter()
        .map(|m| {
            let mut row = vec![m.to_string(), sig3(m as f64 / (d * d) as f64)];
            for pass in ["forward", "backward"] {
                for a in Algorithm::ALL {
                    let r = report.records.iter().find(|r| {
                        r.alg == a.name() && r.pass == pass && r.n == n && r.d == d && r.m == m
                    });
                    row.push(r.map_or("-".into(), |r| sig3(r.ratio_bound)));
                }
            }
            row
        })
        .collect();
    (h, rows)
}

/// The summary printed on the terminal.
pub fn terminal_summary(report: &Report) -> String {
    let (h, rows) = band_rows(report);
    let mut s = format!("I/O sweep ({:?} preset): ratio bands\n", report.preset);
    s += &text_table(&h, &rows);
    let (h, rows) = crossover_rows(report);
    s += "\nCrossover of FlashAttention and the small-cache algorithm\n";
    s += &text_table(&h, &rows);
    let (h, rows) = sparse_rows(report);
    s += "\nBlock-sparse FlashAttention against the conjectured sparse bound (Z = n d)\n";
    s += &text_table(&h, &rows);
    s += &format!("\n{}\n", report.sparse_verdict);
    s
}

/// The Markdown report (`io.md`), with links to the plots written beside it.
pub fn markdown(report: &Report) -> String {
    let mut s = format!(
        "# Simulated I/O of attention ({:?} preset)\n\n\
         Two-level model of docs/math.md §8 (IO24): cache of M words, hard capacity, words read + \
         written counted. `bound` = min{{n^2 d^2/M, n^2 d/sqrt(M)}} with constant 1. \
         Regenerate with `polyattn sweep io --preset {}`.\n\n## Ratio bands\n\n",
        report.preset,
        format!("{:?}", report.preset).to_lowercase()
    );
    let (h, rows) = band_rows(report);
    s += &markdown_table(&h, &rows);
    s += "\n## Crossover\n\n";
    let (h, rows) = crossover_rows(report);
    s += &markdown_table(&h, &rows);
    s += "\n## Counts over the bound, point by point\n\n";
    for &n in &report.grid.ns {
        for &d in &report.grid.ds {
            s += &format!("### n = {n}, d = {d} (d^2 = {})\n\n", d * d);
            let (h, rows) = point_rows(report, n, d);
            let h: Vec<&str> = h.iter().map(String::as_str).collect();
            s += &markdown_table(&h, &rows);
            s.push('\n');
        }
    }
    s += "## Block-sparse attention against the conjectured bound\n\n";
    let (h, rows) = sparse_rows(report);
    s += &markdown_table(&h, &rows);
    s += &format!("\nVerdict: {}.\n\n## Plots\n\n", report.sparse_verdict);
    for (f, what) in plot_files() {
        s += &format!("![{what}]({f})\n\n");
    }
    s
}

/// The plot files a sweep writes, with their captions.
pub fn plot_files() -> [(&'static str, &'static str); 7] {
    [
        ("io_large_forward.svg", "forward I/O / (n^2 d^2 / M)"),
        ("io_small_forward.svg", "forward I/O / (n^2 d / sqrt M)"),
        ("io_large_backward.svg", "backward I/O / (n^2 d^2 / M)"),
        ("io_small_backward.svg", "backward I/O / (n^2 d / sqrt M)"),
        ("io_counts_forward.svg", "forward I/O against the bound"),
        ("io_counts_backward.svg", "backward I/O against the bound"),
        (
            "io_sparse.svg",
            "block-sparse forward I/O / conjectured bound",
        ),
    ]
}

/// Writes `io.md`, `io.json` and the SVG plots into `dir`.
pub fn write_outputs(report: &Report, dir: &Path) -> Result<()> {
    ensure_dir(dir)?;
    write_json(&dir.join("io.json"), report)?;
    write_text(&dir.join("io.md"), &markdown(report))?;
    let n = *report.grid.ns.iter().max().unwrap_or(&0);
    for pass in ["forward", "backward"] {
        for (which, label) in [
            ("large", "I/O / (n^2 d^2 / M)"),
            ("small", "I/O / (n^2 d / sqrt M)"),
        ] {
            let mut series = Vec::new();
            for alg in Algorithm::ALL {
                for &d in &report.grid.ds {
                    let pts = report
                        .records
                        .iter()
                        .filter(|r| r.alg == alg.name() && r.pass == pass && r.n == n && r.d == d)
                        .map(|r| {
                            let y = if which == "large" {
                                r.ratio_large
                            } else {
                                r.ratio_small
                            };
                            (r.m as f64 / (d * d) as f64, y)
                        })
                        .collect();
                    series.push(Series {
                        name: format!("{} d={d}", alg.name()),
                        points: pts,
                        style: Style::Line,
                    });
                }
            }
            let chart = LogLogChart {
                title: format!("{pass}, n = {n}: {label}"),
                x_label: "M / d^2".into(),
                y_label: label.into(),
                series,
            };
            chart.write_svg(&dir.join(format!("io_{which}_{pass}.svg")), 900, 600)?;
        }
        let d = *report.grid.ds.iter().max().unwrap_or(&0);
        let mut series: Vec<Series> = Algorithm::ALL
            .iter()
            .map(|&a| Series {
                name: a.name().into(),
                points: curve(&report.records, a, pass, n, d)
                    .into_iter()
                    .map(|(m, t)| (m as f64, t))
                    .collect(),
                style: Style::Line,
            })
            .collect();
        let ms = report.grid.capacities(n, d);
        series.push(Series {
            name: "bound min{n^2d^2/M, n^2d/sqrt M}".into(),
            points: ms
                .iter()
                .map(|&m| (m as f64, bounds::dense_lower_bound(n, d, m)))
                .collect(),
            style: Style::Reference,
        });
        let chart = LogLogChart {
            title: format!("{pass} words moved, n = {n}, d = {d} (d^2 = {})", d * d),
            x_label: "M (words)".into(),
            y_label: "words read + written".into(),
            series,
        };
        chart.write_svg(&dir.join(format!("io_counts_{pass}.svg")), 900, 600)?;
    }
    let mut keys: Vec<(String, usize)> = report
        .sparse
        .iter()
        .map(|r| (r.pattern.clone(), r.m))
        .collect();
    keys.sort();
    keys.dedup();
    let series = keys
        .into_iter()
        .map(|(p, m)| Series {
            points: report
                .sparse
                .iter()
                .filter(|r| r.pattern == p && r.m == m)
                .map(|r| (r.n as f64, r.ratio_forward))
                .collect(),
            name: format!("{p}, M = {m}"),
            style: Style::Line,
        })
        .collect();
    let chart = LogLogChart {
        title: format!(
            "block-sparse FlashAttention forward / conjectured bound (d = {})",
            report.grid.sparse_d
        ),
        x_label: "n".into(),
        y_label: "I/O / min{Z^2/M, Z sqrt(Z_QK)/sqrt M}".into(),
        series,
    };
    chart.write_svg(&dir.join("io_sparse.svg"), 900, 600)
}
