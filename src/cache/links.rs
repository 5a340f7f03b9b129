//! Blob links: which repositories may be served which cached content.
//!
//! Content is stored once by digest, but a registry grants it per repository: a client that
//! knows a private layer's digest must not read it through a public repository's name, or
//! through another upstream. So a cached blob or manifest is served under (upstream, repository)
//! only if that pair is linked to its digest: the mirror fetched it from there, a manifest fetched
//! from (or confirmed by) there lists it, or an upstream HEAD there answered 200. Anything else
//! goes upstream like a miss (ARCHITECTURE.md, invariant 10).
//!
//! Links also carry the size a manifest's descriptor gave, so an upstream answer of another
//! length is refused before a byte is released; a size counts only for the repository whose
//! manifest gave it. They live in memory under the cache's lock and
//! in the index's `links` table (so they hold across restarts and offline), and go when their
//! digest is evicted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::{Cache, CacheError};
use crate::manifest::descriptors;
use crate::reference::{Digest, RepoName};

/// The links of every digest the cache knows of.
///
/// A year-old cache holds a million links over a few thousand repositories: each scope's text
/// is held once (`scopes`), and a link is that shared name and a size.
#[derive(Default)]
pub(super) struct Links {
    by_digest: HashMap<Digest, Vec<Link>>,
    scopes: HashSet<Arc<str>>,
}

struct Link {
    scope: Scope,
    size: Option<u64>,
}

/// An (upstream, repository) pair as a link names it: which repository of which upstream may be
/// served a digest. The index stores it as `upstream\0repository` (no name holds a NUL); this
/// type is the only place that spelling is made.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Scope(Arc<str>);

impl Scope {
    /// As the index stores it.
    pub(super) fn as_str(&self) -> &str {
        &self.0
    }

    /// The upstream and repository it names.
    pub(super) fn parts(&self) -> Option<(&str, &str)> {
        self.0.split_once('\0')
    }
}

/// What [`Links`] accepts as a scope: a [`Scope`] (and, in unit tests, its stored text).
pub(super) trait AsScope {
    fn scope_text(&self) -> &str;
}

impl AsScope for Scope {
    fn scope_text(&self) -> &str {
        &self.0
    }
}

impl AsScope for str {
    fn scope_text(&self) -> &str {
        self
    }
}

/// The scope of (upstream, repository).
pub(super) fn scope(upstream: &str, repo: impl std::fmt::Display) -> Scope {
    Scope(Arc::from(format!("{upstream}\0{repo}")))
}

impl Links {
    pub(super) fn has(&self, digest: &Digest, scope: &(impl AsScope + ?Sized)) -> bool {
        self.by_digest
            .get(digest)
            .is_some_and(|l| l.iter().any(|l| &*l.scope.0 == scope.scope_text()))
    }

    /// The size a manifest of `scope` gave for this digest, if one did. Only that repository's
    /// word counts: a manifest elsewhere stating a wrong size must not fail this one's fills.
    pub(super) fn size(&self, digest: &Digest, scope: &(impl AsScope + ?Sized)) -> Option<u64> {
        self.by_digest
            .get(digest)?
            .iter()
            .find(|l| &*l.scope.0 == scope.scope_text())?
            .size
    }

    /// Adds a link; true if it is new (or now carries a size it lacked).
    pub(super) fn add(
        &mut self,
        digest: &Digest,
        scope: &(impl AsScope + ?Sized),
        size: Option<u64>,
    ) -> bool {
        let links = self.by_digest.entry(digest.clone()).or_default();
        match links.iter_mut().find(|l| &*l.scope.0 == scope.scope_text()) {
            Some(l) if l.size.is_none() && size.is_some() => {
                l.size = size;
                true
            }
            Some(_) => false,
            None => {
                let text = scope.scope_text();
                let shared = match self.scopes.get(text) {
                    Some(s) => s.clone(),
                    None => {
                        let s: Arc<str> = Arc::from(text);
                        self.scopes.insert(s.clone());
                        s
                    }
                };
                links.push(Link {
                    scope: Scope(shared),
                    size,
                });
                true
            }
        }
    }

    pub(super) fn forget(&mut self, digest: &Digest) {
        self.by_digest.remove(digest);
    }

    /// Removes one repository's link to `digest`.
    pub(super) fn unlink(&mut self, digest: &Digest, scope: &Scope) {
        if let Some(links) = self.by_digest.get_mut(digest) {
            links.retain(|l| l.scope.0 != scope.0);
            if links.is_empty() {
                self.by_digest.remove(digest);
            }
        }
    }

    /// The scopes `digest` is linked to.
    pub(super) fn scopes(&self, digest: &Digest) -> impl Iterator<Item = &Scope> {
        self.by_digest
            .get(digest)
            .into_iter()
            .flatten()
            .map(|l| &l.scope)
    }

    /// Every (digest, scope) linked.
    pub(super) fn all(&self) -> impl Iterator<Item = (&Digest, &Scope)> {
        self.by_digest
            .iter()
            .flat_map(|(d, links)| links.iter().map(move |l| (d, &l.scope)))
    }
}

impl Cache {
    /// Whether (upstream, repo) may be served this cached digest.
    pub(super) fn linked(&self, upstream: &str, repo: &RepoName, digest: &Digest) -> bool {
        self.lock().links.has(digest, &scope(upstream, repo))
    }

    /// Links these digests to (upstream, repo), in memory and (for the new ones) in the index.
    pub(super) async fn link(
        &self,
        upstream: &str,
        repo: &RepoName,
        items: impl IntoIterator<Item = (Digest, Option<u64>)>,
    ) -> Result<(), CacheError> {
        let scope = scope(upstream, repo);
        let new: Vec<(Digest, String, Option<u64>)> = {
            let mut s = self.lock();
            items
                .into_iter()
                .filter(|(d, size)| s.links.add(d, &scope, *size))
                .map(|(d, size)| (d, scope.as_str().to_owned(), size))
                .collect()
        };
        if new.is_empty() {
            return Ok(());
        }
        self.with_index(move |ix| ix.put_links(&new)).await
    }

    /// Links a manifest and everything it lists to (upstream, repo).
    pub(super) async fn link_manifest(
        &self,
        upstream: &str,
        repo: &RepoName,
        digest: &Digest,
        bytes: &[u8],
    ) -> Result<(), CacheError> {
        let size = Some(bytes.len() as u64);
        let items = std::iter::once((digest.clone(), size)).chain(descriptors(bytes));
        let linked = self.link(upstream, repo, items).await;
        self.unless_full(linked, "manifest links")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_per_scope_and_keep_sizes() {
        let d = Digest::sha256_of(b"x");
        let mut l = Links::default();
        assert!(!l.has(&d, "u\0public"));
        assert!(l.add(&d, "u\0private", None));
        assert!(!l.has(&d, "u\0public"));
        assert!(l.has(&d, "u\0private"));
        assert_eq!(l.size(&d, "u\0private"), None);
        assert!(l.add(&d, "u\0private", Some(5)));
        assert!(!l.add(&d, "u\0private", Some(5)));
        assert_eq!(l.size(&d, "u\0private"), Some(5));
        l.forget(&d);
        assert!(!l.has(&d, "u\0private"));
    }

    /// One repository's manifest cannot poison another's size (issue 21): a wrong size stated
    /// by a manifest of `u\0tenant` is not what a fill under `u\0public` checks against.
    #[test]
    fn a_size_counts_only_for_the_repository_whose_manifest_gave_it() {
        let d = Digest::sha256_of(b"x");
        let mut l = Links::default();
        assert!(l.add(&d, "u\0tenant", Some(1)));
        assert!(l.add(&d, "u\0public", None));
        assert_eq!(l.size(&d, "u\0public"), None);
        assert_eq!(l.size(&d, "u\0tenant"), Some(1));
        assert_eq!(l.size(&d, "u\0other"), None);
    }
}
