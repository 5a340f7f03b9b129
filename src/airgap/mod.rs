//! The commands that work on the cache without serving it: `warm` pulls images in through the
//! upstreams, `export` writes cached images as an OCI layout in a tar, `import` verifies and loads
//! such an archive (or a directory, or a `skopeo`/`docker save` archive), and `ls`, `rm`, `gc`
//! look after what is held. Together they carry a cache across an air gap (README, "Air-gapped
//! sites").
//!
//! Each command opens the cache as `serve` does ([`App::new`]), so it holds the cache directory
//! alone: while a `serve` runs on it, the index's lock refuses the command with a message that
//! says so, before anything is touched.

mod export;
mod import;
mod inventory;
mod layout;
mod progress;
mod warm;

use std::sync::Arc;

pub use export::{ExportOptions, export};
pub use import::{ImportOptions, import};
pub use inventory::{gc, ls, rm};
pub use warm::{WarmOptions, warm};

use crate::app::App;
use crate::config::Config;
use crate::reference::{ImageName, Reference};

/// Why a command failed: what it was doing and what went wrong, for the user.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CommandError(String);

impl CommandError {
    fn new(message: impl Into<String>) -> CommandError {
        CommandError(message.into())
    }
}

impl From<crate::app::StartError> for CommandError {
    fn from(e: crate::app::StartError) -> CommandError {
        CommandError(e.to_string())
    }
}

impl From<crate::cache::CacheError> for CommandError {
    fn from(e: crate::cache::CacheError) -> CommandError {
        CommandError(e.to_string())
    }
}

/// Opens the cache and the upstreams (blocking: call outside the async workers).
fn open(config: &Config) -> Result<Arc<App>, CommandError> {
    Ok(Arc::new(App::new(config)?))
}

/// An image named on the command line or in an archive, as (upstream, repository, tag or
/// digest): a configured upstream's name as the first component (as in request paths), else a
/// registry as dockerd reads names, else the default upstream.
fn locate(app: &App, name: &str) -> Result<(String, String, Reference), CommandError> {
    if let Some((first, rest)) = name.split_once('/')
        && let Some(up) = app.upstream_named(first)
    {
        let image = ImageName::parse(rest).map_err(CommandError)?;
        let repo = up.spell(image.repo);
        return Ok((up.name.clone(), repo.to_string(), image.reference));
    }
    let image = ImageName::parse(name).map_err(CommandError)?;
    let (up, repo) = app.upstream_for(&image).map_err(CommandError)?;
    Ok((up.name.clone(), repo.to_string(), image.reference))
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
