//! The management API under `/api` (JSON in and out; docs/api.md, and the
//! OpenAPI document served at `/api/openapi.json`, which a test checks
//! against this router). Every route needs the admin token as
//! `Authorization: Bearer T`; a user's login token gets 403, anything else
//! 401, and both are written to the audit log. Handlers are thin: the work
//! is in [`warren_domain::manage`], shared with the command line.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::auth::Credentials;
pub use super::error::ApiError;
use super::state::AppState;
use warren_domain::manage::{ExecRequest, ManageError, Manager};
use warren_domain::state::LimitOverrides;

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// Who the audit log names for API calls.
pub const ADMIN_ACTOR: &str = "admin";

/// A JSON body that failed to parse says why, as JSON.
pub struct ApiJson<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let value = match Json::<serde_json::Value>::from_request(req, state).await {
            Ok(Json(v)) => v,
            // Malformed bodies are the client's error.
            Err(rejection) => {
                let status = match rejection.status() {
                    StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
                    other => other,
                };
                return Err(ApiError::new(status, rejection.body_text()));
            }
        };
        // Every body of this API is an object. serde would also read a
        // struct from an array (`[]` as "every field left out"), so that is
        // refused before it can be.
        if !value.is_object() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the body must be a JSON object, not {}", json_kind(&value)),
            ));
        }
        // Mistyped bodies are the client's error.
        serde_json::from_value(value)
            .map(ApiJson)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid body: {e}")))
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Query parameters that fail to parse say why, as JSON.
pub struct ApiQuery<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, r.body_text()))
    }
}

/// Path parameters that fail to decode say why, as JSON.
pub struct ApiPath<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|r| {
                let status = match r.status() {
                    StatusCode::INTERNAL_SERVER_ERROR => StatusCode::INTERNAL_SERVER_ERROR,
                    _ => StatusCode::BAD_REQUEST,
                };
                ApiError::new(status, r.body_text())
            })
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The `/api` routes (merged into the app by [`super::http::app`]).
pub fn routes(state: AppState) -> Router<AppState> {
    let admin = Router::new()
        .route("/api/users", get(list_users).post(create_user))
        .route("/api/users/{user}", get(show_user).delete(delete_user))
        .route("/api/users/{user}/limits", put(set_limits))
        .route("/api/users/{user}/stats", get(stats))
        .route("/api/users/{user}/exec", post(exec))
        .route("/api/users/{user}/exec/stream", post(exec_stream))
        .route("/api/users/{user}/export", get(export))
        .route(
            "/api/users/{user}/import",
            post(import).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/users/{user}/terminals", get(terminals))
        .route(
            "/api/users/{user}/terminals/{terminal}",
            delete(close_terminal),
        )
        .route("/api/audit", get(audit))
        .route("/metrics", get(metrics_text))
        .route_layer(axum::middleware::from_fn_with_state(state, require_admin));
    Router::new()
        .route("/api/openapi.json", get(openapi))
        .merge(admin)
        // JSON bodies (exec's stdin included) stay small.
        .layer(DefaultBodyLimit::max(4 << 20))
}

async fn require_admin(State(app): State<AppState>, req: Request, next: Next) -> Response {
    match check_admin(&app, req.headers()) {
        Ok(()) => next.run(req).await,
        Err((status, why)) => {
            app.audit_auth_failed(req.uri().path(), why.to_string());
            ApiError::new(status, why.to_string()).into_response()
        }
    }
}

/// The admin token must come as a Bearer header (never in a URL, where it
/// would reach logs), compared in constant time.
fn check_admin(app: &AppState, headers: &HeaderMap) -> Result<(), (StatusCode, &'static str)> {
    let Some(expected) = app.admin_token() else {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "the management API is not enabled on this server",
        ));
    };
    let creds = Credentials::from_request(headers, None, None);
    if let Some(bearer) = creds.bearer {
        if bool::from(bearer.as_bytes().ct_eq(expected.as_bytes())) {
            return Ok(());
        }
    }
    // A user's own login is recognised, and refused.
    if creds.bearer.is_some() || creds.cookie.is_some() {
        let user_creds = Credentials {
            query_user: None,
            ..creds
        };
        if app.auth().mode() != super::auth::AuthMode::None
            && app.auth().authenticate(&user_creds).is_ok()
        {
            return Err((
                StatusCode::FORBIDDEN,
                "this is a user's token; the management API needs the admin token",
            ));
        }
    }
    Err((
        StatusCode::UNAUTHORIZED,
        "the management API needs the admin token (Authorization: Bearer ...)",
    ))
}

fn manager(app: &AppState) -> ApiResult<Arc<Manager>> {
    app.manager().cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the management API is not enabled on this server",
        )
    })
}

/// Runs blocking state work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ManageError> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::from(ManageError::from(e)))?
        .map_err(ApiError::from)
}

async fn openapi() -> Response {
    ([(CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn list_users(State(app): State<AppState>) -> ApiResult<Response> {
    let m = manager(&app)?;
    let users = blocking(move || m.list()).await?;
    Ok(Json(serde_json::json!({ "users": users })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    id: String,
}

async fn create_user(
    State(app): State<AppState>,
    ApiJson(body): ApiJson<CreateUser>,
) -> ApiResult<Response> {
    let m = manager(&app)?;
    let (user, created) = blocking(move || m.get_or_create(ADMIN_ACTOR, &body.id)).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(user)).into_response())
}

async fn show_user(
    State(app): State<AppState>,
    ApiPath(user): ApiPath<String>,
) -> ApiResult<Response> {
    let m = manager(&app)?;
    Ok(Json(blocking(move || m.show(&user)).await?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteParams {
    #[serde(default)]
    remove_home: bool,
}

async fn delete_user(
    State(app): State<AppState>,
    ApiPath(user): ApiPath<String>,
    ApiQuery(p): ApiQuery<DeleteParams>,
) -> ApiResult<Response> {
    let m = manager(&app)?;
    Ok(Json(m.delete(ADMIN_ACTOR, &user, p.remove_home).await?).into_response())
}

async fn set_limits(
    State(app): State<AppState>,
    ApiPath(user): ApiPath<String>,
    ApiJson(limits): ApiJson<LimitOverrides>,
) -> ApiResult<Response> {
    let m = manager(&app)?;
    Ok(Json(blocking(move || m.set_limits(ADMIN_ACTOR, &user, &limits)).await?).into_response())
}

async fn stats(State(app): State<AppState>, ApiPath(user): ApiPath<String>) -> ApiResult<Response> {
    let m = manager(&app)?;
    Ok(Json(m.stats(&user).await?).into_response())
}

async fn exec(
    State(app): State<AppState>,
    ApiPath(user): ApiPath<String>,
    ApiJson(req): ApiJson<ExecRequest>,
) -> ApiResult<Response> {
    let m = manager(&app)?;
    Ok(Json(m.exec(ADMIN_ACTOR, &user, req).await?).into_response())
}

async fn exec_stream(
    State(app): State<AppState>,
    ApiPath(user): ApiPath<String>,
    ApiJson(req): ApiJson<ExecRequest>,
) -> ApiResult<Response> {
    let m = manager(&app)?;
    let rx = m.exec_stream(ADMIN_ACTOR, &user, req).await?;
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    Ok((
        [
            (CONTENT_TYPE, "application/x-ndjson"),
            (CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

async fn export(
    State(app): State<AppState>,
    ApiPath(user): ApiPath<String>,
) -> ApiResult<Response> {
    let m = manager(&app)?;
    let stream = m.export(ADMIN_ACTOR, &user).await?;
    let name = format!(
        "attachment; filename=\"{}.tar.gz\"",
        user.chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .collect::<String>()
    );
    Ok((
        [
            (CONTENT_TYPE, "application/gzip".to_string()),
            (CACHE_CONTROL, "no-store".to_string()),
            (CONTENT_DISPOSITION, name),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn import(
    State(app): State<AppState>,
    ApiPath(user): ApiPath<String>,
    body: Body,
) -> ApiResult<Response> {
    let m = manager(&app)?;
    let chunks = body
        .into_data_stream()
        .map(|r| r.map_err(std::io::Error::other));
    let summary = m.import(ADMIN_ACTOR, &user, chunks).await?;
    Ok(Json(summary).into_response())
}

async fn terminals(
    State(app): State<AppState>,
    ApiPath(user): ApiPath<String>,
) -> ApiResult<Response> {
    let m = manager(&app)?;
    let list = blocking(move || m.terminals(&user)).await?;
    Ok(Json(serde_json::json!({ "terminals": list })).into_response())
}

async fn close_terminal(
    State(app): State<AppState>,
    ApiPath((user, terminal)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let m = manager(&app)?;
    blocking(move || m.close_terminal(ADMIN_ACTOR, &user, &terminal)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Entries per audit page: the default, and the most one request may ask
/// for (more is refused, not silently cut, so a client never mistakes a
/// short page for the end).
const AUDIT_PAGE_DEFAULT: u32 = 100;
const AUDIT_PAGE_MAX: u32 = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    user: Option<String>,
    action: Option<String>,
    #[serde(default)]
    after: i64,
    limit: Option<u32>,
}

async fn audit(
    State(app): State<AppState>,
    ApiQuery(p): ApiQuery<AuditParams>,
) -> ApiResult<Response> {
    let m = manager(&app)?;
    let limit = p.limit.unwrap_or(AUDIT_PAGE_DEFAULT);
    if limit > AUDIT_PAGE_MAX {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("limit {limit} is above the maximum of {AUDIT_PAGE_MAX} entries per page"),
        ));
    }
    let entries =
        blocking(move || m.audit_log(p.user.as_deref(), p.action.as_deref(), p.after, limit))
            .await?;
    Ok(Json(serde_json::json!({ "entries": entries })).into_response())
}

/// `GET /metrics` (admin token required, like `/api`).
async fn metrics_text(State(app): State<AppState>) -> Response {
    let text = {
        let app2 = app.clone();
        tokio::task::spawn_blocking(move || app2.metrics().encode(app2.registry()))
            .await
            .unwrap_or_default()
    };
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
