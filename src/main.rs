//! The `holdfast` binary: reads the configuration, starts logging and the
//! runtime, and hands the subcommand to `cli`.

mod cli;

use clap::Parser;
use holdfast::config::Config;
use std::process::ExitCode;

/// mimalloc: with glibc's malloc, malloc, free and consolidation were a
/// large share of a verification's CPU under the multi-threaded runtime
/// (docs/performance.md, "Figures behind the code").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    holdfast::telemetry::init(config.env);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli.run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("holdfast: {e}");
            ExitCode::FAILURE
        }
    }
}
