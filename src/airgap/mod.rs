//! The commands that work on the cache without serving it: `warm` pulls images in through the
//! upstreams, `export` writes cached images as an OCI layout in a tar, `import` verifies and loads
//! such an archive (or a directory, or a `skopeo`/`docker save` archive), and `ls`, `rm`, `gc`
//! look after what is held. Together they carry a cache across an air gap (README, "Air-gapped
//! sites").
//!
//! Each command opens the cache as `serve` does ([`App::new`]), so it holds the cache directory
//! alone: while a `serve` runs on it, the index's lock refuses the command with a message that
//! says so, before anything is touched. `ls`, `rm`, `gc` and `export` instead ask a `serve`
//! running on the cache to do the work, over its admin socket (`admin/`).

mod export;
mod import;
mod inventory;
mod layout;
mod progress;
mod warm;
mod workloads;

use std::sync::Arc;

pub(crate) use export::export_in;
pub use export::{ExportOptions, export};
pub use import::{ImportOptions, import};
pub use inventory::{gc, ls, rm};
pub(crate) use inventory::{gc_in, ls_in, rm_in};
pub use warm::{WarmOptions, warm};

use crate::app::App;
use crate::config::Config;
use crate::reference::Reference;

/// Why a command failed: what it was doing and what went wrong, for the user.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct CommandError(#[from] Failure);

/// The kinds of failure behind a [`CommandError`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    #[error(transparent)]
    Start(#[from] crate::app::StartError),
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    #[error(transparent)]
    Name(#[from] crate::upstream::Unresolved),
    #[error(transparent)]
    BadName(#[from] crate::reference::ImageNameError),
    /// A name read from a file, and where.
    #[error("{from}: {source}")]
    NameAt {
        from: String,
        #[source]
        source: crate::reference::ImageNameError,
    },
    #[error(transparent)]
    Source(#[from] workloads::SourceError),
    #[error(transparent)]
    Key(#[from] crate::cosign::KeyError),
    /// An import that loaded nothing.
    #[error("{archive}: {problem}; nothing was loaded")]
    Import {
        archive: String,
        #[source]
        problem: import::ImportError,
    },
    /// The command line asks for nothing, or for two things that exclude each other.
    #[error("{0}")]
    Usage(&'static str),
    #[error("{0} is not in the cache")]
    NotCached(String),
    #[error(
        "there is no cache at {0} (cache.dir; relative paths in a config file are relative to its directory): nothing was created"
    )]
    NoCache(String),
    #[error("{0} is not in the cache: warm it first (`entrepot warm`)")]
    NotWarmed(String),
    #[error("{0}: its manifest is no longer cached")]
    ManifestGone(String),
    #[error(
        "{name} is incomplete in the cache (blob {lost} is not held: never fetched, or evicted): warm it again"
    )]
    Incomplete {
        name: String,
        lost: crate::reference::Digest,
    },
    #[error("blob {0} left the cache during the export")]
    BlobGone(crate::reference::Digest),
    #[error("{failed} of {of} images could not be warmed: {names}")]
    NotAllWarmed {
        failed: usize,
        of: usize,
        names: String,
    },
    #[error("interrupted: images warmed so far are kept; no partial file is left")]
    Interrupted,
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot watch for SIGTERM and SIGINT: {0}")]
    Signals(#[source] std::io::Error),
    /// A command a running `serve` carried out, or could not be sent.
    #[error(transparent)]
    Remote(#[from] crate::admin::RemoteError),
    /// Reading or writing a file the command was given (`what` names it).
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<crate::app::StartError> for CommandError {
    fn from(e: crate::app::StartError) -> CommandError {
        CommandError(e.into())
    }
}

impl From<crate::cache::CacheError> for CommandError {
    fn from(e: crate::cache::CacheError) -> CommandError {
        CommandError(e.into())
    }
}

impl From<crate::reference::ImageNameError> for CommandError {
    fn from(e: crate::reference::ImageNameError) -> CommandError {
        CommandError(e.into())
    }
}

/// Has a `serve` running on the cache carry out `request`: None if none answers.
fn remote(config: &Config, request: &crate::admin::Request) -> Option<Result<(), CommandError>> {
    crate::admin::remote(config, request).map(|r| r.map_err(|e| Failure::from(e).into()))
}

/// Opens the cache and the upstreams (blocking: call outside the async workers).
fn open(config: &Config) -> Result<Arc<App>, CommandError> {
    Ok(Arc::new(App::new(config)?))
}

/// As [`open`], for commands that only read: a cache directory that does not exist is an error
/// naming it, never an empty cache made on the spot.
fn open_existing(config: &Config) -> Result<Arc<App>, CommandError> {
    let dir = &config.cache.dir;
    if !dir.is_dir() {
        return Err(Failure::NoCache(dir.display().to_string()).into());
    }
    open(config)
}

/// An image named on the command line or in an archive, as (upstream, repository, tag or
/// digest): a configured upstream's name as the first component (as in request paths), else a
/// registry as dockerd reads names, else the default upstream.
fn locate(app: &App, name: &str) -> Result<(String, String, Reference), CommandError> {
    let (up, repo, reference) = app.upstreams.locate(name).map_err(Failure::from)?;
    Ok((up.name.clone(), repo.to_string(), reference))
}

/// `upstream/repo:tag`: how an image is named in archives and tables.
fn full_name(upstream: &str, repo: &str, reference: &Reference) -> String {
    match reference {
        Reference::Tag(t) => format!("{upstream}/{repo}:{t}"),
        Reference::Digest(d) => format!("{upstream}/{repo}@{d}"),
    }
}

/// `sha256:0123456789ab`: a digest short enough for a table.
fn short(digest: &crate::reference::Digest) -> String {
    let s = digest.to_string();
    s.chars().take(19).collect()
}
