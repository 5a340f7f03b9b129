//! The configuration file's shape, as serde reads it: every key optional, nothing checked yet.
//!
//! Unknown keys are refused (`deny_unknown_fields`), so a misspelt key is a start-up error that
//! names it rather than a setting silently ignored. `mod.rs` turns these into checked values.

use std::path::{Path, PathBuf};

use serde::Deserialize;

impl RawConfig {
    /// Makes every relative path the file gives relative to `base`, the file's directory (as
    /// nginx and systemd read theirs), so a command run elsewhere finds the same files.
    pub(super) fn rebase(&mut self, base: &Path) {
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(path) = p
                && path.is_relative()
            {
                *path = base.join(&*path);
            }
        };
        fix(&mut self.cache.dir);
        for k in self
            .cache
            .import_keys
            .iter_mut()
            .chain(self.cache.require_signature.iter_mut())
        {
            if k.is_relative() {
                *k = base.join(&*k);
            }
        }
        fix(&mut self.server.tls_cert);
        fix(&mut self.server.tls_key);
        fix(&mut self.server.client_ca);
        fix(&mut self.credentials.docker_config);
        if let Some(a) = &mut self.auth {
            fix(&mut a.htpasswd);
        }
        if let Some(sh) = &mut self.shared {
            fix(&mut sh.secret_access_key_file);
            fix(&mut sh.signing_key_file);
        }
        for u in &mut self.upstream {
            fix(&mut u.password_file);
            fix(&mut u.ca_cert);
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) cache: RawCache,
    #[serde(default)]
    pub(super) upstream: Vec<RawUpstream>,
    #[serde(default)]
    pub(super) credentials: RawCredentials,
    #[serde(default)]
    pub(super) log: RawLog,
    pub(super) auth: Option<RawAuth>,
    pub(super) shared: Option<RawShared>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShared {
    pub(super) url: String,
    pub(super) endpoint: Option<String>,
    pub(super) region: Option<String>,
    pub(super) access_key_id: Option<String>,
    pub(super) secret_access_key: Option<String>,
    pub(super) secret_access_key_file: Option<PathBuf>,
    pub(super) signing_key: Option<String>,
    pub(super) signing_key_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) allow_http: bool,
    pub(super) upload_concurrency: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub(super) htpasswd: Option<PathBuf>,
    pub(super) realm: Option<String>,
    #[serde(default)]
    pub(super) anonymous_ping: bool,
    #[serde(default)]
    pub(super) allow: Vec<RawAllow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAllow {
    pub(super) users: Vec<String>,
    pub(super) repositories: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredentials {
    pub(super) docker_config: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<String>,
    pub(super) max_connections: Option<usize>,
    pub(super) header_read_timeout: Option<String>,
    pub(super) send_timeout: Option<String>,
    pub(super) max_header_size: Option<String>,
    pub(super) metrics: Option<bool>,
    pub(super) metrics_listen: Option<String>,
    pub(super) tls_cert: Option<PathBuf>,
    pub(super) tls_key: Option<PathBuf>,
    pub(super) client_ca: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    pub(super) dir: Option<PathBuf>,
    pub(super) max_size: Option<String>,
    pub(super) tag_ttl: Option<String>,
    pub(super) negative_ttl: Option<String>,
    pub(super) offline: Option<bool>,
    pub(super) prefetch_layers: Option<bool>,
    /// Public keys `import` requires a cosign signature by (with `--require-signature`).
    #[serde(default)]
    pub(super) import_keys: Vec<PathBuf>,
    /// Public keys `serve` requires a cosign signature by, for every image manifest it serves.
    #[serde(default)]
    pub(super) require_signature: Vec<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) name: String,
    /// Required unless `cache.offline` (an air-gapped site names its upstreams only).
    pub(super) url: Option<String>,
    #[serde(default)]
    pub(super) default: bool,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) credential_helper: Option<String>,
    #[serde(default)]
    pub(super) tls_insecure_skip_verify: bool,
    pub(super) repositories: Option<Vec<String>>,
    pub(super) library_prefix: Option<bool>,
    pub(super) ca_cert: Option<PathBuf>,
    pub(super) connect_timeout: Option<String>,
    pub(super) read_timeout: Option<String>,
    pub(super) max_concurrent_requests: Option<usize>,
}
