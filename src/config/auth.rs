//! `[auth]`: who may pull what from the mirror, checked key by key.

use std::path::PathBuf;

use super::patterns::RepoPattern;
use super::schema::{RawAllow, RawAuth};
use super::{Checker, ConfigError};

/// Client authentication and the rules that allow pulls.
#[derive(Debug, Clone)]
pub(crate) struct AuthConfig {
    /// bcrypt entries, as `htpasswd -B` writes them; re-read when the file changes.
    pub(crate) htpasswd: Option<PathBuf>,
    pub(crate) realm: String,
    /// `GET /v2/` answers anonymous clients 200 rather than the challenge: dockerd's
    /// `registry-mirrors` client gives up on a mirror whose `/v2/` asks for credentials.
    pub(crate) anonymous_ping: bool,
    /// A request is allowed when any rule matches it.
    pub(crate) allow: Vec<AllowRule>,
}

#[derive(Debug, Clone)]
pub(crate) struct AllowRule {
    /// `anonymous`, `*` (any authenticated user), or user names.
    pub(crate) users: Vec<UserMatch>,
    /// Upstream name and repository pattern.
    pub(crate) repositories: Vec<(String, RepoPattern)>,
}

/// Whom an allow rule names, read once at start-up: the words `anonymous` and `*` are not
/// compared as strings per request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum UserMatch {
    /// `anonymous`: clients without credentials (and so everyone).
    Anonymous,
    /// `*`: any user who signs in.
    AnySignedIn,
    /// One user of the htpasswd file (or a client certificate's name).
    User(String),
}

impl UserMatch {
    pub(crate) fn parse(word: &str) -> UserMatch {
        match word {
            "anonymous" => UserMatch::Anonymous,
            "*" => UserMatch::AnySignedIn,
            name => UserMatch::User(name.to_owned()),
        }
    }

    /// As written in the configuration.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            UserMatch::Anonymous => "anonymous",
            UserMatch::AnySignedIn => "*",
            UserMatch::User(name) => name,
        }
    }
}

impl Checker<'_> {
    pub(super) fn auth(
        &self,
        raw: RawAuth,
        upstreams: &[super::UpstreamConfig],
    ) -> Result<AuthConfig, ConfigError> {
        let realm = raw.realm.unwrap_or_else(|| "entrepot".into());
        if realm.is_empty()
            || realm
                .chars()
                .any(|c| c == '"' || c == '\\' || c.is_control())
        {
            return Err(self.bad(
                "auth.realm",
                "must be non-empty, without quotes, backslashes or control characters",
            ));
        }
        if let Some(path) = &raw.htpasswd
            && let Err(e) = crate::htpasswd::load_htpasswd(path)
        {
            return Err(self.bad("auth.htpasswd", e.to_string()));
        }
        let mut allow = Vec::new();
        for (i, rule) in raw.allow.into_iter().enumerate() {
            allow.push(self.allow_rule(i, rule, raw.htpasswd.is_some(), upstreams)?);
        }
        if raw.anonymous_ping
            && !allow
                .iter()
                .any(|r| r.users.contains(&UserMatch::Anonymous))
        {
            return Err(self.bad(
                "auth.anonymous_ping",
                "no [[auth.allow]] rule lets anonymous clients pull anything",
            ));
        }
        Ok(AuthConfig {
            htpasswd: raw.htpasswd,
            realm,
            anonymous_ping: raw.anonymous_ping,
            allow,
        })
    }

    /// One `[[auth.allow]]` rule (the `i`th): users that can sign in, patterns of configured
    /// upstreams.
    fn allow_rule(
        &self,
        i: usize,
        rule: RawAllow,
        htpasswd: bool,
        upstreams: &[super::UpstreamConfig],
    ) -> Result<AllowRule, ConfigError> {
        let key = |k: &str| format!("auth.allow[{i}].{k}");
        if rule.users.is_empty() {
            return Err(self.bad(
                &key("users"),
                "must name at least one user (or \"anonymous\", or \"*\")",
            ));
        }
        for u in &rule.users {
            if u.is_empty() || u.contains(':') || u.chars().any(char::is_control) {
                return Err(self.bad(&key("users"), format!("{u:?} is not a user name")));
            }
            if u != "anonymous" && !htpasswd {
                return Err(self.bad(
                    &key("users"),
                    format!("{u:?} can never sign in: auth.htpasswd is not set"),
                ));
            }
        }
        if rule.repositories.is_empty() {
            return Err(self.bad(&key("repositories"), "must list at least one pattern"));
        }
        let mut repositories = Vec::new();
        for (j, r) in rule.repositories.iter().enumerate() {
            let key = format!("auth.allow[{i}].repositories[{j}]");
            let Some((up, pattern)) = r.split_once('/') else {
                return Err(self.bad(&key, format!("{r:?} must be <upstream name>/<repository pattern>, like docker.io/library/**")));
            };
            if !upstreams.iter().any(|u| u.name == up) {
                return Err(self.bad(
                    &key,
                    format!("{up:?} is not the name of a configured [[upstream]]"),
                ));
            }
            let pattern = RepoPattern::parse(pattern).ok_or_else(|| {
                self.bad(
                    &key,
                    format!(
                        "{pattern:?} is not a repository pattern (lowercase components, * and **)"
                    ),
                )
            })?;
            repositories.push((up.to_owned(), pattern));
        }
        Ok(AllowRule {
            users: rule.users.iter().map(|u| UserMatch::parse(u)).collect(),
            repositories,
        })
    }
}

impl AuthConfig {
    /// The section as `check-config` prints it.
    pub(super) fn describe(&self) -> String {
        let quote = |v: &[String]| {
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut s = String::from("\n[auth]\n");
        if let Some(h) = &self.htpasswd {
            s.push_str(&format!("htpasswd = {:?}\n", h.display().to_string()));
        }
        s.push_str(&format!("realm = {:?}\n", self.realm));
        s.push_str(&format!("anonymous_ping = {}\n", self.anonymous_ping));
        for rule in &self.allow {
            let users: Vec<String> = rule.users.iter().map(|u| u.as_str().to_owned()).collect();
            let repos: Vec<String> = rule
                .repositories
                .iter()
                .map(|(u, p)| format!("{u}/{}", p.as_str()))
                .collect();
            s.push_str(&format!(
                "\n[[auth.allow]]\nusers = [{}]\nrepositories = [{}]\n",
                quote(&users),
                quote(&repos)
            ));
        }
        s
    }
}
