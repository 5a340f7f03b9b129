//! The `entrepot` command: parses the command line and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use entrepot::{CommandError, Config, ExportOptions, ImportOptions, LogFormat, WarmOptions};

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
    /// Pull images through the configured upstreams into the cache, without a client.
    ///
    /// Names as dockerd reads them: `busybox`, `docker.io/library/busybox:1.36`,
    /// `quay.io/org/app@sha256:...`. Every platform of an index unless --platform narrows it.
    /// Needs the cache to itself: stop `serve` on the same cache first.
    Warm {
        /// Images to warm.
        images: Vec<String>,
        /// A file of image names, one per line (blank lines and `#` comments skipped).
        #[arg(short = 'f', long = "file", value_name = "LIST")]
        list: Option<PathBuf>,
        /// Keep only this platform of a multi-platform image (`linux/amd64`); repeatable.
        #[arg(long = "platform", value_name = "OS/ARCH[/VARIANT]")]
        platforms: Vec<String>,
        /// Warm the images of what will run: Kubernetes manifests (multi-document YAML, as
        /// `kubectl apply -f` and `helm template` write them; containers, init and ephemeral
        /// containers, the helm.sh/images annotation), Compose files (services.*.image), or an
        /// image list. `-` reads standard input. Repeatable.
        #[arg(long = "from", value_name = "FILE|-")]
        from: Vec<PathBuf>,
        /// Print the images found, with where each came from, and warm nothing.
        #[arg(long)]
        dry_run: bool,
        /// Each image must carry a cosign signature by one of these public keys (PEM KEY.pub);
        /// one that does not fails, and nothing of it stays in the cache. Repeatable.
        #[arg(long, value_name = "KEY.pub")]
        require_signature: Vec<PathBuf>,
    },
    /// Write cached images as an OCI image layout in a tar (for `import` on the far side, or
    /// `skopeo copy oci-archive:FILE.tar:docker.io/library/busybox:latest`).
    Export {
        /// The archive to write.
        #[arg(short, long, value_name = "FILE.tar")]
        output: PathBuf,
        /// Images to export, as `ls` shows them.
        images: Vec<String>,
        /// Export every cached image that is complete; incomplete ones are named and left out.
        #[arg(long)]
        all: bool,
        /// With --all, refuse (exit non-zero, write nothing) if any image is incomplete.
        #[arg(long, requires = "all")]
        strict: bool,
        /// Leave out blobs an earlier archive carried (import it first on the far side).
        #[arg(long, value_name = "OLD.tar")]
        exclude_from: Option<PathBuf>,
    },
    /// Verify an archive and load its images into the cache, pinned. Nothing is loaded unless
    /// all of it verifies.
    ///
    /// Reads OCI image layouts (a tar or a directory: `export`'s, `skopeo copy ...
    /// oci-archive:` or `oci:`, umoci) and `docker save` archives (any Docker version). Names in
    /// index.json are read as containerd reads them: `busybox:1.36` is
    /// docker.io/library/busybox:1.36, a tag alone (`latest`) needs --name.
    Import {
        /// The archive or directory.
        #[arg(value_name = "FILE.tar|DIR")]
        source: PathBuf,
        /// Let the LRU evict the imported content like pulled content.
        #[arg(long)]
        unpinned: bool,
        /// A repository for the images index.json names by a tag alone or not at all
        /// (`quay.io/org/app`: each keeps its tag, an unnamed one is held by digest); or, for a
        /// layout of one image, its whole name (`quay.io/org/app:1.0`).
        #[arg(long, value_name = "REF")]
        name: Option<String>,
        /// Load nothing unless every image carries a cosign signature by one of these public
        /// keys (PEM, as `cosign generate-key-pair` writes KEY.pub); repeatable, and with
        /// `[cache] import_keys`.
        #[arg(long, value_name = "KEY.pub")]
        require_signature: Vec<PathBuf>,
        /// With keys: leave unsigned images out (each named) and load the rest.
        #[arg(long)]
        skip_unsigned: bool,
    },
    /// List cached images: tags (and images held by digest alone), platforms, sizes, last use,
    /// and whether pinned.
    Ls,
    /// Remove images from the cache, with the content no other cached image uses.
    Rm {
        /// Images as `ls` shows them (`docker.io/library/busybox:1.36`, or `...@sha256:...`),
        /// or as dockerd reads names (`busybox:1.36`).
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// Remove blobs that no cached manifest lists.
    Gc {
        /// Keep blobs used within this long (a client may still fetch their manifest).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        grace: std::time::Duration,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve) {
        cap_malloc_arenas();
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("entrepot: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format(), matches!(cli.command, Command::Serve));
    match cli.command {
        Command::CheckConfig => {
            print!("{}", config.describe());
            ExitCode::SUCCESS
        }
        Command::Warm {
            images,
            list,
            platforms,
            from,
            dry_run,
            require_signature,
        } => finish(entrepot::warm(
            &config,
            WarmOptions {
                images,
                list,
                platforms,
                from,
                dry_run,
                require_signature,
            },
        )),
        Command::Export {
            output,
            images,
            all,
            strict,
            exclude_from,
        } => finish(entrepot::export(
            &config,
            ExportOptions {
                output,
                images,
                all,
                strict,
                exclude_from,
            },
        )),
        Command::Import {
            source,
            unpinned,
            name,
            require_signature,
            skip_unsigned,
        } => finish(entrepot::import(
            &config,
            ImportOptions {
                source,
                unpinned,
                name,
                require_signature,
                skip_unsigned,
            },
        )),
        Command::Ls => finish(entrepot::ls(&config)),
        Command::Rm { images } => finish(entrepot::rm(&config, &images)),
        Command::Gc { grace } => finish(entrepot::gc(&config, grace)),
        Command::Serve => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                // A worker with nothing left to do writes out the log lines gathered so far.
                .on_thread_park(entrepot::flush_log)
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("entrepot: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let result = runtime.block_on(entrepot::run(config));
            entrepot::flush_log();
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("entrepot: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Starts `serve` again, in the same process, with glibc's malloc kept to two arenas, unless
/// the operator chose (`MALLOC_ARENA_MAX` or `GLIBC_TUNABLES` set).
///
/// glibc gives threads that allocate at once arenas of their own, up to 8 a core, and keeps what
/// was freed in each. `serve` reads the index and the store on tokio's blocking pool, whose
/// threads come and go, so redb's page cache and the manifests read were spread over 16 arenas:
/// at a million entries, 176 MiB idle became 317 MiB after 10 s of warm traffic, and 218 MiB with
/// two arenas, at the same rates (`scripts/bench.sh scale`). The variable is read only at a
/// process's start, and setting it from Rust needs code this crate forbids (`mallopt`); so the
/// program image is started once more with it set (`exec`: same process id, same descriptors).
/// Should that fail, `serve` goes on as it is.
fn cap_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        const MALLOC_ARENAS: &str = "2";
        if std::env::var_os("MALLOC_ARENA_MAX").is_some()
            || std::env::var_os("GLIBC_TUNABLES").is_some()
        {
            return;
        }
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_else(|| "entrepot".into());
        let e = std::process::Command::new("/proc/self/exe")
            .arg0(arg0)
            .args(args)
            .env("MALLOC_ARENA_MAX", MALLOC_ARENAS)
            .exec();
        eprintln!(
            "entrepot: could not start again with MALLOC_ARENA_MAX={MALLOC_ARENAS} ({e}); going on"
        );
    }
}

/// A command's exit: 0, or 1 with what failed on stderr.
fn finish(result: Result<(), CommandError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("entrepot: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Log lines on stderr, filtered by `RUST_LOG` (default `info`): text, coloured only when stderr
/// is a terminal, or one JSON object per line. `serve` writes them in batches (`log_out.rs`).
fn init_logging(format: LogFormat, batched: bool) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let writer = if batched {
        BoxMakeWriter::new(entrepot::BatchedStderr::start())
    } else {
        BoxMakeWriter::new(std::io::stderr)
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => {
            entrepot::log_json(true);
            builder.json().flatten_event(true).init()
        }
    }
}
