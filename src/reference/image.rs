//! An image as people name it on a command line or in an archive:
//! `[registry/]repository[:tag][@digest]`, as dockerd reads it (`busybox` is Docker Hub's
//! `library/busybox:latest`; a first component with a `.` or a `:`, or `localhost`, is a
//! registry).

use std::fmt;

use super::{Digest, Reference, RepoName, Tag};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ImageName {
    /// The registry as written, if the name gave one.
    pub(crate) registry: Option<String>,
    pub(crate) repo: RepoName,
    /// The digest if one was given (it wins over a tag), else the tag (`latest` by default).
    pub(crate) reference: Reference,
}

/// A string that is not an image name, and which part of it is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{name:?} is not an image name: {problem}")]
pub(crate) struct ImageNameError {
    name: String,
    problem: ImageNameProblem,
}

/// The part of an image name that is wrong.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ImageNameProblem {
    #[error("the digest after @ is not valid")]
    Digest,
    #[error("the repository must be lowercase components like library/busybox")]
    Repository,
    #[error("the tag is not valid")]
    Tag,
}

/// Whether the first component of a name is a registry host, as dockerd reads names: it holds a
/// `.` or a `:`, or it is `localhost`.
pub(crate) fn is_registry_host(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

impl ImageName {
    pub(crate) fn parse(s: &str) -> Result<ImageName, ImageNameError> {
        let bad = |problem| ImageNameError {
            name: s.to_owned(),
            problem,
        };
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(Digest::parse(d).map_err(|_| bad(ImageNameProblem::Digest))?),
            ),
            None => (s, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, path)) if is_registry_host(first) => (Some(first.to_owned()), path),
            _ => (None, rest),
        };
        // A tag follows the last ':' of the last component.
        let last_slash = path.rfind('/').map_or(0, |i| i + 1);
        let (repo, tag) = match path[last_slash..].rfind(':') {
            Some(i) => (&path[..last_slash + i], Some(&path[last_slash + i + 1..])),
            None => (path, None),
        };
        let repo = RepoName::parse(repo).ok_or_else(|| bad(ImageNameProblem::Repository))?;
        let reference = match (digest, tag) {
            (Some(d), _) => Reference::Digest(d),
            (None, Some(t)) => {
                Reference::Tag(Tag::parse(t).ok_or_else(|| bad(ImageNameProblem::Tag))?)
            }
            (None, None) => Reference::Tag(Tag::parse("latest").expect("a valid tag")),
        };
        Ok(ImageName {
            registry,
            repo,
            reference,
        })
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(r) = &self.registry {
            write!(f, "{r}/")?;
        }
        match &self.reference {
            Reference::Tag(t) => write!(f, "{}:{t}", self.repo),
            Reference::Digest(d) => write!(f, "{}@{d}", self.repo),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn names_as_dockerd_reads_them() {
        let n = ImageName::parse("busybox").unwrap();
        assert_eq!((n.registry, n.repo.as_str()), (None, "busybox"));
        assert_eq!(n.reference.to_string(), "latest");
        let n = ImageName::parse("docker.io/library/busybox:1.36").unwrap();
        assert_eq!(n.registry.as_deref(), Some("docker.io"));
        assert_eq!(n.repo.as_str(), "library/busybox");
        assert_eq!(n.reference.to_string(), "1.36");
        let n = ImageName::parse(&format!("127.0.0.1:5000/org/app:v1@{D}")).unwrap();
        assert_eq!(n.registry.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(n.reference.to_string(), D);
        assert_eq!(n.to_string(), format!("127.0.0.1:5000/org/app@{D}"));
        let n = ImageName::parse("localhost/a").unwrap();
        assert_eq!(n.registry.as_deref(), Some("localhost"));
        let n = ImageName::parse("me/app:v2").unwrap();
        assert_eq!((n.registry, n.repo.as_str()), (None, "me/app"));
        for bad in ["", "Busybox", "a:", "a@sha256:zz", "quay.io/", "a/../b:v1"] {
            assert!(ImageName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
