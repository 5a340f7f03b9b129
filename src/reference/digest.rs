//! Content digests: `sha256:<hex>` and `sha512:<hex>`, and the incremental hash that checks them.
//!
//! A [`Digest`] can only be built from text that matches the distribution grammar, so it is safe
//! in a file name or a URL as it stands. [`Hasher`] runs over bytes as they stream through a fill
//! and yields the digest they really have, to compare with the one they were asked for.

use std::fmt;

use sha2::Digest as _;

/// Digest algorithms we verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A content digest, `sha256:<64 lowercase hex>` or `sha512:<128 lowercase hex>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Digest {
    algorithm: Algorithm,
    hex: String,
}

/// Why a digest was refused: an unknown algorithm is "unsupported", anything else "invalid".
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DigestError {
    Invalid,
    UnsupportedAlgorithm,
}

impl Digest {
    pub(crate) fn parse(s: &str) -> Result<Digest, DigestError> {
        let (alg, hex) = s.split_once(':').ok_or(DigestError::Invalid)?;
        // The spec's algorithm grammar: [a-z0-9]+([+._-][a-z0-9]+)*
        let alg_ok = !alg.is_empty()
            && alg.len() <= 32
            && alg
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
        if !alg_ok {
            return Err(DigestError::Invalid);
        }
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(DigestError::UnsupportedAlgorithm),
        };
        let hex_ok = hex.len() == algorithm.hex_len()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex_ok {
            return Err(DigestError::Invalid);
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }

    pub(crate) fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub(crate) fn hex(&self) -> &str {
        &self.hex
    }

    /// The digest of `bytes` under the same algorithm as `self`.
    pub(crate) fn of_same_kind(&self, bytes: &[u8]) -> Digest {
        let mut h = Hasher::new(self.algorithm);
        h.update(bytes);
        h.finish()
    }

    pub(crate) fn sha256_of(bytes: &[u8]) -> Digest {
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(bytes);
        h.finish()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

/// An incremental hash for one algorithm, used while bytes stream through a fill.
pub(crate) enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub(crate) fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    pub(crate) fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest { algorithm, hex }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digests() {
        let d = Digest::parse(D).unwrap();
        assert_eq!(d.to_string(), D);
        assert_eq!(Digest::sha256_of(b""), d);
        assert_eq!(Digest::parse(&D.to_uppercase()), Err(DigestError::Invalid));
        assert_eq!(
            Digest::parse(
                "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
            ),
            Err(DigestError::Invalid)
        );
        assert_eq!(Digest::parse("sha256:abc"), Err(DigestError::Invalid));
        assert_eq!(Digest::parse("sha256"), Err(DigestError::Invalid));
        assert_eq!(
            Digest::parse(&D.replace("sha256", "md5")),
            Err(DigestError::UnsupportedAlgorithm)
        );
        assert!(Digest::parse(&format!("sha512:{}", "a".repeat(128))).is_ok());
        assert_eq!(
            Digest::parse(&format!("sha512:{}", "a".repeat(64))),
            Err(DigestError::Invalid)
        );
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever the text, a digest either fails to parse or prints back exactly.
            #[test]
            fn digest_parse_round_trips(s in "\\PC{0,140}") {
                if let Ok(d) = Digest::parse(&s) {
                    prop_assert_eq!(d.to_string(), s);
                }
            }

            #[test]
            fn valid_digests_parse(hex in "[0-9a-f]{64}", hex512 in "[0-9a-f]{128}") {
                let (d256, d512) = (format!("sha256:{hex}"), format!("sha512:{hex512}"));
                prop_assert!(Digest::parse(&d256).is_ok());
                prop_assert!(Digest::parse(&d512).is_ok());
                if hex.chars().any(|c| c.is_ascii_alphabetic()) {
                    let upper = format!("sha256:{}", hex.to_uppercase());
                    prop_assert!(Digest::parse(&upper).is_err());
                }
            }
        }
    }
}
