//! What this node tells the load balancer in front of a pool of nodes
//! (docs/scale-out.md): its load and state over HAProxy's agent-check
//! protocol on a port of its own, `GET`/`PUT /api/node` for the operator,
//! and an `X-Warren-Node` header naming the node on every response. The
//! figures and the reply are the domain's ([`warren_domain::node`]); the
//! balancer does the placing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::HeaderName;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use utoipa::ToSchema;
use warren_domain::node::{Gauge, NodeLoad, NodeSettings, NodeState};

use super::api::{ApiError, ApiJson, ADMIN_ACTOR};
use super::api_responses::{
    BadRequest, Forbidden, InternalError, Unauthorized, Unavailable, UnsupportedMediaType,
};
use super::state::AppState;

/// The node's settings from the command line, and where its agent listens.
#[derive(Debug, Clone, Default)]
pub struct NodeConfig {
    pub settings: NodeSettings,
    /// `--agent-listen`: HAProxy's agent-check port; `None`: no agent.
    pub agent_listen: Option<SocketAddr>,
}

/// The header naming the node that answered (`--node-id`).
pub const NODE_HEADER: HeaderName = HeaderName::from_static("x-warren-node");

/// The `/api/node` routes, behind the admin token like the rest of `/api`.
pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/api/node", get(show_node).put(set_node))
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            super::api::require_admin,
        ))
}

/// Adds `X-Warren-Node` when the node has an id.
pub async fn node_header(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    if let Some(value) = app.node_header() {
        res.headers_mut().insert(NODE_HEADER, value.clone());
    }
    res
}

/// `active` (takes new users while it has room) or `draining` (takes
/// none; its users keep reaching it until moved).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NodeStateWire {
    Active,
    Draining,
}

impl From<NodeState> for NodeStateWire {
    fn from(s: NodeState) -> Self {
        match s {
            NodeState::Active => NodeStateWire::Active,
            NodeState::Draining => NodeStateWire::Draining,
        }
    }
}

impl From<NodeStateWire> for NodeState {
    fn from(s: NodeStateWire) -> Self {
        match s {
            NodeStateWire::Active => NodeState::Active,
            NodeStateWire::Draining => NodeState::Draining,
        }
    }
}

/// A figure and its bound.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GaugeView {
    pub used: u64,
    /// The bound; `null`: none.
    pub max: Option<u64>,
}

impl From<Gauge> for GaugeView {
    fn from(Gauge { used, max }: Gauge) -> Self {
        GaugeView { used, max }
    }
}

/// This node: its state, whether it takes new users, and its load.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeView {
    /// `--node-id`; `null` when not set.
    pub id: Option<String>,
    /// As the operator set it.
    pub state: NodeStateWire,
    /// Whether the node takes new users (active and not full).
    pub accepting: bool,
    /// Why it does not: `draining`, `users_full`, `sandboxes_full` or `memory_full`.
    pub closed_reason: Option<String>,
    /// The weight the agent advertises, 1 to 100 (when accepting).
    pub weight_percent: u32,
    /// The agent's reply now, as HAProxy reads it.
    pub agent_reply: String,
    /// Tenants with a home here, against `--max-users`.
    pub users: GaugeView,
    pub sandboxes: GaugeView,
    pub terminals: GaugeView,
    /// Host memory in use, bytes.
    pub memory: Option<GaugeView>,
}

impl NodeView {
    fn new(id: Option<String>, state: NodeState, load: NodeLoad) -> NodeView {
        let closed = load.closed(state);
        NodeView {
            id,
            state: state.into(),
            accepting: closed.is_none(),
            closed_reason: closed.map(|c| c.as_str().to_string()),
            weight_percent: load.weight_percent(),
            agent_reply: load.agent_reply(state).trim_end().to_string(),
            users: load.users.into(),
            sandboxes: load.sandboxes.into(),
            terminals: load.terminals.into(),
            memory: load.memory.map(Into::into),
        }
    }
}

/// The operator's change of state.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeStateUpdate {
    pub state: NodeStateWire,
}

/// Measures the load (the tenant count is read off the async threads).
async fn measure(app: &AppState) -> Result<NodeLoad, ApiError> {
    let users = match app.manager() {
        Some(m) => {
            let m = Arc::clone(m);
            tokio::task::spawn_blocking(move || m.list().map(|u| u.len()))
                .await
                .map_err(|e| ApiError::from(warren_domain::manage::ManageError::from(e)))??
        }
        None => 0,
    };
    Ok(app.node().measure(users, app.registry()))
}

/// This node's state and load
///
/// What the agent-check port tells the load balancer, with the figures it is made of (docs/scale-out.md).
#[utoipa::path(
    get,
    path = "/api/node",
    operation_id = "getNode",
    tag = "server",
    responses(
        (status = 200, description = "The node", body = NodeView),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn show_node(State(app): State<AppState>) -> Result<Response, ApiError> {
    let load = measure(&app).await?;
    let node = app.node();
    Ok(Json(NodeView::new(
        node.settings().id.clone(),
        node.state(),
        load,
    ))
    .into_response())
}

/// Drain this node, or make it active again
///
/// A draining node takes no new users: its agent says `drain`, and the balancer keeps routing the users whose home is here until they are moved (docs/scale-out.md#draining-a-node).
#[utoipa::path(
    put,
    path = "/api/node",
    operation_id = "setNode",
    tag = "server",
    request_body = NodeStateUpdate,
    responses(
        (status = 200, description = "The node, in its new state", body = NodeView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn set_node(
    State(app): State<AppState>,
    ApiJson(body): ApiJson<NodeStateUpdate>,
) -> Result<Response, ApiError> {
    let (before, after) = (app.node().state(), NodeState::from(body.state));
    let node = Arc::clone(app.node());
    tokio::task::spawn_blocking(move || node.set_state(after))
        .await
        .map_err(|e| ApiError::from(warren_domain::manage::ManageError::from(e)))?
        .map_err(|e| {
            tracing::error!("cannot keep the node's state: {e}");
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "the node's state could not be written; it is unchanged",
            )
        })?;
    if before != after {
        tracing::info!("node state: {} -> {}", before.as_str(), after.as_str());
        if let Some(m) = app.manager() {
            let m = Arc::clone(m);
            let detail = serde_json::json!({"from": before.as_str(), "to": after.as_str()});
            tokio::task::spawn_blocking(move || {
                m.audit(ADMIN_ACTOR, "node.state", None, "ok", detail)
            });
        }
    }
    show_node(State(app)).await
}

/// How long one agent connection may take: HAProxy reads one line.
const AGENT_TIMEOUT: Duration = Duration::from_secs(2);

/// Agent checks answered at once: one per HAProxy is the usual load;
/// connections past this are closed unanswered (a check that fails to
/// connect changes nothing in HAProxy) rather than each counting users.
const AGENT_CONCURRENCY: usize = 16;

/// Answers HAProxy's agent checks on `listener` until `stop`: each
/// connection gets one line (`up ready 63%`, `drain`) and is closed.
pub async fn serve_agent(listener: TcpListener, app: AppState, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(AGENT_CONCURRENCY));
    loop {
        let conn = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            conn = listener.accept() => conn,
        };
        let Ok((mut stream, _)) = conn else { continue };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(AGENT_TIMEOUT, async {
                let reply = match measure(&app).await {
                    Ok(load) => load.agent_reply(app.node().state()),
                    // Not knowing its load, the node takes no new users.
                    Err(_) => "drain\n".to_string(),
                };
                stream.write_all(reply.as_bytes()).await?;
                stream.shutdown().await?;
                // Read what the checker sent (an `agent-send` string) so
                // the close is a FIN, not a reset that could drop the reply.
                let mut sink = [0u8; 256];
                while stream.read(&mut sink).await? > 0 {}
                Ok::<_, std::io::Error>(())
            })
            .await;
        });
    }
}
