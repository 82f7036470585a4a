//! The report and plot target (`report_plot`): arbitrary chart data (zeros,
//! subnormals, infinities, NaN, single points, all-equal series, empty series, huge
//! spans) through the SVG renderer, and a small attention problem whose inputs may be
//! zero, subnormal or scaled to nothing through `certify` (the f64 reference), its
//! Markdown, its JSON and its rows plot. Property: every call returns (a value or a
//! typed error) in bounded time, and every SVG is under [`MAX_SVG_BYTES`].

use super::{pick, Outcome, Violation};
use crate::certify::report::{certify_attention, ReferenceChoice};
use crate::plot::{LogLogChart, Series, Style};
use arbitrary::{Arbitrary, Unstructured};
use polyattn::attention::poly::{Accuracy, GradientKind, PolyConfig};
use polyattn::attention::Mask;
use polyattn::tensor::Tensor3;

/// The largest SVG a chart of a few series may produce: a runaway tick loop or axis
/// shows up as far more.
pub const MAX_SVG_BYTES: usize = 1 << 20;

/// Values chosen to reach every branch of the axis code.
const SPECIAL: [f64; 12] = [
    0.0,
    -0.0,
    5e-324,
    2.2e-308,
    1e-300,
    1.0,
    7.0,
    1e300,
    f64::MAX,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::NAN,
];

/// One fuzz input.
#[derive(Clone, Debug)]
pub struct ReportPlotInput {
    /// Series of (x, y) points.
    pub series: Vec<Vec<(f64, f64)>>,
    /// The attention problem: heads, n, d, and how Q is drawn.
    pub heads: usize,
    /// Sequence length.
    pub n: usize,
    /// Head dimension.
    pub d: usize,
    /// Q's scale (0 and subnormal included).
    pub q_scale: f64,
    /// The score scale tau.
    pub tau: f64,
    /// The mask.
    pub mask: Mask,
}

fn value(u: &mut Unstructured<'_>) -> arbitrary::Result<f64> {
    Ok(if u.arbitrary::<bool>()? {
        pick(u, &SPECIAL)?
    } else {
        u.arbitrary::<f64>()?
    })
}

impl<'a> Arbitrary<'a> for ReportPlotInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let n_series = u.int_in_range(0..=10)?;
        let mut series = Vec::with_capacity(n_series);
        for _ in 0..n_series {
            let len = u.int_in_range(0..=12)?;
            let mut s = Vec::with_capacity(len);
            for _ in 0..len {
                s.push((value(u)?, value(u)?));
            }
            series.push(s);
        }
        Ok(Self {
            series,
            heads: u.int_in_range(1..=2)?,
            n: u.int_in_range(1..=40)?,
            d: u.int_in_range(1..=4)?,
            q_scale: pick(u, &[0.0, 5e-324, 1e-310, 1e-12, 0.1, 0.5, 1.0])?,
            tau: pick(u, &[0.0, -0.5, 1e-300, 0.5, 1.0])?,
            mask: pick(
                u,
                &[Mask::None, Mask::CausalTopLeft, Mask::CausalBottomRight],
            )?,
        })
    }
}

fn bounded_svg(what: &str, svg: &str) -> Result<(), Violation> {
    if svg.len() > MAX_SVG_BYTES {
        return Err(Violation(format!("{what}: SVG of {} bytes", svg.len())));
    }
    Ok(())
}

/// The property (see the module doc).
pub fn check(x: &ReportPlotInput) -> Result<Outcome, Violation> {
    let chart = LogLogChart {
        title: "fuzz".into(),
        x_label: "x".into(),
        y_label: "y".into(),
        series: x
            .series
            .iter()
            .enumerate()
            .map(|(i, p)| Series {
                name: format!("s{i}"),
                points: p.clone(),
                style: [Style::Line, Style::Points, Style::Reference][i % 3],
            })
            .collect(),
    };
    match chart.render_svg(640, 400) {
        Ok(svg) => bounded_svg("chart", &svg)?,
        Err(e) => return Err(Violation(format!("chart rendering failed: {e}"))),
    }
    let mut out = Outcome {
        n: Some(x.n),
        ..Outcome::default()
    };
    let gen = |seed: u64, scale: f64| {
        let mut rng = polyattn::rng::SplitMix64::new(seed);
        Tensor3::from_vec(
            x.heads,
            x.n,
            x.d,
            rng.normal_vec(x.heads * x.n * x.d, 1.0)
                .into_iter()
                .map(|v| v * scale)
                .collect(),
        )
    };
    let (q, k, v, d_o) = match (gen(1, x.q_scale), gen(2, 0.3), gen(3, 1.0), gen(4, 1.0)) {
        (Ok(q), Ok(k), Ok(v), Ok(d_o)) => (q, k, v, d_o),
        _ => return Err(Violation("generator failed on a valid shape".into())),
    };
    let cfg = PolyConfig {
        scale: Some(x.tau),
        mask: x.mask,
        accuracy: Accuracy::Eps(1e-6),
        ..PolyConfig::default()
    };
    let report = match certify_attention(
        &q,
        &k,
        &v,
        Some(&d_o),
        &cfg,
        GradientKind::Substituted,
        ReferenceChoice::F64,
    ) {
        Ok(r) => r,
        Err(e) => {
            out.refused = Some(e.to_string());
            return Ok(out);
        }
    };
    let _ = report.to_markdown();
    serde_json::to_string(&report).map_err(|e| Violation(format!("report JSON: {e}")))?;
    let svg = report
        .render_plot()
        .map_err(|e| Violation(format!("rows plot failed: {e}")))?;
    bounded_svg("rows plot", &svg)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_queries_and_causal_rows_render() {
        for mask in [Mask::CausalTopLeft, Mask::CausalBottomRight, Mask::None] {
            let x = ReportPlotInput {
                series: vec![vec![(1.0, 0.0), (2.0, 5e-324), (3.0, f64::NAN)], vec![]],
                heads: 2,
                n: 30,
                d: 4,
                q_scale: 0.0,
                tau: 0.5,
                mask,
            };
            check(&x).unwrap();
        }
    }
}
