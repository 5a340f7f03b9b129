//! Many changes in one transaction, and the whole-index queries the offline commands need.
//!
//! What `entrepot import` loads becomes visible at once or not at all: its entries, manifest
//! types, links, tags and referrers go in one [`Batch`]. `ls`, `rm`, `gc` and `export` read every
//! tag; the referrers API, offline, reads a manifest's referrers.

use redb::ReadableTable;

use super::{
    ENTRIES, EntryMeta, Index, IndexError, LINKS, MANIFESTS, NO_SIZE, REFERRERS, REPOS, TAGS,
    TagEntry, ie, key,
};
use crate::reference::Digest;

/// Index changes written together.
#[derive(Default)]
pub(in crate::cache) struct Batch {
    pub(in crate::cache) entries: Vec<(Digest, EntryMeta)>,
    /// Upstream, repository, digest, media type.
    pub(in crate::cache) manifests: Vec<(String, String, Digest, String)>,
    /// Digest, `upstream\0repo`, the size a manifest gave.
    pub(in crate::cache) links: Vec<(Digest, String, Option<u64>)>,
    /// Upstream, repository, tag, what it points at.
    pub(in crate::cache) tags: Vec<(String, String, String, TagEntry)>,
    /// Subject, `upstream\0repo`, referrer, the referrer's descriptor (JSON).
    pub(in crate::cache) referrers: Vec<(Digest, String, Digest, String)>,
    /// Upstream, repository: served from, for `_catalog` (as manifests' and tags' are).
    pub(in crate::cache) repos: Vec<(String, String)>,
}

impl Index {
    /// Writes a batch in one transaction (repositories named by its manifests and tags are
    /// recorded for `_catalog`).
    pub(in crate::cache) fn write(&self, b: &Batch, now_ms: u64) -> Result<(), IndexError> {
        self.write_all(std::slice::from_ref(b), now_ms)
    }

    /// Writes batches in one transaction (one commit, one fsync: `commits.rs`).
    pub(in crate::cache) fn write_all(&self, all: &[Batch], now_ms: u64) -> Result<(), IndexError> {
        let tx = self.begin_write().map_err(ie)?;
        for b in all {
            let mut entries = tx.open_table(ENTRIES).map_err(ie)?;
            for (d, m) in &b.entries {
                entries
                    .insert(d.to_string().as_str(), m.encode().as_slice())
                    .map_err(ie)?;
            }
            let mut manifests = tx.open_table(MANIFESTS).map_err(ie)?;
            let mut repos = tx.open_table(REPOS).map_err(ie)?;
            for (upstream, repo, d, media_type) in &b.manifests {
                manifests
                    .insert(
                        key(&[&d.to_string(), upstream]).as_str(),
                        media_type.as_str(),
                    )
                    .map_err(ie)?;
                repos
                    .insert(key(&[upstream, repo]).as_str(), now_ms)
                    .map_err(ie)?;
            }
            for (upstream, repo) in &b.repos {
                repos
                    .insert(key(&[upstream, repo]).as_str(), now_ms)
                    .map_err(ie)?;
            }
            let mut links = tx.open_table(LINKS).map_err(ie)?;
            for (d, scope, size) in &b.links {
                links
                    .insert(
                        key(&[&d.to_string(), scope]).as_str(),
                        size.unwrap_or(NO_SIZE),
                    )
                    .map_err(ie)?;
            }
            let mut tags = tx.open_table(TAGS).map_err(ie)?;
            for (upstream, repo, tag, entry) in &b.tags {
                tags.insert(
                    key(&[upstream, repo, tag]).as_str(),
                    entry.encode().as_slice(),
                )
                .map_err(ie)?;
            }
            let mut referrers = tx.open_table(REFERRERS).map_err(ie)?;
            for (subject, scope, referrer, descriptor) in &b.referrers {
                let k = key(&[&subject.to_string(), scope, &referrer.to_string()]);
                referrers
                    .insert(k.as_str(), descriptor.as_str())
                    .map_err(ie)?;
            }
        }
        tx.commit().map_err(ie)
    }

    /// Every cached tag: upstream, repository, tag, and what it points at.
    pub(in crate::cache) fn all_tags(
        &self,
    ) -> Result<Vec<(String, String, String, TagEntry)>, IndexError> {
        let tx = self.begin_read().map_err(ie)?;
        let t = tx.open_table(TAGS).map_err(ie)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(ie)? {
            let (k, v) = item.map_err(ie)?;
            let mut parts = k.value().split('\0');
            if let (Some(u), Some(r), Some(tag), Some(entry)) = (
                parts.next(),
                parts.next(),
                parts.next(),
                TagEntry::decode(v.value()),
            ) {
                out.push((u.to_owned(), r.to_owned(), tag.to_owned(), entry));
            }
        }
        Ok(out)
    }

    /// Forgets links (digest, `upstream\0repo`).
    pub(in crate::cache) fn remove_links(
        &self,
        links: &[(Digest, String)],
    ) -> Result<(), IndexError> {
        let tx = self.begin_write().map_err(ie)?;
        {
            let mut t = tx.open_table(LINKS).map_err(ie)?;
            for (d, scope) in links {
                t.remove(key(&[&d.to_string(), scope]).as_str())
                    .map_err(ie)?;
            }
        }
        tx.commit().map_err(ie)
    }

    /// Forgets tags (upstream, repository, tag).
    pub(in crate::cache) fn remove_tags(
        &self,
        tags: &[(String, String, String)],
    ) -> Result<(), IndexError> {
        let tx = self.begin_write().map_err(ie)?;
        {
            let mut t = tx.open_table(TAGS).map_err(ie)?;
            for (u, r, tag) in tags {
                t.remove(key(&[u, r, tag]).as_str()).map_err(ie)?;
            }
        }
        tx.commit().map_err(ie)
    }

    /// The referrers recorded for `subject` in `scope` (`upstream\0repo`): digest and descriptor.
    pub(in crate::cache) fn referrers(
        &self,
        subject: &Digest,
        scope: &str,
    ) -> Result<Vec<(Digest, String)>, IndexError> {
        let tx = self.begin_read().map_err(ie)?;
        let t = tx.open_table(REFERRERS).map_err(ie)?;
        let prefix = key(&[&subject.to_string(), scope, ""]);
        let end = format!("{subject}\0{scope}\u{1}");
        let mut out = Vec::new();
        for item in t.range(prefix.as_str()..end.as_str()).map_err(ie)? {
            let (k, v) = item.map_err(ie)?;
            if let Ok(d) = Digest::parse(&k.value()[prefix.len()..]) {
                out.push((d, v.value().to_owned()));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::KIND_MANIFEST;
    use super::*;

    #[test]
    fn a_batch_lands_whole_and_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(&dir.path().join("i.redb")).unwrap();
        let (m, sig) = (Digest::sha256_of(b"m"), Digest::sha256_of(b"sig"));
        let meta = EntryMeta {
            size: 1,
            last_access_ms: 1,
            kinds: KIND_MANIFEST,
        };
        let scope = "docker.io\0library/a".to_owned();
        let entry = TagEntry {
            digest: m.clone(),
            checked_at_ms: 5,
        };
        let b = Batch {
            entries: vec![(m.clone(), meta), (sig.clone(), meta)],
            manifests: vec![(
                "docker.io".into(),
                "library/a".into(),
                m.clone(),
                "application/vnd.oci.image.manifest.v1+json".into(),
            )],
            links: vec![(m.clone(), scope.clone(), Some(1))],
            tags: vec![(
                "docker.io".into(),
                "library/a".into(),
                "v1".into(),
                entry.clone(),
            )],
            referrers: vec![(m.clone(), scope.clone(), sig.clone(), "{}".into())],
            repos: vec![("docker.io".into(), "library/b".into())],
        };
        idx.write(&b, 9).unwrap();
        assert_eq!(idx.entries().unwrap().len(), 2);
        assert_eq!(
            idx.repos().unwrap(),
            vec![
                ("docker.io".into(), "library/a".into()),
                ("docker.io".into(), "library/b".into())
            ]
        );
        assert_eq!(
            idx.all_tags().unwrap(),
            vec![("docker.io".into(), "library/a".into(), "v1".into(), entry)]
        );
        assert_eq!(
            idx.referrers(&m, &scope).unwrap(),
            vec![(sig, "{}".to_owned())]
        );
        assert!(
            idx.referrers(&m, "docker.io\0library/b")
                .unwrap()
                .is_empty()
        );
        idx.remove_tags(&[("docker.io".into(), "library/a".into(), "v1".into())])
            .unwrap();
        assert!(idx.all_tags().unwrap().is_empty());
        idx.remove_entries(std::slice::from_ref(&m)).unwrap();
        assert!(idx.referrers(&m, &scope).unwrap().is_empty());
    }
}
