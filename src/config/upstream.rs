//! One `[[upstream]]` entry: a registry the mirror pulls from, checked key by key.

use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::credentials::{CredentialSource, DockerConfig};
use super::patterns::RepoPattern;
use super::schema::RawUpstream;
use super::{Checker, ConfigError};

#[derive(Debug, Clone)]
pub(crate) struct UpstreamConfig {
    pub(crate) name: String,
    /// With `cache.offline` and no `url` given, a placeholder nothing ever contacts
    /// (`https://<name>.invalid/`; `url_given` is false).
    pub(crate) url: Url,
    pub(crate) url_given: bool,
    pub(crate) default: bool,
    /// The credentials came from `[credentials] docker_config`, not from this entry.
    pub(crate) from_docker_config: bool,
    pub(crate) credentials: CredentialSource,
    /// When set, only repositories matching one of these are served (others get 403 DENIED).
    pub(crate) repositories: Option<Vec<RepoPattern>>,
    /// Accept any certificate from this upstream (explicitly asked for; logged at start).
    pub(crate) tls_insecure_skip_verify: bool,
    /// Docker Hub's rule: single-component names mean `library/<name>`.
    pub(crate) library_prefix: bool,
    /// Extra CA certificate (PEM) trusted for this upstream.
    pub(crate) ca_cert: Option<PathBuf>,
    pub(crate) connect_timeout: Duration,
    /// Longest silence tolerated while reading an upstream answer (not a total deadline).
    pub(crate) read_timeout: Duration,
    /// Requests in flight to this upstream at once (a streaming blob counts until it ends).
    pub(crate) max_concurrent_requests: usize,
}

impl Checker<'_> {
    /// Checks the `i`th `[[upstream]]`; `earlier` are the ones before it.
    pub(super) fn upstream(
        &self,
        i: usize,
        u: RawUpstream,
        earlier: &[UpstreamConfig],
        docker_config: Option<&DockerConfig>,
        offline: bool,
    ) -> Result<UpstreamConfig, ConfigError> {
        let key = |k: &str| format!("upstream[{i}].{k}");
        self.upstream_name(&u.name, &key("name"), earlier)?;
        let url = match &u.url {
            Some(text) => self.upstream_url(text, &key("url"))?,
            None if offline => {
                self.upstream_url(&format!("https://{}.invalid/", u.name), &key("name"))?
            }
            None => {
                return Err(self.bad(
                    &key("url"),
                    "missing: an upstream needs its registry's URL (only with cache.offline = true may it be a name alone)",
                ));
            }
        };
        let credentials = self.credentials(&u, &key, docker_config)?;
        let from_docker_config = !matches!(credentials, CredentialSource::None)
            && u.password.is_none()
            && u.password_file.is_none()
            && u.credential_helper.is_none();
        let repositories = match &u.repositories {
            None => None,
            Some(list) => Some(self.patterns(list, &key("repositories"))?),
        };
        if let Some(ca) = &u.ca_cert
            && !ca.is_file()
        {
            return Err(self.bad(
                &key("ca_cert"),
                format!("{} is not a readable file", ca.display()),
            ));
        }
        let connect_timeout =
            self.duration(u.connect_timeout.as_deref(), "10s", &key("connect_timeout"))?;
        let read_timeout = self.duration(u.read_timeout.as_deref(), "60s", &key("read_timeout"))?;
        let max_concurrent_requests = u.max_concurrent_requests.unwrap_or(64);
        if max_concurrent_requests == 0 {
            return Err(self.bad(&key("max_concurrent_requests"), "must be at least 1"));
        }
        Ok(UpstreamConfig {
            max_concurrent_requests,
            library_prefix: u.library_prefix.unwrap_or(u.name == "docker.io"),
            name: u.name,
            url_given: u.url.is_some(),
            url,
            default: u.default,
            from_docker_config,
            credentials,
            repositories,
            tls_insecure_skip_verify: u.tls_insecure_skip_verify,
            ca_cert: u.ca_cert,
            connect_timeout,
            read_timeout,
        })
    }

    fn upstream_name(
        &self,
        name: &str,
        key: &str,
        earlier: &[UpstreamConfig],
    ) -> Result<(), ConfigError> {
        if !valid_upstream_name(name) {
            return Err(self.bad(
                key,
                format!(
                    "{name:?} is not a registry name (lowercase host[:port], like \"quay.io\")"
                ),
            ));
        }
        if earlier.iter().any(|o| o.name == name) {
            return Err(self.bad(key, format!("{name:?} is configured twice")));
        }
        Ok(())
    }

    fn upstream_url(&self, text: &str, key: &str) -> Result<Url, ConfigError> {
        let url = Url::parse(text).map_err(|e| {
            self.bad(
                key,
                format!(
                    "{text:?} is not a URL ({e}); write it with its scheme, like https://{text}"
                ),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(self.bad(
                key,
                format!("{text:?} must be an http:// or https:// URL with a host"),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(self.bad(key, "must not have a query or fragment"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(self.bad(
                key,
                "must not carry credentials (user:password@): set username with password_file (or password) instead, which are never printed",
            ));
        }
        Ok(url)
    }

    fn patterns(&self, list: &[String], key: &str) -> Result<Vec<RepoPattern>, ConfigError> {
        list.iter()
            .map(|p| {
                RepoPattern::parse(p).ok_or_else(|| {
                    self.bad(
                        key,
                        format!(
                            "{p:?} is not a repository pattern like \"library/*\" or \"myorg/**\""
                        ),
                    )
                })
            })
            .collect()
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
