//! What one request's handling learnt along the way, for its log line: how the cache answered
//! and which upstream was chosen. Kept in a task-local set around the handler, so the layers
//! below note what they decide without passing it back up.

use std::cell::RefCell;
use std::future::Future;

use super::LookupResult;

/// The facts a request's log line reports beyond its method, route and status.
#[derive(Clone, Debug, Default)]
pub(crate) struct RequestNote {
    /// The last cache decision made for the request.
    pub(crate) cache: Option<LookupResult>,
    pub(crate) upstream: Option<String>,
    /// The authenticated user (`[auth]`), if any.
    pub(crate) user: Option<String>,
    /// The repository (as the upstream spells it) and the tag or digest asked for.
    pub(crate) repository: Option<String>,
    pub(crate) reference: Option<String>,
    /// The message of an error answer.
    pub(crate) error: Option<String>,
}

tokio::task_local! {
    static NOTE: RefCell<RequestNote>;
}

/// Runs a request's handler with a fresh note; returns its output and what was noted.
pub(crate) async fn noting<F: Future>(handler: F) -> (F::Output, RequestNote) {
    NOTE.scope(RefCell::new(RequestNote::default()), async {
        let out = handler.await;
        let note = NOTE.with(|n| n.borrow().clone());
        (out, note)
    })
    .await
}

/// Notes a cache decision for the request being handled (nothing outside a request).
pub(super) fn note_lookup(result: LookupResult) {
    let _ = NOTE.try_with(|n| n.borrow_mut().cache = Some(result));
}

/// Notes the upstream chosen for the request being handled.
pub(crate) fn note_upstream(name: &str) {
    let _ = NOTE.try_with(|n| n.borrow_mut().upstream = Some(name.to_owned()));
}

/// Notes who the request was authenticated as.
pub(crate) fn note_user(name: &str) {
    let _ = NOTE.try_with(|n| n.borrow_mut().user = Some(name.to_owned()));
}

/// Notes the repository, and the tag or digest, the request is about.
pub(crate) fn note_target(repository: &str, reference: Option<&str>) {
    let _ = NOTE.try_with(|n| {
        let mut n = n.borrow_mut();
        n.repository = Some(repository.to_owned());
        n.reference = reference.map(str::to_owned);
    });
}

/// Notes the message of the error the client is answered with.
pub(crate) fn note_error(message: &str) {
    let _ = NOTE.try_with(|n| n.borrow_mut().error = Some(message.to_owned()));
}
