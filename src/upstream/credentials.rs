//! Where an upstream's stored credentials come from, and how they are refreshed.
//!
//! Sites keep registry secrets in one place, the mirror, in one of four forms: `username` +
//! `password` in the config, `username` + `password_file` (a mounted Kubernetes secret, read at use
//! so a rotated secret is picked up), a docker credential helper (`docker-credential-NAME get`, for
//! ECR's 12-hour passwords or GCR), or a docker `config.json` / `.dockerconfigjson`. Whatever the
//! source, the answer is a [`Credential`] whose secret never prints.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::{CredentialSource, Secret};

/// A usable credential.
#[derive(Clone, Debug)]
pub enum Credential {
    /// Sent as HTTP Basic (to a token realm, or to a Basic-auth registry).
    Basic { username: String, password: Secret },
    /// An OAuth2 refresh token (docker's `identitytoken`): exchanged at the realm by POST.
    IdentityToken(Secret),
}

/// How long a credential helper's answer is reused before asking again (a 401 asks at once).
const HELPER_TTL: Duration = Duration::from_secs(3600);
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Credentials {
    source: CredentialSource,
    /// What a credential helper should be asked about: `https://index.docker.io/v1/` for Docker
    /// Hub, the registry host otherwise.
    server: String,
    helper_cache: Mutex<Option<(Credential, Instant)>>,
}

impl Credentials {
    pub fn new(source: CredentialSource, server: String) -> Credentials {
        Credentials {
            source,
            server,
            helper_cache: Mutex::new(None),
        }
    }

    pub fn is_configured(&self) -> bool {
        !matches!(self.source, CredentialSource::None)
    }

    /// The credential to use now. `fresh` (after a 401) re-reads files and re-runs helpers.
    pub async fn get(&self, fresh: bool) -> Result<Option<Credential>, String> {
        match &self.source {
            CredentialSource::None => Ok(None),
            CredentialSource::Password { username, password } => Ok(Some(Credential::Basic {
                username: username.clone(),
                password: password.clone(),
            })),
            CredentialSource::PasswordFile { username, path } => {
                let secret = tokio::fs::read_to_string(path)
                    .await
                    .map_err(|e| format!("password_file {}: {e}", path.display()))?;
                Ok(Some(Credential::Basic {
                    username: username.clone(),
                    password: Secret::new(secret.trim_end_matches(['\r', '\n']).to_owned()),
                }))
            }
            CredentialSource::IdentityToken(t) => Ok(Some(Credential::IdentityToken(t.clone()))),
            CredentialSource::Helper(program) => {
                if !fresh {
                    let cached = self
                        .helper_cache
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone();
                    if let Some((c, at)) = cached
                        && at.elapsed() < HELPER_TTL
                    {
                        return Ok(Some(c));
                    }
                }
                let c = run_helper(program, &self.server).await?;
                *self.helper_cache.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((c.clone(), Instant::now()));
                Ok(Some(c))
            }
        }
    }
}

/// Runs `docker-credential-NAME get` (or the program at a path) with the server on stdin, as the
/// docker credential-helper protocol says, and reads `{"Username": .., "Secret": ..}`. A
/// `Username` of `<token>` means the secret is an identity token.
async fn run_helper(program: &PathBuf, server: &str) -> Result<Credential, String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("credential helper {}: {e}", program.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .await
            .map_err(|e| format!("credential helper {}: {e}", program.display()))?;
    }
    let out = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            format!(
                "credential helper {} took longer than {HELPER_TIMEOUT:?}",
                program.display()
            )
        })?
        .map_err(|e| format!("credential helper {}: {e}", program.display()))?;
    if !out.status.success() {
        // Its output may hold a secret: report only the status.
        return Err(format!(
            "credential helper {} failed ({})",
            program.display(),
            out.status
        ));
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let a: Answer = serde_json::from_slice(&out.stdout).map_err(|_| {
        format!(
            "credential helper {} answered something that is not its JSON",
            program.display()
        )
    })?;
    Ok(if a.username == "<token>" {
        Credential::IdentityToken(Secret::new(a.secret))
    } else {
        Credential::Basic {
            username: a.username,
            password: Secret::new(a.secret),
        }
    })
}
