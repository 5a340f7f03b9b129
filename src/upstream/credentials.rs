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

/// Why the stored credential could not be had. The texts never include a secret or a helper's
/// output (which may hold one).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CredentialError {
    #[error("password_file {}: {source}", path.display())]
    PasswordFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("credential helper {}: {source}", program.display())]
    HelperRun {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("credential helper {} took longer than {HELPER_TIMEOUT:?}", program.display())]
    HelperTimeout { program: PathBuf },
    #[error("credential helper {} failed ({status})", program.display())]
    HelperFailed {
        program: PathBuf,
        status: std::process::ExitStatus,
    },
    #[error("credential helper {} answered something that is not its JSON", program.display())]
    HelperAnswer { program: PathBuf },
}

/// A usable credential.
#[derive(Clone, Debug)]
pub(crate) enum Credential {
    /// Sent as HTTP Basic (to a token realm, or to a Basic-auth registry).
    Basic { username: String, password: Secret },
    /// An OAuth2 refresh token (docker's `identitytoken`): exchanged at the realm by POST.
    IdentityToken(Secret),
}

/// How long a credential helper's answer is reused before asking again (a 401 asks at once).
const HELPER_TTL: Duration = Duration::from_secs(3600);
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct Credentials {
    source: CredentialSource,
    /// What a credential helper should be asked about: `https://index.docker.io/v1/` for Docker
    /// Hub, the registry host otherwise.
    server: String,
    helper_cache: Mutex<Option<(Credential, Instant)>>,
}

impl Credentials {
    pub(crate) fn new(source: CredentialSource, server: String) -> Credentials {
        Credentials {
            source,
            server,
            helper_cache: Mutex::new(None),
        }
    }

    pub(crate) fn is_configured(&self) -> bool {
        !matches!(self.source, CredentialSource::None)
    }

    /// The credential to use now. `fresh` (after a 401) re-reads files and re-runs helpers.
    pub(crate) async fn get(&self, fresh: bool) -> Result<Option<Credential>, CredentialError> {
        match &self.source {
            CredentialSource::None => Ok(None),
            CredentialSource::Password { username, password } => Ok(Some(Credential::Basic {
                username: username.clone(),
                password: password.clone(),
            })),
            CredentialSource::PasswordFile { username, path } => {
                let secret = tokio::fs::read_to_string(path).await.map_err(|source| {
                    CredentialError::PasswordFile {
                        path: path.clone(),
                        source,
                    }
                })?;
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
async fn run_helper(program: &PathBuf, server: &str) -> Result<Credential, CredentialError> {
    let run_error = |source| CredentialError::HelperRun {
        program: program.clone(),
        source,
    };
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(run_error)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .await
            .map_err(run_error)?;
    }
    let out = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| CredentialError::HelperTimeout {
            program: program.clone(),
        })?
        .map_err(run_error)?;
    if !out.status.success() {
        // Its output may hold a secret: report only the status.
        return Err(CredentialError::HelperFailed {
            program: program.clone(),
            status: out.status,
        });
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let a: Answer =
        serde_json::from_slice(&out.stdout).map_err(|_| CredentialError::HelperAnswer {
            program: program.clone(),
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
