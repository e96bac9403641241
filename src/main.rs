//! The `tripline` binary: command line, configuration, logging, and the wiring of the roles.
//! Nothing else lives here; every stage is a library crate.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// tripline: telematics trips in over MQTT, enriched, stored, searchable.
#[derive(Debug, Parser)]
#[command(name = "tripline", version, about, long_about = None)]
struct Cli {
    /// Configuration file (TOML); default `./tripline.toml` when present.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // clap prints help and version itself; everything else is a usage error (exit 2).
            let _ = error.print();
            return if error.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("TRIPLINE_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    tracing::debug!(config = ?cli.config, "no subcommand given");
    eprintln!("tripline: no command given; see `tripline --help` (commands arrive with their issues)");
    ExitCode::from(2)
}
