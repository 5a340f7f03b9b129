//! Shared setup for the integration tests: real processes on 127.0.0.1, one file for each kind
//! of thing a test starts.
//!
//! - `images.rs`: [`seed`] builds the test images as OCI layouts (in Rust, byte for byte) and
//!   pushes them with `skopeo copy` into the storage of a real `docker-registry` (CNCF
//!   distribution), once per `cargo test` run: the first test binary to get there builds it under
//!   a file lock, the others reuse it.
//! - `registry.rs`: [`Registry`] runs `docker-registry` over a storage directory, with its access
//!   log captured so tests can count upstream requests; `auth.rs` adds token auth, htpasswd and
//!   TLS with a private CA; `garage.rs` runs Garage for the shared tier.
//! - `mirror.rs`: [`Mirror`] runs the `entrepot` binary: `Mirror::of(&upstreams)`, the settings
//!   a test is about in words (`.tag_ttl("1s")`, `.max_size(..)`, `.offline()`), `.start()`.
//! - `clients.rs`: skopeo, containerd and dockerd; `http.rs`: raw and streaming HTTP requests;
//!   `site.rs`: a config and a cache for running `entrepot` commands.
//! - `fakes.rs`: stand-ins for misbehaviour no real registry shows on cue; `nginx.rs`: nginx.
//!
//! Every process is killed when its handle drops. This file keeps what all of them share,
//! [`eventually`] among it: the wait before an assertion, instead of a fixed sleep.
// Each test binary uses some of it.
#![allow(dead_code)]

pub mod auth;
pub mod clients;
pub mod fakes;
pub mod garage;
pub mod http;
pub mod images;
pub mod mirror;
pub mod nginx;
pub mod registry;
pub mod site;

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

// What a test binary does not use of these is fine.
#[allow(unused_imports)]
pub use self::{
    clients::*, fakes::*, http::*, images::Seed, mirror::*, nginx::*, registry::*, site::*,
};

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

/// Waits until `done` is true, asking again every 25 ms, and panics with `failure` if it is not
/// within `within`. The wait before a negative assertion: wait for the state that would show the
/// thing happened (a fill settled, a temp file gone), never a fixed sleep.
pub fn eventually(within: Duration, failure: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{failure}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Waits until something accepts connections on `port`.
pub fn wait_for_port(port: u16, what: &str) {
    wait_for_address("127.0.0.1", port, what);
}

/// Waits until `ip:port` accepts connections.
pub fn wait_for_address(ip: &str, port: u16, what: &str) {
    eventually(
        Duration::from_secs(30),
        &format!("{what} did not start listening on {ip}:{port}"),
        || TcpStream::connect((ip, port)).is_ok(),
    );
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

/// Stops a daemon as its service manager would: SIGTERM, then waits for it to exit.
pub fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}
