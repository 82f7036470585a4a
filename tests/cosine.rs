//! Cosine attention in the model (docs/math.md §7.4): gradients of every parameter
//! (W_Q, W_K through the row normalisation, the learnable `log_tau` through the clamp)
//! against central finite differences in f64; a score width d_qk below d_v; the
//! polynomial planner given R = tau_max; dot-product layers unchanged.

use polyattn::attention::poly::{Accuracy, GradientKind, PolyConfig};
use polyattn::model::{
    Activation, Batch, CosineAttention, EngineChoice, LossKind, Model, ModelConfig, Params,
    PolySettings, Source, Target,
};
use polyattn::rng::SplitMix64;
use polyattn::tensor::Matrix;

const EXACT: [EngineChoice; 1] = [EngineChoice::Exact];

fn config(cosine: Option<CosineAttention>, d_qk: Option<usize>, loss: LossKind) -> ModelConfig {
    ModelConfig {
        n_layers: 2,
        n_heads: 2,
        d_model: 6,
        d_ff: 5,
        activation: Activation::Gelu,
        layer_norm: true,
        causal: true,
        loss,
        vocab: Some(5),
        d_qk,
        cosine,
    }
}

fn cos(tau_max: f64, tau_init: f64, learnable: bool) -> Option<CosineAttention> {
    Some(CosineAttention {
        tau_max,
        tau_init,
        learnable,
    })
}

fn batch(model: &Model<f64>, n: usize, seed: u64) -> Batch<f64> {
    let cfg = model.config();
    let mut r = SplitMix64::new(seed);
    let vocab = cfg.vocab.unwrap_or(1);
    let source = if model.params().embedding.is_some() {
        Source::Tokens((0..n).map(|_| r.int(0, vocab - 1)).collect())
    } else {
        Source::Embeddings(Matrix::from_fn(n, cfg.d_model, |_, _| r.normal()).unwrap())
    };
    let target = match cfg.loss {
        LossKind::Mse => {
            Target::Regression(Matrix::from_fn(n, cfg.d_model, |_, _| r.normal()).unwrap())
        }
        LossKind::CrossEntropy => Target::Labels((0..n).map(|_| r.int(0, vocab - 1)).collect()),
    };
    Batch { source, target }
}

fn loss_with(model: &Model<f64>, b: &Batch<f64>, k: usize, j: usize, delta: f64) -> f64 {
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

/// Every gradient entry against a central difference, with tests/model.rs's tolerance
/// (step h = 1e-4; truncation h^2 |f'''| / 6 with f''' from a third difference at
/// H = 1e-2, rounding eps_L / h with eps_L = 1e3 u (|L| + 1); times 4). The
/// normalisation's derivative is smooth away from q = 0 (row norms here are O(1)) and
/// the clamp's kink is not crossed when log_tau sits more than 2H from ln tau_max,
/// which the cases below arrange. Returns the number of entries checked.
fn fd_check(model: &Model<f64>, b: &Batch<f64>) -> usize {
    let (loss, g) = model.loss_and_gradients(b, &EXACT).unwrap();
    let grads = g.named();
    let mut params = model.params().clone();
    let mut targets: Vec<(String, usize)> = params
        .slots_mut()
        .into_iter()
        .map(|(n, _, d)| (n, d.len()))
        .collect();
    if let Source::Embeddings(x) = &b.source {
        targets.push(("x".into(), x.as_slice().len()));
    }
    let (h, big_h) = (1e-4, 1e-2);
    let eps_l = 1e3 * (f64::EPSILON / 2.0) * (loss.abs() + 1.0);
    let mut checked = 0;
    for (k, (name, len)) in targets.iter().enumerate() {
        let analytic = &grads
            .iter()
            .find(|(n, _, _)| *n == format!("grad.{name}"))
            .unwrap_or_else(|| panic!("no gradient for {name}"))
            .2;
        assert_eq!(analytic.len(), *len, "{name}");
        for (j, &a) in analytic.iter().enumerate() {
            let f = |d: f64| loss_with(model, b, k, j, d);
            let fd = (f(h) - f(-h)) / (2.0 * h);
            let f3 = (f(2.0 * big_h) - 2.0 * f(big_h) + 2.0 * f(-big_h) - f(-2.0 * big_h))
                / (2.0 * big_h.powi(3));
            let f3 = f3.abs() + 3.0 * eps_l / big_h.powi(3);
            let tol = 4.0 * (h * h / 6.0 * f3 + eps_l / h);
            assert!(
                (a - fd).abs() <= tol,
                "{name}[{j}]: analytic {a} vs central difference {fd} (tol {tol:e})"
            );
            checked += 1;
        }
    }
    checked
}

#[test]
fn fd_cosine_learnable_tau_ce_tokens() {
    let cfg = config(cos(8.0, 2.5, true), None, LossKind::CrossEntropy);
    let model = Model::<f64>::init(cfg, true, 3).unwrap();
    let b = batch(&model, 7, 11);
    let checked = fd_check(&model, &b);
    assert_eq!(checked, model.params().len());
    // log_tau has a gradient and it is not zero (tau below its cap).
    let (_, g) = model.loss_and_gradients(&b, &EXACT).unwrap();
    let lt = g.params.layers[0].log_tau.as_ref().unwrap();
    assert!(lt.iter().all(|x| *x != 0.0), "{lt:?}");
}

#[test]
fn fd_cosine_fixed_tau_small_d_qk_mse_features() {
    // d_qk = 1 < d_v = 3: W_Q, W_K are 6 x 2; fixed tau, no log_tau tensor.
    let cfg = config(cos(3.0, 3.0, false), Some(1), LossKind::Mse);
    let model = Model::<f64>::init(cfg, false, 5).unwrap();
    assert_eq!(model.params().layers[0].wq.shape(), [6, 2]);
    assert!(model.params().layers[0].log_tau.is_none());
    let b = batch(&model, 6, 12);
    let checked = fd_check(&model, &b);
    assert_eq!(checked, model.params().len() + 6 * 6);
}

#[test]
fn fd_dot_product_small_d_qk() {
    let cfg = config(None, Some(2), LossKind::CrossEntropy);
    let model = Model::<f64>::init(cfg, true, 9).unwrap();
    assert_eq!(model.params().layers[1].wk.shape(), [6, 4]);
    let b = batch(&model, 5, 13);
    assert_eq!(fd_check(&model, &b), model.params().len());
}

#[test]
fn clamp_stops_the_temperature_gradient_past_the_cap() {
    // log_tau of head 0 is above ln tau_max (tau = tau_max, gradient 0, as torch.clamp
    // past its bound); head 1 below (gradient = dtau * tau, checked by a difference).
    let cfg = config(cos(2.0, 1.0, true), None, LossKind::CrossEntropy);
    let mut p = Params::<f64>::init(&cfg, true, 4).unwrap();
    for l in &mut p.layers {
        l.log_tau = Some(vec![2f64.ln() + 0.5, 0.3]);
    }
    let model = Model::new(cfg, p).unwrap();
    let b = batch(&model, 6, 14);
    let (_, g) = model.loss_and_gradients(&b, &EXACT).unwrap();
    for l in &g.params.layers {
        let lt = l.log_tau.as_ref().unwrap();
        assert_eq!(lt[0], 0.0);
        assert!(lt[1] != 0.0);
    }
    // The loss does not move with log_tau past the cap.
    let k = 6; // slot index of layers.0.attn.log_tau (ln1 gain, bias, wq, wk, wv, wo)
    let mut q = model.params().clone();
    assert_eq!(q.slots_mut()[k].0, "layers.0.attn.log_tau");
    assert_eq!(
        loss_with(&model, &b, k, 0, 0.1),
        model.loss(&b, &EXACT).unwrap()
    );
    assert!(fd_check(&model, &b) > 0);
}

fn poly(eps: f64) -> EngineChoice {
    EngineChoice::Poly(PolySettings {
        config: PolyConfig {
            accuracy: Accuracy::Eps(eps),
            ..PolyConfig::default()
        },
        kind: GradientKind::Substituted,
    })
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

#[test]
fn planner_is_given_tau_max_and_poly_gradients_converge_to_exact() {
    // R = tau_max for every head and every model: the plan does not depend on the
    // weights (two seeds, the same degrees), although the data's own radius is below
    // it (tau_init = 1 < tau_max = 3).
    let cfg = config(cos(3.0, 1.0, true), Some(2), LossKind::CrossEntropy);
    let mut degrees = Vec::new();
    for seed in [1, 2] {
        let model = Model::<f64>::init(cfg.clone(), true, seed).unwrap();
        let b = batch(&model, 24, seed + 20);
        let (_, exact) = model.loss_and_gradients(&b, &EXACT).unwrap();
        let mut errs = Vec::new();
        let mut sums = Vec::new();
        for eps in [1e-3, 1e-7] {
            let (_, g) = model.loss_and_gradients(&b, &[poly(eps)]).unwrap();
            for r in &g.reports {
                assert_eq!(r.engine, "poly");
                for h in &r.heads {
                    assert_eq!(h.regime.radius, 3.0, "{:?}", h.regime);
                    assert_eq!(h.regime.d, 2);
                    assert!(h.bound_o <= eps);
                }
            }
            degrees.push(g.reports.iter().map(|r| r.degree()).collect::<Vec<_>>());
            sums.push(g.reports.iter().map(|r| r.max_bound()).sum::<f64>());
            errs.push(max_abs_diff(&exact.named(), &g.named()));
        }
        // The error tracks the certified bounds (an engine error that does not vanish
        // with eps, e.g. a wrong scale or a gradient missing the 1/r of the
        // normalisation, fails this): bounds fall by F, errors by at least F / 100
        // (the constant is the unknown first-order propagation factor through the
        // layers, tests/model.rs's poly_tolerance; it cancels in the ratio up to the
        // variation of the error's direction, for which 100 leaves room).
        let factor = sums[0] / sums[1];
        assert!(factor > 1e3, "{sums:?}");
        assert!(errs[1] <= errs[0] / (factor / 100.0), "{errs:?} {sums:?}");
        assert!(errs[1] < 1e-5, "{errs:?}");
    }
    assert_eq!(degrees[0], degrees[2]);
    assert_eq!(degrees[1], degrees[3]);
}

#[test]
fn dot_product_with_explicit_d_qk_equals_the_default_bit_for_bit() {
    // d_qk = Some(d_head) is the default layout: same parameters, same bits.
    let base = config(None, None, LossKind::CrossEntropy);
    let same = config(None, Some(3), LossKind::CrossEntropy);
    let a = Model::<f64>::init(base, true, 8).unwrap();
    let b = Model::<f64>::init(same, true, 8).unwrap();
    assert_eq!(a.params(), b.params());
    let bt = batch(&a, 9, 3);
    for e in [EngineChoice::Exact, poly(1e-6)] {
        let (la, ga) = a.loss_and_gradients(&bt, &[e]).unwrap();
        let (lb, gb) = b.loss_and_gradients(&bt, &[e]).unwrap();
        assert_eq!(la.to_bits(), lb.to_bits());
        assert_eq!(ga.params, gb.params);
    }
}
