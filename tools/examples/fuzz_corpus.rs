//! Tools for the fuzz corpora (used by `scripts/fuzz_campaign.sh`):
//!
//! - `cargo run --release --example fuzz_corpus -- seeds fuzz/corpus` writes the seed
//!   corpus of every target (deterministic; existing files are kept);
//! - `cargo run --release --example fuzz_corpus -- stats TARGET DIR...` replays every
//!   file of the folders through the target's property check and prints, as JSON, what
//!   the inputs explored (n, B, R, degrees, refusals, tightness) and any failures;
//! - `... -- show TARGET FILE` prints the decoded structured input of one file.

use polyattn::io::AnyTensor;
use polyattn::rng::SplitMix64;
use polyattn_tools::fuzzing::{files, run_target, Outcome, TARGETS};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn random_bytes(r: &mut SplitMix64, len: usize) -> Vec<u8> {
    (0..len).map(|_| r.next_u64() as u8).collect()
}

fn safetensors_seeds() -> Vec<Vec<u8>> {
    let mut r = SplitMix64::new(11);
    let mut seeds = Vec::new();
    let t = |shape: Vec<usize>, f32: bool, r: &mut SplitMix64| {
        let len: usize = shape.iter().product();
        let data = r.normal_vec(len, 1.0);
        if f32 {
            AnyTensor::from_real::<f32>(shape, data.iter().map(|&x| x as f32).collect())
        } else {
            AnyTensor::from_real::<f64>(shape, data)
        }
    };
    // (q, k, v shapes, f32, with dO)
    type Seed = (Vec<usize>, Vec<usize>, Vec<usize>, bool, bool);
    let shapes: [Seed; 5] = [
        (vec![4, 2], vec![5, 2], vec![5, 3], false, false),
        (vec![2, 3, 2], vec![2, 3, 2], vec![2, 3, 1], true, true),
        (
            vec![1, 2, 3, 2],
            vec![1, 2, 4, 2],
            vec![1, 2, 4, 2],
            false,
            true,
        ),
        (vec![6, 1], vec![3, 1], vec![3, 1], true, false),
        (vec![2, 2], vec![2, 3], vec![2, 2], false, false), // d mismatch
    ];
    for (i, (sq, sk, sv, f32, with_do)) in shapes.into_iter().enumerate() {
        let mut ts: Vec<(String, AnyTensor)> = vec![
            ("q".into(), t(sq.clone(), f32, &mut r)),
            ("k".into(), t(sk, f32, &mut r)),
            ("v".into(), t(sv.clone(), f32, &mut r)),
        ];
        if with_do {
            let mut s = sq.clone();
            *s.last_mut().unwrap() = *sv.last().unwrap();
            ts.push(("do".into(), t(s, f32, &mut r)));
        }
        let meta = HashMap::from([("note".to_string(), "seed".to_string())]);
        let mut bytes = vec![i as u8];
        bytes.extend(files::serialize(&ts, &meta).unwrap());
        seeds.push(bytes);
    }
    seeds.push(vec![0]);
    seeds.push(b"\x01\x08\0\0\0\0\0\0\0{}      ".to_vec());
    seeds.push(random_bytes(&mut r, 64));
    seeds
}

fn write_seeds(root: &Path) {
    let mut r = SplitMix64::new(2024);
    for t in TARGETS {
        let dir = root.join(t);
        std::fs::create_dir_all(&dir).unwrap();
        let seeds: Vec<Vec<u8>> = match t {
            "safetensors_input" => safetensors_seeds(),
            _ => (0..12).map(|i| random_bytes(&mut r, 24 + 8 * i)).collect(),
        };
        for (i, s) in seeds.iter().enumerate() {
            let p = dir.join(format!("seed-{i:02}"));
            if !p.exists() {
                std::fs::write(&p, s).unwrap();
            }
        }
    }
}

#[derive(Default, serde::Serialize)]
struct Stats {
    target: String,
    files: usize,
    decoded: usize,
    refused: usize,
    failures: Vec<String>,
    n_min: Option<usize>,
    n_max: Option<usize>,
    b_min: Option<f64>,
    b_max: Option<f64>,
    radius_max: Option<f64>,
    degree_max: Option<usize>,
    max_tightness: Option<f64>,
    /// B / sqrt(ln n) buckets: [< 0.5, 0.5..1, 1..2, 2..5, >= 5] -> (inputs, refused).
    threshold_buckets: Vec<(String, usize, usize)>,
}

fn min_opt<T: PartialOrd + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y < x { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

fn max_opt<T: PartialOrd + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y > x { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

fn stats(target: &str, dirs: &[PathBuf]) -> Stats {
    let edges = [0.5, 1.0, 2.0, 5.0, f64::INFINITY];
    let names = ["<0.5", "0.5-1", "1-2", "2-5", ">=5"];
    let mut buckets = [(0usize, 0usize); 5];
    let mut s = Stats {
        target: target.into(),
        ..Stats::default()
    };
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if !p.is_file() {
                continue;
            }
            s.files += 1;
            let bytes = std::fs::read(&p).unwrap();
            let res = std::panic::catch_unwind(|| run_target(target, &bytes));
            let o: Outcome = match res {
                Ok(Ok(Some(o))) => o,
                Ok(Ok(None)) => continue,
                Ok(Err(v)) => {
                    s.failures.push(format!("{}: {v}", p.display()));
                    continue;
                }
                Err(_) => {
                    s.failures.push(format!("{}: panicked", p.display()));
                    continue;
                }
            };
            s.decoded += 1;
            s.refused += usize::from(o.refused.is_some());
            s.n_min = min_opt(s.n_min, o.n);
            s.n_max = max_opt(s.n_max, o.n);
            s.b_min = min_opt(s.b_min, o.entry_bound);
            s.b_max = max_opt(s.b_max, o.entry_bound);
            s.radius_max = max_opt(s.radius_max, o.score_radius);
            s.degree_max = max_opt(s.degree_max, o.degree);
            s.max_tightness = max_opt(s.max_tightness, o.tightness);
            if let (Some(n), Some(b)) = (o.n, o.entry_bound) {
                let x = b / (n.max(2) as f64).ln().sqrt();
                let k = edges.iter().position(|&e| x < e).unwrap_or(4);
                buckets[k].0 += 1;
                buckets[k].1 += usize::from(o.refused.is_some());
            }
        }
    }
    if target == "poly_bound" {
        s.threshold_buckets = names
            .iter()
            .zip(buckets)
            .map(|(n, (a, r))| (n.to_string(), a, r))
            .collect();
    }
    s
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("seeds") => write_seeds(Path::new(args.get(1).map_or("fuzz/corpus", |s| s))),
        Some("stats") if args.len() >= 3 => {
            let dirs: Vec<PathBuf> = args[2..].iter().map(PathBuf::from).collect();
            let s = stats(&args[1], &dirs);
            println!("{}", serde_json::to_string_pretty(&s).unwrap());
            if !s.failures.is_empty() {
                std::process::exit(1);
            }
        }
        Some("show") if args.len() == 3 => {
            let bytes = std::fs::read(&args[2]).unwrap();
            println!("{}", polyattn_tools::fuzzing::describe(&args[1], &bytes));
        }
        _ => {
            eprintln!("usage: fuzz_corpus seeds DIR | stats TARGET DIR... | show TARGET FILE");
            std::process::exit(2);
        }
    }
}
