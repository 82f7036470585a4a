//! The `polyattn` binary: see `polyattn --help`.
//!
//! Exit status: 0 on success; 1 for an error of the run (one line on stderr,
//! `polyattn: error: ...`); 2 for a usage error (clap's message: the error on the
//! first line, then the usage); 141 when standard output is a pipe whose reader went
//! away (quietly, as a process ended by SIGPIPE: the files already written are
//! complete); 130 after SIGINT, SIGTERM or SIGHUP, with every temporary file removed.

use clap::Parser;
use polyattn::Error;
use polyattn_tools::cli::{attention_cmd, demo, sweep, Cli, Command};
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    // An interrupted run leaves the previous outputs intact and no temporaries: the
    // handler removes every temporary the writers still hold, then exits.
    let _ = ctrlc::set_handler(|| {
        polyattn::output::remove_live_temporaries();
        std::process::exit(130);
    });
    let cli = Cli::parse();
    polyattn_tools::cli::set_max_memory(cli.max_memory);
    let result = match &cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Attention(a) => attention_cmd::run(a),
        Command::Certify(a) => polyattn_tools::cli::certify_cmd::run(a),
        #[cfg(feature = "certify")]
        Command::Lemmas(a) => polyattn_tools::cli::lemmas::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::Model(a) => polyattn_tools::cli::model_cmd::run(a),
        Command::Train(a) => polyattn_tools::cli::train_cmd::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Stdout(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::from(141),
        Err(e) => {
            // Even stderr may be closed: never panic over a message.
            let _ = writeln!(std::io::stderr(), "polyattn: error: {e}");
            ExitCode::FAILURE
        }
    }
}
