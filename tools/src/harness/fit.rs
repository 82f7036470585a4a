//! Least-squares fits on log-log data: the slope of log y against log x, the exponent a
//! power law y ~ c x^a would have.

/// Slope and intercept of the least-squares line through (ln x, ln y), over the points
/// with x, y > 0; `None` with fewer than two such points or equal x.
pub fn loglog_slope(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let pts: Vec<(f64, f64)> = points
        .iter()
        .filter(|(x, y)| *x > 0.0 && *y > 0.0)
        .map(|(x, y)| (x.ln(), y.ln()))
        .collect();
    if pts.len() < 2 {
        return None;
    }
    let n = pts.len() as f64;
    let (mx, my) = (
        pts.iter().map(|p| p.0).sum::<f64>() / n,
        pts.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let slope = sxy / sxx;
    Some((slope, my - slope * mx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_power_law() {
        let pts: Vec<(f64, f64)> = (1..8)
            .map(|k| (2f64.powi(k), 3.0 * 2f64.powi(k).powf(-1.5)))
            .collect();
        let (a, c) = loglog_slope(&pts).unwrap();
        assert!(
            (a + 1.5).abs() < 1e-12 && (c.exp() - 3.0).abs() < 1e-9,
            "{a} {c}"
        );
        assert!(loglog_slope(&[(1.0, 1.0)]).is_none());
    }
}
