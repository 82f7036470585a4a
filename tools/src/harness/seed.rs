//! `polyattn sweep seed`: the experiment of ML24's rebuttal (their table: d = 4..12,
//! n = 10 * 2^d, random Q, K, V, exp(Q K^T / d); relative error 4.7% .. 0.77% in their
//! metric, speedup 1.4x .. 79x against their own exact attention), redone honestly:
//!
//! - Q, K, V, dO with N(0, 1) entries (f32, seeded), scores tau Q K^T with tau = 1/d as
//!   in their experiment (not 1/sqrt(d)), no mask, one head;
//! - error in the standard metric `||approx - exact||_F / ||exact||_F` against the
//!   exact engine in f64 (their `||x - y|| / ||x + y||` is about half of it: it is
//!   never used here), for O (forward) and for dQ, dK, dV together (forward+backward);
//! - speedup against our tuned exact engine in f32 on the same inputs, forward and
//!   forward+backward (median of 3 runs, 1 for n >= 10240), both on every thread;
//! - the polynomial: Taylor at 0 (the scores are concentrated near 0: their standard
//!   deviation is 1/sqrt(d)), the smallest degree whose O error is below their reported
//!   number (ours in the standard metric, theirs in their halved one: the comparison is
//!   tilted against us). The rigorous radius R = tau max|q| max|k| is 3.4..5.4 here,
//!   where no low degree certifies anything (eps_P >= 1): these runs use
//!   [`Accuracy::DegreeUncertified`], so their errors are measured, not certified, as
//!   in the rebuttal. The certified engine refuses these inputs at eps = their error;
//!   the report says so per row.

use super::{ensure_dir, markdown_table, sig3, text_table, write_json, write_text, Preset};
use polyattn::attention::poly::{self, Accuracy, GradientKind, PolyConfig, PolyKind};
use polyattn::attention::{exact, AttentionConfig, Mask};
use polyattn::error::Result;
use polyattn::rng::SplitMix64;
use polyattn::tensor::Matrix;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// Their table (ML24 rebuttal): d, relative error in their metric (%), speedup.
pub const THEIRS: [(usize, f64, f64); 9] = [
    (4, 4.673, 1.423),
    (5, 2.505, 1.730),
    (6, 2.846, 2.576),
    (7, 1.838, 3.897),
    (8, 2.005, 9.426),
    (9, 1.620, 26.425),
    (10, 1.286, 26.713),
    (11, 1.558, 40.327),
    (12, 0.773, 78.980),
];

/// Highest Taylor degree tried.
const MAX_DEGREE: usize = 8;

/// One row (one d).
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Head dimension.
    pub d: usize,
    /// n = 10 * 2^d.
    pub n: usize,
    /// Their relative error, their metric, in percent.
    pub their_error_pct: f64,
    /// Their speedup.
    pub their_speedup: f64,
    /// The rigorous radius R = tau max||q|| max||k||.
    pub radius: f64,
    /// The largest |S_ij| actually present (from the exact f64 scores' extremes).
    pub max_score: f64,
    /// What the certified engine says at eps = their error (absolute, on O): the plan
    /// or the refusal.
    pub certified: String,
    /// Taylor degree used.
    pub degree: usize,
    /// Its rank C(d + g, g).
    pub rank: usize,
    /// ||O~ - O||_F / ||O||_F (percent).
    pub error_o_pct: f64,
    /// ||(dQ~, dK~, dV~) - (dQ, dK, dV)||_F / ||(dQ, dK, dV)||_F (percent).
    pub error_grad_pct: f64,
    /// Exact engine (f32) forward, ms.
    pub exact_fwd_ms: f64,
    /// Polynomial engine forward, ms.
    pub poly_fwd_ms: f64,
    /// Exact forward+backward, ms.
    pub exact_fb_ms: f64,
    /// Polynomial forward+backward, ms.
    pub poly_fb_ms: f64,
}

impl Row {
    /// Forward speedup.
    pub fn speedup_fwd(&self) -> f64 {
        self.exact_fwd_ms / self.poly_fwd_ms
    }
    /// Forward+backward speedup.
    pub fn speedup_fb(&self) -> f64 {
        self.exact_fb_ms / self.poly_fb_ms
    }
    /// Lower error than theirs and a higher forward speedup.
    pub fn beats_theirs(&self) -> bool {
        self.error_o_pct < self.their_error_pct && self.speedup_fwd() > self.their_speedup
    }
}

/// The sweep's results.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// One row per d.
    pub rows: Vec<Row>,
    /// Threads the engines used.
    pub threads: usize,
}

fn rel_fro(approx: &[&[f32]], exact: &[&[f64]]) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for (a, e) in approx.iter().zip(exact) {
        for (x, y) in a.iter().zip(e.iter()) {
            num += (*x as f64 - y) * (*x as f64 - y);
            den += y * y;
        }
    }
    (num / den).sqrt()
}

fn median_ms(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps {
        let s = Instant::now();
        f()?;
        t.push(1e3 * s.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

fn row(d: usize, their_error_pct: f64, their_speedup: f64, seed: u64) -> Result<Row> {
    let n = 10 << d;
    let mut r = SplitMix64::new(seed + d as u64);
    let mut mat = || Matrix::from_vec(n, d, r.normal_vec(n * d, 1.0));
    let (q64, k64, v64, do64) = (mat()?, mat()?, mat()?, mat()?);
    let f32m =
        |m: &Matrix<f64>| Matrix::from_vec(n, d, m.as_slice().iter().map(|&x| x as f32).collect());
    let (q, k, v, d_o) = (f32m(&q64)?, f32m(&k64)?, f32m(&v64)?, f32m(&do64)?);
    // The reference sees the same (f32-representable) inputs.
    let up =
        |m: &Matrix<f32>| Matrix::from_vec(n, d, m.as_slice().iter().map(|&x| x as f64).collect());
    let (q64, k64, v64, do64) = (up(&q)?, up(&k)?, up(&v)?, up(&d_o)?);
    let tau = 1.0 / d as f64;
    let acfg = AttentionConfig {
        scale: Some(tau),
        mask: Mask::None,
        softcap: None,
    };
    let ef = exact::forward(q64.view(), k64.view(), v64.view(), &acfg)?;
    let eg = exact::backward(q64.view(), k64.view(), v64.view(), &ef, do64.view(), &acfg)?;
    // The largest |S_ij| on 256 evenly spread rows (all keys): what the Taylor
    // polynomial actually meets, against the rigorous radius R it would need to cover.
    let max_score = (0..n)
        .step_by((n / 256).max(1))
        .map(|i| {
            let qi = q64.row(i);
            (0..n)
                .map(|j| (tau * qi.iter().zip(k64.row(j)).map(|(a, b)| a * b).sum::<f64>()).abs())
                .fold(0.0, f64::max)
        })
        .fold(0.0, f64::max);
    let reps = if n >= 10240 { 1 } else { 3 };
    let acfg32 = acfg;
    let exact_fwd_ms = median_ms(reps, || {
        exact::forward(q.view(), k.view(), v.view(), &acfg32).map(|_| ())
    })?;
    let exact_fb_ms = median_ms(reps, || {
        let f = exact::forward(q.view(), k.view(), v.view(), &acfg32)?;
        exact::backward(q.view(), k.view(), v.view(), &f, d_o.view(), &acfg32).map(|_| ())
    })?;
    let eps_abs = their_error_pct / 100.0;
    let certified = match poly::forward(
        q.view(),
        k.view(),
        v.view(),
        &PolyConfig {
            scale: Some(tau),
            accuracy: Accuracy::Eps(eps_abs),
            max_cost_ratio: f64::INFINITY,
            ..PolyConfig::default()
        },
    ) {
        Ok(f) => format!(
            "degree {}, rank {} certifies max|O~-O| <= {}",
            f.plan.regime.degree,
            f.plan.regime.rank,
            sig3(f.bound.max_total())
        ),
        Err(e) => format!("refused: {e}").chars().take(120).collect(),
    };
    let mut chosen = None;
    for g in 1..=MAX_DEGREE {
        let cfg = PolyConfig {
            scale: Some(tau),
            accuracy: Accuracy::DegreeUncertified(g),
            kind: PolyKind::Taylor,
            max_cost_ratio: f64::INFINITY,
            ..PolyConfig::default()
        };
        let f = match poly::forward(q.view(), k.view(), v.view(), &cfg) {
            Ok(f) => f,
            Err(_) => break, // rank limit
        };
        let err_o = 100.0 * rel_fro(&[f.o.as_slice()], &[ef.o.as_slice()]);
        if err_o < their_error_pct {
            chosen = Some((g, cfg, f, err_o));
            break;
        }
    }
    let Some((degree, cfg, f, error_o_pct)) = chosen else {
        return Err(polyattn::error::Error::InvalidParameter {
            name: "degree",
            value: format!("1..={MAX_DEGREE}"),
            reason: format!("no Taylor degree reaches {their_error_pct}% at d = {d}"),
        });
    };
    let g = poly::backward(
        q.view(),
        k.view(),
        v.view(),
        &f,
        d_o.view(),
        GradientKind::Substituted,
        &cfg,
    )?;
    let error_grad_pct = 100.0
        * rel_fro(
            &[g.dq.as_slice(), g.dk.as_slice(), g.dv.as_slice()],
            &[eg.dq.as_slice(), eg.dk.as_slice(), eg.dv.as_slice()],
        );
    let poly_fwd_ms = median_ms(reps.max(3), || {
        poly::forward(q.view(), k.view(), v.view(), &cfg).map(|_| ())
    })?;
    let poly_fb_ms = median_ms(reps.max(3), || {
        let f = poly::forward(q.view(), k.view(), v.view(), &cfg)?;
        poly::backward(
            q.view(),
            k.view(),
            v.view(),
            &f,
            d_o.view(),
            GradientKind::Substituted,
            &cfg,
        )
        .map(|_| ())
    })?;
    Ok(Row {
        d,
        n,
        their_error_pct,
        their_speedup,
        radius: f.plan.regime.radius,
        max_score,
        certified,
        degree,
        rank: f.plan.regime.rank,
        error_o_pct,
        error_grad_pct,
        exact_fwd_ms,
        poly_fwd_ms,
        exact_fb_ms,
        poly_fb_ms,
    })
}

/// Runs the sweep: d = 4..6 (small) or 4..12 (full).
pub fn sweep(preset: Preset) -> Result<Report> {
    let last = match preset {
        Preset::Small => 6,
        Preset::Full => 12,
    };
    let theirs: Vec<_> = THEIRS.iter().filter(|(d, _, _)| *d <= last).collect();
    let mut bar = super::progress::Progress::new("sweep seed", theirs.len());
    let rows = theirs
        .into_iter()
        .map(|&(d, e, s)| {
            bar.step(&format!("d = {d}, n = {}", 10usize << d));
            row(d, e, s, 0x5eed)
        })
        .collect::<Result<Vec<_>>>()?;
    bar.finish();
    Ok(Report {
        rows,
        threads: rayon::current_num_threads(),
    })
}

const HEADERS: [&str; 13] = [
    "d",
    "n",
    "their error % (their metric)",
    "their speedup",
    "R (rigorous)",
    "max abs(S), sampled rows",
    "Taylor degree / rank",
    "our O error % (standard metric)",
    "our grad error %",
    "fwd speedup",
    "fwd+bwd speedup",
    "exact fwd / fwd+bwd ms",
    "beats theirs",
];

fn rows(r: &Report) -> Vec<Vec<String>> {
    r.rows
        .iter()
        .map(|x| {
            vec![
                x.d.to_string(),
                x.n.to_string(),
                format!("{:.3}", x.their_error_pct),
                format!("{:.1}x", x.their_speedup),
                format!("{:.2}", x.radius),
                format!("{:.2}", x.max_score),
                format!("{} / {}", x.degree, x.rank),
                format!("{:.3}", x.error_o_pct),
                format!("{:.3}", x.error_grad_pct),
                format!("{:.1}x", x.speedup_fwd()),
                format!("{:.1}x", x.speedup_fb()),
                format!("{} / {}", sig3(x.exact_fwd_ms), sig3(x.exact_fb_ms)),
                if x.beats_theirs() { "yes" } else { "no" }.into(),
            ]
        })
        .collect()
}

/// The terminal summary.
pub fn terminal_summary(r: &Report) -> String {
    let mut s = format!(
        "the rebuttal's experiment redone ({} threads; errors against the exact engine in f64)\n",
        r.threads
    );
    s.push_str(&text_table(&HEADERS, &rows(r)));
    for x in &r.rows {
        s.push_str(&format!(
            "d = {}: certified engine at eps = their error: {}\n",
            x.d, x.certified
        ));
    }
    s
}

/// Writes seed.md and seed.json to `out`.
pub fn write_outputs(r: &Report, out: &Path) -> Result<()> {
    ensure_dir(out)?;
    write_json(&out.join("seed.json"), r)?;
    let mut md = format!(
        "# The rebuttal's experiment, redone\n\nQ, K, V, dO ~ N(0, 1) in f32, scores Q K^T / d, no mask, one head, n = 10 * 2^d; errors ||approx - exact||_F / ||exact||_F against the exact engine in f64; speedups against our exact engine in f32 on the same inputs ({} threads). Taylor polynomial at 0, the smallest degree whose O error is below the authors' number; these runs are uncertified (`Accuracy::DegreeUncertified`): the rigorous radius R makes every low degree's eps_P >= 1.\n\n",
        r.threads
    );
    md.push_str(&markdown_table(&HEADERS, &rows(r)));
    md.push_str("\nWhat the certified engine says at eps = their error (absolute bound on max |O~ - O|):\n\n");
    for x in &r.rows {
        md.push_str(&format!("- d = {}: {}\n", x.d, x.certified));
    }
    write_text(&out.join("seed.md"), &md)
}
