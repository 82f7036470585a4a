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
    sig3_directed(x, true)
}

/// A lower bound `x` with three significant digits, rounded down (the printed number
/// is never above `x`).
pub fn sig3_down(x: f64) -> String {
    sig3_directed(x, false)
}

/// Three significant digits of `x` rounded up (`up`) or down, decided on the exact
/// decimal expansion of `x`: Rust's `{:.N$e}` formatting is exact, and every f64 has
/// at most 767 significant decimal digits, so `{:.1100e}` is the exact value. The
/// three leading digits, plus one unit in the last when rounding away from zero and
/// any later digit is nonzero, give the directed result with no f64 arithmetic (no
/// `powi` scaling, whose rounding could cross the bound, and no underflow for
/// subnormals). Printed in [`sig3`]'s style.
fn sig3_directed(x: f64, up: bool) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let full = format!("{:.1100e}", x.abs());
    let Some((mant, exp)) = full.split_once('e') else {
        return format!("{x}"); // not reached: `{:e}` always prints an exponent
    };
    let mut e: i32 = exp.parse().unwrap_or(0);
    let digits: Vec<u32> = mant
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| u32::from(b - b'0'))
        .collect();
    let mut m = digits.iter().take(3).fold(0, |a, d| 10 * a + d);
    let inexact = digits.iter().skip(3).any(|&d| d != 0);
    // Rounding up a positive number or down a negative one moves the magnitude up.
    if inexact && up == (x > 0.0) {
        m += 1;
        if m == 1000 {
            m = 100;
            e += 1;
        }
    }
    let sign = if x < 0.0 { "-" } else { "" };
    let ds = m.to_string(); // three digits: the value is ds[0].ds[1..] 10^e
    let body = if (-2..=5).contains(&e) {
        if e >= 2 {
            format!("{ds}{}", "0".repeat(e as usize - 2))
        } else if e >= 0 {
            let k = e as usize + 1;
            format!("{}.{}", &ds[..k], &ds[k..])
        } else {
            format!("0.{}{ds}", "0".repeat((-e - 1) as usize))
        }
    } else {
        format!("{}.{}e{e}", &ds[..1], &ds[1..])
    };
    format!("{sign}{body}")
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
        // f64 0.1 is 0.1000000000000000055...: 0.100 is below it (the f64-scaled
        // version printed "0.100").
        assert_eq!(sig3_up(0.1), "0.101");
        assert_eq!(sig3_down(0.1), "0.100");
        // f64 0.3 is 0.299999999999999988...
        assert_eq!(sig3_up(0.3), "0.300");
        assert_eq!(sig3_down(0.3), "0.299");
        // Exact decimals stay as they are; the carry to a new digit; sig3's style.
        assert_eq!(
            (sig3_up(1234.0), sig3_down(1234.0)),
            ("1240".into(), "1230".into())
        );
        assert_eq!(sig3_up(9.995), "10.0");
        assert_eq!(sig3_up(0.5), "0.500");
        assert_eq!(sig3_up(123456.0), "124000");
        assert_eq!(sig3_up(1.5e7), "1.50e7");
        assert_eq!(sig3_down(0.012345), "0.0123");
        // Subnormals (the f64-scaled version printed "NaN" or "inf" here).
        assert_eq!(sig3_down(5e-324), "4.94e-324");
        assert_eq!(sig3_up(5e-324), "4.95e-324");
        assert_eq!(sig3_up(f64::MAX), "1.80e308");
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
