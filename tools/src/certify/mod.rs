//! Certified errors: how far computed results are, provably, from the exact
//! real-number answer (docs/math.md §5.3).
//!
//! The f64 enclosure of exact attention that scales to any n (the exact engine plus
//! its a priori rounding bound) is the engine's own:
//! [`polyattn::attention::exact::reference`].
//!
//! - [`rows`] (feature `certify`): single rows against the MPFR enclosures of
//!   `polyattn-spec`, at the cost of those rows alone.
//! - [`report`]: a polynomial-engine run certified tensor by tensor against the best
//!   available reference, split into the polynomial and rounding parts, as JSON and
//!   Markdown (`polyattn certify`).
//! - [`candidate`]: anyone's attention results (a candidate file) certified against
//!   exact attention, with FlashAttention's acceptance rule against the plain
//!   low-precision baseline of [`plain`] (`polyattn certify --candidate`).
//! - [`model_report`]: a whole model run (loss and every gradient) against the MPFR
//!   enclosure of the model ([`model_ref`], feature `certify`) or the f64 exact engine
//!   (`polyattn certify --weights`).

pub mod candidate;
#[cfg(feature = "certify")]
pub mod model_ref;
pub mod model_report;
pub mod plain;
pub mod report;
#[cfg(feature = "certify")]
pub mod rows;

#[cfg(feature = "certify")]
pub use rows::{certified_error, certify_row, RowCertificate, RowValues};

/// The spec crate's mask (the MPFR reference's) for the engine's.
#[cfg(feature = "certify")]
pub fn spec_mask(m: polyattn::attention::Mask) -> polyattn_spec::attention::Mask {
    use polyattn::attention::{Alignment, Mask};
    use polyattn_spec::attention::Mask as Spec;
    match m {
        Mask::None => Spec::None,
        Mask::CausalTopLeft => Spec::CausalTopLeft,
        Mask::CausalBottomRight => Spec::CausalBottomRight,
        Mask::Window(w) => Spec::Window {
            left: w.left,
            right: w.right,
            bottom_right: w.align == Alignment::BottomRight,
        },
    }
}
