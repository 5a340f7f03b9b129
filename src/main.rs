//! The `entrepot` command: parses the command line and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use entrepot::Config;

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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("entrepot: {e}");
            return ExitCode::from(2);
        }
    };
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
