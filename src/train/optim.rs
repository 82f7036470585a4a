//! AdamW, global-norm gradient clipping and the learning-rate schedule, with PyTorch's
//! semantics (`torch.optim.AdamW`, `torch.nn.utils.clip_grad_norm_`, nanoGPT's
//! warm-up then cosine decay).
//!
//! AdamW step `t = 1, 2, ...` for a parameter `p` with gradient `g` (Loshchilov and
//! Hutter's decoupled weight decay, PyTorch's order of operations):
//!
//! ```text
//! p <- p (1 - lr wd)                          (decayed tensors only)
//! m <- beta1 m + (1 - beta1) g
//! v <- beta2 v + (1 - beta2) g^2
//! p <- p - (lr / (1 - beta1^t)) m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
//! ```
//!
//! PyTorch's defaults: `lr = 1e-3`, `betas = (0.9, 0.999)`, `eps = 1e-8`,
//! `weight_decay = 1e-2`. Which tensors decay is the caller's choice; [`decays`] is
//! nanoGPT's rule (tensors of two or more dimensions: the weight matrices and the
//! embedding; not gains, biases, nor the cosine temperature `log_tau`).
//!
//! Clipping: `total = sqrt(sum of all squared gradient entries)`; when
//! `max_norm / (total + 1e-6) < 1` every gradient is multiplied by that factor
//! (`clip_grad_norm_`'s formula); the total before clipping is returned.
//!
//! Schedule (step `s = 0, 1, ...`): `lr = peak (s + 1) / warmup` for `s < warmup`, then
//! `min + (peak - min) (1 + cos(pi p)) / 2` with `p = (s - warmup) / (total - warmup)`
//! clamped to `[0, 1]`.

use crate::error::{Error, Result};
use crate::model::Params;
use crate::scalar::Real;

/// AdamW's hyper-parameters (the learning rate comes from the [`Schedule`]).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    /// beta1, the first moment's decay (0.9).
    pub beta1: f64,
    /// beta2, the second moment's decay (0.999).
    pub beta2: f64,
    /// eps added to the denominator (1e-8).
    pub eps: f64,
    /// Decoupled weight decay wd (1e-2).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
        }
    }
}

impl AdamWConfig {
    /// Checks `0 <= beta < 1`, `eps > 0`, `weight_decay >= 0`, all finite.
    pub fn validate(&self) -> Result<()> {
        let bad = |name: &'static str, v: f64, reason: &str| Error::InvalidParameter {
            name,
            value: v.to_string(),
            reason: reason.into(),
        };
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(bad(name, b, "must be in [0, 1)"));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(bad("eps", self.eps, "must be finite and positive"));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(bad(
                "weight_decay",
                self.weight_decay,
                "must be finite and non-negative",
            ));
        }
        Ok(())
    }
}

/// Whether a tensor of this shape is weight-decayed (nanoGPT: two or more dimensions).
pub fn decays(shape: &[usize]) -> bool {
    shape.len() >= 2
}

/// AdamW's state: the step count and the two moments, laid out like the parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamW<T> {
    /// The hyper-parameters.
    pub config: AdamWConfig,
    /// Steps taken (t after the last step).
    pub step: u64,
    /// First moments m.
    pub m: Params<T>,
    /// Second moments v.
    pub v: Params<T>,
}

fn shapes<T: Real>(p: &Params<T>) -> Vec<(String, Vec<usize>)> {
    p.named().into_iter().map(|(n, s, _)| (n, s)).collect()
}

impl<T: Real> AdamW<T> {
    /// A fresh optimiser (zero moments, step 0) for parameters shaped like `like`.
    pub fn new(config: AdamWConfig, like: &Params<T>) -> Result<Self> {
        config.validate()?;
        let mut m = like.clone();
        for (_, _, d) in m.slots_mut() {
            d.fill(T::ZERO);
        }
        Ok(Self {
            config,
            step: 0,
            v: m.clone(),
            m,
        })
    }

    /// One step at learning rate `lr`: updates `params` in place from `grads` (same
    /// layout: a different one is an error and nothing changes).
    pub fn step(&mut self, params: &mut Params<T>, grads: &Params<T>, lr: f64) -> Result<()> {
        let layout = shapes(params);
        for (what, other) in [("gradients", shapes(grads)), ("moments", shapes(&self.m))] {
            if other != layout {
                return Err(Error::ShapeMismatch {
                    what: format!("AdamW {what}"),
                    expected: format!("the parameters' layout ({} tensors)", layout.len()),
                    got: format!("{} tensors", other.len()),
                });
            }
        }
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(Error::InvalidParameter {
                name: "lr",
                value: lr.to_string(),
                reason: "must be finite and non-negative".into(),
            });
        }
        self.step += 1;
        let c = self.config;
        let t = self.step as f64;
        // Bias corrections in f64, as PyTorch computes them (Python floats).
        let bc1 = 1.0 - c.beta1.powf(t);
        let bc2_sqrt = (1.0 - c.beta2.powf(t)).sqrt();
        let step_size = T::from_f64(lr / bc1);
        let (b1, b2) = (T::from_f64(c.beta1), T::from_f64(c.beta2));
        let (one_b1, one_b2) = (T::from_f64(1.0 - c.beta1), T::from_f64(1.0 - c.beta2));
        let decay = T::from_f64(1.0 - lr * c.weight_decay);
        let (eps, bc2_sqrt) = (T::from_f64(c.eps), T::from_f64(bc2_sqrt));
        let g_named = grads.named();
        let (mut m, mut v) = (self.m.slots_mut(), self.v.slots_mut());
        for (((_, shape, p), (_, _, g)), ((_, _, m), (_, _, v))) in params
            .slots_mut()
            .into_iter()
            .zip(&g_named)
            .zip(m.iter_mut().zip(v.iter_mut()))
        {
            let wd = decays(&shape) && c.weight_decay != 0.0;
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                if wd {
                    *p *= decay;
                }
                *m = b1 * *m + one_b1 * g;
                *v = b2 * *v + one_b2 * g * g;
                let denom = v.sqrt() / bc2_sqrt + eps;
                *p -= step_size * (*m / denom);
            }
        }
        Ok(())
    }
}

/// Global-norm clipping: the 2-norm of all gradient entries together (summed in f64,
/// schema order), and when `max_norm / (norm + 1e-6) < 1` every entry scaled by that
/// factor. Returns the norm before clipping. `max_norm` must be positive.
pub fn clip_grad_norm<T: Real>(grads: &mut Params<T>, max_norm: f64) -> Result<f64> {
    if max_norm.is_nan() || max_norm <= 0.0 {
        return Err(Error::InvalidParameter {
            name: "max_norm",
            value: max_norm.to_string(),
            reason: "must be positive".into(),
        });
    }
    let total = grads
        .slots_mut()
        .iter()
        .flat_map(|(_, _, d)| d.iter())
        .map(|x| x.to_f64() * x.to_f64())
        .sum::<f64>()
        .sqrt();
    let coef = max_norm / (total + 1e-6);
    if coef < 1.0 {
        let c = T::from_f64(coef);
        for (_, _, d) in grads.slots_mut() {
            d.iter_mut().for_each(|x| *x *= c);
        }
    }
    Ok(total)
}

/// Linear warm-up then cosine decay to `min_lr`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Schedule {
    /// The peak learning rate, reached at the end of the warm-up.
    pub peak_lr: f64,
    /// The final learning rate.
    pub min_lr: f64,
    /// Warm-up steps (0: none).
    pub warmup: u64,
    /// Steps of the whole run (the cosine reaches `min_lr` there).
    pub total: u64,
}

impl Schedule {
    /// The learning rate of step `s` (0-based).
    pub fn lr(&self, s: u64) -> f64 {
        if s < self.warmup {
            return self.peak_lr * (s + 1) as f64 / self.warmup as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        let p = ((s - self.warmup) as f64 / span).clamp(0.0, 1.0);
        self.min_lr + (self.peak_lr - self.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
    }

    /// Checks `0 <= min_lr <= peak_lr`, both finite.
    pub fn validate(&self) -> Result<()> {
        if !(self.peak_lr.is_finite() && self.min_lr >= 0.0 && self.min_lr <= self.peak_lr) {
            return Err(Error::InvalidParameter {
                name: "lr",
                value: format!("peak {} min {}", self.peak_lr, self.min_lr),
                reason: "need 0 <= min_lr <= peak_lr, finite".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Activation, LossKind, ModelConfig};

    fn tiny() -> Params<f64> {
        let cfg = ModelConfig {
            n_layers: 1,
            n_heads: 1,
            d_model: 2,
            d_ff: 1,
            activation: Activation::Relu,
            layer_norm: false,
            causal: true,
            loss: LossKind::Mse,
            vocab: None,
            d_qk: None,
            cosine: None,
        };
        Params::init(&cfg, false, 1).unwrap()
    }

    /// Three AdamW steps on one decayed entry (W_Q[0,0]) and one not decayed (b1[0]),
    /// against the formula evaluated by hand in the same order of operations
    /// (so equal to the last bit: the same f64 operations).
    #[test]
    fn adamw_matches_hand_computed_steps() {
        let mut p = tiny();
        let c = AdamWConfig {
            weight_decay: 0.1,
            ..AdamWConfig::default()
        };
        let mut opt = AdamW::new(c, &p).unwrap();
        let (w0, b0) = (p.layers[0].wq.at(0, 0), p.layers[0].b1[0]);
        let gs = [0.5, -0.25, 2.0];
        let lrs = [1e-2, 5e-3, 1e-3];
        let (mut w, mut b) = (w0, b0);
        let (mut mw, mut vw, mut mb, mut vb) = (0.0, 0.0, 0.0, 0.0);
        for (t, (&g, &lr)) in gs.iter().zip(&lrs).enumerate() {
            let mut grads = p.clone();
            for (_, _, d) in grads.slots_mut() {
                d.fill(0.0);
            }
            grads.layers[0].wq.as_mut_slice()[0] = g;
            grads.layers[0].b1[0] = 3.0 * g;
            opt.step(&mut p, &grads, lr).unwrap();
            let t = (t + 1) as f64;
            let bc1 = 1.0 - 0.9f64.powf(t);
            let bc2 = (1.0 - 0.999f64.powf(t)).sqrt();
            // decayed
            w *= 1.0 - lr * 0.1;
            mw = 0.9 * mw + (1.0 - 0.9) * g;
            vw = 0.999 * vw + (1.0 - 0.999) * g * g;
            w -= lr / bc1 * (mw / (vw.sqrt() / bc2 + 1e-8));
            // not decayed (a bias)
            let gb = 3.0 * g;
            mb = 0.9 * mb + (1.0 - 0.9) * gb;
            vb = 0.999 * vb + (1.0 - 0.999) * gb * gb;
            b -= lr / bc1 * (mb / (vb.sqrt() / bc2 + 1e-8));
            assert_eq!(p.layers[0].wq.at(0, 0), w, "step {t}");
            assert_eq!(p.layers[0].b1[0], b, "step {t}");
        }
        // Step 1 moves by lr exactly up to eps (m_hat / sqrt(v_hat) = sign(g)): a check
        // of the bias correction that does not repeat the code's arithmetic.
        let mut q = tiny();
        let mut opt = AdamW::new(AdamWConfig::default(), &q).unwrap();
        let mut g = q.clone();
        for (_, _, d) in g.slots_mut() {
            d.fill(0.0);
        }
        g.layers[0].b1[0] = -7.0;
        let before = q.layers[0].b1[0];
        opt.step(&mut q, &g, 0.01).unwrap();
        // |delta - lr| <= lr eps / |g| + rounding (1e-15)
        assert!((q.layers[0].b1[0] - before - 0.01).abs() < 1e-10);
        // Entries with zero gradient and no decay do not move.
        assert_eq!(q.layers[0].b2, tiny().layers[0].b2);
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let mut g = tiny();
        for (_, _, d) in g.slots_mut() {
            d.fill(0.0);
        }
        g.layers[0].b1[0] = 3.0;
        g.layers[0].b2[1] = 4.0;
        let n = clip_grad_norm(&mut g, 1.0).unwrap();
        assert_eq!(n, 5.0);
        // scaled by 1 / (5 + 1e-6): the new norm is 5 / (5 + 1e-6)
        let after = (g.layers[0].b1[0].powi(2) + g.layers[0].b2[1].powi(2)).sqrt();
        assert!((after - 5.0 / (5.0 + 1e-6)).abs() < 1e-15);
        // Below the max norm nothing changes.
        let before = g.clone();
        clip_grad_norm(&mut g, 10.0).unwrap();
        assert_eq!(g, before);
        assert!(clip_grad_norm(&mut g, 0.0).is_err());
    }

    #[test]
    fn schedule_warms_up_then_decays() {
        let s = Schedule {
            peak_lr: 1.0,
            min_lr: 0.1,
            warmup: 4,
            total: 14,
        };
        assert_eq!(s.lr(0), 0.25);
        assert_eq!(s.lr(3), 1.0);
        assert_eq!(s.lr(4), 1.0);
        // halfway through the decay: min + (peak - min) / 2 (cos(pi/2) ~ 6e-17)
        assert!((s.lr(9) - 0.55).abs() < 1e-15);
        assert!((s.lr(14) - 0.1).abs() < 1e-15);
        assert!((s.lr(100) - 0.1).abs() < 1e-15);
        for k in 4..14 {
            assert!(s.lr(k + 1) <= s.lr(k));
        }
    }
}
