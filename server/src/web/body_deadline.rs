//! Request bodies read within a deadline. hyper times only the headers
//! (`--header-timeout`); a client that sends full headers and then a body
//! one byte every few seconds would hold its connection forever, and with
//! enough addresses fill the connection cap (issue 10, item 4; found in
//! review). Every body but the streamed archive import is small (the API's
//! 4 MiB limit at most), so it is read whole here, within [`BODY_TIMEOUT`],
//! before any handler sees it.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// How long a client has to send a request's body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// The most buffered here: above the routes' own limits (4 MiB for the
/// API), so that they, not this, answer a body just over them.
const MAX_BUFFERED: usize = 8 << 20;

/// The routes whose body streams (a workspace archive, any size, at the
/// client's pace while it unpacks; a file put into a home, spooled with
/// the same bound).
fn streams_its_body(path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').collect();
    matches!(
        segments.as_slice(),
        ["", "api", "users", _, "import"]
            | ["", "api", "users", _, "files", _, ..]
            | ["", "api", "me", "files", _, ..]
    )
}

fn has_body(req: &Request) -> bool {
    let h = req.headers();
    h.contains_key(TRANSFER_ENCODING)
        || h.get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// Middleware: reads the body within [`BODY_TIMEOUT`] (408 otherwise) and
/// hands the handler the whole of it.
pub async fn read_within(req: Request, next: Next) -> Response {
    if !has_body(&req) || streams_its_body(req.uri().path()) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BUFFERED)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(_)) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large or malformed\n",
        )
            .into_response(),
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "request body not received within {} s\n",
                BODY_TIMEOUT.as_secs()
            ),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::streams_its_body;

    #[test]
    fn only_uploads_stream() {
        assert!(streams_its_body("/api/users/alice/import"));
        assert!(streams_its_body("/api/users/alice/files/a/b"));
        assert!(streams_its_body("/api/me/files/a"));
        assert!(!streams_its_body("/api/users/alice/exec"));
        assert!(!streams_its_body("/api/users/alice/limits"));
        assert!(!streams_its_body("/api/users/import"));
    }
}
