//! cosign signatures: the public keys a site trusts, and whether an image carries a signature by
//! one of them.
//!
//! cosign's formats (sigstore/cosign `specs/SIGNATURE_SPEC.md`): a signature is an image of its
//! own, tagged `sha256-<hex>.sig` beside the image (or an OCI 1.1 referrer of it), whose layers
//! of media type `application/vnd.dev.cosign.simplesigning.v1+json` are each a "simple signing"
//! payload, JSON whose `critical.image.docker-manifest-digest` names the signed image, with the
//! signature over exactly the payload's bytes, base64, in the layer's
//! `dev.cosignproject.cosign/signature` annotation. Keys are PKIX `PUBLIC KEY` PEM files, as
//! `cosign generate-key-pair` writes them: ECDSA P-256 (signatures ASN.1 DER over SHA-256),
//! Ed25519, or RSA (PKCS#1 v1.5, SHA-256).
//!
//! The cryptography is ring's (already the TLS provider: one crate for the job), the key's DER
//! is read with x509-parser (already reading client certificates); nothing here does arithmetic.

use std::path::PathBuf;

use base64::Engine as _;
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use serde_json::Value;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer as _;

use crate::reference::Digest;

/// cosign's payload layer media type.
pub(crate) const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The annotation holding a payload's signature.
const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// The keys a site trusts (none: nothing is required).
#[derive(Default)]
pub(crate) struct Keys {
    keys: Vec<Key>,
}

struct Key {
    algorithm: &'static dyn VerificationAlgorithm,
    /// The subjectPublicKey bits, as ring takes them.
    public: Vec<u8>,
}

/// A key file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("signing key {file}: {problem}")]
pub(crate) struct KeyError {
    file: String,
    problem: String,
}

impl Keys {
    /// Reads each key file: a PEM `PUBLIC KEY` of a kind cosign makes.
    pub(crate) fn read(files: &[PathBuf]) -> Result<Keys, KeyError> {
        let mut keys = Vec::new();
        for file in files {
            let bad = |problem: String| KeyError {
                file: file.display().to_string(),
                problem,
            };
            let text = std::fs::read(file).map_err(|e| bad(e.to_string()))?;
            let pem = x509_parser::pem::Pem::iter_from_buffer(&text)
                .next()
                .ok_or_else(|| bad("no PEM block in it".into()))?
                .map_err(|e| bad(format!("not PEM: {e}")))?;
            if pem.label != "PUBLIC KEY" {
                return Err(bad(format!(
                    "a PEM {:?} block, not a PUBLIC KEY (cosign's .pub file)",
                    pem.label
                )));
            }
            keys.push(Key::of_spki(&pem.contents).map_err(bad)?);
        }
        Ok(Keys { keys })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn verify(&self, payload: &[u8], signature: &[u8]) -> bool {
        self.keys.iter().any(|k| {
            UnparsedPublicKey::new(k.algorithm, &k.public)
                .verify(payload, signature)
                .is_ok()
        })
    }
}

impl Key {
    fn of_spki(der: &[u8]) -> Result<Key, String> {
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(der)
            .map_err(|e| format!("not a PKIX public key: {e}"))?;
        let oid = &spki.algorithm.algorithm;
        let algorithm: &'static dyn VerificationAlgorithm = if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| x509_parser::der_parser::oid::Oid::try_from(p).ok());
            if curve.as_ref() != Some(&OID_EC_P256) {
                return Err("an elliptic-curve key on a curve other than P-256".into());
            }
            &signature::ECDSA_P256_SHA256_ASN1
        } else if *oid == OID_SIG_ED25519 {
            &signature::ED25519
        } else if *oid == OID_PKCS1_RSAENCRYPTION {
            &signature::RSA_PKCS1_2048_8192_SHA256
        } else {
            return Err(format!(
                "a key of algorithm {oid}: cosign's are ECDSA P-256, Ed25519 or RSA"
            ));
        };
        Ok(Key {
            algorithm,
            public: spki.subject_public_key.data.to_vec(),
        })
    }
}

/// Why an image is not taken as signed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum Unsigned {
    #[error("it has no cosign signature")]
    NoSignature,
    #[error("none of its {0} signatures is by a trusted key")]
    OtherKey(usize),
    #[error("its signature is over {0}, another image")]
    OtherImage(String),
}

/// Whether `image` carries a valid signature by one of `keys` among `candidates` (the manifests
/// of its `.sig` tag and its signature referrers); `payload` reads a layer's bytes (None if not
/// held; the caller bounds what it reads).
pub(crate) fn verify(
    keys: &Keys,
    image: &Digest,
    candidates: &[&[u8]],
    payload: impl Fn(&Digest) -> Option<Vec<u8>>,
) -> Result<(), Unsigned> {
    let mut tried = 0;
    let mut over_another = None;
    for manifest in candidates {
        let Ok(m) = serde_json::from_slice::<Value>(manifest) else {
            continue;
        };
        for layer in m["layers"].as_array().into_iter().flatten() {
            if layer["mediaType"].as_str() != Some(SIMPLE_SIGNING) {
                continue;
            }
            let (Some(sig), Some(digest)) = (
                layer["annotations"][SIGNATURE_ANNOTATION].as_str(),
                layer["digest"].as_str().and_then(|d| Digest::parse(d).ok()),
            ) else {
                continue;
            };
            let (Ok(sig), Some(bytes)) = (
                base64::engine::general_purpose::STANDARD.decode(sig),
                payload(&digest),
            ) else {
                continue;
            };
            tried += 1;
            if !keys.verify(&bytes, &sig) {
                continue;
            }
            // Valid: but it must say it signs this image.
            let signed = serde_json::from_slice::<Value>(&bytes).ok().and_then(|p| {
                p["critical"]["image"]["docker-manifest-digest"]
                    .as_str()
                    .map(str::to_owned)
            });
            match signed {
                Some(d) if d == image.to_string() => return Ok(()),
                Some(d) => over_another = Some(d),
                None => over_another = Some("nothing (no docker-manifest-digest)".into()),
            }
        }
    }
    match (over_another, tried) {
        (Some(d), _) => Err(Unsigned::OtherImage(d)),
        (None, 0) => Err(Unsigned::NoSignature),
        (None, n) => Err(Unsigned::OtherKey(n)),
    }
}

/// cosign's tag for the signature of `digest`: `sha256-<hex>.sig`.
pub(crate) fn signature_tag(digest: &Digest) -> String {
    format!("{}-{}.sig", digest.algorithm().name(), digest.hex())
}

/// cosign's `sha256-<hex>.sig|.att|.sbom`: a tag that names another image's signature,
/// attestation or SBOM, not an image of its own.
pub(crate) fn is_cosign_tag(tag: &str) -> bool {
    let Some((alg_hex, suffix)) = tag.rsplit_once('.') else {
        return false;
    };
    matches!(suffix, "sig" | "att" | "sbom")
        && alg_hex
            .strip_prefix("sha256-")
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use base64::Engine as _;

    use super::*;

    fn openssl(args: &[&str], dir: &Path) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl must be installed");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A signature manifest as cosign writes it: one simple-signing layer, its signature in the
    /// annotation.
    fn signature_manifest(payload_digest: &Digest, size: usize, sig: &[u8]) -> Vec<u8> {
        serde_json::json!({
            "schemaVersion": 2,
            "layers": [{
                "mediaType": SIMPLE_SIGNING,
                "digest": payload_digest.to_string(),
                "size": size,
                "annotations": {SIGNATURE_ANNOTATION: base64::engine::general_purpose::STANDARD.encode(sig)},
            }],
        })
        .to_string()
        .into_bytes()
    }

    /// cosign's other key kinds verify as ECDSA P-256 does (that one is tested end to end in
    /// tests/signed.rs): an Ed25519 key (the signature over the payload itself) and an RSA key
    /// (PKCS#1 v1.5 over SHA-256), made and used by openssl as cosign would; each key's
    /// signature fails under the other key.
    #[test]
    fn ed25519_and_rsa_keys_verify_their_signatures_and_only_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let image = Digest::sha256_of(b"the image");
        let payload = serde_json::json!({
            "critical": {"image": {"docker-manifest-digest": image.to_string()}, "type": "cosign container image signature"},
        })
        .to_string();
        std::fs::write(d.join("payload"), &payload).unwrap();
        let payload_digest = Digest::sha256_of(payload.as_bytes());
        openssl(&["genpkey", "-algorithm", "ed25519", "-out", "ed.key"], d);
        openssl(&["pkey", "-in", "ed.key", "-pubout", "-out", "ed.pub"], d);
        openssl(
            &[
                "pkeyutl", "-sign", "-rawin", "-inkey", "ed.key", "-in", "payload", "-out",
                "ed.sig",
            ],
            d,
        );
        openssl(
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                "rsa.key",
            ],
            d,
        );
        openssl(&["pkey", "-in", "rsa.key", "-pubout", "-out", "rsa.pub"], d);
        openssl(
            &[
                "dgst", "-sha256", "-sign", "rsa.key", "-out", "rsa.sig", "payload",
            ],
            d,
        );
        let read = |f: &str| Keys::read(&[d.join(f)]).unwrap();
        let payload_of =
            |want: &Digest| (*want == payload_digest).then(|| payload.clone().into_bytes());
        for (key, other) in [("ed", "rsa"), ("rsa", "ed")] {
            let sig = std::fs::read(d.join(format!("{key}.sig"))).unwrap();
            let manifest = signature_manifest(&payload_digest, payload.len(), &sig);
            let candidates = [manifest.as_slice()];
            assert!(
                verify(
                    &read(&format!("{key}.pub")),
                    &image,
                    &candidates,
                    payload_of
                )
                .is_ok(),
                "{key}"
            );
            assert!(matches!(
                verify(
                    &read(&format!("{other}.pub")),
                    &image,
                    &candidates,
                    payload_of
                ),
                Err(Unsigned::OtherKey(1))
            ));
        }
    }

    #[test]
    fn cosign_tags_are_told_from_image_tags() {
        let hex = "a".repeat(64);
        assert!(super::is_cosign_tag(&format!("sha256-{hex}.sig")));
        assert!(super::is_cosign_tag(&format!("sha256-{hex}.att")));
        assert!(super::is_cosign_tag(&format!("sha256-{hex}.sbom")));
        assert!(!super::is_cosign_tag(&format!("sha256-{hex}")));
        assert!(!super::is_cosign_tag("v1.sig"));
        assert!(!super::is_cosign_tag(&format!(
            "sha256-{}.sig",
            "a".repeat(63)
        )));
    }
}
