//! Plain formatting shared by the reports and the sweeps: Markdown and terminal
//! tables, numbers to three significant digits, and the same rounded outwards for
//! certified bounds (an upper bound printed is never below the bound computed, a lower
//! bound never above it).

/// A Markdown table: a header row, the alignment row, then the rows.
pub fn markdown_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    // A `|` inside a cell (a norm like ||x||) would end the cell: escape it.
    let cell = |c: &str| c.replace('|', "\\|");
    let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
    let mut s = line(headers.iter().map(|h| cell(h)).collect());
    s.push('|');
    s.push_str(&" ---: |".repeat(headers.len()));
    s.push('\n');
    for r in rows {
        s.push_str(&line(r.iter().map(|c| cell(c)).collect()));
    }
    s
}

/// The same rows as a fixed-width plain-text table for the terminal.
pub fn text_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (wi, c) in w.iter_mut().zip(r) {
            *wi = (*wi).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (c, wi) in cells.iter().zip(&w) {
            s.push_str(&format!("{c:>wi$}  "));
        }
        s.trim_end().to_string() + "\n"
    };
    let mut s = line(headers.to_vec());
    for r in rows {
        s.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    s
}

/// `x` with three significant digits (plain notation between 0.01 and 10^6).
pub fn sig3(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let a = x.abs();
    if (0.01..1e6).contains(&a) {
        let decimals = (2 - a.log10().floor() as i32).max(0) as usize;
        format!("{x:.decimals$}")
    } else {
        format!("{x:.2e}")
    }
}

/// An upper bound `x` with three significant digits, rounded up: the printed number is
/// never below `x`, so a certified upper bound stays an upper bound when read off a
/// report. Non-finite and zero values print as [`sig3`] does.
pub fn sig3_up(x: f64) -> String {
    sig3_directed(x, f64::ceil)
}

/// A lower bound `x` with three significant digits, rounded down (the printed number
/// is never above `x`).
pub fn sig3_down(x: f64) -> String {
    sig3_directed(x, f64::floor)
}

/// Three significant digits of `x` rounded by `round` (ceil or floor) in the last
/// printed digit. The decimal scaling is done in f64 and can be off by an ulp, so the
/// printed value is nudged one unit further in the rounding direction whenever parsing
/// it back would land on the wrong side of `x`.
fn sig3_directed(x: f64, round: fn(f64) -> f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let up = round(0.5) == 1.0;
    let e = x.abs().log10().floor() as i32;
    // The exponent of the last of three significant digits.
    let last = e - 2;
    let unit = 10f64.powi(last);
    let mut m = round(x / unit);
    let ok = |m: f64| {
        let y = m * unit;
        if up {
            y >= x
        } else {
            y <= x
        }
    };
    if !ok(m) {
        m += if up { 1.0 } else { -1.0 };
    }
    let y = m * unit;
    let s = if (0.01..1e6).contains(&y.abs()) {
        let decimals = (-last).max(0) as usize;
        format!("{y:.decimals$}")
    } else {
        format!("{y:.2e}")
    };
    // The formatter rounds to nearest: re-check the printed text and step once more
    // if it fell on the wrong side.
    match s.parse::<f64>() {
        Ok(p) if (up && p < x) || (!up && p > x) => {
            let y2 = (m + if up { 1.0 } else { -1.0 }) * unit;
            if (0.01..1e6).contains(&y2.abs()) {
                let decimals = (-last).max(0) as usize;
                format!("{y2:.decimals$}")
            } else {
                format!("{y2:.3e}")
            }
        }
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_and_numbers() {
        let rows = vec![vec!["1".to_string(), "22".to_string()]];
        assert_eq!(
            markdown_table(&["a", "b"], &rows),
            "| a | b |\n| ---: | ---: |\n| 1 | 22 |\n"
        );
        assert_eq!(text_table(&["a", "b"], &rows), "a   b\n1  22\n");
        assert_eq!(sig3(1234.6), "1235");
        assert_eq!(sig3(0.012345), "0.0123");
        assert_eq!(sig3(12.345), "12.3");
        assert_eq!(sig3(1.5e7), "1.50e7");
    }

    /// Directed rounding: the printed bound is on the safe side of the value, and at
    /// most one unit in the third digit away from it.
    #[test]
    fn directed_rounding_stays_on_the_safe_side() {
        assert_eq!(sig3_up(1.2301), "1.24");
        assert_eq!(sig3_down(1.2399), "1.23");
        assert_eq!(sig3_up(1.23), "1.23");
        assert_eq!(sig3_up(-1.2301), "-1.23");
        assert_eq!(sig3_down(-1.2301), "-1.24");
        assert_eq!(sig3_up(2.0001e-9), "2.01e-9");
        assert_eq!(sig3_up(0.0), "0");
        let mut r = polyattn::rng::SplitMix64::new(3);
        for _ in 0..20_000 {
            let x = r.range(-1.0, 1.0) * 10f64.powi(r.int(0, 60) as i32 - 30);
            let (u, d): (f64, f64) = (sig3_up(x).parse().unwrap(), sig3_down(x).parse().unwrap());
            assert!(u >= x && d <= x, "{x}: {u} {d}");
            let unit = 10f64.powi(x.abs().log10().floor() as i32 - 2);
            assert!(u - x <= 1.01 * unit && x - d <= 1.01 * unit, "{x}: {u} {d}");
        }
    }
}
