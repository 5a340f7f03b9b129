//! Bearer tokens: the token cache, and the three ways of asking a realm for a token.
//!
//! After a registry's first 401 we remember its challenge, so later requests go straight for a
//! token (cached per realm, service and scope until shortly before it expires). A token is asked
//! for in one of three grants: GET with Basic credentials (docker's way, and anonymous without
//! them), the OAuth2 password grant by POST (for token services that refuse the GET, as
//! containerd falls back to), and the OAuth2 refresh-token grant by POST (docker's
//! `identitytoken`). Stored credentials go only to realms on the upstream's own site.

use std::time::{Duration, Instant};

use http::{HeaderValue, StatusCode, header};
use url::Url;

use super::Upstream;
use super::auth::{self, Challenge};
use super::body::read_body;
use super::credentials::Credential;
use super::error::{UpstreamError, error_chain};

/// Largest token answer we read.
const MAX_TOKEN_ANSWER: usize = 1 << 20;

/// A cached bearer token and when it stops being usable.
#[derive(Clone)]
pub(super) struct CachedToken {
    value: String,
    usable_until: Instant,
}

/// How a token is asked for.
enum Grant<'a> {
    /// GET, with Basic credentials if we may send them.
    Get(Option<(&'a str, &'a str)>),
    /// The OAuth2 password grant, by POST.
    Password {
        username: &'a str,
        password: &'a str,
    },
    /// The OAuth2 refresh-token grant (docker's `identitytoken`), by POST.
    RefreshToken(&'a str),
}

impl<'a> Grant<'a> {
    /// The grant for a credential (none: anonymous). Plain credentials use the GET unless the
    /// token service refused it, then the password grant.
    fn for_credential(credential: Option<&'a Credential>, password_grant: bool) -> Grant<'a> {
        match credential {
            Some(Credential::IdentityToken(t)) => Grant::RefreshToken(t.expose()),
            Some(Credential::Basic { username, password }) if password_grant => Grant::Password {
                username,
                password: password.expose(),
            },
            Some(Credential::Basic { username, password }) => {
                Grant::Get(Some((username, password.expose())))
            }
            None => Grant::Get(None),
        }
    }
}

fn token_key(realm: &str, service: Option<&str>, scope: &str) -> String {
    format!("{realm}\n{}\n{scope}", service.unwrap_or(""))
}

impl Upstream {
    pub(super) fn remember_challenge(&self, challenge: Challenge) {
        *self.challenge.write().unwrap_or_else(|e| e.into_inner()) = Some(challenge);
    }

    /// The Authorization to send before any challenge, from what we learned earlier.
    pub(super) async fn cached_authorization(&self, scope: &str) -> Option<HeaderValue> {
        let challenge = self
            .challenge
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        match challenge {
            Challenge::Basic => self.basic_authorization(false).await.ok().flatten(),
            Challenge::Bearer { realm, service, .. } => {
                let key = token_key(&realm, service.as_deref(), scope);
                let tok = self.tokens.get(&key).await?;
                if tok.usable_until <= Instant::now() {
                    self.tokens.invalidate(&key).await;
                    return None;
                }
                bearer_value(&tok.value)
            }
        }
    }

    /// `Basic` with the stored username and password, if there are any (not for identity tokens).
    async fn basic_authorization(&self, fresh: bool) -> Result<Option<HeaderValue>, UpstreamError> {
        match self.credential(fresh).await? {
            Some(Credential::Basic { username, password }) => {
                Ok(basic_value(&username, password.expose()))
            }
            _ => Ok(None),
        }
    }

    async fn credential(&self, fresh: bool) -> Result<Option<Credential>, UpstreamError> {
        self.credentials
            .get(fresh)
            .await
            .map_err(|source| UpstreamError::Credentials {
                upstream: self.name.clone(),
                source,
            })
    }

    /// Answers a challenge: Basic gets the stored credentials (if any); Bearer gets a new token.
    pub(super) async fn fresh_authorization(
        &self,
        challenge: &Challenge,
        scope: &str,
    ) -> Result<Option<HeaderValue>, UpstreamError> {
        let Challenge::Bearer {
            realm,
            service,
            scopes,
        } = challenge
        else {
            return self.basic_authorization(true).await;
        };
        let (value, lifetime) = self
            .fetch_token(realm, service.as_deref(), scopes, scope)
            .await?;
        // Expire a little early so a token never dies in flight.
        let skew = (lifetime / 10).clamp(5, 30);
        let key = token_key(realm, service.as_deref(), scope);
        let token = CachedToken {
            value: value.clone(),
            usable_until: Instant::now() + Duration::from_secs(lifetime.saturating_sub(skew)),
        };
        self.tokens.insert(key, token).await;
        Ok(bearer_value(&value))
    }

    /// Asks the realm for a token: with stored credentials only if the realm is on this
    /// upstream's own site, anonymously otherwise. A refused credential from a helper or a file
    /// is fetched afresh once (ECR's passwords expire; secrets rotate).
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        challenge_scopes: &[String],
        scope: &str,
    ) -> Result<(String, u64), UpstreamError> {
        let url = Url::parse(realm).map_err(|e| self.bad(format!("token realm {realm:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(self.bad(format!("token realm {realm:?} is not http(s)")));
        }
        let mut scopes: Vec<&str> = challenge_scopes.iter().map(String::as_str).collect();
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
        let may_send = self.credentials_may_go_to(&url);
        let mut fresh = false;
        // Plain credentials go by GET with Basic (docker's way); a token service that refuses
        // that (404/405) gets the OAuth2 password grant by POST instead (containerd's fallback).
        let mut password_grant = false;
        loop {
            let credential = if may_send {
                self.credential(fresh).await?
            } else {
                None
            };
            let grant = Grant::for_credential(credential.as_ref(), password_grant);
            let resp = self
                .token_request(&url, service, &scopes, grant)
                .send()
                .await
                .map_err(|e| UpstreamError::Unreachable {
                    upstream: self.name.clone(),
                    reason: format!("token service: {}", error_chain(&e)),
                })?;
            let status = resp.status();
            self.metrics.token_request(&self.name, status.as_str());
            if status == StatusCode::UNAUTHORIZED && credential.is_some() && !fresh {
                fresh = true;
                continue;
            }
            if matches!(status.as_u16(), 404 | 405)
                && matches!(credential, Some(Credential::Basic { .. }))
                && !password_grant
            {
                password_grant = true;
                continue;
            }
            return self.token_answer(resp).await;
        }
    }

    /// Whether stored credentials may go to this realm (and says so when they may not).
    fn credentials_may_go_to(&self, realm: &Url) -> bool {
        let may_send = auth::credentials_may_go_to(&self.base, realm);
        if !may_send && self.credentials.is_configured() {
            tracing::warn!(
                upstream = %self.name,
                realm = %realm.host_str().unwrap_or(""),
                scheme = %realm.scheme(),
                "token realm is on another site or over plain http: asking for an anonymous token, credentials withheld"
            );
        }
        may_send
    }

    /// The token request for one grant.
    fn token_request(
        &self,
        url: &Url,
        service: Option<&str>,
        scopes: &[&str],
        grant: Grant<'_>,
    ) -> reqwest::RequestBuilder {
        let oauth = |pairs: &[(&str, &str)]| {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in pairs {
                form.append_pair(k, v);
            }
            form.append_pair("client_id", "entrepot");
            if let Some(s) = service {
                form.append_pair("service", s);
            }
            form.append_pair("scope", &scopes.join(" "));
            self.client
                .post(url.clone())
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form.finish())
        };
        match grant {
            Grant::RefreshToken(token) => oauth(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", token),
                ("access_type", "offline"),
            ]),
            Grant::Password { username, password } => oauth(&[
                ("grant_type", "password"),
                ("username", username),
                ("password", password),
            ]),
            Grant::Get(basic) => {
                let mut u = url.clone();
                {
                    let mut q = u.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    for s in scopes {
                        q.append_pair("scope", s);
                    }
                }
                let mut req = self.client.get(u);
                if let Some(h) = basic.and_then(|(user, password)| basic_value(user, password)) {
                    req = req.header(header::AUTHORIZATION, h);
                }
                req
            }
        }
    }

    /// The token (and its lifetime in seconds) from the token service's answer.
    async fn token_answer(
        &self,
        mut resp: reqwest::Response,
    ) -> Result<(String, u64), UpstreamError> {
        let status = resp.status();
        if !status.is_success() {
            return Err(match status.as_u16() {
                401 | 403 => UpstreamError::Denied {
                    upstream: self.name.clone(),
                    status: status.as_u16(),
                },
                429 => self.rate_limited(resp.headers()),
                _ => UpstreamError::Status {
                    upstream: self.name.clone(),
                    status: status.as_u16(),
                },
            });
        }
        let body = read_body(&mut resp, MAX_TOKEN_ANSWER, &self.name).await?;
        let answer: auth::TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| self.bad(format!("token answer is not JSON: {e}")))?;
        answer
            .into_token()
            .ok_or_else(|| self.bad("token answer holds no token".into()))
    }

    fn bad(&self, reason: String) -> UpstreamError {
        UpstreamError::BadResponse {
            upstream: self.name.clone(),
            reason,
        }
    }
}

/// An `Authorization: Bearer` value, marked sensitive like Basic ones.
fn bearer_value(token: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// An `Authorization: Basic` value, marked sensitive so it never shows in debug output.
fn basic_value(user: &str, password: &str) -> Option<HeaderValue> {
    use base64::Engine as _;
    let raw = format!("{user}:{password}");
    let mut v = HeaderValue::from_str(&format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    ))
    .ok()?;
    v.set_sensitive(true);
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_values_are_sensitive() {
        assert!(bearer_value("t0ken").unwrap().is_sensitive());
        assert!(basic_value("u", "p").unwrap().is_sensitive());
    }
}
