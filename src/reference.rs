//! The registry's vocabulary: repository names, tags, digests, and references.
//!
//! Parse, don't validate: each type can only be built from text that matches the distribution
//! grammar (protocol.md), so the rest of the program never re-checks a name or a digest, and a
//! value that reaches the store or an upstream URL cannot hold `..`, `%`, a NUL, or a slash where
//! none belongs. Every layer uses these types; this module depends on nothing else here.

use std::fmt;

use sha2::Digest as _;

/// Longest repository name we accept (the spec caps registry host + `/` + name at 255).
pub const MAX_NAME_LEN: usize = 255;

/// A repository name such as `library/busybox` or `team/project/app`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(s: &str) -> Option<RepoName> {
        if s.is_empty() || s.len() > MAX_NAME_LEN {
            return None;
        }
        s.split('/')
            .all(valid_component)
            .then(|| RepoName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Number of `/`-separated components.
    pub fn components(&self) -> usize {
        self.0.split('/').count()
    }

    /// Docker Hub's rule: `busybox` means `library/busybox`.
    pub fn with_library_prefix(&self) -> RepoName {
        if self.components() == 1 {
            RepoName(format!("library/{}", self.0))
        } else {
            self.clone()
        }
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__", or one or more "-".
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !alnum(b[i]) {
            return false;
        }
    }
    true
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn parse(s: &str) -> Option<Tag> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b[1..]
                .iter()
                .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'));
        ok.then(|| Tag(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Digest algorithms we verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
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
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

/// Why a digest was refused: an unknown algorithm is "unsupported", anything else "invalid".
#[derive(Debug, PartialEq, Eq)]
pub enum DigestError {
    Invalid,
    UnsupportedAlgorithm,
}

impl Digest {
    pub fn parse(s: &str) -> Result<Digest, DigestError> {
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

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The digest of `bytes` under the same algorithm as `self`.
    pub fn of_same_kind(&self, bytes: &[u8]) -> Digest {
        let mut h = Hasher::new(self.algorithm);
        h.update(bytes);
        h.finish()
    }

    pub fn sha256_of(bytes: &[u8]) -> Digest {
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
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest { algorithm, hex }
    }
}

/// What follows `/manifests/`: a tag or a digest (anything with a `:` is a digest).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, DigestError> {
        if s.contains(':') {
            Digest::parse(s).map(Reference::Digest)
        } else {
            Tag::parse(s)
                .map(Reference::Tag)
                .ok_or(DigestError::Invalid)
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn names() {
        for ok in [
            "a",
            "library/busybox",
            "team/project/app",
            "a.b_c__d---e/f",
            "blobs/manifests/tags",
            "x0",
        ] {
            assert!(RepoName::parse(ok).is_some(), "{ok}");
        }
        for bad in [
            "",
            "A",
            "a/",
            "/a",
            "a//b",
            "..",
            "a/../b",
            "a/./b",
            "a___b",
            "-a",
            "a-",
            "a.",
            "a%2fb",
            "a\0b",
            "a b",
            "a:b",
            &"a".repeat(256),
        ] {
            assert!(RepoName::parse(bad).is_none(), "{bad:?}");
        }
        assert!(RepoName::parse(&"a".repeat(255)).is_some());
        assert_eq!(
            RepoName::parse("busybox")
                .unwrap()
                .with_library_prefix()
                .as_str(),
            "library/busybox"
        );
        assert_eq!(
            RepoName::parse("me/busybox")
                .unwrap()
                .with_library_prefix()
                .as_str(),
            "me/busybox"
        );
    }

    #[test]
    fn tags() {
        assert!(Tag::parse("latest").is_some());
        assert!(Tag::parse("_v1.2-rc.3").is_some());
        assert!(Tag::parse(&"a".repeat(128)).is_some());
        assert!(Tag::parse(&"a".repeat(129)).is_none());
        assert!(Tag::parse(".hidden").is_none());
        assert!(Tag::parse("-x").is_none());
        assert!(Tag::parse("a/b").is_none());
        assert!(Tag::parse("").is_none());
    }

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
    fn references() {
        assert!(matches!(Reference::parse("latest"), Ok(Reference::Tag(_))));
        assert!(matches!(Reference::parse(D), Ok(Reference::Digest(_))));
        assert!(Reference::parse("sha256:zz").is_err());
        assert!(Reference::parse("..").is_err());
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

            /// An accepted name can never climb out of a directory or hide an encoding.
            #[test]
            fn accepted_names_are_safe(s in "[a-z0-9./_%-]{0,80}") {
                if let Some(n) = RepoName::parse(&s) {
                    prop_assert_eq!(n.as_str(), s.as_str());
                    prop_assert!(!s.contains("..") && !s.contains("//") && !s.contains('%'));
                    prop_assert!(!s.starts_with('/') && !s.ends_with('/'));
                    prop_assert!(s.split('/').all(|c| c != "." && c != ".."));
                }
            }

            #[test]
            fn generated_names_parse(parts in prop::collection::vec("[a-z0-9]{1,8}([._-][a-z0-9]{1,8})?", 1..5)) {
                let name = parts.join("/");
                prop_assert!(RepoName::parse(&name).is_some(), "{}", name);
            }

            #[test]
            fn references_never_panic(s in "\\PC{0,200}") {
                let _ = Reference::parse(&s);
                if let Some(t) = Tag::parse(&s) {
                    prop_assert!(t.as_str().len() <= 128);
                }
            }
        }
    }
}
