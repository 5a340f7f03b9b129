//! The shared tier (`[shared]`): an object store every replica reads before the upstream and
//! writes after it, so a site's replicas fetch each blob from the upstream once between them.
//!
//! Layout under the URL's prefix, readable with ordinary tools:
//! - `blobs/<alg>/<hex>`: exactly the blob's bytes;
//! - `manifests/<alg>/<hex>`: a manifest's bytes, and `manifests/<alg>/<hex>.type` its media type;
//! - `tags/<upstream>/<repository>/<tag>`: the digest the tag last pointed at, for answering tags
//!   when the upstream cannot be reached, and its signature;
//! - `links/<alg>/<hex>/<upstream>/<repository>`: a signature saying the upstream served that
//!   manifest under that repository, for answering by digest when the upstream cannot be reached.
//!
//! Nothing read from here is trusted: blobs go through a fill (the digest checked before the
//! last byte is released) and manifests are checked against their digest. The tier is a source
//! of bytes, never of permission: the cache reads a digest from here for a repository only once
//! the upstream, a link of its own, or a record signed with `[shared] signing_key` (HMAC-SHA256,
//! a key every replica holds and the bucket's writers need not) says that repository has it. A
//! tag or link record without a valid signature is ignored and counted; without a key, none are
//! written or read. Writes happen in the
//! background after a verified fetch from the upstream, a few at a time, retried with backoff,
//! never on a client's path. Nothing here is ever deleted: sites use the store's lifecycle rules.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use object_store::path::{Path, PathPart};
use object_store::{ObjectStore, ObjectStoreExt as _, ObjectStoreScheme, PutPayload};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::Semaphore;

use crate::config::{SharedConfig, SharedSecret};
use crate::metrics::Metrics;
use crate::reference::Digest;

mod records;

/// Tries of an upload before it is given up (it is tried again after the next fetch).
const UPLOAD_TRIES: u32 = 5;

/// A shared tier that does not answer is given up on quickly: the upstream is asked instead.
fn client_options() -> object_store::ClientOptions {
    object_store::ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(300))
}

/// A couple of quick retries, then the caller falls back to the upstream (reads) or retries
/// later (uploads).
fn retry_config() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(10),
        ..object_store::RetryConfig::default()
    }
}

pub(crate) struct Shared {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    /// The URL, for messages.
    pub(crate) shown: String,
    uploads: Arc<Semaphore>,
    /// What this process last wrote for each tag: a tag revalidated to the same digest is not
    /// written again.
    tags_written: moka::sync::Cache<Path, Digest>,
    /// Link records this process wrote (or found), so each is written once.
    links_known: moka::sync::Cache<Path, ()>,
    /// `[shared] signing_key`: signs and checks tag and link records.
    signer: Option<ring::hmac::Key>,
    metrics: Arc<Metrics>,
}

/// A blob as the shared tier holds it: its size, and its bytes as they arrive.
pub(crate) struct SharedBlob {
    pub(crate) size: u64,
    pub(crate) body: BoxStream<'static, object_store::Result<Bytes>>,
}

/// What went wrong with the shared tier: always survivable (the upstream is asked instead).
#[derive(Debug, thiserror::Error)]
#[error("shared tier {url}: {reason}")]
pub(crate) struct SharedError {
    url: String,
    reason: String,
}

/// Why the `[shared]` store could not be set up (at start-up).
#[derive(Debug, thiserror::Error)]
pub(crate) enum SharedOpenError {
    #[error(transparent)]
    Url(Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Store(#[from] object_store::Error),
    #[error("{path}: {source}")]
    SecretFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} stores are not supported")]
    Unsupported(String),
}

impl Shared {
    /// The store a `[shared]` section names (credentials from the section, else the store's
    /// usual environment variables).
    pub(crate) fn open(
        cfg: &SharedConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Shared, SharedOpenError> {
        let (scheme, path) =
            ObjectStoreScheme::parse(&cfg.url).map_err(|e| SharedOpenError::Url(Box::new(e)))?;
        let store: Arc<dyn ObjectStore> = match scheme {
            ObjectStoreScheme::AmazonS3 => {
                let mut options = client_options();
                if cfg.endpoint.is_some() {
                    // A self-hosted store gets a connection per request: Garage, for one, writes
                    // an answer in pieces without TCP_NODELAY, which stalls a reused connection
                    // on delayed ACKs (a 5 KB shared-tier hit took 43 ms, 3.6 ms without reuse;
                    // `cargo bench --bench compare -- shared`). On a LAN a connection costs far
                    // less than that.
                    options = options.with_pool_max_idle_per_host(0);
                }
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(cfg.url.as_str())
                    .with_client_options(options)
                    .with_retry(retry_config())
                    .with_allow_http(cfg.allow_http);
                if let Some(e) = &cfg.endpoint {
                    b = b.with_endpoint(e);
                }
                if let Some(r) = &cfg.region {
                    b = b.with_region(r);
                }
                if let Some(k) = &cfg.access_key_id {
                    b = b.with_access_key_id(k);
                }
                match &cfg.secret_access_key {
                    Some(SharedSecret::Value(v)) => b = b.with_secret_access_key(v.expose()),
                    Some(SharedSecret::File(f)) => {
                        let key = std::fs::read_to_string(f).map_err(|source| {
                            SharedOpenError::SecretFile {
                                path: f.display().to_string(),
                                source,
                            }
                        })?;
                        b = b.with_secret_access_key(key.trim());
                    }
                    None => {}
                }
                Arc::new(b.build()?)
            }
            ObjectStoreScheme::GoogleCloudStorage => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(cfg.url.as_str())
                    .with_client_options(client_options())
                    .with_retry(retry_config())
                    .build()?,
            ),
            ObjectStoreScheme::MicrosoftAzure => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(cfg.url.as_str())
                    .with_client_options(client_options())
                    .with_retry(retry_config())
                    .build()?,
            ),
            ObjectStoreScheme::Local => Arc::new(object_store::local::LocalFileSystem::new()),
            other => return Err(SharedOpenError::Unsupported(format!("{other:?}"))),
        };
        if cfg.signing_key.is_none() {
            tracing::warn!(
                "[shared] has no signing_key: tags and links are not shared, so while the upstream is down a replica serves from the shared tier only what it has linked itself"
            );
        }
        Ok(Shared {
            store,
            prefix: path,
            shown: cfg.url.to_string(),
            uploads: Arc::new(Semaphore::new(cfg.upload_concurrency)),
            tags_written: moka::sync::Cache::new(100_000),
            links_known: moka::sync::Cache::new(100_000),
            signer: cfg
                .signing_key
                .as_ref()
                .map(|(_, k)| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k.expose().as_bytes())),
            metrics,
        })
    }

    fn error(&self, e: impl std::fmt::Display) -> SharedError {
        SharedError {
            url: self.shown.clone(),
            reason: e.to_string(),
        }
    }

    /// The object key for these components under the prefix (each component escaped).
    fn key(&self, parts: &[&str]) -> Path {
        self.prefix
            .parts()
            .chain(parts.iter().map(|p| PathPart::from(*p)))
            .collect()
    }

    fn blob_key(&self, d: &Digest) -> Path {
        self.key(&["blobs", d.algorithm().name(), &d.hex()])
    }

    fn manifest_key(&self, d: &Digest, suffix: &str) -> Path {
        self.key(&[
            "manifests",
            d.algorithm().name(),
            &format!("{}{suffix}", d.hex()),
        ])
    }

    /// A blob's bytes, if the shared tier holds it.
    pub(crate) async fn blob(&self, d: &Digest) -> Result<Option<SharedBlob>, SharedError> {
        match self.store.get(&self.blob_key(d)).await {
            Ok(got) => {
                self.metrics.shared("get_blob", "hit");
                Ok(Some(SharedBlob {
                    size: got.meta.size,
                    body: got.into_stream(),
                }))
            }
            Err(object_store::Error::NotFound { .. }) => {
                self.metrics.shared("get_blob", "miss");
                Ok(None)
            }
            Err(e) => {
                self.metrics.shared("get_blob", "error");
                Err(self.error(e))
            }
        }
    }

    /// A small object's bytes, if the shared tier holds it; a miss or an error is counted
    /// under `op` (a hit is the caller's to count, once it has checked what it read).
    async fn get_small(&self, op: &'static str, key: &Path) -> Result<Option<Bytes>, SharedError> {
        match self.store.get(key).await {
            Ok(got) => Ok(Some(got.bytes().await.map_err(|e| self.error(e))?)),
            Err(object_store::Error::NotFound { .. }) => {
                self.metrics.shared(op, "miss");
                Ok(None)
            }
            Err(e) => {
                self.metrics.shared(op, "error");
                Err(self.error(e))
            }
        }
    }

    /// A manifest's media type and bytes, if the shared tier holds them (not yet checked
    /// against the digest: the caller does that).
    pub(crate) async fn manifest(
        &self,
        d: &Digest,
    ) -> Result<Option<(String, Bytes)>, SharedError> {
        let Some(bytes) = self
            .get_small("get_manifest", &self.manifest_key(d, ""))
            .await?
        else {
            return Ok(None);
        };
        let media_type = match self.store.get(&self.manifest_key(d, ".type")).await {
            Ok(got) => got.bytes().await.map_err(|e| self.error(e))?,
            Err(e) => return Err(self.error(e)),
        };
        self.metrics.shared("get_manifest", "hit");
        Ok(Some((
            String::from_utf8_lossy(&media_type).into_owned(),
            bytes,
        )))
    }

    /// Writes a small object in the background, retrying; `forget` runs if it is given up, so
    /// the next confirmation writes it again.
    fn put_small(
        self: &Arc<Self>,
        op: &'static str,
        key: Path,
        body: String,
        d: &Digest,
        forget: impl FnOnce(&Shared, &Path) + Send + 'static,
    ) {
        let this = self.clone();
        let d = d.clone();
        tokio::spawn(async move {
            let written = this
                .retrying(op, &d, || {
                    let (store, key) = (this.store.clone(), key.clone());
                    let body = PutPayload::from(body.clone().into_bytes());
                    async move {
                        store.put(&key, body).await.map_err(std::io::Error::other)?;
                        Ok(())
                    }
                })
                .await;
            if !written {
                forget(&this, &key);
            }
        });
    }

    /// Uploads a verified blob from its open file, in the background.
    pub(crate) fn upload_blob(self: &Arc<Self>, d: Digest, file: std::fs::File) {
        let this = self.clone();
        tokio::spawn(async move {
            let key = this.blob_key(&d);
            this.retrying("put_blob", &d, || {
                let (store, key) = (this.store.clone(), key.clone());
                // Each try reads the file from its start, through a descriptor of its own.
                let file = file.try_clone();
                async move {
                    use tokio::io::AsyncSeekExt as _;
                    let mut file = tokio::fs::File::from_std(file?);
                    file.seek(std::io::SeekFrom::Start(0)).await?;
                    // Multipart above its buffer's size, one PUT below it.
                    let mut w = object_store::buffered::BufWriter::new(store, key);
                    if let Err(e) = tokio::io::copy(&mut file, &mut w).await {
                        let _ = w.abort().await;
                        return Err(e);
                    }
                    w.shutdown().await
                }
            })
            .await;
        });
    }

    /// Uploads a verified manifest and its media type, in the background.
    pub(crate) fn upload_manifest(self: &Arc<Self>, d: Digest, media_type: String, bytes: Bytes) {
        let this = self.clone();
        tokio::spawn(async move {
            let (key, type_key) = (this.manifest_key(&d, ""), this.manifest_key(&d, ".type"));
            this.retrying("put_manifest", &d, || {
                let store = this.store.clone();
                let (key, type_key) = (key.clone(), type_key.clone());
                let (bytes, media_type) = (bytes.clone(), media_type.clone());
                async move {
                    // The type first: a manifest is read only once both are there.
                    store
                        .put(&type_key, PutPayload::from(media_type.into_bytes()))
                        .await
                        .map_err(std::io::Error::other)?;
                    store
                        .put(&key, PutPayload::from(bytes))
                        .await
                        .map_err(std::io::Error::other)?;
                    Ok(())
                }
            })
            .await;
        });
    }

    /// Runs an upload a few at a time, retrying with backoff; failures are counted and logged,
    /// never fatal.
    async fn retrying<F, Fut>(&self, op: &'static str, d: &Digest, mut attempt: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::io::Result<()>>,
    {
        let mut wait = Duration::from_secs(1);
        for n in 1..=UPLOAD_TRIES {
            let result = {
                let _slot = self.uploads.acquire().await;
                attempt().await
            };
            match result {
                Ok(()) => {
                    self.metrics.shared(op, "ok");
                    return true;
                }
                Err(e) => {
                    self.metrics.shared(op, "error");
                    tracing::warn!(digest = %d, shared = %self.shown, try_ = n, error = %e, "upload to the shared tier failed");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
        false
    }
}
