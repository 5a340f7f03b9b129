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

impl ImageName {
    pub(crate) fn parse(s: &str) -> Result<ImageName, String> {
        let bad = |why: &str| format!("{s:?} is not an image name: {why}");
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(Digest::parse(d).map_err(|_| bad("the digest after @ is not valid"))?),
            ),
            None => (s, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (Some(first.to_owned()), path)
            }
            _ => (None, rest),
        };
        // A tag follows the last ':' of the last component.
        let last_slash = path.rfind('/').map_or(0, |i| i + 1);
        let (repo, tag) = match path[last_slash..].rfind(':') {
            Some(i) => (&path[..last_slash + i], Some(&path[last_slash + i + 1..])),
            None => (path, None),
        };
        let repo = RepoName::parse(repo).ok_or_else(|| {
            bad("the repository must be lowercase components like library/busybox")
        })?;
        let reference = match (digest, tag) {
            (Some(d), _) => Reference::Digest(d),
            (None, Some(t)) => {
                Reference::Tag(Tag::parse(t).ok_or_else(|| bad("the tag is not valid"))?)
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
