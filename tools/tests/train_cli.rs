//! `polyattn train` end to end: the quick preset trains, resumes a finished run
//! without a step, and refuses a checkpoint of another configuration (exit status 1).

use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("polyattn-train-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn cli_quick_preset_trains_and_resumes() {
    let dir = tmp("cli");
    let out = dir.join("run");
    let bin = env!("CARGO_BIN_EXE_polyattn");
    let go = |extra: &[&str]| {
        let o = std::process::Command::new(bin)
            .args(["train", "--quick", "--out", out.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    go(&[]);
    // The other gradient kind through the polynomial engine, in another folder.
    let o = std::process::Command::new(bin)
        .args(["train", "--quick", "--engine", "poly", "--tau-max", "2"])
        .args(["--d-qk", "2", "--gradient", "polynomial-model", "--out"])
        .arg(dir.join("pm"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let steps = metrics.lines().filter(|l| !l.contains("val_loss")).count();
    assert_eq!(steps, 40);
    assert_eq!(
        metrics
            .lines()
            .filter(|l| l.contains("val_accuracy"))
            .count(),
        2
    );
    // Resuming a finished run takes no step and keeps the metrics.
    go(&["--resume"]);
    assert_eq!(
        std::fs::read_to_string(out.join("metrics.jsonl")).unwrap(),
        metrics
    );
    // Another configuration against this checkpoint: a typed error, exit status 1.
    let o = std::process::Command::new(bin)
        .args(["train", "--quick", "--resume", "--d-model", "16"])
        .args(["--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    // d_ff = 4 d_model comes first in the (sorted) comparison of the model's fields.
    assert!(
        err.contains("another configuration") && err.contains("`d_ff` is 128 there but 64"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
