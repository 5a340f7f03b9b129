//! Shared setup for the integration tests: real processes on 127.0.0.1.
//!
//! - [`seed`] builds the test images as OCI layouts (in Rust, byte for byte) and pushes them with
//!   `skopeo copy` into the storage of a real `docker-registry` (CNCF distribution), once per
//!   `cargo test` run: the first test binary to get there builds it under a file lock, the others
//!   reuse it.
//! - [`Registry`] runs `docker-registry` over a storage directory, with its access log captured so
//!   tests can count upstream requests.
//! - [`Mirror`] runs the `entrepot` binary with a config a test writes.
//!
//! Every process is killed when its handle drops.
#![allow(dead_code)]

pub mod auth;
pub mod garage;
pub mod images;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use images::Seed;

/// A port nobody is listening on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A file or directory under the repository's `deploy/`.
pub fn deploy_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

/// A shipped client configuration with its example mirror address (`mirror.example:5000`)
/// replaced by `mirror_url`'s: the only thing a test changes in those files.
pub fn with_mirror(text: &str, mirror_url: &str) -> String {
    let address = mirror_url
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    text.replace("mirror.example:5000", address)
}

/// Waits until something accepts connections on `port`.
pub fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{what} did not start listening on {port}");
}

/// Where shared fixtures live: under the cargo target directory, so they survive between test
/// binaries of one run (and between runs, keyed by the seed's version).
pub fn fixtures_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test-binary>
    let target = exe.ancestors().nth(3).unwrap().to_path_buf();
    let dir = target.join("test-fixtures");
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A scratch directory under the fixtures dir (not /tmp, which may be small).
pub fn scratch(name: &str) -> tempfile::TempDir {
    let base = fixtures_dir().join("scratch");
    fs::create_dir_all(&base).unwrap();
    tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(base)
        .unwrap()
}

/// The seeded upstream storage, built once.
pub fn seed() -> &'static Seed {
    static SEED: OnceLock<Seed> = OnceLock::new();
    SEED.get_or_init(images::build_or_load)
}

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
        let dir = scratch("registry");
        let port = port.unwrap_or_else(free_port);
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{extra_yaml}",
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
        wait_for_port(port, "docker-registry");
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
}

impl Mirror {
    /// Starts a mirror with these upstreams and extra `[cache]` lines (e.g. `tag_ttl = "1s"`).
    pub fn start(upstreams: &[Up], cache_extra: &str) -> Mirror {
        let dir = scratch("mirror");
        let port = free_port();
        let cache_dir = dir.path().join("cache");
        let mut cfg = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[cache]\ndir = \"{}\"\n{cache_extra}\n",
            cache_dir.display()
        );
        for u in upstreams {
            cfg.push_str(&format!(
                "\n[[upstream]]\nname = \"{}\"\nurl = \"{}\"\ndefault = {}\n{}\n",
                u.name, u.url, u.default, u.extra
            ));
        }
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
        };
        m.restart();
        m
    }

    /// (Re)starts the process on the same port, config and cache.
    pub fn restart(&mut self) {
        self.kill9();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        // Its own empty working directory, so tests can see it writes nothing outside cache.dir.
        let cwd = self.dir.path().join("cwd");
        fs::create_dir_all(&cwd).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_entrepot"))
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
        wait_for_port(self.port, "entrepot");
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

/// A minimal HTTP/1.1 response, read off a raw socket so tests can see exactly what a client
/// would: whether the body was complete, cut short, or the connection aborted.
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the body had as many bytes as `Content-Length` promised.
    pub complete: bool,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request (`Connection: close`) and reads the answer to EOF.
pub fn raw_request(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    // An aborted connection shows up as a reset or an early EOF: keep what arrived.
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    parse_raw(&buf, method == "HEAD")
}

fn parse_raw(buf: &[u8], head: bool) -> RawResponse {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head_text = String::from_utf8_lossy(&buf[..split]).to_string();
    let mut lines = head_text.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = buf[split + 4..].to_vec();
    let declared = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let complete = head || declared.is_some_and(|n| n == body.len());
    RawResponse {
        status,
        headers,
        body,
        complete,
    }
}

/// Runs a command, panicking with its output if it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The SHA-256 digest of bytes, as `sha256:<hex>`.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex(&sha2::Sha256::digest(bytes)))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `skopeo copy` from the mirror into a `dir:` layout; returns the copied manifest's digest.
pub fn skopeo_pull(reference: &str, dest: &Path, all: bool) -> String {
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--src-tls-verify=false", "--retry-times", "0"]);
    if all {
        cmd.arg("--all");
    }
    cmd.arg(format!("docker://{reference}"))
        .arg(format!("dir:{}", dest.display()));
    run(&mut cmd);
    sha256(&fs::read(dest.join("manifest.json")).unwrap())
}

/// What a streaming GET saw: status, headers, how many body bytes arrived, and their digest.
pub struct Streamed {
    pub status: u16,
    pub declared: Option<u64>,
    pub received: u64,
    pub digest: String,
    pub headers: Vec<(String, String)>,
}

impl Streamed {
    /// A complete body: exactly as many bytes as `Content-Length` promised.
    pub fn complete(&self) -> bool {
        self.declared == Some(self.received)
    }
}

/// GETs `path` over a raw socket, hashing the body as it arrives (no buffering of big blobs).
pub fn stream_get(port: u16, path: &str, headers: &[(&str, &str)]) -> Streamed {
    try_stream_get(port, path, headers).expect("a response")
}

/// Like [`stream_get`], but `None` when no response head arrived (refused, reset).
pub fn try_stream_get(port: u16, path: &str, headers: &[(&str, &str)]) -> Option<Streamed> {
    use sha2::Digest as _;
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 256 * 1024];
    let mut hasher = sha2::Sha256::new();
    let mut head: Option<(u16, Vec<(String, String)>)> = None;
    let mut received = 0u64;
    loop {
        let n = match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if head.is_some() {
            hasher.update(&chunk[..n]);
            received += n as u64;
            continue;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(split) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let r = parse_raw(&buf[..split + 4], true);
            let body = &buf[split + 4..];
            hasher.update(body);
            received += body.len() as u64;
            head = Some((r.status, r.headers));
        }
    }
    let (status, headers) = head?;
    let declared = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok());
    Some(Streamed {
        status,
        declared,
        received,
        digest: format!("sha256:{}", hex(&hasher.finalize())),
        headers,
    })
}

/// A TCP proxy in front of an upstream that passes its answers back slowly, or cuts every
/// connection after some bytes: a slow registry, or one whose connection dies mid-body.
pub struct Proxy {
    pub port: u16,
    /// Bytes per second back to the client (0: unlimited); may be changed while it runs.
    pub rate: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    /// Cuts every connection after `limit` bytes have gone back to the client.
    pub fn cutting(upstream_port: u16, limit: u64) -> Proxy {
        Self::start(upstream_port, limit, 0)
    }

    /// Passes answers back at `bytes_per_sec`.
    pub fn slow(upstream_port: u16, bytes_per_sec: u64) -> Proxy {
        Self::start(upstream_port, u64::MAX, bytes_per_sec)
    }

    fn start(upstream_port: u16, limit: u64, bytes_per_sec: u64) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let rate = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(bytes_per_sec));
        let r = rate.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
                let rate = r.clone();
                std::thread::spawn(move || {
                    let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
                        return;
                    };
                    let (mut c2, mut u2) = (client.try_clone().unwrap(), up.try_clone().unwrap());
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut c2, &mut u2);
                    });
                    let mut sent = 0u64;
                    let mut buf = vec![0u8; 16 * 1024];
                    while sent < limit {
                        let n = match up.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n.min((limit - sent).min(usize::MAX as u64) as usize),
                        };
                        if client.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        sent += n as u64;
                        let bps = rate.load(Ordering::Relaxed);
                        if bps > 0 {
                            std::thread::sleep(Duration::from_secs_f64(n as f64 / bps as f64));
                        }
                    }
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    let _ = up.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Proxy { port, rate }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// nginx in the foreground, stopped on drop with SIGTERM to its master, which ends its workers
/// first (a SIGKILL to the master alone would leave the workers running, orphaned).
pub struct NginxProcess(Child);

impl Drop for NginxProcess {
    fn drop(&mut self) {
        terminate(&mut self.0);
    }
}

/// Stops a daemon as its service manager would: SIGTERM, then waits for it to exit.
fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// Runs nginx in the foreground with `dir` as its prefix and `dir/nginx.conf` as its config;
/// returns once `port` accepts connections.
pub fn start_nginx(dir: &Path, port: u16) -> NginxProcess {
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx (Debian package nginx) must be installed");
    let nginx = NginxProcess(child);
    wait_for_port(port, "nginx");
    nginx
}

impl NginxProcess {
    pub fn pid(&self) -> u32 {
        self.0.id()
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

/// One request as a [`FakeUpstream`] saw it.
#[derive(Clone, Debug)]
pub struct FakeRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

/// One scripted answer.
pub struct FakeAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Declared `Content-Length`, when it should lie about the body.
    pub declared_len: Option<usize>,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Send a chunked body that never ends (until the reader hangs up), instead of `body`.
    pub endless: bool,
}

impl FakeAnswer {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> FakeAnswer {
        FakeAnswer {
            status,
            headers: Vec::new(),
            body: body.into(),
            declared_len: None,
            delay: Duration::ZERO,
            endless: false,
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> FakeAnswer {
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }
}

/// A scripted HTTP upstream, for the misbehaviour no real registry can be made to show (HTML
/// pages, lying lengths, redirect loops, 5xx bursts, 429s). Each connection serves one request.
pub struct FakeUpstream {
    pub port: u16,
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<FakeRequest>>>,
    pub max_in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeUpstream {
    pub fn start<F>(handler: F) -> FakeUpstream
    where
        F: Fn(&FakeRequest) -> FakeAnswer + Send + Sync + 'static,
    {
        Self::start_on("127.0.0.1", handler)
    }

    /// On another loopback address (`127.0.0.2`: another host, with no name to resolve).
    pub fn start_on<F>(ip: &str, handler: F) -> FakeUpstream
    where
        F: Fn(&FakeRequest) -> FakeAnswer + Send + Sync + 'static,
    {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests: Arc<Mutex<Vec<FakeRequest>>> = Arc::default();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let max_in_flight = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(handler);
        let (reqs, maxf) = (requests.clone(), max_in_flight.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let (handler, reqs, in_flight, maxf) = (
                    handler.clone(),
                    reqs.clone(),
                    in_flight.clone(),
                    maxf.clone(),
                );
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut b = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut b) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&b[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let mut lines = text.split("\r\n");
                    let mut first = lines.next().unwrap_or("").split(' ');
                    let req = FakeRequest {
                        method: first.next().unwrap_or("").to_owned(),
                        path: first.next().unwrap_or("").to_owned(),
                        headers: lines
                            .filter_map(|l| l.split_once(':'))
                            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                            .collect(),
                    };
                    reqs.lock().unwrap().push(req.clone());
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    maxf.fetch_max(now, Ordering::SeqCst);
                    let a = handler(&req);
                    std::thread::sleep(a.delay);
                    let mut head = if a.endless {
                        format!(
                            "HTTP/1.1 {} X\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n",
                            a.status
                        )
                    } else {
                        format!(
                            "HTTP/1.1 {} X\r\nConnection: close\r\nContent-Length: {}\r\n",
                            a.status,
                            a.declared_len.unwrap_or(a.body.len())
                        )
                    };
                    for (k, v) in &a.headers {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    head.push_str("\r\n");
                    let _ = conn.write_all(head.as_bytes());
                    if req.method != "HEAD" && a.endless {
                        let chunk = vec![b'x'; 64 << 10];
                        let framed =
                            [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                        while conn.write_all(&framed).is_ok() {}
                    } else if req.method != "HEAD" {
                        let _ = conn.write_all(&a.body);
                    }
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    let _ = conn.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        FakeUpstream {
            port,
            requests,
            max_in_flight,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Requests whose path contains `needle`, with their method.
    pub fn seen(&self, method: &str, needle: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == method && r.path.contains(needle))
            .count()
    }
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
