//! The index: what the cache holds, in redb (an embedded, crash-safe, ACID key-value store).
//!
//! Tables:
//! - `entries`: digest -> size, last access, and whether it is a blob, a manifest or both;
//! - `manifests`: digest + upstream -> media type (a manifest is served per upstream);
//! - `tags`: upstream + repo + tag -> digest and when the upstream last confirmed it;
//! - `repos`: upstream + repo, for `_catalog`;
//! - `links`: digest + upstream + repo -> the size a manifest gave (or `u64::MAX`): which
//!   repositories may be served which cached content (`links.rs`);
//! - `referrers`: subject digest + upstream + repo + referrer digest -> the referrer's descriptor
//!   (JSON), so the referrers API can be answered from the cache offline (`batch.rs`).
//!
//! Keys join their parts with NUL, which no name, tag or digest can contain. Writes are small
//! transactions; access times reach the index in batches (see `Cache::flush_access_times`).

use redb::{ReadableTable, TableDefinition};

use crate::reference::Digest;

const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");
const MANIFESTS: TableDefinition<&str, &str> = TableDefinition::new("manifests");
const TAGS: TableDefinition<&str, &[u8]> = TableDefinition::new("tags");
const REPOS: TableDefinition<&str, u64> = TableDefinition::new("repos");
const LINKS: TableDefinition<&str, u64> = TableDefinition::new("links");
const REFERRERS: TableDefinition<&str, &str> = TableDefinition::new("referrers");

mod batch;
mod db;
mod removal;
pub(super) use batch::Batch;
pub(crate) use db::Compaction;
pub(super) use db::Index;

/// A row of the manifests table: digest, upstream, media type.
pub(super) type ManifestRow = (Digest, String, String);

/// A link's size when no manifest said one.
const NO_SIZE: u64 = u64::MAX;

/// The index's page cache. Its hot pages (tags, the records of fills) fit in far less; a uniform
/// load over a million entries misses any cache much smaller than the index (about 0.5 GB there)
/// anyway, and start-up's reads (the entries, the manifests' media types, the files checked)
/// fill it with pages nobody asks for again. Warm manifests by digest no longer read it (their
/// media types are in their records, `lru/manifest_types.rs`): at a million entries, with 16 MiB
/// instead of 32, idle RSS went from 160 to 127 MiB and a warm manifest cost the same CPU (61 µs
/// a request on a slow day of this machine, `scripts/bench.sh scale`).
pub(super) const PAGE_CACHE: u64 = 16 << 20;

/// What [`Index::each_entry_and_link`] reads: an entry, or a link (digest, `upstream\0repo`,
/// the size a manifest gave) of the entry given before it.
pub(super) enum Row<'a> {
    Entry(&'a Digest, EntryMeta),
    Link(&'a Digest, &'a str, Option<u64>),
}

/// Kinds an entry can be, as bit flags (one digest can be both).
pub(super) const KIND_BLOB: u8 = 1;
pub(super) const KIND_MANIFEST: u8 = 2;
/// Imported content: never evicted by the LRU (`entrepot import`, unless `--unpinned`).
pub(super) const KIND_PINNED: u8 = 4;

#[derive(Clone, Debug, thiserror::Error)]
#[error("index: {0}")]
pub(crate) struct IndexError(String);

pub(super) fn ie(e: impl std::fmt::Display) -> IndexError {
    IndexError(e.to_string())
}

/// What the index knows of one stored file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct EntryMeta {
    pub size: u64,
    /// Milliseconds since the Unix epoch.
    pub last_access_ms: u64,
    pub kinds: u8,
}

impl EntryMeta {
    fn encode(&self) -> [u8; 17] {
        let mut b = [0u8; 17];
        b[..8].copy_from_slice(&self.size.to_le_bytes());
        b[8..16].copy_from_slice(&self.last_access_ms.to_le_bytes());
        b[16] = self.kinds;
        b
    }

    fn decode(b: &[u8]) -> Option<EntryMeta> {
        (b.len() == 17).then(|| EntryMeta {
            size: u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
            last_access_ms: u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
            kinds: b[16],
        })
    }
}

/// A tag's cached answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct TagEntry {
    pub digest: Digest,
    /// Milliseconds since the Unix epoch when the upstream last confirmed the mapping.
    pub checked_at_ms: u64,
}

impl TagEntry {
    fn encode(&self) -> Vec<u8> {
        let mut v = self.checked_at_ms.to_le_bytes().to_vec();
        v.extend_from_slice(self.digest.to_string().as_bytes());
        v
    }

    fn decode(v: &[u8]) -> Option<TagEntry> {
        let checked_at_ms = u64::from_le_bytes(v.get(..8)?.try_into().ok()?);
        let digest = Digest::parse(std::str::from_utf8(&v[8..]).ok()?).ok()?;
        Some(TagEntry {
            digest,
            checked_at_ms,
        })
    }
}

fn key(parts: &[&str]) -> String {
    parts.join("\0")
}

/// The tables' reads and writes (the database handle itself is `db.rs`).
impl Index {
    /// Every entry (the tests' view; start-up reads them as they come:
    /// [`Index::each_entry_and_link`]).
    #[cfg(test)]
    pub(super) fn entries(&self) -> Result<Vec<(Digest, EntryMeta)>, IndexError> {
        let tx = self.begin_read().map_err(ie)?;
        let t = tx.open_table(ENTRIES).map_err(ie)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(ie)? {
            let (k, v) = item.map_err(ie)?;
            if let (Ok(d), Some(m)) = (Digest::parse(k.value()), EntryMeta::decode(v.value())) {
                out.push((d, m));
            }
        }
        Ok(out)
    }

    /// Gives every entry and every link to `row`, in one pass over both tables in key order (a
    /// link's key begins with its digest's entry key): a link is given with the digest of its
    /// entry, given just before it, so a million links at start-up cost no lookup and no second
    /// parse. Returns the digests of links whose content has no entry.
    pub(super) fn each_entry_and_link(
        &self,
        mut row: impl FnMut(Row<'_>),
    ) -> Result<Vec<Digest>, IndexError> {
        let tx = self.begin_read().map_err(ie)?;
        let entries = tx.open_table(ENTRIES).map_err(ie)?;
        let links = tx.open_table(LINKS).map_err(ie)?;
        let mut rows = entries.iter().map_err(ie)?;
        // The last entry read: its key's text and its digest.
        let mut key = String::new();
        let mut next_entry = |key: &mut String,
                              row: &mut dyn FnMut(Row<'_>)|
         -> Result<Option<Digest>, IndexError> {
            for item in rows.by_ref() {
                let (k, v) = item.map_err(ie)?;
                if let (Ok(d), Some(m)) = (Digest::parse(k.value()), EntryMeta::decode(v.value())) {
                    row(Row::Entry(&d, m));
                    key.clear();
                    key.push_str(k.value());
                    return Ok(Some(d));
                }
            }
            Ok(None)
        };
        let mut current = next_entry(&mut key, &mut row)?;
        let mut ended = current.is_none();
        let mut unheld = Vec::new();
        for item in links.iter().map_err(ie)? {
            let (k, v) = item.map_err(ie)?;
            let Some((digest, scope)) = k.value().split_once('\0') else {
                continue;
            };
            while !ended && key.as_str() < digest {
                match next_entry(&mut key, &mut row)? {
                    Some(d) => current = Some(d),
                    None => ended = true,
                }
            }
            let size = Some(v.value()).filter(|&s| s != NO_SIZE);
            match &current {
                Some(d) if key == digest => row(Row::Link(d, scope, size)),
                _ => unheld.extend(Digest::parse(digest).ok()),
            }
        }
        while !ended {
            ended = next_entry(&mut key, &mut row)?.is_none();
        }
        Ok(unheld)
    }

    /// The digests of the entries whose key begins with `prefix` (`sha256:ab`: one directory
    /// of the store), in key order.
    pub(super) fn entries_with_prefix(&self, prefix: &str) -> Result<Vec<Digest>, IndexError> {
        let tx = self.begin_read().map_err(ie)?;
        let t = tx.open_table(ENTRIES).map_err(ie)?;
        let mut out = Vec::new();
        for item in t.range(prefix..).map_err(ie)? {
            let (k, _) = item.map_err(ie)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.extend(Digest::parse(k.value()).ok());
        }
        Ok(out)
    }

    /// The entry of `digest`, if the index has one.
    pub(super) fn entry(&self, digest: &Digest) -> Result<Option<EntryMeta>, IndexError> {
        let tx = self.begin_read().map_err(ie)?;
        let t = tx.open_table(ENTRIES).map_err(ie)?;
        let v = t.get(digest.to_string().as_str()).map_err(ie)?;
        Ok(v.and_then(|v| EntryMeta::decode(v.value())))
    }

    /// The bytes of every entry, and of the pinned ones among them: one pass over the entries,
    /// none of them kept.
    pub(super) fn held_bytes(&self) -> Result<(u64, u64), IndexError> {
        let tx = self.begin_read().map_err(ie)?;
        let t = tx.open_table(ENTRIES).map_err(ie)?;
        let (mut all, mut pinned) = (0u64, 0u64);
        for item in t.iter().map_err(ie)? {
            let (_, v) = item.map_err(ie)?;
            if let Some(m) = EntryMeta::decode(v.value()) {
                all += m.size;
                if m.kinds & KIND_PINNED != 0 {
                    pinned += m.size;
                }
            }
        }
        Ok((all, pinned))
    }

    /// How many entries the index has.
    pub(super) fn entry_count(&self) -> Result<u64, IndexError> {
        use redb::ReadableTableMetadata as _;
        let tx = self.begin_read().map_err(ie)?;
        tx.open_table(ENTRIES).map_err(ie)?.len().map_err(ie)
    }

    /// Records entries (new files, or batched access times).
    pub(super) fn put_entries(&self, entries: &[(Digest, EntryMeta)]) -> Result<(), IndexError> {
        if entries.is_empty() {
            return Ok(());
        }
        let tx = self.begin_write().map_err(ie)?;
        {
            let mut t = tx.open_table(ENTRIES).map_err(ie)?;
            for (d, m) in entries {
                t.insert(d.to_string().as_str(), m.encode().as_slice())
                    .map_err(ie)?;
            }
        }
        tx.commit().map_err(ie)
    }

    /// Every link: digest, `upstream\0repo`, and the size a manifest gave (the tests' view).
    #[cfg(test)]
    pub(super) fn links(&self) -> Result<Vec<(Digest, String, Option<u64>)>, IndexError> {
        let tx = self.begin_read().map_err(ie)?;
        let t = tx.open_table(LINKS).map_err(ie)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(ie)? {
            let (k, v) = item.map_err(ie)?;
            let Some((d, scope)) = k.value().split_once('\0') else {
                continue;
            };
            if let Ok(d) = Digest::parse(d) {
                out.push((
                    d,
                    scope.to_owned(),
                    Some(v.value()).filter(|&s| s != NO_SIZE),
                ));
            }
        }
        Ok(out)
    }

    /// Records links (digest, `upstream\0repo`, size) in one transaction.
    pub(super) fn put_links(
        &self,
        links: &[(Digest, String, Option<u64>)],
    ) -> Result<(), IndexError> {
        if links.is_empty() {
            return Ok(());
        }
        let tx = self.begin_write().map_err(ie)?;
        {
            let mut t = tx.open_table(LINKS).map_err(ie)?;
            for (d, scope, size) in links {
                t.insert(
                    key(&[&d.to_string(), scope]).as_str(),
                    size.unwrap_or(NO_SIZE),
                )
                .map_err(ie)?;
            }
        }
        tx.commit().map_err(ie)
    }

    /// Records a manifest fetched from `upstream` for `repo`, its entry and media type together.
    pub(super) fn put_manifest(
        &self,
        upstream: &str,
        repo: &str,
        digest: &Digest,
        meta: EntryMeta,
        media_type: &str,
    ) -> Result<(), IndexError> {
        let tx = self.begin_write().map_err(ie)?;
        {
            let ds = digest.to_string();
            tx.open_table(ENTRIES)
                .map_err(ie)?
                .insert(ds.as_str(), meta.encode().as_slice())
                .map_err(ie)?;
            tx.open_table(MANIFESTS)
                .map_err(ie)?
                .insert(key(&[&ds, upstream]).as_str(), media_type)
                .map_err(ie)?;
            tx.open_table(REPOS)
                .map_err(ie)?
                .insert(key(&[upstream, repo]).as_str(), meta.last_access_ms)
                .map_err(ie)?;
        }
        tx.commit().map_err(ie)
    }

    /// Up to `n` rows of the manifests table after the key `after` (from the first if None), as
    /// (digest, upstream, media type), and the last key read (None: the table's end).
    pub(super) fn manifest_types_after(
        &self,
        after: Option<&str>,
        n: usize,
    ) -> Result<(Vec<ManifestRow>, Option<String>), IndexError> {
        use std::ops::Bound;
        let tx = self.begin_read().map_err(ie)?;
        let t = tx.open_table(MANIFESTS).map_err(ie)?;
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let (mut out, mut last) = (Vec::new(), None);
        for item in t
            .range::<&str>((from, Bound::Unbounded))
            .map_err(ie)?
            .take(n)
        {
            let (k, v) = item.map_err(ie)?;
            let k = k.value();
            if let Some((d, upstream)) = k.split_once('\0')
                && let Ok(d) = Digest::parse(d)
            {
                out.push((d, upstream.to_owned(), v.value().to_owned()));
            }
            last = Some(k.to_owned());
        }
        Ok((out, last))
    }

    pub(super) fn manifest_type(
        &self,
        upstream: &str,
        digest: &Digest,
    ) -> Result<Option<String>, IndexError> {
        let tx = self.begin_read().map_err(ie)?;
        let t = tx.open_table(MANIFESTS).map_err(ie)?;
        Ok(t.get(key(&[&digest.to_string(), upstream]).as_str())
            .map_err(ie)?
            .map(|v| v.value().to_owned()))
    }

    pub(super) fn tag(
        &self,
        upstream: &str,
        repo: &str,
        tag: &str,
    ) -> Result<Option<TagEntry>, IndexError> {
        let tx = self.begin_read().map_err(ie)?;
        let t = tx.open_table(TAGS).map_err(ie)?;
        let Some(v) = t.get(key(&[upstream, repo, tag]).as_str()).map_err(ie)? else {
            return Ok(None);
        };
        Ok(TagEntry::decode(v.value()))
    }

    pub(super) fn put_tag(
        &self,
        upstream: &str,
        repo: &str,
        tag: &str,
        entry: &TagEntry,
    ) -> Result<(), IndexError> {
        let v = entry.encode();
        let tx = self.begin_write().map_err(ie)?;
        {
            tx.open_table(TAGS)
                .map_err(ie)?
                .insert(key(&[upstream, repo, tag]).as_str(), v.as_slice())
                .map_err(ie)?;
            tx.open_table(REPOS)
                .map_err(ie)?
                .insert(key(&[upstream, repo]).as_str(), entry.checked_at_ms)
                .map_err(ie)?;
        }
        tx.commit().map_err(ie)
    }

    /// Tags cached for a repository, in lexical order.
    pub(super) fn tags(&self, upstream: &str, repo: &str) -> Result<Vec<String>, IndexError> {
        let mut out: Vec<String> = self
            .repo_tags(upstream, repo)?
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        out.sort();
        Ok(out)
    }

    /// Tags cached for a repository, with what each points at.
    pub(super) fn repo_tags(
        &self,
        upstream: &str,
        repo: &str,
    ) -> Result<Vec<(String, TagEntry)>, IndexError> {
        let tx = self.begin_read().map_err(ie)?;
        let t = tx.open_table(TAGS).map_err(ie)?;
        let prefix = key(&[upstream, repo, ""]);
        let end = format!("{upstream}\0{repo}\u{1}");
        let mut out = Vec::new();
        for item in t.range(prefix.as_str()..end.as_str()).map_err(ie)? {
            let (k, v) = item.map_err(ie)?;
            if let Some(entry) = TagEntry::decode(v.value()) {
                out.push((k.value()[prefix.len()..].to_owned(), entry));
            }
        }
        Ok(out)
    }

    /// Every (upstream, repo) the cache has served.
    pub(super) fn repos(&self) -> Result<Vec<(String, String)>, IndexError> {
        let tx = self.begin_read().map_err(ie)?;
        let t = tx.open_table(REPOS).map_err(ie)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(ie)? {
            let (k, _) = item.map_err(ie)?;
            if let Some((u, r)) = k.value().split_once('\0') {
                out.push((u.to_owned(), r.to_owned()));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
