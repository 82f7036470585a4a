//! The probes: for each lemma, the checks that run its spec function against
//! the oracle (or an exact identity, or a propagated epsilon) on one instance.

use nalgebra::DMatrix;
use rug::Rational;

use crate::as24;
use crate::attention;
use crate::dual::Dual;
use crate::instance::Instance;
use crate::interval::Interval;
use crate::linalg::{
    agreement, apply, causal, eps_check, exp_kernel, lift, matmul, max_mag, merge, neg,
    normalise_rows, scale, widened_kernel, Agreement, Mat, Res, EXACT,
};
use crate::ml24::blocks::{self, head_layer, tanh};
use crate::ml24::low_rank::{self as lr};
use crate::ml24::oracle::{
    ds_by_dual, grad_by_dual, grad_scalar, pairing, Occurrence, Param, Part,
};
use crate::ml24::terms::{self, d_terms, DTerms, Form};
use crate::ml24::{weights, Eval, Layer};

use super::Probe;

pub(super) fn ag(a: &Mat<Interval>, b: &Mat<Interval>) -> Res<Agreement> {
    agreement(a, b)
}

/// A column vector from a list of intervals.
pub(super) fn column(v: Vec<Interval>) -> Mat<Interval> {
    let n = v.len();
    DMatrix::from_vec(n, 1, v)
}

/// `ds/dX_{i1 j1}` for every `(i1, j1)` (row-major), by the oracle.
pub(super) fn jacobian(
    layer: &Layer,
    occ: Occurrence,
    part: Part,
    prec: u32,
) -> Res<Vec<Mat<Interval>>> {
    let mut out = Vec::new();
    for i1 in 0..layer.n() {
        for j1 in 0..layer.d() {
            out.push(ds_by_dual(layer, Param::X(occ), (i1, j1), part, prec)?);
        }
    }
    Ok(out)
}

pub(super) fn probe_d1(inst: &Instance, prec: u32, same_row: bool) -> Res<Probe> {
    let l = &inst.layer;
    let jac = jacobian(l, Occurrence::All, Part::Total, prec)?;
    let (mut c, mut p, mut o) = (Vec::new(), Vec::new(), Vec::new());
    for i0 in 0..l.n() {
        for j0 in 0..l.d_v() {
            for i1 in 0..l.n() {
                if (i0 == i1) != same_row {
                    continue;
                }
                for j1 in 0..l.d() {
                    c.push(terms::lemma_d1_ds_dx(l, (i0, j0), (i1, j1), prec)?);
                    p.push(terms::lemma_d1_ds_dx_printed(l, (i0, j0), (i1, j1), prec)?);
                    o.push(jac[i1 * l.d() + j1][(i0, j0)].clone());
                }
            }
        }
    }
    let o = column(o);
    Ok(Probe {
        correct: Some(ag(&column(c), &o)?),
        printed: Some(ag(&column(p), &o)?),
        ..Probe::default()
    })
}

pub(super) type BFn = fn(&Layer, usize, usize, u32) -> Res<Mat<Interval>>;

/// B-terms: `n x d` (key/value side) or `d x 1` (query side, row `i0`).
pub(super) fn probe_b(
    inst: &Instance,
    prec: u32,
    f: (BFn, BFn),
    occ: Occurrence,
    part: Part,
) -> Res<Probe> {
    let l = &inst.layer;
    let jac = jacobian(l, occ, part, prec)?;
    let query = occ == Occurrence::Query;
    let (mut cs, mut ps) = (Vec::new(), Vec::new());
    for i0 in 0..l.n() {
        for j0 in 0..l.d_v() {
            let o = if query {
                Mat::from_fn(l.d(), 1, |j1, _| jac[i0 * l.d() + j1][(i0, j0)].clone())
            } else {
                Mat::from_fn(l.n(), l.d(), |i1, j1| {
                    jac[i1 * l.d() + j1][(i0, j0)].clone()
                })
            };
            cs.push(ag(&f.0(l, i0, j0, prec)?, &o)?);
            ps.push(ag(&f.1(l, i0, j0, prec)?, &o)?);
        }
    }
    Ok(Probe {
        correct: Some(merge(&cs)),
        printed: Some(merge(&ps)),
        ..Probe::default()
    })
}

pub(super) fn probe_d8(inst: &Instance, prec: u32) -> Res<Probe> {
    let l = &inst.layer;
    let jac = jacobian(l, Occurrence::All, Part::Total, prec)?;
    let (mut cs, mut ps) = (Vec::new(), Vec::new());
    for i0 in 0..l.n() {
        for j0 in 0..l.d_v() {
            let o = Mat::from_fn(l.n(), l.d(), |i1, j1| {
                jac[i1 * l.d() + j1][(i0, j0)].clone()
            });
            cs.push(ag(&terms::lemma_d8_ds_dx(l, i0, j0, prec)?, &o)?);
            ps.push(ag(&terms::lemma_d8_ds_dx_printed(l, i0, j0, prec)?, &o)?);
        }
    }
    Ok(Probe {
        correct: Some(merge(&cs)),
        printed: Some(merge(&ps)),
        ..Probe::default()
    })
}

pub(super) type GFn = fn(&Layer, &Mat<f64>, u32) -> Res<Mat<Interval>>;

pub(super) fn probe_grad(
    inst: &Instance,
    prec: u32,
    correct: GFn,
    printed: Option<GFn>,
    param: Param,
    part: Part,
) -> Res<Probe> {
    let (l, g) = (&inst.layer, &inst.g);
    let o = grad_by_dual(l, g, param, part, prec)?;
    Ok(Probe {
        correct: Some(ag(&correct(l, g, prec)?, &o)?),
        printed: printed.map(|p| ag(&p(l, g, prec)?, &o)).transpose()?,
        ..Probe::default()
    })
}

/// The direct evaluation with `P` in exact rationals.
pub(super) fn direct_exact(inst: &Instance) -> Res<Eval<Rational>> {
    lr::direct(&inst.layer, &inst.g, &inst.poly_exact, EXACT)
}

/// The direct evaluation with the widened kernel (encloses `exp` and `P`),
/// and `eps_P`.
pub(super) fn direct_widened(inst: &Instance, prec: u32) -> Res<(Eval<Interval>, f64)> {
    let l = inst.layer.lift::<Interval>(prec)?;
    let r = max_mag(&l.scores()?);
    let p = &inst.poly_close;
    let eps = p.taylor_relative_error(r, prec);
    let k = widened_kernel(p, r, eps, prec)?;
    Ok((Eval::new(&inst.layer, &inst.g, &k, prec)?, eps))
}

pub(super) type Pick = fn(&DTerms<Rational>) -> &Mat<Rational>;
pub(super) type PickI = fn(&DTerms<Interval>) -> &Mat<Interval>;

pub(super) fn probe_e(
    inst: &Instance,
    prec: u32,
    pick: Pick,
    pick_i: PickI,
    occ: Occurrence,
    part: Part,
) -> Res<Probe> {
    let lr_exact = lr::d_terms_low_rank(&lr::low_rank_back::<Rational>(
        &inst.layer,
        &inst.g,
        &inst.poly_exact,
        EXACT,
    )?)?;
    let direct = d_terms(&direct_exact(inst)?, Form::Correct)?;
    let lr_iv = lr::d_terms_low_rank(&lr::low_rank_back::<Interval>(
        &inst.layer,
        &inst.g,
        &inst.poly_close,
        prec,
    )?)?;
    let (wide, eps) = direct_widened(inst, prec)?;
    let wide = d_terms(&wide, Form::Correct)?;
    let o = grad_by_dual(&inst.layer, &inst.g, Param::X(occ), part, prec)?;
    let (printed, printed_exact) = printed_d_terms(inst, prec)?;
    Ok(Probe {
        printed: Some(ag(pick_i(&printed), &o)?),
        exact: Some(pick(&lr_exact) == pick(&direct)),
        printed_exact: Some(pick(&printed_exact) == pick(&direct)),
        eps: Some(eps_check(eps, pick_i(&wide), pick_i(&lr_iv), &o)?),
        ..Probe::default()
    })
}

pub(super) fn probe_e_total(inst: &Instance, prec: u32) -> Res<Probe> {
    let lr_exact = lr::lemma_e_low_rank_grad_x(&inst.layer, &inst.g, &inst.poly_exact)?;
    let direct = d_terms(&direct_exact(inst)?, Form::Correct)?.total()?;
    let lr_iv = lr::d_terms_low_rank(&lr::low_rank_back::<Interval>(
        &inst.layer,
        &inst.g,
        &inst.poly_close,
        prec,
    )?)?
    .total()?;
    let (wide, eps) = direct_widened(inst, prec)?;
    let wide = d_terms(&wide, Form::Correct)?.total()?;
    let o = grad_by_dual(
        &inst.layer,
        &inst.g,
        Param::X(Occurrence::All),
        Part::Total,
        prec,
    )?;
    let (printed, printed_exact) = printed_d_terms(inst, prec)?;
    Ok(Probe {
        printed: Some(ag(&printed.total()?, &o)?),
        exact: Some(lr_exact == direct),
        printed_exact: Some(printed_exact.total()? == direct),
        eps: Some(eps_check(eps, &wide, &lr_iv, &o)?),
        ..Probe::default()
    })
}

/// The D-terms as Lemmas D.10-D.14 print them, which Lemmas E.2-E.10 factor
/// unchanged: with `exp` in intervals (against the oracle) and with `P` in
/// exact rationals (against the direct correct form; the low-rank factoring
/// is an exact identity, so the printed low-rank value equals this one).
fn printed_d_terms(inst: &Instance, prec: u32) -> Res<(DTerms<Interval>, DTerms<Rational>)> {
    let e = crate::ml24::eval_exp(&inst.layer, &inst.g, prec)?;
    Ok((
        d_terms(&e, Form::Printed)?,
        d_terms(&direct_exact(inst)?, Form::Printed)?,
    ))
}

pub(super) fn probe_e1(inst: &Instance, prec: u32) -> Res<Probe> {
    let f_lr = lr::lemma_e1_low_rank_f(&inst.layer, &inst.poly_exact)?;
    let direct = direct_exact(inst)?.fw.f;
    let l = inst.layer.lift::<Interval>(prec)?;
    let lri = lr::factors(&l, &inst.poly_close)?;
    let f_lri = matmul(&lri.u, &lri.v.transpose(), prec)?;
    let (wide, eps) = direct_widened(inst, prec)?;
    let o = crate::ml24::oracle::attention_matrix(&inst.layer, prec)?;
    Ok(Probe {
        exact: Some(f_lr == direct),
        eps: Some(eps_check(eps, &wide.fw.f, &f_lri, &o)?),
        ..Probe::default()
    })
}

pub(super) fn tau_xt_m_x(e: &Eval<Interval>, m: &Mat<Interval>) -> Res<Mat<Interval>> {
    let prec = e.prec();
    Ok(scale(
        &e.l.tau,
        &crate::linalg::chain(&[&e.l.x.transpose(), m, &e.l.x], prec)?,
    ))
}

pub(super) fn probe_f5(inst: &Instance, prec: u32) -> Res<Probe> {
    let (l, g) = (&inst.layer, &inst.g);
    let de = direct_exact(inst)?;
    let direct = scale(
        &de.l.tau,
        &crate::linalg::chain(&[&de.l.x.transpose(), &de.p, &de.l.x], EXACT)?,
    );
    let lr_c = lr::lemma_f5_grad_w_low_rank(l, g, &inst.poly_exact)?;
    let lr_p = lr::lemma_f5_grad_w_low_rank_printed(l, g, &inst.poly_exact)?;
    let o = grad_by_dual(l, g, Param::W, Part::Total, prec)?;
    let e = crate::ml24::eval_exp(l, g, prec)?;
    let printed_exp = tau_xt_m_x(&e, &e.p1)?;
    let lr_iv = lr::grad_w_low_rank(
        &lr::low_rank_back::<Interval>(l, g, &inst.poly_close, prec)?,
        false,
    )?;
    let (wide, eps) = direct_widened(inst, prec)?;
    let wide = tau_xt_m_x(&wide, &wide.p)?;
    Ok(Probe {
        printed: Some(ag(&printed_exp, &o)?),
        exact: Some(lr_c == direct),
        printed_exact: Some(lr_p == direct),
        eps: Some(eps_check(eps, &wide, &lr_iv, &o)?),
        ..Probe::default()
    })
}

pub(super) fn probe_g3_low_rank(inst: &Instance, prec: u32) -> Res<Probe> {
    let (l, g) = (&inst.layer, &inst.g);
    let de = direct_exact(inst)?;
    let direct = crate::linalg::chain(&[&de.l.x.transpose(), &de.fw.f.transpose(), &de.g], EXACT)?;
    let lr_c = lr::lemma_g3_grad_wv_low_rank(l, g, &inst.poly_exact)?;
    let lr_p = lr::lemma_g3_grad_wv_low_rank_printed(l, g, &inst.poly_exact)?;
    let o = grad_by_dual(l, g, Param::Wv, Part::Total, prec)?;
    let lr_iv = lr::grad_wv_low_rank(
        &lr::low_rank_back::<Interval>(l, g, &inst.poly_close, prec)?,
        false,
    )?;
    let (wide, eps) = direct_widened(inst, prec)?;
    let wide = crate::linalg::chain(
        &[&wide.l.x.transpose(), &wide.fw.f.transpose(), &wide.g],
        prec,
    )?;
    Ok(Probe {
        printed: Some(ag(&weights::lemma_g3_grad_wv_printed(l, g, prec)?, &o)?),
        exact: Some(lr_c == direct),
        printed_exact: Some(lr_p == direct),
        eps: Some(eps_check(eps, &wide, &lr_iv, &o)?),
        ..Probe::default()
    })
}

pub(super) fn probe_entrywise(
    inst: &Instance,
    prec: u32,
    lemma: BFn,
    param: Param,
    shape: (usize, usize),
) -> Res<Probe> {
    let l = &inst.layer;
    let mut jac = Vec::new();
    for a in 0..shape.0 {
        for b in 0..shape.1 {
            jac.push(ds_by_dual(l, param, (a, b), Part::Total, prec)?);
        }
    }
    let mut cs = Vec::new();
    for i0 in 0..l.n() {
        for j0 in 0..l.d_v() {
            let o = Mat::from_fn(shape.0, shape.1, |a, b| {
                jac[a * shape.1 + b][(i0, j0)].clone()
            });
            cs.push(ag(&lemma(l, i0, j0, prec)?, &o)?);
        }
    }
    Ok(Probe {
        correct: Some(merge(&cs)),
        ..Probe::default()
    })
}

pub(super) fn probe_c4(inst: &Instance, prec: u32) -> Res<Probe> {
    let (l, g) = (&inst.layer, &inst.g);
    let c = weights::lemma_c4_chain_rule(l, g, prec)?;
    let parts = [
        ag(
            &c.dx,
            &grad_by_dual(l, g, Param::X(Occurrence::All), Part::Total, prec)?,
        )?,
        ag(&c.dw, &grad_by_dual(l, g, Param::W, Part::Total, prec)?)?,
        ag(&c.dwv, &grad_by_dual(l, g, Param::Wv, Part::Total, prec)?)?,
    ];
    Ok(Probe {
        correct: Some(merge(&parts)),
        ..Probe::default()
    })
}

pub(super) fn mlp_loss(z: &Mat<Dual>, wg: &Mat<Dual>, gt: &Mat<Dual>, prec: u32) -> Res<Dual> {
    let pre = matmul(z, wg, prec)?;
    let mut t = Vec::with_capacity(pre.len());
    for x in pre.iter() {
        t.push(tanh(x, prec)?);
    }
    let t = Mat::from_vec(pre.nrows(), pre.ncols(), t);
    pairing(gt, &t, prec)
}

pub(super) fn probe_h(inst: &Instance, prec: u32, wrt_z: bool) -> Res<Probe> {
    let m = &inst.mlp;
    let z = lift::<Dual>("Z", &m.z, prec)?;
    let wg = lift::<Dual>("W_g", &m.w_g, prec)?;
    let gt = lift::<Dual>("dL/dT", &inst.g_mlp, prec)?;
    let (claimed, o) = if wrt_z {
        let zi = lift::<Interval>("Z", &m.z, prec)?;
        (
            blocks::lemma_h1_grad_through_mlp(m, &inst.g_mlp, prec)?,
            grad_scalar(&zi, &|zz: &Mat<Dual>| mlp_loss(zz, &wg, &gt, prec))?,
        )
    } else {
        let wi = lift::<Interval>("W_g", &m.w_g, prec)?;
        (
            blocks::lemma_h2_grad_w_g(m, &inst.g_mlp, prec)?,
            grad_scalar(&wi, &|ww: &Mat<Dual>| mlp_loss(&z, ww, &gt, prec))?,
        )
    };
    Ok(Probe {
        correct: Some(ag(&claimed, &o)?),
        ..Probe::default()
    })
}

pub(super) fn probe_j3(inst: &Instance, prec: u32) -> Res<Probe> {
    let l = &inst.layer;
    let claimed = blocks::lemma_j3_residual_grad_x(l, &inst.w_o, &inst.g_res, prec)?;
    let base = l.lift::<Dual>(prec)?;
    let wo = lift::<Dual>("W_O", &inst.w_o, prec)?;
    let gt = lift::<Dual>("dL/dT", &inst.g_res, prec)?;
    let xi = lift::<Interval>("X", &l.x, prec)?;
    let o = grad_scalar(&xi, &|x: &Mat<Dual>| {
        let mut lt = base.clone();
        lt.x = x.clone();
        let s = lt.forward(&exp_kernel)?.s;
        let t = crate::linalg::add(x, &matmul(&s, &wo, prec)?)?;
        pairing(&gt, &t, prec)
    })?;
    Ok(Probe {
        correct: Some(ag(&claimed, &o)?),
        ..Probe::default()
    })
}

/// `<G, [s_1, ..., s_H]>` with one matrix of one head replaced by `m`.
pub(super) fn heads_loss(
    inst: &Instance,
    which: (usize, u8),
    m: &Mat<Dual>,
    prec: u32,
) -> Res<Dual> {
    let g = lift::<Dual>("G", &inst.g_heads, prec)?;
    let mut acc = Dual::constant(Interval::zero(prec));
    let mut c0 = 0;
    for (hi, h) in inst.heads.iter().enumerate() {
        let mut lt = head_layer(&inst.layer.x, h).lift::<Dual>(prec)?;
        match which {
            (_, 0) => lt.x = m.clone(),
            (k, 1) if k == hi => lt.w = m.clone(),
            (k, 2) if k == hi => lt.wv = m.clone(),
            _ => {}
        }
        let s = lt.forward(&exp_kernel)?.s;
        let gh = g.columns(c0, s.ncols()).into_owned();
        c0 += s.ncols();
        acc = acc + pairing(&gh, &s, prec)?;
    }
    Ok(acc)
}

pub(super) fn probe_k2(inst: &Instance, prec: u32) -> Res<Probe> {
    let x = &inst.layer.x;
    let c = blocks::lemma_k2_multi_head(x, &inst.heads, &inst.g_heads, prec)?;
    let xi = lift::<Interval>("X", x, prec)?;
    let mut parts = vec![ag(
        &c.dx,
        &grad_scalar(&xi, &|m: &Mat<Dual>| heads_loss(inst, (0, 0), m, prec))?,
    )?];
    for (k, h) in inst.heads.iter().enumerate() {
        let wi = lift::<Interval>("W_h", &h.w, prec)?;
        let vi = lift::<Interval>("W_V,h", &h.w_v, prec)?;
        parts.push(ag(
            &c.dw[k],
            &grad_scalar(&wi, &|m: &Mat<Dual>| heads_loss(inst, (k, 1), m, prec))?,
        )?);
        parts.push(ag(
            &c.dwv[k],
            &grad_scalar(&vi, &|m: &Mat<Dual>| heads_loss(inst, (k, 2), m, prec))?,
        )?);
    }
    Ok(Probe {
        correct: Some(merge(&parts)),
        ..Probe::default()
    })
}

pub(super) fn rat(name: &str, m: &Mat<f64>) -> Res<Mat<Rational>> {
    lift::<Rational>(name, m, EXACT)
}

pub(super) fn probe_c2(inst: &Instance, _prec: u32) -> Res<Probe> {
    let [u1, v1, u2, v2, _] = &inst.factors;
    let lhs = lr::hadamard_direct(
        &rat("U1", u1)?,
        &rat("V1", v1)?,
        &rat("U2", u2)?,
        &rat("V2", v2)?,
        EXACT,
    )?;
    Ok(Probe {
        exact: Some(lr::fact_c2_row_kron(u1, v1, u2, v2)? == lhs),
        ..Probe::default()
    })
}

pub(super) fn probe_prefix(inst: &Instance, prec: u32) -> Res<Probe> {
    let [u1, v1, _, _, y] = &inst.factors;
    let direct = lr::masked_direct(
        &matmul(&rat("U", u1)?, &rat("V", v1)?.transpose(), EXACT)?,
        &rat("Y", y)?,
        false,
        EXACT,
    )?;
    let exact = lr::lemma_i3_causal_prefix_product(u1, v1, y)? == direct;
    // Causal attention with P against exact causal attention (exp).
    let l = &inst.layer;
    let low = lr::lemma_i3_causal_attention(l, &inst.poly_close, prec)?;
    let lt = l.lift::<Interval>(prec)?;
    let s = lt.scores()?;
    let r = max_mag(&s);
    let eps = inst.poly_close.taylor_relative_error(r, prec);
    let k = widened_kernel(&inst.poly_close, r, eps, prec)?;
    let f = normalise_rows(&causal(&apply(&k, &s)?, prec), prec)?;
    let h = matmul(&lt.x, &lt.wv, prec)?;
    let wide = matmul(&f, &h, prec)?;
    let problem = attention::Problem {
        q: exact_product(&l.x, &l.w)?,
        k: l.x.clone(),
        v: exact_product(&l.x, &l.w_v)?,
        tau: l.tau,
        mask: attention::Mask::CausalTopLeft,
        softcap: None,
    };
    let o = attention::forward(&problem, prec)?.o;
    Ok(Probe {
        exact: Some(exact),
        eps: Some(eps_check(eps, &wide, &low, &o)?),
        ..Probe::default()
    })
}

/// `a b` in `f64`, checked to be exact (it is for the instances' dyadic
/// entries); [`crate::attention::SpecError::Degenerate`] otherwise.
pub(super) fn exact_product(a: &Mat<f64>, b: &Mat<f64>) -> Res<Mat<f64>> {
    let p = a * b;
    let exact = matmul(&rat("a", a)?, &rat("b", b)?, EXACT)?;
    if rat("a b", &p)? == exact {
        Ok(p)
    } else {
        Err(crate::linalg::degenerate("product not exact in f64"))
    }
}

pub(super) fn probe_suffix(inst: &Instance, _prec: u32) -> Res<Probe> {
    let [u1, v1, _, _, y] = &inst.factors;
    let direct = lr::masked_direct(
        &matmul(&rat("U", u1)?, &rat("V", v1)?.transpose(), EXACT)?,
        &rat("Y", y)?,
        true,
        EXACT,
    )?;
    Ok(Probe {
        exact: Some(lr::lemma_causal_suffix_product(u1, v1, y)? == direct),
        ..Probe::default()
    })
}

pub(super) fn probe_i6(inst: &Instance, _prec: u32) -> Res<Probe> {
    let [u1, v1, u2, v2, y] = &inst.factors;
    let a = matmul(&rat("U", u1)?, &rat("V", v1)?.transpose(), EXACT)?;
    let ones = Mat::from_element(u1.nrows(), 1, Rational::from(1));
    let norm = lr::masked_direct(&a, &ones, false, EXACT)?;
    let had = lr::hadamard_direct(
        &rat("U1", u1)?,
        &rat("V1", v1)?,
        &rat("U2", u2)?,
        &rat("V2", v2)?,
        EXACT,
    )?;
    let had = lr::masked_direct(&had, &rat("Y", y)?, false, EXACT)?;
    let ok = lr::lemma_i6_masked_normaliser(u1, v1)? == norm
        && lr::lemma_i6_hadamard_prefix_product((u1, v1), (u2, v2), y)? == had;
    Ok(Probe {
        exact: Some(ok),
        ..Probe::default()
    })
}

// AS24 probes.

pub(super) fn probe_b1(inst: &Instance, prec: u32, part: u8) -> Res<Probe> {
    let p = &inst.as24;
    let (n, dy) = (p.a1.nrows(), p.e.ncols());
    let mut parts = Vec::new();
    for a in 0..p.x.nrows() {
        for b in 0..p.x.ncols() {
            let o = as24::b1_oracle(p, (a, b), prec)?;
            if part == 8 {
                parts.push(ag(&as24::lemma_b1_part8(p, (a, b), prec)?, &o.dl)?);
                continue;
            }
            for j0 in 0..n {
                let i = (a, b);
                let one = |m: &Mat<Interval>, r: usize, c: usize| {
                    Mat::from_element(1, 1, m[(r, c)].clone())
                };
                match part {
                    1 => parts.push(ag(
                        &as24::lemma_b1_part1(p, j0, i, prec)?,
                        &crate::linalg::row(&o.ds, j0),
                    )?),
                    2 => parts.push(ag(
                        &as24::lemma_b1_part2(p, j0, i, prec)?,
                        &crate::linalg::row(&o.du, j0),
                    )?),
                    3 => parts.push(ag(
                        &as24::lemma_b1_part3(p, j0, i, prec)?,
                        &one(&o.dalpha, j0, 0),
                    )?),
                    4 => parts.push(ag(
                        &as24::lemma_b1_part4(p, j0, i, prec)?,
                        &one(&o.dalpha_inv, j0, 0),
                    )?),
                    5 => parts.push(ag(
                        &as24::lemma_b1_part5(p, j0, i, prec)?,
                        &crate::linalg::row(&o.df, j0),
                    )?),
                    _ => {
                        for i0 in 0..dy {
                            let (claimed, oracle) = if part == 6 {
                                (
                                    as24::lemma_b1_part6(p, j0, i0, i, prec)?,
                                    one(&o.dfh, j0, i0),
                                )
                            } else {
                                (
                                    as24::lemma_b1_part7(p, j0, i0, i, prec)?,
                                    one(&o.dc, j0, i0),
                                )
                            };
                            parts.push(ag(&claimed, &oracle)?);
                        }
                    }
                }
            }
        }
    }
    Ok(Probe {
        correct: Some(merge(&parts)),
        ..Probe::default()
    })
}

pub(super) fn probe_c7(inst: &Instance, prec: u32) -> Res<Probe> {
    let p = &inst.as24;
    Ok(Probe {
        correct: Some(ag(
            &as24::lemma_c7_grad_x(p, prec)?,
            &as24::oracle_grad_x(p, prec)?,
        )?),
        ..Probe::default()
    })
}

pub(super) fn probe_as_d2(inst: &Instance, prec: u32) -> Res<Probe> {
    let p = &inst.as24;
    let [f, ..] = as24::direct_poly(p, &inst.poly_exact)?;
    let (f_lr, f_wide, eps) = as24::with_exp_bounds(p, &inst.poly_as24, as24::Bounded::F, prec)?;
    let [f_exp, ..] = as24::exp_values(p, prec)?;
    Ok(Probe {
        exact: Some(as24::lemma_d2_low_rank_f(p, &inst.poly_exact)? == f),
        eps: Some(eps_check(eps, &f_wide, &f_lr, &f_exp)?),
        ..Probe::default()
    })
}

pub(super) fn probe_as_d3(inst: &Instance, prec: u32) -> Res<Probe> {
    let p = &inst.as24;
    let [_, q, ..] = as24::direct_poly(p, &inst.poly_exact)?;
    let [_, q_exp, q_printed, ..] = as24::exp_values(p, prec)?;
    let o = as24::oracle_grad_f(p, prec)?;
    Ok(Probe {
        correct: Some(ag(&q_exp, &o)?),
        printed: Some(ag(&q_printed, &o)?),
        exact: Some(as24::lemma_d3_low_rank_q(p, &inst.poly_exact)? == q),
        printed_exact: Some(as24::lemma_d3_low_rank_q_printed(p, &inst.poly_exact)? == q),
        ..Probe::default()
    })
}

pub(super) fn probe_as_d4(inst: &Instance, prec: u32) -> Res<Probe> {
    let p = &inst.as24;
    let [_, _, p1, ..] = as24::direct_poly(p, &inst.poly_exact)?;
    let [_, _, _, p1_exp, ..] = as24::exp_values(p, prec)?;
    let o = as24::oracle_grad_scores(p, as24::ScoreOccurrence::Numerator, prec)?;
    Ok(Probe {
        correct: Some(ag(&p1_exp, &o)?),
        exact: Some(as24::lemma_d4_low_rank_p1(p, &inst.poly_exact)? == p1),
        ..Probe::default()
    })
}

pub(super) fn probe_as_d5(inst: &Instance, prec: u32) -> Res<Probe> {
    let p = &inst.as24;
    let [_, _, _, p2, _] = as24::direct_poly(p, &inst.poly_exact)?;
    let [_, _, _, _, p2_exp, p2_printed, _] = as24::exp_values(p, prec)?;
    // The normaliser occurrence of S gives -p2.
    let o = neg(&as24::oracle_grad_scores(
        p,
        as24::ScoreOccurrence::Normaliser,
        prec,
    )?);
    Ok(Probe {
        correct: Some(ag(&p2_exp, &o)?),
        printed: Some(ag(&p2_printed, &o)?),
        exact: Some(as24::lemma_d5_low_rank_p2(p, &inst.poly_exact)? == p2),
        printed_exact: Some(as24::lemma_d5_low_rank_p2_printed(p, &inst.poly_exact)? == p2),
        ..Probe::default()
    })
}

pub(super) fn probe_thm16(inst: &Instance, prec: u32) -> Res<Probe> {
    let p = &inst.as24;
    let [.., g] = as24::direct_poly(p, &inst.poly_exact)?;
    let (g_lr, g_wide, eps) = as24::with_exp_bounds(p, &inst.poly_as24, as24::Bounded::Grad, prec)?;
    let o = as24::oracle_grad_x(p, prec)?;
    Ok(Probe {
        exact: Some(as24::theorem_1_6_grad_x(p, &inst.poly_exact)? == g),
        eps: Some(eps_check(eps, &g_wide, &g_lr, &o)?),
        ..Probe::default()
    })
}
