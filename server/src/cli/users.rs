//! `warren users ...` and `warren exec`: tenant management from the command
//! line, through the same [`Manager`] as the HTTP API. Without a server the
//! commands run in a one-shot sandbox of the user's; when a server holds
//! the user's sandbox, prefer the API (`/api/users/...`), which joins it.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::{LimitArgs, StoreArgs};
use warren_domain::exec::EndReason;
use warren_domain::manage::{ExecRequest, ManageError, Manager, Runner};
use warren_domain::sandboxes::SandboxBackend;
use warren_domain::state::LimitOverrides;
use warren_runtime::network::{NetworkMode, NetworkPolicy};

// The doc comments are the --help text, not Markdown.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// List every tenant.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create a tenant (uid allocation and home) unless it exists.
    Create { user: String },
    /// Show one tenant (JSON).
    Show { user: String },
    /// What a tenant uses: workspace size and files, limits (JSON).
    Stats { user: String },
    /// Set a tenant's limit overrides (JSON: {"memory_bytes": N|"none"|"default", "cpus": .., "pids": ..,
    /// "network": "none"|"public"|"default", "network_allow": ["CIDR[:PORTS]", ..], "network_deny": [..]}).
    Limits { user: String, json: String },
    /// Remove a tenant (its uid is never reused).
    Delete {
        user: String,
        /// Also remove the tenant's home.
        #[arg(long)]
        remove_home: bool,
    },
    /// Write the tenant's home as tar.gz to FILE (or stdout).
    Export {
        user: String,
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Unpack a tar.gz (FILE, or stdin) into the tenant's home, refusing
    /// unsafe archives (docs/archives.md).
    Import { user: String, file: Option<PathBuf> },
}

#[derive(Debug, Args)]
pub struct UsersArgs {
    #[command(subcommand)]
    pub command: UsersCommand,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The tenant to run as (it must exist: `warren users create`).
    #[arg(long, short, env = "WARREN_USER")]
    pub user: String,
    /// Working directory, relative to the user's home.
    #[arg(long)]
    pub cwd: Option<String>,
    /// Set an environment variable (KEY=VALUE).
    #[arg(long = "env", short, value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Kill the command after this many seconds.
    #[arg(long, default_value_t = 3600.0)]
    pub timeout: f64,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub network: crate::cli::NetworkArgs,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// The audit log's name for whoever runs the command line.
fn actor() -> String {
    let uid = nix::unistd::getuid();
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    format!("cli:{name}")
}

fn manager(
    store: &StoreArgs,
    limits: &LimitArgs,
    network: NetworkPolicy,
) -> Result<Arc<Manager>, ManageError> {
    let settings = store.settings();
    // The strongest tier this host allows, as `warren run`/`serve` pick by
    // default (the probe forks: called before the async runtime starts).
    let tier = warren_runtime::host::choose_tier(
        warren_runtime::host::TierRequest::Auto,
        &warren_runtime::host::probe_isolation(),
    )
    .map_err(|e| ManageError::Unavailable(format!("{e}; {}", e.hint())))?;
    let backend = SandboxBackend::new(settings.clone(), limits.limits(), limits.require_limits)
        .with_isolation(tier.isolation)
        .with_disk(limits.disk(), limits.disk_backend)
        .with_network(network);
    Ok(Arc::new(
        Manager::new(
            settings,
            limits.limits(),
            Runner::OneShot(Arc::new(backend)),
        )?
        .with_disk(limits.disk()),
    ))
}

fn runtime() -> Result<tokio::runtime::Runtime, ManageError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ManageError::io("async runtime"))
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Exit codes: 0 ok, 1 failed, 2 bad request (bad input), 3 not found.
fn fail(e: ManageError) -> i32 {
    eprintln!("warren: {e}");
    match e {
        ManageError::BadRequest(_) | ManageError::TooLarge(_) => 2,
        ManageError::NoSuchUser(_) | ManageError::NoSuchTerminal => 3,
        _ => 1,
    }
}

pub fn users(args: UsersArgs) -> i32 {
    match users_inner(args) {
        Ok(code) => code,
        Err(e) => fail(e),
    }
}

fn users_inner(args: UsersArgs) -> Result<i32, ManageError> {
    // `users` commands that run something (import) get the server's default.
    let network = NetworkPolicy {
        required: args.limits.require_limits,
        ..NetworkPolicy::public()
    };
    let m = manager(&args.store, &args.limits, network)?;
    let who = actor();
    match args.command {
        UsersCommand::List { json } => {
            let users = m.list()?;
            if json {
                print_json(&users);
            } else {
                println!(
                    "{:<24} {:<24} {:>11} {:>10}",
                    "ID", "SLUG", "HOST UID", "LAST SEEN"
                );
                for u in users {
                    println!(
                        "{:<24} {:<24} {:>11} {:>10}",
                        u.id,
                        u.slug,
                        u.host_uid,
                        ago(m.now() - u.last_seen)
                    );
                }
            }
        }
        UsersCommand::Create { user } => {
            let (view, created) = m.get_or_create(&who, &user)?;
            if !created {
                eprintln!("warren: {user} already exists");
            }
            print_json(&view);
        }
        UsersCommand::Show { user } => print_json(&m.show(&user)?),
        UsersCommand::Stats { user } => print_json(&runtime()?.block_on(m.stats(&user))?),
        UsersCommand::Limits { user, json } => {
            let o: LimitOverrides = serde_json::from_str(&json)
                .map_err(|e| ManageError::BadRequest(format!("limits: {e}")))?;
            print_json(&m.set_limits(&who, &user, &o)?);
        }
        UsersCommand::Delete { user, remove_home } => {
            let rt = runtime()?;
            print_json(&rt.block_on(m.delete(&who, &user, remove_home))?);
        }
        UsersCommand::Export { user, output } => {
            let rt = runtime()?;
            let mut out: Box<dyn Write> = match &output {
                Some(p) => Box::new(
                    std::fs::File::create(p)
                        .map_err(|e| ManageError::BadRequest(format!("{}: {e}", p.display())))?,
                ),
                None if std::io::stdout().is_terminal() => {
                    return Err(ManageError::BadRequest(
                        "refusing to write a tar.gz to a terminal; use -o FILE or a pipe".into(),
                    ))
                }
                None => Box::new(std::io::stdout().lock()),
            };
            let written = rt.block_on(async {
                use futures_util::StreamExt;
                let mut s = std::pin::pin!(m.export(&who, &user).await?);
                let mut n = 0u64;
                while let Some(chunk) = s.next().await {
                    let chunk = chunk.map_err(ManageError::io("export"))?;
                    out.write_all(&chunk).map_err(ManageError::io("writing"))?;
                    n += chunk.len() as u64;
                }
                out.flush().map_err(ManageError::io("writing"))?;
                Ok::<u64, ManageError>(n)
            });
            match written {
                Ok(n) => eprintln!("warren: exported {user}: {n} bytes"),
                Err(e) => {
                    if let Some(p) = &output {
                        let _ = std::fs::remove_file(p);
                    }
                    return Err(e);
                }
            }
        }
        UsersCommand::Import { user, file } => {
            let mut data = Vec::new();
            match &file {
                Some(p) => {
                    data = std::fs::read(p)
                        .map_err(|e| ManageError::BadRequest(format!("{}: {e}", p.display())))?
                }
                None => {
                    std::io::stdin()
                        .lock()
                        .take(m.import_limits().max_archive_bytes() + 1)
                        .read_to_end(&mut data)
                        .map_err(|e| ManageError::BadRequest(format!("stdin: {e}")))?;
                }
            }
            let rt = runtime()?;
            let upload = futures_util::stream::iter([Ok::<_, std::io::Error>(
                axum::body::Bytes::from(data),
            )]);
            print_json(&rt.block_on(m.import(&who, &user, upload))?);
        }
    }
    Ok(0)
}

fn ago(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s if s < 172_800 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

/// `warren exec`: the command's own exit code (128+N for a signal), 124
/// after the timeout (like timeout(1)), 121 when the memory limit killed it.
pub fn exec(args: ExecArgs) -> i32 {
    let run = || -> Result<i32, ManageError> {
        let network = args
            .network
            .policy(NetworkMode::Public, args.limits.require_limits);
        let m = manager(&args.store, &args.limits, network)?;
        let mut env = std::collections::BTreeMap::new();
        for kv in &args.env {
            let (k, v) = kv.split_once('=').ok_or_else(|| {
                ManageError::BadRequest(format!("--env {kv:?}: expected KEY=VALUE"))
            })?;
            env.insert(k.to_string(), v.to_string());
        }
        let req = ExecRequest {
            argv: args.command.clone(),
            cwd: args.cwd.clone(),
            env,
            stdin: None,
            timeout_secs: Some(args.timeout),
        };
        let rt = runtime()?;
        let end = rt.block_on(m.exec_inherit(&actor(), &args.user, req))?;
        Ok(match end.reason {
            EndReason::Timeout => {
                eprintln!(
                    "warren: timed out after {:?}",
                    Duration::from_secs_f64(args.timeout)
                );
                124
            }
            EndReason::MemoryLimit => {
                eprintln!("warren: killed: memory limit reached");
                warren_runtime::report::EXIT_MEMORY_LIMIT
            }
            _ => end.exit_code.or(end.signal.map(|s| 128 + s)).unwrap_or(1),
        })
    };
    run().unwrap_or_else(fail)
}
