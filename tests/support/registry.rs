//! The upstream: a real `docker-registry` (CNCF distribution) over a storage directory, the
//! seeded storage and private copies of it, and upstream entries for a mirror's config.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use super::*;

/// A real `docker-registry` process.
pub struct Registry {
    pub port: u16,
    child: Option<Child>,
    pub log: PathBuf,
    pub storage: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Serves `storage` (read by several registries at once safely) over plain HTTP.
    pub fn start(storage: &Path) -> Registry {
        Self::start_with(storage, "", None)
    }

    /// With extra YAML (e.g. an `auth:` section) and optionally a fixed port.
    pub fn start_with(storage: &Path, extra_yaml: &str, port: Option<u16>) -> Registry {
        Self::start_on(
            storage,
            extra_yaml,
            "127.0.0.1",
            port.unwrap_or_else(free_port),
        )
    }

    /// On another loopback address (a host name's, in a test that maps names to addresses).
    pub fn start_on(storage: &Path, extra_yaml: &str, ip: &str, port: u16) -> Registry {
        let dir = scratch("registry");
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {ip}:{port}\n{extra_yaml}",
                storage.display()
            ),
        )
        .unwrap();
        // The access log goes to stdout, other logs to stderr: keep both in one file.
        let log = dir.path().join("registry.log");
        let out = fs::File::create(&log).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("docker-registry (Debian package docker-registry) must be installed");
        wait_for_address(ip, port, "docker-registry");
        Registry {
            port,
            child: Some(child),
            log,
            storage: storage.to_owned(),
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Copies `from` (`repo:tag` in `source`) to `to` (`repo:tag` here) with `skopeo copy`, as a
    /// client pushing to this registry would.
    pub fn copy_from(&self, source: &Registry, from: &str, to: &str) {
        run(Command::new("skopeo").args([
            "copy",
            "-q",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &format!("docker://127.0.0.1:{}/{from}", source.port),
            &format!("docker://127.0.0.1:{}/{to}", self.port),
        ]));
    }

    /// How many access-log lines contain `needle` (e.g. `"GET /v2/x/blobs/sha256:..."`).
    pub fn count(&self, needle: &str) -> usize {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An upstream entry for a mirror config.
pub struct Up<'a> {
    pub name: &'a str,
    pub url: String,
    pub default: bool,
    pub extra: String,
}

impl<'a> Up<'a> {
    pub fn new(name: &'a str, url: String) -> Up<'a> {
        Up {
            name,
            url,
            default: false,
            extra: String::new(),
        }
    }

    pub fn default(name: &'a str, url: String) -> Up<'a> {
        Up {
            default: true,
            ..Up::new(name, url)
        }
    }
}

/// Path of a blob's data file inside a distribution registry's filesystem storage.
pub fn registry_blob_path(storage: &Path, digest: &str) -> PathBuf {
    let hex = &digest[7..];
    storage
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

/// A private copy of the seeded storage, for tests that damage it.
pub fn storage_copy() -> tempfile::TempDir {
    let dir = scratch("storage");
    run(Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", seed().storage.display()))
        .arg(dir.path()));
    dir
}
