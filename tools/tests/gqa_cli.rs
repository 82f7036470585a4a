//! Grouped-query heads through the `polyattn attention` command: the polynomial
//! engine's dK and dV within their reported bounds of the exact engine's.

use polyattn::rng::SplitMix64;

/// The command line takes `[batch, heads, n, d]` files whose k and v have fewer heads
/// (their outputs dk, dv shaped like k, v); the polynomial engine's summed dk, dv stay
/// within their summed bounds of the exact engine's.
#[test]
fn command_line_grouped_heads() {
    use polyattn::io::{write_tensors, AnyTensor, TensorFile};
    let dir = std::env::temp_dir().join(format!("polyattn-gqa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let t = |shape: [usize; 4], seed: u64, scale: f64| AnyTensor::F64 {
        shape: shape.to_vec(),
        data: SplitMix64::new(seed).normal_vec(shape.iter().product(), scale),
    };
    let inp = dir.join("in.st");
    let tensors = vec![
        ("q".to_string(), t([2, 4, 48, 4], 1, 0.3)),
        ("k".to_string(), t([2, 2, 48, 4], 2, 0.3)),
        ("v".to_string(), t([2, 2, 48, 4], 3, 1.0)),
        ("do".to_string(), t([2, 4, 48, 4], 4, 1.0)),
    ];
    write_tensors(&inp, &tensors, &Default::default()).unwrap();
    let run = |engine: &str, out: &std::path::Path| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_polyattn"))
            .args(["attention", "--input", inp.to_str().unwrap(), "--output"])
            .arg(out)
            .args(["--engine", engine, "--eps", "1e-6", "--mask", "causal"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        TensorFile::read(out).unwrap()
    };
    let ex = run("exact", &dir.join("exact.st"));
    let po = run("poly", &dir.join("poly.st"));
    for name in ["dk", "dv"] {
        let (AnyTensor::F64 { shape, data: e }, AnyTensor::F64 { data: p, .. }) =
            (ex.get(name).unwrap(), po.get(name).unwrap())
        else {
            panic!("f64 expected");
        };
        assert_eq!(shape, &[2, 2, 48, 4]);
        let AnyTensor::F64 { data: b, .. } = po.get(&format!("{name}_bound")).unwrap() else {
            panic!("f64 bound expected");
        };
        for i in 0..e.len() {
            // As above: 1e-12 covers the exact f64 engine's own rounding here.
            assert!((p[i] - e[i]).abs() <= b[i] + 1e-12, "{name}[{i}]");
        }
    }
    // heads_json: query head h (batch-major: b * 4 + head) reports the bound of the
    // key head it shares, h / 2 (batch-major: b * 2 + head / 2) for dk and dv, and its
    // own for dq. The bound tensors hold 4 * 48 * 4 entries per key head block of
    // the [2, 2, 48, 4] shape: block j is data[j * 192 .. (j + 1) * 192].
    let heads: serde_json::Value =
        serde_json::from_str(po.metadata.get("heads_json").expect("heads_json")).unwrap();
    let heads = heads.as_array().unwrap();
    assert_eq!(heads.len(), 8, "one entry per (batch, query head)");
    for name in ["dk", "dv", "dq"] {
        let AnyTensor::F64 { data: b, .. } = po.get(&format!("{name}_bound")).unwrap() else {
            panic!("f64 bound expected");
        };
        let block = 48 * 4;
        for (h, j) in heads.iter().enumerate() {
            let src = if name == "dq" { h } else { h / 2 };
            let want = b[src * block..(src + 1) * block]
                .iter()
                .cloned()
                .fold(0.0f64, f64::max);
            let got = j[format!("bound_{name}")]
                .as_f64()
                .unwrap_or_else(|| panic!("head {h} has no bound_{name}: {j}"));
            // serde_json's default float parser (no `float_roundtrip` feature) may be
            // an ulp off: 4 eps relative; other heads' bounds differ by far more.
            assert!(
                (got - want).abs() <= 4.0 * f64::EPSILON * want,
                "head {h} bound_{name}: {got} vs {want}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
