//! Certified errors of exact-engine results against the MPFR reference (`polyattn-spec`).
//!
//! For a computed value `y` and an enclosure `[lo, hi]` of the exact real result, the
//! certified error is `max(|y - lo|, |y - hi|)`, rounded up: the exact result lies in
//! `[lo, hi]`, so `|y - exact|` cannot exceed it (docs/math.md §5.3).
//!
//! [`certify_row`] checks one query row of one head at the cost of that row alone: a
//! row's output, log-sum-exp and dQ depend only on that query, the keys it sees and
//! its `dO` row, so the reference solves the one-row problem with the visible keys and
//! no mask, which is the same mathematical object.

use nalgebra::DMatrix;
use polyattn::attention::Problem;
use polyattn::error::{Error, Result};
use polyattn::scalar::Real;
use polyattn_spec::attention as spec;
use polyattn_spec::Interval;

/// Certified errors of one output row.
#[derive(Clone, Debug, PartialEq)]
pub struct RowCertificate {
    /// The query row.
    pub row: usize,
    /// How many keys the row sees.
    pub keys: usize,
    /// Certified bound on max_c |O_ic(computed) - O_ic(exact)|.
    pub o_err: f64,
    /// max_c |O_ic| (for relative reading).
    pub o_max: f64,
    /// Certified bound on |lse_i(computed) - lse_i(exact)| (0 for a fully masked row
    /// whose computed lse is `-inf`, as defined).
    pub lse_err: f64,
    /// Certified bound on max_c |dQ_ic(computed) - dQ_ic(exact)|.
    pub dq_err: f64,
    /// max_c |dQ_ic|.
    pub dq_max: f64,
}

/// The computed values of one row to be certified.
#[derive(Clone, Copy, Debug)]
pub struct RowValues<'a, T> {
    /// O row, `d_v` values.
    pub o: &'a [T],
    /// lse of the row.
    pub lse: T,
    /// dQ row, `d` values.
    pub dq: &'a [T],
    /// dO row used for dQ, `d_v` values.
    pub d_o: &'a [T],
}

/// Certifies row `row` of problem `p` against an MPFR enclosure at `prec` bits.
pub fn certify_row<T: Real>(
    p: &Problem<'_, T>,
    row: usize,
    vals: RowValues<'_, T>,
    prec: u32,
) -> Result<RowCertificate> {
    if p.bias.is_some() {
        // The one-row problem below has no bias: refuse rather than certify another one.
        return Err(Error::InvalidParameter {
            name: "bias",
            value: "present".into(),
            reason: "certify_row certifies unbiased attention rows only".into(),
        });
    }
    let range = p.key_range(row);
    let keys = range.len();
    let (d, d_v) = (p.d(), p.d_v());
    let o_max = max_abs(vals.o);
    let dq_max = max_abs(vals.dq);
    if keys == 0 {
        // Fully masked: defined as O = 0, lse = -inf, dQ = 0; the error is the deviation.
        let lse_err = if vals.lse == T::NEG_INFINITY {
            0.0
        } else {
            f64::INFINITY
        };
        return Ok(RowCertificate {
            row,
            keys,
            o_err: o_max,
            o_max,
            lse_err,
            dq_err: dq_max,
            dq_max,
        });
    }
    let to64 = |s: &[T]| s.iter().map(|x| x.to_f64()).collect::<Vec<_>>();
    let sub = spec::Problem {
        q: DMatrix::from_row_slice(1, d, &to64(p.q.row(row))),
        k: DMatrix::from_row_slice(keys, d, &to64(p.k.rows_slice(range.start, range.end))),
        v: DMatrix::from_row_slice(keys, d_v, &to64(p.v.rows_slice(range.start, range.end))),
        tau: p.tau.to_f64(),
        mask: spec::Mask::None,
        softcap: None,
    };
    let spec_err = |e: spec::SpecError| Error::InvalidParameter {
        name: "reference problem",
        value: format!("row {row}"),
        reason: format!("{e:?}"),
    };
    let fwd = spec::forward(&sub, prec).map_err(spec_err)?;
    let d_o = DMatrix::from_row_slice(1, d_v, &to64(vals.d_o));
    let grads = spec::backward(&sub, &d_o, prec).map_err(spec_err)?;
    let lse_err = match &fwd.lse[0] {
        Some(iv) => certified_error(iv, vals.lse.to_f64()),
        None => f64::INFINITY,
    };
    Ok(RowCertificate {
        row,
        keys,
        o_err: max_certified_error(fwd.o.iter(), vals.o),
        o_max,
        lse_err,
        dq_err: max_certified_error(grads.dq.iter(), vals.dq),
        dq_max,
    })
}

/// `max(|y - lo|, |y - hi|)` for the enclosure `iv`, rounded up to an f64 bound.
pub fn certified_error(iv: &Interval, y: f64) -> f64 {
    if !y.is_finite() {
        return f64::INFINITY;
    }
    // lo_f64 rounds down and hi_f64 rounds up, so [lo, hi] still encloses the exact
    // value. A non-zero f64 difference may have been rounded down, hence one step up;
    // a zero difference is exact.
    let (lo, hi) = (iv.lo_f64(), iv.hi_f64());
    let e = (y - lo).abs().max((hi - y).abs());
    if e == 0.0 {
        0.0
    } else {
        e.next_up()
    }
}

fn max_certified_error<'a, T: Real>(ivs: impl Iterator<Item = &'a Interval>, ys: &[T]) -> f64 {
    // One-row matrices: nalgebra's column-major iteration is the row order.
    ivs.zip(ys)
        .map(|(iv, y)| certified_error(iv, y.to_f64()))
        .fold(0.0, f64::max)
}

fn max_abs<T: Real>(x: &[T]) -> f64 {
    x.iter().map(|v| v.to_f64().abs()).fold(0.0, f64::max)
}
