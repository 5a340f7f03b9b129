//! Configuration: the TOML file, parsed once at start-up into checked values.
//!
//! Everything a user can get wrong is caught here, before a socket is opened, with a message that
//! names the key (`upstream[1].url: ...`). The rest of the program receives a [`Config`] whose
//! values are already valid (sizes in bytes, durations, parsed URLs) and never re-checks them.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

/// The configuration shipped at the repository root, used when no file is given or found.
pub const EMBEDDED_DEFAULT: &str = include_str!("../config.toml");

/// A configuration mistake, naming the key and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {origin}: {message}")]
    Syntax { origin: String, message: String },
    #[error("config {origin}: {key}: {problem}")]
    Invalid {
        origin: String,
        key: String,
        problem: String,
    },
}

/// The checked configuration the program runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub cache: CacheConfig,
    pub upstreams: Vec<UpstreamConfig>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// How long a client may take to send its request headers (slowloris guard).
    pub header_read_timeout: Duration,
    /// Largest request head accepted, in bytes.
    pub max_header_bytes: usize,
    /// Whether `/metrics` answers on the same listener.
    pub metrics: bool,
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub dir: PathBuf,
    pub max_size: u64,
    pub tag_ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    pub url: Url,
    pub default: bool,
    pub credentials: CredentialSource,
    /// When set, only repositories matching one of these are served (others get 403 DENIED).
    pub repositories: Option<Vec<RepoPattern>>,
    /// Accept any certificate from this upstream (explicitly asked for; logged at start).
    pub tls_insecure_skip_verify: bool,
    /// Docker Hub's rule: single-component names mean `library/<name>`.
    pub library_prefix: bool,
    /// Extra CA certificate (PEM) trusted for this upstream.
    pub ca_cert: Option<PathBuf>,
    pub connect_timeout: Duration,
    /// Longest silence tolerated while reading an upstream answer (not a total deadline).
    pub read_timeout: Duration,
    /// Requests in flight to this upstream at once (a streaming blob counts until it ends).
    pub max_concurrent_requests: usize,
}

/// Where an upstream's stored credentials come from.
#[derive(Clone, Debug)]
pub enum CredentialSource {
    None,
    Password {
        username: String,
        password: Secret,
    },
    /// The secret is read from a file at use (so a rotated Kubernetes secret is picked up).
    PasswordFile {
        username: String,
        path: PathBuf,
    },
    /// A docker credential helper: `docker-credential-NAME` on PATH, or a program path.
    Helper(PathBuf),
    /// A docker `identitytoken` (an OAuth2 refresh token).
    IdentityToken(Secret),
}

impl CredentialSource {
    fn describe(&self) -> String {
        match self {
            CredentialSource::None => String::new(),
            CredentialSource::Password { username, .. } => {
                format!("username = {username:?}\npassword = \"<redacted>\"\n")
            }
            CredentialSource::PasswordFile { username, path } => {
                format!(
                    "username = {username:?}\npassword_file = {:?}\n",
                    path.display().to_string()
                )
            }
            CredentialSource::Helper(p) => {
                format!("credential_helper = {:?}\n", p.display().to_string())
            }
            CredentialSource::IdentityToken(_) => {
                "# credentials: identitytoken from docker_config (redacted)\n".into()
            }
        }
    }
}

/// A repository allow-list entry: `library/*` (one component), `myorg/**` (any depth), `a/b`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoPattern(String);

impl RepoPattern {
    fn parse(s: &str) -> Option<RepoPattern> {
        let ok = !s.is_empty()
            && s.split('/').all(|seg| {
                !seg.is_empty()
                    && seg.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-*".contains(&b)
                    })
                    && (seg == "**" || !seg.contains("**"))
            });
        ok.then(|| RepoPattern(s.to_owned()))
    }

    pub fn matches(&self, repo: &str) -> bool {
        let pat: Vec<&str> = self.0.split('/').collect();
        let name: Vec<&str> = repo.split('/').collect();
        match_segments(&pat, &name)
    }
}

fn match_segments(pat: &[&str], name: &[&str]) -> bool {
    match (pat.first(), name.first()) {
        (None, None) => true,
        (Some(&"**"), _) => (0..=name.len()).any(|k| match_segments(&pat[1..], &name[k..])),
        (Some(p), Some(n)) => {
            glob(p.as_bytes(), n.as_bytes()) && match_segments(&pat[1..], &name[1..])
        }
        _ => false,
    }
}

/// `*` matches any run of characters within one path component.
fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => (0..=s.len()).any(|k| glob(&p[1..], &s[k..])),
        Some(c) => s.first() == Some(c) && glob(&p[1..], &s[1..]),
    }
}

/// A secret value that never prints.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

// ---- the file's shape, as serde reads it --------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    upstream: Vec<RawUpstream>,
    #[serde(default)]
    credentials: RawCredentials,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCredentials {
    docker_config: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    max_connections: Option<usize>,
    header_read_timeout: Option<String>,
    max_header_size: Option<String>,
    metrics: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCache {
    dir: Option<PathBuf>,
    max_size: Option<String>,
    tag_ttl: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    name: String,
    url: String,
    #[serde(default)]
    default: bool,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    credential_helper: Option<String>,
    #[serde(default)]
    tls_insecure_skip_verify: bool,
    repositories: Option<Vec<String>>,
    library_prefix: Option<bool>,
    ca_cert: Option<PathBuf>,
    connect_timeout: Option<String>,
    read_timeout: Option<String>,
    max_concurrent_requests: Option<usize>,
}

impl Config {
    /// Loads the config: `path` if given (it must exist), else `./config.toml` if present, else the
    /// embedded default.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(p) => Self::from_file(p),
            None if Path::new("config.toml").exists() => Self::from_file(Path::new("config.toml")),
            None => Self::parse(EMBEDDED_DEFAULT, "(embedded default)"),
        }
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks a config text; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            origin: origin.to_owned(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        let bad = |key: &str, problem: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            key: key.to_owned(),
            problem,
        };

        let listen = raw.server.listen.as_deref().unwrap_or("0.0.0.0:5000");
        let listen: SocketAddr = listen.parse().map_err(|_| {
            bad(
                "server.listen",
                format!("{listen:?} is not an address:port"),
            )
        })?;
        let max_connections = raw.server.max_connections.unwrap_or(4096);
        if max_connections == 0 {
            return Err(bad("server.max_connections", "must be at least 1".into()));
        }
        let header_read_timeout = opt_duration(
            raw.server.header_read_timeout.as_deref(),
            "10s",
            "server.header_read_timeout",
            &bad,
        )?;
        let max_header_bytes = opt_size(
            raw.server.max_header_size.as_deref(),
            "64KiB",
            "server.max_header_size",
            &bad,
        )?;
        if !(8192..=16 * 1024 * 1024).contains(&max_header_bytes) {
            return Err(bad(
                "server.max_header_size",
                "must be between 8KiB and 16MiB".into(),
            ));
        }

        let dir = raw.cache.dir.unwrap_or_else(|| PathBuf::from("./data"));
        if dir.as_os_str().is_empty() {
            return Err(bad("cache.dir", "must not be empty".into()));
        }
        let max_size = opt_size(
            raw.cache.max_size.as_deref(),
            "20GiB",
            "cache.max_size",
            &bad,
        )?;
        if max_size == 0 {
            return Err(bad("cache.max_size", "must be greater than zero".into()));
        }
        let tag_ttl = opt_duration(raw.cache.tag_ttl.as_deref(), "1m", "cache.tag_ttl", &bad)?;

        if raw.upstream.is_empty() {
            return Err(bad(
                "upstream",
                "at least one [[upstream]] is required".into(),
            ));
        }
        let docker_config = match &raw.credentials.docker_config {
            None => None,
            Some(path) => {
                Some(DockerConfig::load(path).map_err(|p| bad("credentials.docker_config", p))?)
            }
        };
        let mut upstreams = Vec::with_capacity(raw.upstream.len());
        for (i, u) in raw.upstream.into_iter().enumerate() {
            let key = |k: &str| format!("upstream[{i}].{k}");
            if !valid_upstream_name(&u.name) {
                return Err(bad(
                    &key("name"),
                    format!(
                        "{:?} is not a registry name (lowercase host[:port], like \"quay.io\")",
                        u.name
                    ),
                ));
            }
            if upstreams.iter().any(|o: &UpstreamConfig| o.name == u.name) {
                return Err(bad(
                    &key("name"),
                    format!("{:?} is configured twice", u.name),
                ));
            }
            let url = Url::parse(&u.url).map_err(|e| {
                bad(
                    &key("url"),
                    format!(
                        "{:?} is not a URL ({e}); write it with its scheme, like https://{}",
                        u.url, u.url
                    ),
                )
            })?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(bad(
                    &key("url"),
                    format!("{:?} must be an http:// or https:// URL with a host", u.url),
                ));
            }
            if url.query().is_some() || url.fragment().is_some() {
                return Err(bad(&key("url"), "must not have a query or fragment".into()));
            }
            let explicit = [
                u.password.is_some(),
                u.password_file.is_some(),
                u.credential_helper.is_some(),
            ];
            if explicit.iter().filter(|x| **x).count() > 1 {
                return Err(bad(
                    &key("password"),
                    "use one of password, password_file and credential_helper".into(),
                ));
            }
            if (u.password.is_some() || u.password_file.is_some()) != u.username.is_some() {
                return Err(bad(
                    &key("username"),
                    "username goes with password or password_file".into(),
                ));
            }
            let credentials = match (
                &u.username,
                u.password.clone(),
                u.password_file.clone(),
                &u.credential_helper,
            ) {
                (Some(user), Some(password), _, _) => CredentialSource::Password {
                    username: user.clone(),
                    password: Secret(password),
                },
                (Some(user), _, Some(path), _) => {
                    if !path.is_file() {
                        return Err(bad(
                            &key("password_file"),
                            format!("{} is not a readable file", path.display()),
                        ));
                    }
                    CredentialSource::PasswordFile {
                        username: user.clone(),
                        path,
                    }
                }
                (_, _, _, Some(helper)) => CredentialSource::Helper(
                    helper_program(helper).map_err(|p| bad(&key("credential_helper"), p))?,
                ),
                _ => docker_config
                    .as_ref()
                    .and_then(|dc| dc.lookup(&u.name))
                    .unwrap_or(CredentialSource::None),
            };
            let repositories = match &u.repositories {
                None => None,
                Some(list) => Some(
                    list.iter()
                        .map(|p| {
                            RepoPattern::parse(p).ok_or_else(|| {
                                bad(
                                    &key("repositories"),
                                    format!("{p:?} is not a repository pattern like \"library/*\" or \"myorg/**\""),
                                )
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
            };
            if let Some(ca) = &u.ca_cert
                && !ca.is_file()
            {
                return Err(bad(
                    &key("ca_cert"),
                    format!("{} is not a readable file", ca.display()),
                ));
            }
            let connect_timeout = opt_duration(
                u.connect_timeout.as_deref(),
                "10s",
                &key("connect_timeout"),
                &bad,
            )?;
            let read_timeout =
                opt_duration(u.read_timeout.as_deref(), "60s", &key("read_timeout"), &bad)?;
            let max_concurrent_requests = u.max_concurrent_requests.unwrap_or(64);
            if max_concurrent_requests == 0 {
                return Err(bad(
                    &key("max_concurrent_requests"),
                    "must be at least 1".into(),
                ));
            }
            upstreams.push(UpstreamConfig {
                max_concurrent_requests,
                library_prefix: u.library_prefix.unwrap_or(u.name == "docker.io"),
                name: u.name,
                url,
                default: u.default,
                credentials,
                repositories,
                tls_insecure_skip_verify: u.tls_insecure_skip_verify,
                ca_cert: u.ca_cert,
                connect_timeout,
                read_timeout,
            });
        }
        let defaults: Vec<&str> = upstreams
            .iter()
            .filter(|u| u.default)
            .map(|u| u.name.as_str())
            .collect();
        if defaults.len() > 1 {
            return Err(bad(
                "upstream.default",
                format!("only one upstream may be the default, found {defaults:?}"),
            ));
        }

        Ok(Config {
            server: ServerConfig {
                listen,
                max_connections,
                header_read_timeout,
                max_header_bytes: max_header_bytes as usize,
                metrics: raw.server.metrics.unwrap_or(true),
            },
            cache: CacheConfig {
                dir,
                max_size,
                tag_ttl,
            },
            upstreams,
        })
    }

    /// The effective settings as TOML, secrets redacted (for `check-config`).
    pub fn describe(&self) -> String {
        let mut s = format!(
            "[server]\nlisten = \"{}\"\nmax_connections = {}\nheader_read_timeout = \"{}\"\nmax_header_size = \"{}\"\nmetrics = {}\n\n[cache]\ndir = {:?}\nmax_size = \"{}\"\ntag_ttl = \"{}\"\n",
            self.server.listen,
            self.server.max_connections,
            humantime::format_duration(self.server.header_read_timeout),
            self.server.max_header_bytes,
            self.server.metrics,
            self.cache.dir.display().to_string(),
            self.cache.max_size,
            humantime::format_duration(self.cache.tag_ttl),
        );
        for u in &self.upstreams {
            s.push_str(&format!(
                "\n[[upstream]]\nname = {:?}\nurl = \"{}\"\ndefault = {}\nlibrary_prefix = {}\nconnect_timeout = \"{}\"\nread_timeout = \"{}\"\nmax_concurrent_requests = {}\n",
                u.name,
                u.url,
                u.default,
                u.library_prefix,
                humantime::format_duration(u.connect_timeout),
                humantime::format_duration(u.read_timeout),
                u.max_concurrent_requests,
            ));
            s.push_str(&u.credentials.describe());
            if u.tls_insecure_skip_verify {
                s.push_str("tls_insecure_skip_verify = true\n");
            }
            if let Some(r) = &u.repositories {
                let list: Vec<&str> = r.iter().map(|p| p.0.as_str()).collect();
                s.push_str(&format!("repositories = {list:?}\n"));
            }
            if let Some(ca) = &u.ca_cert {
                s.push_str(&format!("ca_cert = {:?}\n", ca.display().to_string()));
            }
        }
        s
    }
}

/// `credential_helper = "ecr-login"` means `docker-credential-ecr-login` on PATH; a value with a
/// `/` is the program's path.
fn helper_program(name: &str) -> Result<PathBuf, String> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("{name} is not a file"))
        };
    }
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(format!("{name:?} is not a helper name like \"ecr-login\""));
    }
    Ok(PathBuf::from(format!("docker-credential-{name}")))
}

/// A docker `config.json` (or a Kubernetes `.dockerconfigjson` secret): `auths`, `credHelpers`
/// and `credsStore`.
struct DockerConfig {
    auths: serde_json::Map<String, serde_json::Value>,
    cred_helpers: serde_json::Map<String, serde_json::Value>,
    creds_store: Option<String>,
}

impl DockerConfig {
    fn load(path: &Path) -> Result<DockerConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
        let obj = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_object())
                .cloned()
                .unwrap_or_default()
        };
        Ok(DockerConfig {
            auths: obj("auths"),
            cred_helpers: obj("credHelpers"),
            creds_store: v
                .get("credsStore")
                .and_then(|x| x.as_str())
                .map(str::to_owned),
        })
    }

    /// The entry for an upstream, by its name (and Docker Hub's historical keys for docker.io).
    fn lookup(&self, name: &str) -> Option<CredentialSource> {
        let mut keys = vec![
            name.to_owned(),
            format!("https://{name}"),
            format!("http://{name}"),
        ];
        if name == "docker.io" {
            keys.splice(
                0..0,
                [
                    "https://index.docker.io/v1/".to_owned(),
                    "index.docker.io".to_owned(),
                    "registry-1.docker.io".to_owned(),
                ],
            );
        }
        for k in &keys {
            if let Some(h) = self.cred_helpers.get(k).and_then(|h| h.as_str()) {
                return helper_program(h).ok().map(CredentialSource::Helper);
            }
        }
        for k in &keys {
            if let Some(entry) = self
                .auths
                .get(k)
                .or_else(|| self.auths.get(&format!("{k}/")))
                && let Some(c) = Self::entry(entry)
            {
                return Some(c);
            }
        }
        self.creds_store
            .as_deref()
            .and_then(|s| helper_program(s).ok())
            .map(CredentialSource::Helper)
    }

    fn entry(e: &serde_json::Value) -> Option<CredentialSource> {
        use base64::Engine as _;
        let s = |k: &str| e.get(k).and_then(|x| x.as_str()).filter(|x| !x.is_empty());
        if let Some(t) = s("identitytoken") {
            return Some(CredentialSource::IdentityToken(Secret(t.to_owned())));
        }
        if let (Some(u), Some(p)) = (s("username"), s("password")) {
            return Some(CredentialSource::Password {
                username: u.to_owned(),
                password: Secret(p.to_owned()),
            });
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(s("auth")?)
            .ok()?;
        let (u, p) = std::str::from_utf8(&raw).ok()?.split_once(':')?;
        Some(CredentialSource::Password {
            username: u.to_owned(),
            password: Secret(p.to_owned()),
        })
    }
}

/// A registry name as clients write it: a lowercase host with an optional port.
fn valid_upstream_name(name: &str) -> bool {
    let (host, port) = match name.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (name, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    host_ok && port_ok
}

fn opt_duration(
    value: Option<&str>,
    default: &str,
    key: &str,
    bad: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Duration, ConfigError> {
    let v = value.unwrap_or(default);
    humantime::parse_duration(v).map_err(|e| {
        bad(
            key,
            format!("{v:?} is not a duration like 30s, 5m, 1h ({e})"),
        )
    })
}

fn opt_size(
    value: Option<&str>,
    default: &str,
    key: &str,
    bad: &dyn Fn(&str, String) -> ConfigError,
) -> Result<u64, ConfigError> {
    let v = value.unwrap_or(default);
    parse_size(v).ok_or_else(|| {
        bad(
            key,
            format!("{v:?} is not a size like 512MiB or 20GiB (units B, KiB, MiB, GiB, TiB)"),
        )
    })
}

/// Parses `20GiB`, `512 MiB`, `100KB`-style sizes into bytes. Binary and decimal units are both
/// accepted (`KB` = 1000, `KiB` = 1024); a bare number is bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let unit = unit.trim();
    let mult: u64 = match unit {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "TiB" | "T" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return None,
    };
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return None;
    }
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult);
    }
    let f: f64 = num.parse().ok()?;
    let bytes = f * mult as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text, "t").unwrap_err().to_string()
    }

    const UP: &str = "[[upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\ndefault = true\n";

    #[test]
    fn embedded_default_parses() {
        let c = Config::parse(EMBEDDED_DEFAULT, "embedded").unwrap();
        assert_eq!(c.cache.max_size, 20 << 30);
        assert_eq!(c.cache.tag_ttl, Duration::from_secs(60));
        assert_eq!(c.upstreams[0].name, "docker.io");
        assert!(c.upstreams[0].library_prefix);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("20GiB"), Some(20 << 30));
        assert_eq!(parse_size("512 MiB"), Some(512 << 20));
        assert_eq!(parse_size("1.5KiB"), Some(1536));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("10XB"), None);
        assert_eq!(parse_size("GiB"), None);
        assert_eq!(parse_size("-1GiB"), None);
        assert_eq!(parse_size("99999999999TiB"), None);
    }

    #[test]
    fn mistakes_name_the_key() {
        assert!(err(&format!("{UP}[cache]\nmax_size = \"lots\"\n")).contains("cache.max_size"));
        assert!(err(&format!("{UP}[cache]\ntag_ttl = \"soon\"\n")).contains("cache.tag_ttl"));
        assert!(err(&format!("{UP}[cache]\nbogus = 1\n")).contains("bogus"));
        assert!(err(&format!("{UP}{UP}")).contains("configured twice"));
        let two_defaults = format!(
            "{UP}[[upstream]]\nname = \"quay.io\"\nurl = \"https://quay.io\"\ndefault = true\n"
        );
        assert!(err(&two_defaults).contains("upstream.default"));
        let no_scheme = "[[upstream]]\nname = \"quay.io\"\nurl = \"quay.io\"\n";
        assert!(err(no_scheme).contains("upstream[0].url"));
        assert!(err("[server]\nlisten = \"nowhere\"\n").contains("server.listen"));
        assert!(err("").contains("upstream"));
        let bad_name = "[[upstream]]\nname = \"Quay.IO\"\nurl = \"https://quay.io\"\n";
        assert!(err(bad_name).contains("upstream[0].name"));
    }

    #[test]
    fn repository_patterns() {
        let p = |s: &str| RepoPattern::parse(s).unwrap();
        assert!(p("library/*").matches("library/busybox"));
        assert!(!p("library/*").matches("library/a/b"));
        assert!(p("myorg/**").matches("myorg/a/b/c"));
        assert!(p("myorg/**").matches("myorg/a"));
        assert!(!p("myorg/**").matches("other/a"));
        assert!(p("team/app-*").matches("team/app-web"));
        assert!(RepoPattern::parse("a//b").is_none());
        assert!(RepoPattern::parse("A/b").is_none());
    }

    #[test]
    fn docker_config_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpzM2NyM3QtcGFzcw=="},"quay.io":{"username":"q","password":"p"},"ghcr.io":{"identitytoken":"tok-s3cr3t"}}}"#,
        )
        .unwrap();
        let text = format!(
            "[credentials]\ndocker_config = {:?}\n[[upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\n[[upstream]]\nname = \"quay.io\"\nurl = \"https://quay.io\"\n[[upstream]]\nname = \"ghcr.io\"\nurl = \"https://ghcr.io\"\n[[upstream]]\nname = \"gcr.io\"\nurl = \"https://gcr.io\"\nusername = \"_json_key\"\npassword = \"{{}}\"\n",
            path.display().to_string()
        );
        let c = Config::parse(&text, "t").unwrap();
        assert!(
            matches!(&c.upstreams[0].credentials, CredentialSource::Password { username, password } if username == "user" && password.expose() == "s3cr3t-pass")
        );
        assert!(
            matches!(&c.upstreams[1].credentials, CredentialSource::Password { username, .. } if username == "q")
        );
        assert!(
            matches!(&c.upstreams[2].credentials, CredentialSource::IdentityToken(t) if t.expose() == "tok-s3cr3t")
        );
        assert!(
            matches!(&c.upstreams[3].credentials, CredentialSource::Password { username, .. } if username == "_json_key")
        );
        let shown = c.describe();
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    #[test]
    fn secrets_are_redacted() {
        let c = Config::parse(
            "[[upstream]]\nname = \"quay.io\"\nurl = \"https://quay.io\"\nusername = \"u\"\npassword = \"hunter2\"\n",
            "t",
        )
        .unwrap();
        assert!(!c.describe().contains("hunter2"));
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
