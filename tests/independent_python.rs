//! Runs `scripts/independent_check.py`: a pure-Python float64 attention (math.fsum
//! sums) writes safetensors files by hand, drives the `polyattn` binary, and checks
//! O, lse, dQ, dK, dV for every mask to 1e-12 relative (F64) and 1e-5 (F32).
//! Skipped, with a message, where no `python3` is installed.

use std::process::Command;

#[test]
fn cli_agrees_with_independent_python_float64() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/independent_check.py");
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
