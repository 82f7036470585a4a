//! The lemmas of AS24 (Alman, Song, *The Fine-Grained Complexity of Gradient
//! Computation for Training Large Language Models*, arXiv 2402.04497) as
//! executable reference math (docs/math.md §1.3, §6.3).
//!
//! AS24's single-layer problem (no score scale):
//!
//! ```text
//! L(X) = 1/2 || D^-1 exp(A1 X A2^T) A3 Y - E ||_F^2
//! u = exp(A1 X A2^T)   alpha = u 1   f = diag(alpha)^-1 u   h = A3 Y   c = f h - E
//! q = c h^T   r_j = <f_j, q_j>   p = f o q - diag(r) f   (p_j = (diag(f_j) - f_j f_j^T) q_j)
//! dL/dX = A1^T p A2                                                          (Lemma C.7)
//! ```
//!
//! Lemma B.1's eight parts are the derivative chain of `L` with respect to one
//! entry `x_i = X_{ab}` of `X` (with `A_{j0,i} = d(A1 X A2^T)_{j0,*}/dX_{ab} =
//! A1_{j0 a} A2_{*,b}^T`). docs/math.md §6.3 does not quote the parts; they are encoded
//! here as the standard chain `u -> alpha -> alpha^-1 -> f -> <f, h> -> c -> L`
//! that the lemma establishes, each checked against the dual-number oracle.
//!
//! The low-rank lemmas D.1..D.5 and the algorithm of Theorem 1.6 (docs/math.md §3.5
//! and §6.3), with `f~ = U1 V1^T` from a polynomial `P`:
//! ```text
//! q~ = c~ h^T = U2 V2^T,  U2 = [U1, -E],  V2 = [h h^T V1, h]                  (D.3)
//! p1~ = f~ o q~ = U3 V3^T,  U3 = U1 (x) U2,  V3 = V1 (x) V2                   (D.4)
//! p2~ = diag(r~) f~ = U4 V4^T,  U4 = diag(r~) U1,  V4 = V1,
//!       r~_j = U1_j (V1^T V2) U2_j^T                                          (D.5)
//! dL/dX ~ (A1^T U3)(V3^T A2) - (A1^T U4)(V4^T A2)                             (Thm 1.6)
//! ```
//! Errata (docs/math.md §6.3): D.3 uses `q = h c^T` (built as
//! `h (U1 V1^T h - E)^T`); D.5 scales the wrong side (`V4 = diag(r) V1`, that
//! is `f~ diag(r)`) and prints `r_j = U1_j (V1 V2^T) U2_j^T`, whose dimensions
//! do not match (a typo for `V1^T V2`, which is what is encoded).

use rug::Rational;

use crate::dual::Dual;
use crate::interval::Interval;
use crate::linalg::{
    apply, chain, check_prec, diag_left, diag_right, exp_kernel, expect_shape, hadamard, hcat,
    lift, matmul, neg, normalise_rows, poly_factors, recips, row, row_kron, row_sums, sub, Kernel,
    LemmaScalar, Mat, Poly, Res, EXACT,
};
use crate::ml24::check_index;
use crate::ml24::oracle::grad_scalar;

/// AS24's single-layer problem. Shapes: `A1` is `n x d1`, `X` is `d1 x d2`,
/// `A2` is `n x d2`, `A3` is `n x d3`, `Y` is `d3 x d_y`, `E` is `n x d_y`.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// `A1`.
    pub a1: Mat<f64>,
    /// `A2`.
    pub a2: Mat<f64>,
    /// `A3`.
    pub a3: Mat<f64>,
    /// `X`, the variable.
    pub x: Mat<f64>,
    /// `Y`.
    pub y: Mat<f64>,
    /// `E`, the target.
    pub e: Mat<f64>,
}

impl Problem {
    /// Checks that the shapes fit together.
    pub fn validate(&self) -> Res<()> {
        let n = self.a1.nrows();
        expect_shape("X", &self.x, Some(self.a1.ncols()), None)?;
        expect_shape("A2", &self.a2, Some(n), Some(self.x.ncols()))?;
        expect_shape("A3", &self.a3, Some(n), None)?;
        expect_shape("Y", &self.y, Some(self.a3.ncols()), None)?;
        expect_shape("E", &self.e, Some(n), Some(self.y.ncols()))
    }

    fn lift<T: LemmaScalar>(&self, prec: u32) -> Res<ProbT<T>> {
        check_prec(prec)?;
        self.validate()?;
        Ok(ProbT {
            a1: lift("A1", &self.a1, prec)?,
            a2: lift("A2", &self.a2, prec)?,
            a3: lift("A3", &self.a3, prec)?,
            x: lift("X", &self.x, prec)?,
            y: lift("Y", &self.y, prec)?,
            e: lift("E", &self.e, prec)?,
            prec,
        })
    }
}

#[derive(Clone, Debug)]
struct ProbT<T> {
    a1: Mat<T>,
    a2: Mat<T>,
    a3: Mat<T>,
    x: Mat<T>,
    y: Mat<T>,
    e: Mat<T>,
    prec: u32,
}

/// Forward and backward quantities (module docs).
#[derive(Clone, Debug)]
struct Fwd<T> {
    u: Mat<T>,
    alpha: Vec<T>,
    f: Mat<T>,
    h: Mat<T>,
    c: Mat<T>,
    q: Mat<T>,
    r: Vec<T>,
    p1: Mat<T>,
    p2: Mat<T>,
}

impl<T: LemmaScalar> ProbT<T> {
    fn scores(&self) -> Res<Mat<T>> {
        chain(&[&self.a1, &self.x, &self.a2.transpose()], self.prec)
    }

    fn forward(&self, kernel: Kernel<'_, T>) -> Res<Fwd<T>> {
        let prec = self.prec;
        let u = apply(kernel, &self.scores()?)?;
        let alpha = row_sums(&u, prec);
        let f = normalise_rows(&u, prec)?;
        let h = matmul(&self.a3, &self.y, prec)?;
        let c = sub(&matmul(&f, &h, prec)?, &self.e)?;
        let q = matmul(&c, &h.transpose(), prec)?;
        let r = row_sums(&hadamard(&f, &q)?, prec);
        let p1 = hadamard(&f, &q)?;
        let p2 = diag_left(&r, &f)?;
        Ok(Fwd {
            u,
            alpha,
            f,
            h,
            c,
            q,
            r,
            p1,
            p2,
        })
    }

    fn grad(&self, fw: &Fwd<T>) -> Res<Mat<T>> {
        chain(
            &[&self.a1.transpose(), &sub(&fw.p1, &fw.p2)?, &self.a2],
            self.prec,
        )
    }
}

fn exp_fwd(p: &Problem, prec: u32) -> Res<(ProbT<Interval>, Fwd<Interval>)> {
    let t = p.lift::<Interval>(prec)?;
    let fw = t.forward(&exp_kernel)?;
    Ok((t, fw))
}

/// `A_{j0,i}` for `i = (a, b)`: `A1_{j0 a} A2_{*,b}^T` (`1 x n`).
fn a_vec<T: LemmaScalar>(t: &ProbT<T>, j0: usize, (a, b): (usize, usize)) -> Res<Mat<T>> {
    check_index("j0", j0, t.a1.nrows())?;
    check_index("a", a, t.x.nrows())?;
    check_index("b", b, t.x.ncols())?;
    Ok(Mat::from_fn(1, t.a2.nrows(), |_, l| {
        t.a1[(j0, a)].times(&t.a2[(l, b)])
    }))
}

fn dot<T: LemmaScalar>(a: &Mat<T>, b: &Mat<T>, prec: u32) -> Res<T> {
    crate::ml24::oracle::pairing(a, b, prec)
}

fn scalar(x: Interval) -> Mat<Interval> {
    Mat::from_element(1, 1, x)
}

/// AS24 Lemma B.1 part 1: `d(A1 X A2^T)_{j0,*}/dX_{ab} = A_{j0,i} = A1_{j0 a}
/// A2_{*,b}^T` (`1 x n`).
pub fn lemma_b1_part1(p: &Problem, j0: usize, i: (usize, usize), prec: u32) -> Res<Mat<Interval>> {
    let t = p.lift::<Interval>(prec)?;
    a_vec(&t, j0, i)
}

/// AS24 Lemma B.1 part 2: `du_{j0}/dX_{ab} = u_{j0} o A_{j0,i}` (`1 x n`).
pub fn lemma_b1_part2(p: &Problem, j0: usize, i: (usize, usize), prec: u32) -> Res<Mat<Interval>> {
    let (t, fw) = exp_fwd(p, prec)?;
    hadamard(&row(&fw.u, j0), &a_vec(&t, j0, i)?)
}

/// AS24 Lemma B.1 part 3: `d alpha_{j0}/dX_{ab} = <u_{j0}, A_{j0,i}>` (`1 x 1`).
pub fn lemma_b1_part3(p: &Problem, j0: usize, i: (usize, usize), prec: u32) -> Res<Mat<Interval>> {
    let (t, fw) = exp_fwd(p, prec)?;
    Ok(scalar(dot(&row(&fw.u, j0), &a_vec(&t, j0, i)?, prec)?))
}

/// AS24 Lemma B.1 part 4: `d alpha_{j0}^-1/dX_{ab} = -alpha_{j0}^-1 <f_{j0},
/// A_{j0,i}>` (`1 x 1`).
pub fn lemma_b1_part4(p: &Problem, j0: usize, i: (usize, usize), prec: u32) -> Res<Mat<Interval>> {
    let (t, fw) = exp_fwd(p, prec)?;
    let inv = recips("alpha", &fw.alpha)?;
    let fa = dot(&row(&fw.f, j0), &a_vec(&t, j0, i)?, prec)?;
    Ok(scalar(-(&inv[j0] * &fa)))
}

/// `f_{j0} o A - <f_{j0}, A> f_{j0}` (`1 x n`).
fn df_row<T: LemmaScalar>(t: &ProbT<T>, fw: &Fwd<T>, j0: usize, i: (usize, usize)) -> Res<Mat<T>> {
    let a = a_vec(t, j0, i)?;
    let fj = row(&fw.f, j0);
    let fa = dot(&fj, &a, t.prec)?;
    sub(&hadamard(&fj, &a)?, &fj.map(|x| fa.times(&x)))
}

/// AS24 Lemma B.1 part 5: `df_{j0}/dX_{ab} = f_{j0} o A_{j0,i} - <f_{j0},
/// A_{j0,i}> f_{j0}` (`1 x n`).
pub fn lemma_b1_part5(p: &Problem, j0: usize, i: (usize, usize), prec: u32) -> Res<Mat<Interval>> {
    let (t, fw) = exp_fwd(p, prec)?;
    df_row(&t, &fw, j0, i)
}

fn part6(
    t: &ProbT<Interval>,
    fw: &Fwd<Interval>,
    j0: usize,
    i0: usize,
    i: (usize, usize),
) -> Res<Interval> {
    check_index("i0", i0, fw.h.ncols())?;
    let hcol = crate::linalg::col(&fw.h, i0).transpose();
    dot(&df_row(t, fw, j0, i)?, &hcol, t.prec)
}

/// AS24 Lemma B.1 part 6: `d<f_{j0}, h_{i0}>/dX_{ab} = <f_{j0} o A_{j0,i},
/// h_{i0}> - <f_{j0}, A_{j0,i}> <f_{j0}, h_{i0}>`, `h_{i0}` the column `i0` of
/// `h = A3 Y` (`1 x 1`).
pub fn lemma_b1_part6(
    p: &Problem,
    j0: usize,
    i0: usize,
    i: (usize, usize),
    prec: u32,
) -> Res<Mat<Interval>> {
    let (t, fw) = exp_fwd(p, prec)?;
    Ok(scalar(part6(&t, &fw, j0, i0, i)?))
}

/// AS24 Lemma B.1 part 7: `dc_{j0 i0}/dX_{ab}`, equal to part 6 since `E` does
/// not depend on `X` (`1 x 1`).
pub fn lemma_b1_part7(
    p: &Problem,
    j0: usize,
    i0: usize,
    i: (usize, usize),
    prec: u32,
) -> Res<Mat<Interval>> {
    lemma_b1_part6(p, j0, i0, i, prec)
}

/// AS24 Lemma B.1 part 8: `dL/dX_{ab} = sum_{j0, i0} c_{j0 i0} dc_{j0 i0}/dX_{ab}`
/// (`1 x 1`).
pub fn lemma_b1_part8(p: &Problem, i: (usize, usize), prec: u32) -> Res<Mat<Interval>> {
    let (t, fw) = exp_fwd(p, prec)?;
    let mut acc = Interval::zero(prec);
    for j0 in 0..fw.c.nrows() {
        for i0 in 0..fw.c.ncols() {
            acc = acc + &fw.c[(j0, i0)] * part6(&t, &fw, j0, i0, i)?;
        }
    }
    Ok(scalar(acc))
}

/// AS24 Lemma C.7: `dL/dX = A1^T p A2` with `p = f o q - diag(r) f`
/// (`d1 x d2`). Correct (docs/math.md §1.3).
pub fn lemma_c7_grad_x(p: &Problem, prec: u32) -> Res<Mat<Interval>> {
    let (t, fw) = exp_fwd(p, prec)?;
    t.grad(&fw)
}

/// The low-rank factors of AS24 Section D for `P` (module docs).
#[derive(Clone, Debug)]
struct LowRank<T> {
    u1: Mat<T>,
    v1: Mat<T>,
    u2: Mat<T>,
    v2: Mat<T>,
    h: Mat<T>,
    c: Mat<T>,
    r: Vec<T>,
}

fn low_rank<T: LemmaScalar>(t: &ProbT<T>, poly: &Poly) -> Res<LowRank<T>> {
    let prec = t.prec;
    let one = T::one(prec);
    let (u, v1) = poly_factors(&matmul(&t.a1, &t.x, prec)?, &t.a2, &one, poly, prec)?;
    let ones = Mat::from_element(v1.nrows(), 1, T::one(prec));
    let dn = matmul(&u, &matmul(&v1.transpose(), &ones, prec)?, prec)?;
    let u1 = diag_left(&recips("D~", dn.as_slice())?, &u)?;
    let h = matmul(&t.a3, &t.y, prec)?;
    // c~ = U1 (V1^T h) - E
    let c = sub(
        &matmul(&u1, &matmul(&v1.transpose(), &h, prec)?, prec)?,
        &t.e,
    )?;
    let u2 = hcat(&u1, &neg(&t.e))?;
    let v2 = hcat(&chain(&[&h, &h.transpose(), &v1], prec)?, &h)?;
    // r~_j = U1_j (V1^T V2) U2_j^T
    let m = matmul(&v1.transpose(), &v2, prec)?;
    let u1m = matmul(&u1, &m, prec)?;
    let r = row_sums(&hadamard(&u1m, &u2)?, prec);
    Ok(LowRank {
        u1,
        v1,
        u2,
        v2,
        h,
        c,
        r,
    })
}

/// Which low-rank quantity to form.
#[derive(Clone, Copy)]
enum Which {
    F,
    Q,
    QPrinted,
    P1,
    P2,
    P2Printed,
    Grad,
}

fn low_rank_value<T: LemmaScalar>(t: &ProbT<T>, lr: &LowRank<T>, which: Which) -> Res<Mat<T>> {
    let prec = t.prec;
    let outer = |u: &Mat<T>, v: &Mat<T>| matmul(u, &v.transpose(), prec);
    let kron3 =
        || -> Res<(Mat<T>, Mat<T>)> { Ok((row_kron(&lr.u1, &lr.u2)?, row_kron(&lr.v1, &lr.v2)?)) };
    match which {
        Which::F => outer(&lr.u1, &lr.v1),
        Which::Q => outer(&lr.u2, &lr.v2),
        Which::QPrinted => outer(&lr.h, &lr.c),
        Which::P1 => {
            let (u3, v3) = kron3()?;
            outer(&u3, &v3)
        }
        Which::P2 => outer(&diag_left(&lr.r, &lr.u1)?, &lr.v1),
        Which::P2Printed => outer(&lr.u1, &diag_left(&lr.r, &lr.v1)?),
        Which::Grad => {
            let (u3, v3) = kron3()?;
            let u4 = diag_left(&lr.r, &lr.u1)?;
            let a1t = t.a1.transpose();
            let part1 = matmul(
                &matmul(&a1t, &u3, prec)?,
                &matmul(&v3.transpose(), &t.a2, prec)?,
                prec,
            )?;
            let part2 = matmul(
                &matmul(&a1t, &u4, prec)?,
                &matmul(&lr.v1.transpose(), &t.a2, prec)?,
                prec,
            )?;
            sub(&part1, &part2)
        }
    }
}

fn exact(p: &Problem, poly: &Poly, which: Which) -> Res<Mat<Rational>> {
    let t = p.lift::<Rational>(EXACT)?;
    low_rank_value(&t, &low_rank(&t, poly)?, which)
}

/// AS24 Lemma D.1 (the function keeps its historical name): `f~ = U1 V1^T`
/// (`U1 = D~^-1 U`, docs/math.md §3.3) in exact rationals with `P` in place of
/// `exp` (`n x n`, formed only for comparison).
pub fn lemma_d2_low_rank_f(p: &Problem, poly: &Poly) -> Res<Mat<Rational>> {
    exact(p, poly, Which::F)
}

/// AS24 Lemma D.3, corrected: `q~ = c~ h^T = U2 V2^T` with `U2 = [U1, -E]`,
/// `V2 = [h h^T V1, h]` (`n x n`), exact rationals.
pub fn lemma_d3_low_rank_q(p: &Problem, poly: &Poly) -> Res<Mat<Rational>> {
    exact(p, poly, Which::Q)
}

/// AS24 Lemma D.3 as printed (docs/math.md §6.3): `q = h c^T`, factors built as
/// `h (U1 V1^T h - E)^T` (the transpose of the intended `q`), exact rationals.
pub fn lemma_d3_low_rank_q_printed(p: &Problem, poly: &Poly) -> Res<Mat<Rational>> {
    exact(p, poly, Which::QPrinted)
}

/// AS24 Lemma D.4: `p1~ = f~ o q~ = U3 V3^T`, `U3 = U1 (x) U2`,
/// `V3 = V1 (x) V2` (Fact C.2), exact rationals. Correct.
pub fn lemma_d4_low_rank_p1(p: &Problem, poly: &Poly) -> Res<Mat<Rational>> {
    exact(p, poly, Which::P1)
}

/// AS24 Lemma D.5, corrected: `p2~ = diag(r~) f~ = U4 V4^T`, `U4 = diag(r~) U1`,
/// `V4 = V1`, `r~_j = U1_j (V1^T V2) U2_j^T`, exact rationals.
pub fn lemma_d5_low_rank_p2(p: &Problem, poly: &Poly) -> Res<Mat<Rational>> {
    exact(p, poly, Which::P2)
}

/// AS24 Lemma D.5 as printed (docs/math.md §6.3): `U4 = U1`, `V4 = diag(r~) V1`,
/// that is `f~ diag(r~)` (the scaling on the wrong side); `r~` as corrected
/// (the printed `V1 V2^T` does not even have matching dimensions), exact
/// rationals.
pub fn lemma_d5_low_rank_p2_printed(p: &Problem, poly: &Poly) -> Res<Mat<Rational>> {
    exact(p, poly, Which::P2Printed)
}

/// AS24 Theorem 1.6's algorithm: `dL/dX ~ (A1^T U3)(V3^T A2) - (A1^T U4)(V4^T
/// A2)` in `O(n r^2 d)` without an `n x n` matrix (`d1 x d2`), exact rationals.
pub fn theorem_1_6_grad_x(p: &Problem, poly: &Poly) -> Res<Mat<Rational>> {
    exact(p, poly, Which::Grad)
}

/// The direct `O(n^2)` counterparts with `P` in place of `exp` (exact
/// rationals), for the identity checks: `(f~, q~, p1~, p2~, A1^T p~ A2)`.
pub fn direct_poly(p: &Problem, poly: &Poly) -> Res<[Mat<Rational>; 5]> {
    let t = p.lift::<Rational>(EXACT)?;
    let k = |x: &Rational| Ok(poly.eval(x, EXACT));
    let fw = t.forward(&k)?;
    let g = t.grad(&fw)?;
    Ok([fw.f, fw.q, fw.p1, fw.p2, g])
}

/// The exact-`exp` values of the quantities of Lemmas D.2..D.5 and C.7 and
/// of their printed variants, as enclosures: `[f, q, h c^T, p1, p2,
/// f diag(r), dL/dX]`.
pub fn exp_values(p: &Problem, prec: u32) -> Res<[Mat<Interval>; 7]> {
    let (t, fw) = exp_fwd(p, prec)?;
    let g = t.grad(&fw)?;
    let q_printed = matmul(&fw.h, &fw.c.transpose(), prec)?;
    let p2_printed = diag_right(&fw.f, &fw.r)?;
    Ok([fw.f, fw.q, q_printed, fw.p1, fw.p2, p2_printed, g])
}

/// Which quantity [`with_exp_bounds`] forms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bounded {
    /// `f~` (Lemma D.1).
    F,
    /// The gradient of Theorem 1.6.
    Grad,
}

/// The low-rank `f~` or gradient (Theorem 1.6) with `P` in interval
/// arithmetic, for the comparison with `exp`, together with the widened direct
/// evaluation (see [`crate::linalg::widened_kernel`], which encloses both the
/// `P` and the `exp` value) and `eps_P` (valid for a Taylor `P`):
/// `(low-rank value, widened direct value, eps_P)`.
pub fn with_exp_bounds(
    p: &Problem,
    poly: &Poly,
    which: Bounded,
    prec: u32,
) -> Res<(Mat<Interval>, Mat<Interval>, f64)> {
    let t = p.lift::<Interval>(prec)?;
    let lr = low_rank(&t, poly)?;
    let r = crate::linalg::max_mag(&t.scores()?);
    let eps = poly.taylor_relative_error(r, prec);
    let k = crate::linalg::widened_kernel(poly, r, eps, prec)?;
    let fw = t.forward(&k)?;
    Ok(match which {
        Bounded::F => (low_rank_value(&t, &lr, Which::F)?, fw.f, eps),
        Bounded::Grad => (low_rank_value(&t, &lr, Which::Grad)?, t.grad(&fw)?, eps),
    })
}

// ---------------------------------------------------------------- oracle

/// The dual-number oracle's view of one seeded entry `X_{ab}`: the derivative
/// of every intermediate of the forward pass (module docs), computed by
/// running the forward in [`Dual`] arithmetic. No closed form is used.
#[derive(Clone, Debug)]
pub struct B1Oracle {
    /// `d(A1 X A2^T)/dX_{ab}` (`n x n`).
    pub ds: Mat<Interval>,
    /// `du/dX_{ab}` (`n x n`).
    pub du: Mat<Interval>,
    /// `d alpha/dX_{ab}` (`n x 1`).
    pub dalpha: Mat<Interval>,
    /// `d alpha^-1/dX_{ab}` (`n x 1`).
    pub dalpha_inv: Mat<Interval>,
    /// `df/dX_{ab}` (`n x n`).
    pub df: Mat<Interval>,
    /// `d(f h)/dX_{ab}` (`n x d_y`).
    pub dfh: Mat<Interval>,
    /// `dc/dX_{ab}` (`n x d_y`).
    pub dc: Mat<Interval>,
    /// `dL/dX_{ab}` (`1 x 1`).
    pub dl: Mat<Interval>,
}

/// Runs the forward of `p` in dual numbers with `X_{ab}` seeded.
pub fn b1_oracle(p: &Problem, (a, b): (usize, usize), prec: u32) -> Res<B1Oracle> {
    let mut t = p.lift::<Dual>(prec)?;
    check_index("a", a, t.x.nrows())?;
    check_index("b", b, t.x.ncols())?;
    t.x[(a, b)] = Dual::variable(t.x[(a, b)].val.clone());
    let s = t.scores()?;
    let fw = t.forward(&exp_kernel)?;
    let inv = recips("alpha", &fw.alpha)?;
    let fh = matmul(&fw.f, &fw.h, prec)?;
    let loss = loss_of(&fw.c, prec);
    let der = |m: &Mat<Dual>| m.map(|x| x.der);
    let col = |v: &[Dual]| Mat::from_fn(v.len(), 1, |i, _| v[i].der.clone());
    Ok(B1Oracle {
        ds: der(&s),
        du: der(&fw.u),
        dalpha: col(&fw.alpha),
        dalpha_inv: col(&inv),
        df: der(&fw.f),
        dfh: der(&fh),
        dc: der(&fw.c),
        dl: scalar(loss.der),
    })
}

fn loss_of<T: LemmaScalar>(c: &Mat<T>, prec: u32) -> T {
    let half = T::from_rational(&Rational::from((1, 2)), prec);
    half.times(&c.iter().fold(T::zero(prec), |acc, x| acc.plus(&x.times(x))))
}

/// `dL/dX` by dual numbers (the oracle for Lemma C.7 and Theorem 1.6).
pub fn oracle_grad_x(p: &Problem, prec: u32) -> Res<Mat<Interval>> {
    let t = p.lift::<Dual>(prec)?;
    let xi = p.lift::<Interval>(prec)?.x;
    grad_scalar(&xi, &|x: &Mat<Dual>| {
        let mut tt = t.clone();
        tt.x = x.clone();
        let fw = tt.forward(&exp_kernel)?;
        Ok(loss_of(&fw.c, prec))
    })
}

/// `dL/df` with `f` taken as a free `n x n` input of `L(f) = 1/2 ||f h - E||^2`
/// (the oracle for `q`, Lemma D.3).
pub fn oracle_grad_f(p: &Problem, prec: u32) -> Res<Mat<Interval>> {
    let t = p.lift::<Dual>(prec)?;
    let f0 = exp_fwd(p, prec)?.1.f;
    let h = matmul(&t.a3, &t.y, prec)?;
    grad_scalar(&f0, &|f: &Mat<Dual>| {
        let c = sub(&matmul(f, &h, prec)?, &t.e)?;
        Ok(loss_of(&c, prec))
    })
}

/// Which occurrence of the scores `S` the oracle seeds in `f = exp(S) /
/// (exp(S) 1)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScoreOccurrence {
    /// The numerator `exp(S)`: gives `p1 = f o q`.
    Numerator,
    /// The normaliser `exp(S) 1`: gives `-p2 = -diag(r) f`.
    Normaliser,
}

/// `dL/dS` through one occurrence of `S` (the oracle for `p1` and `p2`,
/// Lemmas D.4 and D.5).
pub fn oracle_grad_scores(p: &Problem, occ: ScoreOccurrence, prec: u32) -> Res<Mat<Interval>> {
    let t = p.lift::<Dual>(prec)?;
    let s0 = p.lift::<Interval>(prec)?.scores()?;
    let s_const = s0.map(Dual::constant);
    let h = matmul(&t.a3, &t.y, prec)?;
    grad_scalar(&s0, &|s: &Mat<Dual>| {
        let (num, den) = match occ {
            ScoreOccurrence::Numerator => (s, &s_const),
            ScoreOccurrence::Normaliser => (&s_const, s),
        };
        let u = apply(&exp_kernel, num)?;
        let alpha = row_sums(&apply(&exp_kernel, den)?, prec);
        let f = diag_left(&recips("alpha", &alpha)?, &u)?;
        let c = sub(&matmul(&f, &h, prec)?, &t.e)?;
        Ok(loss_of(&c, prec))
    })
}
