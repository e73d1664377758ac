//! The HTTP side: routes, login, the page, and the WebSocket handshake.
//!
//! | route              | what                                              |
//! |--------------------|---------------------------------------------------|
//! | `GET /`            | the page (static; it needs no login to load)      |
//! | `GET /assets/{f}`  | xterm.js, its CSS and fit add-on, the page's JS   |
//! | `GET/POST /login`  | `?token=T[&user=NAME]` → session cookie, `303 /`  |
//! | `GET /logout`      | clears the cookie                                 |
//! | `GET /healthz`     | `ok`                                              |
//! | `GET /favicon.ico` | 204 (no icon; keeps browser consoles quiet)       |
//! | `GET /ws`          | WebSocket: a new terminal (docs/protocol.md)      |
//! | `GET /ws/{id}`     | WebSocket: reattach to terminal `id`              |
//!
//! A cross-origin WebSocket is refused with 403 before the upgrade. Every
//! other WebSocket failure (not logged in, no such terminal, capacity) is
//! told after the upgrade as an `error` frame and a 44xx close code, because
//! that is all a browser script can see.

use axum::extract::{Path, Query, State};
use axum::http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, LOCATION, SET_COOKIE, VARY,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Router};
use serde::Deserialize;

use super::assets;
use super::auth::{clear_cookie, AuthError, AuthMode, Credentials};
use super::error::HttpError;
use super::host::{self};
use super::protocol::{WinSize, SUBPROTOCOL};
use super::relay::{self, TerminalRequest};
use super::state::AppState;
use super::ws;

/// The router. Tests mount it on a port-0 listener.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/{name}", get(asset))
        .route("/login", get(login_get).post(login_post))
        .route("/logout", get(logout))
        .route("/healthz", get(super::api::healthz))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/ws", get(ws_new))
        .route("/ws/{terminal}", get(ws_attach))
        .route("/preview/auth", get(super::preview::access::grant))
        .merge(super::api::routes(
            state.clone(),
            super::api_doc::document(),
        ))
        .merge(super::node::routes(state.clone()))
        .merge(super::api_services::routes(state.clone()))
        .merge(super::api_previews::routes(state.clone()))
        .fallback(|| async { HttpError::NotFound })
        .layer(axum::middleware::from_fn(super::error::api_json_errors))
        .layer(axum::middleware::from_fn(super::body_deadline::read_within))
        .layer(axum::middleware::from_fn_with_state(
            state.hosts().clone(),
            host::check_host,
        ))
        .layer(axum::middleware::map_response(security_headers))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::node::node_header,
        ))
        // Outermost: sees every error response, from handlers and layers.
        .layer(axum::middleware::from_fn(super::error::log_errors))
        // Before all of it: a preview host gets the preview proxy and
        // nothing of the terminal's origin (docs/previews.md).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::preview::dispatch,
        ))
        .with_state(state)
}

/// Headers on every response: no sniffing, no framing, no Referer (the
/// login URL carries a token), scripts only from this server.
async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
             base-uri 'none'; form-action 'self'",
        ),
    );
    res
}

async fn index() -> Response {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-cache"),
        ],
        assets::INDEX_HTML,
    )
        .into_response()
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Result<Response, HttpError> {
    let accept = headers
        .get(ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let asset = assets::find(&name, accept).ok_or(HttpError::NotFound)?;
    let mut res = (
        [
            (CONTENT_TYPE, asset.content_type),
            (CACHE_CONTROL, asset.cache_control),
        ],
        asset.body,
    )
        .into_response();
    if let Some(coding) = asset.encoding.header() {
        res.headers_mut()
            .insert(CONTENT_ENCODING, HeaderValue::from_static(coding));
    }
    if asset.varies {
        res.headers_mut()
            .insert(VARY, HeaderValue::from_static("accept-encoding"));
    }
    Ok(res)
}

#[derive(Debug, Default, Deserialize)]
pub struct LoginParams {
    token: Option<String>,
    user: Option<String>,
}

async fn login_get(State(app): State<AppState>, Query(p): Query<LoginParams>) -> Response {
    login(&app, p)
}

async fn login_post(State(app): State<AppState>, Form(p): Form<LoginParams>) -> Response {
    login(&app, p)
}

fn login(app: &AppState, p: LoginParams) -> Response {
    let auth = app.auth();
    if auth.mode() == AuthMode::None {
        return see_other("/", None);
    }
    let Some(token) = p.token.filter(|t| !t.is_empty()) else {
        return HttpError::Unauthenticated(
            "open the login URL that `warren serve` printed (it carries ?token=...)".into(),
        )
        .into_response();
    };
    match auth.login(&token, p.user.as_deref()) {
        Ok(session) => {
            tracing::info!(user = %session.user, "login");
            see_other("/", Some(session.set_cookie()))
        }
        Err(AuthError::NeedUser) => login_form(&token, None),
        Err(AuthError::User(e)) if auth.mode() == AuthMode::Token => {
            login_form(&token, Some(&e.to_string()))
        }
        Err(e) => HttpError::Unauthenticated(format!("login refused: {e}")).into_response(),
    }
}

async fn logout() -> Response {
    see_other("/", Some(clear_cookie()))
}

fn see_other(location: &'static str, cookie: Option<String>) -> Response {
    let mut res = (StatusCode::SEE_OTHER, [(LOCATION, location)]).into_response();
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        res.headers_mut().insert(SET_COOKIE, cookie);
    }
    res
}

/// What token mode means, said on the name form and in the banner.
pub const TOKEN_MODE_WARNING: &str = "Anyone with this link can open a shell as any user name. \
     For real users, the server should use JWT mode (--auth jwt).";

/// The page that asks for a user name (token mode, no `&user=`).
fn login_form(token: &str, error: Option<&str>) -> Response {
    let error = error
        .map(|e| format!("<p class=\"error\">{}</p>", html_escape(e)))
        .unwrap_or_default();
    let body = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>warren: log in</title>
<style>
body {{ font: 16px system-ui, sans-serif; background: #111; color: #ddd; display: flex;
       align-items: center; justify-content: center; height: 100vh; margin: 0; }}
form {{ background: #222; padding: 2em; border-radius: 8px; min-width: 18em; }}
input, button {{ font: inherit; padding: .4em; margin-top: .5em; width: 100%; box-sizing: border-box; }}
.error {{ color: #f77; }}
.warning {{ color: #fc6; font-size: 85%; max-width: 20em; }}
</style></head>
<body><form method="post" action="/login">
<h1>warren</h1>
<label for="user">Your user name</label>
<input id="user" name="user" autofocus required maxlength="64" autocomplete="username">
<input type="hidden" name="token" value="{token}">
{error}
<button type="submit">Open a terminal</button>
<p class="warning">{TOKEN_MODE_WARNING}</p>
</form></body></html>
"#,
        token = html_escape(token),
    );
    let status = if error.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (
        status,
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Query parameters of `/ws` and `/ws/{id}`.
#[derive(Debug, Default, Deserialize)]
pub struct WsParams {
    /// A session token (browsers cannot set headers on a WebSocket).
    token: Option<String>,
    /// The user, for `--auth none` only.
    user: Option<String>,
    /// The size a new terminal starts with.
    cols: Option<u16>,
    rows: Option<u16>,
}

async fn ws_new(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<WsParams>,
    ws: yawc::IncomingUpgrade,
) -> Result<Response, HttpError> {
    let default = WinSize::default();
    let size = super::protocol::win_size(
        p.cols.unwrap_or(default.cols),
        p.rows.unwrap_or(default.rows),
    );
    upgrade(app, &headers, &p, ws, TerminalRequest::New(size))
}

async fn ws_attach(
    State(app): State<AppState>,
    Path(terminal): Path<String>,
    headers: HeaderMap,
    Query(p): Query<WsParams>,
    ws: yawc::IncomingUpgrade,
) -> Result<Response, HttpError> {
    upgrade(app, &headers, &p, ws, TerminalRequest::Attach(terminal))
}

fn upgrade(
    app: AppState,
    headers: &HeaderMap,
    p: &WsParams,
    ws: yawc::IncomingUpgrade,
    target: TerminalRequest,
) -> Result<Response, HttpError> {
    app.origins()
        .check(headers)
        .map_err(|_| HttpError::Forbidden("cross-origin WebSocket refused"))?;
    let user = app.auth().authenticate(&Credentials::from_request(
        headers,
        p.token.as_deref(),
        p.user.as_deref(),
    ));
    let guard = app.connection_guard();
    // Small buffers and pooled deflate state: see web/ws.rs and
    // docs/dependencies.md#q8-websocket-and-connections.
    Ok(ws::accept(ws, headers, SUBPROTOCOL, move |socket| {
        relay::serve(socket, app, user, target, guard)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_html() {
        assert_eq!(
            html_escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
