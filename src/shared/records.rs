//! The shared tier's tag and link records, signed with `[shared] signing_key`: what a tag
//! pointed at, and that the upstream served a manifest under a repository. Each carries an
//! HMAC-SHA256 (ring) of every field it states, so a record cannot be forged nor moved to
//! another name by anyone without the key; one without a valid signature is ignored and counted.

use std::sync::Arc;

use object_store::path::Path;

use super::{Shared, SharedError};
use crate::reference::{Digest, RepoName};

/// The line of a record that carries its signature.
const SIGNATURE: &str = "hmac-sha256=";

impl Shared {
    /// Whether tag and link records are written and believed (`signing_key` is set).
    pub(crate) fn signs(&self) -> bool {
        self.signer.is_some()
    }

    /// The signature line for `what`, as hex.
    fn sign(&self, what: &str) -> Option<String> {
        let key = self.signer.as_ref()?;
        Some(format!(
            "{SIGNATURE}{}",
            hex::encode(ring::hmac::sign(key, what.as_bytes()))
        ))
    }

    /// Whether `body` carries a valid signature of `what` (checked in constant time).
    fn signed(&self, what: &str, body: &str) -> bool {
        let Some(key) = &self.signer else {
            return false;
        };
        body.lines()
            .find_map(|l| l.strip_prefix(SIGNATURE))
            .and_then(|h| hex::decode(h.trim()).ok())
            .is_some_and(|sig| ring::hmac::verify(key, what.as_bytes(), &sig).is_ok())
    }

    fn link_key(&self, upstream: &str, repo: &RepoName, d: &Digest) -> Path {
        let hex = d.hex();
        let mut parts = vec!["links", d.algorithm().name(), &hex, upstream];
        parts.extend(repo.as_str().split('/'));
        self.key(&parts)
    }

    fn tag_key(&self, upstream: &str, repo: &str, tag: &str) -> Path {
        let mut parts = vec!["tags", upstream];
        parts.extend(repo.split('/'));
        parts.push(tag);
        self.key(&parts)
    }

    /// The digest a tag last pointed at, as some replica wrote and signed it. A record without
    /// a valid signature (written by anyone else who can write the bucket, or under another
    /// key) is ignored, counted and logged; without a key nothing is read.
    pub(crate) async fn tag(
        &self,
        upstream: &str,
        repo: &str,
        tag: &str,
    ) -> Result<Option<Digest>, SharedError> {
        if !self.signs() {
            return Ok(None);
        }
        let key = self.tag_key(upstream, repo, tag);
        let Some(body) = self.get_small("get_tag", &key).await? else {
            return Ok(None);
        };
        let body = String::from_utf8_lossy(&body);
        let digest = body
            .lines()
            .next()
            .and_then(|l| Digest::parse(l.trim()).ok());
        match digest {
            Some(d) if self.signed(&tag_record(upstream, repo, tag, &d), &body) => {
                self.metrics.shared("get_tag", "hit");
                Ok(Some(d))
            }
            _ => {
                self.metrics.shared("get_tag", "unsigned");
                tracing::warn!(upstream, repo, tag, shared = %self.shown, "a tag record in the shared tier has no valid signature: ignored");
                Ok(None)
            }
        }
    }

    /// Whether a replica signed that the upstream served manifest `d` under `repo`.
    pub(crate) async fn linked(
        &self,
        upstream: &str,
        repo: &RepoName,
        d: &Digest,
    ) -> Result<bool, SharedError> {
        if !self.signs() {
            return Ok(false);
        }
        let key = self.link_key(upstream, repo, d);
        if self.links_known.contains_key(&key) {
            return Ok(true);
        }
        let Some(body) = self.get_small("get_link", &key).await? else {
            return Ok(false);
        };
        if self.signed(
            &link_record(upstream, repo, d),
            &String::from_utf8_lossy(&body),
        ) {
            self.metrics.shared("get_link", "hit");
            self.links_known.insert(key, ());
            Ok(true)
        } else {
            self.metrics.shared("get_link", "unsigned");
            tracing::warn!(upstream, %repo, digest = %d, shared = %self.shown, "a link record in the shared tier has no valid signature: ignored");
            Ok(false)
        }
    }

    /// Records, signed and in the background, that the upstream served manifest `d` under
    /// `repo` (once per process; nothing without a key).
    pub(crate) fn put_link(self: &Arc<Self>, upstream: &str, repo: &RepoName, d: &Digest) {
        let Some(signature) = self.sign(&link_record(upstream, repo, d)) else {
            return;
        };
        let key = self.link_key(upstream, repo, d);
        if self.links_known.contains_key(&key) {
            return;
        }
        self.links_known.insert(key.clone(), ());
        let body = format!("{signature}\n");
        self.put_small("put_link", key, body, d, |this, key| {
            this.links_known.invalidate(key)
        });
    }

    /// Records what a tag points at, signed and in the background, unless this process wrote
    /// just that (nothing without a key).
    pub(crate) fn put_tag(self: &Arc<Self>, upstream: &str, repo: &str, tag: &str, d: &Digest) {
        let Some(signature) = self.sign(&tag_record(upstream, repo, tag, d)) else {
            return;
        };
        let key = self.tag_key(upstream, repo, tag);
        if self.tags_written.get(&key).as_ref() == Some(d) {
            return;
        }
        self.tags_written.insert(key.clone(), d.clone());
        let body = format!("{d}\n{signature}\n");
        // Given up: written again the next time the tag is confirmed.
        self.put_small("put_tag", key, body, d, |this, key| {
            this.tags_written.invalidate(key)
        });
    }
}

/// What a tag record's signature covers: every field, so it cannot be moved to another name.
fn tag_record(upstream: &str, repo: &str, tag: &str, d: &Digest) -> String {
    format!("entrepot-tag\0{upstream}\0{repo}\0{tag}\0{d}")
}

/// What a link record's signature covers.
fn link_record(upstream: &str, repo: &RepoName, d: &Digest) -> String {
    format!("entrepot-link\0{upstream}\0{repo}\0{d}")
}
