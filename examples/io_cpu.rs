//! Does the two-level model (docs/math.md §8, IO24) predict a real CPU cache?
//!
//! Runs one attention forward in f32 (single thread) with tile shapes chosen from
//! the model for a cache of `M` words, so that a cache simulator (cachegrind) or a
//! timer can compare them:
//!
//! ```text
//! io_cpu engine N D              the exact engine (64 x 64 tiles), one thread
//! io_cpu flash  N D B_R B_C      FlashAttention tiling, query blocks of B_R rows,
//!                                key blocks of B_C rows (online softmax)
//! io_cpu small  N D T            the small-cache algorithm: S = tau Q K^T and
//!                                O = P V as blocked products with T x T x T tiles,
//!                                S (n x n) materialised in memory
//! io_cpu model  N D M            the simulator's words moved (f64 words) for
//!                                FlashAttention and the small-cache algorithm
//! io_cpu time   N D REPS SPEC..  wall time (median of REPS) of each SPEC, e.g.
//!                                flash:24:24 small:64 engine
//! ```
//!
//! Every variant's output is checked against the exact engine (f32 results of the same
//! sums in other orders: the difference is printed, and must stay below 1e-4), unless
//! `IO_CPU_CHECK=0` (under a cache simulator, so that only the variant is measured).

use polyattn::attention::exact::{self, tile};
use polyattn::attention::{AttentionConfig, Mask};
use polyattn::rng::SplitMix64;
use polyattn::tensor::Matrix;
use std::time::Instant;

struct Problem {
    n: usize,
    d: usize,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

fn problem(n: usize, d: usize) -> Problem {
    let mut r = SplitMix64::new(42);
    let mut m = || -> Vec<f32> {
        r.normal_vec(n * d, 1.0)
            .into_iter()
            .map(|x| x as f32)
            .collect()
    };
    Problem {
        n,
        d,
        q: m(),
        k: m(),
        v: m(),
    }
}

/// FlashAttention-2 order: query blocks outer, key blocks inner, online softmax.
fn flash(p: &Problem, b_r: usize, b_c: usize) -> Vec<f32> {
    let (n, d) = (p.n, p.d);
    let tau = 1.0 / (d as f32).sqrt();
    let mut out = vec![0f32; n * d];
    let mut s = vec![0f32; b_r * b_c];
    for i0 in (0..n).step_by(b_r) {
        let rows = b_r.min(n - i0);
        let mut m = vec![f32::NEG_INFINITY; rows];
        let mut l = vec![0f32; rows];
        let acc = &mut out[i0 * d..(i0 + rows) * d];
        for j0 in (0..n).step_by(b_c) {
            let cols = b_c.min(n - j0);
            let s = &mut s[..rows * cols];
            tile::abt(
                &p.q[i0 * d..(i0 + rows) * d],
                &p.k[j0 * d..(j0 + cols) * d],
                d,
                tau,
                s,
            );
            for (r, row) in s.chunks_exact_mut(cols).enumerate() {
                let m_new = row.iter().fold(m[r], |a, &x| a.max(x));
                let alpha = (m[r] - m_new).exp();
                let mut sum = 0.0;
                for x in row.iter_mut() {
                    *x = (*x - m_new).exp();
                    sum += *x;
                }
                l[r] = alpha * l[r] + sum;
                tile::scale(alpha, &mut acc[r * d..(r + 1) * d]);
                m[r] = m_new;
            }
            tile::ab_acc(s, &p.v[j0 * d..(j0 + cols) * d], d, acc);
        }
        for r in 0..rows {
            tile::scale(1.0 / l[r], &mut acc[r * d..(r + 1) * d]);
        }
    }
    out
}

/// The small-cache algorithm: blocked products with `t x t x t` tiles, `S` and `P`
/// in memory (one n x n array, softmax in place).
fn small(p: &Problem, t: usize) -> Vec<f32> {
    let (n, d) = (p.n, p.d);
    let tau = 1.0 / (d as f32).sqrt();
    let mut s = vec![0f32; n * n];
    for i0 in (0..n).step_by(t) {
        for j0 in (0..n).step_by(t) {
            for l0 in (0..d).step_by(t) {
                let l1 = (l0 + t).min(d);
                for i in i0..(i0 + t).min(n) {
                    let qi = &p.q[i * d + l0..i * d + l1];
                    let srow = &mut s[i * n..(i + 1) * n];
                    let j1 = (j0 + t).min(n);
                    for (j, sj) in srow[j0..j1]
                        .iter_mut()
                        .enumerate()
                        .map(|(o, x)| (j0 + o, x))
                    {
                        *sj += tile::dot(qi, &p.k[j * d + l0..j * d + l1]);
                    }
                }
            }
        }
    }
    for row in s.chunks_exact_mut(n) {
        let m = row.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(tau * x));
        let mut sum = 0.0;
        for x in row.iter_mut() {
            *x = (tau * *x - m).exp();
            sum += *x;
        }
        tile::scale(1.0 / sum, row);
    }
    let mut out = vec![0f32; n * d];
    for i0 in (0..n).step_by(t) {
        for e0 in (0..d).step_by(t) {
            let e1 = (e0 + t).min(d);
            for j0 in (0..n).step_by(t) {
                for i in i0..(i0 + t).min(n) {
                    let o = &mut out[i * d + e0..i * d + e1];
                    for j in j0..(j0 + t).min(n) {
                        tile::axpy(s[i * n + j], &p.v[j * d + e0..j * d + e1], o);
                    }
                }
            }
        }
    }
    out
}

fn engine(p: &Problem) -> Vec<f32> {
    let m = |x: &Vec<f32>| Matrix::from_vec(p.n, p.d, x.clone()).expect("shape");
    let (q, k, v) = (m(&p.q), m(&p.k), m(&p.v));
    let cfg = AttentionConfig {
        scale: None,
        mask: Mask::None,
        softcap: None,
    };
    exact::forward(q.view(), k.view(), v.view(), &cfg)
        .expect("valid inputs")
        .o
        .into_vec()
}

fn run(p: &Problem, spec: &[&str]) -> Vec<f32> {
    let num = |i: usize| -> usize { spec[i].parse().expect("a number") };
    match spec[0] {
        "engine" => engine(p),
        "flash" => flash(p, num(1), num(2)),
        "small" => small(p, num(1)),
        other => panic!("unknown variant {other}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(
        a.len() >= 3,
        "usage: see the doc comment of examples/io_cpu.rs"
    );
    let (n, d): (usize, usize) = (a[1].parse().expect("n"), a[2].parse().expect("d"));
    let p = problem(n, d);
    if a[0] == "model" {
        use polyattn::io_model::{run, Algorithm, Pattern};
        let cap: usize = a[3].parse().expect("M");
        let f =
            |x: &Vec<f32>| Matrix::from_fn(n, d, |i, j| f64::from(x[i * d + j])).expect("shape");
        let (q, k, v) = (f(&p.q), f(&p.k), f(&p.v));
        for alg in [Algorithm::Flash, Algorithm::SmallCache, Algorithm::Standard] {
            let pat = Pattern::Prefix(Mask::None);
            let tau = 1.0 / (d as f64).sqrt();
            let r = run(alg, q.view(), k.view(), v.view(), q.view(), tau, &pat, cap).expect("fits");
            println!(
                "{} M={cap}: forward words moved {}",
                alg.name(),
                r.fwd.total()
            );
        }
        return;
    }
    if a[0] == "time" {
        let reps: usize = a[3].parse().expect("reps");
        for spec in &a[4..] {
            let parts: Vec<&str> = spec.split(':').collect();
            let mut ts: Vec<f64> = (0..reps)
                .map(|_| {
                    let t = Instant::now();
                    std::hint::black_box(run(&p, &parts));
                    t.elapsed().as_secs_f64()
                })
                .collect();
            ts.sort_by(f64::total_cmp);
            println!(
                "{spec}: median {:.1} ms (min {:.1})",
                1e3 * ts[reps / 2],
                1e3 * ts[0]
            );
        }
        return;
    }
    let mut spec = vec![a[0]];
    spec.extend(&a[3..]);
    let out = run(&p, &spec);
    if std::env::var("IO_CPU_CHECK").as_deref() == Ok("0") {
        // Under a cache simulator: measure the variant alone.
        std::hint::black_box(out);
        return;
    }
    let reference = engine(&p);
    let diff = out
        .iter()
        .zip(&reference)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    println!("{}: max |O - O_engine| = {diff:e}", spec.join(" "));
    assert!(diff < 1e-4, "variant disagrees with the exact engine");
}
