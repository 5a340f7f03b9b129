//! A held manifest's media type, in its record: so a manifest by digest that is not among the
//! manifests kept in memory (`hot.rs`) is served with one file read, without asking the index.
//!
//! The index keeps each manifest's media type per upstream (`manifests` table); a record keeps
//! one of those rows as a number (8 bits of its first word, `lru.rs`) naming an (upstream, media
//! type) pair here. It is a copy of the index, never more: noted only once the index holds the
//! row (written or read), forgotten with the entry (a row leaves the index only with its entry),
//! and replaced when that upstream's row is written again. Every held manifest's row is read in
//! the background once serving has begun (`Cache::note_manifest_types`). Another upstream's row,
//! a pair past the 255 numbers, or a manifest not reached by that read yet, is read from the
//! index as before.

use super::{Lru, Record};
use crate::cache::{Cache, CacheError};
use crate::media_type::MediaType;
use crate::reference::Digest;

/// Where a record's manifest type number starts in its first word (above its kinds).
pub(super) const TYPE_SHIFT: u32 = 56;

impl Record {
    /// The number of its manifest type for one upstream, 0 if none is known.
    pub(super) fn manifest_type(&self) -> u8 {
        (self.size_kinds >> TYPE_SHIFT) as u8
    }

    fn set_manifest_type(&mut self, n: u8) {
        self.size_kinds = (self.size_kinds & !(0xFF << TYPE_SHIFT)) | u64::from(n) << TYPE_SHIFT;
    }
}

/// The (upstream, media type) pairs, numbered from 1 in the order first seen. A few upstreams
/// and a few manifest types make a few pairs; they are never forgotten.
#[derive(Default)]
pub(super) struct ManifestTypes {
    pairs: Vec<(Box<str>, MediaType)>,
}

impl ManifestTypes {
    /// The pair's number, made if it is new and there is room (None past 255).
    fn number(&mut self, upstream: &str, media_type: &MediaType) -> Option<u8> {
        let found = self
            .pairs
            .iter()
            .position(|(u, t)| &**u == upstream && t == media_type);
        let i = match found {
            Some(i) => i,
            None if self.pairs.len() < usize::from(u8::MAX) => {
                self.pairs.push((upstream.into(), media_type.clone()));
                self.pairs.len() - 1
            }
            None => return None,
        };
        u8::try_from(i + 1).ok()
    }

    fn pair(&self, n: u8) -> Option<&(Box<str>, MediaType)> {
        self.pairs.get(usize::from(n).checked_sub(1)?)
    }
}

impl Lru {
    /// Notes that the index holds `digest` as a manifest of `upstream` with `media_type`.
    /// Nothing if the entry is not a held manifest, or its record already names another
    /// upstream's row.
    pub(in crate::cache) fn note_manifest_type(
        &mut self,
        digest: &Digest,
        upstream: &str,
        media_type: &MediaType,
    ) {
        let Some(r) = self.records.get_mut(digest) else {
            return;
        };
        if r.kinds() & super::KIND_MANIFEST == 0 {
            return;
        }
        let other_upstream = self
            .types
            .pair(r.manifest_type())
            .is_some_and(|(u, _)| &**u != upstream);
        if other_upstream {
            return;
        }
        if let Some(n) = self.types.number(upstream, media_type) {
            r.set_manifest_type(n);
        }
    }

    /// As [`Lru::note_manifest_type`], for a row read from the index earlier: only where the
    /// record knows no type yet (a row written since has been noted by its writer).
    fn note_manifest_type_read(&mut self, digest: &Digest, upstream: &str, media_type: &MediaType) {
        if self
            .records
            .get(digest)
            .is_some_and(|r| r.manifest_type() == 0)
        {
            self.note_manifest_type(digest, upstream, media_type);
        }
    }

    /// The media type the index holds for `digest` as a manifest of `upstream`, and the entry's
    /// size, when its record knows them.
    pub(in crate::cache) fn manifest_type(
        &self,
        digest: &Digest,
        upstream: &str,
    ) -> Option<(MediaType, u64)> {
        let r: &Record = self.records.get(digest)?;
        let meta = r.held()?;
        let (u, t) = self.types.pair(r.manifest_type())?;
        (&**u == upstream).then(|| (t.clone(), meta.size))
    }
}

/// How many of the index's manifest rows are read at a time, then noted under the lock.
const LOAD_CHUNK: usize = 4096;

impl Cache {
    /// Notes every held manifest's media type from the index, once serving has begun (start-up
    /// reads the entries alone). A chunk read while any entry was removed is not noted: its rows
    /// may name an entry gone, or stored again since. Blocking.
    pub(in crate::cache) fn note_manifest_types(&self) -> Result<(), CacheError> {
        let started = std::time::Instant::now();
        let (mut after, mut noted) = (None::<String>, 0usize);
        loop {
            let removals = self.lock().lru.removals;
            let (rows, last) = self
                .index
                .manifest_types_after(after.as_deref(), LOAD_CHUNK)?;
            let mut s = self.lock();
            if s.lru.removals == removals {
                for (d, upstream, t) in &rows {
                    s.lru
                        .note_manifest_type_read(d, upstream, &MediaType::parse(t));
                }
                noted += rows.len();
            }
            drop(s);
            match last {
                Some(last) => after = Some(last),
                None => break,
            }
        }
        tracing::debug!(
            rows = noted,
            seconds = started.elapsed().as_secs_f64(),
            "manifests' media types read from the index"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::KIND_BLOB;
    use super::*;
    use crate::cache::index::{EntryMeta, KIND_MANIFEST};

    fn manifest(lru: &mut Lru, d: &Digest, size: u64) {
        lru.insert_found(
            d.clone(),
            EntryMeta {
                size,
                last_access_ms: 1,
                kinds: KIND_MANIFEST,
            },
        );
    }

    #[test]
    fn a_noted_type_is_known_for_its_upstream_only_and_goes_with_the_entry() {
        let mut lru = Lru::default();
        let d = Digest::sha256_of(b"m");
        manifest(&mut lru, &d, 700);
        assert_eq!(lru.manifest_type(&d, "hub"), None, "not noted yet");
        lru.note_manifest_type(&d, "hub", &MediaType::OciManifest);
        assert_eq!(
            lru.manifest_type(&d, "hub"),
            Some((MediaType::OciManifest, 700))
        );
        assert_eq!(lru.manifest_type(&d, "quay"), None, "another upstream");

        // Another upstream's row is not noted over it; the same upstream's new row is.
        lru.note_manifest_type(&d, "quay", &MediaType::DockerManifest);
        assert_eq!(lru.manifest_type(&d, "quay"), None);
        lru.note_manifest_type(&d, "hub", &MediaType::DockerManifest);
        assert_eq!(
            lru.manifest_type(&d, "hub"),
            Some((MediaType::DockerManifest, 700))
        );

        // Used again, or also stored as a blob: still known. Forgotten: gone, also once the
        // digest is stored again.
        lru.touch(&d);
        lru.record(&d, 700, KIND_BLOB, 0);
        assert!(lru.manifest_type(&d, "hub").is_some());
        lru.forget(&d);
        assert_eq!(lru.manifest_type(&d, "hub"), None);
        manifest(&mut lru, &d, 700);
        assert_eq!(lru.manifest_type(&d, "hub"), None);
    }

    #[test]
    fn only_held_manifests_are_noted_and_pairs_past_255_are_not() {
        let mut lru = Lru::default();
        let blob = Digest::sha256_of(b"b");
        lru.insert_found(
            blob.clone(),
            EntryMeta {
                size: 5,
                last_access_ms: 1,
                kinds: KIND_BLOB,
            },
        );
        lru.note_manifest_type(&blob, "hub", &MediaType::OciManifest);
        assert_eq!(lru.manifest_type(&blob, "hub"), None);
        lru.note_manifest_type(&Digest::sha256_of(b"none"), "hub", &MediaType::OciIndex);
        assert_eq!(lru.manifest_type(&Digest::sha256_of(b"none"), "hub"), None);

        for i in 0..300u32 {
            let d = Digest::sha256_of(&i.to_le_bytes());
            manifest(&mut lru, &d, 10);
            let t = MediaType::Other(format!("application/x-{i}"));
            lru.note_manifest_type(&d, "hub", &t);
            let known = lru.manifest_type(&d, "hub");
            if i < 255 {
                assert_eq!(known, Some((t, 10)), "pair {i}");
            } else {
                assert_eq!(known, None, "pair {i}: no number left");
            }
        }
    }
}
