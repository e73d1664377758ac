//! What every handler shares: the session registry, the management
//! service, the web layer's policies and the metrics. Its own module so
//! that handlers, middleware and the relay import it without importing the
//! router (which imports them).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::HeaderValue;
use warren_domain::node::{Node, NodeSettings};

use tokio::sync::watch;
use warren_domain::manage::Manager;
use warren_domain::sessions::Registry;

use super::auth::Auth;
use super::host::HostPolicy;
use super::metrics::Metrics;
use super::origin::OriginPolicy;

/// WebSocket pings: a client silent for `interval` is pinged; one silent
/// for `interval + timeout` is taken for dead and its connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingPolicy {
    pub interval: Duration,
    pub timeout: Duration,
}

impl Default for PingPolicy {
    fn default() -> Self {
        PingPolicy {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<AppInner>,
}

/// The web layer's guards: which `Host`s and `Origin`s are this server's,
/// and how a WebSocket's peer is checked for life.
#[derive(Debug, Clone)]
pub struct WebPolicy {
    pub hosts: HostPolicy,
    pub origins: OriginPolicy,
    pub ping: PingPolicy,
}

impl WebPolicy {
    /// A loopback server's policy with the default pings.
    pub fn loopback(origins: OriginPolicy) -> WebPolicy {
        WebPolicy {
            hosts: HostPolicy::loopback(),
            origins,
            ping: PingPolicy::default(),
        }
    }
}

struct AppInner {
    registry: Arc<Registry>,
    auth: Auth,
    web: WebPolicy,
    /// The management API (absent: `/api` answers 503).
    manager: Option<Arc<Manager>>,
    /// The bearer token `/api` and `/metrics` require.
    admin_token: Option<String>,
    metrics: Arc<Metrics>,
    /// Open WebSocket connections (shutdown waits for them to say goodbye).
    connections: watch::Sender<usize>,
    /// This node in a pool (set once at bind; a default active node
    /// without an id otherwise).
    node: OnceLock<NodeHandle>,
    /// Preview URLs (set once at bind; the defaults otherwise).
    previews: OnceLock<Arc<super::preview::settings::Previews>>,
}

/// The node and its `X-Warren-Node` header value.
struct NodeHandle {
    node: Arc<Node>,
    header: Option<HeaderValue>,
}

impl AppState {
    pub fn new(registry: Arc<Registry>, auth: Auth, origins: OriginPolicy) -> AppState {
        AppState::with_management(
            registry,
            auth,
            WebPolicy::loopback(origins),
            None,
            Arc::new(Metrics::new()),
        )
    }

    /// With the management API (`manager` and the admin token).
    pub fn with_management(
        registry: Arc<Registry>,
        auth: Auth,
        web: WebPolicy,
        management: Option<(Arc<Manager>, String)>,
        metrics: Arc<Metrics>,
    ) -> AppState {
        let (manager, admin_token) = match management {
            Some((m, t)) => (Some(m), Some(t)),
            None => (None, None),
        };
        AppState {
            inner: Arc::new(AppInner {
                registry,
                auth,
                web,
                manager,
                admin_token,
                metrics,
                connections: watch::channel(0).0,
                node: OnceLock::new(),
                previews: OnceLock::new(),
            }),
        }
    }

    /// Sets the preview layer's settings and keys; only the first call
    /// counts.
    pub fn set_previews(&self, previews: super::preview::settings::Previews) {
        let _ = self.inner.previews.set(Arc::new(previews));
    }

    /// The preview layer (docs/previews.md).
    pub fn previews(&self) -> &Arc<super::preview::settings::Previews> {
        self.inner.previews.get_or_init(|| {
            Arc::new(super::preview::settings::Previews::new(
                Default::default(),
                &self.inner.auth,
                self.inner.admin_token.as_deref(),
                &[],
            ))
        })
    }

    /// Audits a preview access decision (when there is an audit log).
    pub fn audit_preview(
        &self,
        actor: &warren_domain::user::UserId,
        action: &'static str,
        target: &super::preview::settings::Target,
        outcome: &'static str,
    ) {
        let Some(m) = self.manager() else {
            return;
        };
        let m = Arc::clone(m);
        let (actor, owner) = (actor.as_str().to_string(), target.user.as_str().to_string());
        let detail = serde_json::json!({"port": target.port, "host": target.name});
        tokio::task::spawn_blocking(move || m.audit(&actor, action, Some(&owner), outcome, detail));
    }

    /// Sets this node's settings; only the first call counts.
    pub fn set_node(&self, settings: NodeSettings) {
        let header = settings
            .id
            .as_deref()
            .and_then(|id| HeaderValue::from_str(id).ok());
        let _ = self.inner.node.set(NodeHandle {
            node: Arc::new(Node::new(settings)),
            header,
        });
    }

    fn node_handle(&self) -> &NodeHandle {
        self.inner.node.get_or_init(|| NodeHandle {
            node: Arc::new(Node::new(NodeSettings::default())),
            header: None,
        })
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node_handle().node
    }

    /// The `X-Warren-Node` value, when the node has an id.
    pub fn node_header(&self) -> Option<&HeaderValue> {
        self.node_handle().header.as_ref()
    }

    pub fn manager(&self) -> Option<&Arc<Manager>> {
        self.inner.manager.as_ref()
    }

    pub fn admin_token(&self) -> Option<&str> {
        self.inner.admin_token.as_deref()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    pub fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    pub fn hosts(&self) -> &HostPolicy {
        &self.inner.web.hosts
    }

    pub fn origins(&self) -> &OriginPolicy {
        &self.inner.web.origins
    }

    pub fn ping(&self) -> PingPolicy {
        self.inner.web.ping
    }

    /// Writes a refused credential to the audit log (off the async
    /// threads); nothing without the management service.
    pub fn audit_auth_failed(&self, path: &str, why: String) {
        if let Some(m) = self.manager() {
            let m = Arc::clone(m);
            let path = path.to_owned();
            tokio::task::spawn_blocking(move || m.auth_failed(&path, &why));
        }
    }

    /// Counts one open connection until dropped.
    pub fn connection_guard(&self) -> ConnectionGuard {
        self.inner.connections.send_modify(|n| *n += 1);
        ConnectionGuard(self.clone())
    }

    /// Watches the number of open WebSocket connections.
    pub fn connections(&self) -> watch::Receiver<usize> {
        self.inner.connections.subscribe()
    }
}

pub struct ConnectionGuard(AppState);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0
            .inner
            .connections
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}
