#![cfg(feature = "certify")]
//! `certify --candidate`: someone else's attention certified against exact attention.
//!
//! Expected numbers come from outside the code under test: exact values from the MPFR
//! spec (`polyattn_spec`, 128 bits) evaluated here, roundings to bf16/f32 written here
//! with integer bit arithmetic, and an independent f64-with-rounding implementation
//! of FlashAttention's plain baseline.

use nalgebra::DMatrix;
use polyattn::attention::Mask;
use polyattn::io::{write_tensors, AnyTensor, DType, TensorFile};
use polyattn::rng::SplitMix64;
use polyattn_spec::attention as spec;
use polyattn_tools::certify::candidate::{
    certify_candidate, CandidateOptions, CandidateReport, Layout,
};
use polyattn_tools::certify::plain::{plain_head, PlainRule};
use polyattn_tools::certify::report::ReferenceChoice;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------
// Independent helpers

/// f64 -> bf16 value, round to nearest even, by integer arithmetic on the f64 bits
/// (normal range only, which is all these tests produce).
fn bf16_of(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let b = x.to_bits();
    // bf16 keeps 7 fraction bits of f64's 52: drop 45 bits.
    let drop = 45u32;
    let half = 1u64 << (drop - 1);
    let rest = b & ((1u64 << drop) - 1);
    let mut kept = b >> drop;
    if rest > half || (rest == half && kept & 1 == 1) {
        kept += 1;
    }
    f64::from_bits(kept << drop)
}

/// f64 -> f32 value (Rust's `as` is round to nearest even).
fn r32(x: f64) -> f64 {
    x as f32 as f64
}

struct Problem {
    heads: usize,
    n_q: usize,
    n_k: usize,
    d: usize,
    d_v: usize,
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    d_o: Vec<f64>,
}

fn problem(heads: usize, n_q: usize, n_k: usize, d: usize, d_v: usize, seed: u64) -> Problem {
    let mut r = SplitMix64::new(seed);
    // bf16-representable inputs (the candidate consumed bf16 inputs).
    let mut g = |n: usize| -> Vec<f64> { r.normal_vec(n, 1.0).into_iter().map(bf16_of).collect() };
    Problem {
        heads,
        n_q,
        n_k,
        d,
        d_v,
        q: g(heads * n_q * d),
        k: g(heads * n_k * d),
        v: g(heads * n_k * d_v),
        d_o: g(heads * n_q * d_v),
    }
}

/// MPFR midpoints of the exact (o, lse, dq, dk, dv), stacked over heads.
fn exact(p: &Problem, mask: spec::Mask) -> [Vec<f64>; 5] {
    let mut out: [Vec<f64>; 5] = Default::default();
    let tau = 1.0 / (p.d as f64).sqrt();
    for h in 0..p.heads {
        let m = |x: &[f64], r: usize, c: usize| {
            DMatrix::from_row_slice(r, c, &x[h * r * c..(h + 1) * r * c])
        };
        let sp = spec::Problem {
            q: m(&p.q, p.n_q, p.d),
            k: m(&p.k, p.n_k, p.d),
            v: m(&p.v, p.n_k, p.d_v),
            tau,
            mask,
            softcap: None,
        };
        let f = spec::forward(&sp, 128).unwrap();
        let g = spec::backward(&sp, &m(&p.d_o, p.n_q, p.d_v), 128).unwrap();
        let rows = |x: &DMatrix<polyattn_spec::Interval>| {
            let mut v = Vec::new();
            for i in 0..x.nrows() {
                for j in 0..x.ncols() {
                    v.push(x[(i, j)].mid_f64());
                }
            }
            v
        };
        out[0].extend(rows(&f.o));
        out[1].extend(
            f.lse
                .iter()
                .map(|l| l.as_ref().map_or(f64::NEG_INFINITY, |iv| iv.mid_f64())),
        );
        out[2].extend(rows(&g.dq));
        out[3].extend(rows(&g.dk));
        out[4].extend(rows(&g.dv));
    }
    out
}

fn f64t(shape: Vec<usize>, data: Vec<f64>) -> AnyTensor {
    AnyTensor::F64 { shape, data }
}

fn input_file(p: &Problem, dtype: DType) -> TensorFile {
    let t = |shape: Vec<usize>, x: &[f64]| AnyTensor::from_f64_rounded(dtype, shape, x);
    let tensors = vec![
        ("q".to_string(), t(vec![p.heads, p.n_q, p.d], &p.q)),
        ("k".to_string(), t(vec![p.heads, p.n_k, p.d], &p.k)),
        ("v".to_string(), t(vec![p.heads, p.n_k, p.d_v], &p.v)),
        ("do".to_string(), t(vec![p.heads, p.n_q, p.d_v], &p.d_o)),
    ];
    file_of(&tensors)
}

fn file_of(tensors: &[(String, AnyTensor)]) -> TensorFile {
    let dir = std::env::temp_dir().join(format!("polyattn-cand-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!(
        "f{}.safetensors",
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    ));
    write_tensors(&path, tensors, &HashMap::new()).unwrap();
    TensorFile::read(&path).unwrap()
}

static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn shapes(p: &Problem) -> [Vec<usize>; 5] {
    [
        vec![p.heads, p.n_q, p.d_v],
        vec![p.heads, p.n_q],
        vec![p.heads, p.n_q, p.d],
        vec![p.heads, p.n_k, p.d],
        vec![p.heads, p.n_k, p.d_v],
    ]
}

const NAMES: [&str; 5] = ["o", "lse", "dq", "dk", "dv"];

fn opts(mask: Mask) -> CandidateOptions {
    CandidateOptions {
        mask,
        scale: None,
        layout: Layout::Bhsd,
        softcap: None,
        reference: ReferenceChoice::Auto,
    }
}

fn tensor<'a>(
    r: &'a CandidateReport,
    name: &str,
) -> &'a polyattn_tools::certify::candidate::TensorCertificate {
    r.tensors.iter().find(|t| t.name == name).unwrap()
}

// ---------------------------------------------------------------------------------
// Tests

/// The exact result rounded to bf16: the certified error encloses the true rounding
/// error from above, the lower bound from below; FlashAttention's rule passes.
#[test]
fn bf16_rounding_of_exact_attention_is_bracketed() {
    bf16_rounding_is_bracketed(Mask::CausalTopLeft, (9, 11));
}

/// The same with sliding windows (FlashAttention's window_size) in both alignments,
/// with rows that see no key (n_q > n_k, a window beside the keys).
#[test]
fn windowed_candidates_are_certified() {
    use polyattn::attention::Alignment;
    for (l, r, align, shape) in [
        (Some(3), Some(0), Alignment::BottomRight, (9, 11)),
        (Some(2), Some(2), Alignment::TopLeft, (9, 11)),
        (Some(1), Some(0), Alignment::BottomRight, (12, 5)),
        (None, Some(3), Alignment::TopLeft, (7, 7)),
    ] {
        bf16_rounding_is_bracketed(Mask::None.with_window(l, r, align), shape);
    }
}

fn bf16_rounding_is_bracketed(mask: Mask, (n_q, n_k): (usize, usize)) {
    let p = problem(2, n_q, n_k, 4, 3, 1);
    let ex = exact(&p, polyattn_tools::certify::spec_mask(mask));
    let sh = shapes(&p);
    let mut cand = Vec::new();
    let mut true_err = [0.0f64; 5];
    for t in 0..5 {
        let rounded: Vec<f64> = ex[t].iter().map(|&x| bf16_of(x)).collect();
        true_err[t] = rounded
            .iter()
            .zip(&ex[t])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        cand.push((
            NAMES[t].to_string(),
            AnyTensor::from_f64_rounded(DType::BF16, sh[t].clone(), &rounded),
        ));
    }
    let r = certify_candidate(&input_file(&p, DType::BF16), &file_of(&cand), &opts(mask)).unwrap();
    assert_eq!(r.schema, "polyattn.certify.candidate/1");
    assert!(matches!(
        r.reference,
        polyattn_tools::certify::report::ReferenceUsed::Mpfr { .. }
    ));
    for t in 0..5 {
        let c = tensor(&r, NAMES[t]);
        assert_eq!(c.dtype, "BF16");
        assert!(true_err[t] > 0.0, "{}: {}", NAMES[t], mask.name());
        assert!(
            c.certified_max_abs >= true_err[t],
            "{}: {} < {}",
            NAMES[t],
            c.certified_max_abs,
            true_err[t]
        );
        assert!(c.certified_lower_max_abs <= true_err[t], "{}", NAMES[t]);
        // The reference is far tighter than bf16: the bracket is tight.
        assert!(
            c.certified_max_abs <= true_err[t] * (1.0 + 1e-9) + 1e-25,
            "{}",
            NAMES[t]
        );
        assert!(c.certified_lower_max_abs >= true_err[t] * (1.0 - 1e-9) - 1e-25);
        assert_eq!(c.nonfinite, 0);
        assert_eq!(c.unit_roundoff, 2f64.powi(-8));
        // Rounding the exact answer is the best a bf16 result can do.
        assert_eq!(c.baseline.verdict, "pass", "{}: {:?}", NAMES[t], c.baseline);
        assert!(c.certified_max_abs <= c.baseline.certified_max_abs * 1.0001 + c.atol);
    }
}

/// The same through the f64 reference (exact engine + a priori bound).
#[test]
fn f64_reference_brackets_the_bf16_rounding_too() {
    let p = problem(2, 16, 16, 8, 8, 2);
    let ex = exact(&p, spec::Mask::None);
    let sh = shapes(&p);
    let o: Vec<f64> = ex[0].iter().map(|&x| bf16_of(x)).collect();
    let err = o
        .iter()
        .zip(&ex[0])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let cand = vec![(
        "o".to_string(),
        AnyTensor::from_f64_rounded(DType::BF16, sh[0].clone(), &o),
    )];
    let mut op = opts(Mask::None);
    op.reference = ReferenceChoice::F64;
    let r = certify_candidate(&input_file(&p, DType::F32), &file_of(&cand), &op).unwrap();
    assert_eq!(
        r.reference,
        polyattn_tools::certify::report::ReferenceUsed::F64WithBound
    );
    let c = tensor(&r, "o");
    assert!(c.certified_max_abs >= err && c.certified_lower_max_abs <= err);
    assert!(c.certified_max_abs <= err + 1e-12);
    // lse through the f64 reference's new per-row bound: an f32 rounding bracketed.
    let lse: Vec<f64> = ex[1].iter().map(|&x| r32(x)).collect();
    let err = lse
        .iter()
        .zip(&ex[1])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let cand = vec![(
        "lse".to_string(),
        AnyTensor::from_f64_rounded(DType::F32, vec![p.heads, p.n_q], &lse),
    )];
    let r = certify_candidate(&input_file(&p, DType::F32), &file_of(&cand), &op).unwrap();
    let c = tensor(&r, "lse");
    assert!(err > 0.0 && c.certified_max_abs >= err && c.certified_lower_max_abs <= err);
    assert!(c.reference_radius > 0.0 && c.reference_radius < 1e-12);
}

/// +delta on one entry: found as the worst entry, lower bound >= delta - radius.
#[test]
fn a_deliberate_error_is_found_and_bounded_below() {
    let p = problem(3, 7, 7, 4, 4, 3);
    let ex = exact(&p, spec::Mask::None);
    let delta = 0.125;
    let (h, i, c) = (2usize, 5usize, 1usize);
    let mut o = ex[0].clone();
    o[(h * p.n_q + i) * p.d_v + c] += delta;
    let cand = vec![("o".to_string(), f64t(shapes(&p)[0].clone(), o))];
    let r = certify_candidate(
        &input_file(&p, DType::F64),
        &file_of(&cand),
        &opts(Mask::None),
    )
    .unwrap();
    let t = tensor(&r, "o");
    let w = &t.worst[0];
    assert_eq!((w.at.batch, w.at.head, w.at.row, w.at.col), (0, h, i, c));
    assert!(t.certified_lower_max_abs >= delta - t.reference_radius - 1e-15);
    assert!(t.certified_max_abs >= delta);
    assert_eq!(t.baseline.verdict, "fail");
}

/// Every entry + c: the overall bias interval excludes 0 and contains c; so do the
/// per-column intervals.
#[test]
fn a_biased_candidate_has_a_certified_nonzero_mean_error() {
    let p = problem(2, 8, 8, 4, 4, 4);
    let ex = exact(&p, spec::Mask::CausalTopLeft);
    let c = 3e-4;
    let dq: Vec<f64> = ex[2].iter().map(|x| x + c).collect();
    let cand = vec![("dq".to_string(), f64t(shapes(&p)[2].clone(), dq))];
    let r = certify_candidate(
        &input_file(&p, DType::F64),
        &file_of(&cand),
        &opts(Mask::CausalTopLeft),
    )
    .unwrap();
    let b = &tensor(&r, "dq").bias;
    assert!(b.overall_nonzero);
    assert!(b.overall.lo <= c && c <= b.overall.hi, "{:?}", b.overall);
    assert!(b.overall.hi - b.overall.lo < 1e-10);
    assert_eq!(b.columns.len(), p.d);
    assert_eq!(b.columns_nonzero, p.d);
    assert!(b.columns.iter().all(|iv| iv.lo <= c && c <= iv.hi));
    assert_eq!(b.rows_nonzero, b.rows);
    // An unbiased candidate (the exact midpoints) has a bias interval around 0.
    let cand = vec![("dq".to_string(), f64t(shapes(&p)[2].clone(), ex[2].clone()))];
    let r = certify_candidate(
        &input_file(&p, DType::F64),
        &file_of(&cand),
        &opts(Mask::CausalTopLeft),
    )
    .unwrap();
    assert!(!tensor(&r, "dq").bias.overall_nonzero);
}

/// NaN and inf entries are findings: counted, positioned, bound = inf; no panic.
#[test]
fn nonfinite_entries_are_findings() {
    let p = problem(2, 6, 6, 4, 4, 5);
    let ex = exact(&p, spec::Mask::None);
    let mut o = ex[0].clone();
    o[(p.n_q + 2) * p.d_v + 3] = f64::NAN; // head 1, row 2, col 3
    o[4 * p.d_v] = f64::INFINITY; // head 0, row 4, col 0
    let cand = vec![(
        "o".to_string(),
        AnyTensor::from_f64_rounded(DType::F16, shapes(&p)[0].clone(), &o),
    )];
    let r = certify_candidate(
        &input_file(&p, DType::F64),
        &file_of(&cand),
        &opts(Mask::None),
    )
    .unwrap();
    let t = tensor(&r, "o");
    assert_eq!(t.nonfinite, 2);
    let pos: Vec<_> = t
        .nonfinite_first
        .iter()
        .map(|n| (n.at.head, n.at.row, n.at.col, n.value.clone()))
        .collect();
    assert_eq!(
        pos,
        vec![(0, 4, 0, "inf".to_string()), (1, 2, 3, "NaN".to_string())]
    );
    assert_eq!(t.certified_max_abs, f64::INFINITY);
    assert_eq!(t.certified_rel_fro, f64::INFINITY);
    assert_eq!(t.baseline.verdict, "fail");
    // The markdown renders them.
    assert!(r.to_markdown().contains("2 non-finite entries"));
}

/// Rows that see no key: lse -inf (polyattn) and +inf (FlashAttention) are both
/// conventions, not errors; a finite lse there is an infinite error.
#[test]
fn lse_conventions_for_rows_without_keys() {
    let p = problem(2, 8, 5, 4, 4, 6);
    let ex = exact(&p, spec::Mask::CausalBottomRight);
    let no_key = p.n_q - p.n_k; // rows 0..3 see no key
    for (fill, label) in [
        (f64::NEG_INFINITY, "polyattn (lse -inf)"),
        (f64::INFINITY, "flashattention (lse +inf)"),
        (f64::NAN, "pytorch (lse NaN)"),
    ] {
        let lse: Vec<f64> = ex[1]
            .iter()
            .enumerate()
            .map(|(i, &x)| if i % p.n_q < no_key { fill } else { r32(x) })
            .collect();
        let cand = vec![(
            "lse".to_string(),
            AnyTensor::from_f64_rounded(DType::F32, vec![p.heads, p.n_q], &lse),
        )];
        let r = certify_candidate(
            &input_file(&p, DType::F64),
            &file_of(&cand),
            &opts(Mask::CausalBottomRight),
        )
        .unwrap();
        let t = tensor(&r, "lse");
        assert_eq!(t.conventions.len(), 1, "{label}");
        assert_eq!(t.conventions[0].convention, label);
        assert_eq!(t.conventions[0].rows, no_key * p.heads);
        assert_eq!(t.nonfinite, 0);
        assert!(t.certified_max_abs.is_finite() && t.certified_max_abs < 1e-5);
        assert_eq!(t.entries, (p.n_q - no_key) * p.heads);
    }
    // A finite lse (1.0) where no key is seen: an infinite error.
    let lse: Vec<f64> = ex[1]
        .iter()
        .enumerate()
        .map(|(i, &x)| if i % p.n_q < no_key { 1.0 } else { x })
        .collect();
    let cand = vec![("lse".to_string(), f64t(vec![p.heads, p.n_q], lse))];
    let r = certify_candidate(
        &input_file(&p, DType::F64),
        &file_of(&cand),
        &opts(Mask::CausalBottomRight),
    )
    .unwrap();
    let t = tensor(&r, "lse");
    assert_eq!(t.nonfinite, no_key * p.heads);
    assert_eq!(t.certified_max_abs, f64::INFINITY);
}

/// An lse in base 2 (x log2 e) gets a hint.
#[test]
fn a_base2_lse_gets_a_hint() {
    let p = problem(2, 8, 8, 4, 4, 7);
    let ex = exact(&p, spec::Mask::None);
    let lse: Vec<f64> = ex[1].iter().map(|x| x * std::f64::consts::LOG2_E).collect();
    let cand = vec![("lse".to_string(), f64t(vec![p.heads, p.n_q], lse))];
    let r = certify_candidate(
        &input_file(&p, DType::F64),
        &file_of(&cand),
        &opts(Mask::None),
    )
    .unwrap();
    let h = r.hint_lines().join("\n");
    assert!(h.contains("log2 e"), "{h}");
}

/// An output computed with the wrong scale (1 instead of 1/sqrt(d)) gets a hint.
#[test]
fn a_wrong_scale_gets_a_hint() {
    let p = problem(2, 8, 8, 4, 4, 8);
    // Exact attention with tau = 1 from the spec.
    let mut o = Vec::new();
    for h in 0..p.heads {
        let m = |x: &[f64], r: usize, c: usize| {
            DMatrix::from_row_slice(r, c, &x[h * r * c..(h + 1) * r * c])
        };
        let sp = spec::Problem {
            q: m(&p.q, 8, 4),
            k: m(&p.k, 8, 4),
            v: m(&p.v, 8, 4),
            tau: 1.0,
            mask: spec::Mask::None,
            softcap: None,
        };
        let f = spec::forward(&sp, 128).unwrap();
        for i in 0..8 {
            for j in 0..4 {
                o.push(f.o[(i, j)].mid_f64());
            }
        }
    }
    let cand = vec![("o".to_string(), f64t(shapes(&p)[0].clone(), o))];
    let r = certify_candidate(
        &input_file(&p, DType::F64),
        &file_of(&cand),
        &opts(Mask::None),
    )
    .unwrap();
    let h = r.hint_lines().join("\n");
    assert!(h.contains("scale 1 (no scaling)"), "{h}");
}

/// bhsd and bshd files holding the same numbers give the same certificates.
#[test]
fn layouts_give_identical_reports() {
    let (b, h, n, d) = (2usize, 3usize, 6usize, 4usize);
    let p = problem(b * h, n, n, d, d, 9);
    let ex = exact(&p, spec::Mask::CausalTopLeft);
    // Candidate: bf16 roundings plus one deliberate error.
    let mut cand: Vec<Vec<f64>> = ex
        .iter()
        .map(|t| t.iter().map(|&x| bf16_of(x)).collect())
        .collect();
    cand[0][17] += 0.01;
    let to_bshd = |x: &[f64], c: usize| -> Vec<f64> {
        let mut out = vec![0.0; x.len()];
        for bi in 0..b {
            for hi in 0..h {
                for s in 0..n {
                    for ci in 0..c {
                        out[((bi * n + s) * h + hi) * c + ci] = x[((bi * h + hi) * n + s) * c + ci];
                    }
                }
            }
        }
        out
    };
    let bhsd = |x: &[f64]| f64t(vec![b, h, n, d], x.to_vec());
    let bshd = |x: &[f64]| f64t(vec![b, n, h, d], to_bshd(x, d));
    let lse = f64t(vec![b, h, n], cand[1].clone());
    let mk_in = |f: &dyn Fn(&[f64]) -> AnyTensor| {
        file_of(&[
            ("q".into(), f(&p.q)),
            ("k".into(), f(&p.k)),
            ("v".into(), f(&p.v)),
            ("do".into(), f(&p.d_o)),
        ])
    };
    let mk_c = |f: &dyn Fn(&[f64]) -> AnyTensor| {
        file_of(&[
            ("o".into(), f(&cand[0])),
            ("lse".into(), lse.clone()),
            ("dq".into(), f(&cand[2])),
            ("dk".into(), f(&cand[3])),
            ("dv".into(), f(&cand[4])),
        ])
    };
    let r1 = certify_candidate(&mk_in(&bhsd), &mk_c(&bhsd), &opts(Mask::CausalTopLeft)).unwrap();
    let mut o2 = opts(Mask::CausalTopLeft);
    o2.layout = Layout::Bshd;
    let r2 = certify_candidate(&mk_in(&bshd), &mk_c(&bshd), &o2).unwrap();
    assert_eq!(r1.shape, r2.shape);
    assert_eq!(r1.shape, [b, h, n, n, d, d]);
    for (t1, t2) in r1.tensors.iter().zip(&r2.tensors) {
        let strip = |t: &polyattn_tools::certify::candidate::TensorCertificate| {
            let mut t = t.clone();
            t.shape.clear();
            serde_json::to_string(&t).unwrap()
        };
        assert_eq!(strip(t1), strip(t2), "{}", t1.name);
    }
    let w = &tensor(&r1, "o").worst[0];
    assert_eq!((w.at.batch, w.at.head, w.at.row, w.at.col), (0, 0, 4, 1)); // flat 17 = ((0*3+0)*6+4)*4+1
                                                                           // A bhsd candidate under --layout bshd: a typed error naming both shapes.
    let e = certify_candidate(&mk_in(&bshd), &mk_c(&bhsd), &o2)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("{:?}", vec![b, n, h, d]))
            && e.contains(&format!("{:?}", vec![b, h, n, d])),
        "{e}"
    );
    assert!(e.contains("--layout bhsd"), "{e}");
}

// ---------------------------------------------------------------------------------
// The baseline emulation against an independent implementation

/// FlashAttention's `attention_ref(upcast=False, reorder_ops=True)` written plainly in
/// f64 with explicit roundings: `st` to storage, `r32` after every f32 operation; an
/// additive `bias` (`n_q x n_k`, in the inputs' dtype) is added to the stored scores
/// (`scores + attn_bias`), `-inf` hiding the key.
#[allow(clippy::type_complexity)]
fn independent_plain(
    p: &Problem,
    h: usize,
    (causal, bias, cap): (bool, Option<&[f64]>, Option<f64>),
    st: &dyn Fn(f64) -> f64,
    out: &dyn Fn(f64) -> f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let (n_q, n_k, d, d_v) = (p.n_q, p.n_k, p.d, p.d_v);
    let tau = r32(1.0 / (d as f64).sqrt());
    let inp = |x: &[f64], len: usize| -> Vec<f64> {
        x[h * len..(h + 1) * len].iter().map(|&z| out(z)).collect()
    };
    let (q, k, v, g) = (
        inp(&p.q, n_q * d),
        inp(&p.k, n_k * d),
        inp(&p.v, n_k * d_v),
        inp(&p.d_o, n_q * d_v),
    );
    let kp: Vec<f64> = k.iter().map(|&x| st(r32(x * tau))).collect();
    let hidden = |i: usize, j: usize| bias.is_some_and(|b| b[i * n_k + j] == f64::NEG_INFINITY);
    let sees = |i: usize, j: usize| (!causal || j <= i) && !hidden(i, j);
    let mut pm = vec![0.0; n_q * n_k];
    let mut tanh_st = vec![0.0; n_q * n_k];
    let (mut o, mut lse) = (vec![0.0; n_q * d_v], vec![0.0; n_q]);
    for i in 0..n_q {
        let mut s = vec![f64::NEG_INFINITY; n_k];
        for j in 0..n_k {
            if sees(i, j) {
                let mut acc = 0.0;
                for l in 0..d {
                    acc = r32(acc + r32(q[i * d + l] * kp[j * d + l]));
                }
                // attention_ref: scores / softcap, .tanh(), * softcap (each stored; the
                // Python float softcap enters the f32 arithmetic as an f32).
                let capped = match cap.map(r32) {
                    Some(c) => {
                        let t = st(r32(st(r32(st(acc) / c)).tanh()));
                        tanh_st[i * n_k + j] = t;
                        st(r32(t * c))
                    }
                    None => st(acc),
                };
                s[j] = match bias {
                    Some(b) => st(r32(capped + out(b[i * n_k + j]))),
                    None => capped,
                };
            }
        }
        let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let mut e = vec![0.0; n_k];
        let mut z = 0.0;
        for j in 0..n_k {
            if sees(i, j) {
                e[j] = r32(r32(s[j] - m).exp());
                z = r32(z + e[j]);
            }
        }
        for j in 0..n_k {
            if sees(i, j) {
                pm[i * n_k + j] = st(r32(e[j] / z));
            }
        }
        lse[i] = r32(m + r32(z.ln())); // kept in f32
        for c in 0..d_v {
            let mut acc = 0.0;
            for j in 0..n_k {
                if sees(i, j) {
                    acc = r32(acc + r32(pm[i * n_k + j] * v[j * d_v + c]));
                }
            }
            o[i * d_v + c] = out(st(acc));
        }
    }
    let mut ds = vec![0.0; n_q * n_k];
    for i in 0..n_q {
        let mut dp = vec![0.0; n_k];
        let mut sum = 0.0;
        for j in 0..n_k {
            if sees(i, j) {
                let mut acc = 0.0;
                for c in 0..d_v {
                    acc = r32(acc + r32(g[i * d_v + c] * v[j * d_v + c]));
                }
                dp[j] = st(acc);
                sum = r32(sum + r32(pm[i * n_k + j] * dp[j]));
            }
        }
        for j in 0..n_k {
            if sees(i, j) {
                let g = st(r32(pm[i * n_k + j] * r32(dp[j] - sum)));
                // Autograd back through * softcap, tanh (grad (1 - t^2) in f32), / softcap.
                ds[i * n_k + j] = match cap.map(r32) {
                    Some(c) => {
                        let t = tanh_st[i * n_k + j];
                        st(r32(st(r32(st(r32(g * c)) * r32(1.0 - r32(t * t)))) / c))
                    }
                    None => g,
                };
            }
        }
    }
    let mut dq = vec![0.0; n_q * d];
    for i in 0..n_q {
        for l in 0..d {
            let mut acc = 0.0;
            for j in 0..n_k {
                if sees(i, j) {
                    acc = r32(acc + r32(ds[i * n_k + j] * kp[j * d + l]));
                }
            }
            dq[i * d + l] = out(st(acc));
        }
    }
    let (mut dk, mut dv) = (vec![0.0; n_k * d], vec![0.0; n_k * d_v]);
    for j in 0..n_k {
        for l in 0..d {
            let mut acc = 0.0;
            for i in 0..n_q {
                if sees(i, j) {
                    acc = r32(acc + r32(ds[i * n_k + j] * q[i * d + l]));
                }
            }
            dk[j * d + l] = out(st(r32(st(acc) * tau)));
        }
        for c in 0..d_v {
            let mut acc = 0.0;
            for i in 0..n_q {
                if sees(i, j) {
                    acc = r32(acc + r32(pm[i * n_k + j] * g[i * d_v + c]));
                }
            }
            dv[j * d_v + c] = out(st(acc));
        }
    }
    (o, lse, dq, dk, dv)
}

#[test]
fn plain_baseline_matches_an_independent_implementation() {
    let p = problem(2, 13, 13, 8, 5, 10);
    // No bias; an ALiBi-like bias; key padding (-inf for the last keys).
    let alibi: Vec<f64> = (0..13 * 13)
        .map(|ij| -0.3 * ((ij / 13) as f64 - (ij % 13) as f64).abs())
        .collect();
    let pad: Vec<f64> = (0..13 * 13)
        .map(|ij| if ij % 13 < 9 { 0.0 } else { f64::NEG_INFINITY })
        .collect();
    // Softcaps below and near the scores' size (they reach about 3 here).
    for (causal, bias, cap) in [
        (false, None, None),
        (true, None, None),
        (false, Some(alibi.clone()), None),
        (true, Some(alibi.clone()), None),
        (false, Some(pad), None),
        (false, None, Some(1.5)),
        (true, Some(alibi), Some(0.7)),
    ] {
        let mask = if causal {
            Mask::CausalTopLeft
        } else {
            Mask::None
        };
        for (dtype, rule) in [
            (DType::BF16, PlainRule::Storage),
            (DType::BF16, PlainRule::Upcast),
            (DType::F32, PlainRule::Storage),
        ] {
            let st = |x: f64| {
                if rule == PlainRule::Storage && dtype == DType::BF16 {
                    bf16_of(x)
                } else {
                    r32(x)
                }
            };
            let out = |x: f64| {
                if dtype == DType::BF16 {
                    bf16_of(x)
                } else {
                    r32(x)
                }
            };
            for h in 0..p.heads {
                let sl = |x: &[f64], len: usize| x[h * len..(h + 1) * len].to_vec();
                let (q, k, v, g) = (
                    sl(&p.q, 13 * 8),
                    sl(&p.k, 13 * 8),
                    sl(&p.v, 13 * 5),
                    sl(&p.d_o, 13 * 5),
                );
                let b = bias.as_deref();
                let lib = plain_head(
                    (&q, &k, &v, Some(&g)),
                    (13, 13, 8, 5),
                    (1.0 / 8f64.sqrt(), mask, b, cap),
                    dtype,
                    rule,
                );
                let (o, lse, dq, dk, dv) = independent_plain(&p, h, (causal, b, cap), &st, &out);
                let grads = lib.grads.unwrap();
                assert_eq!(lib.o, o, "o {dtype:?} {rule:?} causal {causal}");
                assert_eq!(lib.lse, lse, "lse {dtype:?} {rule:?}");
                assert_eq!(grads[0], dq, "dq {dtype:?} {rule:?}");
                assert_eq!(grads[1], dk, "dk {dtype:?} {rule:?}");
                assert_eq!(grads[2], dv, "dv {dtype:?} {rule:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Files and the command line

#[test]
fn f16_and_bf16_round_trip_through_files() {
    let xs = vec![
        1.0,
        -0.1,
        1.0 + 2f64.powi(-8) + 2f64.powi(-40),
        65519.0,
        3e-8,
    ];
    let dir = std::env::temp_dir().join(format!("polyattn-cand-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("h.safetensors");
    let t = vec![
        (
            "a".to_string(),
            AnyTensor::from_f64_rounded(DType::BF16, vec![5], &xs),
        ),
        (
            "b".to_string(),
            AnyTensor::from_f64_rounded(DType::F16, vec![5], &xs),
        ),
    ];
    write_tensors(&path, &t, &HashMap::new()).unwrap();
    let f = TensorFile::read(&path).unwrap();
    let a = f.get("a").unwrap();
    assert_eq!(a.dtype(), DType::BF16);
    assert_eq!(
        a.to_f64_vec(),
        xs.iter().map(|&x| bf16_of(x)).collect::<Vec<_>>()
    );
    let b = f.get("b").unwrap().to_f64_vec();
    // f16 (spacing 2^-10 at 1): -0.1 -> -0.0999755859375; 1 + 2^-8 + 2^-40 -> 1 + 2^-8;
    // 65519 -> 65504; 3e-8 (above half the smallest subnormal 2^-24) -> 2^-24.
    assert_eq!(
        b,
        vec![
            1.0,
            -0.0999755859375,
            1.0 + 2f64.powi(-8),
            65504.0,
            2f64.powi(-24)
        ]
    );
    std::fs::remove_dir_all(&dir).ok();
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_polyattn")
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("polyattn-cand-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(path: &Path, t: Vec<(String, AnyTensor)>) {
    write_tensors(path, &t, &HashMap::new()).unwrap();
}

#[test]
fn cli_certifies_a_candidate_and_refuses_a_mismatch_cleanly() {
    let dir = tmpdir("ok");
    let p = problem(2, 10, 10, 4, 4, 11);
    let ex = exact(&p, spec::Mask::CausalTopLeft);
    let sh = shapes(&p);
    let bf = |x: &[f64], s: Vec<usize>| AnyTensor::from_f64_rounded(DType::BF16, s, x);
    write(
        &dir.join("in.safetensors"),
        vec![
            ("q".into(), bf(&p.q, vec![1, 2, 10, 4])),
            ("k".into(), bf(&p.k, vec![1, 2, 10, 4])),
            ("v".into(), bf(&p.v, vec![1, 2, 10, 4])),
            ("do".into(), bf(&p.d_o, vec![1, 2, 10, 4])),
        ],
    );
    write(
        &dir.join("cand.safetensors"),
        vec![
            ("o".into(), bf(&ex[0], vec![1, 2, 10, 4])),
            (
                "lse".into(),
                AnyTensor::from_f64_rounded(DType::F32, vec![1, 2, 10], &ex[1]),
            ),
            ("dv".into(), bf(&ex[4], vec![1, 2, 10, 4])),
        ],
    );
    let _ = sh;
    let s = |p: PathBuf| p.to_string_lossy().into_owned();
    let out = std::process::Command::new(bin())
        .args([
            "certify",
            "--input",
            &s(dir.join("in.safetensors")),
            "--candidate",
            &s(dir.join("cand.safetensors")),
            "--out",
            &s(dir.join("rep")),
            "--mask",
            "causal",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("pass"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("rep/report.json")).unwrap())
            .unwrap();
    assert_eq!(json["schema"], "polyattn.certify.candidate/1");
    let names: Vec<&str> = json["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["o", "lse", "dv"]);
    // Stable key order: the first keys as declared.
    let text = std::fs::read_to_string(dir.join("rep/report.json")).unwrap();
    let pos = |k: &str| text.find(&format!("\"{k}\"")).unwrap();
    assert!(
        pos("schema") < pos("layout")
            && pos("layout") < pos("input_dtypes")
            && pos("reference") < pos("tensors")
    );
    assert!(
        dir.join("rep/report.md").exists()
            && dir.join("rep/rows.svg").exists()
            && dir.join("rep/bias_rows.csv").exists()
    );
    // A bshd-shaped o under the default layout: one line, both shapes, nothing written.
    write(
        &dir.join("bad.safetensors"),
        vec![("o".into(), bf(&ex[0], vec![1, 10, 2, 4]))],
    );
    let out = std::process::Command::new(bin())
        .args([
            "certify",
            "--input",
            &s(dir.join("in.safetensors")),
            "--candidate",
            &s(dir.join("bad.safetensors")),
            "--out",
            &s(dir.join("rep2")),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("[1, 2, 10, 4]")
            && err.contains("[1, 10, 2, 4]")
            && err.contains("--layout bshd"),
        "{err}"
    );
    assert!(!dir.join("rep2").exists());
    // A gradient without `do` in the input: a typed error, nothing written.
    write(
        &dir.join("in2.safetensors"),
        vec![
            ("q".into(), bf(&p.q, vec![1, 2, 10, 4])),
            ("k".into(), bf(&p.k, vec![1, 2, 10, 4])),
            ("v".into(), bf(&p.v, vec![1, 2, 10, 4])),
        ],
    );
    let out = std::process::Command::new(bin())
        .args([
            "certify",
            "--input",
            &s(dir.join("in2.safetensors")),
            "--candidate",
            &s(dir.join("cand.safetensors")),
            "--out",
            &s(dir.join("rep3")),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`do`"));
    assert!(!dir.join("rep3").exists());
    std::fs::remove_dir_all(&dir).ok();
}

/// A candidate whose errors are all zero (exact f64 midpoints of a tiny problem where
/// the reference is exact enough) writes no plot rather than failing.
#[test]
fn cli_zero_candidate_without_plot_failure() {
    let dir = tmpdir("zero");
    // v = 0: O = 0 exactly, dv etc. not given.
    let p = problem(1, 4, 4, 4, 4, 12);
    let s = |p: PathBuf| p.to_string_lossy().into_owned();
    write(
        &dir.join("in.safetensors"),
        vec![
            ("q".into(), f64t(vec![4, 4], p.q.clone())),
            ("k".into(), f64t(vec![4, 4], p.k.clone())),
            ("v".into(), f64t(vec![4, 4], vec![0.0; 16])),
        ],
    );
    write(
        &dir.join("c.safetensors"),
        vec![("o".into(), f64t(vec![4, 4], vec![0.0; 16]))],
    );
    let out = std::process::Command::new(bin())
        .args([
            "certify",
            "--input",
            &s(dir.join("in.safetensors")),
            "--candidate",
            &s(dir.join("c.safetensors")),
            "--out",
            &s(dir.join("rep")),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join("rep/report.json").exists());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("rep/report.json")).unwrap())
            .unwrap();
    assert_eq!(json["tensors"][0]["certified_max_abs"], 0.0);
    assert_eq!(json["tensors"][0]["rel_fro_kind"], "absolute");
    std::fs::remove_dir_all(&dir).ok();
}

/// Grouped-query attention (4 query heads, 2 key/value heads): the expected values
/// come from the MPFR spec run on the repeated (multi-head) problem, the group's dK,
/// dV shares summed here. A bf16 rounding of them is bracketed; a dK missing one
/// share of its group is certifiably wrong; a head count that does not divide is a
/// typed error.
#[test]
fn grouped_query_candidates_are_certified_against_group_sums() {
    let (hq, hkv, n, d) = (4usize, 2usize, 10usize, 4usize);
    let g = hq / hkv;
    let full = problem(hq, n, n, d, d, 11);
    // Key/value head j is query head j g's (the repeated problem reads it g times).
    let kv_of = |x: &[f64], len: usize| -> Vec<f64> {
        (0..hkv)
            .flat_map(|j| x[j * g * len..(j * g + 1) * len].to_vec())
            .collect()
    };
    let (k, v) = (kv_of(&full.k, n * d), kv_of(&full.v, n * d));
    let rep = |x: &[f64], len: usize| -> Vec<f64> {
        (0..hq)
            .flat_map(|h| x[(h / g) * len..(h / g + 1) * len].to_vec())
            .collect()
    };
    let mha = Problem {
        k: rep(&k, n * d),
        v: rep(&v, n * d),
        ..problem(hq, n, n, d, d, 11)
    };
    let ex = exact(&mha, spec::Mask::CausalTopLeft);
    let group_sum = |x: &[f64]| -> Vec<f64> {
        (0..hkv)
            .flat_map(|j| {
                (0..n * d)
                    .map(|e| (0..g).map(|i| x[(j * g + i) * n * d + e]).sum::<f64>())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let want = [
        ex[0].clone(),
        ex[1].clone(),
        ex[2].clone(),
        group_sum(&ex[3]),
        group_sum(&ex[4]),
    ];
    let t = |shape: Vec<usize>, x: &[f64]| AnyTensor::from_f64_rounded(DType::BF16, shape, x);
    let input = file_of(&[
        ("q".to_string(), t(vec![hq, n, d], &mha.q)),
        ("k".to_string(), t(vec![hkv, n, d], &k)),
        ("v".to_string(), t(vec![hkv, n, d], &v)),
        ("do".to_string(), t(vec![hq, n, d], &mha.d_o)),
    ]);
    let sh = [
        vec![hq, n, d],
        vec![hq, n],
        vec![hq, n, d],
        vec![hkv, n, d],
        vec![hkv, n, d],
    ];
    let mut cand = Vec::new();
    let mut true_err = [0.0f64; 5];
    for i in 0..5 {
        let rounded: Vec<f64> = want[i].iter().map(|&x| bf16_of(x)).collect();
        true_err[i] = rounded
            .iter()
            .zip(&want[i])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        cand.push((NAMES[i].to_string(), t(sh[i].clone(), &rounded)));
    }
    let r = certify_candidate(&input, &file_of(&cand), &opts(Mask::CausalTopLeft)).unwrap();
    assert_eq!((r.shape[1], r.kv_heads), (hq, hkv));
    // Slack: `want` holds f64 sums of two f64 midpoints (relative error <= 2^-52 of
    // entries below 10 here), far below the bf16 roundings (>= 2^-9 relative).
    let slack = 1e-14;
    for i in 0..5 {
        let c = tensor(&r, NAMES[i]);
        assert!(true_err[i] > 1e-6, "{}", NAMES[i]);
        assert!(
            c.certified_max_abs >= true_err[i] - slack,
            "{}: {} < {}",
            NAMES[i],
            c.certified_max_abs,
            true_err[i]
        );
        assert!(
            c.certified_lower_max_abs <= true_err[i] + slack,
            "{}",
            NAMES[i]
        );
        assert!(
            c.certified_max_abs <= true_err[i] + 1e-12,
            "{}: not tight",
            NAMES[i]
        );
        assert_eq!(c.baseline.verdict, "pass", "{}: {:?}", NAMES[i], c.baseline);
    }
    // dK from the first query head of each group only: off by the other share.
    let wrong: Vec<f64> = (0..hkv)
        .flat_map(|j| ex[3][j * g * n * d..(j * g + 1) * n * d].to_vec())
        .collect();
    let miss = wrong
        .iter()
        .zip(&want[3])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let cand = vec![("dk".to_string(), f64t(sh[3].clone(), wrong))];
    let r = certify_candidate(&input, &file_of(&cand), &opts(Mask::CausalTopLeft)).unwrap();
    let c = tensor(&r, "dk");
    assert!(miss > 1e-2);
    assert!(c.certified_lower_max_abs >= miss - slack && c.certified_lower_max_abs <= miss + slack);
    assert_eq!(c.baseline.verdict, "fail");
    // Three key/value heads for four query heads: a typed error naming the shapes.
    let k3: Vec<f64> = full.k[..3 * n * d].to_vec();
    let bad = file_of(&[
        ("q".to_string(), t(vec![hq, n, d], &mha.q)),
        ("k".to_string(), t(vec![3, n, d], &k3)),
        ("v".to_string(), t(vec![3, n, d], &k3)),
    ]);
    let cand = vec![("o".to_string(), f64t(sh[0].clone(), want[0].clone()))];
    let e = certify_candidate(&bad, &file_of(&cand), &opts(Mask::CausalTopLeft)).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("[3, 10, 4]") && msg.contains("[4, 10, 4]"),
        "{msg}"
    );
}

/// An additive `bias` in the input file (ALiBi with a -inf hole, shared by every
/// head): the bf16 rounding of the biased exact result (MPFR, here) is bracketed, the
/// plain baseline passes, and an unbiased output is proven wrong.
#[test]
fn a_biased_problem_is_certified_and_an_unbiased_output_is_not() {
    let p = problem(2, 9, 11, 4, 3, 7);
    let (n_q, n_k) = (p.n_q, p.n_k);
    // 0.25 * integer distances: exact in bf16, so every engine sees the same bias.
    let mut b: Vec<f64> = (0..n_q * n_k)
        .map(|ij| -0.25 * ((ij / n_k) as f64 + 2.0 - (ij % n_k) as f64).abs())
        .collect();
    b[3] = f64::NEG_INFINITY;
    let bias = DMatrix::from_row_slice(n_q, n_k, &b);
    let tau = 1.0 / (p.d as f64).sqrt();
    let (mut want, mut unbiased) = (Vec::new(), Vec::new());
    for h in 0..p.heads {
        let m = |x: &[f64], r: usize, c: usize| {
            DMatrix::from_row_slice(r, c, &x[h * r * c..(h + 1) * r * c])
        };
        let sp = spec::Problem {
            q: m(&p.q, n_q, p.d),
            k: m(&p.k, n_k, p.d),
            v: m(&p.v, n_k, p.d_v),
            tau,
            mask: spec::Mask::None,
            softcap: None,
        };
        let f = spec::forward_with_bias(&sp, Some(&bias), 128).unwrap();
        let f0 = spec::forward(&sp, 128).unwrap();
        for i in 0..n_q {
            for c in 0..p.d_v {
                want.push(f.o[(i, c)].mid_f64());
                unbiased.push(f0.o[(i, c)].mid_f64());
            }
        }
    }
    let mut input = vec![
        (
            "q".to_string(),
            AnyTensor::from_f64_rounded(DType::BF16, vec![2, n_q, p.d], &p.q),
        ),
        (
            "k".to_string(),
            AnyTensor::from_f64_rounded(DType::BF16, vec![2, n_k, p.d], &p.k),
        ),
        (
            "v".to_string(),
            AnyTensor::from_f64_rounded(DType::BF16, vec![2, n_k, p.d_v], &p.v),
        ),
    ];
    input.push(("bias".to_string(), f64t(vec![n_q, n_k], b)));
    let input = file_of(&input);
    let rounded: Vec<f64> = want.iter().map(|&x| bf16_of(x)).collect();
    let true_err = rounded
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let cand = |o: &[f64]| {
        file_of(&[(
            "o".to_string(),
            AnyTensor::from_f64_rounded(DType::BF16, vec![2, n_q, p.d_v], o),
        )])
    };
    let r = certify_candidate(&input, &cand(&rounded), &opts(Mask::None)).unwrap();
    let c = tensor(&r, "o");
    assert!(
        c.certified_max_abs >= true_err && c.certified_max_abs <= true_err * (1.0 + 1e-9) + 1e-25
    );
    assert_eq!(c.baseline.verdict, "pass", "{:?}", c.baseline);
    let r = certify_candidate(&input, &cand(&unbiased), &opts(Mask::None)).unwrap();
    assert!(tensor(&r, "o").certified_lower_max_abs > 1e-2);
}

/// A softcapped problem (Gemma 2's `c tanh(s / c)`, scores up to about 3 under a cap of
/// 1.2): the bf16 rounding of its exact o and gradients is certified with its true
/// error, the plain bf16 baseline (with FlashAttention's reference's softcap ops) passes
/// the rule, and the exact output of the *uncapped* problem is proven wrong, with a hint
/// that it matches attention without the softcap.
#[test]
fn a_softcapped_problem_is_certified_and_an_uncapped_output_is_not() {
    let p = problem(2, 9, 11, 4, 3, 17);
    let (n_q, n_k) = (p.n_q, p.n_k);
    let cap = 1.2;
    let tau = 1.0 / (p.d as f64).sqrt();
    let (mut want, mut uncapped) = (vec![Vec::new(); 5], Vec::new());
    for h in 0..p.heads {
        let m = |x: &[f64], r: usize, c: usize| {
            DMatrix::from_row_slice(r, c, &x[h * r * c..(h + 1) * r * c])
        };
        let sp = spec::Problem {
            q: m(&p.q, n_q, p.d),
            k: m(&p.k, n_k, p.d),
            v: m(&p.v, n_k, p.d_v),
            tau,
            mask: spec::Mask::None,
            softcap: Some(cap),
        };
        let f = spec::forward(&sp, 128).unwrap();
        let g = spec::backward(&sp, &m(&p.d_o, n_q, p.d_v), 128).unwrap();
        let plain = spec::forward(
            &spec::Problem {
                softcap: None,
                ..sp.clone()
            },
            128,
        )
        .unwrap();
        let rows = |x: &DMatrix<polyattn_spec::Interval>| {
            let mut v = Vec::new();
            for i in 0..x.nrows() {
                for j in 0..x.ncols() {
                    v.push(x[(i, j)].mid_f64());
                }
            }
            v
        };
        want[0].extend(rows(&f.o));
        want[2].extend(rows(&g.dq));
        want[3].extend(rows(&g.dk));
        want[4].extend(rows(&g.dv));
        uncapped.extend(rows(&plain.o));
    }
    let mut input = vec![
        (
            "q".to_string(),
            AnyTensor::from_f64_rounded(DType::BF16, vec![2, n_q, p.d], &p.q),
        ),
        (
            "k".to_string(),
            AnyTensor::from_f64_rounded(DType::BF16, vec![2, n_k, p.d], &p.k),
        ),
        (
            "v".to_string(),
            AnyTensor::from_f64_rounded(DType::BF16, vec![2, n_k, p.d_v], &p.v),
        ),
    ];
    input.push((
        "do".to_string(),
        AnyTensor::from_f64_rounded(DType::BF16, vec![2, n_q, p.d_v], &p.d_o),
    ));
    let input = file_of(&input);
    let shapes = [
        vec![2, n_q, p.d_v],
        vec![],
        vec![2, n_q, p.d],
        vec![2, n_k, p.d],
        vec![2, n_k, p.d_v],
    ];
    let cand: Vec<(String, AnyTensor)> = [0usize, 2, 3, 4]
        .iter()
        .map(|&t| {
            (
                NAMES[t].to_string(),
                AnyTensor::from_f64_rounded(DType::BF16, shapes[t].clone(), &want[t]),
            )
        })
        .collect();
    let o = CandidateOptions {
        softcap: Some(cap),
        ..opts(Mask::None)
    };
    let r = certify_candidate(&input, &file_of(&cand), &o).unwrap();
    for &t in &[0usize, 2, 3, 4] {
        let true_err = want[t]
            .iter()
            .map(|&x| (bf16_of(x) - x).abs())
            .fold(0.0, f64::max);
        let c = tensor(&r, NAMES[t]);
        assert!(
            c.certified_max_abs >= true_err
                && c.certified_max_abs <= true_err * (1.0 + 1e-9) + 1e-25,
            "{}: certified {} vs true {true_err}",
            NAMES[t],
            c.certified_max_abs
        );
        assert_eq!(c.baseline.verdict, "pass", "{} {:?}", NAMES[t], c.baseline);
    }
    let wrong = file_of(&[(
        "o".to_string(),
        AnyTensor::from_f64_rounded(DType::BF16, vec![2, n_q, p.d_v], &uncapped),
    )]);
    let r = certify_candidate(&input, &wrong, &o).unwrap();
    let c = tensor(&r, "o");
    assert!(
        c.certified_lower_max_abs > 1e-2,
        "{}",
        c.certified_lower_max_abs
    );
    assert!(
        c.hints.iter().any(|h| h.contains("no softcap")),
        "{:?}",
        c.hints
    );
}

// ---------------------------------------------------------------------------------
// FlashAttention's packed variable-length layout

/// A safetensors file holding F64 tensors and I32 offsets (`cu_seqlens_*`), written
/// with the safetensors crate directly (the engine's writer has no integer tensors).
fn file_with_offsets(floats: &[(&str, Vec<usize>, &[f64])], ints: &[(&str, &[i32])]) -> TensorFile {
    use safetensors::tensor::TensorView;
    use safetensors::Dtype;
    let mut bytes: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (n, shape, x) in floats {
        let b = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        bytes.push((n.to_string(), Dtype::F64, shape.clone(), b));
    }
    for (n, x) in ints {
        let b = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        bytes.push((n.to_string(), Dtype::I32, vec![x.len()], b));
    }
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(n, dt, s, b)| (n.clone(), TensorView::new(*dt, s.clone(), b).unwrap()))
        .collect();
    let dir = std::env::temp_dir().join(format!("polyattn-cand-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!(
        "v{}.safetensors",
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    ));
    safetensors::tensor::serialize_to_file(views, None, &path).unwrap();
    TensorFile::read(&path).unwrap()
}

/// Packed sequences as FlashAttention's varlen functions take them: grouped-query heads
/// (2 query heads on 1 key/value head), a sequence with keys and no query, a sequence
/// with more queries than keys under the bottom-right causal mask (rows that see no
/// key), FlashAttention's ALiBi per sequence (`-slope |i + n_k - n_q - j|` in each
/// sequence's own indices). Exact values per sequence from the MPFR spec; the candidate is their bf16
/// rounding plus one deliberate error in the keys-only sequence's dK (exactly zero).
#[test]
fn packed_varlen_sequences_are_certified_one_by_one() {
    let (hq, hkv, d, d_v) = (2usize, 1usize, 4usize, 3usize);
    let (nq, nk) = ([5usize, 0, 6], [7usize, 3, 4]);
    let (cq, ck) = ([0i32, 5, 5, 11], [0i32, 7, 10, 14]);
    let (tq, tk) = (11usize, 14usize);
    let mut r = SplitMix64::new(21);
    let mut g = |n: usize| -> Vec<f64> { r.normal_vec(n, 1.0).into_iter().map(bf16_of).collect() };
    // Packed [total, heads, cols].
    let (q, k, v, d_o) = (
        g(tq * hq * d),
        g(tk * hkv * d),
        g(tk * hkv * d_v),
        g(tq * hq * d_v),
    );
    let tau = 1.0 / (d as f64).sqrt();
    let slopes = [0.5, 0.25];
    let (mut o, mut lse) = (vec![0.0; tq * hq * d_v], vec![0.0; hq * tq]);
    let (mut dq, mut dk, mut dv) = (
        vec![0.0; tq * hq * d],
        vec![0.0; tk * hkv * d],
        vec![0.0; tk * hkv * d_v],
    );
    for b in 0..3 {
        let (q0, k0) = (cq[b] as usize, ck[b] as usize);
        if nq[b] == 0 {
            continue; // dK, dV of its keys stay 0
        }
        for h in 0..hq {
            let kv = h / (hq / hkv);
            let rows = |x: &[f64], t0: usize, n: usize, heads: usize, hh: usize, c: usize| {
                DMatrix::from_fn(n, c, |i, j| x[((t0 + i) * heads + hh) * c + j])
            };
            let sp = spec::Problem {
                q: rows(&q, q0, nq[b], hq, h, d),
                k: rows(&k, k0, nk[b], hkv, kv, d),
                v: rows(&v, k0, nk[b], hkv, kv, d_v),
                tau,
                mask: spec::Mask::CausalBottomRight,
                softcap: None,
            };
            let off = nk[b] as f64 - nq[b] as f64;
            let alibi = DMatrix::from_fn(nq[b], nk[b], |i, j| {
                -slopes[h] * (i as f64 + off - j as f64).abs()
            });
            let f = spec::forward_with_bias(&sp, Some(&alibi), 128).unwrap();
            let gr = spec::backward_with_bias(
                &sp,
                Some(&alibi),
                &rows(&d_o, q0, nq[b], hq, h, d_v),
                128,
            )
            .unwrap();
            for i in 0..nq[b] {
                lse[h * tq + q0 + i] = f.lse[i].as_ref().map_or(f64::NEG_INFINITY, |l| l.mid_f64());
                for j in 0..d_v {
                    o[((q0 + i) * hq + h) * d_v + j] = f.o[(i, j)].mid_f64();
                }
                for j in 0..d {
                    dq[((q0 + i) * hq + h) * d + j] = gr.dq[(i, j)].mid_f64();
                }
            }
            // dK, dV of a key/value head: the sum over its query heads (f64, rounding
            // at most 2^-53 of the sum: see the tolerance below).
            for i in 0..nk[b] {
                for j in 0..d {
                    dk[((k0 + i) * hkv + kv) * d + j] += gr.dk[(i, j)].mid_f64();
                }
                for j in 0..d_v {
                    dv[((k0 + i) * hkv + kv) * d_v + j] += gr.dv[(i, j)].mid_f64();
                }
            }
        }
    }
    let exact_t = [o, lse, dq, dk, dv];
    let shapes = [
        vec![tq, hq, d_v],
        vec![hq, tq],
        vec![tq, hq, d],
        vec![tk, hkv, d],
        vec![tk, hkv, d_v],
    ];
    // lse in f32 (as frameworks keep it), the rest in bf16.
    let mut cand: Vec<Vec<f64>> = exact_t
        .iter()
        .enumerate()
        .map(|(i, t)| {
            t.iter()
                .map(|&x| if i == 1 { r32(x) } else { bf16_of(x) })
                .collect()
        })
        .collect();
    // Key row 8 (the keys-only sequence's second key), head 0, column 2.
    let bad = (8 * hkv) * d + 2;
    assert_eq!(exact_t[3][bad], 0.0);
    cand[3][bad] = 0.25;
    let input = file_with_offsets(
        &[
            ("q", vec![tq, hq, d], &q[..]),
            ("k", vec![tk, hkv, d], &k[..]),
            ("v", vec![tk, hkv, d_v], &v[..]),
            ("do", vec![tq, hq, d_v], &d_o[..]),
            ("alibi_slopes", vec![hq], &slopes[..]),
        ],
        &[("cu_seqlens_q", &cq), ("cu_seqlens_k", &ck)],
    );
    let cfile = file_of(
        &(0..5)
            .map(|t| {
                let dt = if t == 1 { DType::F32 } else { DType::BF16 };
                (
                    NAMES[t].to_string(),
                    AnyTensor::from_f64_rounded(dt, shapes[t].clone(), &cand[t]),
                )
            })
            .collect::<Vec<_>>(),
    );
    let op = CandidateOptions {
        layout: Layout::Varlen,
        ..opts(Mask::CausalBottomRight)
    };
    let rep = certify_candidate(&input, &cfile, &op).unwrap();
    assert_eq!(rep.shape, [3, hq, tq, tk, d, d_v]);
    assert_eq!(rep.kv_heads, hkv);
    assert_eq!(
        rep.cu_seqlens,
        Some([vec![0, 5, 5, 11], vec![0, 7, 10, 14]])
    );
    for t in 0..5 {
        let c = tensor(&rep, NAMES[t]);
        // lse's candidate is f32; the others bf16 (the exact dK entry at `bad` is 0).
        let round = |x: f64| if t == 1 { r32(x) } else { bf16_of(x) };
        let true_err = (0..cand[t].len())
            .filter(|&i| exact_t[t][i].is_finite())
            .map(|i| {
                if t == 3 && i == bad {
                    0.25
                } else {
                    (round(exact_t[t][i]) - exact_t[t][i]).abs()
                }
            })
            .fold(0.0, f64::max);
        // The expected values are f64 midpoints (and, for dK, dV, f64 sums of two):
        // off the exact ones by at most 2^-52 of the largest entry.
        let slack = 2f64.powi(-52) * c.max_abs_exact;
        assert!(
            c.certified_max_abs >= true_err - slack
                && c.certified_max_abs <= true_err * (1.0 + 1e-9) + slack,
            "{}: certified {} vs true {true_err}; worst {:?}",
            NAMES[t],
            c.certified_max_abs,
            c.worst
        );
        assert!(
            c.certified_lower_max_abs <= true_err + slack,
            "{}",
            NAMES[t]
        );
        assert_eq!(c.nonfinite, 0, "{}", NAMES[t]);
    }
    // Rows that see no key: the last sequence's first 2 rows (6 queries, 4 keys,
    // bottom-right), in the polyattn convention (lse -inf, O = 0), recognised as such.
    let l = tensor(&rep, "lse");
    assert_eq!(l.conventions.len(), 1, "{:?}", l.conventions);
    assert_eq!(l.conventions[0].rows, 2 * hq);
    // Positions: the packed row, and the sequence in `batch` (sequence 1 is keys-only,
    // so query row 5 opens sequence 2; key row 8 lies in sequence 1's keys 7..10).
    assert_eq!(
        (l.conventions[0].first.batch, l.conventions[0].first.row),
        (2, 5)
    );
    let w = &tensor(&rep, "dk").worst[0];
    assert_eq!((w.at.batch, w.at.head, w.at.row, w.at.col), (1, 0, 8, 2));
    assert!(tensor(&rep, "dk").certified_lower_max_abs >= 0.25 - 1e-6);
    assert_eq!(tensor(&rep, "o").baseline.verdict, "pass");
}

/// One packed sequence is the unpacked problem: the same certificates as `bshd`.
#[test]
fn one_packed_sequence_equals_the_bshd_report() {
    let (h, n, d) = (2usize, 9usize, 4usize);
    let p = problem(h, n, n, d, d, 23);
    let ex = exact(&p, spec::Mask::CausalTopLeft);
    // bhsd stacks -> [n, h, c].
    let to_shd = |x: &[f64], c: usize| -> Vec<f64> {
        let mut out = vec![0.0; x.len()];
        for hi in 0..h {
            for s in 0..n {
                for ci in 0..c {
                    out[(s * h + hi) * c + ci] = x[(hi * n + s) * c + ci];
                }
            }
        }
        out
    };
    let (q, k, v, g) = (
        to_shd(&p.q, d),
        to_shd(&p.k, d),
        to_shd(&p.v, d),
        to_shd(&p.d_o, d),
    );
    let mut cand: Vec<Vec<f64>> = ex
        .iter()
        .map(|t| t.iter().map(|&x| bf16_of(x)).collect())
        .collect();
    cand[2][7] -= 0.03;
    let floats = [
        ("q", vec![n, h, d], &q[..]),
        ("k", vec![n, h, d], &k[..]),
        ("v", vec![n, h, d], &v[..]),
        ("do", vec![n, h, d], &g[..]),
    ];
    let cu = [0i32, n as i32];
    let packed = file_with_offsets(&floats, &[("cu_seqlens_q", &cu), ("cu_seqlens_k", &cu)]);
    let plain = file_with_offsets(&floats, &[]);
    let mk_c = |lse_shape: Vec<usize>| {
        file_of(&[
            ("o".into(), f64t(vec![n, h, d], to_shd(&cand[0], d))),
            ("lse".into(), f64t(lse_shape, cand[1].clone())),
            ("dq".into(), f64t(vec![n, h, d], to_shd(&cand[2], d))),
            ("dk".into(), f64t(vec![n, h, d], to_shd(&cand[3], d))),
            ("dv".into(), f64t(vec![n, h, d], to_shd(&cand[4], d))),
        ])
    };
    let o1 = CandidateOptions {
        layout: Layout::Varlen,
        ..opts(Mask::CausalTopLeft)
    };
    let o2 = CandidateOptions {
        layout: Layout::Bshd,
        ..opts(Mask::CausalTopLeft)
    };
    let r1 = certify_candidate(&packed, &mk_c(vec![h, n]), &o1).unwrap();
    let r2 = certify_candidate(&plain, &mk_c(vec![h, n]), &o2).unwrap();
    for (t1, t2) in r1.tensors.iter().zip(&r2.tensors) {
        assert_eq!(
            serde_json::to_string(t1).unwrap(),
            serde_json::to_string(t2).unwrap()
        );
    }
    assert!(tensor(&r1, "dq").certified_lower_max_abs > 0.02);
    // The CLI: `--layout varlen` writes the same certificates and the offsets.
    let dir = tmpdir("varlen");
    let c = mk_c(vec![h, n]);
    let out = std::process::Command::new(bin())
        .arg("certify")
        .arg("--input")
        .arg(packed.path())
        .arg("--candidate")
        .arg(c.path())
        .arg("--out")
        .arg(dir.join("rep"))
        .args(["--mask", "causal", "--layout", "varlen"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("rep/report.json")).unwrap())
            .unwrap();
    assert_eq!(json["layout"], "varlen");
    assert_eq!(json["cu_seqlens"], serde_json::json!([[0, n], [0, n]]));
    // Both sides through the same JSON text parser (serde_json's parse of a float is
    // not always the nearest f64: equal text, equal values).
    let lib: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&r1.tensors).unwrap()).unwrap();
    assert_eq!(json["tensors"], lib);
}

/// Bad packed inputs: typed errors naming the problem.
#[test]
fn packed_layout_errors_name_the_problem() {
    let (n, h, d) = (6usize, 1usize, 2usize);
    let x = vec![0.5; n * h * d];
    let floats = [
        ("q", vec![n, h, d], &x[..]),
        ("k", vec![n, h, d], &x[..]),
        ("v", vec![n, h, d], &x[..]),
    ];
    let cand = file_of(&[("o".into(), f64t(vec![n, h, d], x.clone()))]);
    let varlen = CandidateOptions {
        layout: Layout::Varlen,
        ..opts(Mask::None)
    };
    let err = |file: &TensorFile, o: &CandidateOptions| {
        certify_candidate(file, &cand, o).unwrap_err().to_string()
    };
    let e = err(&file_with_offsets(&floats, &[]), &varlen);
    assert!(
        e.contains("cu_seqlens_q") && e.contains("--layout varlen"),
        "{e}"
    );
    let e = err(
        &file_with_offsets(
            &floats,
            &[("cu_seqlens_q", &[0, 2, 5]), ("cu_seqlens_k", &[0, 2, 6])],
        ),
        &varlen,
    );
    assert!(e.contains("cu_seqlens_q") && e.contains("end at 6"), "{e}");
    let e = err(
        &file_with_offsets(
            &floats,
            &[
                ("cu_seqlens_q", &[0, 4, 2, 6]),
                ("cu_seqlens_k", &[0, 2, 4, 6]),
            ],
        ),
        &varlen,
    );
    assert!(e.contains("never decrease"), "{e}");
    let e = err(
        &file_with_offsets(
            &floats,
            &[("cu_seqlens_q", &[0, 6]), ("cu_seqlens_k", &[0, 2, 6])],
        ),
        &varlen,
    );
    assert!(e.contains("sequences in cu_seqlens_k"), "{e}");
    let e = err(
        &file_with_offsets(
            &floats,
            &[("cu_seqlens_q", &[0, 3, 6]), ("cu_seqlens_k", &[0, 6, 6])],
        ),
        &varlen,
    );
    assert!(e.contains("sequence 1 has 3 queries and no key"), "{e}");
    // Offsets as floats: the dtype named.
    let cu = [0.0, 6.0];
    let mut with_float = floats.to_vec();
    with_float.push(("cu_seqlens_q", vec![2], &cu[..]));
    let e = err(
        &file_with_offsets(&with_float, &[("cu_seqlens_k", &[0, 6])]),
        &varlen,
    );
    assert!(
        e.contains("cu_seqlens_q") && e.contains("I32 or I64"),
        "{e}"
    );
    // Offsets without --layout varlen: refused, not silently read as one sequence.
    let e = err(
        &file_with_offsets(
            &floats,
            &[("cu_seqlens_q", &[0, 6]), ("cu_seqlens_k", &[0, 6])],
        ),
        &CandidateOptions {
            layout: Layout::Bshd,
            ..opts(Mask::None)
        },
    );
    assert!(e.contains("--layout varlen"), "{e}");
    // A bias has no packed form.
    let bias = vec![0.0; n * n];
    let mut with_bias = floats.to_vec();
    with_bias.push(("bias", vec![n, n], &bias[..]));
    let e = err(
        &file_with_offsets(
            &with_bias,
            &[("cu_seqlens_q", &[0, 6]), ("cu_seqlens_k", &[0, 6])],
        ),
        &varlen,
    );
    assert!(e.contains("bias") && e.contains("packed"), "{e}");
    // A candidate shaped [batch, seq, heads, dim] under varlen: both shapes named.
    let c4 = file_of(&[("o".into(), f64t(vec![1, n, h, d], x.clone()))]);
    let e = certify_candidate(
        &file_with_offsets(
            &floats,
            &[("cu_seqlens_q", &[0, 6]), ("cu_seqlens_k", &[0, 6])],
        ),
        &c4,
        &varlen,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("[1, 6, 1, 2]") && e.contains("[6, 1, 2]"), "{e}");
    // A packed file given to `attention` (which reads [.., n, d] stacks and would
    // attend across heads), and --layout without --candidate: refused in one line.
    let packed = file_with_offsets(
        &floats,
        &[("cu_seqlens_q", &[0, 6]), ("cu_seqlens_k", &[0, 6])],
    );
    let dir = tmpdir("packed-attention");
    let out = std::process::Command::new(bin())
        .arg("attention")
        .arg("--input")
        .arg(packed.path())
        .arg("--output")
        .arg(dir.join("o.safetensors"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("cu_seqlens_q") && !err.contains("panicked"),
        "{err}"
    );
    assert!(!dir.join("o.safetensors").exists());
    let out = std::process::Command::new(bin())
        .arg("certify")
        .arg("--input")
        .arg(packed.path())
        .arg("--out")
        .arg(dir.join("rep"))
        .args(["--layout", "varlen"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--candidate"),
        "{err}"
    );
}
