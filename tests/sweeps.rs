//! The sweeps' small presets: they run, and what they show holds.
//! - error-n: with eps = 1/n on O, every certified O error is at most 1/n (the claim
//!   the sweep exists to check), and the a priori bound is at most eps.
//! - bits: the rounding error of p-bit arithmetic shrinks as p grows (each extra bit
//!   halves the unit roundoff; we require a strict decrease from c = 1 to c = 4), and
//!   at p = 4 log2(n) bits it is below 1/n^2 (the unit roundoff is n^-4 there; the
//!   algorithm's condition factor at these sizes is far below n^2).

use polyattn::harness::{accuracy, Preset};

#[test]
fn error_n_small_preset_holds() {
    let r = accuracy::sweep(Preset::Small).unwrap();
    assert_eq!(r.records.len(), 3);
    assert!(r.all_o_below_one_over_n, "{r:?}");
    for x in &r.records {
        assert!(x.a_priori_o <= x.eps, "{x:?}");
        assert!(
            x.err_o <= x.a_priori_o,
            "certified error above the a priori bound: {x:?}"
        );
    }
    let dir = std::env::temp_dir().join(format!("polyattn-errn-{}", std::process::id()));
    accuracy::write_outputs(&r, &dir).unwrap();
    assert!(dir.join("error_n.svg").exists() && dir.join("error_n.json").exists());
}

#[cfg(feature = "certify")]
#[test]
fn bits_small_preset_holds() {
    use polyattn::harness::bits;
    let r = bits::sweep(Preset::Small).unwrap();
    for &l in &r.grid.log2_ns {
        let n = (1usize << l) as f64;
        let pts: Vec<&bits::Record> = r.records.iter().filter(|x| x.n as f64 == n).collect();
        assert!(
            pts.first().unwrap().rounding_o > pts.last().unwrap().rounding_o,
            "{pts:?}"
        );
        assert!(pts.last().unwrap().rounding_o < 1.0 / (n * n), "{pts:?}");
    }
}
