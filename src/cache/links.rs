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

use super::lru::State;
use super::{Cache, CacheError};
use crate::manifest::descriptors;
use crate::reference::{Digest, RepoName};

/// The scopes links name: each scope's text once, and its number.
///
/// A year-old cache holds a million links over a few thousand repositories, most digests linked
/// to one. A link is its scope's number and a size (16 bytes), kept in its digest's record beside
/// the digest's entry (`lru.rs`): a digest's one link costs nothing on the heap. Scopes are never
/// forgotten (a repository's name is kept for the life of the process).
#[derive(Default)]
pub(super) struct Links {
    scopes: Vec<Scope>,
    numbers: HashMap<Scope, u32>,
}

#[derive(Clone, Copy)]
pub(super) struct Link {
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

/// A digest's links: none, one inline, or more on the heap. 16 bytes: the one link's flag leaves
/// room for the variant, and more links are behind a thin pointer (a boxed slice's two words
/// would make it 24, in every record).
pub(super) enum LinkSet {
    None,
    One(Link),
    #[allow(
        clippy::box_collection,
        reason = "a thin pointer: a Vec is three words, a boxed slice two, the box one"
    )]
    Many(Box<Vec<Link>>),
}

const _: () = assert!(std::mem::size_of::<LinkSet>() == 16);

impl LinkSet {
    fn as_slice(&self) -> &[Link] {
        match self {
            LinkSet::None => &[],
            LinkSet::One(l) => std::slice::from_ref(l),
            LinkSet::Many(ls) => ls.as_slice(),
        }
    }

    /// The set with `link` added, or `link` taking the place of one of its scope.
    fn with(&self, link: Link) -> LinkSet {
        let mut all: Vec<Link> = self
            .as_slice()
            .iter()
            .copied()
            .filter(|l| l.scope != link.scope)
            .collect();
        all.push(link);
        LinkSet::of(all)
    }

    /// The set without the link of scope `n`.
    fn without(&self, n: u32) -> LinkSet {
        LinkSet::of(
            self.as_slice()
                .iter()
                .copied()
                .filter(|l| l.scope != n)
                .collect(),
        )
    }

    fn of(links: Vec<Link>) -> LinkSet {
        match links.as_slice() {
            [] => LinkSet::None,
            [one] => LinkSet::One(*one),
            _ => LinkSet::Many(Box::new(links)),
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
}

/// The links, read and changed beside the entries they sit with.
impl State {
    fn link(&self, digest: &Digest, scope: &(impl AsScope + ?Sized)) -> Option<&Link> {
        let n = self.links.number(scope)?;
        self.lru
            .links(digest)?
            .as_slice()
            .iter()
            .find(|l| l.scope == n)
    }

    /// Whether `scope` may be served `digest`.
    pub(super) fn has_link(&self, digest: &Digest, scope: &(impl AsScope + ?Sized)) -> bool {
        self.link(digest, scope).is_some()
    }

    /// The size a manifest of `scope` gave for this digest, if one did. Only that repository's
    /// word counts: a manifest elsewhere stating a wrong size must not fail this one's fills.
    pub(super) fn link_size(
        &self,
        digest: &Digest,
        scope: &(impl AsScope + ?Sized),
    ) -> Option<u64> {
        self.link(digest, scope)?.size()
    }

    /// Adds a link; true if it is new (or now carries a size it lacked).
    pub(super) fn add_link(
        &mut self,
        digest: &Digest,
        scope: &(impl AsScope + ?Sized),
        size: Option<u64>,
    ) -> bool {
        let n = self.links.number_or_add(scope);
        let link = Link {
            size: size.unwrap_or(0),
            has_size: size.is_some(),
            scope: n,
        };
        let record = self.lru.record_of(digest);
        match record.links.as_slice().iter().find(|l| l.scope == n) {
            Some(l) if l.has_size || !link.has_size => false,
            _ => {
                record.links = match &record.links {
                    LinkSet::None => LinkSet::One(link),
                    more => more.with(link),
                };
                true
            }
        }
    }

    /// Forgets every link of `digest`.
    pub(super) fn forget_links_of(&mut self, digest: &Digest) {
        self.lru.set_links(digest, LinkSet::None);
    }

    /// Removes one repository's link to `digest`.
    pub(super) fn unlink(&mut self, digest: &Digest, scope: &Scope) {
        let Some(n) = self.links.number(scope) else {
            return;
        };
        if let Some(links) = self.lru.links(digest) {
            let left = links.without(n);
            self.lru.set_links(digest, left);
        }
    }

    /// The scopes `digest` is linked to.
    pub(super) fn link_scopes(&self, digest: &Digest) -> impl Iterator<Item = &Scope> {
        let scopes = &self.links.scopes;
        self.lru
            .links(digest)
            .map(LinkSet::as_slice)
            .unwrap_or_default()
            .iter()
            .map(move |l| &scopes[l.scope as usize])
    }

    /// Every (digest, scope) linked.
    pub(super) fn all_links(&self) -> impl Iterator<Item = (&Digest, &Scope)> {
        let scopes = &self.links.scopes;
        self.lru.all_links().flat_map(move |(d, links)| {
            links
                .as_slice()
                .iter()
                .map(move |l| (d, &scopes[l.scope as usize]))
        })
    }

    /// Every digest linked to `scope`.
    pub(super) fn linked_to(&self, scope: &Scope) -> impl Iterator<Item = &Digest> {
        let n = self.links.number(scope);
        self.lru
            .all_links()
            .filter(move |(_, links)| {
                n.is_some_and(|n| links.as_slice().iter().any(|l| l.scope == n))
            })
            .map(|(d, _)| d)
    }
}

impl Cache {
    /// Whether (upstream, repo) may be served this cached digest.
    pub(super) fn linked(&self, upstream: &str, repo: &RepoName, digest: &Digest) -> bool {
        self.lock().has_link(digest, &scope(upstream, repo))
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
                .filter(|(d, size)| s.add_link(d, &scope, *size))
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
        let mut l = State::default();
        assert!(!l.has_link(&d, "u\0public"));
        assert!(l.add_link(&d, "u\0private", None));
        assert!(!l.has_link(&d, "u\0public"));
        assert!(l.has_link(&d, "u\0private"));
        assert_eq!(l.link_size(&d, "u\0private"), None);
        assert!(l.add_link(&d, "u\0private", Some(5)));
        assert!(!l.add_link(&d, "u\0private", Some(5)));
        assert_eq!(l.link_size(&d, "u\0private"), Some(5));
        l.forget_links_of(&d);
        assert!(!l.has_link(&d, "u\0private"));
    }

    /// One repository's manifest cannot poison another's size (issue 21): a wrong size stated
    /// by a manifest of `u\0tenant` is not what a fill under `u\0public` checks against.
    #[test]
    fn a_size_counts_only_for_the_repository_whose_manifest_gave_it() {
        let d = Digest::sha256_of(b"x");
        let mut l = State::default();
        assert!(l.add_link(&d, "u\0tenant", Some(1)));
        assert!(l.add_link(&d, "u\0public", None));
        assert_eq!(l.link_size(&d, "u\0public"), None);
        assert_eq!(l.link_size(&d, "u\0tenant"), Some(1));
        assert_eq!(l.link_size(&d, "u\0other"), None);
    }
}
