//! What users and machines do to the binary: unbounded plots, sizes larger than the
//! machine, closed pipes and full devices, failed and killed writes, outputs that
//! name inputs, reproducible bytes, deterministic refusals, flag quirks. Each test
//! reproduces a fault that existed before its fix (see the README's bad-input table).

use polyattn::io::{write_tensors, AnyTensor};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_polyattn")
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("polyattn-faults-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tensor(shape: &[usize], seed: u64, scale: f64) -> AnyTensor {
    let n = shape.iter().product();
    AnyTensor::F64 {
        shape: shape.to_vec(),
        data: polyattn::rng::SplitMix64::new(seed).normal_vec(n, scale),
    }
}

fn write(path: &Path, tensors: Vec<(&str, AnyTensor)>) {
    let t: Vec<(String, AnyTensor)> = tensors
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect();
    write_tensors(path, &t, &HashMap::new()).unwrap();
}

fn run(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

/// Runs with a wall-clock limit; `None` when it had to be killed.
fn run_limited(args: &[&str], limit: Duration) -> Option<Output> {
    let mut child = Command::new(bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn listing(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn one_line_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(err.contains(needle), "stderr {err:?} lacks {needle:?}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A certified error that is exactly zero (the first causal row's dQ) or
/// subnormal made the rows plot's axis run to infinity; the run grew past 20 GB.
/// Now every such certify finishes, and its report links a plot that exists.
#[test]
fn certify_with_zero_and_subnormal_errors_finishes() {
    let dir = tmpdir("certify-zero");
    let inp = dir.join("in.st");
    let (h, n, d) = (2, 300, 4);
    let cases: Vec<(&str, AnyTensor, Vec<&str>)> = vec![
        (
            "causal",
            tensor(&[h, n, d], 1, 0.3),
            vec!["--mask", "causal"],
        ),
        (
            "bottom-right",
            tensor(&[h, n, d], 1, 0.3),
            vec!["--mask", "causal-bottom-right"],
        ),
        ("q-zero", tensor(&[h, n, d], 1, 0.0), vec![]),
        ("q-subnormal", tensor(&[h, n, d], 1, 1e-310), vec![]),
        (
            "scale-zero",
            tensor(&[h, n, d], 1, 0.3),
            vec!["--scale", "0"],
        ),
    ];
    for (name, q, extra) in cases {
        write(
            &inp,
            vec![
                ("q", q),
                ("k", tensor(&[h, n, d], 2, 0.3)),
                ("v", tensor(&[h, n, d], 3, 1.0)),
                ("do", tensor(&[h, n, d], 4, 1.0)),
            ],
        );
        let out_dir = dir.join(name);
        let mut args = vec![
            "certify",
            "--input",
            s(&inp),
            "--out",
            s(&out_dir),
            "--eps",
            "1e-6",
        ];
        args.extend(extra);
        // Seconds in release; before the fix it never ended.
        let out = run_limited(&args, Duration::from_secs(300))
            .unwrap_or_else(|| panic!("{name}: certify did not finish"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {err}");
        let svg = out_dir.join("rows.svg");
        let size = std::fs::metadata(&svg).unwrap().len();
        assert!(size > 0 && size < 1 << 20, "{name}: rows.svg {size} bytes");
        let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
        if md.contains("rows.svg") {
            assert!(svg.exists());
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Sizes under the 2^31-value cap but larger than the machine aborted with
/// "memory allocation failed"; now a typed refusal names the estimate and the limit.
#[test]
fn runs_larger_than_memory_are_refused_before_they_start() {
    let dir = tmpdir("memory");
    let (w, x) = (dir.join("w.st"), dir.join("x.st"));
    let cases: Vec<Vec<&str>> = vec![
        vec![
            "model",
            "--init",
            "--weights",
            s(&w),
            "--input",
            s(&x),
            "--n",
            "1073741824",
            "--d-model",
            "2",
            "--heads",
            "1",
        ],
        vec!["demo", "--n", "1073741824", "--d", "2", "--heads", "1"],
        vec!["demo", "--model-n", "134217728"],
        // A small run under a tiny explicit limit.
        vec![
            "--max-memory",
            "1K",
            "model",
            "--init",
            "--weights",
            s(&w),
            "--input",
            s(&x),
            "--n",
            "64",
            "--d-model",
            "8",
            "--heads",
            "2",
        ],
    ];
    for args in cases {
        let out = run_limited(&args, Duration::from_secs(60))
            .unwrap_or_else(|| panic!("{args:?} did not finish"));
        one_line_error(&out, "at its peak");
        assert!(
            listing(&dir).is_empty(),
            "{args:?} left {:?}",
            listing(&dir)
        );
    }
    // attention and a model run estimate their peak from the files.
    let inp = dir.join("in.st");
    attention_input(&inp);
    let o = dir.join("o.st");
    let out = run(&[
        "--max-memory",
        "1K",
        "attention",
        "--input",
        s(&inp),
        "--output",
        s(&o),
    ]);
    one_line_error(&out, "at its peak");
    assert!(!o.exists());
    let init = [
        "model",
        "--init",
        "--weights",
        s(&w),
        "--input",
        s(&x),
        "--n",
        "16",
    ];
    assert!(
        run(&[&init[..], &["--d-model", "8", "--heads", "2"]].concat())
            .status
            .success()
    );
    let g = dir.join("g.st");
    let out = run(&[
        "--max-memory",
        "1K",
        "model",
        "--weights",
        s(&w),
        "--input",
        s(&x),
        "--output",
        s(&g),
    ]);
    one_line_error(&out, "at its peak");
    assert!(!g.exists());
    let out = run(&["--max-memory", "lots", "demo"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a malformed size is a usage error"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `polyattn demo | head -1` panicked ("failed printing to stdout"); a closed
/// pipe now ends the run quietly with 141 (as SIGPIPE would), a full device is one
/// error line after the files are complete.
#[test]
fn closed_pipes_end_quietly_and_full_devices_are_one_line() {
    let dir = tmpdir("pipe");
    let mut child = Command::new(bin())
        .args([
            "demo",
            "--heads",
            "1",
            "--n",
            "64",
            "--d",
            "8",
            "--samples",
            "1",
            "--model-n",
            "64",
            "--out",
            s(&dir.join("demo")),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("polyattn demo"), "{first}");
    // The reader goes away, as `head -1` does.
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "stderr: {err}");
    assert!(err.trim().is_empty(), "quiet: {err}");

    if Path::new("/dev/full").exists() {
        let (w, x) = (dir.join("w.st"), dir.join("x.st"));
        let out = Command::new(bin())
            .args(["model", "--init", "--weights", s(&w), "--input", s(&x)])
            .args(["--n", "16", "--d-model", "8", "--heads", "2"])
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap();
        one_line_error(&out, "standard output");
        // The files were written before the message and are complete.
        polyattn::io::TensorFile::read(&w).unwrap();
        polyattn::io::TensorFile::read(&x).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn attention_input(path: &Path) {
    write(
        path,
        vec![
            ("q", tensor(&[2, 64, 8], 1, 1.0)),
            ("k", tensor(&[2, 64, 8], 2, 1.0)),
            ("v", tensor(&[2, 64, 8], 3, 1.0)),
            ("do", tensor(&[2, 64, 8], 4, 1.0)),
        ],
    );
}

/// Runs through `sh` with the file-size limit at 512 bytes and SIGXFSZ ignored, so
/// that writes fail with EFBIG as on a full disk.
fn run_with_tiny_fsize(args: &[&str]) -> Output {
    let mut cmd = format!("trap '' XFSZ; ulimit -f 1; exec '{}'", bin());
    for a in args {
        cmd.push_str(&format!(" '{a}'"));
    }
    Command::new("sh").args(["-c", &cmd]).output().unwrap()
}

/// A failed write left `.NAME.tmp-PID` behind and certify wrote its
/// reports in place (a 0-byte report.json, two runs' files mixed). Now the previous
/// file or folder is intact and no temporary remains; a killed run's temporary is
/// removed by the next run.
#[test]
fn failed_and_killed_writes_leave_the_previous_outputs_and_no_temporaries() {
    let dir = tmpdir("writes");
    let inp = dir.join("in.st");
    attention_input(&inp);
    let outp = dir.join("out.st");
    std::fs::write(&outp, b"previous").unwrap();
    let out = run_with_tiny_fsize(&["attention", "--input", s(&inp), "--output", s(&outp)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("File too large"), "the write failed: {err}");
    assert_eq!(std::fs::read(&outp).unwrap(), b"previous");
    assert_eq!(listing(&dir), ["in.st", "out.st"]);

    // certify into a folder holding an earlier report: untouched on failure.
    let small = dir.join("small.st");
    write(
        &small,
        vec![
            ("q", tensor(&[2, 64, 4], 1, 0.3)),
            ("k", tensor(&[2, 64, 4], 2, 0.3)),
            ("v", tensor(&[2, 64, 4], 3, 1.0)),
            ("do", tensor(&[2, 64, 4], 4, 1.0)),
        ],
    );
    let report = dir.join("report");
    std::fs::create_dir_all(&report).unwrap();
    std::fs::write(report.join("report.json"), b"{\"old\": 1}").unwrap();
    let args = [
        "certify",
        "--input",
        s(&small),
        "--out",
        s(&report),
        "--eps",
        "1e-3",
    ];
    let out = run_with_tiny_fsize(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("File too large"), "the write failed: {err}");
    assert_eq!(listing(&report), ["report.json"]);
    assert_eq!(
        std::fs::read(report.join("report.json")).unwrap(),
        b"{\"old\": 1}"
    );
    assert_eq!(listing(&dir), ["in.st", "out.st", "report", "small.st"]);
    // And complete on success.
    let out = run(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        listing(&report),
        ["report.json", "report.md", "rows.svg", "timings.json"]
    );

    // A temporary left by a killed run (its PID is gone) is removed by the next run.
    let stale = dir.join(format!(".out.st.polyattn-tmp-{}", 0x7fff_fff0u32));
    std::fs::write(&stale, b"half").unwrap();
    let out = run(&["attention", "--input", s(&inp), "--output", s(&outp)]);
    assert!(out.status.success());
    assert!(!stale.exists(), "the dead run's temporary is removed");
    assert_eq!(listing(&dir), ["in.st", "out.st", "report", "small.st"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// SIGTERM (and SIGINT, SIGHUP) end the run with 130 and remove live temporaries.
#[cfg(unix)]
#[test]
fn terminated_runs_exit_130_without_temporaries() {
    let dir = tmpdir("sigterm");
    let child = Command::new(bin())
        .args(["demo", "--out", s(&dir.join("demo"))])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let leftovers: Vec<String> = walk(&dir)
        .into_iter()
        .filter(|n| n.contains("polyattn-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn walk(d: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            out.push(e.file_name().to_string_lossy().into_owned());
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            }
        }
    }
    out
}

/// `--output` equal to `--input` turned q/k/v/do into o/lse/dq/dk/dv, and
/// `model --output` equal to `--weights` replaced the weights by their gradients.
#[test]
fn outputs_that_would_destroy_inputs_are_refused() {
    let dir = tmpdir("same");
    let inp = dir.join("in.st");
    attention_input(&inp);
    let before = std::fs::read(&inp).unwrap();
    let link = dir.join("link.st");
    std::fs::hard_link(&inp, &link).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&inp, dir.join("sym.st")).unwrap();
    for o in [
        inp.clone(),
        link,
        dir.join("sym.st"),
        PathBuf::from("/dev/null"),
        dir.clone(),
    ] {
        let out = run(&["attention", "--input", s(&inp), "--output", s(&o)]);
        one_line_error(&out, "refusing to write");
    }
    assert_eq!(std::fs::read(&inp).unwrap(), before);

    let (w, x, g) = (dir.join("w.st"), dir.join("x.st"), dir.join("g.st"));
    let init = ["model", "--init", "--weights", s(&w), "--input", s(&x)];
    let sizes = ["--n", "16", "--d-model", "8", "--heads", "2"];
    let out = run(&[&init[..], &sizes[..]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let weights = std::fs::read(&w).unwrap();
    let out = run(&[
        "model",
        "--weights",
        s(&w),
        "--input",
        s(&x),
        "--output",
        s(&w),
    ]);
    one_line_error(&out, "refusing to write");
    assert_eq!(std::fs::read(&w).unwrap(), weights);
    let out = run(&[
        "model",
        "--init",
        "--weights",
        s(&g),
        "--input",
        s(&g),
        "--n",
        "4",
    ]);
    one_line_error(&out, "refusing to write");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn bytes_with_threads(args: &[&str], out: &Path, threads: usize) -> Vec<u8> {
    let o = Command::new(bin())
        .args(args)
        .env("RAYON_NUM_THREADS", threads.to_string())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(out).unwrap()
}

/// `__metadata__` was written in hash-map order, so two runs differed in
/// bytes. Every tensor file is now the same bytes for the same inputs, whatever the
/// thread count.
#[test]
fn output_files_are_byte_identical_across_runs_and_threads() {
    let dir = tmpdir("bytes");
    let inp = dir.join("in.st");
    attention_input(&inp);
    let o = dir.join("o.st");
    for engine in ["exact", "poly"] {
        let args = [
            "attention",
            "--input",
            s(&inp),
            "--output",
            s(&o),
            "--engine",
            engine,
            "--eps",
            "1e-2",
            "--scale",
            "0.05",
        ];
        let first = bytes_with_threads(&args, &o, 1);
        for t in [1, 2, 3] {
            assert!(
                bytes_with_threads(&args, &o, t) == first,
                "{engine}, {t} threads"
            );
        }
    }
    let (w, x, g) = (dir.join("w.st"), dir.join("x.st"), dir.join("g.st"));
    let init = [
        "model",
        "--init",
        "--weights",
        s(&w),
        "--input",
        s(&x),
        "--n",
        "32",
        "--d-model",
        "8",
        "--heads",
        "2",
        "--causal",
    ];
    let w1 = bytes_with_threads(&init, &w, 1);
    assert!(bytes_with_threads(&init, &w, 2) == w1);
    let grads = [
        "model",
        "--weights",
        s(&w),
        "--input",
        s(&x),
        "--output",
        s(&g),
    ];
    let g1 = bytes_with_threads(&grads, &g, 1);
    for t in [2, 3] {
        assert!(bytes_with_threads(&grads, &g, t) == g1, "{t} threads");
    }
    // Reports: everything but timings.json is the same bytes.
    let small = dir.join("small.st");
    write(
        &small,
        vec![
            ("q", tensor(&[2, 48, 4], 1, 0.3)),
            ("k", tensor(&[2, 48, 4], 2, 0.3)),
            ("v", tensor(&[2, 48, 4], 3, 1.0)),
            ("do", tensor(&[2, 48, 4], 4, 1.0)),
        ],
    );
    let rep = dir.join("rep");
    let args = [
        "certify",
        "--input",
        s(&small),
        "--out",
        s(&rep),
        "--eps",
        "1e-4",
        "--mask",
        "causal",
    ];
    let files = ["report.json", "report.md", "rows.svg"];
    let first: Vec<Vec<u8>> = files
        .iter()
        .map(|f| bytes_with_threads(&args, &rep.join(f), 1))
        .collect();
    for t in [2, 3] {
        for (f, want) in files.iter().zip(&first) {
            assert!(
                &bytes_with_threads(&args, &rep.join(f), t) == want,
                "{f}, {t} threads"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--scale -inf` was read as the flag `-i`; usage errors exit 2 (clap's
/// convention, documented), errors of the run exit 1 with one line.
#[test]
fn negative_special_values_reach_the_validation() {
    let dir = tmpdir("flags");
    let inp = dir.join("in.st");
    attention_input(&inp);
    let o = dir.join("o.st");
    for v in ["-inf", "inf", "NaN", "-1e400"] {
        let out = run(&[
            "attention",
            "--input",
            s(&inp),
            "--output",
            s(&o),
            "--scale",
            v,
        ]);
        one_line_error(&out, "scale");
    }
    let out = run(&[
        "attention",
        "--input",
        s(&inp),
        "--output",
        s(&o),
        "--bogus",
    ]);
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--engine poly` refused for predicted cost although the rank was within
/// its limit; a named engine now runs what it can certify and says the cost.
#[test]
fn named_poly_engine_runs_when_certifiable_and_states_its_cost() {
    let dir = tmpdir("poly-cost");
    let inp = dir.join("in.st");
    // n = 1000, d = 8, entries scaled so that R is about 2.
    write(
        &inp,
        vec![
            ("q", tensor(&[1000, 8], 1, 0.45)),
            ("k", tensor(&[1000, 8], 2, 0.45)),
            ("v", tensor(&[1000, 8], 3, 1.0)),
        ],
    );
    let o = dir.join("o.st");
    let base = [
        "attention",
        "--input",
        s(&inp),
        "--output",
        s(&o),
        "--engine",
        "poly",
    ];
    let out = run(&[&base[..], &["--eps", "1e-3"]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("predicted cost"), "{err}");
    let f = polyattn::io::TensorFile::read(&o).unwrap();
    assert!(f.metadata.contains_key("predicted_cost_ratio"));
    // The limit is a documented flag.
    let out = run(&[&base[..], &["--eps", "1e-3", "--max-cost-ratio", "1"]].concat());
    one_line_error(&out, "predicted cost");
    std::fs::remove_dir_all(&dir).unwrap();
}
