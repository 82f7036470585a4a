//! The `polyattn` binary: see `polyattn --help`.

use clap::Parser;
use polyattn::cli::{attention_cmd, demo, sweep, Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Attention(a) => attention_cmd::run(a),
        Command::Certify(a) => polyattn::cli::certify_cmd::run(a),
        #[cfg(feature = "certify")]
        Command::Lemmas(a) => polyattn::cli::lemmas::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::Model(a) => polyattn::cli::model_cmd::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("polyattn: error: {e}");
            ExitCode::FAILURE
        }
    }
}
