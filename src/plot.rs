//! Log-log charts written as SVG files, for the sweeps' reports: several named series
//! (lines, points or both), a title and axis labels. Built on `plotters`' SVG backend.

use crate::error::{Error, Result};
use plotters::prelude::*;
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

/// A colour-blind-safe palette (Okabe-Ito), cycled.
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

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io {
        action: "write",
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// The range of positive values, widened by 10 % each side on the log scale.
fn log_range(vals: impl Iterator<Item = f64>) -> Option<std::ops::Range<f64>> {
    let (lo, hi) = vals.fold((f64::INFINITY, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    if !(lo.is_finite() && hi > 0.0) {
        return None;
    }
    let pad = (hi / lo).powf(0.05).max(1.1);
    Some(lo / pad..hi * pad)
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

impl LogLogChart {
    /// Writes the chart to `path` as an SVG of `width x height` pixels, the legend in
    /// the corner where it hides the fewest points. Fails if no series has a point with
    /// both coordinates positive, or on I/O errors.
    pub fn write_svg(&self, path: &Path, width: u32, height: u32) -> Result<()> {
        let ok = |&(x, y): &(f64, f64)| x > 0.0 && y > 0.0 && x.is_finite() && y.is_finite();
        let pts = || {
            self.series
                .iter()
                .flat_map(|s| s.points.iter().copied().filter(ok))
        };
        let (Some(xr), Some(yr)) = (log_range(pts().map(|p| p.0)), log_range(pts().map(|p| p.1)))
        else {
            return Err(Error::InvalidParameter {
                name: "chart series",
                value: self.title.clone(),
                reason: "no point with positive coordinates to draw on log axes".into(),
            });
        };
        let root = SVGBackend::new(path, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(64)
            .build_cartesian_2d(xr.clone().log_scale(), yr.clone().log_scale())
            .map_err(|e| plot_err(path, e))?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| tick(*v))
            .draw()
            .map_err(|e| plot_err(path, e))?;
        for (i, s) in self.series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let p: Vec<(f64, f64)> = s.points.iter().copied().filter(ok).collect();
            let width = if s.style == Style::Reference { 1 } else { 2 };
            let line = LineSeries::new(p.clone(), color.stroke_width(width));
            let anno = match s.style {
                Style::Points => {
                    chart.draw_series(p.iter().map(|&q| Circle::new(q, 3, color.filled())))
                }
                _ => chart.draw_series(line),
            }
            .map_err(|e| plot_err(path, e))?;
            anno.label(s.name.clone()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
            if s.style == Style::Line {
                chart
                    .draw_series(p.iter().map(|&q| Circle::new(q, 2, color.filled())))
                    .map_err(|e| plot_err(path, e))?;
            }
        }
        let all: Vec<(f64, f64)> = pts().collect();
        // The legend: up to ~45% of the width (long names), a line per series.
        let h = (0.06 * self.series.len() as f64 + 0.04).min(0.9);
        let corner = legend_corner(&all, (&xr, &yr), (0.45, h));
        chart
            .configure_series_labels()
            .position(corner)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| plot_err(path, e))?;
        root.present().map_err(|e| plot_err(path, e))?;
        Ok(())
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
        let empty = LogLogChart {
            series: vec![],
            ..chart
        };
        assert!(empty.write_svg(&path, 400, 300).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
