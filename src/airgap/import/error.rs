//! Why an import loaded nothing, as a kind a caller can act on and a message for the user.
//!
//! Every failure leaves the cache as it was (invariant 13). The variants come in the groups a
//! caller tells apart: not a layout, names no image, does not fit, corrupt, and I/O.

use std::io;

use crate::cache::CacheError;
use crate::reference::Digest;
use crate::upstream::Unresolved;

/// One reason an import loaded nothing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ImportError {
    #[error("not an OCI image layout: no index.json")]
    NoIndex,
    #[error("not a readable tar archive or OCI layout directory: {0}")]
    NotATar(#[source] io::Error),
    #[error("the archive holds {0} twice: refused (which copy is meant cannot be told)")]
    DuplicateEntry(String),
    #[error("{0} is too large")]
    TooLarge(String),
    #[error("index.json is not JSON: {0}")]
    IndexNotJson(#[source] serde_json::Error),
    #[error("index.json: {0}")]
    IndexInvalid(String),
    #[error("a `docker save` archive whose manifest.json cannot be read: {0}")]
    SavedManifest(#[source] serde_json::Error),

    #[error("it names no image to load")]
    NamesNoImage,
    #[error(
        "index.json names none of its {0} images by repository (a tag alone, or no name): give --name REPOSITORY, or --name NAME:TAG for a layout of one image"
    )]
    NoneNamed(usize),
    #[error(
        "--name {name}: a name with a tag or digest names a layout of one image, and this one holds {images}: give a repository alone (each image keeps its tag)"
    )]
    NameForMany { name: String, images: usize },
    #[error("--name names images of an OCI layout; a `docker save` archive names its own")]
    NameForSaved,
    #[error(
        "{image} is not signed: {why}{}",
        if *more > 0 { format!(" (and {more} more images; --skip-unsigned leaves them out)") } else { String::new() }
    )]
    Unsigned {
        image: String,
        why: crate::cosign::Unsigned,
        more: usize,
    },
    #[error(
        "image {image}: {source}; an archive made with `export --exclude-from` needs the earlier archive imported first"
    )]
    NotHere {
        image: String,
        #[source]
        source: Box<ImportError>,
    },
    #[error("image {name:?}: {source}")]
    BadName {
        name: String,
        #[source]
        source: Unresolved,
    },
    #[error("referrer {digest}: {source}")]
    BadReferrer {
        digest: Digest,
        #[source]
        source: Unresolved,
    },

    #[error(
        "does not fit: {new} new + {pinned} already pinned is more than cache.max_size ({max})"
    )]
    DoesNotFit {
        new: String,
        pinned: String,
        max: String,
    },

    #[error("blob {0} does not match its digest: the archive is corrupt")]
    Mismatch(Digest),
    #[error("{digest} is {actual} bytes but its descriptor says {said}")]
    WrongSize {
        digest: Digest,
        actual: u64,
        said: u64,
    },
    #[error("manifest {0} is neither in the archive nor in the cache")]
    MissingManifest(Digest),
    #[error("blob {blob} of {manifest} is neither in the archive nor in the cache")]
    MissingBlob { blob: Digest, manifest: Digest },
    #[error("manifest {0} is larger than 4 MiB")]
    ManifestTooLarge(Digest),
    #[error("{digest}: {problem}")]
    BadManifest { digest: Digest, problem: String },
    #[error("{0}")]
    BadListing(String),
    #[error("{0}, named in manifest.json, is not in the archive")]
    SavedFileMissing(String),
    #[error("{config}: the config lists {in_config} layers, manifest.json {in_manifest}")]
    LayerCount {
        config: String,
        in_config: usize,
        in_manifest: usize,
    },
    #[error(
        "{layer} does not match its diff_id {diff_id} in the image config: the archive is corrupt"
    )]
    DiffId { layer: String, diff_id: String },
    #[error("{0} does not match its name: the archive is corrupt")]
    ConfigName(String),
    #[error("{path} is not an image config: {source}")]
    NotAConfig {
        path: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("index.json: {0}")]
    ReadIndex(#[source] io::Error),
    #[error("cache tmp/: {0}")]
    Tmp(#[source] io::Error),
    #[error("blob {digest}: {source}")]
    Blob {
        digest: Digest,
        #[source]
        source: Box<ImportError>,
    },
    #[error("manifest {digest}: {source}")]
    ReadManifest {
        digest: Digest,
        #[source]
        source: io::Error,
    },
    #[error("{0} is gone")]
    Gone(Digest),
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Cache(#[from] CacheError),
}

impl ImportError {
    /// This error, said of `image` when it is content the archive lacks (the commonest cause:
    /// an incremental archive imported before the one it builds on).
    pub(crate) fn of_image(self, image: String) -> ImportError {
        match self {
            e @ (ImportError::MissingBlob { .. } | ImportError::MissingManifest(_)) => {
                ImportError::NotHere {
                    image,
                    source: Box::new(e),
                }
            }
            e => e,
        }
    }
}
