//! `polyattn certify`: the polynomial engine on a file's `q`, `k`, `v` (and `do`),
//! certified against exact attention ([`crate::certify::report`]). Writes
//! `report.json` (schema `polyattn.certify.attention/1`), `report.md` and the plot
//! `rows.svg` (each tensor's certified error along the rows, with its a priori bound)
//! and `timings.json` (wall times: the only part that differs between two runs)
//! to `--out`, and prints the summary table. With `--weights`, a whole model run instead
//! ([`crate::certify::model_report`], schema `polyattn.certify.model/1`): `--input` is
//! then the model's input file, every layer runs the polynomial engine where it
//! certifies (else exact, with the reason), computed in f64; its plot is `errors.svg`
//! (one point per tensor: the run's error, the exact engine's, the propagated bound).
//! With `--candidate`, someone else's results instead
//! ([`crate::certify::candidate`], schema `polyattn.certify.candidate/1`): `report.json`,
//! `report.md`, `bias_rows.csv` (every row's certified mean error) and `rows.svg`
//! (unless every error is zero); everything is computed before anything is written.

use super::{MaskOpts, PolyArgs};
use crate::certify::candidate::{certify_candidate, CandidateOptions, CandidateReport, Layout};
use crate::certify::model_report::{certify_model_with, ModelReport};
use crate::certify::report::{certify_attention_with_bias, AttentionReport, ReferenceChoice};
use crate::harness::{text_table, write_json, write_text};
use crate::inputs::stacks::{input_dtype, load_all};
use polyattn::error::Result;
use polyattn::io::{DType, TensorFile};
use polyattn::model::file::{read_batch, read_model};
use polyattn::model::{EngineChoice, PolySettings};
use polyattn::output::{check_output_dir, StagedDir};
use polyattn::scalar::Real;
use std::path::PathBuf;

/// Arguments of `polyattn certify`.
#[derive(Debug, clap::Args)]
pub struct CertifyArgs {
    /// Input safetensors file with `q`, `k`, `v` and optionally `do` (as `attention`);
    /// with --weights, the model's input (`x` or `tokens`; `y` or `labels`).
    #[arg(long)]
    pub input: PathBuf,
    /// A model's weights file (as `polyattn model`): certify a whole model run; --mask
    /// and --scale then come from the model (causal flag, 1/sqrt(d_head)).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Output folder for report.json, report.md and the plot (rows.svg or errors.svg).
    #[arg(long, default_value = "results/certify")]
    pub out: PathBuf,
    /// Someone else's results to certify (any of `o`, `lse`, `dq`, `dk`, `dv`; F16,
    /// BF16, F32 or F64) against exact attention of --input's q, k, v (do), with
    /// FlashAttention's acceptance rule.
    #[arg(long, conflicts_with = "weights")]
    pub candidate: Option<PathBuf>,
    /// Layout of the tensors (--candidate): bhsd = [batch, heads, seq, dim] (PyTorch),
    /// bshd = [batch, seq, heads, dim] (FlashAttention); lse is [batch, heads, seq].
    /// varlen = FlashAttention's packed sequences, [total, heads, dim] with the input
    /// file's I32/I64 `cu_seqlens_q`, `cu_seqlens_k` offsets; lse is [heads, total_q];
    /// masks, windows and ALiBi apply within each sequence.
    #[arg(long, value_enum, default_value_t = Layout::Bhsd)]
    pub layout: Layout,
    /// The mask and window.
    #[command(flatten)]
    pub mask: MaskOpts,
    /// The score scale tau (default 1/sqrt(d)).
    #[arg(long, allow_hyphen_values = true)]
    pub scale: Option<f64>,
    /// Score softcapping C: each score s = tau q.k becomes C tanh(s / C) before the
    /// bias (Gemma 2; FlashAttention's softcap; 0 means none, as there). --candidate,
    /// and a head's certification of the polynomial engine, which refuses it.
    #[arg(long, allow_hyphen_values = true)]
    pub softcap: Option<f64>,
    /// Which reference: auto (a head: MPFR when small, else f64 with its rounding
    /// bound; a model: MPFR when small, double-double balls up to n^2 d_model m =
    /// 2.2e9, else f64 exact, measured only).
    #[arg(long, value_enum, default_value_t = ReferenceChoice::Auto)]
    pub reference: ReferenceChoice,
    /// Model reports: power iterations per norm for docs/math.md §7.3's propagated bound
    /// (0 leaves it out; it costs that many exact passes per layer).
    #[arg(long, default_value_t = crate::certify::model_report::PROPAGATION_ITERS)]
    pub power_iters: usize,
    /// Polynomial-engine options.
    #[command(flatten)]
    pub poly: PolyArgs,
}

/// Runs the subcommand.
pub fn run(args: &CertifyArgs) -> Result<()> {
    if args.candidate.is_none() && args.layout != Layout::Bhsd {
        return Err(polyattn::error::Error::InvalidParameter {
            name: "layout",
            value: args.layout.name().into(),
            reason: "--layout applies to --candidate only (the other modes read [.., n, d] stacks)"
                .into(),
        });
    }
    if let Some(w) = &args.weights {
        return run_model(args, w);
    }
    if let Some(c) = &args.candidate {
        return run_candidate(args, c);
    }
    check_output_dir(&args.out, &[&args.input])?;
    let file = TensorFile::read(&args.input)?;
    let report = match input_dtype(&file)? {
        DType::F16 | DType::BF16 | DType::F32 => certify::<f32>(&file, args)?,
        DType::F64 => certify::<f64>(&file, args)?,
    };
    // The report folder is complete or untouched (polyattn::output::StagedDir).
    let staged = StagedDir::new(&args.out)?;
    write_json(&staged.path().join("report.json"), &report)?;
    write_text(&staged.path().join("report.md"), &report.to_markdown())?;
    write_json(&staged.path().join("timings.json"), &report.timings())?;
    report.write_plot(staged.path())?;
    staged.commit()?;
    out!(
        "{}",
        text_table(&AttentionReport::TENSOR_HEADERS, &report.tensor_rows())
    );
    outln!(
        "wrote report.json, report.md, timings.json and rows.svg to {}",
        args.out.display()
    );
    Ok(())
}

fn run_candidate(args: &CertifyArgs, candidate: &std::path::Path) -> Result<()> {
    check_output_dir(&args.out, &[&args.input, candidate])?;
    let input = TensorFile::read(&args.input)?;
    let cand = TensorFile::read(candidate)?;
    let opts = CandidateOptions {
        mask: args.mask.mask(),
        scale: args.scale,
        layout: args.layout,
        softcap: super::softcap_of(args.softcap),
        reference: args.reference,
    };
    let report = certify_candidate(&input, &cand, &opts)?;
    // The report folder is complete or untouched (polyattn::output::StagedDir).
    let staged = StagedDir::new(&args.out)?;
    write_json(&staged.path().join("report.json"), &report)?;
    write_text(&staged.path().join("report.md"), &report.to_markdown())?;
    write_text(&staged.path().join("bias_rows.csv"), &report.row_bias_csv())?;
    write_json(&staged.path().join("timings.json"), &report.timings())?;
    let plotted = report.has_plot();
    if plotted {
        report.write_plot(staged.path())?;
    }
    staged.commit()?;
    outln!("reference: {}", report.reference_text());
    out!(
        "{}",
        text_table(&CandidateReport::HEADERS, &report.tensor_rows())
    );
    for h in report.hint_lines() {
        outln!("hint: {h}");
    }
    outln!(
        "wrote report.json, report.md, bias_rows.csv, timings.json{} to {}",
        if plotted { " and rows.svg" } else { "" },
        args.out.display()
    );
    Ok(())
}

fn run_model(args: &CertifyArgs, weights: &std::path::Path) -> Result<()> {
    check_output_dir(&args.out, &[&args.input, weights])?;
    let model = read_model::<f64>(&TensorFile::read(weights)?)?;
    let batch = read_batch(&TensorFile::read(&args.input)?, &model)?;
    let engine = EngineChoice::Auto(PolySettings {
        config: args.poly.config(args.mask.mask(), args.scale),
        kind: args.poly.gradient.into(),
    });
    let report = certify_model_with(&model, &batch, &[engine], args.reference, args.power_iters)?;
    let staged = StagedDir::new(&args.out)?;
    write_json(&staged.path().join("report.json"), &report)?;
    write_text(&staged.path().join("report.md"), &report.to_markdown())?;
    write_json(&staged.path().join("timings.json"), &report.timings())?;
    report.write_plot(staged.path())?;
    staged.commit()?;
    outln!("reference: {}", report.reference_text());
    out!(
        "{}",
        text_table(&ModelReport::TENSOR_HEADERS, &report.tensor_rows())
    );
    for (l, r) in report.layers.iter().enumerate() {
        outln!("layer {l}: {} ({})", r.engine, r.reason);
    }
    outln!(
        "wrote report.json, report.md, timings.json and errors.svg to {}",
        args.out.display()
    );
    Ok(())
}

fn certify<T: Real>(file: &TensorFile, args: &CertifyArgs) -> Result<AttentionReport> {
    let x = load_all::<T>(file)?;
    let cfg = args.poly.config(args.mask.mask(), args.scale);
    // This mode certifies the polynomial engine: no softcap, and a bias only as key
    // padding (the engine refuses any other).
    x.check_poly_takes(&cfg, super::softcap_of(args.softcap))
        .and_then(|()| {
            certify_attention_with_bias(
                &x.q,
                &x.k,
                &x.v,
                x.bias.as_ref(),
                x.d_o.as_ref(),
                &cfg,
                args.poly.gradient.into(),
                args.reference,
            )
        })
        .map_err(|e| x.in_file_terms(e))
}
