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
pub mod assets;
pub mod auth;
pub mod body_deadline;
pub mod capacity;
pub mod connections;
pub mod host;
pub mod http;
pub mod jwt;
pub mod metrics;
pub mod origin;
pub mod protocol;
pub mod relay;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use warren_runtime::host::TierChoice;

use warren_domain::backend::Backend;
use warren_domain::counters::ServiceCounters;
use warren_domain::echo::EchoBackend;
use warren_domain::exit::{ExitCause, TerminalExit};
use warren_domain::sessions::{self, Limits, Registry};
use warren_domain::user::UserId;

use crate::cli::args::{self, BackendKind, ServeArgs, TokenArgs};
pub use auth::{Auth, AuthMode};
pub use connections::ConnLimits;
pub use http::{app, AppState, WebPolicy};
pub use metrics::Metrics;
pub use relay::PingPolicy;

/// Mints an HS256 token for `user`, valid for `ttl` (what
/// `warren token --user alice` prints).
pub fn mint_token(secret: &[u8], user: &str, ttl: Duration) -> String {
    jwt::mint(secret, user, ttl)
}

/// Everything the server needs, checked (see [`ServeArgs::to_config`]).
#[derive(Debug)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub auth: Auth,
    pub allowed_origins: Vec<String>,
    pub limits: Limits,
    pub shutdown_timeout: Duration,
    /// The management API; `None` serves terminals only.
    pub management: Option<Management>,
    /// Names, connection caps and timeouts of the web layer.
    pub web: WebSettings,
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
    pub import_limits: warren_runtime::archive::Limits,
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
                .with_metrics(Arc::clone(&metrics) as Arc<dyn ServiceCounters>);
                let manager = Arc::new(manager);
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
        Ok(Server {
            state: AppState::with_management(registry, config.auth, web, management, metrics),
            listener,
            limiter: connections::Limiter::new(config.web.connections),
            local_addr,
            shutdown: ShutdownHandle(Arc::new(watch::channel(false).0)),
            shutdown_timeout: config.shutdown_timeout,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
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
            limiter,
            shutdown,
            shutdown_timeout,
            ..
        } = self;
        let mut stop = shutdown.0.subscribe();
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
        state.registry().shutdown(shutdown_timeout).await;
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

/// `warren serve`: returns the process exit code.
pub fn main(args: ServeArgs) -> i32 {
    init_tracing();
    let mut config = match args.to_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("warren serve: {e}");
            return 2;
        }
    };
    fit_connections_to_fds(&mut config.web.connections);
    let admin_file = config
        .management
        .as_ref()
        .and_then(|m| m.admin_token_file.clone());
    // Decided once, here: the probe forks, which must happen before the
    // async runtime starts its threads.
    let tier = match args.backend {
        BackendKind::Echo => None,
        BackendKind::Sandbox => match args.isolation.choose() {
            Ok(choice) => Some(choice),
            Err(e) => {
                eprintln!("warren serve: {e}\n  hint: {}", e.hint());
                return 2;
            }
        },
    };
    if let Some(t) = &tier {
        // With one uid for the server and every tenant, nothing of the
        // server's may lie where every sandbox of the landlock tier reads.
        let settings = args.store.settings();
        let mut paths = vec![
            ("the state directory", settings.state_dir.as_path()),
            ("the workspace root", settings.workspace_root.as_path()),
        ];
        if let Some(secret) = &args.jwt_secret_file {
            paths.push(("the JWT secret", secret.as_path()));
        }
        let range = warren_runtime::idmap::IdRange::of_current_process("/proc".as_ref());
        // Every sandbox would be refused: say so now, not at each login.
        if let Some(e) = range.refusal() {
            eprintln!("warren serve: {e}");
            return 2;
        }
        if let Err(e) = warren_domain::sandbox::check_shared_host_paths(t.isolation, range, &paths)
        {
            eprintln!("warren serve: {e}");
            return 2;
        }
        tracing::info!(tier = %t.isolation, "isolation {}: {}", t.isolation, t.why);
        if let Some(w) = &t.warning {
            tracing::warn!(tier = %t.isolation, "{w}");
        }
    }
    let backend: Arc<dyn Backend> = match (args.backend, &tier) {
        (BackendKind::Sandbox, Some(t)) => Arc::new(
            warren_domain::sandboxes::SandboxBackend::new(
                args.store.settings(),
                args.limits.limits(),
                args.limits.require_limits,
            )
            .with_isolation(t.isolation),
        ),
        _ => Arc::new(EchoBackend::new()),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("warren serve: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let code = runtime.block_on(async move {
        let server = match Server::bind(config, backend).await {
            Ok(server) => server,
            Err(e) => {
                eprintln!("warren serve: {e}");
                return 1;
            }
        };
        print_banner(&server, &args, admin_file.as_deref(), tier.as_ref());
        let handle = server.shutdown_handle();
        tokio::spawn(async move {
            let Ok(mut signals) = Signals::new() else {
                return;
            };
            signals.next().await;
            // Shut down first: with stderr gone (a closed pipe), printing
            // must not be what stops us from stopping.
            handle.shutdown();
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "warren serve: shutting down (signal again to exit at once)"
            );
            signals.next().await;
            std::process::exit(130);
        });
        match server.run().await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("warren serve: {e}");
                1
            }
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

/// Raises the soft open-file limit to the hard one (issue 10 §4: a unit's
/// default 1,024 broke a server at 162 terminals), and keeps the
/// connection cap within half of it, the other half for terminals.
fn fit_connections_to_fds(limits: &mut ConnLimits) {
    let fds = match capacity::raise_nofile() {
        Ok(fds) => fds,
        Err(e) => {
            tracing::warn!("cannot raise the open-file limit: {e}");
            return;
        }
    };
    tracing::info!(
        soft = fds.soft,
        hard = fds.hard,
        "open-file limit {} (about {} terminals)",
        fds.soft,
        fds.terminals()
    );
    let room = usize::try_from(fds.soft / 2).unwrap_or(usize::MAX).max(1);
    if limits.max > room {
        tracing::warn!(
            "--max-connections {} lowered to {room}: half the open-file limit {} \
             (raise LimitNOFILE= or `ulimit -Hn`)",
            limits.max,
            fds.soft
        );
        limits.max = room;
        limits.max_per_address = limits.max_per_address.min(room);
    }
}

/// Printed to the operator's terminal, never to the log (it holds the
/// login token), the way Jupyter does.
fn print_banner(
    server: &Server,
    args: &ServeArgs,
    admin_file: Option<&std::path::Path>,
    tier: Option<&TierChoice>,
) {
    eprintln!(
        "warren serve: listening on {} (auth: {}, backend: {})",
        server.base_url(),
        value_name(args.auth),
        value_name(args.backend)
    );
    if !server.local_addr().ip().is_loopback() && args.public_urls.iter().all(|u| u.is_empty()) {
        eprintln!(
            "  note: answers to IP addresses and localhost only (DNS rebinding); \
             to reach it by a name, add --public-url http(s)://NAME"
        );
    }
    if args.backend == BackendKind::Echo {
        eprintln!("  note: the echo backend runs shells as this user with NO isolation (development only)");
    }
    if let Some(t) = tier {
        eprintln!("  isolation: {} ({})", t.isolation, t.why);
        if let Some(w) = &t.warning {
            eprintln!("  warning: {w}");
        }
    }
    match args.auth {
        AuthMode::Token => {
            if let Some(url) = server.login_url() {
                eprintln!(
                    "  To log in, open this URL (add &user=NAME, or pick a name on the page):"
                );
                eprintln!("    {url}");
            }
        }
        AuthMode::Jwt => eprintln!(
            "  To log in, open {}/login?token=JWT (mint one with `warren token --user NAME`)",
            server.base_url()
        ),
        AuthMode::None => eprintln!(
            "  No authentication (loopback only): open {}/ (or /?user=NAME)",
            server.base_url()
        ),
    }
    if let Some(path) = admin_file {
        eprintln!(
            "  Management API: {}/api/users with `Authorization: Bearer $(cat {})`",
            server.base_url(),
            path.display()
        );
    }
}

/// How a flag value is spelled on the command line.
fn value_name(v: impl clap::ValueEnum) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

/// SIGTERM and SIGINT, as one stream.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WARREN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// `warren token`: prints a token; returns the process exit code.
pub fn token_main(args: TokenArgs) -> i32 {
    let secret = match args::read_secret_file(&args.jwt_secret_file) {
        Ok(secret) => secret,
        Err(e) => {
            eprintln!("warren token: {e}");
            return 2;
        }
    };
    if let Err(e) = UserId::parse(&args.user) {
        eprintln!("warren token: invalid user id: {e}");
        return 2;
    }
    println!("{}", mint_token(&secret, &args.user, args.ttl));
    0
}
