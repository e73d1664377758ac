//! The management API under `/api` (JSON in and out; docs/api.md, and the
//! OpenAPI document served at `/api/openapi.json`, generated from the
//! `#[utoipa::path]` attributes here and the wire types of
//! [`super::api_wire`] by [`super::api_doc`]; a test checks it against
//! this router). Every route needs the admin token as
//! `Authorization: Bearer T`; a user's login token gets 403, anything else
//! 401, and both are written to the audit log. Handlers are thin: the work
//! is in [`warren_domain::manage`], shared with the command line.

use std::sync::{Arc, OnceLock};

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
use utoipa::IntoParams;

use super::api_responses::{
    BadRequest, Conflict, FileBytes, FilePath, Forbidden, HealthzBody, InternalError, MyFilePath,
    NotFound, OpenApiBody, PayloadTooLarge, TarGz, TerminalPath, Unauthorized, Unavailable,
    UnsupportedMediaType, UserPath,
};
use super::api_wire::ExecLine;
use super::api_wire::{
    AuditLog, CreateUser, Deleted, ExecRequest, ExecResult, Imported, LimitOverridesUpdate,
    ShellUpdate, Stats, TerminalList, Uploaded, UserList, UserView,
};
use super::auth::Credentials;
pub use super::error::ApiError;
use super::state::AppState;
use warren_domain::manage::{FileKind, ManageError, Manager};

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

pub(super) type ApiResult<T> = Result<T, ApiError>;

/// The `/api` routes (merged into the app by [`super::http::app`]).
/// The OpenAPI document: the app builder (`super::http::app`) hands it
/// over, because the document lists this module's handlers
/// (`super::api_doc`) and so cannot be made here.
static DOCUMENT: OnceLock<&'static str> = OnceLock::new();

pub fn routes(state: AppState, document: &'static str) -> Router<AppState> {
    let _ = DOCUMENT.set(document);
    let admin = Router::new()
        .route("/api/users", get(list_users).post(create_user))
        .route("/api/users/{user}", get(show_user).delete(delete_user))
        .route("/api/users/{user}/limits", put(set_limits))
        .route("/api/users/{user}/shell", put(set_shell))
        .route("/api/users/{user}/stats", get(stats))
        .route("/api/users/{user}/exec", post(exec))
        .route("/api/users/{user}/exec/stream", post(exec_stream))
        .route("/api/users/{user}/export", get(export))
        .route(
            "/api/users/{user}/import",
            post(import).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/api/users/{user}/files/{*path}",
            get(get_file)
                .put(put_file)
                .layer(DefaultBodyLimit::disable()),
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
        // A user's own files, under their own login (not the admin token).
        .route(
            "/api/me/files/{*path}",
            get(get_my_file)
                .put(put_my_file)
                .layer(DefaultBodyLimit::disable()),
        )
        .merge(admin)
        // JSON bodies (exec's stdin included) stay small.
        .layer(DefaultBodyLimit::max(4 << 20))
}

pub(super) async fn require_admin(
    State(app): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
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

pub(super) fn manager(app: &AppState) -> ApiResult<Arc<Manager>> {
    app.manager().cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the management API is not enabled on this server",
        )
    })
}

/// Runs blocking state work off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ManageError> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::from(ManageError::from(e)))?
        .map_err(ApiError::from)
}

/// Liveness
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "getHealth",
    tag = "server",
    security(()),
    responses(
        (status = 200, description = "The server is up: the body is `ok` and a newline", content_type = "text/plain", body = inline(HealthzBody)),
    ),
)]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// This document
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "getOpenApi",
    tag = "server",
    security(()),
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API", body = inline(OpenApiBody)),
    ),
)]
pub async fn openapi() -> Response {
    let document = DOCUMENT.get().copied().unwrap_or_default();
    ([(CONTENT_TYPE, "application/json")], document).into_response()
}

/// Every tenant, by id
#[utoipa::path(
    get,
    path = "/api/users",
    operation_id = "listUsers",
    tag = "users",
    responses(
        (status = 200, description = "The tenants", body = UserList),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn list_users(State(app): State<AppState>) -> ApiResult<Response> {
    let m = manager(&app)?;
    let users = blocking(move || m.list()).await?;
    let users = users.into_iter().map(UserView::from).collect();
    Ok(Json(UserList { users }).into_response())
}

/// Create a tenant (or get the existing one)
///
/// Allocates the tenant's host uid and creates its home. Idempotent: an existing tenant is returned unchanged with 200. An id deleted with its home kept gets its old host uid and its home back (201); a kept home owned by another uid (left by an older warren) is a 409 that says how to adopt it.
#[utoipa::path(
    post,
    path = "/api/users",
    operation_id = "createUser",
    tag = "users",
    request_body = CreateUser,
    responses(
        (status = 200, description = "The tenant already existed", body = UserView),
        (status = 201, description = "The tenant was created now", body = UserView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn create_user(
    State(app): State<AppState>,
    ApiJson(body): ApiJson<CreateUser>,
) -> ApiResult<Response> {
    let m = manager(&app)?;
    let (user, created) = blocking(move || m.get_or_create(ADMIN_ACTOR, &body.id.0)).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(UserView::from(user))).into_response())
}

/// One tenant
#[utoipa::path(
    get,
    path = "/api/users/{user}",
    operation_id = "getUser",
    tag = "users",
    params(UserPath),
    responses(
        (status = 200, description = "The tenant", body = UserView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn show_user(
    State(app): State<AppState>,
    ApiPath(user): ApiPath<String>,
) -> ApiResult<Response> {
    let m = manager(&app)?;
    Ok(Json(UserView::from(blocking(move || m.show(&user)).await?)).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct DeleteParams {
    /// Also remove the tenant's home (default false: it stays on disk)
    #[serde(default)]
    #[param(default = false)]
    remove_home: bool,
}

/// Delete a tenant
///
/// Ends the tenant's terminals and stops its sandbox, then removes the tenant; with `remove_home=true` also its home. The host uid is never given to another tenant; without `remove_home` it is kept for this id, which gets it and its home back when created again.
#[utoipa::path(
    delete,
    path = "/api/users/{user}",
    operation_id = "deleteUser",
    tag = "users",
    params(UserPath, DeleteParams),
    responses(
        (status = 200, description = "What was done", body = Deleted),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn delete_user(
    State(app): State<AppState>,
    ApiPath(user): ApiPath<String>,
    ApiQuery(p): ApiQuery<DeleteParams>,
) -> ApiResult<Response> {
    let m = manager(&app)?;
    let deleted = m.delete(ADMIN_ACTOR, &user, p.remove_home).await?;
    Ok(Json(Deleted::from(deleted)).into_response())
}

/// Replace a tenant's limit overrides
///
/// Replaces all three overrides; a field left out is `"default"`. They apply from the tenant's next sandbox on.
#[utoipa::path(
    put,
    path = "/api/users/{user}/limits",
    operation_id = "setLimits",
    tag = "users",
    params(UserPath),
    request_body = LimitOverridesUpdate,
    responses(
        (status = 200, description = "The tenant with its new overrides", body = UserView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn set_limits(
    State(app): State<AppState>,
    ApiPath(user): ApiPath<String>,
    ApiJson(limits): ApiJson<LimitOverridesUpdate>,
) -> ApiResult<Response> {
    let m = manager(&app)?;
    let limits = limits.into();
    let user = blocking(move || m.set_limits(ADMIN_ACTOR, &user, &limits)).await?;
    Ok(Json(UserView::from(user)).into_response())
}

/// Set the tenant's terminal command line
///
/// Instead of the server's `--shell` (default `bash -l`), from the tenant's next sandbox on (terminals of a sandbox already running keep theirs). `"default"` goes back to the server's.
#[utoipa::path(
    put,
    path = "/api/users/{user}/shell",
    operation_id = "setShell",
    tag = "users",
    params(UserPath),
    request_body = ShellUpdate,
    responses(
        (status = 200, description = "The tenant, with its shell", body = UserView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn set_shell(
    State(app): State<AppState>,
    ApiPath(user): ApiPath<String>,
    ApiJson(body): ApiJson<ShellUpdate>,
) -> ApiResult<Response> {
    let m = manager(&app)?;
    let user = blocking(move || m.set_shell(ADMIN_ACTOR, &user, body.shell())).await?;
    Ok(Json(UserView::from(user)).into_response())
}

/// What a tenant uses now
#[utoipa::path(
    get,
    path = "/api/users/{user}/stats",
    operation_id = "getStats",
    tag = "users",
    params(UserPath),
    responses(
        (status = 200, description = "The tenant's sandbox, limits, usage and home size", body = Stats),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn stats(
    State(app): State<AppState>,
    ApiPath(user): ApiPath<String>,
) -> ApiResult<Response> {
    let m = manager(&app)?;
    Ok(Json(Stats::from(m.stats(&user).await?)).into_response())
}

/// Run a command and wait for it
///
/// Runs `argv` in the tenant's sandbox (started if needed) as the tenant, and returns its exit and output (at most 1 MiB of each stream). A command that runs and fails is still 200: see `reason` and `exit_code`. So is one the sandbox cannot exec, as in a shell: `exit_code` 127 when it is not found, 126 when it is not executable, 125 when `cwd` does not exist, with the reason on stderr.
#[utoipa::path(
    post,
    path = "/api/users/{user}/exec",
    operation_id = "exec",
    tag = "commands",
    params(UserPath),
    request_body = ExecRequest,
    responses(
        (status = 200, description = "The command ran", body = ExecResult),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn exec(
    State(app): State<AppState>,
    ApiPath(user): ApiPath<String>,
    ApiJson(req): ApiJson<ExecRequest>,
) -> ApiResult<Response> {
    let m = manager(&app)?;
    let result = m.exec(ADMIN_ACTOR, &user, req.into()).await?;
    Ok(Json(ExecResult::from(result)).into_response())
}

/// Run a command and stream its output
///
/// Like `exec`, but the 200 body is NDJSON: one `ExecChunk` line per piece of output as it arrives (UTF-8, never split inside a character), then one `ExecEnd` line. Errors found before the command starts are ordinary JSON errors; a command the sandbox cannot exec ends with `exit_code` 127 or 126 and its reason on stderr, as in `exec`.
#[utoipa::path(
    post,
    path = "/api/users/{user}/exec/stream",
    operation_id = "execStream",
    tag = "commands",
    params(UserPath),
    request_body = ExecRequest,
    responses(
        (status = 200, description = "The command started; each line of the body is one JSON value matching this schema, the last one an `ExecEnd`", content_type = "application/x-ndjson", body = inline(ExecLine)),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn exec_stream(
    State(app): State<AppState>,
    ApiPath(user): ApiPath<String>,
    ApiJson(req): ApiJson<ExecRequest>,
) -> ApiResult<Response> {
    let m = manager(&app)?;
    let rx = m.exec_stream(ADMIN_ACTOR, &user, req.into()).await?;
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

/// Download the tenant's home as tar.gz
///
/// The tar is made inside the tenant's sandbox, as the tenant, and gzip'd by the server as it is streamed, outside the tenant's CPU limit; one export at a time per tenant (409 while one runs). A failure after the first byte cuts the transfer (the client never gets a complete-looking archive).
#[utoipa::path(
    get,
    path = "/api/users/{user}/export",
    operation_id = "exportHome",
    tag = "homes",
    params(UserPath),
    responses(
        (status = 200, description = "The home, as a gzip-compressed tar stream (`Content-Disposition: attachment; filename=\"<user>.tar.gz\"`)", content_type = "application/gzip", body = inline(TarGz)),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn export(
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

/// Unpack a tar.gz into the tenant's home
///
/// The upload (at most 1 GiB compressed) is checked whole before anything is written: an archive with absolute or `..` paths, links out of the home, devices, or too much content is refused with 400 (413 when too large) and the home is unchanged. It is then unpacked inside the tenant's sandbox, as the tenant. Imports and deletes of one tenant run one at a time.
#[utoipa::path(
    post,
    path = "/api/users/{user}/import",
    operation_id = "importHome",
    tag = "homes",
    params(UserPath),
    request_body(content = inline(TarGz), content_type = "application/gzip"),
    responses(
        (status = 200, description = "What was unpacked", body = Imported),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn import(
    State(app): State<AppState>,
    ApiPath(user): ApiPath<String>,
    body: Body,
) -> ApiResult<Response> {
    let m = manager(&app)?;
    let chunks = body
        .into_data_stream()
        .map(|r| r.map_err(std::io::Error::other));
    let summary = m.import(ADMIN_ACTOR, &user, chunks).await?;
    Ok(Json(Imported::from(summary)).into_response())
}

/// A file or folder of the tenant's home
///
/// A regular file comes as its bytes (`application/octet-stream`), a directory as a tar.gz of it (`application/gzip`, named `<name>.tar.gz`), both with `Content-Disposition: attachment`. `path` is relative to the home; `..`, absolute paths, NUL and paths through a symlink are refused with 400. Read inside the tenant's sandbox, as the tenant.
#[utoipa::path(
    get,
    path = "/api/users/{user}/files/{path}",
    operation_id = "getFile",
    tag = "files",
    params(FilePath),
    responses(
        (status = 200, description = "The file's bytes, or the directory as tar.gz", content_type = "application/octet-stream", body = inline(FileBytes)),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn get_file(
    State(app): State<AppState>,
    ApiPath((user, path)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    download(&app, ADMIN_ACTOR, &user, &path).await
}

/// Write a file (or unpack a tar.gz) into the tenant's home
///
/// The body becomes the file at `path` (parent directories made; an existing file is replaced, never written through), at most 1 GiB. With `?archive=tar.gz` the body is a tar.gz unpacked into the directory `path` (made), under the import's rules: a hostile archive is refused with nothing written. `..`, absolute paths, NUL and paths through a symlink are refused with 400, nothing written. Written inside the tenant's sandbox, as the tenant, so their limits apply.
#[utoipa::path(
    put,
    path = "/api/users/{user}/files/{path}",
    operation_id = "putFile",
    tag = "files",
    params(FilePath, PutFileParams),
    request_body(content = inline(FileBytes), content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "Written", body = Uploaded),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn put_file(
    State(app): State<AppState>,
    ApiPath((user, path)): ApiPath<(String, String)>,
    ApiQuery(p): ApiQuery<PutFileParams>,
    body: Body,
) -> ApiResult<Response> {
    upload(&app, ADMIN_ACTOR, &user, &path, &p, body).await
}

/// `?archive=` of a put.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct PutFileParams {
    /// `tar.gz`: the body is a tar.gz to unpack into the directory `path`
    #[param(pattern = "^tar\\.gz$")]
    archive: Option<String>,
    /// With `--auth none` only, on `/api/me/...`: the user
    #[serde(default)]
    #[param(ignore)]
    user: Option<String>,
}

/// `?user=` of `/api/me/...` (`--auth none` only).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MeParams {
    pub(super) user: Option<String>,
}

/// A file or folder of your own home
///
/// `GET /api/users/{user}/files/{path}` for the logged-in user: their session cookie or, in JWT mode, `Authorization: Bearer <jwt>`, instead of the admin token.
#[utoipa::path(
    get,
    path = "/api/me/files/{path}",
    operation_id = "getMyFile",
    security(("userSession" = [])),
    tag = "files",
    params(MyFilePath),
    responses(
        (status = 200, description = "The file's bytes, or the directory as tar.gz", content_type = "application/octet-stream", body = inline(FileBytes)),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn get_my_file(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiPath(path): ApiPath<String>,
    ApiQuery(p): ApiQuery<MeParams>,
) -> ApiResult<Response> {
    let me = my_user(&app, &headers, p.user.as_deref())?;
    download(&app, &me, &me, &path).await
}

/// Write a file (or unpack a tar.gz) into your own home
///
/// `PUT /api/users/{user}/files/{path}` for the logged-in user (session cookie, or JWT bearer).
#[utoipa::path(
    put,
    path = "/api/me/files/{path}",
    operation_id = "putMyFile",
    security(("userSession" = [])),
    tag = "files",
    params(MyFilePath, PutFileParams),
    request_body(content = inline(FileBytes), content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "Written", body = Uploaded),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn put_my_file(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiPath(path): ApiPath<String>,
    ApiQuery(p): ApiQuery<PutFileParams>,
    body: Body,
) -> ApiResult<Response> {
    let me = my_user(&app, &headers, p.user.as_deref())?;
    upload(&app, &me, &me, &path, &p, body).await
}

/// The user of a request to `/api/me/...`: their login, from a page of
/// this server (a cross-origin request is refused: the cookie would ride
/// along).
pub(super) fn my_user(
    app: &AppState,
    headers: &HeaderMap,
    query_user: Option<&str>,
) -> ApiResult<String> {
    app.origins()
        .check(headers)
        .map_err(|_| ApiError::new(StatusCode::FORBIDDEN, "cross-origin request refused"))?;
    let creds = Credentials::from_request(headers, None, query_user);
    app.auth()
        .authenticate(&creds)
        .map(|u| u.as_str().to_string())
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, format!("log in first: {e}")))
}

async fn download(app: &AppState, actor: &str, user: &str, path: &str) -> ApiResult<Response> {
    let m = manager(app)?;
    let (kind, stream) = m.get_file(actor, user, path).await?;
    let base = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    let (content_type, name) = match kind {
        FileKind::File => ("application/octet-stream", base.to_string()),
        FileKind::Dir => ("application/gzip", format!("{base}.tar.gz")),
    };
    Ok((
        [
            (CONTENT_TYPE, content_type.to_string()),
            (CACHE_CONTROL, "no-store".to_string()),
            (CONTENT_DISPOSITION, attachment(&name)),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `attachment; filename="ascii"; filename*=UTF-8''percent-encoded`.
fn attachment(name: &str) -> String {
    let ascii: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    let ascii = if ascii.trim_matches('.').is_empty() {
        "download".to_string()
    } else {
        ascii
    };
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

async fn upload(
    app: &AppState,
    actor: &str,
    user: &str,
    path: &str,
    p: &PutFileParams,
    body: Body,
) -> ApiResult<Response> {
    let archive = match p.archive.as_deref() {
        None => false,
        Some("tar.gz") => true,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("archive={other:?}: the only archive format is tar.gz"),
            ))
        }
    };
    let m = manager(app)?;
    let chunks = body
        .into_data_stream()
        .map(|r| r.map_err(std::io::Error::other));
    let done = m.put_file(actor, user, path, archive, chunks).await?;
    Ok((StatusCode::CREATED, Json(Uploaded::from(done))).into_response())
}

/// The tenant's open terminals
#[utoipa::path(
    get,
    path = "/api/users/{user}/terminals",
    operation_id = "listTerminals",
    tag = "terminals",
    params(UserPath),
    responses(
        (status = 200, description = "The terminals, oldest first", body = TerminalList),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn terminals(
    State(app): State<AppState>,
    ApiPath(user): ApiPath<String>,
) -> ApiResult<Response> {
    let m = manager(&app)?;
    let list = blocking(move || m.terminals(&user)).await?;
    let terminals = list.into_iter().map(Into::into).collect();
    Ok(Json(TerminalList { terminals }).into_response())
}

/// Close a terminal
///
/// Ends the terminal's shell; its viewers get an `exit` frame.
#[utoipa::path(
    delete,
    path = "/api/users/{user}/terminals/{terminal}",
    operation_id = "closeTerminal",
    tag = "terminals",
    params(TerminalPath),
    responses(
        (status = 204, description = "Closed"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn close_terminal(
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
pub(super) const AUDIT_PAGE_DEFAULT: u32 = 100;
pub(super) const AUDIT_PAGE_MAX: u32 = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditParams {
    /// Only entries about this tenant
    user: Option<String>,
    /// Only entries of this action (`exec`, `delete`, `auth.failed`, ...)
    action: Option<String>,
    /// Only entries with a larger `seq`
    #[serde(default)]
    #[param(default = 0)]
    after: i64,
    /// At most this many entries: 0 to 1000 (more is a 400, never silently cut)
    #[param(minimum = 0, maximum = 1000, default = 100)]
    limit: Option<u32>,
}

/// The audit log, oldest first
///
/// Page with `after` set to the last `seq` seen.
#[utoipa::path(
    get,
    path = "/api/audit",
    operation_id = "getAudit",
    tag = "server",
    params(AuditParams),
    responses(
        (status = 200, description = "The entries", body = AuditLog),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn audit(
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
    let entries = entries.into_iter().map(Into::into).collect();
    Ok(Json(AuditLog { entries }).into_response())
}

/// Prometheus metrics
///
/// The OpenMetrics text format: `warren_sandboxes`, `warren_terminals`, `warren_spawn_seconds` (label `what`: `sandbox` or `terminal`), `warren_relayed_bytes_total` (label `direction`), `warren_oom_kills_total`, `warren_exec_total` (commands run through the API), `warren_audit_pending` (audit entries held in memory while the state database refuses writes, e.g. a full disk), `warren_audit_dropped_total` (audit entries lost because more than 10000 waited), and, while a sandbox with a memory cgroup runs, `warren_tenant_memory_bytes` (label `user`). Needs the admin token, like `/api`.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "getMetrics",
    tag = "server",
    responses(
        (status = 200, description = "The metrics", content_type = "application/openmetrics-text", body = String),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn metrics_text(State(app): State<AppState>) -> Response {
    let text = {
        let app2 = app.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(m) = app2.manager() {
                app2.metrics().set_services(&m.all_services());
            }
            app2.metrics().encode(app2.registry())
        })
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
