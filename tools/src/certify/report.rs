//! A polynomial-engine run certified tensor by tensor (docs/math.md §5.3): for O, dQ, dK,
//! dV the certified max-abs and relative (Frobenius) error against the exact real result,
//! the engine's a priori bound split into its polynomial and rounding parts, the
//! reference used and its precision, the regime of every head, and the times.
//!
//! Reference: MPFR enclosures (`polyattn-spec`, 128 bits) when the problem is small
//! enough and feature `certify` is on, else the f64 exact engine with its a priori
//! rounding bound ([`polyattn::attention::exact::reference`]). Either way each reference value comes with a
//! radius r_e that encloses the exact value, so for a computed y:
//!
//! ```text
//! |y - exact| <= |y - y_ref| + r_e                      (certified, per entry)
//! ||y - exact||_F / ||exact||_F <= (||y - y_ref||_F + ||r||_F) / (||y_ref||_F - ||r||_F)
//! ```
//! and `max(|y - y_ref| - r_e, 0)` is a certified *lower* bound on the true error, which
//! must not exceed the a priori bound (the report says whether it does not).
//!
//! JSON schema `polyattn.certify.attention/1`: the serialised [`AttentionReport`].

use crate::table::{markdown_table, sig3, sig3_up};
use polyattn::attention::exact::reference::exact_reference_with_bias;
use polyattn::attention::poly::{self, GradientKind, PolyConfig, Regime};
use polyattn::error::Result;
use polyattn::scalar::Real;
use polyattn::tensor::{MatRef, Matrix, Tensor3};
use serde::Serialize;
use std::time::Instant;

/// Which reference to certify against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReferenceChoice {
    /// MPFR when the problem is small (<= 4e6 score-dimension products), else f64.
    Auto,
    /// MPFR enclosures (feature `certify`); slow: O(n^2 d) interval operations.
    Mpfr,
    /// The f64 exact engine plus its a priori rounding bound.
    F64,
    /// Double-double ball enclosures of the whole model (`polyattn_spec::ball`;
    /// model reports only, feature `certify`): certified like MPFR, fast enough for
    /// n in the tens of thousands. A single head needs none: its `f64` reference
    /// with the a priori rounding bound is certified at any n.
    Ball,
}

/// The reference actually used.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ReferenceUsed {
    /// MPFR interval enclosures at `prec` bits.
    Mpfr {
        /// Precision in bits.
        prec: u32,
    },
    /// f64 exact engine with an a priori rounding bound per entry.
    F64WithBound,
}

/// One tensor's certified errors and a priori bounds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TensorReport {
    /// `o`, `dq`, `dk` or `dv`.
    pub name: String,
    /// Number of entries.
    pub entries: usize,
    /// Certified upper bound on max |y - exact|.
    pub certified_max_abs: f64,
    /// Certified upper bound on ||y - exact||_F / ||exact||_F.
    pub certified_rel_fro: f64,
    /// Certified lower bound on max |y - exact| (0 if the reference cannot tell).
    pub certified_lower_max_abs: f64,
    /// The reference's own largest radius.
    pub reference_radius: f64,
    /// The engine's a priori bound on max |y - exact|: total, polynomial part,
    /// rounding part (maxima over entries).
    pub a_priori_total: f64,
    /// See `a_priori_total`.
    pub a_priori_poly: f64,
    /// See `a_priori_total`.
    pub a_priori_rounding: f64,
    /// True when no entry's certified lower bound exceeds its a priori bound.
    pub a_priori_consistent: bool,
    /// max |exact| (approximately: max |y_ref|), for reading relative sizes.
    pub max_abs_value: f64,
}

/// One head's regime and bounds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeadCertificate {
    /// The head's index.
    pub head: usize,
    /// R, B, sqrt(ln n), degree, rank, eps_P, predicted costs.
    pub regime: Regime,
}

/// The whole report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AttentionReport {
    /// `polyattn.certify.attention/1`.
    pub schema: String,
    /// The input's dtype.
    pub dtype: String,
    /// heads, n_q, n_k, d, d_v.
    pub shape: [usize; 5],
    /// Mask name.
    pub mask: String,
    /// Which approximate gradient (absent: forward only).
    pub gradient: Option<String>,
    /// The reference.
    pub reference: ReferenceUsed,
    /// Per-head regimes.
    pub heads: Vec<HeadCertificate>,
    /// Per-tensor results (o, then dq, dk, dv with a dO).
    pub tensors: Vec<TensorReport>,
    /// With a key-padding bias: the keys it hid, per query head (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden_keys: Option<Vec<usize>>,
    /// Seconds: polynomial forward, polynomial backward, reference. Not in the report's
    /// JSON or Markdown (which are reproducible to the byte): see
    /// [`AttentionReport::timings`].
    #[serde(skip)]
    pub seconds_poly_forward: f64,
    /// See `seconds_poly_forward`.
    #[serde(skip)]
    pub seconds_poly_backward: f64,
    /// See `seconds_poly_forward`.
    #[serde(skip)]
    pub seconds_reference: f64,
    /// Per tensor, the errors along the rows (for the plot; not in the JSON).
    #[serde(skip)]
    pub row_profiles: Vec<RowProfile>,
}

/// One tensor's certified error and a priori bound along its rows: entry `b` covers
/// rows `..= rows[b]` (1-based, after the previous bucket's), maximised over the
/// bucket's rows, their columns and the heads. Buckets are log-spaced, at most
/// [`PROFILE_BUCKETS`], so the plot of a 65 536-row tensor stays small.
#[derive(Clone, Debug, PartialEq)]
pub struct RowProfile {
    /// `o`, `dq`, `dk` or `dv`.
    pub name: String,
    /// Last row (1-based) of each bucket.
    pub rows: Vec<usize>,
    /// Certified max |y - exact| over the bucket.
    pub certified: Vec<f64>,
    /// The a priori bound's maximum over the bucket.
    pub a_priori: Vec<f64>,
}

/// Most buckets a [`RowProfile`] has.
pub const PROFILE_BUCKETS: usize = 200;

/// Per-entry data of one tensor across heads.
#[derive(Default)]
struct Entries {
    y: Vec<f64>,
    y_ref: Vec<f64>,
    radius: Vec<f64>,
    a_total: Vec<f64>,
    a_poly: Vec<f64>,
}

/// `x` rounded up to the next float (0 stays 0): keeps a sum of two rounded
/// magnitudes an upper bound.
fn up(x: f64) -> f64 {
    if x == 0.0 {
        0.0
    } else {
        x.next_up()
    }
}

impl Entries {
    /// Certified error of entry `e`: |y - y_ref| + r_e, rounded upward.
    fn certified(&self, e: usize) -> f64 {
        up(up((self.y[e] - self.y_ref[e]).abs()) + self.radius[e])
    }

    /// The [`RowProfile`] of a tensor stored as heads of `rows x cols` row-major blocks.
    fn row_profile(&self, name: &str, rows: usize, cols: usize) -> RowProfile {
        // Bucket b ends at row ends[b]: log-spaced, strictly increasing, last = rows.
        let mut ends: Vec<usize> = (1..=PROFILE_BUCKETS)
            .map(|b| {
                let t = b as f64 / PROFILE_BUCKETS as f64;
                // (rows >= 1 after the engine's checks; max(1) keeps clamp's range valid)
                ((rows as f64).powf(t).round() as usize).clamp(1, rows.max(1))
            })
            .collect();
        ends.dedup();
        let bucket_of = |i: usize| ends.partition_point(|&end| end < i + 1);
        let (mut certified, mut a_priori) = (vec![0.0f64; ends.len()], vec![0.0f64; ends.len()]);
        for e in 0..self.y.len() {
            let b = bucket_of((e / cols.max(1)) % rows.max(1));
            certified[b] = certified[b].max(self.certified(e));
            a_priori[b] = a_priori[b].max(self.a_total[e]);
        }
        RowProfile {
            name: name.to_string(),
            rows: ends,
            certified,
            a_priori,
        }
    }

    fn report(&self, name: &str) -> TensorReport {
        let mut cert_max = 0.0f64;
        let mut lower_max = 0.0f64;
        let mut consistent = true;
        let (mut diff2, mut rad2, mut ref2) = (0.0f64, 0.0f64, 0.0f64);
        for e in 0..self.y.len() {
            let diff = (self.y[e] - self.y_ref[e]).abs();
            cert_max = cert_max.max(self.certified(e));
            let lower = (diff - self.radius[e]).max(0.0);
            lower_max = lower_max.max(lower);
            consistent &= lower <= self.a_total[e];
            diff2 += diff * diff;
            rad2 += self.radius[e] * self.radius[e];
            ref2 += self.y_ref[e] * self.y_ref[e];
        }
        let (num, den) = (diff2.sqrt() + rad2.sqrt(), ref2.sqrt() - rad2.sqrt());
        let rel = if den > 0.0 {
            up(num / den) * (1.0 + 4.0 * f64::EPSILON)
        } else {
            f64::INFINITY
        };
        let max = |v: &[f64]| v.iter().cloned().fold(0.0f64, f64::max);
        let a_round = self
            .a_total
            .iter()
            .zip(&self.a_poly)
            .map(|(t, p)| t - p)
            .fold(0.0f64, f64::max);
        TensorReport {
            name: name.to_string(),
            entries: self.y.len(),
            certified_max_abs: cert_max,
            certified_rel_fro: rel,
            certified_lower_max_abs: lower_max,
            reference_radius: max(&self.radius),
            a_priori_total: max(&self.a_total),
            a_priori_poly: max(&self.a_poly),
            a_priori_rounding: a_round,
            a_priori_consistent: consistent,
            max_abs_value: self.y_ref.iter().map(|x| x.abs()).fold(0.0, f64::max),
        }
    }
}

/// A reference tensor: values and radii.
type RefTensor = (Vec<f64>, Vec<f64>);

/// The reference for one head: O and, with dO, (dQ, dK, dV), each with radii.
fn head_reference(
    q: MatRef<'_, f64>,
    k: MatRef<'_, f64>,
    v: MatRef<'_, f64>,
    d_o: Option<MatRef<'_, f64>>,
    bias: Option<MatRef<'_, f64>>,
    cfg: &PolyConfig,
    use_mpfr: bool,
) -> Result<Vec<RefTensor>> {
    #[cfg(feature = "certify")]
    if use_mpfr {
        return mpfr_reference(q, k, v, d_o, bias, cfg);
    }
    let _ = use_mpfr;
    let r = exact_reference_with_bias(q, k, v, bias, d_o, &cfg.attention())?;
    let mut out = vec![(r.o, r.bound_o)];
    if let Some(g) = r.grads {
        out.push((g.dq, g.bound_dq));
        out.push((g.dk, g.bound_dk));
        out.push((g.dv, g.bound_dv));
    }
    Ok(out)
}

/// Midpoints and half-widths (rounded up) of the 128-bit MPFR enclosures.
#[cfg(feature = "certify")]
fn mpfr_reference(
    q: MatRef<'_, f64>,
    k: MatRef<'_, f64>,
    v: MatRef<'_, f64>,
    d_o: Option<MatRef<'_, f64>>,
    bias: Option<MatRef<'_, f64>>,
    cfg: &PolyConfig,
) -> Result<Vec<RefTensor>> {
    use nalgebra::DMatrix;
    use polyattn_spec::attention as spec;
    let p = polyattn::attention::Problem::new(q, k, v, &cfg.attention())?;
    let dm = |m: MatRef<'_, f64>| DMatrix::from_row_slice(m.rows(), m.cols(), m.as_slice());
    let mask = super::spec_mask(cfg.mask);
    let sp = spec::Problem {
        q: dm(q),
        k: dm(k),
        v: dm(v),
        tau: p.tau,
        mask,
        softcap: None,
    };
    let err = |e: spec::SpecError| polyattn::error::Error::InvalidParameter {
        name: "reference problem",
        value: "MPFR".into(),
        reason: e.to_string(),
    };
    // Row-major (nalgebra iterates column-major) midpoints and radii.
    let split = |m: &DMatrix<polyattn_spec::Interval>| {
        let mut mid = Vec::with_capacity(m.len());
        let mut rad = Vec::with_capacity(m.len());
        for i in 0..m.nrows() {
            for j in 0..m.ncols() {
                let (lo, hi) = (m[(i, j)].lo_f64(), m[(i, j)].hi_f64());
                let c = 0.5 * (lo + hi);
                mid.push(c);
                rad.push(((hi - c).max(c - lo)).next_up());
            }
        }
        (mid, rad)
    };
    let bias = bias.map(dm);
    let f = spec::forward_with_bias(&sp, bias.as_ref(), 128).map_err(err)?;
    let mut out = vec![split(&f.o)];
    if let Some(g) = d_o {
        let b = spec::backward_with_bias(&sp, bias.as_ref(), &dm(g), 128).map_err(err)?;
        out.push(split(&b.dq));
        out.push(split(&b.dk));
        out.push(split(&b.dv));
    }
    Ok(out)
}

fn to64<T: Real>(m: MatRef<'_, T>) -> Result<Matrix<f64>> {
    Matrix::from_vec(
        m.rows(),
        m.cols(),
        m.as_slice().iter().map(|x| x.to_f64()).collect(),
    )
}

/// Runs the polynomial engine on `[heads, n, d]` inputs and certifies every output
/// against the chosen reference.
pub fn certify_attention<T: Real>(
    q: &Tensor3<T>,
    k: &Tensor3<T>,
    v: &Tensor3<T>,
    d_o: Option<&Tensor3<T>>,
    cfg: &PolyConfig,
    kind: GradientKind,
    reference: ReferenceChoice,
) -> Result<AttentionReport> {
    certify_attention_with_bias(q, k, v, None, d_o, cfg, kind, reference)
}

/// [`certify_attention`] with an additive score bias `[1 or heads, n_q, n_k]` (the
/// polynomial engine takes key padding only, [`poly::key_padding`]; the references
/// apply the bias as given).
#[allow(clippy::too_many_arguments)]
pub fn certify_attention_with_bias<T: Real>(
    q: &Tensor3<T>,
    k: &Tensor3<T>,
    v: &Tensor3<T>,
    bias: Option<&Tensor3<T>>,
    d_o: Option<&Tensor3<T>>,
    cfg: &PolyConfig,
    kind: GradientKind,
    reference: ReferenceChoice,
) -> Result<AttentionReport> {
    let t0 = Instant::now();
    let fwd = poly::forward_multihead_with_bias(q, k, v, bias, cfg)?;
    let t_fwd = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let grads = match d_o {
        Some(g) => Some(poly::backward_multihead(q, k, v, &fwd, g, kind, cfg)?),
        None => None,
    };
    let t_bwd = t1.elapsed().as_secs_f64();
    let (h, n_q, n_k, d, d_v) = (q.heads(), q.rows(), k.rows(), q.cols(), v.cols());
    // Grouped-query heads: each query head is certified with the key/value head it
    // reads; its dK, dV are that query head's share (the poly engine's per-head
    // results), certified against the exact share.
    let group = polyattn::attention::kv_group(h, k.heads())?;
    let work = (h * n_q * n_k * (d + d_v)) as f64;
    if matches!(reference, ReferenceChoice::Mpfr) && !cfg!(feature = "certify") {
        // Never a silent downgrade: the user asked for MPFR by name.
        return Err(polyattn::error::Error::InvalidParameter {
            name: "reference",
            value: "mpfr".into(),
            reason: "this build has no MPFR reference (feature `certify`); use auto or f64".into(),
        });
    }
    let use_mpfr = cfg!(feature = "certify")
        && match reference {
            ReferenceChoice::Mpfr => true,
            ReferenceChoice::F64 => false,
            ReferenceChoice::Auto => work <= 4e6,
            ReferenceChoice::Ball => {
                return Err(polyattn::error::Error::InvalidParameter {
                    name: "reference",
                    value: "ball".into(),
                    reason: "the ball reference is for whole-model reports (--weights); a \
                             single head's f64 reference with its a priori rounding bound \
                             is certified at any n (use auto, mpfr or f64)"
                        .into(),
                })
            }
        };
    let t2 = Instant::now();
    let names = ["o", "dq", "dk", "dv"];
    let mut entries: Vec<Entries> = (0..if d_o.is_some() { 4 } else { 1 })
        .map(|_| Entries::default())
        .collect();
    for head in 0..h {
        let (q64, k64, v64) = (
            to64(q.head(head))?,
            to64(k.head(head / group))?,
            to64(v.head(head / group))?,
        );
        let g64 = match d_o {
            Some(g) => Some(to64(g.head(head))?),
            None => None,
        };
        let b64 = match bias {
            Some(b) => Some(to64(b.head(if b.heads() == 1 { 0 } else { head }))?),
            None => None,
        };
        let refs = head_reference(
            q64.view(),
            k64.view(),
            v64.view(),
            g64.as_ref().map(|g| g.view()),
            b64.as_ref().map(|b| b.view()),
            cfg,
            use_mpfr,
        )?;
        let f = &fwd[head];
        let mut computed: Vec<(Vec<f64>, &poly::Bounds)> = vec![(
            f.o.as_slice().iter().map(|x| x.to_f64()).collect(),
            &f.bound,
        )];
        if let Some(gs) = &grads {
            let g = &gs[head];
            let y = |m: &Matrix<T>| m.as_slice().iter().map(|x| x.to_f64()).collect::<Vec<_>>();
            computed.push((y(&g.dq), &g.bound_dq));
            computed.push((y(&g.dk), &g.bound_dk));
            computed.push((y(&g.dv), &g.bound_dv));
        }
        for ((e, (y, b)), (y_ref, rad)) in entries.iter_mut().zip(computed).zip(refs) {
            e.y.extend(y);
            e.y_ref.extend(y_ref);
            e.radius.extend(rad);
            e.a_total.extend(&b.total);
            e.a_poly.extend(&b.poly);
        }
    }
    let t_ref = t2.elapsed().as_secs_f64();
    // Rows and columns of o, dq, dk, dv within one head.
    let dims = [(n_q, d_v), (n_q, d), (n_k, d), (n_k, d_v)];
    let row_profiles = entries
        .iter()
        .zip(names.iter().zip(dims))
        .map(|(e, (name, (r, c)))| e.row_profile(name, r, c))
        .collect();
    Ok(AttentionReport {
        schema: "polyattn.certify.attention/1".into(),
        dtype: T::DTYPE.into(),
        shape: [h, n_q, n_k, d, d_v],
        mask: cfg.mask.name(),
        gradient: d_o.map(|_| kind.name().to_string()),
        hidden_keys: bias.map(|_| fwd.iter().map(|f| f.hidden_keys()).collect()),
        reference: if use_mpfr {
            ReferenceUsed::Mpfr { prec: 128 }
        } else {
            ReferenceUsed::F64WithBound
        },
        heads: fwd
            .iter()
            .enumerate()
            .map(|(head, f)| HeadCertificate {
                head,
                regime: f.plan.regime.clone(),
            })
            .collect(),
        tensors: entries
            .iter()
            .zip(names)
            .map(|(e, n)| e.report(n))
            .collect(),
        seconds_poly_forward: t_fwd,
        seconds_poly_backward: t_bwd,
        seconds_reference: t_ref,
        row_profiles,
    })
}

impl AttentionReport {
    /// The per-tensor table rows (certified error, a priori bound and its parts).
    pub fn tensor_rows(&self) -> Vec<Vec<String>> {
        self.tensors
            .iter()
            .map(|t| {
                vec![
                    t.name.clone(),
                    sig3_up(t.certified_max_abs),
                    sig3_up(t.certified_rel_fro),
                    sig3_up(t.a_priori_total),
                    sig3_up(t.a_priori_poly),
                    sig3_up(t.a_priori_rounding),
                    sig3_up(t.reference_radius),
                    if t.a_priori_consistent {
                        "yes".into()
                    } else {
                        "NO".into()
                    },
                ]
            })
            .collect()
    }

    /// Column names of [`Self::tensor_rows`].
    pub const TENSOR_HEADERS: [&'static str; 8] = [
        "tensor",
        "certified max abs error",
        "certified rel. error (Frobenius)",
        "a priori bound",
        "polynomial part",
        "rounding part",
        "reference radius",
        "consistent",
    ];

    /// The rows chart: each tensor's certified error along the rows (log x: row
    /// index, so a causal mask's early rows stand apart) with its a priori bound.
    pub fn rows_chart(&self) -> crate::plot::LogLogChart {
        use crate::plot::{LogLogChart, Series, Style};
        let mut series = Vec::new();
        for p in &self.row_profiles {
            // Bucket ends (exclusive), so at least 1 on the log axis.
            let pts = |v: &[f64]| {
                p.rows
                    .iter()
                    .map(|&r| r as f64)
                    .zip(v.iter().copied())
                    .collect()
            };
            series.push(Series {
                name: format!("{}: certified error", p.name),
                points: pts(&p.certified),
                style: Style::Line,
            });
            series.push(Series {
                name: format!("{}: a priori bound", p.name),
                points: pts(&p.a_priori),
                style: Style::Reference,
            });
        }
        LogLogChart {
            title: format!(
                "Certified error along the rows ({} heads, n = {}, mask {})",
                self.shape[0], self.shape[1], self.mask
            ),
            x_label: "row (max over heads, columns and a log-spaced bucket of rows)".into(),
            y_label: "max |y - exact|".into(),
            series,
        }
    }

    /// [`AttentionReport::rows_chart`] as an SVG document.
    pub fn render_plot(&self) -> Result<String> {
        self.rows_chart().render_svg(900, 560)
    }

    /// Writes `rows.svg` ([`AttentionReport::rows_chart`]) into `dir`; returns its path.
    pub fn write_plot(&self, dir: &std::path::Path) -> Result<std::path::PathBuf> {
        let path = dir.join("rows.svg");
        self.rows_chart().write_svg(&path, 900, 560)?;
        Ok(path)
    }

    /// The wall times, kept apart from the reproducible report (`timings.json`).
    pub fn timings(&self) -> serde_json::Value {
        serde_json::json!({
            "seconds_poly_forward": self.seconds_poly_forward,
            "seconds_poly_backward": self.seconds_poly_backward,
            "seconds_reference": self.seconds_reference,
        })
    }

    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        let [h, n_q, n_k, d, d_v] = self.shape;
        let reference = match self.reference {
            ReferenceUsed::Mpfr { prec } => format!("MPFR interval enclosures at {prec} bits"),
            ReferenceUsed::F64WithBound => {
                "the exact engine in f64 with its a priori rounding bound".to_string()
            }
        };
        let mut s = format!(
            "# Certified error report\n\nPolynomial engine, {} inputs, {h} head(s), n_q = {n_q}, n_k = {n_k}, d = {d}, d_v = {d_v}, mask {}, gradient {}.\nReference: {reference}.\nWall times are in `timings.json` (everything else here is the same for the same inputs, flags and version).\n\n",
            self.dtype,
            self.mask,
            self.gradient.as_deref().unwrap_or("(forward only)"),
        );
        if let Some(h) = &self.hidden_keys {
            s.push_str(&format!(
                "Key padding (an additive bias hiding whole keys, applied by the engine and both references): hidden keys per head {h:?}.\n\n"
            ));
        }
        s.push_str("Every error is certified: an upper bound on the distance to the exact real result. *Consistent* means no entry's certified lower bound on its error exceeds its a priori bound.\n\n");
        s.push_str(&markdown_table(&Self::TENSOR_HEADERS, &self.tensor_rows()));
        s.push_str("\n![certified error along the rows](rows.svg)\n");
        s.push_str("\n## Heads\n\n");
        let rows: Vec<Vec<String>> = self
            .heads
            .iter()
            .map(|hr| {
                let r = &hr.regime;
                vec![
                    hr.head.to_string(),
                    sig3_up(r.radius),
                    sig3_up(r.entry_bound),
                    sig3(r.sqrt_ln_n),
                    if r.bounded_entries() {
                        "B < sqrt(ln n)".into()
                    } else {
                        "B >= sqrt(ln n)".into()
                    },
                    r.degree.to_string(),
                    r.rank.to_string(),
                    sig3_up(r.eps_poly),
                    sig3(r.predicted_speedup()),
                ]
            })
            .collect();
        s.push_str(&markdown_table(
            &[
                "head",
                "R",
                "B",
                "sqrt(ln n)",
                "side",
                "degree",
                "rank",
                "eps_P",
                "predicted speedup",
            ],
            &rows,
        ));
        s
    }
}
