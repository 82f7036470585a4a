//! The multi-layer model (`polyattn::model`): exact-engine gradients of every
//! parameter and of X against central finite differences of the loss; polynomial
//! engine gradients against the exact ones; the `polyattn model` command end to end.

use polyattn::attention::poly::{Accuracy, GradientKind, PolyConfig};
use polyattn::io::{write_tensors, AnyTensor, TensorFile};
use polyattn::model::file::{batch_tensors, model_tensors};
use polyattn::model::{
    Activation, Batch, EngineChoice, LossKind, Model, ModelConfig, Params, PolySettings, Source,
    Target,
};
use polyattn::rng::SplitMix64;
use polyattn::tensor::Matrix;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const EXACT: [EngineChoice; 1] = [EngineChoice::Exact];

#[allow(clippy::too_many_arguments)]
fn config(
    n_layers: usize,
    n_heads: usize,
    d_model: usize,
    d_ff: usize,
    activation: Activation,
    layer_norm: bool,
    causal: bool,
    loss: LossKind,
) -> ModelConfig {
    ModelConfig {
        n_layers,
        n_heads,
        d_model,
        d_ff,
        activation,
        layer_norm,
        causal,
        loss,
        vocab: (loss == LossKind::CrossEntropy).then_some(5),
        d_qk: None,
        cosine: None,
    }
}

/// A seeded batch of length `n` for `model` (tokens when the model has an embedding).
fn batch(model: &Model<f64>, n: usize, seed: u64) -> Batch<f64> {
    let cfg = model.config();
    let mut r = SplitMix64::new(seed);
    let d = cfg.d_model;
    let vocab = cfg.vocab.unwrap_or(1);
    let source = if model.params().embedding.is_some() {
        Source::Tokens((0..n).map(|_| r.int(0, vocab - 1)).collect())
    } else {
        Source::Embeddings(Matrix::from_fn(n, d, |_, _| r.normal()).unwrap())
    };
    let target = match cfg.loss {
        LossKind::Mse => Target::Regression(Matrix::from_fn(n, d, |_, _| r.normal()).unwrap()),
        LossKind::CrossEntropy => Target::Labels((0..n).map(|_| r.int(0, vocab - 1)).collect()),
    };
    Batch { source, target }
}

/// The loss with one scalar of the parameters (slot `k`, entry `j`) or of X (`k` =
/// number of slots) moved by `delta`.
fn loss_at(model: &Model<f64>, b: &Batch<f64>, k: usize, j: usize, delta: f64) -> f64 {
    let mut p: Params<f64> = model.params().clone();
    let mut b = b.clone();
    let mut slots = p.slots_mut();
    if k < slots.len() {
        slots[k].2[j] += delta;
    } else if let Source::Embeddings(x) = &mut b.source {
        x.as_mut_slice()[j] += delta;
    }
    drop(slots);
    Model::new(model.config().clone(), p)
        .unwrap()
        .loss(&b, &EXACT)
        .unwrap()
}

/// Checks every gradient entry against a central difference.
///
/// Step h = 1e-4. Error of the central difference (f(x+h) - f(x-h))/(2h):
/// truncation h^2 |f'''| / 6 (f''' at a point within h of x), plus rounding
/// (|e+| + |e-|)/(2h) <= eps_L / h, where eps_L bounds the rounding error of one
/// f64 evaluation of L. We take eps_L = 1e3 u (|L| + 1), u = 2^-53: every loss here is
/// a sum of at most a few hundred terms, each at the end of a chain of at most a few
/// hundred roundings (gamma_k with k = 1000 covers both, and the "+1" covers sums
/// whose terms are larger than their total). f''' is estimated per entry by the third
/// difference (f(x+2H) - 2f(x+H) + 2f(x-H) - f(x-2H)) / (2H^3) at H = 1e-2 (its own
/// rounding, 3 eps_L / H^3 ~ 3e-7 (|L| + 1), is negligible next to O(1) values of
/// f''' but is added anyway). Tolerance = 4 x (the sum): a factor 4 for the
/// variation of f''' over [x - 2H, x + 2H]. A wrong gradient formula shows up as
/// errors of the size of the gradient itself (1e-3 .. 1), far above the ~1e-8
/// tolerance.
fn fd_check(model: &Model<f64>, b: &Batch<f64>) -> (usize, f64) {
    let (loss, g) = model.loss_and_gradients(b, &EXACT).unwrap();
    let grads = g.named();
    let mut params = model.params().clone();
    let slots: Vec<(String, usize)> = params
        .slots_mut()
        .into_iter()
        .map(|(n, _, d)| (n, d.len()))
        .collect();
    let mut targets: Vec<(String, usize)> = slots.clone();
    if let Source::Embeddings(x) = &b.source {
        targets.push(("x".into(), x.as_slice().len()));
    }
    let (h, big_h) = (1e-4, 1e-2);
    let u = f64::EPSILON / 2.0;
    let eps_l = 1e3 * u * (loss.abs() + 1.0);
    let mut checked = 0;
    let mut worst = 0.0f64;
    for (k, (name, len)) in targets.iter().enumerate() {
        let analytic = &grads
            .iter()
            .find(|(n, _, _)| *n == format!("grad.{name}"))
            .unwrap_or_else(|| panic!("no gradient for {name}"))
            .2;
        assert_eq!(analytic.len(), *len, "{name}");
        for (j, &a_j) in analytic.iter().enumerate() {
            let f = |delta: f64| loss_at(model, b, k, j, delta);
            let fd = (f(h) - f(-h)) / (2.0 * h);
            let f3 = (f(2.0 * big_h) - 2.0 * f(big_h) + 2.0 * f(-big_h) - f(-2.0 * big_h))
                / (2.0 * big_h.powi(3));
            let f3 = f3.abs() + 3.0 * eps_l / big_h.powi(3);
            let tol = 4.0 * (h * h / 6.0 * f3 + eps_l / h);
            let err = (a_j - fd).abs();
            assert!(
                err <= tol,
                "{name}[{j}]: analytic {a_j} vs central difference {fd}: error {err:e} > tol {tol:e}"
            );
            worst = worst.max(err / tol);
            checked += 1;
        }
    }
    (checked, worst)
}

fn fd_case(cfg: ModelConfig, tokens: bool, n: usize, seed: u64) {
    let model = Model::<f64>::init(cfg.clone(), tokens, seed).unwrap();
    let b = batch(&model, n, seed + 100);
    let (checked, worst) = fd_check(&model, &b);
    let total = model.params().len() + if tokens { 0 } else { n * cfg.d_model };
    assert_eq!(checked, total);
    eprintln!("{cfg:?} tokens={tokens} n={n}: {checked} entries, max err/tol {worst:.3}");
}

#[test]
fn fd_mse_gelu_ln_causal_one_layer_one_head() {
    use Activation::*;
    fd_case(
        config(1, 1, 4, 6, Gelu, true, true, LossKind::Mse),
        false,
        5,
        1,
    );
}

#[test]
fn fd_mse_relu_no_ln_two_layers_two_heads() {
    use Activation::*;
    fd_case(
        config(2, 2, 6, 5, Relu, false, false, LossKind::Mse),
        false,
        7,
        2,
    );
}

#[test]
fn fd_ce_gelu_ln_causal_three_layers_tokens() {
    use Activation::*;
    fd_case(
        config(3, 2, 4, 8, Gelu, true, true, LossKind::CrossEntropy),
        true,
        6,
        3,
    );
}

#[test]
fn fd_ce_relu_ln_noncausal_x_input_n_below_d() {
    use Activation::*;
    fd_case(
        config(2, 1, 6, 4, Relu, true, false, LossKind::CrossEntropy),
        false,
        3,
        4,
    );
}

#[test]
fn fd_ce_gelu_no_ln_causal_tokens() {
    use Activation::*;
    fd_case(
        config(2, 2, 4, 6, Gelu, false, true, LossKind::CrossEntropy),
        true,
        9,
        5,
    );
}

#[test]
fn fd_mse_gelu_ln_three_layers_wide() {
    use Activation::*;
    fd_case(
        config(3, 2, 8, 4, Gelu, true, false, LossKind::Mse),
        false,
        4,
        6,
    );
}

#[test]
fn fd_ce_zero_layers_head_only() {
    use Activation::*;
    fd_case(
        config(0, 1, 4, 4, Gelu, true, false, LossKind::CrossEntropy),
        false,
        3,
        7,
    );
}

/// Token input is X = E[tokens]: the same model on the gathered rows gives the same
/// loss and the same dL/dT_0, and dE accumulates dL/dT_0 by token.
#[test]
fn tokens_equal_gathered_embeddings() {
    use Activation::*;
    let cfg = config(2, 2, 4, 6, Gelu, true, true, LossKind::CrossEntropy);
    let model = Model::<f64>::init(cfg, true, 9).unwrap();
    let b = batch(&model, 8, 10);
    let Source::Tokens(tok) = &b.source else {
        panic!("token batch expected")
    };
    let e = model.params().embedding.clone().unwrap();
    let x = Matrix::from_fn(tok.len(), 4, |i, j| e.at(tok[i], j)).unwrap();
    let bx = Batch {
        source: Source::Embeddings(x),
        target: b.target.clone(),
    };
    let (l1, g1) = model.loss_and_gradients(&b, &EXACT).unwrap();
    let (l2, g2) = model.loss_and_gradients(&bx, &EXACT).unwrap();
    assert_eq!(l1, l2);
    assert_eq!(g1.dx, g2.dx);
    let de = g1.params.embedding.unwrap();
    for v in 0..5 {
        for c in 0..4 {
            let want: f64 = (0..tok.len())
                .filter(|&i| tok[i] == v)
                .map(|i| g1.dx.at(i, c))
                .sum();
            assert!((de.at(v, c) - want).abs() <= 1e-15 * (1.0 + want.abs()));
        }
    }
}

fn poly(accuracy: Accuracy, kind: GradientKind) -> EngineChoice {
    EngineChoice::Poly(PolySettings {
        config: PolyConfig {
            accuracy,
            ..PolyConfig::default()
        },
        kind,
    })
}

/// Frobenius norm of a matrix.
fn fro(m: &Matrix<f64>) -> f64 {
    m.as_slice().iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// A model in the polynomial regime: W_Q, W_K scaled by 1/2 so that the exponent
/// radius R stays near 1-2 and small eps needs modest degrees.
fn poly_model(cfg: ModelConfig, tokens: bool, seed: u64) -> Model<f64> {
    let mut p = Params::<f64>::init(&cfg, tokens, seed).unwrap();
    for l in &mut p.layers {
        for w in [&mut l.wq, &mut l.wk] {
            w.as_mut_slice().iter_mut().for_each(|x| *x *= 0.5);
        }
    }
    Model::new(cfg, p).unwrap()
}

/// Polynomial-engine gradients against exact ones.
///
/// Layer l's attention is perturbed by at most e_l entrywise (the largest of its
/// reported bounds on O~, dQ~, dK~, dV~ against exact attention on the same inputs,
/// docs/math.md §4). Two checks:
///
/// 1. Size. To first order, a gradient moves by a sum over layers of e_l times the
///    norm of the linear map from that layer's attention to the loss's gradient
///    (docs/math.md §7.3: sum_l e_l prod_k kappa_k). Per layer we take
///    kappa_l = (1 + |W_O|)(1 + L_act |W1| |W2|) (Frobenius norms, which bound the
///    operator norms; the 1 is the residual path, ML24 Lemma J.3; L_act = 1.13 bounds
///    |GELU'|, 1 for ReLU), and sqrt(n d_model) converts entrywise errors to Frobenius
///    ones: tol = sqrt(n d_model) sum_l e_l prod_l kappa_l. This is a first-order
///    engineering tolerance, not a certificate: it ignores the layer norms' Jacobians
///    and the second-order terms by which a forward error moves later gradients (the
///    certified report is `polyattn certify`'s job).
/// 2. Convergence. The error must track the reported bounds: when sum_l e_l falls by a
///    factor F (eps 1e-4 -> 1e-8), the error must fall by at least F / 10. An error
///    that does not vanish with eps (a wrong head mapping, a wrong gradient kind)
///    fails this however loose check 1 is.
fn poly_tolerance(model: &Model<f64>, dx: &Matrix<f64>, e_sum: f64) -> f64 {
    let l_act = match model.config().activation {
        Activation::Gelu => 1.13,
        Activation::Relu => 1.0,
    };
    let kappa: f64 = model
        .params()
        .layers
        .iter()
        .map(|l| (1.0 + fro(&l.wo)) * (1.0 + l_act * fro(&l.w1) * fro(&l.w2)))
        .product();
    ((dx.rows() * dx.cols()) as f64).sqrt() * kappa * e_sum
}

fn max_abs_diff(a: &[(String, Vec<usize>, Vec<f64>)], b: &[(String, Vec<usize>, Vec<f64>)]) -> f64 {
    let mut m = 0.0f64;
    for ((na, _, da), (nb, _, db)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        for (x, y) in da.iter().zip(db) {
            m = m.max((x - y).abs());
        }
    }
    m
}

fn poly_case(cfg: ModelConfig, tokens: bool, n: usize, seed: u64, kind: GradientKind) {
    let model = poly_model(cfg.clone(), tokens, seed);
    let b = batch(&model, n, seed + 1);
    let (_, exact) = model.loss_and_gradients(&b, &EXACT).unwrap();
    let ge = exact.named();
    let mut errs = Vec::new();
    let mut sums = Vec::new();
    for eps in [1e-4, 1e-8] {
        let (_, g) = model
            .loss_and_gradients(&b, &[poly(Accuracy::Eps(eps), kind)])
            .unwrap();
        for r in &g.reports {
            assert_eq!(r.engine, "poly");
            assert_eq!(r.heads.len(), cfg.n_heads);
            for h in &r.heads {
                assert!(h.bound_o <= eps, "bound_o {} > eps {eps}", h.bound_o);
                assert!(h.bound_dq.is_some() && h.bound_dk.is_some() && h.bound_dv.is_some());
            }
        }
        let e_sum: f64 = g.reports.iter().map(|r| r.max_bound()).sum();
        let err = max_abs_diff(&ge, &g.named());
        let tol = poly_tolerance(&model, &exact.dx, e_sum);
        eprintln!(
            "{cfg:?} eps {eps:e}: degrees {:?}, sum e_l {e_sum:e}, max |g~ - g| {err:e}, tol {tol:e}",
            g.reports.iter().map(|r| r.degree()).collect::<Vec<_>>()
        );
        assert!(err <= tol, "eps {eps}: error {err:e} > tolerance {tol:e}");
        errs.push(err);
        sums.push(e_sum);
    }
    let factor = sums[0] / sums[1];
    assert!(factor > 100.0, "bounds did not fall with eps: {sums:?}");
    assert!(
        errs[1] <= errs[0] / (factor / 10.0),
        "no convergence: error {:e} at eps 1e-4, {:e} at eps 1e-8 (bounds fell {factor:e}x)",
        errs[0],
        errs[1]
    );
}

#[test]
fn poly_gradients_match_exact_mse() {
    use Activation::*;
    let cfg = config(2, 2, 8, 12, Gelu, true, true, LossKind::Mse);
    poly_case(cfg, false, 24, 21, GradientKind::Substituted);
}

#[test]
fn poly_gradients_match_exact_ce_polynomial_model_kind() {
    use Activation::*;
    let cfg = config(2, 1, 4, 8, Relu, true, false, LossKind::CrossEntropy);
    poly_case(cfg, true, 20, 22, GradientKind::PolynomialModel);
}

/// Per-layer choice: auto falls back to exact (with the refusal as the reason) where
/// the scores are far outside the polynomial regime, and runs poly elsewhere.
#[test]
fn auto_falls_back_per_layer() {
    use Activation::*;
    let cfg = config(2, 1, 4, 8, Gelu, true, true, LossKind::Mse);
    let mut p = Params::<f64>::init(&cfg, false, 31).unwrap();
    for (l, factor) in p.layers.iter_mut().zip([0.3, 30.0]) {
        for w in [&mut l.wq, &mut l.wk] {
            w.as_mut_slice().iter_mut().for_each(|x| *x *= factor);
        }
    }
    let model = Model::new(cfg, p).unwrap();
    let b = batch(&model, 12, 32);
    let auto = EngineChoice::Auto(PolySettings::default());
    let (_, g) = model.loss_and_gradients(&b, &[auto]).unwrap();
    assert_eq!(g.reports[0].engine, "poly", "{:?}", g.reports[0]);
    assert_eq!(g.reports[1].engine, "exact");
    assert!(
        g.reports[1].reason.contains("refused"),
        "{}",
        g.reports[1].reason
    );
    // Poly requested outright on the bad layer is an error, not a silent fallback.
    let e = model
        .loss_and_gradients(
            &b,
            &[
                EngineChoice::Exact,
                poly(Accuracy::Eps(1e-6), GradientKind::Substituted),
            ],
        )
        .unwrap_err();
    assert!(e.to_string().contains("refused"), "{e}");
    // Wrong number of engines.
    let e = model
        .loss_and_gradients(&b, &[EngineChoice::Exact; 3])
        .unwrap_err();
    assert!(e.to_string().contains("engines"), "{e}");
}

// ---------------------------------------------------------------- the command line

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
