//! TLS on the listener (rustls), with the certificate reloaded when its files change.
//!
//! cert-manager and certbot replace the certificate and key files in place; [`Reloading`] serves
//! whatever certificate it last loaded and a watcher task looks at the files every second. A new
//! pair is used for new connections as soon as both files read and the key matches the
//! certificate; a half-written or mismatched pair is ignored (the old one stays) until it is
//! whole. HTTP/2 is offered by ALPN.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::pem::{PemError, load_pair, load_roots, pem_error};

/// How often the certificate files are looked at.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// The subject's common name of a client certificate (verified by then), which names the user.
pub(super) fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// The certificate served now, swapped when the files change.
#[derive(Debug)]
pub(super) struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// When each file last changed, and how long it is: what the watcher compares.
type Stamp = Option<(SystemTime, u64, SystemTime, u64)>;

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let c = std::fs::metadata(cert).ok()?;
    let k = std::fs::metadata(key).ok()?;
    Some((c.modified().ok()?, c.len(), k.modified().ok()?, k.len()))
}

impl Reloading {
    /// Loads the pair now (a failure stops start-up) and starts watching the files.
    /// With `client_ca`, clients may present a certificate from that CA (one from elsewhere fails
    /// the handshake); clients without one go on to HTTP authentication.
    pub(super) fn start(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<TlsAcceptor, PemError> {
        let first = load_pair(cert, key)?;
        let reloading = Arc::new(Reloading {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(first)),
        });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| pem_error(cert, e))?;
        let config = match client_ca {
            None => config.with_no_client_auth(),
            Some(ca) => {
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(load_roots(ca)?),
                    provider.clone(),
                )
                .allow_unauthenticated()
                .build()
                .map_err(|e| pem_error(ca, e))?;
                config.with_client_cert_verifier(verifier)
            }
        };
        let mut config = config.with_cert_resolver(reloading.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio::spawn(reloading.watch());
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Reloads the pair whenever either file changes, until the process ends.
    async fn watch(self: Arc<Self>) {
        let (cert, key) = (self.cert.clone(), self.key.clone());
        let mut seen = stamp(&cert, &key);
        let mut failing: Stamp = None;
        loop {
            tokio::time::sleep(RELOAD_CHECK).await;
            let (c, k) = (cert.clone(), key.clone());
            let checked = crate::blocking::off_the_workers(move || {
                let now = stamp(&c, &k);
                let loaded = (now != seen).then(|| load_pair(&c, &k));
                (now, loaded)
            })
            .await;
            let (now, Some(loaded)) = checked else {
                continue;
            };
            match loaded {
                Ok(certified) => {
                    *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(certified);
                    tracing::info!(cert = %cert.display(), "TLS certificate reloaded");
                    seen = now;
                }
                // Mid-rotation (one file new, the other not yet) this resolves itself next time;
                // said once for each state of the files that stays broken.
                Err(e) if failing == now => {
                    tracing::trace!(error = %e, "TLS files still do not load")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TLS files changed but do not load: keeping the current certificate");
                    failing = now;
                }
            }
        }
    }
}
