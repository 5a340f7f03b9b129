//! Test images, written as OCI image layouts by this code and pushed into a real registry with
//! `skopeo copy`: a Docker schema2 image, an OCI image, a multi-arch OCI index, a 25-layer image,
//! a 100+ MiB incompressible layer, and a name with three path components.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use super::{Registry, fixtures_dir, run, sha256};

/// Bump when the images change, so stale fixtures are not reused.
const SEED_VERSION: &str = "seed-v3";

/// One pushed image as the registry holds it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Image {
    pub repo: String,
    pub tag: String,
    /// Digest of the manifest (or index) the registry stores under the tag.
    pub digest: String,
    pub media_type: String,
    /// Config and layer blobs (of every platform, for an index), with sizes.
    pub blobs: Vec<(String, u64)>,
    /// Child manifests, for an index.
    pub children: Vec<String>,
}

impl Image {
    /// The biggest blob (the layer, for the single-layer images), with its size.
    pub fn largest_blob(&self) -> (String, u64) {
        self.blobs.iter().max_by_key(|(_, s)| *s).unwrap().clone()
    }
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Seed {
    /// The registry storage holding every image.
    pub storage: PathBuf,
    pub images: Vec<Image>,
}

impl Seed {
    pub fn image(&self, repo: &str) -> &Image {
        self.images
            .iter()
            .find(|i| i.repo == repo)
            .unwrap_or_else(|| panic!("no seeded image {repo}"))
    }
}

/// Builds the seed under a lock, or loads the one a previous test binary built.
pub fn build_or_load() -> Seed {
    let dir = fixtures_dir();
    let lock = fs::File::create(dir.join("seed.lock")).unwrap();
    lock.lock().unwrap();
    let root = dir.join(SEED_VERSION);
    let marker = root.join("seed.json");
    if let Ok(text) = fs::read_to_string(&marker) {
        return serde_json::from_str(&text).unwrap();
    }
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).unwrap();
    let storage = root.join("storage");
    let layouts = root.join("layouts");
    fs::create_dir_all(&storage).unwrap();
    let registry = Registry::start(&storage);
    let host = format!("127.0.0.1:{}", registry.port);
    let mut images = Vec::new();

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // A Docker schema2 image for dockerd: `docker pull busybox` -> library/busybox.
    let l = layouts.join("busybox");
    let m = oci_image(
        &l,
        &[
            small_layer(&mut rng, "bin/hello", 2000),
            small_layer(&mut rng, "etc/motd", 300),
        ],
        "amd64",
    );
    images.push(push(
        &l,
        &m,
        &host,
        "library/busybox",
        "latest",
        &["--format", "v2s2"],
    ));
    // An OCI image.
    let l = layouts.join("oci");
    let m = oci_image(&l, &[small_layer(&mut rng, "app", 5000)], "amd64");
    images.push(push(&l, &m, &host, "oci/app", "v1", &[]));
    // A name with three path components.
    let l = layouts.join("three");
    let m = oci_image(&l, &[small_layer(&mut rng, "three", 4000)], "amd64");
    images.push(push(&l, &m, &host, "team/project/app", "v1", &[]));
    // A multi-arch OCI index.
    let l = layouts.join("multi");
    let amd = oci_image(&l, &[small_layer(&mut rng, "amd", 3000)], "amd64");
    let arm = oci_image(&l, &[small_layer(&mut rng, "arm", 3000)], "arm64");
    let index = oci_index(&l, &[amd, arm]);
    images.push(push(&l, &index, &host, "multi/arch", "v1", &["--all"]));
    // 25 layers.
    let l = layouts.join("many");
    let layers: Vec<Layer> = (0..25)
        .map(|i| small_layer(&mut rng, &format!("f{i}"), 1000 + i * 37))
        .collect();
    let m = oci_image(&l, &layers, "amd64");
    images.push(push(&l, &m, &host, "many/layers", "v1", &[]));
    // One incompressible layer over 100 MiB, stored uncompressed.
    let l = layouts.join("big");
    let m = oci_image(&l, &[big_layer(&mut rng, 105 << 20)], "amd64");
    images.push(push(&l, &m, &host, "big/blob", "v1", &[]));
    // Three large single-layer images for the LRU test: 128, 64 and 64 MiB.
    for (repo, mib) in [("lru/a", 128usize), ("lru/b", 64), ("lru/c", 64)] {
        let l = layouts.join(repo.replace('/', "_"));
        let m = oci_image(&l, &[big_layer(&mut rng, mib << 20)], "amd64");
        images.push(push(&l, &m, &host, repo, "v1", &[]));
        let _ = fs::remove_dir_all(&l);
    }
    drop(registry);
    let _ = fs::remove_dir_all(&layouts);

    let seed = Seed { storage, images };
    fs::write(&marker, serde_json::to_string_pretty(&seed).unwrap()).unwrap();
    seed
}

/// A small deterministic generator for incompressible test bytes.
pub struct Rng(pub u64);

impl Rng {
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A layer blob: its bytes, media type and diff id.
pub struct Layer {
    pub bytes: Vec<u8>,
    pub media_type: &'static str,
    pub diff_id: String,
}

fn tar_of(path: &str, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o755);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    b.append_data(&mut h, path, data).unwrap();
    b.into_inner().unwrap()
}

/// A gzip layer with one file of random bytes.
pub fn small_layer(rng: &mut Rng, path: &str, size: usize) -> Layer {
    let mut data = vec![0u8; size];
    rng.fill(&mut data);
    let tar = tar_of(path, &data);
    let diff_id = sha256(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    Layer {
        bytes: gz.finish().unwrap(),
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip",
        diff_id,
    }
}

/// An uncompressed layer with one file of `size` random bytes.
pub fn big_layer(rng: &mut Rng, size: usize) -> Layer {
    let mut data = vec![0u8; size];
    rng.fill(&mut data);
    let tar = tar_of("big.bin", &data);
    Layer {
        diff_id: sha256(&tar),
        bytes: tar,
        media_type: "application/vnd.oci.image.layer.v1.tar",
    }
}

/// Writes a blob into the layout; returns its descriptor.
fn put_blob(layout: &Path, media_type: &str, bytes: &[u8]) -> Value {
    let digest = sha256(bytes);
    let dir = layout.join("blobs/sha256");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(&digest[7..]), bytes).unwrap();
    json!({"mediaType": media_type, "digest": digest, "size": bytes.len()})
}

/// Writes an image (config, layers, manifest) into the layout; returns the manifest descriptor.
pub fn oci_image(layout: &Path, layers: &[Layer], arch: &str) -> Value {
    let config = json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/bin/hello"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
    });
    let config = put_blob(
        layout,
        "application/vnd.oci.image.config.v1+json",
        config.to_string().as_bytes(),
    );
    let layer_descs: Vec<Value> = layers
        .iter()
        .map(|l| put_blob(layout, l.media_type, &l.bytes))
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": layer_descs,
    });
    let mut desc = put_blob(
        layout,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    );
    desc["platform"] = json!({"architecture": arch, "os": "linux"});
    desc
}

/// Writes an index over manifests; returns its descriptor.
pub fn oci_index(layout: &Path, manifests: &[Value]) -> Value {
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    put_blob(
        layout,
        "application/vnd.oci.image.index.v1+json",
        index.to_string().as_bytes(),
    )
}

/// Tags `top` in the layout's index.json and pushes it to `host/repo:tag` with skopeo.
pub fn push(
    layout: &Path,
    top: &Value,
    host: &str,
    repo: &str,
    tag: &str,
    flags: &[&str],
) -> Image {
    let mut desc = top.clone();
    desc.as_object_mut().unwrap().remove("platform");
    desc["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    fs::write(
        layout.join("index.json"),
        json!({"schemaVersion": 2, "manifests": [desc]}).to_string(),
    )
    .unwrap();
    let digest_file = layout.join("pushed.digest");
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--dest-tls-verify=false", "--retry-times", "0"])
        .args(flags)
        .arg("--digestfile")
        .arg(&digest_file)
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{host}/{repo}:{tag}"));
    run(&mut cmd);
    let digest = fs::read_to_string(&digest_file).unwrap().trim().to_owned();
    describe(host, repo, tag, digest)
}

/// Reads back what the registry holds, so tests compare with what a client will really see.
fn describe(host: &str, repo: &str, tag: &str, digest: String) -> Image {
    let raw = |reference: &str| -> Value {
        let out = run(Command::new("skopeo").args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{host}/{repo}@{reference}"),
        ]));
        serde_json::from_str(&out).unwrap()
    };
    let top = raw(&digest);
    let media_type = top["mediaType"].as_str().unwrap_or_default().to_owned();
    let mut blobs = Vec::new();
    let mut children = Vec::new();
    let mut collect = |m: &Value| {
        let c = &m["config"];
        blobs.push((
            c["digest"].as_str().unwrap().to_owned(),
            c["size"].as_u64().unwrap(),
        ));
        for l in m["layers"].as_array().unwrap() {
            blobs.push((
                l["digest"].as_str().unwrap().to_owned(),
                l["size"].as_u64().unwrap(),
            ));
        }
    };
    if let Some(ms) = top["manifests"].as_array() {
        for m in ms {
            let d = m["digest"].as_str().unwrap().to_owned();
            collect(&raw(&d));
            children.push(d);
        }
    } else {
        collect(&top);
    }
    Image {
        repo: repo.to_owned(),
        tag: tag.to_owned(),
        digest,
        media_type,
        blobs,
        children,
    }
}
