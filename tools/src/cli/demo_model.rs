//! The second half of `polyattn demo`: the polynomial engine where it pays.
//!
//! 1. One bounded-score head certified end to end: the polynomial engine's O, dQ, dK,
//!    dV against exact attention ([`crate::certify::report`]), report files written.
//! 2. A seeded multi-layer causal model with small heads (d_head = 4, W_Q and W_K
//!    scaled so R ~ 0.5: the method's regime), loss and every gradient through the
//!    exact and the polynomial engine, timed; per layer the plan and the a priori
//!    attention bounds; per parameter group the difference between the two engines'
//!    gradients (measured against the exact engine in f64; at this n the model is too
//!    large for the MPFR reference, so this is not called certified).
//! 3. The same model at n = 64, certified tensor by tensor against the MPFR enclosure
//!    of the whole model ([`crate::certify::model_report`]), with docs/math.md §7.3's
//!    propagated bound on dX.
//! 4. The same model at n = 1024, certified against the double-double ball enclosure
//!    of the whole model (`polyattn_spec::ball`, the reference that scales to
//!    n = 16 384).

use crate::certify::model_report::{certify_model, certify_model_with, ModelReport};
use crate::certify::report::{certify_attention, AttentionReport, ReferenceChoice};
use crate::harness::{ensure_dir, sig3, text_table, write_json, write_text};
use polyattn::attention::poly::{Accuracy, GradientKind, PolyConfig};
use polyattn::attention::Mask;
use polyattn::error::Result;
use polyattn::model::fixtures::{bounded_model, poly_choice, small_head_config, QK_SCALE};
use polyattn::model::EngineChoice;
use polyattn::rng::SplitMix64;
use polyattn::tensor::Tensor3;
use std::path::Path;
use std::time::Instant;

/// Runs the three parts; `n` is the model's sequence length, `out` the report folder.
pub fn run(n: usize, layers: usize, seed: u64, out: &Path) -> Result<()> {
    ensure_dir(out)?;
    certified_head(seed, out)?;
    model_speed(n, layers, seed, out)?;
    certified_model(seed, out)?;
    ball_certified_model(seed, out)
}

/// The same model at n = 1024 through the polynomial engine (eps 1e-3 per head),
/// certified against the double-double balls; report in `out/model_n1024/`.
fn ball_certified_model(seed: u64, out: &Path) -> Result<()> {
    let n = 1024;
    let (model, batch) = bounded_model(small_head_config(2), QK_SCALE, n, seed)?;
    let t = Instant::now();
    let rep = certify_model_with(
        &model,
        &batch,
        &[poly_choice(1e-3)],
        ReferenceChoice::Ball,
        0,
    )?;
    outln!(
        "\nThe same model at n = {n}, eps = 1e-3 per head, against {} ({:.1} s for the enclosure, {:.1} s in all):\n",
        rep.reference_text(),
        rep.seconds_reference,
        t.elapsed().as_secs_f64()
    );
    let rows: Vec<Vec<String>> = rep
        .tensor_rows()
        .into_iter()
        .filter(|r| r[0] == "loss" || r[0] == "grad.x" || r[0].contains("0.attn.wq"))
        .collect();
    out!("{}", text_table(&ModelReport::TENSOR_HEADERS, &rows));
    let dir = out.join("model_n1024");
    ensure_dir(&dir)?;
    write_json(&dir.join("report.json"), &rep)?;
    write_text(&dir.join("report.md"), &rep.to_markdown())?;
    rep.write_plot(&dir)?;
    outln!(
        "wrote report.json, report.md and errors.svg to {}",
        dir.display()
    );
    Ok(())
}

/// A small model (n = 64, 2 layers) through the polynomial engine, certified tensor by
/// tensor against the MPFR enclosure of the whole model (where sizes allow it).
fn certified_model(seed: u64, out: &Path) -> Result<()> {
    let n = 64;
    let (model, batch) = bounded_model(small_head_config(2), QK_SCALE, n, seed)?;
    let rep = certify_model(&model, &batch, &[poly_choice(1e-6)], ReferenceChoice::Auto)?;
    outln!(
        "\nThe same model at n = {n}, eps = 1e-6 per head, every gradient against {}; a sample of the {} tensors (the bound is docs/math.md §7.3's propagated bound on the Frobenius error: of dX, or for a weight tensor its layer's bound on all that layer's weight gradients together):\n",
        rep.reference_text(),
        rep.tensors.len()
    );
    let rows: Vec<Vec<String>> = rep
        .tensor_rows()
        .into_iter()
        .filter(|r| {
            r[0] == "loss"
                || r[0] == "grad.x"
                || r[0].contains("0.attn.wq")
                || r[0].contains("1.mlp.w2")
        })
        .collect();
    out!("{}", text_table(&ModelReport::TENSOR_HEADERS, &rows));
    write_json(&out.join("model_report.json"), &rep)?;
    write_text(&out.join("model_report.md"), &rep.to_markdown())?;
    rep.write_plot(out)?;
    outln!(
        "wrote {0}/model_report.md, {0}/model_report.json and {0}/errors.svg",
        out.display()
    );
    Ok(())
}

fn certified_head(seed: u64, out: &Path) -> Result<()> {
    let (n, d) = (2048, 4);
    let mut r = SplitMix64::new(seed ^ 0xcafe);
    let mut t = |s: f64| Tensor3::from_vec(1, n, d, r.normal_vec(n * d, s));
    let (q, k, v, g) = (t(0.35)?, t(0.35)?, t(1.0)?, t(1.0)?);
    let cfg = PolyConfig {
        mask: Mask::CausalTopLeft,
        accuracy: Accuracy::Eps(1e-6),
        max_cost_ratio: f64::INFINITY,
        ..PolyConfig::default()
    };
    let rep = certify_attention(
        &q,
        &k,
        &v,
        Some(&g),
        &cfg,
        GradientKind::Substituted,
        ReferenceChoice::F64,
    )?;
    let reg = &rep.heads[0].regime;
    outln!(
        "\nPolynomial engine, one causal head n = {n}, d = {d}, eps = 1e-6 on O: R = {}, B = {} (sqrt(ln n) = {}), degree {}, rank {}",
        sig3(reg.radius),
        sig3(reg.entry_bound),
        sig3(reg.sqrt_ln_n),
        reg.degree,
        reg.rank
    );
    outln!("certified against exact attention (f64 exact engine + its a priori rounding bound):\n");
    out!(
        "{}",
        text_table(&AttentionReport::TENSOR_HEADERS, &rep.tensor_rows())
    );
    write_json(&out.join("head_report.json"), &rep)?;
    write_text(&out.join("head_report.md"), &rep.to_markdown())?;
    rep.write_plot(out).map(|_| ())
}

fn model_speed(n: usize, layers: usize, seed: u64, out: &Path) -> Result<()> {
    let cfg = small_head_config(layers);
    let (model, batch) = bounded_model(cfg.clone(), QK_SCALE, n, seed)?;
    outln!(
        "\nA {layers}-layer causal model, n = {n}, d_model = {}, {} heads of d_head = {}, W_Q, W_K scaled by {QK_SCALE} (bounded scores); loss and every gradient:",
        cfg.d_model,
        cfg.n_heads,
        cfg.d_model / cfg.n_heads
    );
    let t0 = Instant::now();
    let (le, ge) = model.loss_and_gradients(&batch, &[EngineChoice::Exact])?;
    let te = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let (lp, gp) = model.loss_and_gradients(&batch, &[poly_choice(1e-3)])?;
    let tp = t1.elapsed().as_secs_f64();
    outln!("exact engine {te:.2} s, polynomial engine {tp:.2} s: speedup {:.1}x; loss {le:.9} vs {lp:.9}\n", te / tp);
    let rows: Vec<Vec<String>> = gp
        .reports
        .iter()
        .enumerate()
        .map(|(l, r)| {
            let heads = &r.heads;
            let max = |f: &dyn Fn(&polyattn::model::HeadReport) -> f64| {
                heads.iter().map(f).fold(0.0f64, f64::max)
            };
            vec![
                l.to_string(),
                r.engine.to_string(),
                sig3(max(&|h| h.regime.radius)),
                r.degree().map_or("-".into(), |g| g.to_string()),
                sig3(max(&|h| h.regime.rank as f64)),
                sig3(max(&|h| h.bound_o)),
                sig3(max(&|h| {
                    [h.bound_dq, h.bound_dk, h.bound_dv]
                        .iter()
                        .flatten()
                        .fold(0.0f64, |a, b| a.max(*b))
                })),
            ]
        })
        .collect();
    out!(
        "{}",
        text_table(
            &[
                "layer",
                "engine",
                "max R",
                "degree",
                "rank",
                "attention O bound",
                "attention grad bound"
            ],
            &rows
        )
    );
    let (ne, np) = (ge.named(), gp.named());
    let mut groups: Vec<Vec<String>> = Vec::new();
    for ((name, _, a), (_, _, b)) in ne.iter().zip(&np) {
        let scale = a.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let diff = a
            .iter()
            .zip(b)
            .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
        if name == "grad.x" || name.contains("attn.wq") || name.contains("mlp.w1") {
            groups.push(vec![
                name.clone(),
                sig3(scale),
                sig3(diff),
                sig3(diff / scale),
            ]);
        }
    }
    outln!(
        "\ngradients, polynomial vs exact engine (f64; a sample of the {} tensors):",
        ne.len()
    );
    out!(
        "{}",
        text_table(
            &["tensor", "max |exact|", "max |poly - exact|", "relative"],
            &groups
        )
    );
    let json = serde_json::json!({
        "n": n, "layers": layers, "seconds_exact": te, "seconds_poly": tp,
        "loss_exact": le, "loss_poly": lp,
        "engines": gp.reports.iter().map(|r| serde_json::json!({
            "engine": r.engine, "degree": r.degree(), "max_bound": r.max_bound()
        })).collect::<Vec<_>>(),
    });
    write_json(&out.join("model_run.json"), &json)?;
    outln!(
        "\nwrote {0}/head_report.md, {0}/head_report.json, {0}/rows.svg and {0}/model_run.json",
        out.display()
    );
    Ok(())
}
