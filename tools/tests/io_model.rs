//! The two regimes of IO24 (docs/math.md §8) in the simulator's counts, on the small
//! preset's grid (`n = 512`, `d in {32, 64}`, `M` from `d^2 / 16` to `8 d^2`):
//! constant ratio bands, the crossover near `M = d^2`, and every count above the
//! bound. Expected values are the theory's, not the code's: the thresholds are
//! derived in the comments.

use polyattn_tools::harness::io_sweep::{bands, crossovers, dense_records, Grid, Preset, Record};

fn spread(xs: impl Iterator<Item = f64>) -> f64 {
    let (lo, hi) = xs.fold((f64::INFINITY, 0.0f64), |(a, b), x| (a.min(x), b.max(x)));
    hi / lo
}

fn select<'a>(rs: &'a [Record], alg: &str, pass: &str, d: usize, regime: &str) -> Vec<&'a Record> {
    rs.iter()
        .filter(|r| r.alg == alg && r.pass == pass && r.d == d && r.regime() == regime)
        .collect()
}

#[test]
fn counts_show_both_regimes_and_the_crossover() {
    let grid = Grid::preset(Preset::Small);
    let records = dense_records(&grid).unwrap();
    assert!(!records.is_empty());

    // Every count respects the hard capacity, the compulsory traffic, and IO24's
    // bound with constant 1 (the constants of the tiled algorithms are all > 1:
    // each moves at least the n^2 d / t words of one blocked product).
    for r in &records {
        assert!(r.peak <= r.m, "{r:?}");
        assert!(r.ratio_compulsory >= 1.0, "{r:?}");
        assert!(r.ratio_bound >= 1.0, "{r:?}");
    }

    for &d in &grid.ds {
        let small_ms: Vec<usize> = grid
            .capacities(512, d)
            .into_iter()
            .filter(|&m| m < d * d)
            .collect();
        let large_ms: Vec<usize> = grid
            .capacities(512, d)
            .into_iter()
            .filter(|&m| m >= d * d)
            .collect();
        // Both regimes are covered: M over at least 2x below d^2 and 4x above.
        let range = |ms: &[usize]| *ms.last().unwrap() as f64 / ms[0] as f64;
        assert!(
            range(&small_ms) >= 2.0 && range(&large_ms) >= 4.0,
            "{small_ms:?} {large_ms:?}"
        );

        for pass in ["forward", "backward"] {
            // Large cache: FlashAttention's count / (n^2 d^2 / M) stays in a band.
            // Its count is c n^2 d / B_c with B_c within a factor 1.5 of M / (4 d)
            // once B_r = d (the working-set terms 2 B_r d + B_r B_c take at most a third
            // of M), so the band's width is at most 1.5 plus the O(n d / M) tail: < 2.
            // It is the flatter of the two normalisations (on n^2 d / sqrt(M) the
            // ratio moves with sqrt(M) / d).
            let fl = select(&records, "flash", pass, d, "large");
            let (a, b) = (
                fl.iter().map(|r| r.ratio_large),
                fl.iter().map(|r| r.ratio_small),
            );
            assert!(
                spread(a.clone()) < 2.0 && spread(a) < spread(b),
                "{pass} d={d}"
            );

            // Small cache: the small-cache algorithm's count / (n^2 d / sqrt(M)) stays
            // in a band: 2 n^2 d / t per product with t = floor(sqrt(M / 3)), plus
            // Theta(n^2) element-wise passes that are below the product terms when
            // sqrt(M) < d; the floor costs at most a factor t / (t - 1) <= 1.25 (t >= 5).
            let sl = select(&records, "small-cache", pass, d, "small");
            let (a, b) = (
                sl.iter().map(|r| r.ratio_small),
                sl.iter().map(|r| r.ratio_large),
            );
            assert!(
                spread(a.clone()) < 1.6 && spread(a) < spread(b),
                "{pass} d={d}"
            );

            // Below d^2 FlashAttention is not optimal: its count / (n^2 d / sqrt(M))
            // grows like d / sqrt(M) as M falls, i.e. by at least sqrt(max/min M)
            // over the small-regime points, up to the factor 2 of B_c's rounding.
            let fs = select(&records, "flash", pass, d, "small");
            let m_range = (*small_ms.last().unwrap() as f64 / small_ms[0] as f64).sqrt();
            let at = |rs: &[&Record], m: usize| rs.iter().find(|r| r.m == m).unwrap().ratio_small;
            let growth = at(&fs, small_ms[0]) / at(&fs, *small_ms.last().unwrap());
            assert!(
                growth > m_range / 2.0,
                "{pass} d={d}: {growth} vs {m_range}"
            );
            // ... and at the smallest M the small-cache algorithm moves fewer words.
            let total = |rs: &[&Record], m: usize| rs.iter().find(|r| r.m == m).unwrap().total;
            assert!(total(&sl, small_ms[0]) < total(&fs, small_ms[0]));
            // Above d^2 it is FlashAttention that wins, at the largest M.
            let ll = select(&records, "small-cache", pass, d, "large");
            let m_top = *large_ms.last().unwrap();
            assert!(total(&fl, m_top) < total(&ll, m_top));
        }
    }

    // The crossover sits at M = Theta(d^2): with the leading constants of the two
    // counts (c_F n^2 d^2 / M against c_S n^2 d / sqrt(M) + c_2 n^2, c_F / c_S
    // between 1 and 2 for these block rules) M* / d^2 lies in [1/4, 4].
    let cs = crossovers(&records);
    assert_eq!(cs.len(), 2 * grid.ds.len());
    for c in &cs {
        let x = c
            .m_star_over_d2
            .unwrap_or_else(|| panic!("no crossover: {c:?}"));
        assert!((0.25..=4.0).contains(&x), "{c:?}");
    }

    // The bands reported per regime are those of the records.
    let b = bands(&records);
    assert_eq!(b.len(), 3 * 2 * 2);
    for band in &b {
        assert!(band.large.0 <= band.large.1 && band.min_ratio_bound >= 1.0);
    }
}

/// The CLI writes every output file of the small preset.
#[test]
fn sweep_writes_its_files() {
    let dir = std::env::temp_dir().join(format!("polyattn-io-sweep-{}", std::process::id()));
    let report = polyattn_tools::harness::io_sweep::sweep(Preset::Small).unwrap();
    polyattn_tools::harness::io_sweep::write_outputs(&report, &dir).unwrap();
    for f in ["io.md", "io.json"] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    for (f, _) in polyattn_tools::harness::io_sweep::plot_files() {
        let svg = std::fs::read_to_string(dir.join(f)).unwrap();
        assert!(svg.contains("<svg"), "{f}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("io.json")).unwrap()).unwrap();
    assert_eq!(
        json["records"].as_array().unwrap().len(),
        report.records.len()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
