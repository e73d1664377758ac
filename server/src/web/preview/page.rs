//! The preview layer's own pages: a clear status and one sentence instead
//! of a hang or a bare error. Served on the preview host, so they carry a
//! CSP that allows nothing to run.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// A small HTML page with `status`, a title and one message.
pub fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        "<!doctype html><meta charset=utf-8><title>{t}</title>\
         <h1>{t}</h1><p>{m}</p><p><small>warren preview</small></p>\n",
        t = escape(title),
        m = escape(message)
    );
    (
        status,
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-store"),
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; frame-ancestors 'none'",
            ),
        ],
        body,
    )
        .into_response()
}

pub fn not_listening(port: u16, user: &str) -> Response {
    page(
        StatusCode::BAD_GATEWAY,
        "Nothing is listening",
        &format!("nothing is listening on port {port} in {user}'s sandbox"),
    )
}

pub fn not_running(user: &str) -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Sandbox not running",
        &format!(
            "{user}'s sandbox is not running; open a terminal to start it (a preview visit does not)"
        ),
    )
}

pub fn unavailable(user: &str, why: &str) -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Previews unavailable",
        &format!("previews cannot reach {user}'s sandbox: {why}"),
    )
}

pub fn unknown_user(user: &str) -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Unknown user",
        &format!("there is no user {user:?} on this server"),
    )
}

pub fn bad_port(port: &str) -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "Bad port",
        &format!("{port:?} is not a TCP port (1 to 65535)"),
    )
}

pub fn forbidden(message: &str) -> Response {
    page(StatusCode::FORBIDDEN, "Forbidden", message)
}

pub fn upstream_failed(port: u16, user: &str) -> Response {
    page(
        StatusCode::BAD_GATEWAY,
        "The app did not answer",
        &format!("the app on port {port} in {user}'s sandbox closed the connection without an HTTP answer"),
    )
}

pub fn internal() -> Response {
    page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal error",
        "the preview could not be served (see the server's log)",
    )
}

pub fn misdirected() -> Response {
    page(
        StatusCode::MISDIRECTED_REQUEST,
        "Misdirected request",
        "the request's target and its Host name different servers",
    )
}
