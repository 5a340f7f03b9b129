//! Writing an import's verified images into the index, in parts of whole images of a bounded
//! size (`Loader::load` writes each in one transaction).

use std::collections::HashMap;

use super::staging::{Staging, Walked};
use super::{ImportError, Root};
use crate::cache::Load;
use crate::manifest::Descriptor;
use crate::reference::Digest;

/// Files an index transaction of an import holds at most (whole images: one image's files
/// may take a part past it). Memory for a part's records and redb's pages of its transaction
/// stay a few MiB, and an import's fsyncs are one per part.
pub(super) const PART_FILES: usize = 4096;

/// Each root with the name errors give it.
pub(super) fn images_of(roots: &[Root]) -> impl Iterator<Item = (&Descriptor, String)> {
    roots.iter().map(|(root, up, repo, tag)| {
        let image = match tag {
            Some(t) => format!("{up}/{repo}:{t}"),
            None => format!("{up}/{repo}@{}", root.digest),
        };
        (root, image)
    })
}

/// Records these images, each walked from its root again (their files are in the store now),
/// in parts of about [`PART_FILES`] files: in each, every file once (one digest can be both a
/// blob and a manifest), every manifest once under each repository, every tag. Returns how many
/// tags were written.
pub(super) fn load_parts(
    staged: &Staging,
    roots: &[Root],
    pin: bool,
) -> Result<usize, ImportError> {
    let mut tags = 0;
    let mut part = Part::new(pin);
    for ((root, up, repo, tag), (_, image)) in roots.iter().zip(images_of(roots)) {
        let walked = staged.walk(root).map_err(|e| e.of_image(image))?;
        part.add(walked, up, repo);
        if let Some(tag) = tag {
            part.load
                .tags
                .push((up.clone(), repo.clone(), tag.clone(), root.digest.clone()));
            tags += 1;
        }
        if part.load.files.len() >= PART_FILES {
            let full = std::mem::replace(&mut part, Part::new(pin));
            staged.cache.load(full.load)?;
        }
    }
    if !part.load.files.is_empty() || !part.load.tags.is_empty() {
        staged.cache.load(part.load)?;
    }
    Ok(tags)
}

/// One index transaction's worth of images, each file and manifest once.
struct Part {
    load: Load,
    files: HashMap<Digest, usize>,
    listed: std::collections::HashSet<(String, String, Digest)>,
}

impl Part {
    fn new(pin: bool) -> Part {
        Part {
            load: Load {
                pin,
                ..Load::default()
            },
            files: HashMap::new(),
            listed: Default::default(),
        }
    }

    fn add(&mut self, walked: Walked, up: &str, repo: &str) {
        for (d, size, is_manifest) in walked.files {
            match self.files.get(&d) {
                Some(&i) => self.load.files[i].2 |= is_manifest,
                None => {
                    self.files.insert(d.clone(), self.load.files.len());
                    self.load.files.push((d, size, is_manifest));
                }
            }
        }
        for (d, media_type, bytes) in walked.manifests {
            if self
                .listed
                .insert((up.to_owned(), repo.to_owned(), d.clone()))
            {
                self.load
                    .manifests
                    .push((up.to_owned(), repo.to_owned(), d, media_type, bytes));
            }
        }
    }
}
