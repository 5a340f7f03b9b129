//! `[auth]` at the API's door: who is asking, and whether they may pull a repository.
//!
//! Without `[auth]` everyone may pull everything. With it, a request that no rule allows gets
//! 401 with the Basic challenge when it came without credentials (so clients send theirs), 401
//! when its credentials are wrong, and 403 DENIED when it came from a user no rule allows. A
//! client certificate verified against `[server] client_ca` names its user (mutual TLS).

use std::net::SocketAddr;

use http::{Request, StatusCode, header};

use super::State;
use super::{ApiError, Code};
use crate::auth::{Auth, Identity, Refusal};
use crate::metrics::AuthFailure;
use crate::server::ClientName;

/// Who sent the request (anonymous when there is no `[auth]`).
pub(super) async fn identify<B>(app: &State, req: &Request<B>) -> Result<Identity, ApiError> {
    let Some(auth) = &app.auth else {
        return Ok(Identity::Anonymous);
    };
    let peer = req.extensions().get::<SocketAddr>().map(|p| p.ip());
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    // A verified client certificate names the user, unless credentials are given too.
    if authorization.is_none()
        && let Some(ClientName(name)) = req.extensions().get::<ClientName>()
    {
        crate::metrics::note_user(name);
        return Ok(Identity::User(name.clone()));
    }
    match auth.identify(authorization, peer).await {
        Ok(who) => {
            if let Identity::User(name) = &who {
                crate::metrics::note_user(name);
            }
            Ok(who)
        }
        Err(Refusal::Wrong) => Err(unauthorized(auth, "the credentials given are not valid")),
        Err(Refusal::TooMany(wait)) => Err(ApiError {
            retry_after: Some(wait.as_secs().max(1)),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                Code::TooManyRequests,
                "too many failed sign-ins from this address or for this user: try again later",
            )
        }),
    }
}

/// `GET /v2/`: with `[auth]`, credentials are required (as Docker Hub does), so `docker login`
/// learns at once whether they work and clients learn to send them.
pub(super) fn base(app: &State, who: &Identity) -> Result<(), ApiError> {
    match (&app.auth, who) {
        (Some(auth), Identity::Anonymous) if !auth.anonymous_ping() => {
            auth.refused(AuthFailure::Challenged);
            Err(unauthorized(auth, "sign in to use this mirror"))
        }
        _ => Ok(()),
    }
}

/// Whether `who` may pull `repo` from `upstream`.
pub(super) fn may_pull(app: &State, who: &Identity, upstream: &str, repo: &str) -> bool {
    app.auth
        .as_ref()
        .is_none_or(|a| a.allows(who, upstream, repo))
}

/// Refuses a pull that no rule allows: 401 with the challenge for anonymous clients, 403 for
/// users.
pub(super) fn check(
    app: &State,
    who: &Identity,
    upstream: &str,
    repo: &str,
) -> Result<(), ApiError> {
    let Some(auth) = &app.auth else {
        return Ok(());
    };
    if auth.allows(who, upstream, repo) {
        return Ok(());
    }
    match who {
        Identity::Anonymous => {
            auth.refused(AuthFailure::Challenged);
            Err(unauthorized(
                auth,
                format!("sign in to pull {upstream}/{repo}"),
            ))
        }
        Identity::User(name) => {
            auth.refused(AuthFailure::Denied);
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                Code::Denied,
                format!("{name} may not pull {upstream}/{repo} from this mirror"),
            ))
        }
    }
}

fn unauthorized(auth: &Auth, message: impl Into<String>) -> ApiError {
    ApiError {
        challenge: Some(auth.challenge()),
        ..ApiError::new(StatusCode::UNAUTHORIZED, Code::Unauthorized, message)
    }
}
