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

use std::collections::HashMap;
use std::sync::Arc;

use super::{Cache, CacheError};
use crate::manifest::descriptors;
use crate::reference::{Digest, RepoName};

/// The links of every digest the cache knows of.
///
/// A year-old cache holds a million links over a few thousand repositories, most digests linked
/// to one: each scope's text is held once (`scopes`, never shrunk: a repository's name is kept
/// for the life of the process), a link is that scope's number and a size (16 bytes), and a
/// digest's one link is held in its map slot, with nothing on the heap.
#[derive(Default)]
pub(super) struct Links {
    by_digest: HashMap<Digest, LinkSet>,
    scopes: Vec<Scope>,
    numbers: HashMap<Scope, u32>,
}

#[derive(Clone, Copy)]
struct Link {
    size: u64,
    has_size: bool,
    /// Its place in `Links::scopes`.
    scope: u32,
}

impl Link {
    fn size(&self) -> Option<u64> {
        self.has_size.then_some(self.size)
    }
}

/// A digest's links: one inline, more on the heap.
enum LinkSet {
    One(Link),
    Many(Box<[Link]>),
}

impl LinkSet {
    fn as_slice(&self) -> &[Link] {
        match self {
            LinkSet::One(l) => std::slice::from_ref(l),
            LinkSet::Many(ls) => ls,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [Link] {
        match self {
            LinkSet::One(l) => std::slice::from_mut(l),
            LinkSet::Many(ls) => ls,
        }
    }

    fn push(&mut self, link: Link) {
        let mut all = self.as_slice().to_vec();
        all.push(link);
        *self = LinkSet::Many(all.into_boxed_slice());
    }

    /// Keeps the links `keep` says to; None when none is left.
    fn retain(self, keep: impl Fn(&Link) -> bool) -> Option<LinkSet> {
        let left: Vec<Link> = self.as_slice().iter().copied().filter(keep).collect();
        match left.as_slice() {
            [] => None,
            [one] => Some(LinkSet::One(*one)),
            _ => Some(LinkSet::Many(left.into_boxed_slice())),
        }
    }
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

/// A scope's text finds its number (`Links::numbers`): hashed and compared as that text.
impl std::borrow::Borrow<str> for Scope {
    fn borrow(&self) -> &str {
        &self.0
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
    /// The number of a scope already known.
    fn number(&self, scope: &(impl AsScope + ?Sized)) -> Option<u32> {
        self.numbers.get(scope.scope_text()).copied()
    }

    /// The number of a scope, known from now on if it was not.
    fn number_or_add(&mut self, scope: &(impl AsScope + ?Sized)) -> u32 {
        if let Some(n) = self.number(scope) {
            return n;
        }
        let s = Scope(Arc::from(scope.scope_text()));
        let n = u32::try_from(self.scopes.len()).expect("fewer than 2^32 repositories");
        self.scopes.push(s.clone());
        self.numbers.insert(s, n);
        n
    }

    fn link(&self, digest: &Digest, scope: &(impl AsScope + ?Sized)) -> Option<&Link> {
        let n = self.number(scope)?;
        self.by_digest
            .get(digest)?
            .as_slice()
            .iter()
            .find(|l| l.scope == n)
    }

    pub(super) fn has(&self, digest: &Digest, scope: &(impl AsScope + ?Sized)) -> bool {
        self.link(digest, scope).is_some()
    }

    /// The size a manifest of `scope` gave for this digest, if one did. Only that repository's
    /// word counts: a manifest elsewhere stating a wrong size must not fail this one's fills.
    pub(super) fn size(&self, digest: &Digest, scope: &(impl AsScope + ?Sized)) -> Option<u64> {
        self.link(digest, scope)?.size()
    }

    /// Adds a link; true if it is new (or now carries a size it lacked).
    pub(super) fn add(
        &mut self,
        digest: &Digest,
        scope: &(impl AsScope + ?Sized),
        size: Option<u64>,
    ) -> bool {
        let n = self.number_or_add(scope);
        let link = Link {
            size: size.unwrap_or(0),
            has_size: size.is_some(),
            scope: n,
        };
        let Some(links) = self.by_digest.get_mut(digest) else {
            self.by_digest.insert(digest.clone(), LinkSet::One(link));
            return true;
        };
        match links.as_mut_slice().iter_mut().find(|l| l.scope == n) {
            Some(l) if !l.has_size && link.has_size => {
                *l = link;
                true
            }
            Some(_) => false,
            None => {
                links.push(link);
                true
            }
        }
    }

    pub(super) fn forget(&mut self, digest: &Digest) {
        self.by_digest.remove(digest);
    }

    /// Removes one repository's link to `digest`.
    pub(super) fn unlink(&mut self, digest: &Digest, scope: &Scope) {
        let Some(n) = self.number(scope) else {
            return;
        };
        if let Some(links) = self.by_digest.remove(digest)
            && let Some(left) = links.retain(|l| l.scope != n)
        {
            self.by_digest.insert(digest.clone(), left);
        }
    }

    /// The scopes `digest` is linked to.
    pub(super) fn scopes(&self, digest: &Digest) -> impl Iterator<Item = &Scope> {
        self.by_digest
            .get(digest)
            .map(LinkSet::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|l| &self.scopes[l.scope as usize])
    }

    /// Every (digest, scope) linked.
    pub(super) fn all(&self) -> impl Iterator<Item = (&Digest, &Scope)> {
        let scopes = &self.scopes;
        self.by_digest.iter().flat_map(move |(d, links)| {
            links
                .as_slice()
                .iter()
                .map(move |l| (d, &scopes[l.scope as usize]))
        })
    }

    /// Every digest linked to `scope`.
    pub(super) fn of_scope(&self, scope: &Scope) -> impl Iterator<Item = &Digest> {
        let n = self.number(scope);
        self.by_digest
            .iter()
            .filter(move |(_, links)| {
                n.is_some_and(|n| links.as_slice().iter().any(|l| l.scope == n))
            })
            .map(|(d, _)| d)
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
