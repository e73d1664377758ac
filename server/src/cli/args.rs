//! Command-line arguments of `warren serve` and `warren token`, and the
//! checks that turn them into a [`ServeConfig`]. Every flag is also an
//! environment variable `WARREN_*`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::web::auth::{Auth, AuthMode};
use crate::web::connections::ConnLimits;
use crate::web::host::{HostError, HostPolicy};
use crate::web::origin::{OriginError, OriginPolicy};
use crate::web::state::PingPolicy;
use crate::web::{NodeConfig, ServeConfig, WebSettings};
use warren_domain::node::NodeSettings;
use warren_domain::sessions::SessionLimits;

/// warren's default port.
pub const DEFAULT_PORT: u16 = 8080;
/// Shortest accepted JWT secret, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// What runs the shells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// Each user's shells in their own warren sandbox (the product).
    Sandbox,
    /// A plain shell as the server's own user, with NO isolation: for
    /// development and tests; refused off loopback.
    Echo,
}

// The doc comments are the --help text, in clap's notation (`<dir>`,
// `[:port]`), not Markdown.
#[allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on. Anything but loopback needs real authentication.
    #[arg(long, env = "WARREN_LISTEN", default_value_t = SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT)))]
    pub listen: SocketAddr,
    /// How users authenticate.
    #[arg(long, env = "WARREN_AUTH", value_enum, default_value_t = AuthMode::Token)]
    pub auth: AuthMode,
    /// File holding the HS256 secret for --auth jwt (at least 32 bytes).
    #[arg(long, env = "WARREN_JWT_SECRET_FILE", value_name = "FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// Another origin (scheme://host[:port]) whose pages may open terminals;
    /// repeat, or separate with commas. The server's own origin is always allowed.
    #[arg(
        long = "allowed-origin",
        env = "WARREN_ALLOWED_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
    /// The URL users reach this server at, `http(s)://host[:port]` (behind
    /// a proxy, or by a name): its host is accepted in the `Host` header
    /// (besides localhost and IP addresses) and its origin may open
    /// terminals. Repeat, or separate with commas.
    #[arg(
        long = "public-url",
        env = "WARREN_PUBLIC_URL",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub public_urls: Vec<String>,
    /// Preview URLs are `http://<port>-<user>.<DOMAIN>/`: a wildcard domain
    /// (behind a TLS proxy) that is not the terminal's; `localhost` works
    /// on one machine (docs/previews.md).
    #[arg(
        long,
        env = "WARREN_PREVIEW_DOMAIN",
        value_name = "DOMAIN",
        default_value = "localhost"
    )]
    pub preview_domain: String,
    /// Most open connections (HTTP and WebSocket); above it clients get 503.
    #[arg(long, env = "WARREN_MAX_CONNECTIONS", default_value_t = ConnLimits::default().max)]
    pub max_connections: usize,
    /// Most open connections from one client address (IPv6: one /64); above
    /// it 429. Behind a proxy every client has the proxy's address: set it
    /// to --max-connections there.
    #[arg(long, env = "WARREN_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = ConnLimits::default().max_per_address)]
    pub max_connections_per_address: usize,
    /// A request's headers must arrive within this, counted from the
    /// connection's start or its previous response (so it is also the idle
    /// timeout of keep-alive connections).
    #[arg(long, env = "WARREN_HEADER_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub header_timeout: Duration,
    /// Ping a WebSocket client silent for this long.
    #[arg(long, env = "WARREN_WS_PING_INTERVAL", value_parser = parse_duration, default_value = "30s")]
    pub ws_ping_interval: Duration,
    /// Close a WebSocket whose client has not answered a ping within this.
    #[arg(long, env = "WARREN_WS_PING_TIMEOUT", value_parser = parse_duration, default_value = "30s")]
    pub ws_ping_timeout: Duration,
    /// Stop a user's sandbox after it has had no terminal for this long.
    #[arg(long, env = "WARREN_IDLE_TIMEOUT", value_parser = parse_duration, default_value = "30m")]
    pub idle_timeout: Duration,
    /// Stop a user's sandbox as soon as their last terminal has ended (and
    /// no API command holds it), killing what they left running in the
    /// background, instead of after --idle-timeout.
    #[arg(long, env = "WARREN_STOP_WHEN_NO_TERMINALS")]
    pub stop_when_no_terminals: bool,
    /// A running named service keeps its user's sandbox past
    /// --idle-timeout (docs/services.md); with false, services stop with
    /// an idle sandbox and start again with the next.
    #[arg(long, env = "WARREN_SERVICES_KEEP_ALIVE", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub services_keep_alive: bool,
    /// Bytes of output kept per named service (its `logs`).
    #[arg(long, env = "WARREN_SERVICE_LOG_BYTES", default_value_t = 64 << 10, value_parser = clap::value_parser!(u64).range(1..=(64 << 20)))]
    pub service_log_bytes: u64,
    /// Keep a terminal nobody is watching for this long (so a reload or a
    /// dropped connection can come back to it).
    #[arg(long, env = "WARREN_TERMINAL_GRACE", value_parser = parse_duration, default_value = "5m")]
    pub terminal_grace: Duration,
    /// Most sandboxes (users with a live sandbox) at once.
    #[arg(long, env = "WARREN_MAX_SANDBOXES", default_value_t = SessionLimits::default().max_sandboxes)]
    pub max_sandboxes: usize,
    /// Most terminals one user may have open.
    #[arg(long, env = "WARREN_MAX_TERMINALS_PER_USER", default_value_t = SessionLimits::default().max_terminals_per_user)]
    pub max_terminals_per_user: usize,
    /// How long a login (session cookie) lasts in --auth token mode.
    #[arg(long, env = "WARREN_SESSION_TTL", value_parser = parse_duration, default_value = "12h")]
    pub session_ttl: Duration,
    /// How long shutdown may take before the server exits anyway.
    #[arg(long, env = "WARREN_SHUTDOWN_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub shutdown_timeout: Duration,
    /// What runs the shells.
    #[arg(long, env = "WARREN_BACKEND", value_enum, default_value_t = BackendKind::Sandbox)]
    pub backend: BackendKind,
    /// File holding the admin token for /api and /metrics (at least 32
    /// bytes) [default: <state dir>/admin-token, made on first start].
    #[arg(long, env = "WARREN_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Most bytes of file data one import may unpack.
    #[arg(long, env = "WARREN_IMPORT_MAX_BYTES", default_value_t = warren_runtime::archive::ArchiveLimits::default().max_bytes)]
    pub import_max_bytes: u64,
    /// Most entries one import may hold.
    #[arg(long, env = "WARREN_IMPORT_MAX_ENTRIES", default_value_t = warren_runtime::archive::ArchiveLimits::default().max_entries)]
    pub import_max_entries: u64,
    /// This node's name in a pool behind a load balancer: sent as an
    /// `X-Warren-Node` header on every response (docs/scale-out.md).
    #[arg(long, env = "WARREN_NODE_ID", value_name = "NAME")]
    pub node_id: Option<String>,
    /// Users with a home on this node beyond which it takes no new ones
    /// (its agent says `drain`) [default: no bound].
    #[arg(long, env = "WARREN_MAX_USERS", value_name = "N")]
    pub max_users: Option<usize>,
    /// Answer HAProxy's agent checks on this address (`up ready N%` or
    /// `drain`; docs/scale-out.md).
    #[arg(long, env = "WARREN_AGENT_LISTEN", value_name = "ADDR:PORT")]
    pub agent_listen: Option<SocketAddr>,
    /// The command line of every terminal, split on whitespace (for
    /// example `zsh -l`, `fish -l`, `bash --norc`); default `bash -l`.
    #[arg(long, env = "WARREN_SHELL", value_name = "COMMAND", value_parser = parse_shell)]
    pub shell: Option<ShellLine>,
    /// How log lines are written to stderr: `text` (coloured only on a
    /// terminal, and never with NO_COLOR set) or `json` (one object a line).
    #[arg(long, env = "WARREN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub store: crate::cli::StoreArgs,
    #[command(flatten)]
    pub limits: crate::cli::LimitArgs,
    #[command(flatten)]
    pub isolation: crate::cli::IsolationArgs,
    #[command(flatten)]
    pub network: crate::cli::NetworkArgs,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The user id the token names (its `sub`).
    #[arg(long, short, env = "WARREN_USER")]
    pub user: String,
    /// File holding the HS256 secret (the same as `warren serve --auth jwt`).
    #[arg(long, env = "WARREN_JWT_SECRET_FILE", value_name = "FILE")]
    pub jwt_secret_file: PathBuf,
    /// How long the token is valid.
    #[arg(long, env = "WARREN_TOKEN_TTL", value_parser = parse_duration, default_value = "12h")]
    pub ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error("--preview-domain {0:?} is not a domain name (like localhost or preview.example.com)")]
    BadPreviewDomain(String),
    #[error(
        "--auth none on {0}: no unauthenticated shell is ever reachable off loopback; \
         use --auth token (the default) or --auth jwt, or listen on 127.0.0.1"
    )]
    NoAuthOffLoopback(SocketAddr),
    #[error(
        "--backend echo on {0}: the echo backend runs shells as the server's own user \
         with no isolation, so it only listens on a loopback address"
    )]
    EchoOffLoopback(SocketAddr),
    #[error(
        "--auth jwt needs --jwt-secret-file (e.g. `head -c 32 /dev/urandom | base64 > secret`)"
    )]
    MissingJwtSecret,
    #[error("cannot read the JWT secret {path:?}: {source}")]
    SecretFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the JWT secret in {path:?} is {len} bytes; use at least {MIN_SECRET_LEN} \
         (e.g. `head -c 32 /dev/urandom | base64 > {path:?}`)"
    )]
    SecretTooShort { path: PathBuf, len: usize },
    #[error(transparent)]
    Origin(#[from] OriginError),
    #[error("{0} must be at least 1")]
    ZeroLimit(&'static str),
    #[error("{0} must be longer than 0")]
    ZeroDuration(&'static str),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("invalid user id: {0}")]
    User(#[from] warren_runtime::tenant::TenantError),
    #[error("--node-id {0:?}: use 1 to 64 letters, digits, '.', '_' or '-'")]
    NodeId(String),
}

impl ServeArgs {
    /// Checks the arguments and builds the server's configuration (this is
    /// where the login token is made and the JWT secret is read).
    pub fn to_config(&self) -> Result<ServeConfig, ArgsError> {
        let loopback = self.listen.ip().is_loopback();
        if self.auth == AuthMode::None && !loopback {
            return Err(ArgsError::NoAuthOffLoopback(self.listen));
        }
        if self.backend == BackendKind::Echo && !loopback {
            return Err(ArgsError::EchoOffLoopback(self.listen));
        }
        if self.max_sandboxes == 0 {
            return Err(ArgsError::ZeroLimit("--max-sandboxes"));
        }
        if self.max_terminals_per_user == 0 {
            return Err(ArgsError::ZeroLimit("--max-terminals-per-user"));
        }
        let web = self.web()?;
        // Validate now so a typo fails at start, not at the first connection.
        OriginPolicy::new(&self.allowed_origins)?;
        let auth = match self.auth {
            AuthMode::Token => Auth::token(None, self.session_ttl),
            AuthMode::Jwt => {
                let path = self
                    .jwt_secret_file
                    .as_deref()
                    .ok_or(ArgsError::MissingJwtSecret)?;
                Auth::jwt(read_secret_file(path)?)
            }
            AuthMode::None => Auth::none(),
        };
        Ok(ServeConfig {
            listen: self.listen,
            auth,
            allowed_origins: self.allowed_origins.clone(),
            limits: SessionLimits {
                max_sandboxes: self.max_sandboxes,
                max_terminals_per_user: self.max_terminals_per_user,
                terminal_grace: self.terminal_grace,
                idle_timeout: self.idle_timeout,
                stop_when_no_terminals: self.stop_when_no_terminals,
            },
            shutdown_timeout: self.shutdown_timeout,
            management: Some(self.management()?),
            web,
            node: self.node()?,
        })
    }

    fn node(&self) -> Result<NodeConfig, ArgsError> {
        if self.max_users == Some(0) {
            return Err(ArgsError::ZeroLimit("--max-users"));
        }
        if let Some(id) = &self.node_id {
            let ok = (1..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok {
                return Err(ArgsError::NodeId(id.clone()));
            }
        }
        Ok(NodeConfig {
            settings: NodeSettings {
                id: self.node_id.clone(),
                max_users: self.max_users,
                state_file: Some(self.store.settings().state_dir.join("node-state")),
            },
            agent_listen: self.agent_listen,
        })
    }

    fn web(&self) -> Result<WebSettings, ArgsError> {
        for (value, flag) in [
            (self.max_connections, "--max-connections"),
            (
                self.max_connections_per_address,
                "--max-connections-per-address",
            ),
        ] {
            if value == 0 {
                return Err(ArgsError::ZeroLimit(flag));
            }
        }
        for (value, flag) in [
            (self.header_timeout, "--header-timeout"),
            (self.ws_ping_interval, "--ws-ping-interval"),
            (self.ws_ping_timeout, "--ws-ping-timeout"),
        ] {
            if value.is_zero() {
                return Err(ArgsError::ZeroDuration(flag));
            }
        }
        // An empty value (`WARREN_PUBLIC_URL=`) names none.
        let public_urls: Vec<String> = self
            .public_urls
            .iter()
            .filter(|u| !u.trim().is_empty())
            .cloned()
            .collect();
        HostPolicy::new(self.listen, &public_urls)?;
        OriginPolicy::new(&public_urls)?;
        let domain = self
            .preview_domain
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let valid = !domain.is_empty()
            && domain.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            return Err(ArgsError::BadPreviewDomain(self.preview_domain.clone()));
        }
        Ok(WebSettings {
            previews: crate::web::preview::PreviewSettings { domain },
            public_urls,
            connections: ConnLimits {
                max: self.max_connections,
                max_per_address: self.max_connections_per_address,
                header_timeout: self.header_timeout,
            },
            ping: PingPolicy {
                interval: self.ws_ping_interval,
                timeout: self.ws_ping_timeout,
            },
        })
    }

    fn management(&self) -> Result<crate::web::Management, ArgsError> {
        let settings = self.store.settings();
        let path = self
            .admin_token_file
            .clone()
            .unwrap_or_else(|| settings.state_dir.join("admin-token"));
        let token = if self.admin_token_file.is_some() {
            read_secret_file(&path)?
        } else {
            load_or_make_token(&path)?
        };
        let admin_token = String::from_utf8(token)
            .map_err(|_| ArgsError::SecretFile {
                path: path.clone(),
                source: std::io::Error::other("the admin token must be text"),
            })?
            .trim()
            .to_string();
        Ok(crate::web::Management {
            settings,
            defaults: self.limits.limits(),
            disk: self.limits.disk(),
            admin_token,
            admin_token_file: Some(path),
            import_limits: warren_runtime::archive::ArchiveLimits {
                max_bytes: self.import_max_bytes,
                max_entries: self.import_max_entries,
                max_entry_bytes: self.import_max_bytes,
            },
            services: warren_domain::manage::ServiceSettings {
                keep_alive: self.services_keep_alive,
                log_bytes: self.service_log_bytes as usize,
            },
        })
    }
}

/// Reads the admin token at `path`, making a random one (mode 0600) on
/// first use.
fn load_or_make_token(path: &Path) -> Result<Vec<u8>, ArgsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| ArgsError::SecretFile {
        path: path.to_path_buf(),
        source,
    };
    if !path.exists() {
        if let Some(dir) = path.parent() {
            // The state directory by default: private (warren_domain::private).
            warren_domain::private::create_dir(dir).map_err(err)?;
        }
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(mut f) => {
                writeln!(f, "{}", warren_domain::random::random_token()).map_err(err)?;
            }
            // Another server made it meanwhile: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err(e)),
        }
    }
    warren_domain::private::tighten(path, warren_domain::private::FILE_MODE).map_err(err)?;
    read_secret_file(path)
}

/// Reads an HS256 secret: the file's bytes without trailing whitespace (so
/// `echo secret > file` works), at least [`MIN_SECRET_LEN`] of them.
pub fn read_secret_file(path: &Path) -> Result<Vec<u8>, ArgsError> {
    let mut secret = std::fs::read(path).map_err(|source| ArgsError::SecretFile {
        path: path.to_path_buf(),
        source,
    })?;
    while secret.last().is_some_and(|b| b.is_ascii_whitespace()) {
        secret.pop();
    }
    if secret.len() < MIN_SECRET_LEN {
        return Err(ArgsError::SecretTooShort {
            path: path.to_path_buf(),
            len: secret.len(),
        });
    }
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    "the JWT secret {path:?} is readable by other users; `chmod 600` it"
                );
            }
        }
    }
    Ok(secret)
}

/// Parses a duration: a number with a unit (`ms`, `s`, `m`, `h`, `d`), or
/// several (`1h30m`); a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("{s:?}: expected a number, e.g. 30s, 5m, 1h30m"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{s:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86400)),
            "" => {
                return Err(format!(
                    "{s:?}: a unit is needed after {n} (ms, s, m, h, d)"
                ))
            }
            other => return Err(format!("{s:?}: unknown unit {other:?} (ms, s, m, h, d)")),
        };
        total = total.saturating_add(part);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> ServeArgs {
        Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .unwrap()
            .serve
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5").is_ok());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("1h30").is_err());
    }

    #[test]
    fn node_flags_are_checked() {
        let n = parse(&[
            "--node-id",
            "node-1.eu",
            "--max-users",
            "5",
            "--agent-listen",
            "10.0.0.1:8081",
        ])
        .node()
        .unwrap();
        assert_eq!(n.settings.id.as_deref(), Some("node-1.eu"));
        assert_eq!(n.settings.max_users, Some(5));
        assert_eq!(n.agent_listen, Some("10.0.0.1:8081".parse().unwrap()));
        assert!(n.settings.state_file.unwrap().ends_with("node-state"));
        for bad in ["", "a b", "x\u{7f}", "é", &"n".repeat(65)] {
            assert!(
                matches!(parse(&["--node-id", bad]).node(), Err(ArgsError::NodeId(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse(&["--max-users", "0"]).node(),
            Err(ArgsError::ZeroLimit("--max-users"))
        ));
        assert!(parse(&[]).node().unwrap().agent_listen.is_none());
    }

    #[test]
    fn shell_is_one_command_line() {
        assert_eq!(parse(&[]).shell, None);
        let a = parse(&["--shell", "bash --norc  -i"]);
        assert_eq!(
            a.shell,
            Some(ShellLine(vec!["bash".into(), "--norc".into(), "-i".into()]))
        );
        let a = parse(&["--shell", "/usr/bin/zsh -l"]);
        assert_eq!(a.shell.unwrap().0, ["/usr/bin/zsh", "-l"]);
        for bad in ["", "   ", "bin/zsh -l"] {
            let r = Cli::try_parse_from(["serve", "--shell", bad]);
            assert!(r.is_err(), "--shell {bad:?} accepted");
        }
    }

    #[test]
    fn defaults_are_loopback_and_token() {
        let a = parse(&[]);
        assert_eq!(a.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(a.auth, AuthMode::Token);
        assert_eq!(a.idle_timeout, Duration::from_secs(1800));
        let config = a.to_config().unwrap();
        assert!(config.auth.login_token().is_some_and(|t| t.len() >= 43));
    }

    #[test]
    fn services_keep_their_sandboxes_unless_told_not_to() {
        let a = parse(&[]);
        assert!(a.services_keep_alive);
        assert_eq!(a.service_log_bytes, 64 << 10);
        let a = parse(&[
            "--services-keep-alive",
            "false",
            "--service-log-bytes",
            "1024",
        ]);
        assert!(!a.services_keep_alive);
        assert_eq!(a.service_log_bytes, 1024);
        for bad in [
            ["--service-log-bytes", "0"],
            ["--services-keep-alive", "maybe"],
        ] {
            assert!(
                Cli::try_parse_from(["serve", bad[0], bad[1]]).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn no_unauthenticated_shell_off_loopback() {
        let a = parse(&["--listen", "0.0.0.0:8080", "--auth", "none"]);
        assert!(matches!(
            a.to_config(),
            Err(ArgsError::NoAuthOffLoopback(_))
        ));
        let a = parse(&["--listen", "[::]:8080", "--auth", "none"]);
        assert!(matches!(
            a.to_config(),
            Err(ArgsError::NoAuthOffLoopback(_))
        ));
        let a = parse(&["--listen", "127.0.0.1:9", "--auth", "none"]);
        assert!(a.to_config().is_ok());
        let a = parse(&["--listen", "[::1]:9", "--auth", "none"]);
        assert!(a.to_config().is_ok());
        // The echo backend is host shells: loopback only, whatever the auth.
        let a = parse(&["--listen", "0.0.0.0:8080", "--backend", "echo"]);
        assert!(matches!(a.to_config(), Err(ArgsError::EchoOffLoopback(_))));
        // Sandboxes behind a login token may face the network.
        let a = parse(&["--listen", "0.0.0.0:8080"]);
        assert!(a.to_config().is_ok());
    }

    #[test]
    fn jwt_needs_a_long_enough_secret() {
        let a = parse(&["--auth", "jwt"]);
        assert!(matches!(a.to_config(), Err(ArgsError::MissingJwtSecret)));
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "tooshort\n").unwrap();
        let a = parse(&[
            "--auth",
            "jwt",
            "--jwt-secret-file",
            short.to_str().unwrap(),
        ]);
        assert!(matches!(
            a.to_config(),
            Err(ArgsError::SecretTooShort { len: 8, .. })
        ));
        let good = dir.path().join("good");
        std::fs::write(&good, format!("{}\n", "k".repeat(40))).unwrap();
        assert_eq!(read_secret_file(&good).unwrap(), "k".repeat(40).as_bytes());
        let a = parse(&["--auth", "jwt", "--jwt-secret-file", good.to_str().unwrap()]);
        assert_eq!(a.to_config().unwrap().auth.mode(), AuthMode::Jwt);
    }

    #[test]
    fn limits_and_origins_are_checked() {
        assert!(matches!(
            parse(&["--max-sandboxes", "0"]).to_config(),
            Err(ArgsError::ZeroLimit(_))
        ));
        assert!(matches!(
            parse(&["--allowed-origin", "example.com"]).to_config(),
            Err(ArgsError::Origin(_))
        ));
        let a = parse(&["--allowed-origin", "https://a.example,https://b.example"]);
        assert_eq!(a.allowed_origins.len(), 2);
    }

    #[test]
    fn web_flags_are_checked() {
        let config = parse(&[]).to_config().unwrap();
        assert_eq!(config.web.connections, ConnLimits::default());
        assert_eq!(config.web.ping, PingPolicy::default());
        assert!(matches!(
            parse(&["--public-url", "term.example.com"]).to_config(),
            Err(ArgsError::Host(HostError::BadPublicUrl(_)))
        ));
        assert!(parse(&["--public-url", ""])
            .to_config()
            .unwrap()
            .web
            .public_urls
            .is_empty());
        assert!(matches!(
            parse(&["--max-connections", "0"]).to_config(),
            Err(ArgsError::ZeroLimit(_))
        ));
        assert!(matches!(
            parse(&["--header-timeout", "0s"]).to_config(),
            Err(ArgsError::ZeroDuration(_))
        ));
        let config = parse(&[
            "--public-url",
            "https://term.example.com",
            "--header-timeout",
            "3s",
        ])
        .to_config()
        .unwrap();
        assert_eq!(config.web.public_urls, ["https://term.example.com"]);
        assert_eq!(
            config.web.connections.header_timeout,
            Duration::from_secs(3)
        );
    }
}

/// `--shell`'s words (one value, not a list of flags).
#[derive(Debug, Clone, PartialEq)]
pub struct ShellLine(pub Vec<String>);

/// `--shell`: see [`warren_domain::sandboxes::parse_shell`].
fn parse_shell(line: &str) -> Result<ShellLine, String> {
    warren_domain::sandboxes::parse_shell(line).map(ShellLine)
}
