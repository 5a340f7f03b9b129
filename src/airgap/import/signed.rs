//! `import --require-signature`: every image the archive would load must carry a cosign
//! signature by one of the trusted keys, checked against the staged (verified) content before
//! anything becomes visible (`cosign.rs` says what a signature is).

use std::collections::HashMap;

use super::Root;
use super::staging::Staging;
use crate::cosign::{self, Keys, Unsigned, is_cosign_tag};
use crate::media_type::manifest_media_type;
use crate::reference::Digest;

/// The images among `roots` without a valid signature: the root's index, its name, and why.
/// Signatures themselves (cosign's tags, referrers) are not images that need one. Manifests
/// are read from the staged copies when needed, not held.
pub(super) fn unsigned(
    staged: &Staging,
    roots: &[Root],
    keys: &Keys,
) -> Vec<(usize, String, Unsigned)> {
    // Each root's subject, when it is a referrer: read once per root.
    let mut subjects: HashMap<&Digest, Option<Digest>> = HashMap::new();
    for (root, ..) in roots {
        subjects.entry(&root.digest).or_insert_with(|| {
            let bytes = staged.read(&root.digest).ok()?;
            let media_type = manifest_media_type(root.media_type.as_deref(), &bytes).ok()?;
            crate::manifest::referrer_of(&root.digest, &media_type.to_string(), &bytes)
                .map(|(s, _)| s)
        });
    }
    let subject_of = |d: &Digest| subjects.get(d).cloned().flatten();
    let mut out = Vec::new();
    for (i, (root, up, repo, tag)) in roots.iter().enumerate() {
        let image = &root.digest;
        if tag.as_deref().is_some_and(is_cosign_tag) || subject_of(image).is_some() {
            continue;
        }
        let sig_tag = cosign::signature_tag(image);
        let candidates: Vec<Vec<u8>> = roots
            .iter()
            .filter(|(_, u, r, _)| u == up && r == repo)
            .filter(|(d, _, _, t)| {
                t.as_deref() == Some(sig_tag.as_str())
                    || subject_of(&d.digest).as_ref() == Some(image)
            })
            .filter_map(|(d, ..)| staged.read(&d.digest).ok())
            .collect();
        let candidates: Vec<&[u8]> = candidates.iter().map(Vec::as_slice).collect();
        let payload = |d: &Digest| staged.read(d).ok();
        if let Err(why) = cosign::verify(keys, image, &candidates, payload) {
            let name = match tag {
                Some(t) => format!("{up}/{repo}:{t}"),
                None => format!("{up}/{repo}@{image}"),
            };
            out.push((i, name, why));
        }
    }
    out
}

/// The roots left once `unsigned` ones go, with their signatures and attestations (cosign's
/// tags of them).
pub(super) fn without(roots: Vec<Root>, unsigned: &[(usize, String, Unsigned)]) -> Vec<Root> {
    let gone: Vec<(String, String, String)> = unsigned
        .iter()
        .map(|(i, ..)| {
            let (d, up, repo, _) = &roots[*i];
            (
                up.clone(),
                repo.clone(),
                format!("{}-{}.", d.digest.algorithm().name(), d.digest.hex()),
            )
        })
        .collect();
    roots
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !unsigned.iter().any(|(u, ..)| u == i))
        .filter(|(_, (_, up, repo, tag))| {
            !gone.iter().any(|(u, r, prefix)| {
                u == up
                    && r == repo
                    && tag
                        .as_deref()
                        .is_some_and(|t| t.starts_with(prefix.as_str()))
            })
        })
        .map(|(_, r)| r)
        .collect()
}
