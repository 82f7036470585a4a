//! The f16 CUDA kernels on a device: bit-level agreement with their CPU emulation,
//! timings with certified errors, and the polynomial engine at long sequences.
//!
//! Sections (`--sections compare,exact,poly`, all by default):
//!
//! - `compare`: the same problems through the device and through
//!   [`polyattn::cuda::emulate::Emulator`] (exact forward and backward under the three
//!   masks, the polynomial forward and both gradient kinds). Per tensor: entries,
//!   entries with identical bits, the largest distance in units in the last place of
//!   the stored format (f16 for O, dQ, dK, dV; f32 for lse) and the largest absolute
//!   difference. With `--fmad=false` the kernels and the emulation perform the same
//!   operations in the same order, so a difference comes from the device's `expf` /
//!   `logf` (CUDA's documented maximum errors 2 and 1 ulp) against Rust's; this
//!   section measures how far that carries. It asserts nothing: that each side lies in
//!   its certified enclosure is what the `cuda` tests check.
//! - `exact`: forward and backward at d = 64, 128, n = 4096 .. 65536, no mask and
//!   causal, heads = 65536 / n (1 .. 16); kernel time only (inputs already on the
//!   device, median of `reps`); TFLOP/s with FlashAttention's flop count (forward
//!   4 n^2 d per head, halved when causal, backward 2.5 x forward). For n <= 16384 two
//!   rows of head 0 (the first and the last) are certified against 128-bit MPFR
//!   (`certify_row`).
//! - `poly`: the polynomial engine at eps = 1e-3, causal, one head, d = 8 and 16,
//!   n = 16384 .. 1048576; end-to-end host time (planning, uploads, kernels,
//!   downloads), the certified f16 bound of O (and of dQ for n <= 65536).
//!
//! A time budget (`--budget-s`, per timed section) stops a section before a
//! configuration that its predecessor's rate predicts would overrun; skipped
//! configurations are listed as such. Writes `<out>/bench.json` with the revision
//! (`$POLYATTN_REVISION` or git), the host CPU, the device and the threads.
//!
//! ```sh
//! cargo run --release -p polyattn-tools --features cuda --example cuda_bench -- \
//!     [--quick] [--budget-s 150] [--sections compare,exact,poly] [--out results/cuda] \
//!     [--exact-d 64,128] [--poly-d 8,16] [--poly-n 16384,65536,262144,1048576] \
//!     [--no-bounds]
//! cargo run --release -p polyattn-tools --features cuda --example cuda_bench -- \
//!     --check-rows results/cuda/bench.json
//! ```
//!
//! The `poly` section keeps O and dQ of three causal rows per n (seeing n/16, n/4
//! and n keys); `--check-rows` (no device needed) regenerates the inputs from their
//! seed and certifies those rows against the f64 reference with its a priori bound:
//! the actual error where the f16 bound, computed over all rows, is loose.
//!
//! Without the feature, or without a device, it says so and exits 0. `--emulate` runs
//! every section on the CPU emulation at toy sizes instead (a dry run: the comparison
//! then must find every bit identical).

#[cfg(feature = "cuda")]
mod bench {
    use polyattn::attention::poly::{Accuracy, GradientKind, PolyConfig};
    use polyattn::attention::{AttentionConfig, Mask, Problem};
    use polyattn::cuda::allowance::poly_bounds;
    use polyattn::cuda::backend::ExactArgs;
    use polyattn::cuda::emulate::Emulator;
    use polyattn::cuda::exact::to_half;
    use polyattn::cuda::launch::mask_code;
    use polyattn::cuda::{self, Backend, CudaDevice};
    use polyattn::rng::SplitMix64;
    use polyattn::tensor::{Matrix, Tensor3};
    use polyattn_tools::certify::{certify_row, RowValues};
    use polyattn_tools::harness::Provenance;
    use serde_json::{json, Value};
    use std::time::{Duration, Instant};

    /// Command-line options.
    pub struct Opts {
        pub quick: bool,
        /// Run on the CPU emulation at toy sizes: a dry run of this program.
        pub emulate: bool,
        pub budget: Duration,
        pub sections: Vec<String>,
        pub out: String,
        /// Compute the `poly` section's certified f16 bounds (CPU; slow at n >= 1M).
        pub bounds: bool,
        /// Head dimensions of the `exact` section.
        pub exact_d: Vec<usize>,
        /// Head dimensions and sequence lengths of the `poly` section.
        pub poly_d: Vec<usize>,
        pub poly_n: Vec<usize>,
    }

    fn normal(r: &mut SplitMix64, len: usize, s: f64) -> Vec<f32> {
        r.normal_vec(len, s).into_iter().map(|x| x as f32).collect()
    }

    /// f16-representable values: N(0, s^2) rounded to f16.
    fn normal_f16(r: &mut SplitMix64, len: usize, s: f64) -> Vec<f32> {
        r.normal_vec(len, s)
            .into_iter()
            .map(|x| half::f16::from_f64(x).to_f32())
            .collect()
    }

    /// Median of `reps` timings of `f` (seconds), after one untimed call (which also
    /// compiles the kernels on first use).
    fn time(reps: usize, mut f: impl FnMut() -> polyattn::Result<()>) -> polyattn::Result<f64> {
        f()?;
        let mut t = Vec::with_capacity(reps);
        for _ in 0..reps {
            let s = Instant::now();
            f()?;
            t.push(s.elapsed().as_secs_f64());
        }
        t.sort_by(|a, b| a.total_cmp(b));
        Ok(t[t.len() / 2])
    }

    /// The position of `x` among the values of a format whose sign bit is `sign`:
    /// consecutive representable values have consecutive positions, so the
    /// difference of two positions is the distance in ulps (+0 and -0 coincide).
    fn position(bits: u32, sign: u32) -> i64 {
        let mag = i64::from(bits & (sign - 1));
        if bits & sign != 0 {
            -mag
        } else {
            mag
        }
    }

    /// Distance in f16 ulps of two f16 values held in f32 (exactly).
    fn ulps_f16(a: f32, b: f32) -> i64 {
        let p = |x: f32| position(u32::from(half::f16::from_f32(x).to_bits()), 0x8000);
        (p(a) - p(b)).abs()
    }

    /// Distance in f32 ulps.
    fn ulps_f32(a: f32, b: f32) -> i64 {
        (position(a.to_bits(), 0x8000_0000) - position(b.to_bits(), 0x8000_0000)).abs()
    }

    /// One row of the comparison table: device vs emulation for one tensor.
    fn agreement(problem: &str, tensor: &str, dev: &[f32], emu: &[f32], f16: bool) -> Value {
        let same = dev
            .iter()
            .zip(emu)
            .filter(|(a, b)| a.to_bits() == b.to_bits())
            .count();
        let mut ulps = 0i64;
        let mut abs: f64 = 0.0;
        let mut nonfinite = 0usize;
        for (a, b) in dev.iter().zip(emu) {
            if !(a.is_finite() && b.is_finite()) {
                // Fully masked rows carry lse = -inf on both sides; anything else is
                // reported, not folded into the distances.
                if a.to_bits() != b.to_bits() {
                    nonfinite += 1;
                }
                continue;
            }
            ulps = ulps.max(if f16 {
                ulps_f16(*a, *b)
            } else {
                ulps_f32(*a, *b)
            });
            abs = abs.max((f64::from(*a) - f64::from(*b)).abs());
        }
        println!(
            "| {problem} | {tensor} | {} | {same} | {:.4} | {ulps} ({}) | {abs:.3e} | {nonfinite} |",
            dev.len(),
            same as f64 / dev.len().max(1) as f64,
            if f16 { "f16" } else { "f32" },
        );
        json!({
            "problem": problem, "tensor": tensor, "entries": dev.len(), "identical": same,
            "max_ulps": ulps, "ulp_of": if f16 { "f16" } else { "f32" },
            "max_abs_diff": abs, "nonfinite_mismatches": nonfinite,
        })
    }

    /// f16-representable inputs of one problem (q, k, v, dO), q scaled by `s`.
    fn inputs(
        seed: u64,
        (n_q, n_k, d, d_v): (usize, usize, usize, usize),
        s: f64,
    ) -> polyattn::Result<[Matrix<f32>; 4]> {
        let mut r = SplitMix64::new(seed);
        Ok([
            Matrix::from_vec(n_q, d, normal_f16(&mut r, n_q * d, s))?,
            Matrix::from_vec(n_k, d, normal_f16(&mut r, n_k * d, 1.0))?,
            Matrix::from_vec(n_k, d_v, normal_f16(&mut r, n_k * d_v, 1.0))?,
            Matrix::from_vec(n_q, d_v, normal_f16(&mut r, n_q * d_v, 1.0))?,
        ])
    }

    /// The exact kernels' results on backend `b`, each side its own pipeline end to
    /// end (the backward starts from that backend's forward): O, lse, dQ, dK, dV.
    fn exact_run<B: Backend>(
        b: &B,
        [q, k, v, g]: &[Matrix<f32>; 4],
        cfg: &AttentionConfig,
    ) -> polyattn::Result<[Vec<f32>; 5]> {
        let f = cuda::exact::forward(b, q.view(), k.view(), v.view(), cfg)?;
        let gr = cuda::exact::backward(b, q.view(), k.view(), v.view(), &f, g.view(), cfg)?;
        Ok([
            f.o.into_vec(),
            f.lse,
            gr.dq.into_vec(),
            gr.dk.into_vec(),
            gr.dv.into_vec(),
        ])
    }

    /// The polynomial kernels' results on backend `b`: O, then dQ, dK, dV of each
    /// gradient kind (substituted, polynomial model), and the planned degree.
    fn poly_run<B: Backend>(
        b: &B,
        [q, k, v, g]: &[Matrix<f32>; 4],
        cfg: &PolyConfig,
    ) -> polyattn::Result<(Vec<Vec<f32>>, usize)> {
        let f = cuda::poly::forward(b, q.view(), k.view(), v.view(), cfg)?;
        let mut out = vec![f.o.as_slice().to_vec()];
        for kind in [GradientKind::Substituted, GradientKind::PolynomialModel] {
            let gr =
                cuda::poly::backward(b, q.view(), k.view(), v.view(), &f, g.view(), kind, cfg)?;
            out.extend([gr.dq.into_vec(), gr.dk.into_vec(), gr.dv.into_vec()]);
        }
        Ok((out, f.plan.regime.degree))
    }

    fn compare<B: Backend>(dev: &B) -> polyattn::Result<Vec<Value>> {
        let mut rows = Vec::new();
        println!("| problem | tensor | entries | identical | fraction | max distance (ulps) | max abs diff | non-finite mismatches |");
        println!("|---|---|--:|--:|--:|--:|--:|--:|");
        let dims_name = |(n_q, n_k, d, d_v): (usize, usize, usize, usize), mask: Mask| {
            format!("{n_q}x{n_k} d {d}/{d_v} {}", mask.name())
        };
        let exact_cases = [
            (1u64, (256, 256, 64, 64), Mask::None, 1.0),
            (2, (256, 256, 64, 64), Mask::CausalTopLeft, 2.0),
            (3, (200, 330, 32, 48), Mask::CausalBottomRight, 1.5),
            (4, (330, 200, 128, 64), Mask::CausalBottomRight, 1.0),
            (5, (1024, 1024, 64, 64), Mask::CausalTopLeft, 1.0),
        ];
        for (seed, dims, mask, s) in exact_cases {
            let x = inputs(seed, dims, s)?;
            let cfg = AttentionConfig {
                scale: None,
                mask,
                softcap: None,
            };
            let name = format!("exact {}", dims_name(dims, mask));
            let (on_dev, emulated) = (exact_run(dev, &x, &cfg)?, exact_run(&Emulator, &x, &cfg)?);
            for (t, tensor) in ["O", "lse", "dQ", "dK", "dV"].into_iter().enumerate() {
                rows.push(agreement(
                    &name,
                    tensor,
                    &on_dev[t],
                    &emulated[t],
                    tensor != "lse",
                ));
            }
        }
        let poly_cases = [
            (21u64, (150, 150, 4, 4), Mask::None, 0.15),
            (22, (200, 200, 4, 3), Mask::CausalTopLeft, 0.2),
            (24, (210, 130, 8, 4), Mask::CausalBottomRight, 0.1),
        ];
        for (seed, dims, mask, s) in poly_cases {
            let x = inputs(seed, dims, s)?;
            let cfg = PolyConfig {
                mask,
                accuracy: Accuracy::Eps(1e-5),
                ..Default::default()
            };
            let ((on_dev, degree), (emulated, _)) =
                (poly_run(dev, &x, &cfg)?, poly_run(&Emulator, &x, &cfg)?);
            let name = format!("poly {} degree {degree}", dims_name(dims, mask));
            let tags = ["", " Substituted", " PolynomialModel"];
            let tensors = ["O", "dQ", "dK", "dV", "dQ", "dK", "dV"];
            for (t, tensor) in tensors.into_iter().enumerate() {
                let tag = format!("{name}{}", tags[t.div_ceil(3)]);
                rows.push(agreement(&tag, tensor, &on_dev[t], &emulated[t], true));
            }
        }
        Ok(rows)
    }

    /// Predicts whether a configuration of `work` units fits before `deadline`, from
    /// the seconds per unit of the last one measured (`rate`); the first always runs.
    fn fits(rate: Option<f64>, work: f64, calls: f64, deadline: Instant) -> bool {
        match rate {
            None => true,
            Some(r) => Instant::now() + Duration::from_secs_f64(r * work * calls) < deadline,
        }
    }

    fn exact<B: Backend>(dev: &B, o: &Opts) -> polyattn::Result<Vec<Value>> {
        let mut rows = Vec::new();
        let deadline = Instant::now() + o.budget;
        let ns: &[usize] = if o.emulate {
            &[64, 128]
        } else if o.quick {
            &[4096]
        } else {
            &[4096, 8192, 16384, 32768, 65536]
        };
        let reps = if o.quick { 2 } else { 3 };
        println!("| d | n | mask | heads | fwd ms | fwd TFLOP/s | bwd ms | bwd TFLOP/s | certified err O (2 rows) | dQ |");
        println!("|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|");
        for &d in &o.exact_d {
            // Seconds per forward flop of the previous configuration (fwd + bwd).
            let mut rate: Option<f64> = None;
            for &n in ns {
                for mask in [Mask::None, Mask::CausalTopLeft] {
                    let heads = if o.emulate {
                        2
                    } else {
                        (65536 / n).clamp(1, 16)
                    };
                    let causal = if mask == Mask::None { 1.0 } else { 0.5 };
                    let flops = 4.0 * (n * n * d * heads) as f64 * causal;
                    if !fits(rate, flops, (reps + 1) as f64, deadline) {
                        println!(
                            "| {d} | {n} | {} | {heads} | skipped: budget | | | | | |",
                            mask.name()
                        );
                        rows.push(
                            json!({"engine": "exact", "d": d, "n": n, "mask": mask.name(),
                            "heads": heads, "skipped": "time budget"}),
                        );
                        continue;
                    }
                    let mut r = SplitMix64::new(n as u64 + d as u64);
                    let len = heads * n * d;
                    let t3 = |x: Vec<f32>| Tensor3::from_vec(heads, n, d, x);
                    let (q, k, v, g) = (
                        t3(normal(&mut r, len, 1.0))?,
                        t3(normal(&mut r, len, 1.0))?,
                        t3(normal(&mut r, len, 1.0))?,
                        t3(normal(&mut r, len, 1.0))?,
                    );
                    let cfg = AttentionConfig {
                        scale: None,
                        mask,
                        softcap: None,
                    };
                    let a = ExactArgs {
                        heads,
                        n_q: n,
                        n_k: n,
                        d,
                        d_v: d,
                        tau: (1.0 / (d as f64).sqrt()) as f32,
                        mask: mask_code(mask)?,
                    };
                    let up = |x: &Tensor3<f32>| dev.upload_half(&to_half(x.as_slice()));
                    let (qd, kd, vd, gd) = (up(&q)?, up(&k)?, up(&v)?, up(&g)?);
                    let mut out = dev.alloc_half(len)?;
                    let mut lse = dev.alloc_float(heads * n)?;
                    let mut delta = dev.alloc_float(heads * n)?;
                    let (mut dq, mut dk, mut dv) = (
                        dev.alloc_half(len)?,
                        dev.alloc_half(len)?,
                        dev.alloc_half(len)?,
                    );
                    let t_f = time(reps, || {
                        dev.exact_forward(&a, (&qd, &kd, &vd), &mut out, &mut lse)
                    })?;
                    let t_b = time(reps, || {
                        dev.row_delta(heads * n, d, &gd, &out, &mut delta)?;
                        dev.exact_backward(
                            &a,
                            (&qd, &kd, &vd),
                            &gd,
                            (&lse, &delta),
                            &mut dq,
                            &mut dk,
                            &mut dv,
                        )
                    })?;
                    rate = Some((t_f + t_b) / flops);
                    let (mut e_o, mut e_dq) = (f64::NAN, f64::NAN);
                    if n <= 16384 {
                        let f = cuda::exact::forward_multihead(dev, &q, &k, &v, &cfg)?;
                        let gr = cuda::exact::backward_multihead(dev, &q, &k, &v, &f, &g, &cfg)?;
                        let p = Problem::new(q.head(0), k.head(0), v.head(0), &cfg)?;
                        (e_o, e_dq) = (0.0, 0.0);
                        for row in [0, n - 1] {
                            let vals = RowValues {
                                o: f.o.head(0).row(row),
                                lse: f.lse.row(0)[row],
                                dq: gr.dq.head(0).row(row),
                                d_o: g.head(0).row(row),
                            };
                            let c = certify_row(&p, row, vals, 128)?;
                            e_o = e_o.max(c.o_err);
                            e_dq = e_dq.max(c.dq_err);
                        }
                    }
                    println!(
                        "| {d} | {n} | {} | {heads} | {:.2} | {:.2} | {:.2} | {:.2} | {e_o:.2e} | {e_dq:.2e} |",
                        mask.name(),
                        t_f * 1e3,
                        flops / t_f / 1e12,
                        t_b * 1e3,
                        2.5 * flops / t_b / 1e12
                    );
                    rows.push(json!({
                        "engine": "exact", "d": d, "n": n, "mask": mask.name(), "heads": heads,
                        "reps": reps, "forward_s": t_f, "backward_s": t_b,
                        "forward_tflops": flops / t_f / 1e12, "backward_tflops": 2.5 * flops / t_b / 1e12,
                        "certified_err_o_rows": if e_o.is_nan() { Value::Null } else { json!(e_o) },
                        "certified_err_dq_rows": if e_dq.is_nan() { Value::Null } else { json!(e_dq) },
                    }));
                }
            }
        }
        Ok(rows)
    }

    /// The `poly` section's inputs for (n, d): q, k entries N(0, 1/(4 d)) (so
    /// |tau q.k| stays near the polynomial regime), v and dO N(0, 1); one seed per n.
    fn poly_inputs(n: usize, d: usize) -> polyattn::Result<[Matrix<f32>; 4]> {
        let mut r = SplitMix64::new(7 + n as u64);
        let s = 0.5 / (d as f64).sqrt();
        let mut m = |sc: f64| Matrix::from_vec(n, d, normal(&mut r, n * d, sc));
        Ok([m(s)?, m(s)?, m(1.0)?, m(1.0)?])
    }

    fn poly_config() -> PolyConfig {
        PolyConfig {
            mask: Mask::CausalTopLeft,
            accuracy: Accuracy::Eps(1e-3),
            max_cost_ratio: f64::INFINITY,
            ..Default::default()
        }
    }

    /// The rows whose O and dQ the `poly` section keeps: causal rows that see n/16,
    /// n/4 and all n keys.
    fn check_rows(n: usize) -> Vec<usize> {
        vec![n / 16 - 1, n / 4 - 1, n - 1]
    }

    /// `--check-rows FILE` (no device): the kept rows of a `poly` section against the
    /// f64 reference with its a priori bound on the same regenerated inputs; the
    /// certified error of a row is max |y - ref| + bound (docs/math.md §5.1).
    pub fn check_rows_file(path: &str) -> polyattn::Result<()> {
        use polyattn::attention::exact::reference::exact_reference;
        let io = |e: std::io::Error| polyattn::Error::Io {
            action: "read",
            path: path.into(),
            source: e,
        };
        let text = std::fs::read_to_string(path).map_err(io)?;
        let doc: Value =
            serde_json::from_str(&text).map_err(|e| polyattn::Error::InvalidParameter {
                name: "--check-rows",
                value: path.into(),
                reason: e.to_string(),
            })?;
        println!(
            "rows of {path} (revision {}, device {})",
            doc["revision"], doc["device"]
        );
        println!("| d | n | row | keys | certified err O | max abs O | certified err dQ | max abs dQ | f16 bound O (all rows) |");
        println!("|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        let empty = Vec::new();
        for e in doc["poly"].as_array().unwrap_or(&empty) {
            let (Some(n), Some(d), Some(kept)) =
                (e["n"].as_u64(), e["d"].as_u64(), e["rows"].as_array())
            else {
                continue;
            };
            let (n, d) = (n as usize, d as usize);
            let [q, k, v, g] = poly_inputs(n, d)?;
            let tau = poly_config().attention().scale;
            for kr in kept {
                let i = kr["row"].as_u64().unwrap_or(0) as usize;
                let vals = |key: &str| -> Vec<f64> {
                    kr[key]
                        .as_array()
                        .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect())
                        .unwrap_or_default()
                };
                let (y_o, y_dq) = (vals("o"), vals("dq"));
                // Row i of causal attention = one query against keys 0..=i, no mask.
                let m64 = |x: &[f32], rows: usize, cols: usize| {
                    Matrix::from_vec(rows, cols, x.iter().map(|z| f64::from(*z)).collect())
                };
                let q1 = m64(q.row(i), 1, d)?;
                let k1 = m64(&k.as_slice()[..(i + 1) * d], i + 1, d)?;
                let v1 = m64(&v.as_slice()[..(i + 1) * d], i + 1, d)?;
                let g1 = m64(g.row(i), 1, d)?;
                let cfg = AttentionConfig {
                    scale: tau,
                    mask: Mask::None,
                    softcap: None,
                };
                let r = exact_reference(q1.view(), k1.view(), v1.view(), Some(g1.view()), &cfg)?;
                let err = |y: &[f64], x: &[f64], b: &[f64]| {
                    y.iter()
                        .zip(x)
                        .zip(b)
                        .map(|((y, x), b)| (y - x).abs() + b)
                        .fold(0.0, f64::max)
                };
                let amax = |x: &[f64]| x.iter().fold(0.0f64, |a, b| a.max(b.abs()));
                let rg = r.grads.as_ref().expect("d_o was given");
                println!(
                    "| {d} | {n} | {i} | {} | {:.3e} | {:.3} | {:.3e} | {:.3} | {} |",
                    i + 1,
                    err(&y_o, &r.o, &r.bound_o),
                    amax(&r.o),
                    err(&y_dq, &rg.dq, &rg.bound_dq),
                    amax(&rg.dq),
                    e["bound_o"]
                        .as_f64()
                        .map_or("-".into(), |b| format!("{b:.3e}")),
                );
            }
        }
        Ok(())
    }

    fn poly<B: Backend>(dev: &B, o: &Opts) -> Vec<Value> {
        let mut rows = Vec::new();
        let deadline = Instant::now() + o.budget;
        println!("\n| d | n | degree | rank | fwd ms | bwd ms | certified bound O | dQ |");
        println!("|--:|--:|--:|--:|--:|--:|--:|--:|");
        let ns: &[usize] = if o.emulate {
            &[512, 2048]
        } else if o.quick {
            &[16384]
        } else {
            &o.poly_n
        };
        for &d in &o.poly_d {
            // Seconds per row of the previous n (forward, backward and bounds).
            let mut rate: Option<f64> = None;
            for &n in ns {
                if !fits(rate, n as f64, 1.0, deadline) {
                    println!("| {d} | {n} | skipped: budget | | | | | |");
                    rows.push(json!({"engine": "poly", "d": d, "n": n, "skipped": "time budget"}));
                    continue;
                }
                let start = Instant::now();
                let res = (|| -> polyattn::Result<Value> {
                    let [q, k, v, g] = poly_inputs(n, d)?;
                    let cfg = poly_config();
                    // One untimed forward: compiles the kernels for this d.
                    cuda::poly::forward(dev, q.view(), k.view(), v.view(), &cfg)?;
                    let t0 = Instant::now();
                    let f = cuda::poly::forward(dev, q.view(), k.view(), v.view(), &cfg)?;
                    let t_f = t0.elapsed().as_secs_f64();
                    let t0 = Instant::now();
                    let gr = cuda::poly::backward(
                        dev,
                        q.view(),
                        k.view(),
                        v.view(),
                        &f,
                        g.view(),
                        GradientKind::Substituted,
                        &cfg,
                    )?;
                    let t_b = t0.elapsed().as_secs_f64();
                    let (mut b_o, mut b_dq) = (f64::NAN, f64::NAN);
                    if o.bounds {
                        let with_grads = n <= 65536;
                        let bd = poly_bounds(
                            q.view(),
                            k.view(),
                            v.view(),
                            with_grads.then(|| g.view()),
                            &cfg,
                            &f,
                            with_grads.then_some(&gr),
                            0.0,
                        )?;
                        b_o = bd.o.max_total();
                        b_dq = bd.grads.as_ref().map_or(f64::NAN, |b| b.0.max_total());
                    }
                    println!(
                        "| {d} | {n} | {} | {} | {:.2} | {:.2} | {b_o:.2e} | {b_dq:.2e} |",
                        f.plan.regime.degree,
                        f.plan.regime.rank,
                        t_f * 1e3,
                        t_b * 1e3,
                    );
                    let null_nan = |x: f64| if x.is_nan() { Value::Null } else { json!(x) };
                    // Rows kept for `--check-rows` (inputs are regenerated from the seed).
                    let kept: Vec<Value> = check_rows(n)
                        .into_iter()
                        .map(|i| json!({"row": i, "o": f.o.row(i), "dq": gr.dq.row(i)}))
                        .collect();
                    Ok(json!({
                        "engine": "poly", "d": d, "n": n, "mask": "causal", "eps": 1e-3,
                        "degree": f.plan.regime.degree, "rank": f.plan.regime.rank,
                        "forward_s": t_f, "backward_s": t_b, "timing": "end to end, one call",
                        "bound_o": null_nan(b_o), "bound_dq": null_nan(b_dq),
                        "rows": kept,
                    }))
                })();
                match res {
                    Ok(v) => rows.push(v),
                    Err(e) => {
                        println!("| {d} | {n} | - | - | - | - | {e} | |");
                        rows.push(
                            json!({"engine": "poly", "d": d, "n": n, "error": e.to_string()}),
                        );
                    }
                }
                rate = Some(start.elapsed().as_secs_f64() / n as f64);
            }
        }
        rows
    }

    pub fn run(o: &Opts) -> polyattn::Result<()> {
        if o.emulate {
            return run_on(&Emulator, o);
        }
        match CudaDevice::new(0) {
            Ok(d) => run_on(&d, o),
            Err(e) => {
                println!("skipped: no CUDA device ({e})");
                Ok(())
            }
        }
    }

    fn run_on<B: Backend>(dev: &B, o: &Opts) -> polyattn::Result<()> {
        let device = dev.describe();
        println!("device: {device}");
        let prov = Provenance::here();
        println!("{}", prov.sentence());
        let mut doc = json!({
            "revision": prov.revision, "machine": prov.machine, "threads": prov.threads,
            "device": device,
        });
        let write = |doc: &Value| -> polyattn::Result<()> {
            let io = |e| polyattn::Error::Io {
                action: "write",
                path: o.out.clone().into(),
                source: e,
            };
            std::fs::create_dir_all(&o.out).map_err(io)?;
            let text = serde_json::to_string_pretty(doc).unwrap_or_default();
            std::fs::write(format!("{}/bench.json", o.out), text).map_err(io)
        };
        let on = |s: &str| o.sections.iter().any(|x| x == s);
        // Each section is written as soon as it ends: a run stopped later keeps it.
        if on("compare") {
            println!("\n## compare: device vs emulation");
            doc["compare"] = json!(compare(dev)?);
            write(&doc)?;
        }
        if on("exact") {
            println!("\n## exact: kernel timings");
            doc["exact"] = json!(exact(dev, o)?);
            write(&doc)?;
        }
        if on("poly") {
            println!("\n## poly: end-to-end timings");
            doc["poly"] = json!(poly(dev, o));
            write(&doc)?;
        }
        println!("wrote {}/bench.json", o.out);
        Ok(())
    }
}

#[cfg(feature = "cuda")]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let budget = match value("--budget-s").map(|s| s.parse::<f64>()) {
        None => 150.0,
        Some(Ok(b)) if b.is_finite() && b > 0.0 => b,
        Some(_) => {
            eprintln!("cuda_bench: --budget-s takes a positive number of seconds");
            std::process::exit(2);
        }
    };
    let sections: Vec<String> = value("--sections")
        .unwrap_or_else(|| "compare,exact,poly".into())
        .split(',')
        .map(str::to_string)
        .collect();
    if let Some(bad) = sections
        .iter()
        .find(|s| !["compare", "exact", "poly"].contains(&s.as_str()))
    {
        eprintln!("cuda_bench: unknown section {bad:?} (compare, exact, poly)");
        std::process::exit(2);
    }
    let list = |flag: &str, default: &[usize]| -> Vec<usize> {
        match value(flag) {
            None => default.to_vec(),
            Some(s) => match s
                .split(',')
                .map(str::parse)
                .collect::<Result<Vec<usize>, _>>()
            {
                Ok(v) if !v.is_empty() && v.iter().all(|x| *x > 0) => v,
                _ => {
                    eprintln!("cuda_bench: {flag} takes positive integers separated by commas");
                    std::process::exit(2);
                }
            },
        }
    };
    if let Some(path) = value("--check-rows") {
        if let Err(e) = bench::check_rows_file(&path) {
            eprintln!("cuda_bench: {e}");
            std::process::exit(1);
        }
        return;
    }
    let opts = bench::Opts {
        bounds: !args.iter().any(|a| a == "--no-bounds"),
        exact_d: list("--exact-d", &[64, 128]),
        poly_d: list("--poly-d", &[8, 16]),
        poly_n: list("--poly-n", &[16384, 65536, 262144, 1048576]),
        quick: args.iter().any(|a| a == "--quick"),
        emulate: args.iter().any(|a| a == "--emulate"),
        budget: std::time::Duration::from_secs_f64(budget),
        sections,
        out: value("--out").unwrap_or_else(|| "results/cuda".into()),
    };
    if let Err(e) = bench::run(&opts) {
        eprintln!("cuda_bench: {e}");
        std::process::exit(1);
    }
}

#[cfg(not(feature = "cuda"))]
fn main() {
    println!("cuda_bench needs `--features cuda`");
}
