//! PEM files: a certificate chain with its private key, and a set of CA certificates.
//!
//! A leaf: the configuration loads them at start-up to name a wrong file under its key, and the
//! server loads them to serve (and reloads the pair when its files change).

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// A certificate and key that cannot be used, naming the file and the problem.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub(crate) struct PemError {
    path: String,
    problem: String,
}

pub(crate) fn pem_error(path: &Path, problem: impl std::fmt::Display) -> PemError {
    PemError {
        path: path.display().to_string(),
        problem: problem.to_string(),
    }
}

/// Reads a PEM certificate chain and private key into a signing key for rustls.
pub(crate) fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, PemError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_error(cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(cert, e))?;
    if chain.is_empty() {
        return Err(pem_error(cert, "no PEM certificate in the file"));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, e))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| pem_error(key, format!("unusable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| pem_error(key, format!("does not match the certificate: {e}")))?;
    Ok(certified)
}

/// The CA certificates (PEM) that client certificates must chain to (`[server] client_ca`).
pub(crate) fn load_roots(ca: &Path) -> Result<rustls::RootCertStore, PemError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| pem_error(ca, e))? {
        roots
            .add(cert.map_err(|e| pem_error(ca, e))?)
            .map_err(|e| pem_error(ca, e))?;
    }
    if roots.is_empty() {
        return Err(pem_error(ca, "no PEM certificate in the file"));
    }
    Ok(roots)
}
