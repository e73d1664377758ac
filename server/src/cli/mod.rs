//! The command line. Every flag can also be set by an environment variable
//! `WARREN_*`, so a service file needs no arguments.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use warren_runtime::host::{self, TierChoice, TierError, TierRequest};
use warren_runtime::network::{NetworkMode, NetworkPolicy, PolicyError, Rule};
use warren_runtime::spec::{Bind, Isolation};

pub mod args;
pub mod config;
pub mod doctor;
pub mod node;
pub mod run;
pub mod serve;
pub mod services;
pub mod users;

use warren_domain::sandbox::{Request, Settings};

#[derive(Debug, Parser)]
#[command(
    name = "warren",
    version,
    about = "Multi-tenant Linux sandboxes with a web terminal, without Docker."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one command in a sandbox for a user, like bwrap or nsjail.
    Run(Box<RunArgs>),
    /// Show what this host allows and try a real sandbox.
    Doctor {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve the web terminal.
    Serve(Box<crate::cli::args::ServeArgs>),
    /// Mint a login token (HS256 JWT) for `warren serve --auth jwt`.
    Token(crate::cli::args::TokenArgs),
    /// Manage tenants: list, create, show, stats, limits, delete, export, import.
    Users(Box<crate::cli::users::UsersArgs>),
    /// Run a command non-interactively in a user's sandbox.
    Exec(Box<crate::cli::users::ExecArgs>),
    /// This node in a pool: show its load, drain it, undrain it (asks the running server).
    Node(Box<crate::cli::node::NodeArgs>),
    /// A user's named services: list, create, show, logs, start, stop, restart, delete (asks the running server).
    Services(Box<crate::cli::services::ServicesArgs>),
}

/// The cgroup limits of each sandbox (`run` and `serve`).
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Memory limit, e.g. 512M, 2G, or "none".
    #[arg(long, global = true, env = "WARREN_MEMORY", default_value = "512M", value_parser = parse_memory)]
    pub memory: Limit<u64>,
    /// CPU limit in cores, e.g. 0.5, 2, or "none".
    #[arg(long, global = true, env = "WARREN_CPUS", default_value = "0.5", value_parser = parse_cpus)]
    pub cpus: Limit<f64>,
    /// Most processes and threads at once, or "none".
    #[arg(long, global = true, env = "WARREN_PIDS", default_value = "512", value_parser = parse_pids)]
    pub pids: Limit<u64>,
    /// Refuse to run when a limit cannot be applied on this host.
    #[arg(long, global = true, env = "WARREN_REQUIRE_LIMITS")]
    pub require_limits: bool,
    /// Size limit of each home, e.g. 1G, 500M, or "none" (docs/disk.md).
    #[arg(long, global = true, env = "WARREN_DISK", default_value = "1G", value_parser = parse_memory)]
    pub disk: Limit<u64>,
    /// Most files, directories and links in each home, or "none".
    #[arg(long, global = true, env = "WARREN_DISK_INODES", default_value = "100000", value_parser = parse_pids)]
    pub disk_inodes: Limit<u64>,
    /// How the disk limit is enforced: auto, image (a loop-mounted ext4
    /// image per home, as root) or quota (the kernel's project quotas on
    /// the workspace root's filesystem).
    #[arg(long, global = true, env = "WARREN_DISK_BACKEND", default_value = "auto", value_parser = parse_disk_backend)]
    pub disk_backend: warren_runtime::disk::DiskBackend,
}

fn parse_disk_backend(s: &str) -> Result<warren_runtime::disk::DiskBackend, String> {
    s.parse()
}

impl LimitArgs {
    /// The home's disk limits.
    pub fn disk(&self) -> warren_runtime::disk::DiskLimits {
        warren_runtime::disk::DiskLimits {
            bytes: self.disk.0,
            inodes: self.disk_inodes.0,
        }
    }

    pub fn limits(&self) -> warren_runtime::cgroups::Limits {
        warren_runtime::cgroups::Limits {
            memory_bytes: self.memory.0,
            cpu: self.cpus.0,
            pids: self.pids.0,
        }
    }
}

/// The network policy of each sandbox (`run`, `serve`, `exec`;
/// docs/network.md).
// The doc comments are the --help text, in clap's notation, not Markdown.
#[allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]
#[derive(Debug, Clone, Args)]
pub struct NetworkArgs {
    /// Network of each sandbox: none (only loopback) or public (outbound
    /// to public addresses; never the host, private ranges or other
    /// sandboxes) [default: public for serve and exec, none for run].
    #[arg(long, env = "WARREN_NETWORK", value_parser = parse_network_mode)]
    pub network: Option<NetworkMode>,
    /// Open a destination the policy refuses, CIDR[:PORTS] (e.g.
    /// 10.0.0.2:80, 10.1.0.0/16:443,8000-8100, [fd00::1]:443); repeat, or
    /// separate with spaces.
    #[arg(long, env = "WARREN_NETWORK_ALLOW", value_name = "CIDR[:PORTS]", value_delimiter = ' ', value_parser = parse_rule)]
    pub network_allow: Vec<Rule>,
    /// Close more destinations, CIDR[:PORTS]; repeat, or separate with spaces.
    #[arg(long, env = "WARREN_NETWORK_DENY", value_name = "CIDR[:PORTS]", value_delimiter = ' ', value_parser = parse_rule)]
    pub network_deny: Vec<Rule>,
    /// Refuse to start a sandbox when public network cannot be given
    /// (--require-limits implies it).
    #[arg(long, env = "WARREN_REQUIRE_NETWORK")]
    pub require_network: bool,
}

impl NetworkArgs {
    /// The policy, `default` where --network is not given.
    pub fn policy(&self, default: NetworkMode, require_limits: bool) -> NetworkPolicy {
        NetworkPolicy {
            mode: self.network.unwrap_or(default),
            allow: self.network_allow.clone(),
            deny: self.network_deny.clone(),
            required: self.require_network || require_limits,
        }
    }
}

fn parse_network_mode(s: &str) -> Result<NetworkMode, String> {
    s.parse().map_err(|e: PolicyError| e.to_string())
}

fn parse_rule(s: &str) -> Result<Rule, String> {
    s.parse().map_err(|e: PolicyError| e.to_string())
}

/// `--isolation`: which tier sandboxes get (docs/sandbox.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IsolationArg {
    /// The strongest this host allows: namespaces, else landlock.
    Auto,
    /// User, mount, pid, net, ipc and uts namespaces (the full sandbox).
    Namespaces,
    /// No namespaces: Landlock, seccomp and rlimits (hosts that forbid user
    /// namespaces; weaker, see docs/security.md).
    Landlock,
    /// No isolation besides a working directory: development only.
    None,
}

impl IsolationArg {
    pub fn request(self) -> TierRequest {
        match self {
            IsolationArg::Auto => TierRequest::Auto,
            IsolationArg::Namespaces => TierRequest::Exactly(Isolation::Namespaces),
            IsolationArg::Landlock => TierRequest::Exactly(Isolation::Landlock),
            IsolationArg::None => TierRequest::Exactly(Isolation::None),
        }
    }
}

/// The isolation tier (`run` and `serve`).
#[derive(Debug, Clone, Args)]
pub struct IsolationArgs {
    /// Isolation tier: auto picks the strongest this host allows
    /// (namespaces, else landlock); none is only used when named.
    #[arg(long, env = "WARREN_ISOLATION", value_enum, default_value = "auto")]
    pub isolation: IsolationArg,
}

impl IsolationArgs {
    /// Probes the host and picks the tier. Forks (the user namespace
    /// probe): call it before any thread is started.
    pub fn choose(&self) -> Result<TierChoice, TierError> {
        host::choose_tier(self.isolation.request(), &host::probe_isolation())
    }
}

/// Where state lives (shared by every command that touches tenants).
// The doc comments are the --help text, in clap's notation (`<dir>`,
// `[:port]`), not Markdown.
#[allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Directory of the state database [default: /var/lib/warren as root,
    /// else ~/.local/share/warren].
    #[arg(long, global = true, env = "WARREN_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Directory holding one home per user [default: <data dir>/workspaces].
    #[arg(long, global = true, env = "WARREN_WORKSPACE_ROOT")]
    pub workspace_root: Option<PathBuf>,
    /// First host uid given to a tenant when running as root.
    #[arg(long, global = true, env = "WARREN_UID_BASE", default_value_t = config::DEFAULT_UID_BASE)]
    pub uid_base: u32,
}

impl StoreArgs {
    pub fn settings(&self) -> Settings {
        Settings {
            state_dir: self
                .state_dir
                .clone()
                .unwrap_or_else(config::default_state_dir),
            workspace_root: self
                .workspace_root
                .clone()
                .unwrap_or_else(config::default_workspace_root),
            uid_base: self.uid_base,
        }
    }
}

// The doc comments are the --help text, in clap's notation (`<dir>`,
// `[:port]`), not Markdown.
#[allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The user to run as; their home is /workspace/<user>.
    #[arg(long, short, env = "WARREN_USER", default_value = "sandbox")]
    pub user: String,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub network: NetworkArgs,
    /// Bind a host path read-only into the sandbox (SRC:DST).
    #[arg(long = "ro-bind", value_name = "SRC:DST", value_parser = parse_bind_ro)]
    pub ro_binds: Vec<Bind>,
    /// Bind a host path read-write into the sandbox (SRC:DST).
    #[arg(long = "bind", value_name = "SRC:DST", value_parser = parse_bind_rw)]
    pub binds: Vec<Bind>,
    /// Set an environment variable in the sandbox (KEY=VALUE).
    #[arg(long = "env", short, value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox [default: the user's home].
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Size of the sandbox's /tmp, in MiB.
    #[arg(long, env = "WARREN_TMP_SIZE", default_value_t = 256)]
    pub tmp_size: u64,
    /// Give the command a terminal: auto = when stdin and stdout are ones.
    #[arg(long, value_enum, default_value = "auto")]
    pub tty: crate::cli::run::TtyMode,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub isolation: IsolationArgs,
    /// Print the confinement and limits in force.
    #[arg(long, short)]
    pub verbose: bool,
    /// Same as --tty always.
    #[arg(short = 't', conflicts_with = "tty")]
    pub force_tty: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

fn parse_bind(s: &str, readonly: bool) -> Result<Bind, String> {
    let (src, dst) = s.split_once(':').ok_or("expected SRC:DST")?;
    let source = std::fs::canonicalize(src).map_err(|e| format!("{src}: {e}"))?;
    Ok(Bind {
        source,
        target: PathBuf::from(dst),
        readonly,
    })
}

fn parse_bind_ro(s: &str) -> Result<Bind, String> {
    parse_bind(s, true)
}

fn parse_bind_rw(s: &str) -> Result<Bind, String> {
    parse_bind(s, false)
}

/// A limit value, or none.
#[derive(Debug, Clone, Copy)]
pub struct Limit<T>(pub Option<T>);

fn parse_memory(s: &str) -> Result<Limit<u64>, String> {
    if s == "none" {
        return Ok(Limit(None));
    }
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let mult: u64 = match s[i..]
                .to_ascii_uppercase()
                .trim_end_matches("IB")
                .trim_end_matches('B')
            {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                other => return Err(format!("unknown unit {other:?}: use K, M or G")),
            };
            (&s[..i], mult)
        }
        None => (s, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a size: {s:?}"))?;
    n.checked_mul(mult)
        .map(|b| Limit(Some(b)))
        .ok_or_else(|| "size too large".into())
}

fn parse_cpus(s: &str) -> Result<Limit<f64>, String> {
    if s == "none" {
        return Ok(Limit(None));
    }
    s.parse::<f64>()
        .map(|c| Limit(Some(c)))
        .map_err(|_| format!("not a number of cores: {s:?}"))
}

fn parse_pids(s: &str) -> Result<Limit<u64>, String> {
    if s == "none" {
        return Ok(Limit(None));
    }
    s.parse::<u64>()
        .map(|c| Limit(Some(c)))
        .map_err(|_| format!("not a count: {s:?}"))
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or("expected KEY=VALUE")?;
    Ok((k.to_string(), v.to_string()))
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run(a) => {
            let a = *a;
            let tier = match a.isolation.choose() {
                Ok(choice) => choice,
                Err(e) => {
                    eprintln!("warren: {e}");
                    eprintln!("  hint: {}", e.hint());
                    return ExitCode::from(warren_runtime::report::EXIT_SETUP_FAILED as u8);
                }
            };
            crate::cli::run::announce(&tier, a.verbose);
            let mut binds = a.ro_binds;
            binds.extend(a.binds);
            let req = Request {
                user: a.user,
                argv: a.command,
                binds,
                env: a.env,
                cwd: a.cwd,
                tmp_size_mib: a.tmp_size,
                term: std::env::var("TERM").ok(),
                limits: a.limits.limits(),
                require_limits: a.limits.require_limits,
                hold: false,
                isolation: tier.isolation,
                disk: a.limits.disk(),
                disk_backend: a.limits.disk_backend,
                network: a.network.policy(NetworkMode::None, a.limits.require_limits),
                tty: if a.force_tty {
                    crate::cli::run::TtyMode::Always
                } else {
                    a.tty
                }
                .resolve(),
            };
            crate::cli::run::run(&a.store.settings(), &req, a.verbose)
        }
        Command::Doctor { json } => crate::cli::doctor::doctor(json),
        Command::Serve(a) => crate::cli::serve::main(*a),
        Command::Token(a) => crate::cli::serve::token_main(a),
        Command::Users(a) => crate::cli::users::users(*a),
        Command::Exec(a) => crate::cli::users::exec(*a),
        Command::Node(a) => crate::cli::node::node(*a),
        Command::Services(a) => crate::cli::services::services(*a),
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}
