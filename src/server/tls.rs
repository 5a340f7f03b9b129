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

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// How often the certificate files are looked at.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// A certificate and key that cannot be used, naming the file and the problem.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub(crate) struct TlsError {
    path: String,
    problem: String,
}

fn tls_error(path: &Path, problem: impl std::fmt::Display) -> TlsError {
    TlsError {
        path: path.display().to_string(),
        problem: problem.to_string(),
    }
}

/// Reads a PEM certificate chain and private key into a signing key for rustls.
pub(crate) fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls_error(cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_error(cert, e))?;
    if chain.is_empty() {
        return Err(tls_error(cert, "no PEM certificate in the file"));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| tls_error(key, e))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| tls_error(key, format!("unusable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| tls_error(key, format!("does not match the certificate: {e}")))?;
    Ok(certified)
}

/// The CA certificates (PEM) that client certificates must chain to (`[server] client_ca`).
pub(crate) fn client_roots(ca: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| tls_error(ca, e))? {
        roots
            .add(cert.map_err(|e| tls_error(ca, e))?)
            .map_err(|e| tls_error(ca, e))?;
    }
    if roots.is_empty() {
        return Err(tls_error(ca, "no PEM certificate in the file"));
    }
    Ok(roots)
}

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
    ) -> Result<TlsAcceptor, TlsError> {
        let first = load(cert, key)?;
        let reloading = Arc::new(Reloading {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(first)),
        });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(cert, e))?;
        let config = match client_ca {
            None => config.with_no_client_auth(),
            Some(ca) => {
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(client_roots(ca)?),
                    provider.clone(),
                )
                .allow_unauthenticated()
                .build()
                .map_err(|e| tls_error(ca, e))?;
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
            let checked = tokio::task::spawn_blocking(move || {
                let now = stamp(&c, &k);
                let loaded = (now != seen).then(|| load(&c, &k));
                (now, loaded)
            })
            .await;
            let Ok((now, Some(loaded))) = checked else {
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
