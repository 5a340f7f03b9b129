//! The mirror under test: the `entrepot` binary with a config a test writes.

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::*;

/// The `RUST_LOG` mirrors run with: debug lines for the tests to read unless set (the benchmarks
/// run it as users do, at `info`).
pub static MIRROR_LOG: OnceLock<&'static str> = OnceLock::new();

/// The `entrepot` binary under test.
pub struct Mirror {
    pub port: u16,
    child: Option<Child>,
    pub config: PathBuf,
    pub cache_dir: PathBuf,
    pub log: PathBuf,
    dir: tempfile::TempDir,
    /// A hosts file the process sees as `/etc/hosts` (bind-mounted in a private mount
    /// namespace), so that real host names resolve to test addresses.
    hosts: Option<PathBuf>,
}

/// What a test's mirror is configured with, said in words: `Mirror::of(&upstreams)`, then the
/// settings the test is about, then `start()`. Anything else a test needs it writes into the
/// config with [`Mirror::reconfigure`].
#[must_use = "a mirror is only started by start()"]
pub struct MirrorBuilder {
    upstreams: String,
    cache: Vec<String>,
    sections: Vec<String>,
}

impl MirrorBuilder {
    /// How long a tag's answer is fresh (`[cache] tag_ttl`, e.g. "1s").
    pub fn tag_ttl(self, ttl: &str) -> Self {
        self.cache_line(format!("tag_ttl = \"{ttl}\""))
    }

    /// How long an upstream's "no such manifest or tag" is remembered (`[cache] negative_ttl`).
    pub fn negative_ttl(self, ttl: &str) -> Self {
        self.cache_line(format!("negative_ttl = \"{ttl}\""))
    }

    /// The cache's size bound (`[cache] max_size`: "64MiB", or a number of bytes).
    pub fn max_size(self, size: impl std::fmt::Display) -> Self {
        self.cache_line(format!("max_size = \"{size}\""))
    }

    /// Never asks an upstream (`[cache] offline`).
    pub fn offline(self) -> Self {
        self.cache_line("offline = true".into())
    }

    /// Whether a manifest pull fetches its layers ahead (`[cache] prefetch_layers`).
    pub fn prefetch_layers(self, on: bool) -> Self {
        self.cache_line(format!("prefetch_layers = {on}"))
    }

    /// Logs JSON lines (`[log] format = "json"`).
    pub fn json_log(mut self) -> Self {
        self.sections.push("[log]\nformat = \"json\"\n".into());
        self
    }

    fn cache_line(mut self, line: String) -> Self {
        self.cache.push(line);
        self
    }

    /// Starts the mirror. It binds port 0 and the port it got is read from its start-up line (no
    /// other process can take a port between its choice and the bind); restarts keep that port.
    pub fn start(self) -> Mirror {
        let dir = scratch("mirror");
        let port = 0;
        let cache_dir = dir.path().join("cache");
        let mut cfg = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[cache]\ndir = \"{}\"\n",
            cache_dir.display()
        );
        for line in &self.cache {
            cfg.push_str(line);
            cfg.push('\n');
        }
        for section in &self.sections {
            cfg.push('\n');
            cfg.push_str(section);
        }
        cfg.push_str(&self.upstreams);
        let config = dir.path().join("config.toml");
        fs::write(&config, cfg).unwrap();
        let log = dir.path().join("mirror.log");
        let mut m = Mirror {
            port,
            child: None,
            config,
            cache_dir,
            log,
            dir,
            hosts: None,
        };
        m.restart();
        m
    }
}

impl Mirror {
    /// A mirror of these upstreams, to configure further and start.
    pub fn of(upstreams: &[Up]) -> MirrorBuilder {
        let mut blocks = String::new();
        for u in upstreams {
            blocks.push_str(&format!(
                "\n[[upstream]]\nname = \"{}\"\nurl = \"{}\"\ndefault = {}\n{}\n",
                u.name, u.url, u.default, u.extra
            ));
        }
        MirrorBuilder {
            upstreams: blocks,
            cache: Vec::new(),
            sections: Vec::new(),
        }
    }

    /// The repository's own `config.toml`, changed by `edit` alone, in a directory of its own
    /// (its `dir = "./data"` resolves there), seeing `hosts` as `/etc/hosts`.
    pub fn shipped(edit: impl FnOnce(String) -> String, hosts: &Path) -> Mirror {
        let dir = scratch("mirror-shipped");
        let text =
            fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml")).unwrap();
        let config = dir.path().join("config.toml");
        fs::write(&config, edit(text)).unwrap();
        let mut m = Mirror {
            port: 0,
            child: None,
            config,
            cache_dir: dir.path().join("data"),
            log: dir.path().join("mirror.log"),
            dir,
            hosts: Some(hosts.to_owned()),
        };
        m.restart();
        m
    }

    /// (Re)starts the process on the same port, config and cache.
    pub fn restart(&mut self) {
        self.kill9();
        let logged_before = fs::metadata(&self.log).map_or(0, |m| m.len());
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        // Its own empty working directory, so tests can see it writes nothing outside cache.dir.
        let cwd = self.dir.path().join("cwd");
        fs::create_dir_all(&cwd).unwrap();
        let mut command = match &self.hosts {
            // unshare and sh exec in place: the child's pid is entrepot's.
            Some(hosts) => {
                let mut c = Command::new("unshare");
                c.args(["--mount", "--propagation", "private", "sh", "-c"])
                    .arg("mount --bind \"$0\" /etc/hosts && exec \"$@\"")
                    .arg(hosts)
                    .arg(env!("CARGO_BIN_EXE_entrepot"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_entrepot")),
        };
        let child = command
            .current_dir(&cwd)
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env(
                "RUST_LOG",
                MIRROR_LOG.get().copied().unwrap_or("entrepot=debug,info"),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        if self.port != 0 {
            wait_for_port(self.port, "entrepot");
            return;
        }
        self.port = self.listening_port(logged_before);
        let cfg = fs::read_to_string(&self.config).unwrap();
        let bound = cfg.replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{}\"", self.port),
            1,
        );
        fs::write(&self.config, bound).unwrap();
    }

    /// The port of the `entrepot listening` line logged after byte `from` of the log (text or
    /// JSON), once it appears.
    fn listening_port(&mut self, from: u64) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let text = fs::read(&self.log).unwrap_or_default();
            let new =
                String::from_utf8_lossy(&text[(from as usize).min(text.len())..]).into_owned();
            let port = new
                .lines()
                .filter(|l| l.contains("entrepot listening"))
                .find_map(|l| {
                    let at = l
                        .find("addr=")
                        .map(|i| i + 5)
                        .or_else(|| l.find("\"addr\":\"").map(|i| i + 8))?;
                    let addr = &l[at..];
                    let end = addr.find([' ', '"']).unwrap_or(addr.len());
                    addr[..end].rsplit(':').next()?.parse().ok()
                });
            if let Some(port) = port {
                return port;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("entrepot exited ({status}) before listening:\n{new}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("entrepot did not say where it listens");
    }

    /// Stops the process, rewrites its config with `edit`, and starts it again.
    pub fn reconfigure(&mut self, edit: impl FnOnce(String) -> String) {
        self.kill9();
        let cfg = fs::read_to_string(&self.config).unwrap();
        fs::write(&self.config, edit(cfg)).unwrap();
        self.restart();
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the process as a service manager does (SIGTERM), and waits until it has exited.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            terminate(&mut c);
        }
    }

    /// Kills the process without warning (SIGKILL).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:port`, as image references spell it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The verified files in the cache, by name.
    pub fn cached_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        let root = self.cache_dir.join("blobs");
        for alg in fs::read_dir(&root).into_iter().flatten().flatten() {
            for pre in fs::read_dir(alg.path()).into_iter().flatten().flatten() {
                for f in fs::read_dir(pre.path()).into_iter().flatten().flatten() {
                    out.push(format!(
                        "{}:{}",
                        alg.file_name().to_string_lossy(),
                        f.file_name().to_string_lossy()
                    ));
                }
            }
        }
        out
    }

    /// Waits (up to 30 s) until `digest` is stored: a fill's clients get their last byte when the
    /// digest matches, and the fsync and rename into the cache come just after.
    pub fn wait_cached(&self, digest: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.cached_files().iter().any(|d| d == digest) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Waits until every fill has committed or given up: nothing left in `tmp/`, and (where
    /// `/metrics` is served) no fill in flight. A fill renames its file out of `tmp/` a moment
    /// before it records it; until then a new request joins the fill rather than hitting.
    pub fn wait_settled(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.temp_files() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                return; // not running: nothing in flight
            }
            let r = raw_request(self.port, "GET", "/metrics", &[]);
            if r.status != 200
                || String::from_utf8_lossy(&r.body).contains("\nentrepot_fills_in_flight 0\n")
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Files left in the temp area.
    pub fn temp_files(&self) -> usize {
        fs::read_dir(self.cache_dir.join("tmp"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// The log as the mirror has written it. `serve` writes its lines in batches, each at most
    /// 50 ms after it was logged (`src/log_out.rs`), so this waits twice that first.
    pub fn log_text(&self) -> String {
        std::thread::sleep(Duration::from_millis(100));
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.kill9();
    }
}
