//! Garage, a real S3-compatible object store, as a one-node cluster on loopback: a bucket and a
//! key made with its own CLI. `scripts/test.sh` installs it (`cargo install garage`) when missing.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::{free_port, run, scratch, wait_for_port};

pub struct Garage {
    child: Child,
    config: PathBuf,
    pub s3_port: u16,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
    _dir: tempfile::TempDir,
}

/// The garage binary: on PATH, or where `cargo install` puts it.
fn garage_bin() -> PathBuf {
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cargo"));
    let installed = home.join("bin/garage");
    if installed.exists() {
        installed
    } else {
        PathBuf::from("garage")
    }
}

impl Garage {
    pub fn start() -> Garage {
        let dir = scratch("garage");
        let (rpc, s3, admin) = (free_port(), free_port(), free_port());
        let config = dir.path().join("garage.toml");
        let secret: String = (0..32)
            .map(|i| format!("{:02x}", (i * 37 + 11) % 256))
            .collect();
        fs::write(
            &config,
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\nreplication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\n[s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\nroot_domain = \".s3.garage.localhost\"\n\n[admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n",
                d = dir.path().display()
            ),
        )
        .unwrap();
        let log = fs::File::create(dir.path().join("garage.log")).unwrap();
        let child = Command::new(garage_bin())
            .arg("-c")
            .arg(&config)
            .arg("server")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("garage must be installed (scripts/test.sh installs it)");
        wait_for_port(s3, "garage");
        let cli = |args: &[&str]| run(Command::new(garage_bin()).arg("-c").arg(&config).args(args));
        let node = cli(&["node", "id", "-q"]);
        let node = node.trim().split('@').next().unwrap().to_owned();
        cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        cli(&["layout", "apply", "--version", "1"]);
        let bucket = "entrepot".to_owned();
        cli(&["bucket", "create", &bucket]);
        let key = cli(&["key", "create", "entrepot-key"]);
        let field = |name: &str| {
            key.lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_else(|| panic!("no {name} in {key}"))
        };
        let (key_id, secret) = (field("Key ID:"), field("Secret key:"));
        cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            &bucket,
            "--key",
            "entrepot-key",
        ]);
        Garage {
            child,
            config,
            s3_port: s3,
            bucket,
            key_id,
            secret,
            _dir: dir,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// `curl` signed for this store (SigV4): the object at `key` in the bucket, as
    /// (status, body).
    pub fn get(&self, key: &str) -> (u16, Vec<u8>) {
        let out = Command::new("curl")
            .args([
                "-s",
                "-w",
                "\n%{http_code}",
                "--aws-sigv4",
                "aws:amz:garage:s3",
                "-H",
                "x-amz-content-sha256: UNSIGNED-PAYLOAD",
                "-u",
            ])
            .arg(format!("{}:{}", self.key_id, self.secret))
            .arg(format!("{}/{}/{key}", self.endpoint(), self.bucket))
            .output()
            .unwrap();
        let mut body = out.stdout;
        let at = body.iter().rposition(|&b| b == b'\n').unwrap();
        let status = String::from_utf8_lossy(&body[at + 1..])
            .parse()
            .unwrap_or(0);
        body.truncate(at);
        (status, body)
    }

    /// Replaces the object at `key` with `bytes`.
    pub fn put(&self, key: &str, bytes: &[u8]) {
        let dir = scratch("garage-put");
        let file = dir.path().join("body");
        fs::write(&file, bytes).unwrap();
        run(Command::new("curl")
            .args(["-s", "-f", "--aws-sigv4", "aws:amz:garage:s3"])
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", "-u"])
            .arg(format!("{}:{}", self.key_id, self.secret))
            .arg("-T")
            .arg(&file)
            .arg(format!("{}/{}/{key}", self.endpoint(), self.bucket)));
    }

    /// The `[shared]` section for this store, under `prefix`, with the secret given inline or
    /// (with `secret_file`) in a file.
    pub fn shared_section(&self, prefix: &str, secret_file: Option<&std::path::Path>) -> String {
        // The replicas' signing key for tag and link records: inline, or in a file beside the
        // secret's.
        let secret = match secret_file {
            Some(f) => {
                fs::write(f, format!("{}\n", self.secret)).unwrap();
                let key = f.with_extension("signing-key");
                fs::write(&key, format!("{SIGNING_KEY}\n")).unwrap();
                format!(
                    "secret_access_key_file = {:?}\nsigning_key_file = {:?}",
                    f.display().to_string(),
                    key.display().to_string()
                )
            }
            None => format!(
                "secret_access_key = {:?}\nsigning_key = {SIGNING_KEY:?}",
                self.secret
            ),
        };
        format!(
            "\n[shared]\nurl = \"s3://{}/{prefix}\"\nendpoint = \"{}\"\nregion = \"garage\"\naccess_key_id = {:?}\n{secret}\nallow_http = true\n",
            self.bucket,
            self.endpoint(),
            self.key_id
        )
    }
}

/// The key the test replicas sign shared tag and link records with.
pub const SIGNING_KEY: &str = "test-replicas-signing-key-0123456789abcdef";

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.config;
    }
}
