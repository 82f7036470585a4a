//! The `polyattn model` command end to end: files written by the library, run by the
//! binary; `--init`; bad inputs.

#[path = "../../tests/model_common/mod.rs"]
mod model_common;

use model_common::{batch, config, poly_model};
use polyattn::io::{write_tensors, AnyTensor, TensorFile};
use polyattn::model::file::{batch_tensors, model_tensors};
use polyattn::model::{Activation, Batch, EngineChoice, LossKind, Model};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const EXACT: [EngineChoice; 1] = [EngineChoice::Exact];

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_polyattn")
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("polyattn-model-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn write_model(dir: &Path, model: &Model<f64>, b: &Batch<f64>) -> (PathBuf, PathBuf) {
    let (w, x) = (dir.join("w.safetensors"), dir.join("x.safetensors"));
    let (t, m) = model_tensors(model);
    write_tensors(&w, &t, &m).unwrap();
    write_tensors(&x, &batch_tensors(b), &HashMap::new()).unwrap();
    (w, x)
}

fn f64_data(t: &AnyTensor) -> Vec<f64> {
    t.to_f64_vec()
}

/// Files written by the library, run by the binary: the output holds the loss and
/// every gradient, bitwise those of the library (same code, deterministic).
#[test]
fn cli_round_trip() {
    use Activation::*;
    let dir = tmpdir("round");
    for (i, (cfg, tokens)) in [
        (
            config(2, 2, 4, 6, Gelu, true, true, LossKind::CrossEntropy),
            true,
        ),
        (config(2, 1, 6, 5, Relu, false, false, LossKind::Mse), false),
    ]
    .into_iter()
    .enumerate()
    {
        let model = Model::<f64>::init(cfg, tokens, 40 + i as u64).unwrap();
        let b = batch(&model, 7, 50 + i as u64);
        let (w, x) = write_model(&dir, &model, &b);
        let g = dir.join("g.safetensors");
        let out = Command::new(bin())
            .args([
                "model",
                "--weights",
                s(&w),
                "--input",
                s(&x),
                "--output",
                s(&g),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let file = TensorFile::read(&g).unwrap();
        let (loss, grads) = model.loss_and_gradients(&b, &EXACT).unwrap();
        assert_eq!(f64_data(file.get("loss").unwrap()), vec![loss]);
        let named = grads.named();
        for (name, shape, data) in &named {
            let t = file.get(name).unwrap();
            assert_eq!(t.shape(), shape.as_slice(), "{name}");
            assert_eq!(&f64_data(t), data, "{name}");
        }
        assert_eq!(file.names().len(), named.len() + 1);
        assert_eq!(file.metadata["engines"], "exact,exact");
        assert_eq!(file.metadata["degrees"], "-,-");
    }
    // Poly through the CLI: every layer poly, degrees recorded.
    let model = poly_model(
        config(2, 2, 8, 8, Gelu, true, true, LossKind::Mse),
        false,
        60,
    );
    let b = batch(&model, 16, 61);
    let (w, x) = write_model(&dir, &model, &b);
    let g = dir.join("gp.safetensors");
    let out = Command::new(bin())
        .args([
            "model",
            "--weights",
            s(&w),
            "--input",
            s(&x),
            "--output",
            s(&g),
        ])
        .args(["--engine", "poly", "--eps", "1e-6"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = TensorFile::read(&g).unwrap();
    assert_eq!(file.metadata["engines"], "poly,poly");
    assert!(file.metadata["degrees"]
        .split(',')
        .all(|d| d.parse::<usize>().is_ok()));
    assert!(file.metadata["engines_json"].contains("bound_dq"));
}

/// A cosine-attention model through the polynomial engine: it runs (the audit found
/// the whole command failing on the propagated bound, which covers dot-product
/// attention only) and its output carries no `dx_error_bound`.
#[test]
fn cli_cosine_model_through_the_polynomial_engine() {
    use polyattn::model::{CosineAttention, Params};
    let dir = tmpdir("cosine");
    let mut cfg = config(1, 2, 8, 8, Activation::Gelu, true, true, LossKind::Mse);
    cfg.cosine = Some(CosineAttention {
        tau_max: 1.0,
        tau_init: 0.5,
        learnable: true,
    });
    cfg.d_qk = Some(2);
    let model = Model::new(cfg.clone(), Params::<f64>::init(&cfg, false, 7).unwrap()).unwrap();
    let b = batch(&model, 12, 8);
    let (w, x) = write_model(&dir, &model, &b);
    let g = dir.join("g.safetensors");
    let out = Command::new(bin())
        .args([
            "model",
            "--weights",
            s(&w),
            "--input",
            s(&x),
            "--output",
            s(&g),
        ])
        .args(["--engine", "poly", "--eps", "1e-6"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = TensorFile::read(&g).unwrap();
    assert_eq!(file.metadata["engines"], "poly");
    assert!(!file.metadata.contains_key("dx_error_bound"));
    assert!(file.get("grad.layers.0.attn.log_tau").is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--init` writes files the library reads; running them gives the library's result.
#[test]
fn cli_init_then_run() {
    let dir = tmpdir("init");
    let (w, x, g) = (dir.join("w.st"), dir.join("x.st"), dir.join("g.st"));
    let out = Command::new(bin())
        .args([
            "model",
            "--init",
            "--weights",
            s(&w),
            "--input",
            s(&x),
            "--output",
            s(&g),
        ])
        .args([
            "--n",
            "10",
            "--d-model",
            "6",
            "--heads",
            "3",
            "--layers",
            "3",
            "--causal",
        ])
        .args(["--loss", "cross-entropy", "--tokens", "--vocab", "7"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let model = polyattn::model::file::read_model::<f64>(&TensorFile::read(&w).unwrap()).unwrap();
    assert_eq!(model.config().n_layers, 3);
    let b = polyattn::model::file::read_batch(&TensorFile::read(&x).unwrap(), &model).unwrap();
    assert_eq!(b.len(), 10);
    let (loss, _) = model.loss_and_gradients(&b, &EXACT).unwrap();
    let file = TensorFile::read(&g).unwrap();
    assert_eq!(f64_data(file.get("loss").unwrap()), vec![loss]);
}

/// Bad configurations and files: one error line naming the problem, never a panic.
#[test]
fn cli_bad_inputs() {
    use Activation::*;
    let dir = tmpdir("bad");
    let cfg = config(2, 2, 4, 6, Gelu, true, true, LossKind::CrossEntropy);
    let model = Model::<f64>::init(cfg.clone(), true, 70).unwrap();
    let b = batch(&model, 5, 71);
    let (good_t, good_m) = model_tensors(&model);
    let good_x = batch_tensors(&b);
    type Edit = Box<
        dyn Fn(
            &mut Vec<(String, AnyTensor)>,
            &mut HashMap<String, String>,
            &mut Vec<(String, AnyTensor)>,
        ),
    >;
    let set_meta = |k: &'static str, v: &'static str| -> Edit {
        Box::new(move |_, m, _| {
            m.insert(k.into(), v.into());
        })
    };
    let cases: Vec<(&str, Edit, &str)> = vec![
        ("heads", set_meta("n_heads", "3"), "does not divide"),
        ("act", set_meta("activation", "tanh"), "activation"),
        ("ln", set_meta("layer_norm", "yes"), "layer_norm"),
        ("loss", set_meta("loss", "hinge"), "loss"),
        ("layers", set_meta("n_layers", "-1"), "n_layers"),
        (
            "nometa",
            Box::new(|_, m, _| {
                m.remove("d_model");
            }),
            "d_model",
        ),
        (
            "missing",
            Box::new(|t, _, _| t.retain(|(n, _)| n != "layers.1.mlp.w2")),
            "layers.1.mlp.w2",
        ),
        (
            "shape",
            Box::new(|t, _, _| {
                let i = t.iter().position(|(n, _)| n == "layers.0.attn.wq").unwrap();
                t[i].1 = AnyTensor::F64 {
                    shape: vec![4, 3],
                    data: vec![0.0; 12],
                };
            }),
            "layers.0.attn.wq",
        ),
        (
            "nan",
            Box::new(|t, _, _| {
                let i = t.iter().position(|(n, _)| n == "layers.1.mlp.b1").unwrap();
                if let AnyTensor::F64 { data, .. } = &mut t[i].1 {
                    data[2] = f64::NAN;
                }
            }),
            "layers.1.mlp.b1",
        ),
        // README "Bad input and faults", row *values*: a layer whose activations
        // overflow (finite weights of f64::MAX: the products overflow) is named.
        (
            "overflow",
            Box::new(|t, _, _| {
                let i = t.iter().position(|(n, _)| n == "layers.0.attn.wq").unwrap();
                if let AnyTensor::F64 { data, .. } = &mut t[i].1 {
                    data.iter_mut().for_each(|x| *x = f64::MAX);
                }
            }),
            "(forward): the computed",
        ),
        (
            "extra",
            Box::new(|t, _, _| {
                t.push((
                    "layers.2.attn.wq".into(),
                    AnyTensor::F64 {
                        shape: vec![1],
                        data: vec![0.0],
                    },
                ))
            }),
            "layers.2.attn.wq",
        ),
        (
            "label",
            Box::new(|_, _, x| {
                let i = x.iter().position(|(n, _)| n == "labels").unwrap();
                x[i].1 = AnyTensor::F64 {
                    shape: vec![5],
                    data: vec![0.0, 1.0, 5.0, 0.0, 0.0],
                };
            }),
            "labels[2]",
        ),
        (
            "frac",
            Box::new(|_, _, x| {
                let i = x.iter().position(|(n, _)| n == "tokens").unwrap();
                x[i].1 = AnyTensor::F64 {
                    shape: vec![5],
                    data: vec![0.0, 1.5, 2.0, 0.0, 0.0],
                };
            }),
            "tokens[1]",
        ),
        (
            "both",
            Box::new(|_, _, x| {
                x.push((
                    "x".into(),
                    AnyTensor::F64 {
                        shape: vec![5, 4],
                        data: vec![0.0; 20],
                    },
                ))
            }),
            "tokens",
        ),
        (
            "noemb",
            Box::new(|t, _, _| t.retain(|(n, _)| n != "embedding")),
            "embedding",
        ),
        (
            "len",
            Box::new(|_, _, x| {
                let i = x.iter().position(|(n, _)| n == "labels").unwrap();
                x[i].1 = AnyTensor::F64 {
                    shape: vec![4],
                    data: vec![0.0; 4],
                };
            }),
            "labels",
        ),
    ];
    for (name, edit, needle) in cases {
        let (mut t, mut m, mut x) = (good_t.clone(), good_m.clone(), good_x.clone());
        edit(&mut t, &mut m, &mut x);
        let (w, xi, g) = (
            dir.join(format!("{name}.w")),
            dir.join(format!("{name}.x")),
            dir.join(format!("{name}.g")),
        );
        write_tensors(&w, &t, &m).unwrap();
        write_tensors(&xi, &x, &HashMap::new()).unwrap();
        let out = Command::new(bin())
            .args([
                "model",
                "--weights",
                s(&w),
                "--input",
                s(&xi),
                "--output",
                s(&g),
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: expected failure");
        assert!(!err.contains("panicked"), "{name}: panic: {err}");
        assert!(
            err.contains(needle),
            "{name}: {err:?} does not mention {needle:?}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{name}: {err}");
        assert!(!g.exists(), "{name}: output written despite the error");
    }
    // Not a safetensors file; no --output.
    let junk = dir.join("junk");
    std::fs::write(&junk, b"not a file").unwrap();
    for (args, needle) in [
        (
            vec![
                "--weights",
                s(&junk),
                "--input",
                s(&junk),
                "--output",
                s(&dir.join("o")),
            ],
            "safetensors",
        ),
        (vec!["--weights", s(&junk), "--input", s(&junk)], "--output"),
    ] {
        let out = Command::new(bin())
            .arg("model")
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(!err.contains("panicked") && err.contains(needle), "{err}");
    }
}
