//! The low-rank (polynomial-method) lemmas of ML24: Fact C.2, Lemmas
//! C.13, E.2..E.10, F.5, the low-rank `dL/dW_V` of Algorithm 1 line 22, Lemma I.3 /
//! Algorithm 2 (causal prefix products), the suffix-sum product that the
//! corrected transposed terms need under a causal mask, and Lemma I.6
//! (masked normaliser, Hadamard case). docs/math.md §3.3-§3.5.
//!
//! With `exp` replaced by a polynomial `P` with rational coefficients
//! ([`Poly`]), `f~ = D~^-1 U V^T = U~ V^T` exactly (docs/math.md §3.3), and every
//! factored form here equals the direct `O(n^2)` form with `P` in place of
//! `exp` *exactly*, in [`Rational`] arithmetic (docs/math.md §5.1, question 1). The
//! functions return exact rationals; the generic versions are also run in
//! interval arithmetic to compare with `exp` (the tests and the register).
//!
//! Corrected low-rank forms (docs/math.md §6.2), with `s~ = U~ (V^T h)`,
//! `K~ = (G o s~) 1`:
//! ```text
//! D6 = -tau V (U~^T diag(K~) X W)            D7 = tau (V (x) h) ((U~ (x) G)^T X W)
//! D8 = V ((U~^T G) W_V^T)                    D2 = -tau diag(K~) U~ ((V^T X) W^T)
//! D4 = tau (U~ (x) G) (((V (x) h)^T X) W^T)
//! dL/dW   = tau ((X^T U3)(V3^T X) - (X^T U4)(V4^T X)),  U3 = U~ (x) G, V3 = V (x) h,
//!           U4 = diag(K~) U~, V4 = V                                           (F.5)
//! dL/dW_V = (X^T V)(U~^T G)                                                    (G.3)
//! ```

use rug::Rational;

use crate::interval::Interval;
use crate::linalg::{
    chain, diag_left, hadamard, lift, matmul, neg, poly_factors, recips, row_kron, row_sums, scale,
    shape_err, sub, zeros, LemmaScalar, Mat, Poly, Res, EXACT,
};
use crate::ml24::{Eval, Layer, LayerT};

/// The low-rank attention matrix `f~ = U~ V^T` (docs/math.md §3.3, §3.5).
#[derive(Clone, Debug)]
pub(crate) struct LowRank<T> {
    /// `U~ = D~^-1 U` (`n x r`).
    pub u: Mat<T>,
    /// `V` (`n x r`).
    pub v: Mat<T>,
}

/// `U~, V` for the layer's scores `tau (X W)_i . X_j`; `D~ = U (V^T 1)` is
/// formed in `O(n r)`.
pub(crate) fn factors<T: LemmaScalar>(l: &LayerT<T>, p: &Poly) -> Res<LowRank<T>> {
    let prec = l.prec;
    let (u, v) = poly_factors(&l.xw()?, &l.x, &l.tau, p, prec)?;
    let ones = Mat::from_element(v.nrows(), 1, T::one(prec));
    let vt1 = matmul(&v.transpose(), &ones, prec)?;
    let dn = matmul(&u, &vt1, prec)?;
    let inv = recips("D~", dn.as_slice())?;
    Ok(LowRank {
        u: diag_left(&inv, &u)?,
        v,
    })
}

/// The polynomial kernel `x -> P(x)` as a closure.
pub(crate) fn poly_kernel<T: LemmaScalar>(p: &Poly, prec: u32) -> impl Fn(&T) -> Res<T> + '_ {
    move |x: &T| Ok(p.eval(x, prec))
}

/// The direct evaluation with `P` in place of `exp` (docs/math.md §5.1, question 1).
pub(crate) fn direct<T: LemmaScalar>(
    layer: &Layer,
    g: &Mat<f64>,
    p: &Poly,
    prec: u32,
) -> Res<Eval<T>> {
    Eval::new(layer, g, &poly_kernel(p, prec), prec)
}

/// The low-rank quantities for `G`: `s~`, `K~`, `U3 = U~ (x) G`, `V3 = V (x) h`.
pub(crate) struct LowRankBack<T> {
    pub lr: LowRank<T>,
    pub l: LayerT<T>,
    pub g: Mat<T>,
    pub k: Vec<T>,
    pub u3: Mat<T>,
    pub v3: Mat<T>,
}

pub(crate) fn low_rank_back<T: LemmaScalar>(
    layer: &Layer,
    g: &Mat<f64>,
    p: &Poly,
    prec: u32,
) -> Res<LowRankBack<T>> {
    let l = layer.lift::<T>(prec)?;
    crate::linalg::expect_shape("G", g, Some(layer.n()), Some(layer.d_v()))?;
    let g = lift::<T>("G", g, prec)?;
    let lr = factors(&l, p)?;
    let h = matmul(&l.x, &l.wv, prec)?;
    // s~ = U~ (V^T h): the O(n r d_v) order.
    let s = matmul(&lr.u, &matmul(&lr.v.transpose(), &h, prec)?, prec)?;
    let k = row_sums(&hadamard(&g, &s)?, prec);
    let u3 = row_kron(&lr.u, &g)?;
    let v3 = row_kron(&lr.v, &h)?;
    Ok(LowRankBack {
        lr,
        l,
        g,
        k,
        u3,
        v3,
    })
}

/// The five D-terms in low-rank form (module docs), never forming an `n x n`
/// matrix.
pub(crate) fn d_terms_low_rank<T: LemmaScalar>(
    b: &LowRankBack<T>,
) -> Res<crate::ml24::terms::DTerms<T>> {
    let prec = b.l.prec;
    let (x, w, wv, tau) = (&b.l.x, &b.l.w, &b.l.wv, &b.l.tau);
    let (u, v) = (&b.lr.u, &b.lr.v);
    let xw = matmul(x, w, prec)?;
    let wt = w.transpose();
    let d6 = neg(&scale(
        tau,
        &matmul(
            v,
            &matmul(&u.transpose(), &diag_left(&b.k, &xw)?, prec)?,
            prec,
        )?,
    ));
    let d7 = scale(
        tau,
        &matmul(&b.v3, &matmul(&b.u3.transpose(), &xw, prec)?, prec)?,
    );
    let d8 = matmul(
        v,
        &chain(&[&u.transpose(), &b.g, &wv.transpose()], prec)?,
        prec,
    )?;
    let d2 = neg(&scale(
        tau,
        &diag_left(
            &b.k,
            &matmul(u, &chain(&[&v.transpose(), x, &wt], prec)?, prec)?,
        )?,
    ));
    let d4 = scale(
        tau,
        &matmul(&b.u3, &chain(&[&b.v3.transpose(), x, &wt], prec)?, prec)?,
    );
    Ok(crate::ml24::terms::DTerms { d6, d7, d8, d2, d4 })
}

/// Low-rank `dL/dW` (Lemma F.5); `printed` keeps only the `p1` half as ML24
/// Algorithm 1 line 19 does.
pub(crate) fn grad_w_low_rank<T: LemmaScalar>(b: &LowRankBack<T>, printed: bool) -> Res<Mat<T>> {
    let prec = b.l.prec;
    let xt = b.l.x.transpose();
    let part1 = matmul(
        &matmul(&xt, &b.u3, prec)?,
        &matmul(&b.v3.transpose(), &b.l.x, prec)?,
        prec,
    )?;
    if printed {
        return Ok(scale(&b.l.tau, &part1));
    }
    let u4 = diag_left(&b.k, &b.lr.u)?;
    let part2 = matmul(
        &matmul(&xt, &u4, prec)?,
        &matmul(&b.lr.v.transpose(), &b.l.x, prec)?,
        prec,
    )?;
    Ok(scale(&b.l.tau, &sub(&part1, &part2)?))
}

/// Low-rank `dL/dW_V`: `(X^T V)(U~^T G)`; `printed` is ML24 Algorithm 1 line
/// 22, `(X^T U1)(V1^T G)` (that is `X^T f~ G`, the low-rank form of the
/// printed Lemma G.3).
pub(crate) fn grad_wv_low_rank<T: LemmaScalar>(b: &LowRankBack<T>, printed: bool) -> Res<Mat<T>> {
    let prec = b.l.prec;
    let (left, right) = if printed {
        (&b.lr.u, &b.lr.v)
    } else {
        (&b.lr.v, &b.lr.u)
    };
    matmul(
        &matmul(&b.l.x.transpose(), left, prec)?,
        &matmul(&right.transpose(), &b.g, prec)?,
        prec,
    )
}

/// ML24 Lemma C.13 (the function keeps its historical name; the low-rank
/// attention matrix: the factorisation the E-lemmas start from, docs/math.md
/// §3.3 and §6.2): `f~ = D~^-1 U V^T = U~ V^T` with `P` in place
/// of `exp`, returned as the exact rational `n x n` matrix `U~ V^T` (formed here only to
/// be compared; the algorithms never form it).
pub fn lemma_e1_low_rank_f(layer: &Layer, p: &Poly) -> Res<Mat<Rational>> {
    let l = layer.lift::<Rational>(EXACT)?;
    let lr = factors(&l, p)?;
    matmul(&lr.u, &lr.v.transpose(), EXACT)
}

/// The factors `(U~, V)` of Lemma C.13 in exact rationals (`n x r` each,
/// `r = C(d + g, g)`).
pub fn low_rank_factors(layer: &Layer, p: &Poly) -> Res<(Mat<Rational>, Mat<Rational>)> {
    let lr = factors(&layer.lift::<Rational>(EXACT)?, p)?;
    Ok((lr.u, lr.v))
}

macro_rules! e_lemma {
    ($name:ident, $field:ident, $doc:literal) => {
        #[doc = concat!("ML24 Lemmas E.2..E.10, the low-rank form of ", $doc,
            " (docs/math.md §6.2, corrected transposes), in exact rationals with `P` in place of `exp`. ",
            "ML24 groups E.2..E.10 as the low-rank forms of D6, D7, D8, D2, D4 without ",
            "assigning numbers to each; the function is named after the term.")]
        pub fn $name(layer: &Layer, g: &Mat<f64>, p: &Poly) -> Res<Mat<Rational>> {
            let b = low_rank_back::<Rational>(layer, g, p, EXACT)?;
            Ok(d_terms_low_rank(&b)?.$field)
        }
    };
}

e_lemma!(lemma_e_low_rank_d6, d6, "`D6 = -tau V (U~^T diag(K~) X W)`");
e_lemma!(
    lemma_e_low_rank_d7,
    d7,
    "`D7 = tau (V (x) h) ((U~ (x) G)^T X W)`"
);
e_lemma!(lemma_e_low_rank_d8, d8, "`D8 = V ((U~^T G) W_V^T)`");
e_lemma!(
    lemma_e_low_rank_d2,
    d2,
    "`D2 = -tau diag(K~) U~ ((V^T X) W^T)`"
);
e_lemma!(
    lemma_e_low_rank_d4,
    d4,
    "`D4 = tau (U~ (x) G) (((V (x) h)^T X) W^T)`"
);

/// ML24 Lemmas E.2..E.10 assembled: the low-rank `dL/dX = D2 + D4 + D6 + D7 +
/// D8` in `O(n r d d_v)` (docs/math.md §3.5), exact rationals.
pub fn lemma_e_low_rank_grad_x(layer: &Layer, g: &Mat<f64>, p: &Poly) -> Res<Mat<Rational>> {
    d_terms_low_rank(&low_rank_back::<Rational>(layer, g, p, EXACT)?)?.total()
}

/// ML24 Lemma F.5: `dL/dW` from the `p1` and `p2` factors,
/// `tau ((X^T U3)(V3^T X) - (X^T U4)(V4^T X))` (module docs), exact rationals.
pub fn lemma_f5_grad_w_low_rank(layer: &Layer, g: &Mat<f64>, p: &Poly) -> Res<Mat<Rational>> {
    grad_w_low_rank(&low_rank_back::<Rational>(layer, g, p, EXACT)?, false)
}

/// ML24 Algorithm 1 line 19 as printed (docs/math.md §6.2):
/// `gw = (X^T U3)(V3^T X)`, the `p1` part only; it forgets the `p2` part
/// `-(X^T U4)(V4^T X)` that Lemma F.5 subtracts (`tau` inserted as in F.5).
pub fn lemma_f5_grad_w_low_rank_printed(
    layer: &Layer,
    g: &Mat<f64>,
    p: &Poly,
) -> Res<Mat<Rational>> {
    grad_w_low_rank(&low_rank_back::<Rational>(layer, g, p, EXACT)?, true)
}

/// The corrected low-rank `dL/dW_V = (X^T V)(U~^T G)` (Lemma G.3 with `f~ =
/// U~ V^T`; Algorithm 1 line 22 corrected), exact rationals.
pub fn lemma_g3_grad_wv_low_rank(layer: &Layer, g: &Mat<f64>, p: &Poly) -> Res<Mat<Rational>> {
    grad_wv_low_rank(&low_rank_back::<Rational>(layer, g, p, EXACT)?, false)
}

/// ML24 Algorithm 1 line 22 as printed (docs/math.md §6.2):
/// `gv = (X^T U1)(V1^T G) = X^T f~ G`, the low-rank form of the printed G.3.
pub fn lemma_g3_grad_wv_low_rank_printed(
    layer: &Layer,
    g: &Mat<f64>,
    p: &Poly,
) -> Res<Mat<Rational>> {
    grad_wv_low_rank(&low_rank_back::<Rational>(layer, g, p, EXACT)?, true)
}

/// ML24 Fact C.2 (row-wise Kronecker product, docs/math.md §3.5): the right-hand
/// side `(U1 (x) U2)(V1 (x) V2)^T` of `(U1 V1^T) o (U2 V2^T) = (U1 (x) U2)(V1
/// (x) V2)^T`, in exact rationals. `U1, V1` share a width, as do `U2, V2`;
/// all have the same number of rows.
pub fn fact_c2_row_kron(
    u1: &Mat<f64>,
    v1: &Mat<f64>,
    u2: &Mat<f64>,
    v2: &Mat<f64>,
) -> Res<Mat<Rational>> {
    let q = |n, m| lift::<Rational>(n, m, EXACT);
    let (u1, v1, u2, v2) = (q("U1", u1)?, q("V1", v1)?, q("U2", u2)?, q("V2", v2)?);
    matmul(
        &row_kron(&u1, &u2)?,
        &row_kron(&v1, &v2)?.transpose(),
        EXACT,
    )
}

fn check_factors<T>(u: &Mat<T>, v: &Mat<T>, y: &Mat<T>) -> Res<()> {
    if u.ncols() != v.ncols() || u.nrows() != y.nrows() || v.nrows() != y.nrows() {
        return Err(shape_err(format!(
            "causal product needs U (n x r), V (n x r), Y (n x k); got {} x {}, {} x {}, {} x {}",
            u.nrows(),
            u.ncols(),
            v.nrows(),
            v.ncols(),
            y.nrows(),
            y.ncols()
        )));
    }
    Ok(())
}

/// `(M o U V^T) Y` for the causal mask `M_ij = [j <= i]` by prefix states
/// `Z_i = sum_{j <= i} V_j^T Y_j` (`r x k`): row `i` is `U_i Z_i`
/// (ML24 Lemma I.3 / Algorithm 2; docs/math.md §3.4). `O(n r k)`.
pub(crate) fn prefix_product<T: LemmaScalar>(
    u: &Mat<T>,
    v: &Mat<T>,
    y: &Mat<T>,
    prec: u32,
) -> Res<Mat<T>> {
    check_factors(u, v, y)?;
    let (n, r, k) = (u.nrows(), u.ncols(), y.ncols());
    let mut z = zeros::<T>(r, k, prec);
    let mut out = zeros::<T>(n, k, prec);
    for i in 0..n {
        for a in 0..r {
            for c in 0..k {
                z[(a, c)] = z[(a, c)].plus(&v[(i, a)].times(&y[(i, c)]));
            }
        }
        for c in 0..k {
            out[(i, c)] = (0..r).fold(T::zero(prec), |acc, a| {
                acc.plus(&u[(i, a)].times(&z[(a, c)]))
            });
        }
    }
    Ok(out)
}

/// `(M o U V^T)^T Y` for the causal mask by suffix states
/// `Z'_j = sum_{i >= j} U_i^T Y_i`: row `j` is `V_j Z'_j` (docs/math.md §3.4: the
/// transposed products run upper-triangular; ML24 does not spell this out).
pub(crate) fn suffix_product<T: LemmaScalar>(
    u: &Mat<T>,
    v: &Mat<T>,
    y: &Mat<T>,
    prec: u32,
) -> Res<Mat<T>> {
    check_factors(u, v, y)?;
    let (n, r, k) = (u.nrows(), u.ncols(), y.ncols());
    let mut z = zeros::<T>(r, k, prec);
    let mut out = zeros::<T>(n, k, prec);
    for j in (0..n).rev() {
        for a in 0..r {
            for c in 0..k {
                z[(a, c)] = z[(a, c)].plus(&u[(j, a)].times(&y[(j, c)]));
            }
        }
        for c in 0..k {
            out[(j, c)] = (0..r).fold(T::zero(prec), |acc, a| {
                acc.plus(&v[(j, a)].times(&z[(a, c)]))
            });
        }
    }
    Ok(out)
}

fn rationals3(u: &Mat<f64>, v: &Mat<f64>, y: &Mat<f64>) -> Res<[Mat<Rational>; 3]> {
    Ok([
        lift("U", u, EXACT)?,
        lift("V", v, EXACT)?,
        lift("Y", y, EXACT)?,
    ])
}

/// ML24 Lemma I.3 / Algorithm 2: the causal prefix product `(M o U V^T) Y`
/// (see `prefix_product`'s formula), exact rationals. Correct.
pub fn lemma_i3_causal_prefix_product(
    u: &Mat<f64>,
    v: &Mat<f64>,
    y: &Mat<f64>,
) -> Res<Mat<Rational>> {
    let [u, v, y] = rationals3(u, v, y)?;
    prefix_product(&u, &v, &y, EXACT)
}

/// The suffix-sum product `(M o U V^T)^T Y` that the corrected transposed terms
/// (D6, D7, D8 and `dK` under a causal mask) need (docs/math.md §3.5), exact
/// rationals.
pub fn lemma_causal_suffix_product(u: &Mat<f64>, v: &Mat<f64>, y: &Mat<f64>) -> Res<Mat<Rational>> {
    let [u, v, y] = rationals3(u, v, y)?;
    suffix_product(&u, &v, &y, EXACT)
}

/// ML24 Lemma I.6, masked normaliser: `D~ = (M o U V^T) 1` by the prefix
/// product with `Y = 1` (`n x 1`), exact rationals.
pub fn lemma_i6_masked_normaliser(u: &Mat<f64>, v: &Mat<f64>) -> Res<Mat<Rational>> {
    let u = lift::<Rational>("U", u, EXACT)?;
    let v = lift::<Rational>("V", v, EXACT)?;
    let ones = Mat::from_element(u.nrows(), 1, Rational::from(1));
    prefix_product(&u, &v, &ones, EXACT)
}

/// ML24 Lemma I.6, Hadamard case: `(M o (U1 V1^T) o (U2 V2^T)) Y` as the prefix
/// product of the row-wise Kronecker factors `U1 (x) U2`, `V1 (x) V2` (Fact
/// C.2), exact rationals.
pub fn lemma_i6_hadamard_prefix_product(
    (u1, v1): (&Mat<f64>, &Mat<f64>),
    (u2, v2): (&Mat<f64>, &Mat<f64>),
    y: &Mat<f64>,
) -> Res<Mat<Rational>> {
    let q = |n, m| lift::<Rational>(n, m, EXACT);
    let (u1, v1, u2, v2, y) = (
        q("U1", u1)?,
        q("V1", v1)?,
        q("U2", u2)?,
        q("V2", v2)?,
        q("Y", y)?,
    );
    prefix_product(&row_kron(&u1, &u2)?, &row_kron(&v1, &v2)?, &y, EXACT)
}

/// ML24 Lemma I.3 applied to attention: the causal low-rank forward
/// `O~_i = U_i Z_i / (U_i . z_i)` (docs/math.md §3.4) for the layer's scores, in
/// interval arithmetic with `P`'s rational coefficients enclosed (`n x d_v`).
pub fn lemma_i3_causal_attention(layer: &Layer, p: &Poly, prec: u32) -> Res<Mat<Interval>> {
    let l = layer.lift::<Interval>(prec)?;
    causal_attention(&l, p)
}

pub(crate) fn causal_attention<T: LemmaScalar>(l: &LayerT<T>, p: &Poly) -> Res<Mat<T>> {
    let prec = l.prec;
    let (u, v) = poly_factors(&l.xw()?, &l.x, &l.tau, p, prec)?;
    let h = matmul(&l.x, &l.wv, prec)?;
    let ones = Mat::from_element(h.nrows(), 1, T::one(prec));
    let num = prefix_product(&u, &v, &h, prec)?;
    let den = prefix_product(&u, &v, &ones, prec)?;
    let inv = recips("causal D~", den.as_slice())?;
    diag_left(&inv, &num)
}

/// The direct masked product `(M o A) Y` (the definition the prefix and suffix
/// products are compared with).
pub(crate) fn masked_direct<T: LemmaScalar>(
    a: &Mat<T>,
    y: &Mat<T>,
    transpose: bool,
    prec: u32,
) -> Res<Mat<T>> {
    let m = crate::linalg::causal(a, prec);
    let m = if transpose { m.transpose() } else { m };
    matmul(&m, y, prec)
}

/// `(U1 V1^T) o (U2 V2^T)`, the left side of Fact C.2 (the definition).
pub(crate) fn hadamard_direct<T: LemmaScalar>(
    u1: &Mat<T>,
    v1: &Mat<T>,
    u2: &Mat<T>,
    v2: &Mat<T>,
    prec: u32,
) -> Res<Mat<T>> {
    hadamard(
        &matmul(u1, &v1.transpose(), prec)?,
        &matmul(u2, &v2.transpose(), prec)?,
    )
}
