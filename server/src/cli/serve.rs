//! `warren serve` and `warren token` on the command line: turn the flags
//! into a [`crate::web::ServeConfig`], pick the backend and the isolation tier (before
//! the async runtime starts: the tier probe forks), print the banner, map
//! signals to [`crate::web::ShutdownHandle::shutdown`].

use std::sync::Arc;
use std::time::Duration;

use warren_domain::backend::Backend;
use warren_domain::echo::EchoBackend;
use warren_domain::user::UserId;
use warren_runtime::host::TierChoice;

use super::args::{self, BackendKind, LogFormat, ServeArgs, TokenArgs};
use crate::web::{capacity, mint_token, AuthMode, ConnLimits, Server};

/// `warren serve`: returns the process exit code.
pub fn main(args: ServeArgs) -> i32 {
    init_tracing(args.log_format);
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
        (BackendKind::Sandbox, Some(t)) => {
            let backend = warren_domain::sandboxes::SandboxBackend::new(
                args.store.settings(),
                args.limits.limits(),
                args.limits.require_limits,
            )
            .with_isolation(t.isolation)
            .with_disk(args.limits.disk(), args.limits.disk_backend)
            .with_network(args.network.policy(
                warren_runtime::network::NetworkMode::Public,
                args.limits.require_limits,
            ));
            Arc::new(match &args.shell {
                Some(shell) => backend.with_shell(shell.0.clone()),
                None => backend,
            })
        }
        _ => Arc::new(match &args.shell {
            Some(shell) => EchoBackend::with_argv(shell.0.clone()),
            None => EchoBackend::new(),
        }),
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
    if let Some(addr) = server.agent_addr() {
        eprintln!(
            "  node {}: HAProxy agent check on {addr} (docs/scale-out.md)",
            args.node_id.as_deref().unwrap_or("(no --node-id)")
        );
    }
    if let Some(t) = tier {
        eprintln!("  isolation: {} ({})", t.isolation, t.why);
        if let Some(w) = &t.warning {
            eprintln!("  warning: {w}");
        }
        print_disk_line(args);
    }
    match args.auth {
        AuthMode::Token => {
            if let Some(url) = server.login_url() {
                eprintln!(
                    "  To log in, open this URL (add &user=NAME, or pick a name on the page):"
                );
                eprintln!("    {url}");
                eprintln!("  {}", crate::web::http::TOKEN_MODE_WARNING);
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

/// The homes' disk limit: in force through per-home images, or missing
/// and why (docs/disk.md).
fn print_disk_line(args: &ServeArgs) {
    let disk = args.limits.disk();
    if disk.is_none() {
        return;
    }
    let quota = warren_runtime::disk::quota::quota_backend_unavailable(
        &args.store.settings().workspace_root,
        "/proc".as_ref(),
    );
    if quota.is_none() && args.limits.disk_backend != warren_runtime::disk::DiskBackend::Image {
        eprintln!("  disk: each home a project quota on the workspace root's filesystem");
        return;
    }
    match warren_runtime::disk::image_backend_unavailable("/proc".as_ref()) {
        None => eprintln!(
            "  disk: each home an ext4 image of {} and {} inodes",
            disk.bytes
                .map_or("no byte limit".into(), warren_runtime::disk::human),
            disk.inodes
                .map_or("any number of".into(), |i| i.to_string())
        ),
        Some(why) => eprintln!("  warning: running without the disk limit: {why}"),
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

fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("WARREN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder
            .with_ansi(colour(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR"),
            ))
            .try_init(),
    };
}

/// Whether text logs are coloured: only on a terminal (a file or journald
/// would get escape sequences), and never with `NO_COLOR` set to anything
/// but the empty string (no-color.org).
fn colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
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

#[cfg(test)]
mod tests {
    use super::colour;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())));
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None));
        assert!(!colour(false, Some("1".into())));
    }
}
