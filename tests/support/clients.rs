//! Real clients: skopeo, and containerd and dockerd daemons with all their state in temp
//! directories.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// One `skopeo copy` of `docker://REFERENCE` (the mirror, usually) into a `dir:` layout: the
/// one way tests pull with skopeo. Without [`Skopeo::cert_dir`] the source's TLS is not
/// verified; it never retries, so a refusal shows at once.
pub struct Skopeo {
    reference: String,
    dest: PathBuf,
    all: bool,
    cert_dir: Option<PathBuf>,
    creds: Option<Option<String>>,
}

impl Skopeo {
    pub fn pull(reference: &str, dest: &Path) -> Skopeo {
        Skopeo {
            reference: reference.to_owned(),
            dest: dest.to_owned(),
            all: false,
            cert_dir: None,
            creds: None,
        }
    }

    /// Every platform of an index (`--all`), if `all`.
    pub fn all(mut self, all: bool) -> Skopeo {
        self.all = all;
        self
    }

    /// Verify the source's TLS against the CA certificates in `dir` (`--src-cert-dir`).
    pub fn cert_dir(mut self, dir: &Path) -> Skopeo {
        self.cert_dir = Some(dir.to_owned());
        self
    }

    /// `--src-creds USER:PASSWORD`, or `--src-no-creds` for None.
    pub fn creds(mut self, creds: Option<&str>) -> Skopeo {
        self.creds = Some(creds.map(str::to_owned));
        self
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--retry-times", "0"]);
        match &self.cert_dir {
            Some(dir) => cmd.arg("--src-cert-dir").arg(dir),
            None => cmd.arg("--src-tls-verify=false"),
        };
        match &self.creds {
            Some(Some(c)) => {
                cmd.args(["--src-creds", c]);
            }
            Some(None) => {
                cmd.arg("--src-no-creds");
            }
            None => {}
        }
        if self.all {
            cmd.arg("--all");
        }
        cmd.arg(format!("docker://{}", self.reference))
            .arg(format!("dir:{}", self.dest.display()));
        cmd
    }

    /// What skopeo printed and how it ended.
    pub fn output(self) -> std::process::Output {
        self.command().output().unwrap()
    }

    /// The copied manifest's digest, or skopeo's complaint.
    pub fn try_digest(self) -> Result<String, String> {
        let out = self.command().output().unwrap();
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(sha256(&fs::read(self.dest.join("manifest.json")).unwrap()))
    }

    /// The copied manifest's digest; a failed copy is a panic with skopeo's output.
    pub fn digest(self) -> String {
        run(&mut self.command());
        sha256(&fs::read(self.dest.join("manifest.json")).unwrap())
    }
}

/// `skopeo copy` from the mirror into a `dir:` layout; returns the copied manifest's digest.
pub fn skopeo_pull(reference: &str, dest: &Path, all: bool) -> String {
    Skopeo::pull(reference, dest).all(all).digest()
}

/// A containerd daemon with its root, state and socket in a temp dir.
pub struct Containerd {
    child: Child,
    pub socket: String,
    _dir: tempfile::TempDir,
}

impl Containerd {
    pub fn start() -> Containerd {
        // Unix socket paths are short: keep this under /tmp.
        let dir = tempfile::Builder::new()
            .prefix("ctd")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path().display();
        let socket = format!("{d}/c.sock");
        fs::write(
            dir.path().join("config.toml"),
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n[grpc]\n  address = \"{socket}\"\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  disable_tcp_service = true\n"
            ),
        )
        .unwrap();
        let log = fs::File::create(dir.path().join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("containerd (Debian package containerd) must be installed");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !Path::new(&socket).exists() {
            assert!(Instant::now() < deadline, "containerd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Containerd {
            child,
            socket,
            _dir: dir,
        }
    }

    /// Pulls `reference` (of `registry`) with the repository's own
    /// `deploy/clients/containerd/certs.d` as the hosts directory, the mirror's address put in
    /// (a registry without a directory there uses `_default`, so every request carries
    /// `?ns=<registry>`); returns `ctr images ls`.
    pub fn pull_through(&self, mirror_url: &str, registry: &str, reference: &str) -> String {
        let hosts = scratch("hosts");
        let shipped = deploy_file("clients/containerd/certs.d");
        for entry in fs::read_dir(&shipped).unwrap() {
            let entry = entry.unwrap();
            let dir = hosts.path().join(entry.file_name());
            fs::create_dir_all(&dir).unwrap();
            let text = fs::read_to_string(entry.path().join("hosts.toml")).unwrap();
            fs::write(dir.join("hosts.toml"), with_mirror(&text, mirror_url)).unwrap();
        }
        assert!(
            reference.starts_with(registry),
            "{reference} is not of {registry}"
        );
        run(self
            .ctr()
            .args(["images", "pull", "--hosts-dir"])
            .arg(hosts.path())
            .arg(reference));
        run(self.ctr().args(["images", "ls"]))
    }

    /// [`Containerd::pull_through`], then the `ctr images ls` line of `reference` (which names
    /// its digest).
    pub fn pull_line(&self, mirror_url: &str, registry: &str, reference: &str) -> String {
        let list = self.pull_through(mirror_url, registry, reference);
        list.lines()
            .find(|l| l.starts_with(reference))
            .unwrap_or_else(|| panic!("{reference} not in {list}"))
            .to_owned()
    }

    pub fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address").arg(&self.socket);
        c
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A dockerd with all its state in a temp dir (`"iptables": false`, `"bridge": "none"`, the vfs
/// storage driver, its own roots, pidfile and socket), using `containerd`. Stopped with SIGTERM
/// when dropped, so it unmounts what it mounted.
pub struct Dockerd {
    pub host: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Dockerd {
    /// Starts dockerd with `config` (the client settings under test) plus the sandbox's keys.
    pub fn start(containerd: &Containerd, mut config: serde_json::Value) -> Dockerd {
        let dir = tempfile::Builder::new()
            .prefix("dkd")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path().display();
        let sock = format!("{d}/docker.sock");
        let sandbox = serde_json::json!({
            "iptables": false,
            "bridge": "none",
            "storage-driver": "vfs",
            "data-root": format!("{d}/root"),
            "exec-root": format!("{d}/exec"),
            "pidfile": format!("{d}/docker.pid"),
            "hosts": [format!("unix://{sock}")],
            "containerd": containerd.socket,
        });
        for (k, v) in sandbox.as_object().unwrap() {
            config[k] = v.clone();
        }
        fs::write(dir.path().join("daemon.json"), config.to_string()).unwrap();
        let log = fs::File::create(dir.path().join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(dir.path().join("daemon.json"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd (Debian package docker.io) must be installed");
        let dockerd = Dockerd {
            host: format!("unix://{sock}"),
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !dockerd
            .docker()
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
        {
            assert!(
                Instant::now() < deadline,
                "dockerd did not start: {}",
                fs::read_to_string(dockerd._dir.path().join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        dockerd
    }

    /// dockerd with the repository's own `deploy/clients/docker/daemon.json`, the mirror's
    /// address put in.
    pub fn with_shipped_mirror(containerd: &Containerd, mirror_url: &str) -> Dockerd {
        let shipped = fs::read_to_string(deploy_file("clients/docker/daemon.json")).unwrap();
        let config = serde_json::from_str(&with_mirror(&shipped, mirror_url)).unwrap();
        Dockerd::start(containerd, config)
    }

    /// `docker image inspect` of an image's repository digests (JSON on stdout).
    pub fn repo_digests(&self, image: &str) -> std::process::Output {
        self.docker()
            .args([
                "image",
                "inspect",
                image,
                "--format",
                "{{json .RepoDigests}}",
            ])
            .output()
            .unwrap()
    }

    /// `docker pull image` on this daemon.
    pub fn pull(&self, image: &str) -> std::process::Output {
        self.docker().args(["pull", image]).output().unwrap()
    }

    /// A `docker` command talking to this daemon.
    pub fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.arg("-H").arg(&self.host);
        c
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}
