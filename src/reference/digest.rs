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
///
/// Held as the hash's bytes, not its text: the cache keeps one per entry and per link, a million
/// of each in a year-old cache, and a sha256 digest is then 40 bytes with nothing on the heap
/// (its text was 32 bytes and an 80-byte allocation). The order is the text's (algorithm, then
/// hex), as hex keeps the bytes' order.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Digest(Hash);

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Hash {
    Sha256([u8; 32]),
    Sha512(Box<[u8; 64]>),
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
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
        if hex.len() != algorithm.hex_len() {
            return Err(DigestError::Invalid);
        }
        // Lowercase hex only, checked and decoded in one pass (a million at start-up).
        fn nibble(b: u8) -> Option<u8> {
            match b {
                b'0'..=b'9' => Some(b - b'0'),
                b'a'..=b'f' => Some(b - b'a' + 10),
                _ => None,
            }
        }
        let mut bytes = [0u8; 64];
        let n = algorithm.hex_len() / 2;
        for (out, pair) in bytes[..n].iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            match (nibble(pair[0]), nibble(pair[1])) {
                (Some(hi), Some(lo)) => *out = hi << 4 | lo,
                _ => return Err(DigestError::Invalid),
            }
        }
        Ok(Digest::from_bytes(algorithm, &bytes[..n]))
    }

    /// A digest from its hash's bytes (as many as the algorithm's hash has).
    fn from_bytes(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        match algorithm {
            Algorithm::Sha256 => {
                Digest(Hash::Sha256(bytes.try_into().expect("32 bytes of sha256")))
            }
            Algorithm::Sha512 => Digest(Hash::Sha512(Box::new(
                bytes.try_into().expect("64 bytes of sha512"),
            ))),
        }
    }

    pub(crate) fn algorithm(&self) -> Algorithm {
        match self.0 {
            Hash::Sha256(_) => Algorithm::Sha256,
            Hash::Sha512(_) => Algorithm::Sha512,
        }
    }

    fn bytes(&self) -> &[u8] {
        match &self.0 {
            Hash::Sha256(b) => b,
            Hash::Sha512(b) => &b[..],
        }
    }

    /// The hash in lowercase hex.
    pub(crate) fn hex(&self) -> String {
        hex::encode(self.bytes())
    }

    /// The digest of `bytes` under the same algorithm as `self`.
    pub(crate) fn of_same_kind(&self, bytes: &[u8]) -> Digest {
        let mut h = Hasher::new(self.algorithm());
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
        f.write_str(self.algorithm().name())?;
        f.write_str(":")?;
        let mut buf = [0u8; 128];
        let hex = &mut buf[..self.bytes().len() * 2];
        hex::encode_to_slice(self.bytes(), hex).expect("twice the bytes");
        f.write_str(std::str::from_utf8(hex).expect("hex is ASCII"))
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
        match self {
            Hasher::Sha256(h) => Digest::from_bytes(Algorithm::Sha256, &h.finalize()),
            Hasher::Sha512(h) => Digest::from_bytes(Algorithm::Sha512, &h.finalize()),
        }
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

    #[test]
    fn a_sha256_digest_is_forty_bytes_and_sorts_as_its_text() {
        assert_eq!(std::mem::size_of::<Digest>(), 40);
        let a = Digest::parse(&format!("sha256:0f{}", "0".repeat(62))).unwrap();
        let b = Digest::parse(&format!("sha256:a0{}", "0".repeat(62))).unwrap();
        let c = Digest::parse(&format!("sha512:00{}", "0".repeat(126))).unwrap();
        assert!(a < b && b < c);
        assert_eq!(a.hex(), format!("0f{}", "0".repeat(62)));
        assert_eq!(format!("{a:?}"), format!("Digest({a})"));
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Digests sort as their text does.
            #[test]
            fn digests_sort_as_their_text(x in "[0-9a-f]{64}", y in "[0-9a-f]{64}") {
                let (a, b) = (format!("sha256:{x}"), format!("sha256:{y}"));
                let (da, db) = (Digest::parse(&a).unwrap(), Digest::parse(&b).unwrap());
                prop_assert_eq!(da.cmp(&db), a.cmp(&b));
            }

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
