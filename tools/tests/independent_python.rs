//! Runs `scripts/independent_check.py`: a pure-Python float64 attention (math.fsum
//! sums) writes safetensors files by hand, drives the `polyattn` binary, and checks
//! O, lse, dQ, dK, dV for every mask to 1e-12 relative (F64) and 1e-5 (F32).
//! Skipped, with a message, where no `python3` (or, for the second test, no torch) is
//! installed.

use std::process::Command;

#[test]
fn cli_agrees_with_independent_python_float64() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/independent_check.py"
    );
    let out = match Command::new("python3")
        .arg(script)
        .arg("--bin")
        .arg(env!("CARGO_BIN_EXE_polyattn"))
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            println!("skipped: python3 not available ({e})");
            return;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(" passed, 0 failed"), "{text}");
}

/// Runs `scripts/torch_model_check.py`: PyTorch float64 autodiff of the README's model
/// against `polyattn model` (exact engine: every gradient to 1e-10 relative; polynomial
/// engine: dX within the propagated bound written in the output). Uses the Python named
/// by `POLYATTN_TORCH_PYTHON` (e.g. a virtual environment with torch), else `python3`;
/// skipped, with a message, where that Python has no torch.
#[test]
fn model_gradients_agree_with_torch_autodiff() {
    let python = std::env::var("POLYATTN_TORCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_torch = Command::new(&python)
        .args(["-c", "import torch"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has_torch {
        println!("skipped: {python} cannot import torch (set POLYATTN_TORCH_PYTHON)");
        return;
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/torch_model_check.py"
    );
    let out = Command::new(&python)
        .arg(script)
        .arg("--bin")
        .arg(env!("CARGO_BIN_EXE_polyattn"))
        .output()
        .expect("the Python that imported torch runs");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("all cases pass"), "{text}");
}
