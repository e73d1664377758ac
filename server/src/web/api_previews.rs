//! The preview API (docs/previews.md, docs/api.md): share links for one
//! preview port, by the owner under their own login (`/api/me/...`) or by
//! the admin (`/api/users/{user}/...`); and the owner's listening ports.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use warren_domain::state::PreviewShare;

use super::api::{
    blocking, manager, my_user, require_admin, ApiJson, ApiPath, ApiQuery, ApiResult, MeParams,
    ADMIN_ACTOR,
};
use super::api_responses::*;
use super::api_wire::UserIdString;
use super::state::AppState;

pub fn routes(state: AppState) -> Router<AppState> {
    let admin = Router::new()
        .route(
            "/api/users/{user}/previews/{port}/shares",
            get(list_shares).post(create_share),
        )
        .route(
            "/api/users/{user}/previews/{port}/shares/{share}",
            delete(revoke_share),
        )
        .route_layer(axum::middleware::from_fn_with_state(state, require_admin));
    Router::new()
        .route("/api/me/ports", get(my_ports))
        .route(
            "/api/me/previews/{port}/shares",
            get(list_my_shares).post(create_my_share),
        )
        .route(
            "/api/me/previews/{port}/shares/{share}",
            delete(revoke_my_share),
        )
        .merge(admin)
}

/// A new share link
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareCreate {
    /// Seconds until the link stops working: 10 to 2592000 (30 days); required
    #[schema(minimum = 10, maximum = 2592000, examples(3600))]
    pub expires_in: u64,
}

/// A share link of one preview port
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareView {
    /// The link's id (for revoking it)
    pub id: String,
    /// The tenant whose port it opens
    pub user: String,
    pub port: u16,
    /// `admin`, or the tenant who made it
    pub created_by: String,
    /// Unix seconds
    pub created_at: i64,
    /// Unix seconds; the link works until then
    pub expires_at: i64,
    /// Unix seconds, when revoked
    pub revoked_at: Option<i64>,
    /// Whether the link works now (neither expired nor revoked)
    pub active: bool,
    /// The URL to hand out: the preview URL with `?warren_share=<token>` (absent once the link no longer works, or without the management API's key)
    pub url: Option<String>,
}

/// Share links, oldest first
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareList {
    pub shares: Vec<ShareView>,
}

/// A tenant's preview port in a path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct PreviewPath {
    /// A tenant id, percent-encoded
    pub user: UserIdString,
    /// A TCP port in the tenant's sandbox, 1 to 65535
    #[param(minimum = 1, maximum = 65535)]
    pub port: u16,
}

/// A share link of a tenant's preview port in a path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SharePath {
    /// A tenant id, percent-encoded
    pub user: UserIdString,
    /// A TCP port in the tenant's sandbox, 1 to 65535
    #[param(minimum = 1, maximum = 65535)]
    pub port: u16,
    /// A share link's id
    #[param(min_length = 1, max_length = 64)]
    pub share: String,
}

/// One's own preview port in a path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MyPreviewPath {
    /// A TCP port in your sandbox, 1 to 65535
    #[param(minimum = 1, maximum = 65535)]
    pub port: u16,
}

/// One's own share link in a path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MySharePath {
    /// A TCP port in your sandbox, 1 to 65535
    #[param(minimum = 1, maximum = 65535)]
    pub port: u16,
    /// A share link's id
    #[param(min_length = 1, max_length = 64)]
    pub share: String,
}

/// A port something listens on in your sandbox
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenPort {
    pub port: u16,
    /// Its preview host, `<port>-<user>.<preview domain>[:port]`
    pub host: String,
    /// Its preview URL (the first visit goes through `/preview/auth` on this origin)
    pub url: String,
}

/// The ports something listens on in your sandbox
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenPorts {
    /// Whether your sandbox is running (no sandbox: no ports)
    pub running: bool,
    /// Sorted by port
    pub ports: Vec<OpenPort>,
    /// Why the ports cannot be listed or reached, when they cannot (a sandbox without a network namespace of its own)
    pub unavailable: Option<String>,
}

/// The ports open in your sandbox, with their preview URLs
///
/// TCP ports something listens on inside your sandbox's own network namespace (read from its `/proc/net/tcp` and `tcp6`), for the page's list of previews. A visit does not start the sandbox.
#[utoipa::path(
    get,
    path = "/api/me/ports",
    operation_id = "listMyPorts",
    security(("userSession" = [])),
    tag = "previews",
    responses(
        (status = 200, description = "The listening ports", body = OpenPorts),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn my_ports(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<MeParams>,
) -> ApiResult<Response> {
    let me = my_user(&app, &headers, p.user.as_deref())?;
    let m = manager(&app)?;
    let id = me.clone();
    blocking(move || m.show(&id)).await?;
    let user = warren_domain::user::UserId::parse(&me)
        .map_err(|e| super::error::ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let sandbox = app.registry().sessions_of(&user).sandbox;
    let (ports, unavailable) = match sandbox.as_ref().map(|s| s.listening_ports()) {
        None | Some(Err(warren_domain::backend::PortError::NotRunning)) => (Vec::new(), None),
        Some(Ok(p)) => (p, None),
        Some(Err(e)) => (Vec::new(), Some(e.to_string())),
    };
    let previews = app.previews();
    let here = authority(&headers);
    let ports = ports
        .into_iter()
        .map(|port| {
            let origin = previews.preview_origin(&me, port, &here);
            OpenPort {
                port,
                host: origin.split("://").nth(1).unwrap_or_default().to_string(),
                url: format!("{origin}/"),
            }
        })
        .collect();
    Ok(Json(OpenPorts {
        running: sandbox.is_some(),
        ports,
        unavailable,
    })
    .into_response())
}

fn view(app: &AppState, authority: &str, s: PreviewShare) -> ShareView {
    let now = super::jwt::now_secs() as i64;
    let active = s.is_valid_at(now);
    let previews = app.previews();
    let url = active
        .then(|| previews.share_token(&s.user, s.port, &s.id, s.expires_at))
        .flatten()
        .map(|t| {
            format!(
                "{}/?warren_share={t}",
                previews.preview_origin(&s.user, s.port, authority)
            )
        });
    ShareView {
        id: s.id,
        user: s.user,
        port: s.port,
        created_by: s.created_by,
        created_at: s.created_at,
        expires_at: s.expires_at,
        revoked_at: s.revoked_at,
        active,
        url,
    }
}

fn authority(headers: &HeaderMap) -> String {
    headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

async fn create(
    app: &AppState,
    headers: &HeaderMap,
    actor: String,
    user: String,
    port: u16,
    body: ShareCreate,
) -> ApiResult<Response> {
    let m = manager(app)?;
    let share = blocking(move || m.create_share(&actor, &user, port, body.expires_in)).await?;
    Ok((
        StatusCode::CREATED,
        Json(view(app, &authority(headers), share)),
    )
        .into_response())
}

async fn list(app: &AppState, headers: &HeaderMap, user: String, port: u16) -> ApiResult<Response> {
    let m = manager(app)?;
    let shares = blocking(move || m.list_shares(&user, port)).await?;
    let shares = shares
        .into_iter()
        .map(|s| view(app, &authority(headers), s))
        .collect();
    Ok(Json(ShareList { shares }).into_response())
}

async fn revoke(
    app: &AppState,
    actor: String,
    user: String,
    port: u16,
    share: String,
) -> ApiResult<Response> {
    let m = manager(app)?;
    blocking(move || m.revoke_share(&actor, &user, port, &share)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Share a tenant's preview port
///
/// A signed link to `http://<port>-<user>.<preview domain>/` that lets whoever holds it see that port until it expires or is revoked. Audited.
#[utoipa::path(
    post,
    path = "/api/users/{user}/previews/{port}/shares",
    operation_id = "createShare",
    tag = "previews",
    params(PreviewPath),
    request_body = ShareCreate,
    responses(
        (status = 201, description = "The new link, with its URL", body = ShareView),
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
pub(super) async fn create_share(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiPath((user, port)): ApiPath<(String, u16)>,
    ApiJson(body): ApiJson<ShareCreate>,
) -> ApiResult<Response> {
    create(&app, &headers, ADMIN_ACTOR.into(), user, port, body).await
}

/// A tenant's share links of one preview port
#[utoipa::path(
    get,
    path = "/api/users/{user}/previews/{port}/shares",
    operation_id = "listShares",
    tag = "previews",
    params(PreviewPath),
    responses(
        (status = 200, description = "The links, oldest first, revoked and expired ones included", body = ShareList),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn list_shares(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiPath((user, port)): ApiPath<(String, u16)>,
) -> ApiResult<Response> {
    list(&app, &headers, user, port).await
}

/// Revoke a share link
///
/// It stops working at once, cookies it already set included. Audited.
#[utoipa::path(
    delete,
    path = "/api/users/{user}/previews/{port}/shares/{share}",
    operation_id = "revokeShare",
    tag = "previews",
    params(SharePath),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn revoke_share(
    State(app): State<AppState>,
    ApiPath((user, port, share)): ApiPath<(String, u16, String)>,
) -> ApiResult<Response> {
    revoke(&app, ADMIN_ACTOR.into(), user, port, share).await
}

/// Share one of your preview ports
///
/// `POST /api/users/{user}/previews/{port}/shares` for the logged-in user (session cookie, or JWT bearer).
#[utoipa::path(
    post,
    path = "/api/me/previews/{port}/shares",
    operation_id = "createMyShare",
    security(("userSession" = [])),
    tag = "previews",
    params(MyPreviewPath),
    request_body = ShareCreate,
    responses(
        (status = 201, description = "The new link, with its URL", body = ShareView),
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
pub(super) async fn create_my_share(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiPath(port): ApiPath<u16>,
    ApiQuery(p): ApiQuery<MeParams>,
    ApiJson(body): ApiJson<ShareCreate>,
) -> ApiResult<Response> {
    let me = my_user(&app, &headers, p.user.as_deref())?;
    create(&app, &headers, me.clone(), me, port, body).await
}

/// Your share links of one preview port
#[utoipa::path(
    get,
    path = "/api/me/previews/{port}/shares",
    operation_id = "listMyShares",
    security(("userSession" = [])),
    tag = "previews",
    params(MyPreviewPath),
    responses(
        (status = 200, description = "The links, oldest first, revoked and expired ones included", body = ShareList),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn list_my_shares(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiPath(port): ApiPath<u16>,
    ApiQuery(p): ApiQuery<MeParams>,
) -> ApiResult<Response> {
    let me = my_user(&app, &headers, p.user.as_deref())?;
    list(&app, &headers, me, port).await
}

/// Revoke one of your share links
#[utoipa::path(
    delete,
    path = "/api/me/previews/{port}/shares/{share}",
    operation_id = "revokeMyShare",
    security(("userSession" = [])),
    tag = "previews",
    params(MySharePath),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn revoke_my_share(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiPath((port, share)): ApiPath<(u16, String)>,
    ApiQuery(p): ApiQuery<MeParams>,
) -> ApiResult<Response> {
    let me = my_user(&app, &headers, p.user.as_deref())?;
    revoke(&app, me.clone(), me, port, share).await
}
