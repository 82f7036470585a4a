//! The progress bar of the long sweeps (`polyattn sweep ... --preset full`
//! runs for minutes): one line on stderr, redrawn in place before each grid point,
//!
//! ```text
//! sweep time-n [########............]  3/7  n = 2048  4.1 s
//! ```
//!
//! and ended with a newline when the sweep finishes. It is drawn only when stderr is a
//! terminal (so logs, pipes and the tests stay clean) and `POLYATTN_PROGRESS` is not
//! `0`; `POLYATTN_PROGRESS=1` forces it, one line per step, where no terminal is there
//! to redraw in. Drawing never fails a sweep: write errors on stderr are ignored.

use std::io::{IsTerminal, Write};
use std::time::Instant;

/// Width of the bar in characters.
const BAR: usize = 20;

/// How a [`Progress`] shows itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Nothing (stderr is not a terminal, or `POLYATTN_PROGRESS=0`).
    Off,
    /// One line redrawn with `\r` (a terminal).
    Redraw,
    /// One line per step (`POLYATTN_PROGRESS=1` without a terminal).
    Lines,
}

/// A sweep's progress over a grid of `total` points.
#[derive(Debug)]
pub struct Progress {
    label: String,
    total: usize,
    done: usize,
    start: Instant,
    mode: Mode,
}

impl Progress {
    /// A bar for `total` grid points labelled `label` (e.g. `sweep time-n`); shows
    /// itself per the module documentation.
    pub fn new(label: &str, total: usize) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let mode = match std::env::var("POLYATTN_PROGRESS").as_deref() {
            Ok("0") => Mode::Off,
            Ok("1") if !tty => Mode::Lines,
            _ if tty => Mode::Redraw,
            _ => Mode::Off,
        };
        Progress {
            label: label.to_string(),
            total,
            done: 0,
            start: Instant::now(),
            mode,
        }
    }

    /// Announces the next grid point (`detail`, e.g. `n = 2048`) and counts the one
    /// before it as done.
    pub fn step(&mut self, detail: &str) {
        let line = render(
            &self.label,
            self.done,
            self.total,
            detail,
            self.start.elapsed().as_secs_f64(),
        );
        self.done += 1;
        self.draw(&line, false);
    }

    /// Shows the full bar and ends the line.
    pub fn finish(self) {
        let secs = self.start.elapsed().as_secs_f64();
        let line = render(&self.label, self.total, self.total, "done", secs);
        self.draw(&line, true);
    }

    fn draw(&self, line: &str, last: bool) {
        let mut err = std::io::stderr().lock();
        // Ignored on purpose: a broken stderr must not stop a sweep.
        let _ = match self.mode {
            Mode::Off => Ok(()),
            // `\x1b[K` clears what a longer previous line left behind.
            Mode::Redraw => write!(err, "\r{line}\x1b[K{}", if last { "\n" } else { "" }),
            Mode::Lines => writeln!(err, "{line}"),
        };
        let _ = err.flush();
    }
}

/// The progress line: label, a 20-character bar filled in proportion to
/// `done / total` (full when `total` is 0), the count, the detail and the seconds.
pub fn render(label: &str, done: usize, total: usize, detail: &str, secs: f64) -> String {
    let done = done.min(total);
    let filled = (done * BAR).checked_div(total).unwrap_or(BAR);
    format!(
        "{label} [{}{}] {done:>w$}/{total}  {detail}  {secs:.1} s",
        "#".repeat(filled),
        ".".repeat(BAR - filled),
        w = total.to_string().len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_fills_in_proportion_and_saturates() {
        assert_eq!(
            render("sweep x", 0, 4, "n = 8", 0.0),
            "sweep x [....................] 0/4  n = 8  0.0 s"
        );
        assert_eq!(
            render("s", 1, 4, "d", 1.34),
            "s [#####...............] 1/4  d  1.3 s"
        );
        // More steps than announced (a grid that grew) never overflows the bar.
        assert_eq!(render("s", 9, 4, "d", 0.0), render("s", 4, 4, "d", 0.0));
        assert!(render("s", 0, 0, "d", 0.0).contains(&"#".repeat(BAR)));
        // Counts are right-aligned to the total's width.
        assert!(render("s", 3, 12, "d", 0.0).contains(" 3/12"));
    }

    #[test]
    fn steps_count_up_without_a_terminal() {
        // Under `cargo test` stderr is captured (not a terminal): nothing is drawn,
        // but the count still advances.
        let mut p = Progress::new("t", 2);
        p.step("a");
        p.step("b");
        assert_eq!(p.done, 2);
        p.finish();
    }
}
