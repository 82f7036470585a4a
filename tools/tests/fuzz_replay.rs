//! Replays every fuzz corpus file (`fuzz/corpus/<target>/`) and every kept crash or
//! regression input (`fuzz/regressions/<target>/`) through the same property checks
//! the cargo-fuzz targets run (`polyattn_tools::fuzzing`), on stable `cargo test`: what the
//! campaigns found stays guarded in CI.

use polyattn_tools::fuzzing::{run_target, TARGETS};
use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .filter(|p| {
                !p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.') || n.ends_with(".md"))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Replays one folder; returns (files, decoded) and panics naming the first failure.
fn replay(target: &str, dir: &Path) -> (usize, usize) {
    let all = files(dir);
    let mut decoded = 0;
    let mut failures = Vec::new();
    for f in &all {
        let bytes = std::fs::read(f).unwrap();
        match std::panic::catch_unwind(|| run_target(target, &bytes)) {
            Ok(Ok(Some(_))) => decoded += 1,
            Ok(Ok(None)) => {}
            Ok(Err(v)) => failures.push(format!("{}: {v}", f.display())),
            Err(_) => failures.push(format!("{}: panicked", f.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} inputs fail:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
    (all.len(), decoded)
}

#[test]
fn every_target_has_a_seed_corpus_and_it_replays_clean() {
    for t in TARGETS {
        let (n, decoded) = replay(t, &root().join("corpus").join(t));
        println!("{t}: {n} corpus files, {decoded} decoded and checked");
        // An empty or undecodable corpus would make this test vacuous.
        assert!(n >= 3, "{t}: only {n} corpus files");
        assert!(decoded * 2 >= n, "{t}: only {decoded} of {n} decode");
    }
}

#[test]
fn every_regression_input_replays_clean() {
    let dir = root().join("regressions");
    for t in TARGETS {
        let (n, _) = replay(t, &dir.join(t));
        println!("{t}: {n} regression inputs");
    }
    // Every folder under regressions/ must be a known target (a typo would skip it).
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                let name = e.file_name().to_string_lossy().into_owned();
                assert!(TARGETS.contains(&name.as_str()), "unknown folder {name}");
            }
        }
    }
}
