//! Host API of the f16 polynomial kernels (docs/math.md §3.3-§3.5), mirroring the CPU
//! engine [`crate::attention::poly`]: the same [`PolyConfig`], the same planner (radius,
//! degree, rank, coefficients: [`plan::plan`]), the same monomials
//! ([`Monomials`]), the same formula; f16 features and inputs, f32 states and sums.
//!
//! Pipeline (every step a kernel, see `kernels/poly.cu`): features U (queries, with
//! P's coefficients, multinomial weights and the per-degree scale s_t) and V (keys,
//! scaled by 1/s_t); the forward is the prefix contraction of (U, V) with payload
//! [v, 1], then O~ = num / D~. The backward ([`GradientKind`], docs/math.md §3.5) is three
//! contractions with Kronecker row factors, U~ = U / D~ applied in f32 (never stored):
//! dQ = tau prefix(U~ (x) [dO, -delta], V (x) [v, 1]; K), dK = tau suffix(same; Q),
//! dV = suffix(U~, V; dO). For the polynomial-model gradient the query factor of dQ
//! and dK uses P' (degree g - 1) and V's first C(d + g - 1, g - 1) columns.
//!
//! The degree scaling (docs/math.md §3.3, last paragraph): with X = max |a q_il|,
//! Y = max |b k_jl| and W_t the largest multinomial weight of degree t, query features
//! of degree t are at most a_t = |c_t| W_t X^t and key features at most b_t = Y^t;
//! s_t = 2^round(log2(b_t / a_t) / 2) makes both sides at most about sqrt(a_t b_t).
//! Powers of two change no rounding, and U_t V_t^T is unchanged exactly.

use super::backend::{Backend, ContractGeom, Factor, Payload};
use super::exact::{check_f16_storage, check_outputs, to_f32, to_half, F16_MAX};
use super::launch::{mask_code, poly_chunk};
use crate::attention::poly::features::Monomials;
use crate::attention::poly::{plan, GradientKind, Plan, PolyConfig};
use crate::attention::same_heads;
use crate::attention::Problem;
use crate::error::{Error, Result};
use crate::tensor::{MatRef, Matrix, Tensor3};

/// The monomial table of [`Monomials`] as the kernels read it: for monomial m > 0 its
/// parent (degree one less) and the variable that multiplies it, its degree and its
/// multinomial weight |alpha|! / alpha!.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureTable {
    /// Parent of each monomial (0 for m = 0).
    pub parent: Vec<i32>,
    /// Variable of each monomial (0 for m = 0).
    pub var: Vec<i32>,
    /// Degree of each monomial.
    pub degree: Vec<usize>,
    /// Multinomial weight of each monomial.
    pub weight: Vec<u64>,
}

impl FeatureTable {
    /// Rebuilds the graded enumeration of [`Monomials`] (each monomial is its parent
    /// times a variable no smaller than the parent's last one) and checks it against
    /// `Monomials::powers` and `query_features` on integer test points, where every
    /// product is exact, so the kernels use exactly the CPU engine's feature order.
    pub fn new(mon: &Monomials) -> Result<Self> {
        let (d, g) = (mon.vars(), mon.degree());
        let mut t = Self {
            parent: vec![0],
            var: vec![0],
            degree: vec![0],
            weight: vec![1],
        };
        let mut last = vec![0usize];
        let mut power = vec![0u64];
        let (mut lo, mut hi) = (0usize, 1usize);
        for deg in 1..=g {
            for par in lo..hi {
                for var in last[par]..d {
                    let pw = if par > 0 && last[par] == var {
                        power[par] + 1
                    } else {
                        1
                    };
                    t.parent.push(par as i32);
                    t.var.push(var as i32);
                    t.degree.push(deg);
                    t.weight.push(t.weight[par] * deg as u64 / pw);
                    last.push(var);
                    power.push(pw);
                }
            }
            lo = hi;
            hi = t.parent.len();
        }
        let bad = |why: &str| Error::InvalidParameter {
            name: "monomial table",
            value: format!("d = {d}, g = {g}"),
            reason: format!("the CUDA feature table disagrees with Monomials: {why}"),
        };
        if t.parent.len() != mon.len() {
            return Err(bad("length"));
        }
        for seed in 0..3i64 {
            let x: Vec<f64> = (0..d as i64)
                .map(|l| {
                    let sign = if (l + seed) % 2 == 0 { 1.0 } else { -1.0 };
                    sign * ((l * 7 + seed * 3) % 5 + 1) as f64
                })
                .collect();
            let mut want = vec![0.0; mon.len()];
            mon.powers(&x, &mut want);
            let got = t.powers(&x);
            if got != want {
                return Err(bad("powers"));
            }
            let ones = vec![1.0; g + 1];
            mon.query_features(&x, &ones, &mut want);
            let weighted: Vec<f64> = got
                .iter()
                .zip(&t.weight)
                .map(|(p, w)| p * *w as f64)
                .collect();
            if weighted != want {
                return Err(bad("weights"));
            }
        }
        Ok(t)
    }

    /// x^alpha for every monomial, multiplied along the chain from m to the root (the
    /// kernels' order).
    pub fn powers(&self, x: &[f64]) -> Vec<f64> {
        (0..self.parent.len())
            .map(|m| {
                let (mut val, mut t) = (1.0, m);
                while t > 0 {
                    val *= x[self.var[t] as usize];
                    t = self.parent[t] as usize;
                }
                val
            })
            .collect()
    }

    /// Number of monomials.
    pub fn len(&self) -> usize {
        self.parent.len()
    }

    /// Never true (the constant monomial is always there).
    pub fn is_empty(&self) -> bool {
        self.parent.is_empty()
    }
}

/// The per-degree scaling of the f16 features (module docs) and the coefficient
/// vectors the feature kernel multiplies by.
#[derive(Clone, Debug, PartialEq)]
pub struct DegreeScaling {
    /// s_t, powers of two.
    pub scale: Vec<f64>,
    /// Query-side multipliers c_t W_alpha s_t per monomial, rounded to f32.
    pub query_coef: Vec<f32>,
    /// Derivative (P') query-side multipliers for the first C(d + g - 1, g - 1)
    /// monomials: (t + 1) c_{t+1} W_alpha s_t.
    pub deriv_coef: Vec<f32>,
    /// Key-side multipliers 1 / s_t per monomial.
    pub key_coef: Vec<f32>,
    /// The largest a priori magnitude of a stored feature.
    pub max_feature: f64,
    /// sum_t |c_t| s_t ||x||_1^t + ||y||_1^t / s_t maxima: the absolute-underflow
    /// weight of the f16 rounding allowance (see `super::allowance`).
    pub l1_mass: f64,
}

impl DegreeScaling {
    /// Chooses s_t for `plan` on inputs `q`, `k` (f32) and checks the f16 range.
    pub fn new(
        plan: &Plan,
        table: &FeatureTable,
        q: MatRef<'_, f32>,
        k: MatRef<'_, f32>,
    ) -> Result<Self> {
        let g = plan.regime.degree;
        let c = &plan.poly.coeffs;
        let (a, bk) = (plan.query_scale, plan.key_scale);
        let inf = |m: MatRef<'_, f32>, s: f64| {
            m.as_slice()
                .iter()
                .map(|x| (*x as f64 * s).abs())
                .fold(0.0, f64::max)
        };
        let l1 = |m: MatRef<'_, f32>, s: f64| {
            (0..m.rows())
                .map(|i| m.row(i).iter().map(|x| (*x as f64 * s).abs()).sum::<f64>())
                .fold(0.0, f64::max)
        };
        let (x_inf, y_inf) = (inf(q, a), inf(k, bk));
        let (x_1, y_1) = (l1(q, a), l1(k, bk));
        let mut w_max = vec![0u64; g + 1];
        for m in 0..table.len() {
            let t = table.degree[m];
            w_max[t] = w_max[t].max(table.weight[m]);
        }
        let deriv: Vec<f64> = (0..g).map(|t| (t + 1) as f64 * c[t + 1]).collect();
        let mut scale = vec![1.0f64; g + 1];
        let (mut max_feature, mut l1_mass) = (0.0f64, 0.0f64);
        for t in 0..=g {
            let wt = w_max[t] as f64;
            let cq = c[t].abs().max(deriv.get(t).map_or(0.0, |x| x.abs()));
            let at = cq * wt * x_inf.powi(t as i32);
            let bt = y_inf.powi(t as i32);
            if at > 0.0 && bt > 0.0 && at.is_finite() && bt.is_finite() {
                let e = (0.5 * (bt / at).log2()).round().clamp(-60.0, 60.0);
                scale[t] = 2f64.powi(e as i32);
            }
            let raw = x_inf.max(y_inf).max(1.0).powi(t as i32);
            if raw.is_nan() || raw > f32::MAX as f64 / 2.0 {
                return Err(Error::Overflow {
                    quantity: format!("monomials of degree {t} (f32 products)"),
                    bound: raw,
                    dtype: "F32",
                });
            }
            max_feature = max_feature.max(at * scale[t]).max(bt / scale[t]);
            l1_mass += cq * scale[t] * x_1.powi(t as i32) + y_1.powi(t as i32) / scale[t];
        }
        if max_feature.is_nan() || max_feature > F16_MAX / 2.0 {
            return Err(Error::Overflow {
                quantity: "scaled polynomial features (f16 storage)".into(),
                bound: max_feature,
                dtype: "F16",
            });
        }
        let per = |f: &dyn Fn(usize, usize) -> f64, n: usize| -> Vec<f32> {
            (0..n).map(|m| f(m, table.degree[m]) as f32).collect()
        };
        let r = table.len();
        let r_d = if g == 0 { 0 } else { prefix_len(table, g - 1) };
        let query_coef = per(&|m, t| c[t] * table.weight[m] as f64 * scale[t], r);
        let deriv_coef = per(&|m, t| deriv[t] * table.weight[m] as f64 * scale[t], r_d);
        let key_coef = per(&|_, t| 1.0 / scale[t], r);
        Ok(Self {
            scale,
            query_coef,
            deriv_coef,
            key_coef,
            max_feature,
            l1_mass,
        })
    }
}

/// Number of monomials of degree <= t.
fn prefix_len(table: &FeatureTable, t: usize) -> usize {
    table.degree.iter().take_while(|&&x| x <= t).count()
}

/// The f16 polynomial forward of one head.
#[derive(Clone, Debug)]
pub struct CudaPolyForward {
    /// O~ (f16 values, widened), `n_q x d_v`.
    pub o: Matrix<f32>,
    /// ln D~ (f32; `-inf` for a fully masked row).
    pub lse: Vec<f32>,
    /// D~ as the kernels computed it (f32).
    pub norm: Vec<f32>,
    /// The CPU planner's plan (polynomial, monomials, regime).
    pub plan: Plan,
    /// The degree scaling used.
    pub scaling: DegreeScaling,
    /// Source rows per chunk of the scans.
    pub chunk: usize,
}

/// The f16 polynomial gradients of one head.
#[derive(Clone, Debug)]
pub struct CudaPolyGradients {
    /// dQ~, `n_q x d`.
    pub dq: Matrix<f32>,
    /// dK~, `n_k x d`.
    pub dk: Matrix<f32>,
    /// dV~, `n_k x d_v`.
    pub dv: Matrix<f32>,
    /// Which gradient.
    pub kind: GradientKind,
}

/// Validated problem, plan, table and scaling of one head.
struct Prepared<'a> {
    p: Problem<'a, f32>,
    plan: Plan,
    table: FeatureTable,
    scaling: DegreeScaling,
}

fn prepare<'a>(
    q: MatRef<'a, f32>,
    k: MatRef<'a, f32>,
    v: MatRef<'a, f32>,
    cfg: &PolyConfig,
) -> Result<Prepared<'a>> {
    let p = Problem::new(q, k, v, &cfg.attention())?;
    // The device kernels take prefix masks only: a window is refused before any work.
    mask_code(p.mask)?;
    check_f16_storage("q", q.as_slice())?;
    check_f16_storage("k", k.as_slice())?;
    check_f16_storage("v", v.as_slice())?;
    // The degree decision is `plan::candidates`; the device path runs its last
    // candidate, the a priori degree g, always: its certified f16 bound is computed
    // after the run, on the host (`allowance::poly_bounds`), so the CPU engine's
    // a posteriori try of g - 1 would cost a second device pass plus that bound.
    let plan = plan::plan(&p, cfg)?;
    let table = FeatureTable::new(&plan.monomials)?;
    let scaling = DegreeScaling::new(&plan, &table, q, k)?;
    Ok(Prepared {
        p,
        plan,
        table,
        scaling,
    })
}

/// Device copies of one head's inputs and features.
struct Loaded<B: Backend> {
    q: B::Half,
    k: B::Half,
    v: B::Half,
    u: B::Half,
    vf: B::Half,
    ones_q: B::Float,
    ones_k: B::Float,
    parent: B::Int,
    var: B::Int,
}

fn load<B: Backend>(b: &B, pr: &Prepared<'_>) -> Result<Loaded<B>> {
    let p = &pr.p;
    let r = pr.table.len();
    let (n_q, n_k, d) = (p.n_q(), p.n_k(), p.d());
    let q = b.upload_half(&to_half(p.q.as_slice()))?;
    let k = b.upload_half(&to_half(p.k.as_slice()))?;
    let v = b.upload_half(&to_half(p.v.as_slice()))?;
    let parent = b.upload_int(&pr.table.parent)?;
    let var = b.upload_int(&pr.table.var)?;
    let (qc, kc) = (
        b.upload_float(&pr.scaling.query_coef)?,
        b.upload_float(&pr.scaling.key_coef)?,
    );
    let mut u = b.alloc_half(n_q * r)?;
    b.poly_features(
        &q,
        n_q,
        d,
        pr.plan.query_scale as f32,
        (&parent, &var),
        &qc,
        r,
        &mut u,
    )?;
    let mut vf = b.alloc_half(n_k * r)?;
    b.poly_features(
        &k,
        n_k,
        d,
        pr.plan.key_scale as f32,
        (&parent, &var),
        &kc,
        r,
        &mut vf,
    )?;
    Ok(Loaded {
        q,
        k,
        v,
        u,
        vf,
        ones_q: b.upload_float(&vec![1.0; n_q])?,
        ones_k: b.upload_float(&vec![1.0; n_k])?,
        parent,
        var,
    })
}

/// One contraction: states of `src`, then `y` for every target row.
fn contract<B: Backend>(
    b: &B,
    geom: ContractGeom,
    tgt: &Factor<'_, B>,
    src: &Factor<'_, B>,
    x: &Payload<'_, B>,
) -> Result<B::Float> {
    let pw = x.p + x.ones as usize;
    let elems = src.wa * (src.e + 1) * pw;
    let chunk = poly_chunk(geom.n_src(), elems, b.state_budget())?;
    let geom = ContractGeom { chunk, ..geom };
    let mut states = b.alloc_float((geom.chunks() + 1) * elems)?;
    b.poly_states(&geom, src, x, &mut states)?;
    let mut y = b.alloc_float(geom.n_target() * pw)?;
    b.poly_apply(&geom, tgt, src, x, &states, &mut y)?;
    Ok(y)
}

/// Polynomial-method forward of one head in f16 (see the module docs); refuses like
/// the CPU engine ([`Error::PolyRefused`]) and adds f16's range checks.
pub fn forward<B: Backend>(
    b: &B,
    q: MatRef<'_, f32>,
    k: MatRef<'_, f32>,
    v: MatRef<'_, f32>,
    cfg: &PolyConfig,
) -> Result<CudaPolyForward> {
    let pr = prepare(q, k, v, cfg)?;
    let p = &pr.p;
    let (n_q, n_k, d_v, r) = (p.n_q(), p.n_k(), p.d_v(), pr.table.len());
    let l = load(b, &pr)?;
    let geom = ContractGeom {
        dir: 0,
        mask: mask_code(p.mask)?,
        n_q,
        n_k,
        chunk: 1,
    };
    let tgt = Factor::<B> {
        a: &l.u,
        lda: r,
        wa: r,
        b: &l.u,
        e: 0,
        alpha: &l.ones_q,
        beta: &l.ones_q,
    };
    let src = Factor::<B> {
        a: &l.vf,
        lda: r,
        wa: r,
        b: &l.vf,
        e: 0,
        alpha: &l.ones_k,
        beta: &l.ones_k,
    };
    let x = Payload::<B> {
        x: &l.v,
        p: d_v,
        ones: true,
    };
    let chunk = poly_chunk(n_k, r * (d_v + 1), b.state_budget())?;
    let y = contract(b, geom, &tgt, &src, &x)?;
    let mut o = b.alloc_half(n_q * d_v)?;
    let mut norm = b.alloc_float(n_q)?;
    b.poly_normalize(&y, n_q, d_v, &mut o, &mut norm)?;
    let o = b.download_half(&o)?;
    let mut norm = b.download_float(&norm)?;
    norm.truncate(n_q);
    for (i, &den) in norm.iter().enumerate() {
        if p.key_end(i) > 0 && !(den > 0.0 && den.is_finite()) {
            return Err(Error::PolyRefused {
                reason: format!(
                    "the f16/f32 normaliser of row {i} is {den:e}, not positive: P is not a valid exp surrogate here"
                ),
                radius: pr.plan.regime.radius,
                entry_bound: pr.plan.regime.entry_bound,
                sqrt_ln_n: pr.plan.regime.sqrt_ln_n,
            });
        }
    }
    check_outputs("O~", &o[..n_q * d_v])?;
    let lse = norm
        .iter()
        .map(|&x| if x > 0.0 { x.ln() } else { f32::NEG_INFINITY })
        .collect();
    Ok(CudaPolyForward {
        o: Matrix::from_vec(n_q, d_v, to_f32(&o[..n_q * d_v]))?,
        lse,
        norm,
        plan: pr.plan,
        scaling: pr.scaling,
        chunk,
    })
}

/// Polynomial-method backward of one head in f16: the gradients of `kind` given `d_o`
/// (docs/math.md §3.5), from the f16 forward's O~ and D~.
#[allow(clippy::too_many_arguments)]
pub fn backward<B: Backend>(
    b: &B,
    q: MatRef<'_, f32>,
    k: MatRef<'_, f32>,
    v: MatRef<'_, f32>,
    fwd: &CudaPolyForward,
    d_o: MatRef<'_, f32>,
    kind: GradientKind,
    cfg: &PolyConfig,
) -> Result<CudaPolyGradients> {
    let p = Problem::new(q, k, v, &cfg.attention())?;
    p.check_backward_inputs(fwd.o.view(), &fwd.lse, d_o)?;
    check_f16_storage("do", d_o.as_slice())?;
    check_f16_storage("o", fwd.o.as_slice())?;
    if fwd.norm.len() != p.n_q() {
        return Err(Error::ShapeMismatch {
            what: "forward normaliser length (n_q)".into(),
            expected: p.n_q().to_string(),
            got: fwd.norm.len().to_string(),
        });
    }
    let table = FeatureTable::new(&fwd.plan.monomials)?;
    let g = fwd.plan.monomials.degree();
    let r_d = if g == 0 { 0 } else { prefix_len(&table, g - 1) };
    for (what, want, got) in [
        (
            "forward plan's variables (d)",
            p.d(),
            fwd.plan.monomials.vars(),
        ),
        (
            "forward query coefficients (rank)",
            table.len(),
            fwd.scaling.query_coef.len(),
        ),
        (
            "forward key coefficients (rank)",
            table.len(),
            fwd.scaling.key_coef.len(),
        ),
        (
            "forward derivative coefficients",
            r_d,
            fwd.scaling.deriv_coef.len(),
        ),
    ] {
        if want != got {
            return Err(Error::ShapeMismatch {
                what: what.into(),
                expected: want.to_string(),
                got: got.to_string(),
            });
        }
    }
    let pr = Prepared {
        p,
        plan: fwd.plan.clone(),
        table,
        scaling: fwd.scaling.clone(),
    };
    let (n_q, n_k, d, d_v, r) = (p.n_q(), p.n_k(), p.d(), p.d_v(), pr.table.len());
    let l = load(b, &pr)?;
    let g16 = b.upload_half(&to_half(d_o.as_slice()))?;
    let o16 = b.upload_half(&to_half(fwd.o.as_slice()))?;
    let norm = b.upload_float(&fwd.norm)?;
    let mut delta = b.alloc_float(n_q)?;
    b.row_delta(n_q, d_v, &g16, &o16, &mut delta)?;
    let mut alpha = b.alloc_float(n_q)?;
    let mut beta = b.alloc_float(n_q)?;
    b.poly_prep_backward(&norm, &delta, n_q, &mut alpha, &mut beta)?;
    // The query factor of dS: P's features, or P''s for the polynomial model.
    let deriv;
    let (ua, lda, ws) = match kind {
        GradientKind::Substituted => (&l.u, r, r),
        GradientKind::PolynomialModel => {
            let rs = pr.scaling.deriv_coef.len();
            if rs == 0 {
                return Err(Error::InvalidParameter {
                    name: "degree",
                    value: "0".into(),
                    reason: "the polynomial-model gradient needs degree >= 1".into(),
                });
            }
            let dc = b.upload_float(&pr.scaling.deriv_coef)?;
            let mut u = b.alloc_half(n_q * rs)?;
            b.poly_features(
                &l.q,
                n_q,
                d,
                pr.plan.query_scale as f32,
                (&l.parent, &l.var),
                &dc,
                rs,
                &mut u,
            )?;
            deriv = u;
            (&deriv, rs, rs)
        }
    };
    let mask = mask_code(p.mask)?;
    let left = Factor::<B> {
        a: ua,
        lda,
        wa: ws,
        b: &g16,
        e: d_v,
        alpha: &alpha,
        beta: &beta,
    };
    let right = Factor::<B> {
        a: &l.vf,
        lda: r,
        wa: ws,
        b: &l.v,
        e: d_v,
        alpha: &l.ones_k,
        beta: &l.ones_k,
    };
    let geom = |dir| ContractGeom {
        dir,
        mask,
        n_q,
        n_k,
        chunk: 1,
    };
    let tau = p.tau;
    let finish = |y: B::Float, scale: f32, rows: usize, cols: usize, name: &str| {
        let mut h = b.alloc_half(rows * cols)?;
        b.scale_to_half(&y, scale, &mut h)?;
        let h = b.download_half(&h)?;
        check_outputs(name, &h[..rows * cols])?;
        Matrix::from_vec(rows, cols, to_f32(&h[..rows * cols]))
    };
    let xk = Payload::<B> {
        x: &l.k,
        p: d,
        ones: false,
    };
    let dq = finish(
        contract(b, geom(0), &left, &right, &xk)?,
        tau,
        n_q,
        d,
        "dQ~",
    )?;
    let xq = Payload::<B> {
        x: &l.q,
        p: d,
        ones: false,
    };
    let dk = finish(
        contract(b, geom(1), &right, &left, &xq)?,
        tau,
        n_k,
        d,
        "dK~",
    )?;
    let u_tilde = Factor::<B> {
        a: &l.u,
        lda: r,
        wa: r,
        b: &l.u,
        e: 0,
        alpha: &alpha,
        beta: &l.ones_q,
    };
    let vk = Factor::<B> {
        a: &l.vf,
        lda: r,
        wa: r,
        b: &l.vf,
        e: 0,
        alpha: &l.ones_k,
        beta: &l.ones_k,
    };
    let xg = Payload::<B> {
        x: &g16,
        p: d_v,
        ones: false,
    };
    let dv = finish(
        contract(b, geom(1), &vk, &u_tilde, &xg)?,
        1.0,
        n_k,
        d_v,
        "dV~",
    )?;
    Ok(CudaPolyGradients { dq, dk, dv, kind })
}

/// [`forward`] for each head of `[heads, n, d]` stacks (each head its own plan).
pub fn forward_multihead<B: Backend>(
    b: &B,
    q: &Tensor3<f32>,
    k: &Tensor3<f32>,
    v: &Tensor3<f32>,
    cfg: &PolyConfig,
) -> Result<Vec<CudaPolyForward>> {
    same_heads(q.heads(), &[("k", k.heads()), ("v", v.heads())])?;
    (0..q.heads())
        .map(|h| forward(b, q.head(h), k.head(h), v.head(h), cfg))
        .collect()
}

/// [`backward`] for each head, given the heads' forwards.
#[allow(clippy::too_many_arguments)]
pub fn backward_multihead<B: Backend>(
    b: &B,
    q: &Tensor3<f32>,
    k: &Tensor3<f32>,
    v: &Tensor3<f32>,
    fwd: &[CudaPolyForward],
    d_o: &Tensor3<f32>,
    kind: GradientKind,
    cfg: &PolyConfig,
) -> Result<Vec<CudaPolyGradients>> {
    same_heads(
        q.heads(),
        &[
            ("k", k.heads()),
            ("v", v.heads()),
            ("do", d_o.heads()),
            ("forward results", fwd.len()),
        ],
    )?;
    (0..q.heads())
        .map(|h| {
            backward(
                b,
                q.head(h),
                k.head(h),
                v.head(h),
                &fwd[h],
                d_o.head(h),
                kind,
                cfg,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_reproduces_monomials() {
        for (d, g) in [(1, 5), (3, 4), (8, 3), (4, 0)] {
            let mon = Monomials::new(d, g, 100_000).unwrap();
            let t = FeatureTable::new(&mon).unwrap();
            assert_eq!(t.len(), mon.len());
            assert_eq!(
                prefix_len(&t, g.saturating_sub(1)),
                mon.prefix_len(g.saturating_sub(1))
            );
        }
    }
}
