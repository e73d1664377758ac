//! The web layer of `warren serve`: HTTP and WebSocket transport.
//!
//! A browser logs in ([`auth`]), loads the page ([`assets`]) and opens a
//! WebSocket ([`http`], [`relay`]) speaking a small versioned protocol
//! ([`protocol`], docs/protocol.md) whose types are converted from the
//! domain's. The session registry, terminals, PTYs and backends live in
//! `warren-domain` (`sessions`, `terminal`, `pty`, `backend`, `echo`); the
//! management API ([`api`]) calls the domain's `manage::Manager`.
//!
//! docs/serve.md is the operator's guide.

pub mod api;
pub mod api_doc;
pub mod api_previews;
pub mod api_responses;
pub mod api_services;
pub mod api_wire;
pub mod assets;
pub mod auth;
pub mod body_deadline;
pub mod capacity;
pub mod connections;
pub mod error;
pub mod host;
pub mod http;
pub mod jwt;
pub mod metrics;
pub mod node;
pub mod origin;
pub mod preview;
pub mod protocol;
pub mod relay;
pub mod services_wire;
pub mod state;
pub mod ws;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use warren_domain::backend::Backend;
use warren_domain::counters::ServiceCounters;
use warren_domain::exit::{ExitCause, TerminalExit};
use warren_domain::sessions::{self, Registry, SessionLimits};
use warren_domain::user::UserId;

pub use auth::{Auth, AuthMode};
pub use connections::ConnLimits;
pub use http::app;
pub use metrics::Metrics;
pub use node::NodeConfig;
pub use state::{AppState, PingPolicy, WebPolicy};

/// Mints an HS256 token for `user`, valid for `ttl` (what
/// `warren token --user alice` prints).
pub fn mint_token(secret: &[u8], user: &str, ttl: Duration) -> String {
    jwt::mint(secret, user, ttl)
}

/// Everything the server needs, checked (the command line builds it:
/// `cli::args::ServeArgs::to_config`).
#[derive(Debug)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub auth: Auth,
    pub allowed_origins: Vec<String>,
    pub limits: SessionLimits,
    pub shutdown_timeout: Duration,
    /// The management API; `None` serves terminals only.
    pub management: Option<Management>,
    /// Names, connection caps and timeouts of the web layer.
    pub web: WebSettings,
    /// This node in a pool behind a load balancer (docs/scale-out.md).
    pub node: NodeConfig,
}

/// The web layer's defences against foreign names and idle or dead peers
/// (docs/serve.md §Host check, §Connections).
#[derive(Debug, Clone, Default)]
pub struct WebSettings {
    /// `http(s)://host[:port]` as users reach the server (behind a proxy):
    /// its host is accepted in `Host`, its origin in `Origin`.
    pub public_urls: Vec<String>,
    pub connections: ConnLimits,
    pub ping: PingPolicy,
    /// Where preview URLs live (`--preview-domain`, docs/previews.md).
    pub previews: preview::PreviewSettings,
}

/// What the management API needs.
#[derive(Debug, Clone)]
pub struct Management {
    pub settings: warren_domain::sandbox::Settings,
    /// The server's cgroup limits (tenants' overrides apply on top).
    pub defaults: warren_runtime::cgroups::Limits,
    /// The bearer token `/api` and `/metrics` require.
    pub admin_token: String,
    /// Where the token was read from (for the banner).
    pub admin_token_file: Option<std::path::PathBuf>,
    /// What one import may hold.
    pub import_limits: warren_runtime::archive::ArchiveLimits,
    /// The server's disk limits on homes (tenants' overrides on top).
    pub disk: warren_runtime::disk::DiskLimits,
    /// Named services: keep-alive and log size (docs/services.md).
    pub services: warren_domain::manage::ServiceSettings,
}

/// Tells the audit log and the metrics about sessions.
struct SessionAudit {
    manager: Arc<warren_domain::manage::Manager>,
    metrics: Arc<metrics::Metrics>,
}

impl SessionAudit {
    fn audit(&self, action: &'static str, user: &UserId, detail: serde_json::Value) {
        let m = Arc::clone(&self.manager);
        let user = user.as_str().to_string();
        tokio::task::spawn_blocking(move || m.audit(&user, action, Some(&user), "ok", detail));
    }
}

impl sessions::SessionObserver for SessionAudit {
    fn sandbox_started(&self, _user: &UserId, took: Duration) {
        self.metrics.observe_spawn("sandbox", took);
    }

    fn terminal_opened(&self, user: &UserId, id: &str, took: Duration) {
        self.metrics.observe_spawn("terminal", took);
        self.audit(
            "session.start",
            user,
            serde_json::json!({"terminal": id, "took_ms": took.as_millis() as u64}),
        );
    }

    fn terminal_ended(&self, user: &UserId, id: &str, info: &TerminalExit) {
        if info.reason == ExitCause::MemoryLimit {
            self.metrics.oom_kill();
        }
        self.audit(
            "session.end",
            user,
            serde_json::json!({"terminal": id, "reason": info.reason.as_str(), "code": info.code, "signal": info.signal}),
        );
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Origin(#[from] origin::OriginError),
    #[error(transparent)]
    Host(#[from] host::HostError),
    #[error("serving: {0}")]
    Serve(std::io::Error),
    #[error("management API: {0}")]
    Management(String),
}

/// Stops a running [`Server`]; cheap to clone.
#[derive(Clone, Debug)]
pub struct ShutdownHandle(Arc<watch::Sender<bool>>);

impl ShutdownHandle {
    pub fn shutdown(&self) {
        self.0.send_replace(true);
    }
}

/// A bound server: `bind`, then `run` until [`ShutdownHandle::shutdown`].
pub struct Server {
    state: AppState,
    listener: TcpListener,
    /// HAProxy's agent-check port (`--agent-listen`).
    agent: Option<TcpListener>,
    limiter: Arc<connections::Limiter>,
    local_addr: SocketAddr,
    shutdown: ShutdownHandle,
    shutdown_timeout: Duration,
}

impl Server {
    /// Binds the listener and builds the state (inside a tokio runtime).
    pub async fn bind(
        config: ServeConfig,
        backend: Arc<dyn Backend>,
    ) -> Result<Server, ServeError> {
        // The public URLs are this server's own origins too.
        let mut allowed = config.allowed_origins.clone();
        allowed.extend(config.web.public_urls.iter().cloned());
        let origins = origin::OriginPolicy::new(&allowed)?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
        let agent = match config.node.agent_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServeError::Bind { addr, source })?,
            ),
            None => None,
        };
        let hosts = host::HostPolicy::new(local_addr, &config.web.public_urls)?;
        let web = WebPolicy {
            hosts,
            origins,
            ping: config.web.ping,
        };
        let registry = Registry::new(backend, config.limits);
        let metrics = Arc::new(metrics::Metrics::new());
        let management = match config.management {
            Some(m) => {
                let manager = warren_domain::manage::Manager::new(
                    m.settings,
                    m.defaults,
                    warren_domain::manage::Runner::Registry(Arc::clone(&registry)),
                )
                .map_err(|e| ServeError::Management(e.to_string()))?
                .with_import_limits(m.import_limits)
                .with_disk(m.disk)
                .with_services(m.services)
                .with_metrics(Arc::clone(&metrics) as Arc<dyn ServiceCounters>);
                let manager = Arc::new(manager);
                // The enabled services of every tenant, as before the restart.
                manager.start_services().await;
                // Audit entries held by a full disk are retried even when
                // nothing new is audited.
                tokio::spawn(warren_domain::manage::Manager::retry_audit_periodically(
                    Arc::downgrade(&manager),
                ));
                registry.set_observer(Arc::new(SessionAudit {
                    manager: Arc::clone(&manager),
                    metrics: Arc::clone(&metrics),
                }));
                Some((manager, m.admin_token))
            }
            None => None,
        };
        let previews = preview::Previews::new(
            config.web.previews.clone(),
            &config.auth,
            management.as_ref().map(|(_, t)| t.as_str()),
            &config.web.public_urls,
        );
        let state = AppState::with_management(registry, config.auth, web, management, metrics);
        state.set_previews(previews);
        state.set_node(config.node.settings);
        Ok(Server {
            state,
            listener,
            agent,
            limiter: connections::Limiter::new(config.web.connections),
            local_addr,
            shutdown: ShutdownHandle(Arc::new(watch::channel(false).0)),
            shutdown_timeout: config.shutdown_timeout,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the agent-check port listens, if it does.
    pub fn agent_addr(&self) -> Option<SocketAddr> {
        self.agent.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// The base URL to print (a wildcard address shown as loopback).
    pub fn base_url(&self) -> String {
        let ip = match self.local_addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.local_addr.port()))
    }

    /// The login URL of `--auth token` (it carries the secret token).
    pub fn login_url(&self) -> Option<String> {
        let token = self.state.auth().login_token()?;
        Some(format!("{}/login?token={token}", self.base_url()))
    }

    /// Serves until shut down, then: stop accepting, end every terminal
    /// (clients get an `exit` frame with reason `server_shutdown`), stop
    /// every sandbox, and return, all within the shutdown timeout.
    pub async fn run(self) -> Result<(), ServeError> {
        let Server {
            state,
            listener,
            agent,
            limiter,
            shutdown,
            shutdown_timeout,
            ..
        } = self;
        let mut stop = shutdown.0.subscribe();
        if let Some(agent) = agent {
            tokio::spawn(node::serve_agent(agent, state.clone(), stop.clone()));
        }
        let router = app(state.clone());
        let mut serving = tokio::spawn(connections::serve(listener, router, limiter, stop.clone()));
        // The accept loop ends only on shutdown, but look at the signal
        // first anyway: both become ready together.
        let ended = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => None,
            result = &mut serving => Some(result),
        };
        if let Some(Err(e)) = ended {
            if !*stop.borrow() {
                return Err(ServeError::Serve(std::io::Error::other(e)));
            }
        }
        let accept_loop_done = serving.is_finished();
        tracing::info!("shutting down");
        let deadline = tokio::time::Instant::now() + shutdown_timeout;
        // Services first, so none restarts into a stopping sandbox; they
        // stay enabled and start again with the next server.
        if let Some(m) = state.manager() {
            let _ = tokio::time::timeout_at(deadline, m.stop_services()).await;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        state.registry().shutdown(left).await;
        let mut connections = state.connections();
        let _ = tokio::time::timeout_at(deadline, connections.wait_for(|n| *n == 0)).await;
        if !accept_loop_done
            && tokio::time::timeout_at(deadline, &mut serving)
                .await
                .is_err()
        {
            tracing::warn!("connections still open after {shutdown_timeout:?}; closing them");
            serving.abort();
        }
        Ok(())
    }
}
