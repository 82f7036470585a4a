//! Log-log charts written as SVG files, for the sweeps' reports: several named series
//! (lines, points or both), a title and axis labels. Built on `plotters`' SVG backend.

use plotters::element::{Drawable, PointCollection};
use plotters::prelude::*;
use plotters_backend::DrawingErrorKind;
use polyattn::error::{Error, Result};
use std::path::Path;

/// How a series is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Points joined by a line.
    Line,
    /// Points only.
    Points,
    /// A dashed-looking reference line (drawn thinner, without markers).
    Reference,
}

/// One named series of `(x, y)` points; points with a non-positive or non-finite
/// coordinate cannot be shown on log axes and are dropped.
#[derive(Clone, Debug)]
pub struct Series {
    /// The legend entry.
    pub name: String,
    /// The points.
    pub points: Vec<(f64, f64)>,
    /// How to draw it.
    pub style: Style,
}

/// A log-log chart.
#[derive(Clone, Debug)]
pub struct LogLogChart {
    /// The caption.
    pub title: String,
    /// The x axis label.
    pub x_label: String,
    /// The y axis label.
    pub y_label: String,
    /// The series, drawn in order.
    pub series: Vec<Series>,
}

/// A legend swatch at `at`: an 18-pixel line (unless a point series) and the series'
/// marker in its middle (0 circle, 1 triangle, 2 square; none for references).
#[derive(Clone, Copy)]
struct Swatch {
    at: (i32, i32),
    color: RGBColor,
    width: u32,
    line: bool,
    marker: Option<usize>,
}

impl<'a> PointCollection<'a, (i32, i32)> for &'a Swatch {
    type Point = &'a (i32, i32);
    type IntoIter = std::iter::Once<&'a (i32, i32)>;
    fn point_iter(self) -> Self::IntoIter {
        std::iter::once(&self.at)
    }
}

impl<DB: DrawingBackend> Drawable<DB> for Swatch {
    fn draw<I: Iterator<Item = (i32, i32)>>(
        &self,
        mut points: I,
        backend: &mut DB,
        _: (u32, u32),
    ) -> std::result::Result<(), DrawingErrorKind<DB::ErrorType>> {
        let Some((x, y)) = points.next() else {
            return Ok(());
        };
        let style = ShapeStyle {
            color: self.color.to_rgba(),
            filled: true,
            stroke_width: self.width,
        };
        if self.line {
            backend.draw_line((x, y), (x + 18, y), &style)?;
        }
        match self.marker {
            Some(0) => backend.draw_circle((x + 9, y), 3, &style, true)?,
            Some(1) => backend.fill_polygon(
                vec![(x + 9, y - 4), (x + 5, y + 3), (x + 13, y + 3)],
                &style,
            )?,
            Some(_) => backend.draw_rect((x + 6, y - 3), (x + 12, y + 3), &style, true)?,
            None => {}
        }
        Ok(())
    }
}

/// Reference lines: greys, darkest first.
const REFERENCE_GREYS: [RGBColor; 3] = [
    RGBColor(60, 60, 60),
    RGBColor(120, 120, 120),
    RGBColor(170, 170, 170),
];

/// A colour-blind-safe palette (Okabe-Ito), cycled (then the marker changes).
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
];

/// The widest span a log axis shows, in decades: values further below the largest one
/// are drawn at the axis floor (and the legend says how many).
const MAX_DECADES: f64 = 60.0;

/// A log axis: the drawn range and the floor at which zeros and values too small to
/// show (subnormals, or more than [`MAX_DECADES`] below the top) are drawn.
#[derive(Clone, Debug, PartialEq)]
struct LogAxis {
    range: std::ops::Range<f64>,
    floor: f64,
}

/// The axis for `vals` (positive finite values only; zeros and non-finite values are
/// the caller's to count). Computed in log10 so that no ratio can overflow: the
/// range is bounded for any input, including subnormals, a single value, all-equal
/// values or none at all.
fn log_axis(vals: impl Iterator<Item = f64>) -> LogAxis {
    let (lo, hi) = vals
        .filter(|v| v.is_finite() && *v >= f64::MIN_POSITIVE)
        .fold((f64::INFINITY, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    if hi <= 0.0 {
        // Nothing positive to show: a unit decade, the floor at its bottom.
        return LogAxis {
            range: 0.05..20.0,
            floor: 0.1,
        };
    }
    let (lh, ll) = (hi.log10(), lo.log10().max(hi.log10() - MAX_DECADES));
    // The floor sits one decade under the smallest drawn value.
    let lf = ll - 1.0;
    let span = (lh - lf).max(1.0);
    let pad = 0.05 * span;
    // Both ends finite: 10^b overflows past 10^308.25.
    let (a, b) = (lf - pad, (lh + pad).min(f64::MAX.log10() - 1e-3));
    LogAxis {
        range: 10f64.powf(a)..10f64.powf(b),
        floor: 10f64.powf(lf),
    }
}

/// A short tick label: plain between 0.01 and 10^4, else `1e-5` style with up to
/// three significant digits (no binary-rounding residue like 9.99999e-6).
fn tick(v: f64) -> String {
    let a = v.abs();
    if (0.01..1e4).contains(&a) {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        let e = a.log10().floor() as i32;
        let m = v / 10f64.powi(e);
        let mut s = format!("{m:.2}");
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
        if s == "10" {
            return format!("1e{}", e + 1);
        }
        format!("{s}e{e}")
    }
}

/// Where the legend covers the fewest points: each corner's box (the legend's share
/// of the plot, `w` of its width and `h` of its height, as fractions on the log axes)
/// is scored by the points inside it; upper right wins ties.
fn legend_corner(
    pts: &[(f64, f64)],
    (xr, yr): (&std::ops::Range<f64>, &std::ops::Range<f64>),
    (w, h): (f64, f64),
) -> SeriesLabelPosition {
    let frac = |v: f64, r: &std::ops::Range<f64>| (v / r.start).ln() / (r.end / r.start).ln();
    let inside = |left: bool, top: bool| {
        pts.iter()
            .filter(|&&(x, y)| {
                let (fx, fy) = (frac(x, xr), frac(y, yr));
                let in_x = if left { fx <= w } else { fx >= 1.0 - w };
                let in_y = if top { fy >= 1.0 - h } else { fy <= h };
                in_x && in_y
            })
            .count()
    };
    [
        (SeriesLabelPosition::UpperRight, false, true),
        (SeriesLabelPosition::UpperLeft, true, true),
        (SeriesLabelPosition::LowerRight, false, false),
        (SeriesLabelPosition::LowerLeft, true, false),
    ]
    .into_iter()
    .min_by_key(|&(_, left, top)| inside(left, top))
    .map_or(SeriesLabelPosition::UpperRight, |c| c.0)
}

/// How one series' points land on the axes: the drawable points (values below the
/// axis floor moved onto it) and the counts the legend reports.
struct Placed {
    points: Vec<(f64, f64)>,
    at_floor: usize,
    omitted: usize,
}

fn place(points: &[(f64, f64)], x: &LogAxis, y: &LogAxis) -> Placed {
    let mut out = Placed {
        points: Vec::with_capacity(points.len()),
        at_floor: 0,
        omitted: 0,
    };
    let low = |v: f64, ax: &LogAxis| v < ax.floor * 10.0 * (1.0 - 1e-12);
    for &(px, py) in points {
        // x: the abscissa (n, a row index) must be positive and finite to be placed.
        if !(px.is_finite() && px > 0.0 && py.is_finite() && py >= 0.0) {
            out.omitted += 1;
            continue;
        }
        let px = if low(px, x) { x.floor } else { px };
        if py == 0.0 || low(py, y) {
            out.at_floor += 1;
            out.points.push((px, y.floor));
        } else {
            out.points.push((px, py));
        }
    }
    out
}

/// The legend entry: the series' name plus what was not drawn as it is.
fn legend_name(name: &str, p: &Placed, y_floor: f64) -> String {
    let mut s = name.to_string();
    if p.at_floor > 0 {
        s.push_str(&format!(
            " ({} zero or below {} drawn at {})",
            p.at_floor,
            tick(y_floor * 10.0),
            tick(y_floor)
        ));
    }
    if p.omitted > 0 {
        s.push_str(&format!(
            " ({} non-finite or negative not drawn)",
            p.omitted
        ));
    }
    s
}

impl LogLogChart {
    /// The chart as an SVG document of `width x height` pixels, the legend in the
    /// corner where it hides the fewest points. Takes any data in bounded time and
    /// memory: zeros and values too small for the axis are drawn at its floor,
    /// non-finite and negative values are left out, and the legend says both per
    /// series; a chart with no drawable point is drawn empty, saying so in its title.
    pub fn render_svg(&self, width: u32, height: u32) -> Result<String> {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        let all = || self.series.iter().flat_map(|s| s.points.iter().copied());
        let xa = log_axis(all().filter(|p| positive(p.1)).map(|p| p.0));
        let ya = log_axis(all().filter(|p| positive(p.0)).map(|p| p.1));
        let placed: Vec<Placed> = self
            .series
            .iter()
            .map(|s| place(&s.points, &xa, &ya))
            .collect();
        let drawn: Vec<(f64, f64)> = placed.iter().flat_map(|p| p.points.clone()).collect();
        let title = if drawn.is_empty() {
            format!("{} (no drawable points)", self.title)
        } else {
            self.title.clone()
        };
        let err = |e: &dyn std::fmt::Display| Error::InvalidParameter {
            name: "chart",
            value: self.title.clone(),
            reason: e.to_string(),
        };
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| err(&e))?;
            let mut chart = ChartBuilder::on(&root)
                .caption(&title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(42)
                .y_label_area_size(64)
                .build_cartesian_2d(xa.range.clone().log_scale(), ya.range.clone().log_scale())
                .map_err(|e| err(&e))?;
            chart
                .configure_mesh()
                .x_desc(&self.x_label)
                .y_desc(&self.y_label)
                .x_label_formatter(&|v| tick(*v))
                .y_label_formatter(&|v| tick(*v))
                .draw()
                .map_err(|e| err(&e))?;
            // Data series take the palette in order; reference lines take greys of
            // their own, so no reference shares a colour with data.
            let (mut data_i, mut ref_i) = (0usize, 0usize);
            for (s, p) in self.series.iter().zip(&placed) {
                let (color, i) = if s.style == Style::Reference {
                    ref_i += 1;
                    (REFERENCE_GREYS[(ref_i - 1) % REFERENCE_GREYS.len()], 0)
                } else {
                    data_i += 1;
                    (PALETTE[(data_i - 1) % PALETTE.len()], data_i - 1)
                };
                // Past the palette's length the marker changes, so no two series look
                // alike: circles, then triangles, then squares.
                let shape = i / PALETTE.len();
                let marker =
                    move |q: (f64, f64), r: i32| -> DynElement<'static, SVGBackend, (f64, f64)> {
                        match shape % 3 {
                            0 => Circle::new(q, r, color.filled()).into_dyn(),
                            1 => TriangleMarker::new(q, r + 1, color.filled()).into_dyn(),
                            _ => Rectangle::new([q, q], color.filled()).into_dyn(),
                        }
                    };
                let width = if s.style == Style::Reference { 1 } else { 2 };
                let anno = match s.style {
                    Style::Points => chart.draw_series(p.points.iter().map(|&q| marker(q, 3))),
                    _ => chart
                        .draw_series(LineSeries::new(p.points.clone(), color.stroke_width(width))),
                }
                .map_err(|e| err(&e))?;
                let style = s.style;
                // The legend's swatch shows what the plot shows: the marker (of the
                // series' shape) for points, the line with its marker for lines, the
                // thin line alone for references.
                let swatch = Swatch {
                    at: (0, 0),
                    color,
                    width,
                    line: style != Style::Points,
                    marker: (style != Style::Reference).then_some(shape % 3),
                };
                anno.label(legend_name(&s.name, p, ya.floor))
                    .legend(move |at| Swatch { at, ..swatch });
                if s.style == Style::Line {
                    chart
                        .draw_series(p.points.iter().map(|&q| marker(q, 2)))
                        .map_err(|e| err(&e))?;
                }
            }
            // The legend: up to ~45% of the width (long names), a line per series.
            let h = (0.06 * self.series.len() as f64 + 0.04).min(0.9);
            let corner = legend_corner(&drawn, (&xa.range, &ya.range), (0.45, h));
            if !self.series.is_empty() {
                chart
                    .configure_series_labels()
                    .position(corner)
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .draw()
                    .map_err(|e| err(&e))?;
            }
            root.present().map_err(|e| err(&e))?;
        }
        Ok(svg)
    }

    /// Writes [`LogLogChart::render_svg`] to `path` atomically
    /// ([`polyattn::output::write_file`]).
    pub fn write_svg(&self, path: &Path, width: u32, height: u32) -> Result<()> {
        let svg = self.render_svg(width, height)?;
        polyattn::output::write_file(path, svg.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legend_goes_where_it_hides_fewest_points() {
        let r = 1.0..100.0;
        let corner = |pts: &[(f64, f64)]| legend_corner(pts, (&r, &r), (0.4, 0.3));
        // Nothing to hide: upper right.
        assert!(matches!(corner(&[]), SeriesLabelPosition::UpperRight));
        // Points crowd the upper right: the first empty corner in order (upper left).
        let crowded = [(90.0, 90.0), (80.0, 95.0), (99.0, 70.0)];
        assert!(matches!(corner(&crowded), SeriesLabelPosition::UpperLeft));
        // Both upper corners taken: lower right.
        let tops = [(90.0, 90.0), (1.5, 90.0)];
        assert!(matches!(corner(&tops), SeriesLabelPosition::LowerRight));
    }

    #[test]
    fn ticks_are_short() {
        assert_eq!(tick(1e-5 * (1.0 - 1e-15)), "1e-5");
        assert_eq!(tick(2.5e-7), "2.5e-7");
        assert_eq!(tick(0.125), "0.125");
        assert_eq!(tick(1000.0), "1000");
        assert_eq!(tick(65536.0), "6.55e4");
    }

    #[test]
    fn writes_an_svg_with_every_series_named() {
        let dir = std::env::temp_dir().join(format!("polyattn-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.svg");
        let chart = LogLogChart {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![
                Series {
                    name: "alpha".into(),
                    points: vec![(1.0, 2.0), (10.0, 20.0), (0.0, 5.0)],
                    style: Style::Line,
                },
                Series {
                    name: "beta".into(),
                    points: vec![(2.0, 1.0), (20.0, 3.0)],
                    style: Style::Points,
                },
            ],
        };
        chart.write_svg(&path, 400, 300).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("alpha") && svg.contains("beta"));
        // Nothing to draw: still a chart, saying so.
        let empty = LogLogChart {
            series: vec![],
            ..chart
        };
        let svg = empty.render_svg(400, 300).unwrap();
        assert!(svg.contains("no drawable points"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn one(points: Vec<(f64, f64)>) -> LogLogChart {
        LogLogChart {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![Series {
                name: "s".into(),
                points,
                style: Style::Line,
            }],
        }
    }

    /// Every awkward data set renders, in bounded time and size (before the log-space
    /// axis, a subnormal or zero error made the axis run to infinity and the tick loop
    /// never ended: `polyattn certify --mask causal` grew past 20 GB).
    #[test]
    fn any_data_renders_bounded() {
        let tiny = 5e-324;
        let cases: Vec<Vec<(f64, f64)>> = vec![
            vec![(1.0, 0.0), (2.0, 1e-3), (3.0, 0.0)],
            vec![(1.0, tiny), (2.0, 1.0)],
            vec![(1.0, tiny)],
            vec![(1.0, 0.0), (2.0, 0.0)],
            vec![(1.0, f64::INFINITY), (2.0, f64::NAN), (3.0, 1.0)],
            vec![(1.0, 7.0)],
            vec![(1.0, 7.0), (2.0, 7.0), (3.0, 7.0)],
            vec![
                (0.0, 1.0),
                (f64::NAN, 1.0),
                (1e300, 1e300),
                (1e-300, 1e-300),
            ],
            vec![(1.0, -1.0)],
            vec![(1.0, f64::MAX)],
            vec![(1.0, 1e306), (2.0, 1e200)],
            vec![],
        ];
        for pts in cases {
            let start = std::time::Instant::now();
            let svg = one(pts.clone()).render_svg(400, 300).unwrap();
            // A 400 x 300 chart with at most a few points and a bounded number of
            // ticks: a few tens of kB; 1 MB would mean a runaway tick loop.
            assert!(svg.len() < 1 << 20, "{pts:?}: {} bytes", svg.len());
            assert!(start.elapsed().as_secs() < 30, "{pts:?}");
        }
    }

    #[test]
    fn zeros_are_drawn_at_the_floor_and_said_so() {
        let svg = one(vec![(1.0, 0.0), (2.0, 1e-3), (3.0, 2e-3)])
            .render_svg(400, 300)
            .unwrap();
        assert!(svg.contains("1 zero or below"), "legend names the floor");
        let axis = log_axis([1e-3, 2e-3].into_iter());
        assert!(axis.floor < 1e-3 && axis.range.start < axis.floor);
        let svg = one(vec![(1.0, f64::NAN), (2.0, 1.0)])
            .render_svg(400, 300)
            .unwrap();
        assert!(svg.contains("1 non-finite or negative not drawn"));
    }

    #[test]
    fn axis_is_bounded_for_extreme_spans() {
        let a = log_axis([5e-324, 1e308].into_iter());
        assert!(a.range.start > 0.0 && a.range.end.is_finite());
        assert!(a.range.end / a.range.start < 1e70, "{a:?}");
        let a = log_axis(std::iter::empty());
        assert!(a.range.start > 0.0 && a.range.end.is_finite());
    }
}
