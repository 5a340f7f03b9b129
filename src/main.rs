//! The `entrepot` command: parses the command line and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use entrepot::{Config, LogFormat};

/// A pull-through caching mirror for container registries.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Configuration file. Without it, ./config.toml if present, else the built-in default
    /// (Docker Hub, cache in ./data).
    #[arg(long, short, global = true, env = "ENTREPOT_CONFIG")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the mirror.
    Serve,
    /// Check a configuration and print the effective settings (secrets redacted).
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("entrepot: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format());
    match cli.command {
        Command::CheckConfig => {
            print!("{}", config.describe());
            ExitCode::SUCCESS
        }
        Command::Serve => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("entrepot: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(entrepot::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("entrepot: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Log lines on stderr, filtered by `RUST_LOG` (default `info`): text, coloured only when stderr
/// is a terminal, or one JSON object per line.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
