//! `[shared]`: a second cache tier on an object store that every replica reads and writes.

use std::path::PathBuf;

use url::Url;

use super::credentials::Secret;
use super::schema::RawShared;
use super::{Checker, ConfigError};

#[derive(Debug, Clone)]
pub(crate) struct SharedConfig {
    /// `s3://bucket/prefix`, `gs://`, `az://`, or `file:///path`.
    pub(crate) url: Url,
    /// For S3-compatible stores that are not AWS.
    pub(crate) endpoint: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) access_key_id: Option<String>,
    pub(crate) secret_access_key: Option<SharedSecret>,
    pub(crate) allow_http: bool,
    /// Uploads to the shared tier in flight at once.
    pub(crate) upload_concurrency: usize,
    /// The key every replica signs and checks tag and link records with (HMAC-SHA256), read
    /// at start-up; without one, none are written or believed.
    pub(crate) signing_key: Option<(SigningKeySource, Secret)>,
}

/// Where the signing key was given, for `check-config`.
#[derive(Debug, Clone)]
pub(crate) enum SigningKeySource {
    Inline,
    File(PathBuf),
}

/// A signing key shorter than this is refused: it could be guessed.
const MIN_SIGNING_KEY: usize = 32;

/// The secret key: in the file, or a file read when the store is opened.
#[derive(Debug, Clone)]
pub(crate) enum SharedSecret {
    Value(Secret),
    File(PathBuf),
}

impl Checker<'_> {
    pub(super) fn shared(&self, raw: RawShared) -> Result<SharedConfig, ConfigError> {
        let url = Url::parse(&raw.url)
            .map_err(|e| self.bad("shared.url", format!("{:?} is not a URL: {e}", raw.url)))?;
        match url.scheme() {
            "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" | "file" => {}
            other => {
                return Err(self.bad(
                    "shared.url",
                    format!("{other}:// is not a store: use s3://, gs://, az:// or file://"),
                ));
            }
        }
        if url.scheme() != "file" && url.host_str().is_none_or(str::is_empty) {
            return Err(self.bad("shared.url", "names no bucket"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(self.bad(
                "shared.url",
                "must not carry credentials (user:password@): set access_key_id with secret_access_key_file instead",
            ));
        }
        if let Some(e) = &raw.endpoint {
            let endpoint = Url::parse(e)
                .map_err(|err| self.bad("shared.endpoint", format!("{e:?} is not a URL: {err}")))?;
            if !endpoint.username().is_empty() || endpoint.password().is_some() {
                return Err(self.bad(
                    "shared.endpoint",
                    "must not carry credentials (user:password@): set access_key_id with secret_access_key_file instead",
                ));
            }
        }
        let secret_access_key = match (raw.secret_access_key, raw.secret_access_key_file) {
            (Some(_), Some(_)) => {
                return Err(self.bad(
                    "shared.secret_access_key",
                    "set secret_access_key or secret_access_key_file, not both",
                ));
            }
            (Some(v), None) => Some(SharedSecret::Value(Secret::new(v))),
            (None, Some(f)) => {
                if let Err(e) = std::fs::read_to_string(&f) {
                    return Err(self.bad(
                        "shared.secret_access_key_file",
                        format!("{}: {e}", f.display()),
                    ));
                }
                Some(SharedSecret::File(f))
            }
            (None, None) => None,
        };
        let signing_key = self.signing_key(raw.signing_key, raw.signing_key_file)?;
        let upload_concurrency = raw.upload_concurrency.unwrap_or(4);
        if upload_concurrency == 0 {
            return Err(self.bad("shared.upload_concurrency", "must be at least 1"));
        }
        Ok(SharedConfig {
            url,
            endpoint: raw.endpoint,
            region: raw.region,
            access_key_id: raw.access_key_id,
            secret_access_key,
            allow_http: raw.allow_http,
            upload_concurrency,
            signing_key,
        })
    }

    /// `signing_key` or `signing_key_file` (trimmed), at least [`MIN_SIGNING_KEY`] bytes.
    fn signing_key(
        &self,
        inline: Option<String>,
        file: Option<PathBuf>,
    ) -> Result<Option<(SigningKeySource, Secret)>, ConfigError> {
        let (key, source, name) = match (inline, file) {
            (Some(_), Some(_)) => {
                return Err(self.bad(
                    "shared.signing_key",
                    "set signing_key or signing_key_file, not both",
                ));
            }
            (Some(v), None) => (v, SigningKeySource::Inline, "shared.signing_key"),
            (None, Some(f)) => match std::fs::read_to_string(&f) {
                Ok(v) => (v, SigningKeySource::File(f), "shared.signing_key_file"),
                Err(e) => {
                    return Err(
                        self.bad("shared.signing_key_file", format!("{}: {e}", f.display()))
                    );
                }
            },
            (None, None) => return Ok(None),
        };
        let key = key.trim().to_owned();
        if key.len() < MIN_SIGNING_KEY {
            return Err(self.bad(
                name,
                format!("is {} bytes: use at least {MIN_SIGNING_KEY} random ones (openssl rand -hex 32)", key.len()),
            ));
        }
        Ok(Some((source, Secret::new(key))))
    }
}

impl SharedConfig {
    /// The section as `check-config` prints it (the secret redacted).
    pub(super) fn describe(&self) -> String {
        let mut s = format!("\n[shared]\nurl = \"{}\"\n", self.url);
        if let Some(e) = &self.endpoint {
            s.push_str(&format!("endpoint = {e:?}\n"));
        }
        if let Some(r) = &self.region {
            s.push_str(&format!("region = {r:?}\n"));
        }
        if let Some(k) = &self.access_key_id {
            s.push_str(&format!("access_key_id = {k:?}\n"));
        }
        match &self.secret_access_key {
            Some(SharedSecret::Value(_)) => s.push_str("secret_access_key = \"<redacted>\"\n"),
            Some(SharedSecret::File(f)) => s.push_str(&format!(
                "secret_access_key_file = {:?}\n",
                f.display().to_string()
            )),
            None => {}
        }
        match &self.signing_key {
            Some((SigningKeySource::Inline, _)) => s.push_str("signing_key = \"<redacted>\"\n"),
            Some((SigningKeySource::File(f), _)) => s.push_str(&format!(
                "signing_key_file = {:?}\n",
                f.display().to_string()
            )),
            None => {}
        }
        s.push_str(&format!(
            "allow_http = {}\nupload_concurrency = {}\n",
            self.allow_http, self.upload_concurrency
        ));
        s
    }
}
