//! `docker save` archives without an OCI layout (Docker before 25, such as Debian's 20.10):
//! `manifest.json` lists each image's config file and its layers as uncompressed tars, under
//! names of Docker's own. Import hashes those files as it copies them, then writes the Docker
//! schema 2 manifest that describes them, so each image loads like any other. The manifest is
//! new (a registry's copy was compressed), so pulls by tag work and pulls by the registry's
//! digest do not: an OCI layout (Docker 25+, `skopeo`, `entrepot export`) keeps digests.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::json;

use super::{ImportError, Staged, Staging, each_entry};
use crate::airgap::progress::Progress;
use crate::manifest::Descriptor;
use crate::reference::Digest;

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

#[derive(Deserialize)]
pub(super) struct SavedImage {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

pub(super) fn parse(manifest_json: &[u8]) -> Result<Vec<SavedImage>, ImportError> {
    serde_json::from_slice(manifest_json).map_err(ImportError::SavedManifest)
}

/// Every file the images name.
pub(super) fn files(saved: &[SavedImage]) -> Vec<String> {
    let mut out: Vec<String> = saved
        .iter()
        .flat_map(|i| std::iter::once(i.config.clone()).chain(i.layers.iter().cloned()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `a/b/../c/layer.tar` -> `a/c/layer.tar`, for a symlink's target beside its own path.
fn resolve(link_path: &str, target: &str) -> String {
    let mut parts: Vec<&str> = link_path.split('/').collect();
    parts.pop();
    for p in target.split('/') {
        match p {
            ".." => {
                parts.pop();
            }
            "." | "" => {}
            p => parts.push(p),
        }
    }
    parts.join("/")
}

impl Staging<'_> {
    /// Reads the files the images name (hashing each), writes a manifest for each image, and
    /// returns each image's manifest with every name it is saved under.
    pub(super) fn stage_saved(
        &mut self,
        source: &Path,
        saved: &[SavedImage],
    ) -> Result<Vec<(Descriptor, String)>, ImportError> {
        let by_path = self.stage_saved_files(source, &files(saved))?;
        let mut out = Vec::new();
        for image in saved {
            let names = image.repo_tags.clone().unwrap_or_default();
            if names.is_empty() {
                eprintln!("skipping {}: saved without a name", image.config);
                continue;
            }
            let descriptor = self.saved_manifest(image, &by_path)?;
            // Docker's short names (`busybox:latest`) read as dockerd reads them.
            out.extend(names.into_iter().map(|n| (descriptor.clone(), n)));
        }
        Ok(out)
    }

    /// Reads (hashing each) the `wanted` files of the archive; returns each one's digest and
    /// size by path, links included (a link has its target's).
    fn stage_saved_files(
        &mut self,
        source: &Path,
        wanted: &[String],
    ) -> Result<HashMap<String, (Digest, u64)>, ImportError> {
        let progress = Progress::new(0, "bytes");
        let bar = progress.overall().clone();
        let mut by_path: HashMap<String, (Digest, u64)> = HashMap::new();
        let mut links: Vec<(String, String)> = Vec::new();
        each_entry(source, |path, entry| {
            if wanted.binary_search(&path.to_owned()).is_err() {
                return Ok(());
            }
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                if let Ok(Some(target)) = entry.link_name() {
                    let target = target.to_string_lossy().into_owned();
                    let target = if kind.is_symlink() {
                        resolve(path, &target)
                    } else {
                        target
                    };
                    links.push((path.to_owned(), target));
                }
            } else if kind.is_file() {
                let found = self.take_unnamed(entry, &bar)?;
                by_path.insert(path.to_owned(), found);
            }
            Ok(())
        })?;
        for (path, target) in links {
            if let Some(found) = by_path.get(&target).cloned() {
                by_path.insert(path, found);
            }
        }
        progress.finish();
        Ok(by_path)
    }

    /// Checks a saved image's layers against its config's `diff_ids`, and writes its manifest
    /// under `tmp/`; returns the manifest's descriptor.
    fn saved_manifest(
        &mut self,
        image: &SavedImage,
        by_path: &HashMap<String, (Digest, u64)>,
    ) -> Result<Descriptor, ImportError> {
        let file = |p: &String| {
            by_path
                .get(p)
                .cloned()
                .ok_or_else(|| ImportError::SavedFileMissing(p.clone()))
        };
        let (config, config_size) = file(&image.config)?;
        let diff_ids = self.diff_ids(&config, &image.config)?;
        if diff_ids.len() != image.layers.len() {
            return Err(ImportError::LayerCount {
                config: image.config.clone(),
                in_config: diff_ids.len(),
                in_manifest: image.layers.len(),
            });
        }
        let mut layers = Vec::new();
        for (l, diff_id) in image.layers.iter().zip(&diff_ids) {
            let (d, size) = file(l)?;
            // A saved layer is the uncompressed tar whose digest the config gives.
            if d.to_string() != *diff_id {
                return Err(ImportError::DiffId {
                    layer: l.clone(),
                    diff_id: diff_id.clone(),
                });
            }
            layers.push(json!({
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar",
                "size": size,
                "digest": d.to_string(),
            }));
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": config_size,
                "digest": config.to_string(),
            },
            "layers": layers,
        });
        let bytes = serde_json::to_vec_pretty(&manifest).expect("JSON values serialize");
        let digest = Digest::sha256_of(&bytes);
        let temp = self.cache.temp_path(&digest);
        // Recorded first, so a failed write is cleaned up.
        let staged = Staged {
            size: bytes.len() as u64,
            copied: true,
            used: false,
        };
        self.files.insert(digest.clone(), staged);
        // Synced with every other staged file at load (`Loader::load`).
        std::fs::write(&temp, &bytes).map_err(ImportError::Tmp)?;
        Ok(Descriptor {
            digest,
            size: bytes.len() as u64,
            media_type: Some(DOCKER_MANIFEST.into()),
            platform: None,
        })
    }
}

impl Staging<'_> {
    /// The layer digests an image config gives (`rootfs.diff_ids`), after checking the config
    /// against its file name (Docker names it by its digest).
    fn diff_ids(&self, config: &Digest, path: &str) -> Result<Vec<String>, ImportError> {
        let named = path
            .trim_start_matches("blobs/sha256/")
            .trim_end_matches(".json");
        if named.len() == 64 && named != config.hex().as_str() {
            return Err(ImportError::ConfigName(path.to_owned()));
        }
        #[derive(Deserialize)]
        struct RootFs {
            diff_ids: Vec<String>,
        }
        #[derive(Deserialize)]
        struct Config {
            rootfs: RootFs,
        }
        let bytes = self.read(config)?;
        let c: Config =
            serde_json::from_slice(&bytes).map_err(|source| ImportError::NotAConfig {
                path: path.to_owned(),
                source,
            })?;
        Ok(c.rootfs.diff_ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinked_layers_resolve_beside_their_link() {
        assert_eq!(resolve("b/layer.tar", "../a/layer.tar"), "a/layer.tar");
        assert_eq!(resolve("x/y/layer.tar", "./z.tar"), "x/y/z.tar");
        let saved = parse(br#"[{"Config":"c.json","RepoTags":["busybox:latest"],"Layers":["a/layer.tar","b/layer.tar"]}]"#).unwrap();
        assert_eq!(files(&saved), vec!["a/layer.tar", "b/layer.tar", "c.json"]);
        assert!(parse(b"{}").is_err());
    }
}
