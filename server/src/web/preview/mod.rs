//! Preview URLs (docs/previews.md): `http://<port>-<user>.<preview
//! domain>/<path>` is proxied to `127.0.0.1:<port>` inside that user's
//! sandbox, through its own network namespace (`Sandbox::connect_port`).
//!
//! A preview host is never the terminal's origin: a page a user's app
//! serves runs its own scripts, and on the terminal's origin they could
//! drive that user's terminals and the API. So requests are told apart by
//! `Host` before any route ([`dispatch`]): preview hosts get only the
//! proxy ([`proxy`]) behind their own access check ([`access`]), never
//! the page, the API or the terminal's cookie; every other host goes on to
//! the normal routes and their Host check.

pub mod access;
pub mod cookies;
mod page;
pub mod proxy;
pub mod settings;
pub mod shares;

use axum::extract::{Request, State};
use axum::http::header::HOST;
use axum::middleware::Next;
use axum::response::Response;

use super::state::AppState;
pub use settings::{classify, HostKind, PreviewSettings, Previews, Target};

/// The outermost layer: a request for a preview host goes to the preview
/// proxy (and nowhere else); any other goes on to the normal routes.
pub async fn dispatch(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let previews = app.previews();
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let kind = match &host {
        Some(h) => classify(&previews.settings.domain, h),
        None => HostKind::Other,
    };
    // An absolute-form target names a host too: it must not smuggle a
    // preview request past this check, nor the reverse.
    if let (Some(a), HostKind::Other) = (req.uri().authority(), &kind) {
        if classify(&previews.settings.domain, a.as_str()) != HostKind::Other {
            return page::misdirected();
        }
    }
    match kind {
        HostKind::Other => next.run(req).await,
        HostKind::BadPort(p) => {
            app.metrics().preview_request(400);
            page::bad_port(&p)
        }
        HostKind::BadUser(u) => {
            app.metrics().preview_request(404);
            page::unknown_user(&u)
        }
        HostKind::Preview(target) => {
            let res = access::visit(&app, &target, req).await;
            app.metrics().preview_request(res.status().as_u16());
            res
        }
    }
}
