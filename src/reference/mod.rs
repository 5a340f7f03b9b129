//! The registry's vocabulary: repository names, tags, digests, and references.
//!
//! Parse, don't validate: each type can only be built from text that matches the distribution
//! spec's grammar, so the rest of the program never re-checks a name or a digest, and a value that
//! reaches the store or an upstream URL cannot hold `..`, `%`, a NUL, or a slash where none
//! belongs. Digests live in `digest.rs`. Every layer uses these types; this module depends on nothing else here.

mod digest;
mod image;

use std::fmt;

pub(crate) use digest::{Algorithm, Digest, DigestError, Hasher};
pub(crate) use image::{ImageName, ImageNameError, is_registry_host};

/// Longest repository name we accept (the spec caps registry host + `/` + name at 255).
pub(crate) const MAX_NAME_LEN: usize = 255;

/// A repository name such as `library/busybox` or `team/project/app`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct RepoName(String);

impl RepoName {
    pub(crate) fn parse(s: &str) -> Option<RepoName> {
        if s.is_empty() || s.len() > MAX_NAME_LEN {
            return None;
        }
        s.split('/')
            .all(valid_component)
            .then(|| RepoName(s.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// Number of `/`-separated components.
    pub(crate) fn components(&self) -> usize {
        self.0.split('/').count()
    }

    /// Docker Hub's rule: `busybox` means `library/busybox`.
    pub(crate) fn with_library_prefix(&self) -> RepoName {
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
pub(crate) struct Tag(String);

impl Tag {
    pub(crate) fn parse(s: &str) -> Option<Tag> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b[1..]
                .iter()
                .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'));
        ok.then(|| Tag(s.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What follows `/manifests/`: a tag or a digest (anything with a `:` is a digest).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    pub(crate) fn parse(s: &str) -> Result<Reference, DigestError> {
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
