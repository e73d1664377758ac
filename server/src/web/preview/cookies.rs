//! The preview host's credentials: its cookie, the redirects that set
//! it, and warren's own Bearer token.

use axum::http::header::{CACHE_CONTROL, COOKIE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use warren_domain::user::UserId;

use super::super::auth::{Auth, AuthMode, Credentials};

/// The preview host's own cookie (never the terminal's).
pub const PREVIEW_COOKIE: &str = "warren_preview";

/// The `Set-Cookie` value of a preview cookie: host-only (no `Domain`),
/// HttpOnly, SameSite=Lax, Secure over https.
pub fn cookie(token: &str, max_age: u64, https: bool) -> String {
    let secure = if https { "; Secure" } else { "" };
    // No Domain: host-only, this preview host alone.
    format!("{PREVIEW_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}")
}

/// 303 to `rest` (the path without the token) setting `cookie`.
pub fn with_cookie(rest: &str, cookie: String) -> Response {
    see_other(rest, Some(cookie))
}

pub fn see_other(location: &str, cookie: Option<String>) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(LOCATION, v);
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if let Some(v) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(SET_COOKIE, v);
    }
    res
}

/// The request came over https (to a TLS proxy in front of us).
pub fn over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// The preview cookie's value, if sent.
pub fn preview_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == PREVIEW_COOKIE && !value.is_empty()).then_some(value)
        })
}

/// The user a Bearer token of this server names, if the request has one
/// (another Bearer is the app's own).
pub fn warren_bearer(auth: &Auth, headers: &HeaderMap) -> Option<UserId> {
    let bearer = Credentials::from_request(headers, None, None).bearer?;
    let only_bearer = Credentials {
        bearer: Some(bearer),
        ..Default::default()
    };
    match auth.mode() {
        AuthMode::None => None,
        _ => auth.authenticate(&only_bearer).ok(),
    }
}
