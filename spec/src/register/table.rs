//! The register's table: every lemma, in paper order, with its spec function,
//! what it computes, the correction of the printed form, and its probe.

use crate::ml24::oracle::{Occurrence, Param, Part};
use crate::ml24::terms::{self};
use crate::ml24::weights;

use super::bound_probes::{probe_as_e3, probe_as_e4, probe_as_e5, probe_entry_bound, probe_i1};
use super::causal_probes::{probe_i7_grad_wv, probe_i7_i8_grad_x, probe_i8_grad_w};
use super::probes::*;
use super::Entry;
use crate::ml24::entry_bounds::{lemma_c17_f_bound, lemma_c18_h_bound, lemma_c19_s_bound};

macro_rules! entry {
    ($paper:literal, $num:literal, $func:literal, $computes:literal, $corr:literal, $probe:expr) => {
        Entry {
            paper: $paper,
            number: $num,
            function: $func,
            computes: $computes,
            correction: $corr,
            probe: $probe,
        }
    };
}

/// Every lemma of the register, in paper order.
pub fn entries() -> Vec<Entry> {
    use terms::*;
    use Occurrence::{Key, Query, Value};
    vec![
        entry!(
            "ML24",
            "Lemma 3.4 / C.4",
            "ml24::weights::lemma_c4_chain_rule",
            "dL/dX, dL/dW, dL/dW_V as sums over G of entry derivatives",
            "-",
            probe_c4
        ),
        entry!(
            "ML24",
            "Lemma D.1 (i0 = i1, C1..C5)",
            "ml24::terms::lemma_d1_ds_dx",
            "ds_{i0 j0}/dX_{i0 j1}",
            "C1, C3: (X W)_{i0 j1} for <W_{j1,*}, X_{i0,*}>; C2, C4: X W^T for X W",
            |i, p| probe_d1(i, p, true)
        ),
        entry!(
            "ML24",
            "Lemma D.1 (i0 != i1, C6..C8)",
            "ml24::terms::lemma_d1_ds_dx",
            "ds_{i0 j0}/dX_{i1 j1}, i1 != i0",
            "f_{i0 i1} for f_{i1 i0}; (X W)_{i0 j1} for <W_{j1,*}, X_{i0,*}>",
            |i, p| probe_d1(i, p, false)
        ),
        entry!(
            "ML24",
            "Lemma D.3 (B6)",
            "ml24::terms::lemma_d3_b6",
            "key side, normaliser part of ds_{i0 j0}/dX",
            "B6 = -s f_{i0,*}^T (X_{i0,*} W), not -s f_{*,i0} (W X_{i0,*}^T)^T",
            |i, p| probe_b(
                i,
                p,
                (lemma_d3_b6, lemma_d3_b6_printed),
                Key,
                Part::Normaliser
            )
        ),
        entry!(
            "ML24",
            "Lemma D.4 (B7)",
            "ml24::terms::lemma_d4_b7",
            "key side, numerator part of ds_{i0 j0}/dX",
            "B7 = (f_{i0,*}^T o h_{*,j0}) (X_{i0,*} W)",
            |i, p| probe_b(
                i,
                p,
                (lemma_d4_b7, lemma_d4_b7_printed),
                Key,
                Part::Numerator
            )
        ),
        entry!(
            "ML24",
            "Lemma D.5 (B8)",
            "ml24::terms::lemma_d5_b8",
            "value side of ds_{i0 j0}/dX",
            "B8 = f_{i0,*}^T (W_V)_{*,j0}^T (row of f, not column)",
            |i, p| probe_b(i, p, (lemma_d5_b8, lemma_d5_b8_printed), Value, Part::Total)
        ),
        entry!(
            "ML24",
            "Lemma D.6 (B2)",
            "ml24::terms::lemma_d6_b2",
            "query side, normaliser part of ds_{i0 j0}/dX_{i0,*}",
            "B2 = -s W X^T f_{i0,*}^T (W, not W^T)",
            |i, p| probe_b(
                i,
                p,
                (lemma_d6_b2, lemma_d6_b2_printed),
                Query,
                Part::Normaliser
            )
        ),
        entry!(
            "ML24",
            "Lemma D.7 (B4)",
            "ml24::terms::lemma_d7_b4",
            "query side, numerator part of ds_{i0 j0}/dX_{i0,*}",
            "B4 = W X^T (f_{i0,*}^T o h_{*,j0}) (W, not W^T)",
            |i, p| probe_b(
                i,
                p,
                (lemma_d7_b4, lemma_d7_b4_printed),
                Query,
                Part::Numerator
            )
        ),
        entry!(
            "ML24",
            "Lemma D.8",
            "ml24::terms::lemma_d8_ds_dx",
            "ds_{i0 j0}/dX = B6 + B7 + B8 + e_{i0} (B2 + B4)^T",
            "assemble the corrected B-terms",
            probe_d8
        ),
        entry!(
            "ML24",
            "Lemma D.9",
            "ml24::terms::lemma_d9_grad_x",
            "dL/dX = sum G_{i0 j0} ds_{i0 j0}/dX",
            "assemble the corrected B-terms",
            |i, p| probe_grad(
                i,
                p,
                lemma_d9_grad_x,
                Some(lemma_d9_grad_x_printed),
                Param::X(Occurrence::All),
                Part::Total
            )
        ),
        entry!(
            "ML24",
            "Lemma D.10 (D6)",
            "ml24::terms::lemma_d10_d6",
            "key side, normaliser part of dL/dX",
            "D6 = -f^T diag(K) X W (f^T and W, not f and W^T)",
            |i, p| probe_grad(
                i,
                p,
                lemma_d10_d6,
                Some(lemma_d10_d6_printed),
                Param::X(Key),
                Part::Normaliser
            )
        ),
        entry!(
            "ML24",
            "Lemma D.11 (D7)",
            "ml24::terms::lemma_d11_d7",
            "key side, numerator part of dL/dX",
            "D7 = (f o q)^T X W, not (f o q^T) X W^T",
            |i, p| probe_grad(
                i,
                p,
                lemma_d11_d7,
                Some(lemma_d11_d7_printed),
                Param::X(Key),
                Part::Numerator
            )
        ),
        entry!(
            "ML24",
            "Lemma D.12 (D8)",
            "ml24::terms::lemma_d12_d8",
            "value side of dL/dX",
            "D8 = f^T G W_V^T, not f G W_V^T",
            |i, p| probe_grad(
                i,
                p,
                lemma_d12_d8,
                Some(lemma_d12_d8_printed),
                Param::X(Value),
                Part::Total
            )
        ),
        entry!(
            "ML24",
            "Lemma D.13 (D2)",
            "ml24::terms::lemma_d13_d2",
            "query side, normaliser part of dL/dX",
            "D2 = -diag(K) f X W^T, not ... X W",
            |i, p| probe_grad(
                i,
                p,
                lemma_d13_d2,
                Some(lemma_d13_d2_printed),
                Param::X(Query),
                Part::Normaliser
            )
        ),
        entry!(
            "ML24",
            "Lemma D.14 (D4)",
            "ml24::terms::lemma_d14_d4",
            "query side, numerator part of dL/dX",
            "D4 = (f o q) X W^T, not ... X W",
            |i, p| probe_grad(
                i,
                p,
                lemma_d14_d4,
                Some(lemma_d14_d4_printed),
                Param::X(Query),
                Part::Numerator
            )
        ),
        entry!(
            "ML24",
            "Lemma D.17",
            "ml24::terms::lemma_d17_grad_x",
            "dL/dX = tau (p X W^T + p^T X W) + f^T G W_V^T",
            "D2 + D4 = p X W^T, D6 + D7 = p^T X W, D8 = f^T G W_V^T",
            |i, p| probe_grad(
                i,
                p,
                lemma_d17_grad_x,
                Some(lemma_d17_grad_x_printed),
                Param::X(Occurrence::All),
                Part::Total
            )
        ),
        entry!(
            "ML24",
            "Lemma C.13",
            "ml24::low_rank::lemma_e1_low_rank_f",
            "f~ = D~^-1 U V^T = U~ V^T (polynomial kernel, docs/math.md §3.3)",
            "-",
            probe_e1
        ),
        entry!(
            "ML24",
            "Lemma C.17",
            "ml24::entry_bounds::lemma_c17_f_bound",
            "||f||_inf <= 1 (rows of f are probability vectors)",
            "-",
            |i, p| probe_entry_bound(i, p, lemma_c17_f_bound)
        ),
        entry!(
            "ML24",
            "Lemma C.18",
            "ml24::entry_bounds::lemma_c18_h_bound",
            "||X W_V||_inf <= n ||X||_inf ||W_V||_inf (poly(n) under O(log n)-bit entries)",
            "the sum runs over d, not n: d ||X||_inf ||W_V||_inf holds for every shape; the printed n is a bound only when d <= n (the register's instances have d < n)",
            |i, p| probe_entry_bound(i, p, lemma_c18_h_bound)
        ),
        entry!(
            "ML24",
            "Lemma C.19",
            "ml24::entry_bounds::lemma_c19_s_bound",
            "||f h||_inf <= n ||f||_inf ||h||_inf (poly(n) under O(log n)-bit entries)",
            "- (the sharper ||f h||_inf <= ||h||_inf is what is checked; the printed chain is reported)",
            |i, p| probe_entry_bound(i, p, lemma_c19_s_bound)
        ),
        entry!(
            "ML24",
            "Lemmas E.2..E.10 (D6)",
            "ml24::low_rank::lemma_e_low_rank_d6",
            "low-rank D6 = -tau V (U~^T diag(K~) X W)",
            "printed as D.10 (inherits its erratum); transposes as in D.10",
            |i, p| probe_e(i, p, |t| &t.d6, |t| &t.d6, Key, Part::Normaliser)
        ),
        entry!(
            "ML24",
            "Lemmas E.2..E.10 (D7)",
            "ml24::low_rank::lemma_e_low_rank_d7",
            "low-rank D7 = tau (V (x) h)((U~ (x) G)^T X W)",
            "printed as D.11 (inherits its erratum); transposes as in D.11",
            |i, p| probe_e(i, p, |t| &t.d7, |t| &t.d7, Key, Part::Numerator)
        ),
        entry!(
            "ML24",
            "Lemmas E.2..E.10 (D8)",
            "ml24::low_rank::lemma_e_low_rank_d8",
            "low-rank D8 = V ((U~^T G) W_V^T)",
            "printed as D.12 (inherits its erratum); transposes as in D.12",
            |i, p| probe_e(i, p, |t| &t.d8, |t| &t.d8, Value, Part::Total)
        ),
        entry!(
            "ML24",
            "Lemmas E.2..E.10 (D2)",
            "ml24::low_rank::lemma_e_low_rank_d2",
            "low-rank D2 = -tau diag(K~) U~ ((V^T X) W^T)",
            "printed as D.13 (inherits its erratum); transposes as in D.13",
            |i, p| probe_e(i, p, |t| &t.d2, |t| &t.d2, Query, Part::Normaliser)
        ),
        entry!(
            "ML24",
            "Lemmas E.2..E.10 (D4)",
            "ml24::low_rank::lemma_e_low_rank_d4",
            "low-rank D4 = tau (U~ (x) G)(((V (x) h)^T X) W^T)",
            "printed as D.14 (inherits its erratum); transposes as in D.14",
            |i, p| probe_e(i, p, |t| &t.d4, |t| &t.d4, Query, Part::Numerator)
        ),
        entry!(
            "ML24",
            "Lemmas E.2..E.10 (sum)",
            "ml24::low_rank::lemma_e_low_rank_grad_x",
            "low-rank dL/dX in O(n r d d_v)",
            "printed as D.17 (inherits its errata); transposes as in D.17",
            probe_e_total
        ),
        entry!(
            "ML24",
            "Lemma F.3 (= AS24 B.1)",
            "ml24::weights::lemma_f3_ds_dw",
            "ds_{i0 j0}/dW",
            "-",
            |i, p| probe_entrywise(
                i,
                p,
                weights::lemma_f3_ds_dw,
                Param::W,
                (i.layer.d(), i.layer.d())
            )
        ),
        entry!(
            "ML24",
            "Lemma F.4",
            "ml24::weights::lemma_f4_grad_w",
            "dL/dW = tau X^T p X",
            "-",
            |i, p| probe_grad(i, p, weights::lemma_f4_grad_w, None, Param::W, Part::Total)
        ),
        entry!(
            "ML24",
            "Lemma F.5 / Alg. 1 line 19",
            "ml24::low_rank::lemma_f5_grad_w_low_rank",
            "low-rank dL/dW from the p1 and p2 factors",
            "line 19 keeps only (X^T U3)(V3^T X); subtract (X^T U4)(V4^T X)",
            probe_f5
        ),
        entry!(
            "ML24",
            "Lemma G.1",
            "ml24::weights::lemma_g1_ds_dwv",
            "ds_{i0 j0}/dW_V",
            "-",
            |i, p| probe_entrywise(
                i,
                p,
                weights::lemma_g1_ds_dwv,
                Param::Wv,
                (i.layer.d(), i.layer.d_v())
            )
        ),
        entry!(
            "ML24",
            "Lemma G.2",
            "ml24::weights::lemma_g2_grad_wv",
            "dL/dW_V = sum G_{i0 j0} ds_{i0 j0}/dW_V",
            "-",
            |i, p| probe_grad(
                i,
                p,
                weights::lemma_g2_grad_wv,
                None,
                Param::Wv,
                Part::Total
            )
        ),
        entry!(
            "ML24",
            "Lemma G.3",
            "ml24::weights::lemma_g3_grad_wv",
            "dL/dW_V closed form",
            "X^T f^T G, not X^T f G",
            |i, p| probe_grad(
                i,
                p,
                weights::lemma_g3_grad_wv,
                Some(weights::lemma_g3_grad_wv_printed),
                Param::Wv,
                Part::Total
            )
        ),
        entry!(
            "ML24",
            "Alg. 1 line 22 (low-rank G.3)",
            "ml24::low_rank::lemma_g3_grad_wv_low_rank",
            "low-rank dL/dW_V",
            "(X^T V1)(U1^T G), not (X^T U1)(V1^T G)",
            probe_g3_low_rank
        ),
        entry!(
            "ML24",
            "Lemma H.2",
            "ml24::blocks::lemma_h1_grad_through_mlp",
            "G_i = (dL/dT o phi'(Z W_g)) W_g^T",
            "-",
            |i, p| probe_h(i, p, true)
        ),
        entry!(
            "ML24",
            "dL/dW_g (H.2's weight counterpart; not in ML24)",
            "ml24::blocks::lemma_h2_grad_w_g",
            "dL/dW_g = Z^T (dL/dT o phi'(Z W_g))",
            "-",
            |i, p| probe_h(i, p, false)
        ),
        entry!(
            "ML24",
            "Lemma I.1 (rank side; degree not checkable)",
            "ml24::degree::lemma_i1_low_rank",
            "degree-g factors: U V^T = P(scores) exactly, rank C(g+d, g) <= C(2(g+d), 2g); the degree bound g = O(max(log(1/eps)/log(log(1/eps)/R), R^2)) is an O() without constants and is not checked",
            "first term: log(log(1/eps)/R^2), not /R (scores reach R^2; documented, not measurable)",
            probe_i1
        ),
        entry!(
            "ML24",
            "Lemma I.3 / Alg. 2",
            "ml24::low_rank::lemma_i3_causal_prefix_product",
            "(M o U V^T) Y by prefix states; causal attention with P",
            "-",
            probe_prefix
        ),
        entry!(
            "ML24",
            "suffix-sum product (docs/math.md §3.5)",
            "ml24::low_rank::lemma_causal_suffix_product",
            "(M o U V^T)^T Y by suffix states (needed by the corrected transposes)",
            "not in ML24",
            probe_suffix
        ),
        entry!(
            "ML24",
            "Lemma I.6",
            "ml24::low_rank::lemma_i6_masked_normaliser",
            "masked normaliser (M o U V^T) 1; Hadamard case via Fact C.2",
            "-",
            probe_i6
        ),
        entry!(
            "ML24",
            "Lemmas I.7 (parts 1-3) + I.8 (parts 1-2), causal dL/dX",
            "ml24::causal::lemma_i7_i8_grad_x",
            "D6 + D2 + D8 (I.7) + D7 + D4 (I.8) with the causal f",
            "repeats D.17's transposes: tau (p X W^T + p^T X W) + f^T G W_V^T",
            probe_i7_i8_grad_x
        ),
        entry!(
            "ML24",
            "Lemma I.7 part 4, causal dL/dW_V",
            "ml24::causal::lemma_i7_grad_wv",
            "g_v with the causal f",
            "repeats G.3's: X^T f^T G, not X^T f G",
            probe_i7_grad_wv
        ),
        entry!(
            "ML24",
            "Lemma I.8 part 3, causal dL/dW",
            "ml24::causal::lemma_i8_grad_w",
            "g_w = tau X^T (p1 - p2) X with the causal f",
            "-",
            probe_i8_grad_w
        ),
        entry!(
            "ML24",
            "Lemma J.3",
            "ml24::blocks::lemma_j3_residual_grad_x",
            "dL/dX through T = X + s(X) W_O",
            "-",
            probe_j3
        ),
        entry!(
            "ML24",
            "Lemma K.2",
            "ml24::blocks::lemma_k2_multi_head",
            "multi-head dL/dX, dL/dW_h, dL/dW_V,h",
            "-",
            probe_k2
        ),
        entry!(
            "ML24",
            "Fact C.2",
            "ml24::low_rank::fact_c2_row_kron",
            "(U1 V1^T) o (U2 V2^T) = (U1 (x) U2)(V1 (x) V2)^T",
            "-",
            probe_c2
        ),
        entry!(
            "AS24",
            "Lemma B.1 part 2",
            "as24::lemma_b1_part1",
            "d(A1 X A2^T)_{j0}/dx_i",
            "-",
            |i, p| probe_b1(i, p, 1)
        ),
        entry!(
            "AS24",
            "Lemma B.1 part 3",
            "as24::lemma_b1_part2",
            "du_{j0}/dx_i",
            "-",
            |i, p| probe_b1(i, p, 2)
        ),
        entry!(
            "AS24",
            "Lemma B.1 part 4",
            "as24::lemma_b1_part3",
            "d alpha_{j0}/dx_i",
            "-",
            |i, p| probe_b1(i, p, 3)
        ),
        entry!(
            "AS24",
            "Lemma B.1 part 5 (its proof's d alpha^-1 step)",
            "as24::lemma_b1_part4",
            "d alpha_{j0}^-1/dx_i",
            "-",
            |i, p| probe_b1(i, p, 4)
        ),
        entry!(
            "AS24",
            "Lemma B.1 part 5",
            "as24::lemma_b1_part5",
            "df_{j0}/dx_i",
            "-",
            |i, p| probe_b1(i, p, 5)
        ),
        entry!(
            "AS24",
            "Lemma B.1 part 6",
            "as24::lemma_b1_part6",
            "d<f_{j0}, h_{i0}>/dx_i",
            "-",
            |i, p| probe_b1(i, p, 6)
        ),
        entry!(
            "AS24",
            "Lemma B.1 part 7",
            "as24::lemma_b1_part7",
            "dc_{j0 i0}/dx_i",
            "-",
            |i, p| probe_b1(i, p, 7)
        ),
        entry!(
            "AS24",
            "Lemma B.1 part 8 (summed over j0, i0)",
            "as24::lemma_b1_part8",
            "dL/dx_i",
            "-",
            |i, p| probe_b1(i, p, 8)
        ),
        entry!(
            "AS24",
            "Lemma C.7",
            "as24::lemma_c7_grad_x",
            "dL/dX = A1^T p A2",
            "-",
            probe_c7
        ),
        entry!(
            "AS24",
            "Lemma D.1",
            "as24::lemma_d2_low_rank_f",
            "f~ = U1 V1^T",
            "-",
            probe_as_d2
        ),
        entry!(
            "AS24",
            "Lemma D.3",
            "as24::lemma_d3_low_rank_q",
            "q~ = c~ h^T = U2 V2^T",
            "q = c h^T (not h c^T): U2 = [U1, -E], V2 = [h h^T V1, h]",
            probe_as_d3
        ),
        entry!(
            "AS24",
            "Lemma D.4",
            "as24::lemma_d4_low_rank_p1",
            "p1~ = f~ o q~ = U3 V3^T",
            "-",
            probe_as_d4
        ),
        entry!(
            "AS24",
            "Lemma D.5",
            "as24::lemma_d5_low_rank_p2",
            "p2~ = diag(r~) f~ = U4 V4^T",
            "U4 = diag(r~) U1, V4 = V1 (not V4 = diag(r~) V1); r~_j = U1_j (V1^T V2) U2_j^T",
            probe_as_d5
        ),
        entry!(
            "AS24",
            "Theorem 1.6 (algorithm)",
            "as24::theorem_1_6_grad_x",
            "dL/dX ~ (A1^T U3)(V3^T A2) - (A1^T U4)(V4^T A2)",
            "-",
            probe_thm16
        ),
        entry!(
            "AS24",
            "Lemma E.3",
            "as24_lower::lemma_e3_bounds",
            "|f'(lambda)| and |f''(lambda)| on hard instances (entries of A in [0, B], half of each row B, V in {0,1})",
            "Eq. (9) drops the sum over the d columns of V: |f'| <= 2 B d n (printed 8 B n fails for d > 27), |f''| <= 5 B^2 d n (printed O(B^2 n), no constant)",
            probe_as_e3
        ),
        entry!(
            "AS24",
            "Lemma E.4",
            "as24_lower::lemma_e4_riemann_sum",
            "|sum_{i<m} f'(i/m)/m - (f(1) - f(0))| <= b/m with b = sup |f''|",
            "-",
            probe_as_e4
        ),
        entry!(
            "AS24",
            "Theorem 1.5 / E.5 (reduction, n = 8)",
            "as24_lower::theorem_e5_reduction",
            "f(1) from f(0) and m >= (log2 n)^4 gradient calls at X = lambda I (f' = 2 tr dL/dX)",
            "error bound b/m with the corrected b = 5 B^2 d n of E.3",
            probe_as_e5
        ),
    ]
}
