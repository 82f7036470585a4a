//! The sweeps' small presets: they run, and what they show holds.
//! - error-n: with eps = 1/n on O, every certified O error is at most 1/n (the claim
//!   the sweep exists to check), and the a priori bound is at most eps.
//! - bits: the rounding error of p-bit arithmetic shrinks as p grows (each extra bit
//!   halves the unit roundoff; we require a strict decrease from c = 1 to c = 4), and
//!   at p = 4 log2(n) bits it is below 1/n^2 (the unit roundoff is n^-4 there; the
//!   algorithm's condition factor at these sizes is far below n^2).

use polyattn_tools::harness::{accuracy, Preset};

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
    use polyattn_tools::harness::bits;
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

/// time-n and depth small presets run end to end and write their files; the
/// polynomial engine's gradients differ from the exact engine's by a positive amount
/// (a zero would mean the exact engine ran twice) that is small against the gradients
/// (below 1e-3 relative at eps = 1e-3 per head: the heads' O errors are below 1e-3 and
/// the model is not amplifying at these depths; a broken engine gives O(1)).
#[test]
fn model_sweeps_small_presets_run() {
    use polyattn_tools::harness::{model_depth, model_time};
    let t = model_time::sweep(Preset::Small).unwrap();
    assert_eq!(t.records.len(), 3);
    for r in &t.records {
        assert!(
            r.rel_gradient_difference > 0.0 && r.rel_gradient_difference < 1e-3,
            "{r:?}"
        );
    }
    let d = model_depth::sweep(Preset::Small).unwrap();
    for r in &d.records {
        assert!(r.rel_dx > 0.0 && r.rel_dx < 1e-3, "{r:?}");
        assert_eq!(r.rel_layer.len(), r.layers);
        // docs/math.md §7.3: the propagated bound must not be below what happened.
        assert!(r.predicted_dx >= r.fro_dx, "{r:?}");
        // The same for every layer's weight gradients (W_l, sensitivity.rs).
        assert_eq!(r.fro_weights.len(), r.layers);
        assert!(r.fro_weights.iter().all(|m| *m > 0.0), "{r:?}");
        assert!(r.weight_bound_ratio() >= 1.0, "{r:?}");
        assert_eq!(r.kappa.len(), r.layers);
        assert!(r.kappa.iter().all(|k| k.is_finite() && *k > 0.0), "{r:?}");
    }
    let dir = std::env::temp_dir().join(format!("polyattn-msweeps-{}", std::process::id()));
    model_time::write_outputs(&t, &dir).unwrap();
    model_depth::write_outputs(&d, &dir).unwrap();
    assert!(dir.join("time_n.svg").exists() && dir.join("depth.svg").exists());
}

/// The rebuttal experiment's small preset (d = 4..6): every row finds a Taylor degree
/// whose O error (standard metric, against the exact engine in f64) is below the
/// authors' number, the gradient error is measured and finite, and the rigorous radius
/// is at least the largest score actually present (it must cover every score).
#[test]
fn seed_experiment_small_preset() {
    use polyattn_tools::harness::seed;
    let r = seed::sweep(Preset::Small).unwrap();
    assert_eq!(r.rows.len(), 3);
    for x in &r.rows {
        assert_eq!(x.n, 10 << x.d);
        assert!(
            x.error_o_pct > 0.0 && x.error_o_pct < x.their_error_pct,
            "{x:?}"
        );
        assert!(
            x.error_grad_pct.is_finite() && x.error_grad_pct > 0.0,
            "{x:?}"
        );
        assert!(x.radius >= x.max_score, "{x:?}");
        assert!(x.exact_fwd_ms > 0.0 && x.poly_fwd_ms > 0.0);
    }
    let dir = std::env::temp_dir().join(format!("polyattn-seed-{}", std::process::id()));
    seed::write_outputs(&r, &dir).unwrap();
    assert!(dir.join("seed.md").exists());
}

/// `polyattn sweep NAME` writes `provenance.json` beside its files: the revision, the
/// machine and the thread count the numbers came from.
#[test]
fn a_sweep_folder_records_its_provenance() {
    let dir = std::env::temp_dir().join(format!("polyattn-prov-{}", std::process::id()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_polyattn"))
        .args(["sweep", "error-n", "--preset", "small", "--out"])
        .arg(&dir)
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(dir.join("provenance.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["sweep"], "error_n");
    assert_eq!(v["preset"], "Small");
    let p = &v["provenance"];
    assert!(!p["revision"].as_str().unwrap().is_empty());
    assert!(p["machine"].as_str().unwrap().contains("logical CPUs"));
    assert_eq!(p["threads"], 2);
}

/// formats small preset: with an unbounded exponent, every extra bit helps: the
/// rounding of O falls strictly as c grows (0.5, 0.75, 1, 2 log2 n bits) at every
/// (n, s); rows are finite there; the files are written.
#[test]
fn formats_small_preset_runs() {
    use polyattn_tools::harness::formats;
    let r = formats::sweep(Preset::Small).unwrap();
    for &l in &r.grid.log2_ns {
        let n = 1usize << l;
        for &a in &r.grid.scale_powers {
            let s = (n as f64).powf(a);
            let unbounded: Vec<&formats::Record> = r
                .records
                .iter()
                .filter(|x| x.n == n && x.s == s && x.format.emax >= 1000)
                .collect();
            assert_eq!(unbounded.len(), 4, "{unbounded:?}");
            for w in unbounded.windows(2) {
                assert!(w[0].format.p < w[1].format.p, "{w:?}");
                assert!(w[0].rounding_o > w[1].rounding_o, "{w:?}");
                assert_eq!(w[1].non_finite, 0, "{w:?}");
            }
        }
    }
    let dir = std::env::temp_dir().join(format!("polyattn-formats-{}", std::process::id()));
    formats::write_outputs(&r, &dir).unwrap();
    assert!(dir.join("formats.svg").exists() && dir.join("formats.md").exists());
    std::fs::remove_dir_all(&dir).ok();
}
