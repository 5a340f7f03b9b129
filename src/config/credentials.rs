//! Where an upstream's stored credentials come from: `username` + `password`, `username` +
//! `password_file`, a docker credential helper, or a docker `config.json` (a Kubernetes
//! `.dockerconfigjson` secret) named by `[credentials] docker_config`.
//!
//! Explicit settings on an upstream win over the docker config. Secrets are held in [`Secret`],
//! which never prints.

use std::fmt;
use std::path::{Path, PathBuf};

use super::schema::RawUpstream;
use super::{Checker, ConfigError};

/// Where an upstream's stored credentials come from.
#[derive(Clone, Debug)]
pub(crate) enum CredentialSource {
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

/// A secret value that never prints.
#[derive(Clone)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(s: String) -> Secret {
        Secret(s)
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// Why a `credential_helper` (or a `credHelpers` / `credsStore` entry) names no program.
#[derive(Debug, thiserror::Error)]
enum BadHelper {
    #[error("{0} is not a file")]
    NotAFile(String),
    #[error("{0:?} is not a helper name like \"ecr-login\"")]
    BadName(String),
}

impl Checker<'_> {
    /// The credential source of upstream `u` (whose keys are named `key(..)`), from its own
    /// settings or else from the docker config.
    pub(super) fn credentials(
        &self,
        u: &RawUpstream,
        key: &dyn Fn(&str) -> String,
        docker_config: Option<&DockerConfig>,
    ) -> Result<CredentialSource, ConfigError> {
        let explicit = [
            u.password.is_some(),
            u.password_file.is_some(),
            u.credential_helper.is_some(),
        ];
        if explicit.iter().filter(|x| **x).count() > 1 {
            return Err(self.bad(
                &key("password"),
                "use one of password, password_file and credential_helper",
            ));
        }
        if (u.password.is_some() || u.password_file.is_some()) != u.username.is_some() {
            return Err(self.bad(
                &key("username"),
                "username goes with password or password_file",
            ));
        }
        Ok(
            match (
                &u.username,
                &u.password,
                &u.password_file,
                &u.credential_helper,
            ) {
                (Some(user), Some(password), _, _) => CredentialSource::Password {
                    username: user.clone(),
                    password: Secret(password.clone()),
                },
                (Some(user), _, Some(path), _) => {
                    if !path.is_file() {
                        return Err(self.bad(
                            &key("password_file"),
                            format!("{} is not a readable file", path.display()),
                        ));
                    }
                    CredentialSource::PasswordFile {
                        username: user.clone(),
                        path: path.clone(),
                    }
                }
                (_, _, _, Some(helper)) => CredentialSource::Helper(
                    helper_program(helper)
                        .map_err(|e| self.bad(&key("credential_helper"), e.to_string()))?,
                ),
                _ => docker_config
                    .and_then(|dc| dc.lookup(&u.name))
                    .unwrap_or(CredentialSource::None),
            },
        )
    }

    /// The docker config named by `[credentials] docker_config`.
    pub(super) fn docker_config(&self, path: &Path) -> Result<DockerConfig, ConfigError> {
        let key = "credentials.docker_config";
        let text = std::fs::read_to_string(path)
            .map_err(|e| self.bad(key, format!("{}: {e}", path.display())))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| self.bad(key, format!("{} is not JSON: {e}", path.display())))?;
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
}

/// `credential_helper = "ecr-login"` means `docker-credential-ecr-login` on PATH; a value with a
/// `/` is the program's path.
fn helper_program(name: &str) -> Result<PathBuf, BadHelper> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(BadHelper::NotAFile(name.to_owned()))
        };
    }
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(BadHelper::BadName(name.to_owned()));
    }
    Ok(PathBuf::from(format!("docker-credential-{name}")))
}

/// A docker `config.json` (or a Kubernetes `.dockerconfigjson` secret): `auths`, `credHelpers`
/// and `credsStore`.
pub(super) struct DockerConfig {
    auths: serde_json::Map<String, serde_json::Value>,
    cred_helpers: serde_json::Map<String, serde_json::Value>,
    creds_store: Option<String>,
}

impl DockerConfig {
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
