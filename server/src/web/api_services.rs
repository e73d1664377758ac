//! The services API (docs/services.md): `/api/users/{user}/services/...`
//! with the admin token and `/api/me/services/...` under the user's own
//! login, both over the domain's [`Manager`](warren_domain::manage::Manager) service methods.

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::api::{manager, my_user, ApiJson, ApiPath, ApiQuery, ApiResult, ADMIN_ACTOR};
use super::api_responses::{
    BadRequest, Conflict, Forbidden, InternalError, NotFound, PayloadTooLarge, Unauthorized,
    Unavailable, UnsupportedMediaType, UserPath,
};
use super::services_wire::{
    LogsParams, MyServicePath, Service, ServiceCreate, ServiceList, ServicePath,
};
use super::state::AppState;

/// The services routes: with the admin token under `/api/users/{user}`,
/// and under the user's own login at `/api/me/services` (merged into the
/// app by [`super::http::app`], as the other API routes).
pub fn routes(state: AppState) -> Router<AppState> {
    let admin = Router::new()
        .route("/api/users/{user}/services", get(list).post(create))
        .route(
            "/api/users/{user}/services/{name}",
            get(show).delete(delete),
        )
        .route("/api/users/{user}/services/{name}/logs", get(logs))
        .route("/api/users/{user}/services/{name}/start", post(start))
        .route("/api/users/{user}/services/{name}/stop", post(stop))
        .route("/api/users/{user}/services/{name}/restart", post(restart))
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            super::api::require_admin,
        ));
    Router::new()
        .route("/api/me/services", get(my_list).post(my_create))
        .route("/api/me/services/{name}", get(my_show).delete(my_delete))
        .route("/api/me/services/{name}/logs", get(my_logs))
        .route("/api/me/services/{name}/start", post(my_start))
        .route("/api/me/services/{name}/stop", post(my_stop))
        .route("/api/me/services/{name}/restart", post(my_restart))
        .merge(admin)
        // Service definitions are small JSON, as the other API bodies.
        .layer(axum::extract::DefaultBodyLimit::max(4 << 20))
}

/// `?user=` of `/api/me/...` (`--auth none` only).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MeParams {
    user: Option<String>,
}

async fn do_list(app: &AppState, user: &str) -> ApiResult<Response> {
    let m = manager(app)?;
    let services = m.list_services(user)?;
    Ok(Json(ServiceList {
        services: services.into_iter().map(Service::from).collect(),
    })
    .into_response())
}

async fn do_create(
    app: &AppState,
    actor: &str,
    user: &str,
    body: ServiceCreate,
) -> ApiResult<Response> {
    let m = manager(app)?;
    let view = m.create_service(actor, user, body.into()).await?;
    Ok((StatusCode::CREATED, Json(Service::from(view))).into_response())
}

async fn do_show(app: &AppState, user: &str, name: &str) -> ApiResult<Response> {
    let m = manager(app)?;
    Ok(Json(Service::from(m.show_service(user, name)?)).into_response())
}

async fn do_logs(app: &AppState, user: &str, name: &str, p: &LogsParams) -> ApiResult<Response> {
    let m = manager(app)?;
    let headers = [
        (CONTENT_TYPE, "text/plain; charset=utf-8"),
        (CACHE_CONTROL, "no-store"),
    ];
    if p.follow == Some(1) {
        let rx = m.follow_service_logs(user, name, p.bytes)?;
        let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
        return Ok((headers, body).into_response());
    }
    let tail = m.service_logs(user, name, p.bytes)?;
    Ok((headers, tail).into_response())
}

async fn do_start(app: &AppState, actor: &str, user: &str, name: &str) -> ApiResult<Response> {
    let m = manager(app)?;
    Ok(Json(Service::from(m.start_service(actor, user, name).await?)).into_response())
}

async fn do_stop(app: &AppState, actor: &str, user: &str, name: &str) -> ApiResult<Response> {
    let m = manager(app)?;
    Ok(Json(Service::from(m.stop_service(actor, user, name).await?)).into_response())
}

async fn do_restart(app: &AppState, actor: &str, user: &str, name: &str) -> ApiResult<Response> {
    let m = manager(app)?;
    Ok(Json(Service::from(m.restart_service(actor, user, name).await?)).into_response())
}

async fn do_delete(app: &AppState, actor: &str, user: &str, name: &str) -> ApiResult<Response> {
    let m = manager(app)?;
    m.delete_service(actor, user, name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// List a user's services
///
/// Each service's definition and live status (state, restarts, last exit), by name.
#[utoipa::path(
    get,
    path = "/api/users/{user}/services",
    operation_id = "listServices",
    tag = "services",
    params(UserPath),
    responses(
        (status = 200, description = "The services", body = ServiceList),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn list(
    State(app): State<AppState>,
    ApiPath(user): ApiPath<String>,
) -> ApiResult<Response> {
    do_list(&app, &user).await
}

/// Create a service
///
/// Stores the service (it survives a server restart) and, unless `enabled` is false, starts it in the user's sandbox, as the user, under the sandbox's limits. 409 when the user already has a service of that name (or 32 services).
#[utoipa::path(
    post,
    path = "/api/users/{user}/services",
    operation_id = "createService",
    tag = "services",
    params(UserPath),
    request_body = ServiceCreate,
    responses(
        (status = 201, description = "Created", body = Service),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
    ),
)]
pub(super) async fn create(
    State(app): State<AppState>,
    ApiPath(user): ApiPath<String>,
    ApiJson(body): ApiJson<ServiceCreate>,
) -> ApiResult<Response> {
    do_create(&app, ADMIN_ACTOR, &user, body).await
}

/// Show a service
///
/// Its definition and live status.
#[utoipa::path(
    get,
    path = "/api/users/{user}/services/{name}",
    operation_id = "showService",
    tag = "services",
    params(ServicePath),
    responses(
        (status = 200, description = "The service", body = Service),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn show(
    State(app): State<AppState>,
    ApiPath((user, name)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    do_show(&app, &user, &name).await
}

/// A service's output
///
/// The last bytes of its stdout and stderr together (the server keeps the last 64 KiB per service unless `--service-log-bytes` says otherwise), with the supervisor's own lines marked `[warren]`. With `follow=1` the response stays open and streams the output as it comes (chunked).
#[utoipa::path(
    get,
    path = "/api/users/{user}/services/{name}/logs",
    operation_id = "serviceLogs",
    tag = "services",
    params(ServicePath, LogsParams),
    responses(
        (status = 200, description = "The output", content_type = "text/plain", body = String),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn logs(
    State(app): State<AppState>,
    ApiPath((user, name)): ApiPath<(String, String)>,
    ApiQuery(p): ApiQuery<LogsParams>,
) -> ApiResult<Response> {
    do_logs(&app, &user, &name, &p).await
}

/// Start a service
///
/// Starts it unless it runs, and marks it enabled (it starts again with the server and the sandbox).
#[utoipa::path(
    post,
    path = "/api/users/{user}/services/{name}/start",
    operation_id = "startService",
    tag = "services",
    params(ServicePath),
    responses(
        (status = 200, description = "The service", body = Service),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn start(
    State(app): State<AppState>,
    ApiPath((user, name)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    do_start(&app, ADMIN_ACTOR, &user, &name).await
}

/// Stop a service
///
/// Kills its command (the whole process group) and marks it disabled, so it stays stopped across restarts of the server and the sandbox.
#[utoipa::path(
    post,
    path = "/api/users/{user}/services/{name}/stop",
    operation_id = "stopService",
    tag = "services",
    params(ServicePath),
    responses(
        (status = 200, description = "The service", body = Service),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn stop(
    State(app): State<AppState>,
    ApiPath((user, name)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    do_stop(&app, ADMIN_ACTOR, &user, &name).await
}

/// Restart a service
///
/// Stops it if it runs and starts it again (enabled).
#[utoipa::path(
    post,
    path = "/api/users/{user}/services/{name}/restart",
    operation_id = "restartService",
    tag = "services",
    params(ServicePath),
    responses(
        (status = 200, description = "The service", body = Service),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn restart(
    State(app): State<AppState>,
    ApiPath((user, name)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    do_restart(&app, ADMIN_ACTOR, &user, &name).await
}

/// Delete a service
///
/// Stops it and removes it.
#[utoipa::path(
    delete,
    path = "/api/users/{user}/services/{name}",
    operation_id = "deleteService",
    tag = "services",
    params(ServicePath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn delete(
    State(app): State<AppState>,
    ApiPath((user, name)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    do_delete(&app, ADMIN_ACTOR, &user, &name).await
}

/// List a user's services (your own)
///
/// Each service's definition and live status (state, restarts, last exit), by name. Under your own login (session cookie, or JWT bearer).
#[utoipa::path(
    get,
    path = "/api/me/services",
    operation_id = "myListServices",
    security(("userSession" = [])),
    tag = "services",
    responses(
        (status = 200, description = "The services", body = ServiceList),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn my_list(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<MeParams>,
) -> ApiResult<Response> {
    let me = my_user(&app, &headers, q.user.as_deref())?;
    do_list(&app, &me).await
}

/// Create a service (your own)
///
/// Stores the service (it survives a server restart) and, unless `enabled` is false, starts it in the user's sandbox, as the user, under the sandbox's limits. 409 when the user already has a service of that name (or 32 services). Under your own login (session cookie, or JWT bearer).
#[utoipa::path(
    post,
    path = "/api/me/services",
    operation_id = "myCreateService",
    security(("userSession" = [])),
    tag = "services",
    request_body = ServiceCreate,
    responses(
        (status = 201, description = "Created", body = Service),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
    ),
)]
pub(super) async fn my_create(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<MeParams>,
    ApiJson(body): ApiJson<ServiceCreate>,
) -> ApiResult<Response> {
    let me = my_user(&app, &headers, q.user.as_deref())?;
    do_create(&app, &me, &me, body).await
}

/// Show a service (your own)
///
/// Its definition and live status. Under your own login (session cookie, or JWT bearer).
#[utoipa::path(
    get,
    path = "/api/me/services/{name}",
    operation_id = "myShowService",
    security(("userSession" = [])),
    tag = "services",
    params(MyServicePath),
    responses(
        (status = 200, description = "The service", body = Service),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn my_show(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<MeParams>,
) -> ApiResult<Response> {
    let me = my_user(&app, &headers, q.user.as_deref())?;
    do_show(&app, &me, &name).await
}

/// A service's output (your own)
///
/// The last bytes of its stdout and stderr together (the server keeps the last 64 KiB per service unless `--service-log-bytes` says otherwise), with the supervisor's own lines marked `[warren]`. With `follow=1` the response stays open and streams the output as it comes (chunked). Under your own login (session cookie, or JWT bearer).
#[utoipa::path(
    get,
    path = "/api/me/services/{name}/logs",
    operation_id = "myServiceLogs",
    security(("userSession" = [])),
    tag = "services",
    params(MyServicePath, LogsParams),
    responses(
        (status = 200, description = "The output", content_type = "text/plain", body = String),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn my_logs(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiPath(name): ApiPath<String>,
    ApiQuery(p): ApiQuery<LogsParams>,
) -> ApiResult<Response> {
    let me = my_user(&app, &headers, p.user.as_deref())?;
    do_logs(&app, &me, &name, &p).await
}

/// Start a service (your own)
///
/// Starts it unless it runs, and marks it enabled (it starts again with the server and the sandbox). Under your own login (session cookie, or JWT bearer).
#[utoipa::path(
    post,
    path = "/api/me/services/{name}/start",
    operation_id = "myStartService",
    security(("userSession" = [])),
    tag = "services",
    params(MyServicePath),
    responses(
        (status = 200, description = "The service", body = Service),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn my_start(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<MeParams>,
) -> ApiResult<Response> {
    let me = my_user(&app, &headers, q.user.as_deref())?;
    do_start(&app, &me, &me, &name).await
}

/// Stop a service (your own)
///
/// Kills its command (the whole process group) and marks it disabled, so it stays stopped across restarts of the server and the sandbox. Under your own login (session cookie, or JWT bearer).
#[utoipa::path(
    post,
    path = "/api/me/services/{name}/stop",
    operation_id = "myStopService",
    security(("userSession" = [])),
    tag = "services",
    params(MyServicePath),
    responses(
        (status = 200, description = "The service", body = Service),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn my_stop(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<MeParams>,
) -> ApiResult<Response> {
    let me = my_user(&app, &headers, q.user.as_deref())?;
    do_stop(&app, &me, &me, &name).await
}

/// Restart a service (your own)
///
/// Stops it if it runs and starts it again (enabled). Under your own login (session cookie, or JWT bearer).
#[utoipa::path(
    post,
    path = "/api/me/services/{name}/restart",
    operation_id = "myRestartService",
    security(("userSession" = [])),
    tag = "services",
    params(MyServicePath),
    responses(
        (status = 200, description = "The service", body = Service),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn my_restart(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<MeParams>,
) -> ApiResult<Response> {
    let me = my_user(&app, &headers, q.user.as_deref())?;
    do_restart(&app, &me, &me, &name).await
}

/// Delete a service (your own)
///
/// Stops it and removes it. Under your own login (session cookie, or JWT bearer).
#[utoipa::path(
    delete,
    path = "/api/me/services/{name}",
    operation_id = "myDeleteService",
    security(("userSession" = [])),
    tag = "services",
    params(MyServicePath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn my_delete(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<MeParams>,
) -> ApiResult<Response> {
    let me = my_user(&app, &headers, q.user.as_deref())?;
    do_delete(&app, &me, &me, &name).await
}
