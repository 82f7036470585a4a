//! The `polyattn` binary end to end: files in, files out, and one clean error line
//! (never a panic) for every kind of bad input.

use polyattn::io::{write_tensors, AnyTensor, TensorFile};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_polyattn")
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("polyattn-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn f64t(shape: &[usize], seed: u64) -> AnyTensor {
    let n = shape.iter().product();
    AnyTensor::F64 {
        shape: shape.to_vec(),
        data: polyattn::rng::SplitMix64::new(seed).normal_vec(n, 1.0),
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

/// Runs `attention` on `input`; expects failure with one line naming `needle`.
/// `polyattn attention --input input --output output EXTRA...`: its result and `output`.
fn attention_into(input: &Path, output: &Path, extra: &[&str]) -> (Output, PathBuf) {
    let mut args = vec![
        "attention",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    (run(&args), output.to_path_buf())
}

fn expect_error(input: &Path, extra: &[&str], needle: &str) {
    let out_path = input.with_extension("out.safetensors");
    let mut args = vec![
        "attention",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out_path.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = run(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure for {input:?}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(
        err.contains(needle),
        "stderr {err:?} does not mention {needle:?}"
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {err}"
    );
    assert!(
        !out_path.exists(),
        "no output may be left behind on failure"
    );
}

#[test]
fn forward_and_backward_on_a_multihead_file() {
    let dir = tmpdir("ok");
    let (inp, outp) = (dir.join("in.safetensors"), dir.join("out.safetensors"));
    write(
        &inp,
        vec![
            ("q", f64t(&[2, 5, 3], 1)),
            ("k", f64t(&[2, 7, 3], 2)),
            ("v", f64t(&[2, 7, 4], 3)),
            ("do", f64t(&[2, 5, 4], 4)),
        ],
    );
    let out = run(&[
        "attention",
        "--input",
        inp.to_str().unwrap(),
        "--output",
        outp.to_str().unwrap(),
        "--mask",
        "causal-bottom-right",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = TensorFile::read(&outp).unwrap();
    assert_eq!(f.get("o").unwrap().shape(), &[2, 5, 4]);
    assert_eq!(f.get("lse").unwrap().shape(), &[2, 5]);
    assert_eq!(f.get("dq").unwrap().shape(), &[2, 5, 3]);
    assert_eq!(f.get("dk").unwrap().shape(), &[2, 7, 3]);
    assert_eq!(f.get("dv").unwrap().shape(), &[2, 7, 4]);
    assert_eq!(
        f.metadata.get("mask").map(String::as_str),
        Some("causal-bottom-right")
    );
    // The file's results equal the library's, bit for bit.
    let inputs = TensorFile::read(&inp).unwrap();
    let t3 = |name: &str| {
        let t = inputs.get(name).unwrap();
        let s = t.shape();
        polyattn::tensor::Tensor3::from_vec(s[0], s[1], s[2], t.to_real::<f64>().unwrap()).unwrap()
    };
    let cfg = polyattn::attention::AttentionConfig {
        scale: None,
        mask: polyattn::attention::Mask::CausalBottomRight,
        softcap: None,
    };
    let fw =
        polyattn::attention::exact::forward_multihead(&t3("q"), &t3("k"), &t3("v"), &cfg).unwrap();
    assert_eq!(
        f.get("o").unwrap().to_real::<f64>().unwrap(),
        fw.o.as_slice()
    );
}

/// `--window LEFT,RIGHT`: FlashAttention's window_size on the command line. The file
/// records the canonical mask; a window that is the causal mask gives the causal
/// file bit for bit; the polynomial engine runs a window (the range form) within its
/// written per-entry bound of the exact result; auto picks exact at this size;
/// malformed windows are one-line usage errors.
#[test]
fn sliding_windows_on_the_command_line() {
    let dir = tmpdir("window");
    let inp = dir.join("in.safetensors");
    write(
        &inp,
        vec![
            ("q", f64t(&[2, 9, 3], 1)),
            ("k", f64t(&[2, 6, 3], 2)),
            ("v", f64t(&[2, 6, 4], 3)),
            ("do", f64t(&[2, 9, 4], 4)),
        ],
    );
    let attention = |name: &str, extra: &[&str]| attention_into(&inp, &dir.join(name), extra);
    let (out, w) = attention("w.safetensors", &["--window", "2,1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = TensorFile::read(&w).unwrap();
    assert_eq!(
        f.metadata.get("mask").map(String::as_str),
        Some("window(2,1)")
    );
    // n_q = 9 > n_k = 6, bottom-right: row i sees keys i - 3 - 2 ..= i - 3 + 1, so
    // rows 0 and 1 (up to keys -2 and -1) see none and row 2 sees key 0 only.
    let lse = f.get("lse").unwrap().to_real::<f64>().unwrap();
    assert_eq!(&lse[..2], &[f64::NEG_INFINITY; 2]);
    assert!(lse[2].is_finite());
    let o = f.get("o").unwrap().to_real::<f64>().unwrap();
    let v = TensorFile::read(&inp)
        .unwrap()
        .get("v")
        .unwrap()
        .to_real::<f64>()
        .unwrap();
    // One visible key: softmax weight exactly 1, o = v's row 0.
    assert_eq!(&o[2 * 4..3 * 4], &v[..4]);
    let (out, c1) = attention("c1.safetensors", &["--window", "-1,0"]);
    assert!(out.status.success());
    let (out, c2) = attention("c2.safetensors", &["--mask", "causal-bottom-right"]);
    assert!(out.status.success());
    assert_eq!(std::fs::read(&c1).unwrap(), std::fs::read(&c2).unwrap());
    // --mask causal aligns the window top-left and caps RIGHT at 0.
    let (out, tl) = attention("tl.safetensors", &["--mask", "causal", "--window", "3,5"]);
    assert!(out.status.success());
    let f = TensorFile::read(&tl).unwrap();
    assert_eq!(
        f.metadata.get("mask").map(String::as_str),
        Some("window-top-left(3,0)")
    );
    // The polynomial engine: within its written bound of exact attention (the exact
    // f64 result's own error, below 1e-14 at this size, is the slack).
    let (out, pw) = attention("p.safetensors", &["--window", "2,1", "--engine", "poly"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = TensorFile::read(&pw).unwrap();
    assert_eq!(f.metadata.get("engine").map(String::as_str), Some("poly"));
    assert_eq!(
        f.metadata.get("mask").map(String::as_str),
        Some("window(2,1)")
    );
    let po = f.get("o").unwrap().to_real::<f64>().unwrap();
    let pb = f.get("o_bound").unwrap().to_real::<f64>().unwrap();
    for ((a, b), bd) in po.iter().zip(&o).zip(&pb) {
        assert!((a - b).abs() <= bd + 1e-14, "{a} vs {b}, bound {bd}");
    }
    assert!(
        po[..2 * 4].iter().all(|&x| x == 0.0),
        "rows that see no key"
    );
    let (out, a) = attention("a.safetensors", &["--window", "2,1", "--engine", "auto"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = TensorFile::read(&a).unwrap();
    assert_eq!(f.metadata.get("engine").map(String::as_str), Some("exact"));
    assert_eq!(
        f.get("o").unwrap().to_real::<f64>().unwrap(),
        TensorFile::read(&w)
            .unwrap()
            .get("o")
            .unwrap()
            .to_real::<f64>()
            .unwrap()
    );
    for bad in ["2", "-2,0", "a,1", "1,2,3"] {
        let (out, p) = attention("bad.safetensors", &["--window", bad]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("window"),
            "{bad}: {err}"
        );
        assert!(!p.exists());
    }
}

/// An additive `bias` tensor in the input file (PyTorch's float attn_mask): key
/// padding as `-inf` gives the attention of the unpadded keys (checked against a run
/// on the truncated file, for values and gradients); poly refuses naming the bias and
/// auto falls back; a bias of the wrong shape is a one-line error.
#[test]
fn an_additive_bias_in_the_input_file() {
    let dir = tmpdir("bias");
    let (n_q, n_k, keep) = (6, 9, 5);
    let q = f64t(&[2, n_q, 3], 1);
    let k = f64t(&[2, n_k, 3], 2);
    let v = f64t(&[2, n_k, 4], 3);
    let d_o = f64t(&[2, n_q, 4], 4);
    let pad: Vec<f64> = (0..n_q * n_k)
        .map(|ij| {
            if ij % n_k < keep {
                0.0
            } else {
                f64::NEG_INFINITY
            }
        })
        .collect();
    let inp = dir.join("in.safetensors");
    write(
        &inp,
        vec![
            ("q", q.clone()),
            ("k", k.clone()),
            ("v", v.clone()),
            ("do", d_o.clone()),
            (
                "bias",
                AnyTensor::F64 {
                    shape: vec![n_q, n_k],
                    data: pad,
                },
            ),
        ],
    );
    // The same problem with the padded keys removed.
    let cut = |t: &AnyTensor, cols: usize| {
        let x = t.to_real::<f64>().unwrap();
        let data: Vec<f64> = (0..2)
            .flat_map(|h| x[h * n_k * cols..(h * n_k + keep) * cols].to_vec())
            .collect();
        AnyTensor::F64 {
            shape: vec![2, keep, cols],
            data,
        }
    };
    let short = dir.join("short.safetensors");
    write(
        &short,
        vec![("q", q), ("k", cut(&k, 3)), ("v", cut(&v, 4)), ("do", d_o)],
    );
    let run_to = |input: &Path, name: &str, extra: &[&str]| {
        let outp = dir.join(name);
        let mut args = vec![
            "attention",
            "--input",
            input.to_str().unwrap(),
            "--output",
            outp.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        (run(&args), outp)
    };
    let (out, a) = run_to(&inp, "a.safetensors", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (out, b) = run_to(&short, "b.safetensors", &[]);
    assert!(out.status.success());
    let (fa, fb) = (TensorFile::read(&a).unwrap(), TensorFile::read(&b).unwrap());
    for name in ["o", "lse", "dq"] {
        let (x, y) = (
            fa.get(name).unwrap().to_real::<f64>().unwrap(),
            fb.get(name).unwrap().to_real::<f64>().unwrap(),
        );
        // Hidden keys add exact zeros; the visible terms are the same operations, so
        // the two agree to rounding (1e-14 on values of order 1).
        for (p, q) in x.iter().zip(&y) {
            assert!((p - q).abs() <= 1e-14, "{name}: {p} vs {q}");
        }
    }
    // dK, dV of the padded keys are exactly 0.
    let dv = fa.get("dv").unwrap().to_real::<f64>().unwrap();
    for h in 0..2 {
        assert!(dv[(h * n_k + keep) * 4..(h + 1) * n_k * 4]
            .iter()
            .all(|&x| x == 0.0));
    }
    // The polynomial engine takes key padding: within its written bound of the exact
    // run (whose own error, below 1e-14 here, is the slack), padded dK, dV exactly 0.
    let (out, p) = run_to(
        &inp,
        "p.safetensors",
        &["--engine", "poly", "--eps", "1e-6"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fp = TensorFile::read(&p).unwrap();
    assert_eq!(fp.metadata.get("engine").map(String::as_str), Some("poly"));
    assert_eq!(
        fp.metadata
            .get("key_padding_hidden_keys")
            .map(String::as_str),
        Some("[4, 4]")
    );
    for name in ["o", "dq", "dk", "dv"] {
        let x = fp.get(name).unwrap().to_real::<f64>().unwrap();
        let bd = fp
            .get(&format!("{name}_bound"))
            .unwrap()
            .to_real::<f64>()
            .unwrap();
        let y = fa.get(name).unwrap().to_real::<f64>().unwrap();
        for ((x, y), b) in x.iter().zip(&y).zip(&bd) {
            assert!((x - y).abs() <= b + 1e-14, "{name}: {x} vs {y}, bound {b}");
        }
    }
    let pdv = fp.get("dv").unwrap().to_real::<f64>().unwrap();
    for h in 0..2 {
        assert!(pdv[(h * n_k + keep) * 4..(h + 1) * n_k * 4]
            .iter()
            .all(|&x| x == 0.0));
    }
    // Any other bias: poly refuses naming it, auto falls back to exact.
    let general = dir.join("general.safetensors");
    let mut g = vec![0.0; n_q * n_k];
    g[3] = 0.5;
    write(
        &general,
        vec![
            ("q", f64t(&[2, n_q, 3], 1)),
            ("k", f64t(&[2, n_k, 3], 2)),
            ("v", f64t(&[2, n_k, 4], 3)),
            (
                "bias",
                AnyTensor::F64 {
                    shape: vec![n_q, n_k],
                    data: g,
                },
            ),
        ],
    );
    expect_error(&general, &["--engine", "poly"], "attn_mask");
    let (out, c) = run_to(&general, "c.safetensors", &["--engine", "auto"]);
    assert!(out.status.success());
    let fc = TensorFile::read(&c).unwrap();
    assert_eq!(fc.metadata.get("engine").map(String::as_str), Some("exact"));
    assert!(fc.metadata["auto_reason"].contains("attn_mask"));
    let bad = dir.join("bad.safetensors");
    write(
        &bad,
        vec![
            ("q", f64t(&[2, n_q, 3], 1)),
            ("k", f64t(&[2, n_k, 3], 2)),
            ("v", f64t(&[2, n_k, 4], 3)),
            ("bias", f64t(&[n_q, n_k + 1], 5)),
        ],
    );
    expect_error(&bad, &[], "bias");
}

#[test]
fn alibi_slopes_in_the_input_file_equal_the_explicit_bias() {
    // FlashAttention's alibi_slopes (f32, one per head) against the same ALiBi bias
    // written out as a `bias` tensor from the formula: the same output bytes.
    let dir = tmpdir("alibi");
    let (h, n_q, n_k) = (3, 5, 8);
    let slopes = [0.5f32, 0.25, 0.0625];
    let mut bias = Vec::new();
    for s in slopes {
        for i in 0..n_q {
            for j in 0..n_k {
                let dist = (i as f64 + n_k as f64 - n_q as f64 - j as f64).abs();
                bias.push(-(s as f64) * dist);
            }
        }
    }
    let base = || {
        vec![
            ("q", f64t(&[h, n_q, 4], 1)),
            ("k", f64t(&[h, n_k, 4], 2)),
            ("v", f64t(&[h, n_k, 2], 3)),
            ("do", f64t(&[h, n_q, 2], 4)),
        ]
    };
    let (a_in, b_in) = (dir.join("a.safetensors"), dir.join("b.safetensors"));
    let mut a = base();
    a.push((
        "alibi_slopes",
        AnyTensor::F32 {
            shape: vec![h],
            data: slopes.to_vec(),
        },
    ));
    write(&a_in, a);
    let mut b = base();
    b.push((
        "bias",
        AnyTensor::F64 {
            shape: vec![h, n_q, n_k],
            data: bias,
        },
    ));
    write(&b_in, b);
    let outs: Vec<_> = [&a_in, &b_in]
        .iter()
        .enumerate()
        .map(|(n, input)| {
            let outp = dir.join(format!("out{n}.safetensors"));
            let out = run(&[
                "attention",
                "--input",
                input.to_str().unwrap(),
                "--output",
                outp.to_str().unwrap(),
                "--mask",
                "causal-bottom-right",
            ]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            TensorFile::read(&outp).unwrap()
        })
        .collect();
    for name in ["o", "lse", "dq", "dk", "dv"] {
        assert_eq!(
            outs[0].get(name).unwrap().to_real::<f64>(),
            outs[1].get(name).unwrap().to_real::<f64>(),
            "{name}"
        );
    }
    // `certify --candidate` reads the slopes too: polyattn's own f64 result is
    // certified within 1e-10 given the slopes (its f64 rounding is about 1e-15 on
    // entries of order 1), and certifiably wrong (by more than 1e-3) without them.
    let certify = |input: &Path, rep: &str| {
        let out_dir = dir.join(rep);
        let out = run(&[
            "certify",
            "--input",
            input.to_str().unwrap(),
            "--candidate",
            dir.join("out0.safetensors").to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
            "--mask",
            "causal-bottom-right",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(out_dir.join("report.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["tensors"].as_array().unwrap().clone()
    };
    for t in certify(&a_in, "rep_alibi") {
        assert!(t["certified_max_abs"].as_f64().unwrap() < 1e-10, "{t}");
    }
    let plain = dir.join("plain.safetensors");
    write(&plain, base());
    let o = certify(&plain, "rep_plain")
        .into_iter()
        .find(|t| t["name"] == "o")
        .unwrap();
    assert!(o["certified_lower_max_abs"].as_f64().unwrap() > 1e-3, "{o}");
    // Slopes of the wrong shape or not finite: one line naming them.
    for (shape, data) in [
        (vec![2], vec![0.5f32, 0.25]),
        (vec![h], vec![0.5, f32::NAN, 0.1]),
    ] {
        let bad = dir.join("bad.safetensors");
        let mut t = base();
        t.push(("alibi_slopes", AnyTensor::F32 { shape, data }));
        write(&bad, t);
        expect_error(&bad, &[], "alibi_slopes");
    }
}

#[test]
fn forward_only_without_do_and_f32_stays_f32() {
    let dir = tmpdir("f32");
    let (inp, outp) = (dir.join("in.safetensors"), dir.join("out.safetensors"));
    let f32t = |shape: &[usize]| AnyTensor::F32 {
        shape: shape.to_vec(),
        data: vec![0.25; shape.iter().product()],
    };
    write(
        &inp,
        vec![
            ("q", f32t(&[4, 2])),
            ("k", f32t(&[3, 2])),
            ("v", f32t(&[3, 5])),
        ],
    );
    let out = run(&[
        "attention",
        "--input",
        inp.to_str().unwrap(),
        "--output",
        outp.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = TensorFile::read(&outp).unwrap();
    assert_eq!(f.names(), vec!["lse", "o"]);
    let o = f.get("o").unwrap();
    assert!(matches!(o, AnyTensor::F32 { .. }));
    // Equal scores: uniform attention over equal values gives exactly 0.25.
    assert!(o.to_real::<f32>().unwrap().iter().all(|&x| x == 0.25));
}

#[test]
fn bad_inputs_give_one_clear_line() {
    let dir = tmpdir("bad");
    let p = |n: &str| dir.join(n);
    // Missing tensor.
    write(
        &p("missing.st"),
        vec![("q", f64t(&[3, 2], 1)), ("k", f64t(&[3, 2], 2))],
    );
    expect_error(&p("missing.st"), &[], "tensor `v` is missing");
    // Wrong rank.
    write(
        &p("rank.st"),
        vec![
            ("q", f64t(&[6], 1)),
            ("k", f64t(&[3, 2], 2)),
            ("v", f64t(&[3, 2], 3)),
        ],
    );
    expect_error(&p("rank.st"), &[], "rank of `q`");
    // Shapes that disagree.
    write(
        &p("shape.st"),
        vec![
            ("q", f64t(&[3, 2], 1)),
            ("k", f64t(&[3, 4], 2)),
            ("v", f64t(&[3, 2], 3)),
        ],
    );
    expect_error(&p("shape.st"), &[], "shape mismatch");
    // Leading dims that disagree.
    write(
        &p("lead.st"),
        vec![
            ("q", f64t(&[2, 3, 2], 1)),
            ("k", f64t(&[3, 3, 2], 2)),
            ("v", f64t(&[3, 3, 2], 3)),
        ],
    );
    expect_error(&p("lead.st"), &[], "leading");
    // NaN.
    let mut q = f64t(&[3, 2], 1);
    if let AnyTensor::F64 { data, .. } = &mut q {
        data[4] = f64::NAN;
    }
    write(
        &p("nan.st"),
        vec![("q", q), ("k", f64t(&[3, 2], 2)), ("v", f64t(&[3, 2], 3))],
    );
    expect_error(&p("nan.st"), &[], "q[2, 0] is NaN");
    // Entries are checked once, by the engines, on the flattened stacks; the error
    // still names the first offender by its index in the file's own shape (here
    // batch 1, head 0 of a [2, 2, 3, 2] tensor), whichever engine or command meets it.
    let with_nan = |shape: &[usize], seed: u64, at: usize| {
        let mut t = f64t(shape, seed);
        if let AnyTensor::F64 { data, .. } = &mut t {
            data[at] = f64::NAN;
        }
        t
    };
    let lead = [2, 2, 3, 2];
    // Flat index 2*6 + 2*2 + 1 = 17 of [2, 2, 3, 2] is [1, 0, 2, 1].
    write(
        &p("nan_do.st"),
        vec![
            ("q", f64t(&lead, 1)),
            ("k", f64t(&lead, 2)),
            ("v", f64t(&lead, 3)),
            ("do", with_nan(&lead, 4, 17)),
        ],
    );
    write(
        &p("nan_k.st"),
        vec![
            ("q", f64t(&lead, 1)),
            ("k", with_nan(&lead, 2, 17)),
            ("v", f64t(&lead, 3)),
        ],
    );
    for engine in ["exact", "poly", "auto"] {
        expect_error(
            &p("nan_do.st"),
            &["--engine", engine],
            "do[1, 0, 2, 1] is NaN",
        );
        expect_error(
            &p("nan_k.st"),
            &["--engine", engine],
            "k[1, 0, 2, 1] is NaN",
        );
    }
    for file in ["nan_do.st", "nan_k.st"] {
        let report = dir.join(format!("{file}.report"));
        let out = run(&[
            "certify",
            "--input",
            p(file).to_str().unwrap(),
            "--out",
            report.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && !err.contains("panicked"), "{err}");
        let name = &file[4..file.len() - 3];
        assert!(err.contains(&format!("{name}[1, 0, 2, 1] is NaN")), "{err}");
    }
    // Empty dimension.
    write(
        &p("empty.st"),
        vec![
            ("q", f64t(&[0, 2], 1)),
            ("k", f64t(&[3, 2], 2)),
            ("v", f64t(&[3, 2], 3)),
        ],
    );
    expect_error(&p("empty.st"), &[], "empty dimension");
    // Mixed dtypes.
    let k32 = AnyTensor::F32 {
        shape: vec![3, 2],
        data: vec![0.0; 6],
    };
    write(
        &p("mixed.st"),
        vec![("q", f64t(&[3, 2], 1)), ("k", k32), ("v", f64t(&[3, 2], 3))],
    );
    expect_error(&p("mixed.st"), &[], "all inputs must share one dtype");
    // Unsupported dtype (I64 written by hand: 8 bytes per element).
    std::fs::write(
        p("i64.st"),
        safetensors_bytes(&[
            ("q", "I64", &[2, 2], 32),
            ("k", "I64", &[2, 2], 32),
            ("v", "I64", &[2, 2], 32),
        ]),
    )
    .unwrap();
    expect_error(&p("i64.st"), &[], "dtype I64");
    // F16 is read (computed in f32) and the results are written in F16.
    std::fs::write(
        p("f16.st"),
        safetensors_bytes(&[
            ("q", "F16", &[2, 2], 8),
            ("k", "F16", &[2, 2], 8),
            ("v", "F16", &[2, 2], 8),
        ]),
    )
    .unwrap();
    let f16_out = p("f16.out.safetensors");
    let out = run(&[
        "attention",
        "--input",
        p("f16.st").to_str().unwrap(),
        "--output",
        f16_out.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let o = TensorFile::read(&f16_out).unwrap();
    assert_eq!(o.get("o").unwrap().dtype(), polyattn::io::DType::F16);
    // Not a safetensors file.
    std::fs::write(p("junk.st"), b"this is not a tensor file at all").unwrap();
    expect_error(&p("junk.st"), &[], "not a valid safetensors file");
    // Truncated file.
    let good = std::fs::read(p("shape.st")).unwrap();
    std::fs::write(p("trunc.st"), &good[..good.len() - 5]).unwrap();
    expect_error(&p("trunc.st"), &[], "not a valid safetensors file");
    // No such file.
    expect_error(&p("does-not-exist.st"), &[], "cannot read");
    // Bad scale.
    write(
        &p("ok.st"),
        vec![
            ("q", f64t(&[3, 2], 1)),
            ("k", f64t(&[3, 2], 2)),
            ("v", f64t(&[3, 2], 3)),
        ],
    );
    expect_error(&p("ok.st"), &["--scale", "inf"], "scale");
}

/// A safetensors file built by hand (header JSON + zero data), for dtypes our writer
/// does not produce.
fn safetensors_bytes(tensors: &[(&str, &str, &[usize], usize)]) -> Vec<u8> {
    let mut header = String::from("{");
    let mut off = 0;
    for (i, (name, dtype, shape, bytes)) in tensors.iter().enumerate() {
        if i > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            r#""{name}":{{"dtype":"{dtype}","shape":{shape:?},"data_offsets":[{off},{}]}}"#,
            off + bytes
        ));
        off += bytes;
    }
    header.push('}');
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend(std::iter::repeat_n(0u8, off));
    out
}

#[test]
fn demo_runs_small() {
    let dir = tmpdir("demo");
    let out = run(&[
        "demo",
        "--heads",
        "2",
        "--n",
        "96",
        "--d",
        "8",
        "--samples",
        "3",
        "--model-n",
        "256",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(s.contains("Certified errors"), "{s}");
    assert!(s.contains("F32") && s.contains("F64"), "{s}");
    assert!(s.contains("polynomial engine"), "{s}");
    assert!(dir.join("head_report.json").exists() && dir.join("model_run.json").exists());
}

#[test]
fn demo_rejects_zero_sizes() {
    let out = run(&["demo", "--n", "0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn certify_writes_a_report() {
    let dir = tmpdir("certify");
    let inp = dir.join("in.safetensors");
    let small = |shape: &[usize], seed: u64| {
        let n = shape.iter().product();
        let data = polyattn::rng::SplitMix64::new(seed).normal_vec(n, 0.3);
        AnyTensor::F64 {
            shape: shape.to_vec(),
            data,
        }
    };
    write(
        &inp,
        vec![
            ("q", small(&[40, 3], 1)),
            ("k", small(&[40, 3], 2)),
            ("v", f64t(&[40, 2], 3)),
            ("do", f64t(&[40, 2], 4)),
        ],
    );
    let out_dir = dir.join("report");
    let out = run(&[
        "certify",
        "--input",
        inp.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--mask",
        "causal",
        "--eps",
        "1e-6",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(json["schema"], "polyattn.certify.attention/1");
    assert_eq!(json["tensors"].as_array().unwrap().len(), 4);
    assert_eq!(json["reference"]["kind"], "mpfr");
    let o = &json["tensors"][0];
    assert!(o["certified_max_abs"].as_f64().unwrap() <= o["a_priori_total"].as_f64().unwrap());
    assert!(o["a_priori_total"].as_f64().unwrap() <= 1e-6);
    let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(md.contains("Certified error report") && md.contains("(rows.svg)"));
    // The plot: one certified-error and one a-priori series per tensor.
    let svg = std::fs::read_to_string(out_dir.join("rows.svg")).unwrap();
    assert!(svg.starts_with("<svg"));
    for t in ["o", "dq", "dk", "dv"] {
        assert!(svg.contains(&format!("{t}: certified error")), "{t}");
        assert!(svg.contains(&format!("{t}: a priori bound")), "{t}");
    }
}

/// Flags at extreme values get one typed error line, never an abort: sizes whose
/// tensors would exceed 2^31 values, MPFR precisions outside 16..=4096, more sampled
/// rows than exist, negative numbers passed to numeric flags.
#[test]
fn extreme_flag_values_are_refused_cleanly() {
    let dir = tmpdir("extreme");
    let (w, x) = (dir.join("w.safetensors"), dir.join("x.safetensors"));
    let (ws, xs) = (w.to_str().unwrap(), x.to_str().unwrap());
    let cases: [(&[&str], &str); 6] = [
        (&["demo", "--n", "10000000000"], "more than 2^31 values"),
        (
            &["demo", "--model-n", "10000000000"],
            "more than 2^31 values",
        ),
        (&["demo", "--prec", "0"], "--prec"),
        (
            &["demo", "--n", "4", "--heads", "1", "--samples", "5"],
            "--samples",
        ),
        (
            &[
                "model",
                "--init",
                "--weights",
                ws,
                "--input",
                xs,
                "--n",
                "100000000000",
            ],
            "more than 2^31 values",
        ),
        (
            &[
                "model",
                "--init",
                "--weights",
                ws,
                "--input",
                xs,
                "--eps",
                "-1",
            ],
            "",
        ),
    ];
    for (args, needle) in cases {
        let out = run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        if needle.is_empty() {
            // `--eps -1` parses as a number (not as an unknown flag -1); with --init it
            // is unused, so the run succeeds.
            assert!(out.status.success(), "{args:?}: {err}");
            continue;
        }
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{err}"
        );
    }
    let a = dir.join("a.safetensors");
    write(
        &a,
        vec![
            ("q", f64t(&[1, 4, 2], 1)),
            ("k", f64t(&[1, 4, 2], 2)),
            ("v", f64t(&[1, 4, 2], 3)),
        ],
    );
    let out = dir.join("o.safetensors");
    let (a, out) = (a.to_str().unwrap(), out.to_str().unwrap());
    let bad_eps = run(&[
        "attention",
        "--input",
        a,
        "--output",
        out,
        "--engine",
        "poly",
        "--eps",
        "-1",
    ]);
    let err = String::from_utf8_lossy(&bad_eps.stderr);
    assert!(
        err.contains("eps = -1") && err.contains("positive"),
        "{err}"
    );
}

/// `polyattn certify --weights`: a model written by `model --init`, certified against
/// the double-double ball enclosure (forced with `--reference ball`), writes a report
/// whose reference is the balls, with every error certified, and its plot.
#[test]
fn certify_model_with_the_ball_reference() {
    let dir = tmpdir("certify_ball");
    let (w, x) = (dir.join("w.safetensors"), dir.join("x.safetensors"));
    let (ws, xs) = (w.to_str().unwrap(), x.to_str().unwrap());
    let init = run(&[
        "model",
        "--init",
        "--weights",
        ws,
        "--input",
        xs,
        "--n",
        "24",
        "--d-model",
        "8",
        "--layers",
        "2",
        "--heads",
        "2",
        "--causal",
        "--qk-scale",
        "0.25",
    ]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let out_dir = dir.join("report");
    let out = run(&[
        "certify",
        "--weights",
        ws,
        "--input",
        xs,
        "--reference",
        "ball",
        "--power-iters",
        "0",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(json["schema"], "polyattn.certify.model/1");
    assert_eq!(json["reference"]["kind"], "ball");
    assert!(json["reference"]["max_rel_radius"].as_f64().unwrap() < 1e-12);
    // --power-iters 0 leaves the propagated bound out.
    assert!(json["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["a_priori_fro_bound"].is_null()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("double-double ball") && stdout.contains("certified"),
        "{stdout}"
    );
    assert!(std::fs::read_to_string(out_dir.join("errors.svg"))
        .unwrap()
        .contains("certified max"));
    // Bounded scores (--qk-scale 0.25): the polynomial engine ran in every layer.
    let layers = json["layers"].as_array().unwrap();
    assert!(layers.iter().all(|l| l["engine"] == "poly"), "{layers:?}");
    let bad = run(&[
        "model",
        "--init",
        "--weights",
        ws,
        "--input",
        xs,
        "--qk-scale",
        "-1",
    ]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--qk-scale"));
}

/// README "Bad input and faults", row *values*: scores that would overflow the dtype
/// give `Overflow` naming the quantity and its bound; entries the polynomial engine
/// cannot certify give `PolyRefused` with R, B and sqrt(ln n); one line, status 1.
#[test]
fn value_refusals_name_the_quantity_and_its_bound() {
    let dir = tmpdir("values");
    // F32 entries of 1e20: scores up to about 1e40 > f32::MAX (3.4e38).
    let big = |seed: u64| AnyTensor::F32 {
        shape: vec![4, 2],
        data: polyattn::rng::SplitMix64::new(seed)
            .normal_vec(8, 1.0)
            .into_iter()
            .map(|x| (x * 1e20) as f32)
            .collect(),
    };
    let p = dir.join("overflow.st");
    write(&p, vec![("q", big(1)), ("k", big(2)), ("v", big(3))]);
    expect_error(&p, &[], "beyond the finite range of F32");
    let out = run(&[
        "attention",
        "--input",
        p.to_str().unwrap(),
        "--output",
        dir.join("o.st").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("polyattn: error: "));
    // F64 entries of scale 100: R = tau max||q|| max||k|| is far beyond any degree
    // the rank limit allows.
    let wide = |seed: u64| AnyTensor::F64 {
        shape: vec![16, 4],
        data: polyattn::rng::SplitMix64::new(seed).normal_vec(64, 100.0),
    };
    let p = dir.join("refused.st");
    write(&p, vec![("q", wide(1)), ("k", wide(2)), ("v", wide(3))]);
    for needle in ["polynomial engine refused", "R = ", "B = ", "sqrt(ln n) = "] {
        expect_error(&p, &["--engine", "poly"], needle);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// README "Bad input and faults", row *concurrency*: when several heads refuse with
/// different reasons, the first refusing head in head order is reported whatever the
/// scheduling. Head 0 is certifiable (scale 0.1), head 1 refuses with R of about 1e5
/// (scale 100: R = tau max||q|| max||k|| <= 0.5 (100 * 8)^2 = 3.2e5 for these draws'
/// norms, each below 8 standard units), heads 2..8 with R of about 1e9 (scale 1e4,
/// norms above 0.1 units): the reported R must be head 1's (< 1e7), with 1 and with
/// 4 threads.
#[test]
fn the_first_refusing_head_in_head_order_is_reported() {
    let dir = tmpdir("headorder");
    let t = |seed: u64| {
        let mut r = polyattn::rng::SplitMix64::new(seed);
        let data: Vec<f64> = (0..8)
            .flat_map(|h| {
                let s = [0.1, 100.0][..].get(h).copied().unwrap_or(1e4);
                r.normal_vec(16 * 4, s)
            })
            .collect();
        AnyTensor::F64 {
            shape: vec![8, 16, 4],
            data,
        }
    };
    let p = dir.join("heads.st");
    write(&p, vec![("q", t(1)), ("k", t(2)), ("v", t(3))]);
    for threads in ["1", "4"] {
        let out = Command::new(bin())
            .env("RAYON_NUM_THREADS", threads)
            .args(["attention", "--engine", "poly", "--input"])
            .arg(&p)
            .arg("--output")
            .arg(dir.join("o.st"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        let r: f64 = err
            .split("R = ")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| panic!("no R in {err}"));
        assert!((1.0..1e7).contains(&r), "threads {threads}: R = {r}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// README "The command line and its files": the output tensors (exact: o, lse and
/// with `do` the gradients; poly adds the F64 `*_bound` tensors) and the metadata keys
/// the README lists; `auto` that falls back to exact records `auto_reason`.
#[test]
fn output_tensors_and_metadata_are_as_documented() {
    let dir = tmpdir("documented");
    let p = dir.join("in.st");
    let t = |seed: u64, scale: f64| AnyTensor::F64 {
        shape: vec![2, 12, 4],
        data: polyattn::rng::SplitMix64::new(seed).normal_vec(96, scale),
    };
    write(
        &p,
        vec![
            ("q", t(1, 0.3)),
            ("k", t(2, 0.3)),
            ("v", t(3, 1.0)),
            ("do", t(4, 1.0)),
        ],
    );
    let go = |input: &Path, engine: &str| {
        let o = dir.join(format!("{engine}.st"));
        let out = run(&[
            "attention",
            "--input",
            input.to_str().unwrap(),
            "--output",
            o.to_str().unwrap(),
            "--engine",
            engine,
            "--mask",
            "causal",
            "--eps",
            "1e-6",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        TensorFile::read(&o).unwrap()
    };
    let base = ["engine", "engine_requested", "mask", "scale", "dtype"];
    let ex = go(&p, "exact");
    assert_eq!(ex.names(), ["dk", "dq", "dv", "lse", "o"]);
    for k in base {
        assert!(ex.metadata.contains_key(k), "exact: no {k}");
    }
    assert_eq!(ex.metadata["engine"], "exact");
    let po = go(&p, "poly");
    let mut names = po.names();
    names.sort();
    assert_eq!(
        names,
        ["dk", "dk_bound", "dq", "dq_bound", "dv", "dv_bound", "lse", "o", "o_bound"]
    );
    for n in ["o_bound", "dq_bound", "dk_bound", "dv_bound"] {
        assert!(matches!(po.get(n).unwrap(), AnyTensor::F64 { .. }), "{n}");
        let base = po.get(&n.replace("_bound", "")).unwrap();
        assert_eq!(po.get(n).unwrap().shape(), base.shape(), "{n}");
    }
    for k in base.into_iter().chain([
        "degree",
        "rank",
        "radius",
        "entry_bound",
        "sqrt_ln_n",
        "eps_poly",
        "bound_o",
        "bound_dq",
        "bound_dk",
        "bound_dv",
        "heads_json",
    ]) {
        assert!(po.metadata.contains_key(k), "poly: no {k}");
    }
    assert_eq!(
        (
            po.metadata["engine"].as_str(),
            po.metadata["engine_requested"].as_str()
        ),
        ("poly", "poly")
    );
    // Scale-100 entries: the polynomial engine refuses, auto falls back to exact.
    let big = dir.join("big.st");
    write(
        &big,
        vec![("q", t(1, 100.0)), ("k", t(2, 100.0)), ("v", t(3, 1.0))],
    );
    let au = go(&big, "auto");
    assert_eq!(
        (
            au.metadata["engine"].as_str(),
            au.metadata["engine_requested"].as_str()
        ),
        ("exact", "auto")
    );
    assert!(au.metadata.contains_key("auto_reason"));
    assert_eq!(au.names(), ["lse", "o"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--softcap C` (Gemma 2's `c tanh(s / c)`): `attention` writes exactly what the
/// library's exact engine computes with that cap (values and gradients, bit for bit),
/// records it in the metadata, and differs from the uncapped run; the polynomial engine
/// refuses in one line naming the softcap, auto falls back to exact; a softcap that is
/// negative, subnormal or not finite is a one-line error and nothing is written, and 0
/// means none (FlashAttention's convention).
#[test]
fn softcap_on_the_command_line() {
    use polyattn::attention::{exact, AttentionConfig, Mask};
    use polyattn::tensor::Tensor3;
    let dir = tmpdir("softcap");
    let inp = dir.join("in.safetensors");
    let (q, k, v, d_o) = (
        f64t(&[2, 9, 3], 11),
        f64t(&[2, 6, 3], 12),
        f64t(&[2, 6, 4], 13),
        f64t(&[2, 9, 4], 14),
    );
    write(
        &inp,
        vec![
            ("q", q.clone()),
            ("k", k.clone()),
            ("v", v.clone()),
            ("do", d_o.clone()),
        ],
    );
    let attention = |name: &str, extra: &[&str]| attention_into(&inp, &dir.join(name), extra);
    let (out, capped) = attention("cap.safetensors", &["--softcap", "0.5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = TensorFile::read(&capped).unwrap();
    assert_eq!(f.metadata.get("softcap").map(String::as_str), Some("5e-1"));
    let stack =
        |t: &AnyTensor, h, n, d| Tensor3::from_vec(h, n, d, t.to_real::<f64>().unwrap()).unwrap();
    let (q, k, v, d_o) = (
        stack(&q, 2, 9, 3),
        stack(&k, 2, 6, 3),
        stack(&v, 2, 6, 4),
        stack(&d_o, 2, 9, 4),
    );
    let cfg = AttentionConfig {
        scale: None,
        mask: Mask::None,
        softcap: Some(0.5),
    };
    let fwd = exact::forward_multihead(&q, &k, &v, &cfg).unwrap();
    let g = exact::backward_multihead(&q, &k, &v, &fwd, &d_o, &cfg).unwrap();
    let get = |f: &TensorFile, n: &str| f.get(n).unwrap().to_real::<f64>().unwrap();
    assert_eq!(get(&f, "o"), fwd.o.as_slice());
    assert_eq!(get(&f, "dq"), g.dq.as_slice());
    assert_eq!(get(&f, "dk"), g.dk.as_slice());
    assert_eq!(get(&f, "dv"), g.dv.as_slice());
    let (out, plain) = attention("plain.safetensors", &[]);
    assert!(out.status.success());
    assert_ne!(get(&TensorFile::read(&plain).unwrap(), "o"), get(&f, "o"));
    // Poly refuses naming the cap; auto falls back to exact and says why.
    expect_error(
        &inp,
        &["--softcap", "0.5", "--engine", "poly"],
        "softcap 0.5",
    );
    let (out, a) = attention(
        "auto.safetensors",
        &["--softcap", "0.5", "--engine", "auto"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fa = TensorFile::read(&a).unwrap();
    assert_eq!(fa.metadata.get("engine").map(String::as_str), Some("exact"));
    assert!(fa
        .metadata
        .get("auto_reason")
        .is_some_and(|r| r.contains("softcap")));
    assert_eq!(get(&fa, "o"), get(&f, "o"));
    for bad in ["-1", "nan", "inf", "1e-320"] {
        expect_error(&inp, &["--softcap", bad], "softcap");
    }
    // 0 means no cap (FlashAttention's softcap=0.0): the uncapped file, byte for byte.
    let (out, zero) = attention("zero.safetensors", &["--softcap", "0"]);
    assert!(out.status.success());
    assert_eq!(
        std::fs::read(&zero).unwrap(),
        std::fs::read(&plain).unwrap()
    );
}
