//! Tenant management: the one code path behind the HTTP API (`/api/...`)
//! and the command line (`warren users ...`, `warren exec`). Both build a
//! [`Manager`]; they differ only in how commands reach a user's sandbox
//! ([`Runner`]): the server joins the user's held sandbox through the
//! session registry, the command line starts a one-shot sandbox.
//!
//! Every action that changes something or runs something for a tenant is
//! written to the audit log (state database), with who asked.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use warren_runtime::cgroups::Limits;
use warren_runtime::report::{LimitReached, SetupError, STEP_EXEC};
use warren_runtime::spec::Isolation;
use warren_runtime::workspace::WorkspaceError;

use crate::audit::{AuditBacklog, AUDIT_BACKLOG_MAX};
use crate::backend::{Backend, BackendError, StarterEnded, JOIN_STEPS};
use crate::exec::EndReason;
use crate::sandbox::{PrepareError, Settings};
use crate::sessions::{Registry, SessionError};
use crate::state::{LimitOverrides, State, StateError};

mod archives;
mod audit;
mod compressor;
mod exec;
mod files;
mod limits;
mod previews;
mod service_spec;
mod services;
mod stats;
mod supervisor;
mod terminals;
mod users;

pub use archives::{Imported, ARCHIVE_TIMEOUT, EXPORT_COMMAND, IMPORT_COMMAND};
pub use exec::{ExecRequest, Running};
pub use files::{FileKind, FileStream, Uploaded, GET_COMMAND, PUT_COMMAND};
pub use previews::{SHARE_MAX_SECS, SHARE_MIN_SECS};
pub use service_spec::{validate_name as validate_service_name, RestartPolicy, ServiceSpec};
pub use services::{LogStream, ServiceBrief, ServiceView};
pub use stats::Stats;
pub use supervisor::{ServiceExit, ServiceSettings, ServiceState, ServiceStatus};
pub use users::Deleted;

/// How long a workspace walk for `stats` may take.
pub const STATS_WALK_TIME: Duration = Duration::from_secs(2);
/// Most entries a workspace walk for `stats` visits.
pub const STATS_WALK_ENTRIES: u64 = 1_000_000;

/// The longest `cwd` an exec may give, in characters (what JSON Schema's
/// `maxLength` counts; at most 4096 bytes, PATH_MAX).
pub const MAX_CWD_CHARS: usize = 1024;

/// How often the server retries audit entries held by a full disk.
pub const AUDIT_RETRY_EVERY: Duration = Duration::from_secs(2);

/// The shortest `timeout_secs` an exec may ask for (1 ms): anything
/// shorter, down to 5e-324, is a timeout no command can meet, so it is
/// refused as docs/openapi.json says (`minimum`).
pub const MIN_TIMEOUT_SECS: f64 = 0.001;

/// A management failure, with what the caller should be told. The first
/// variants are the caller's (their message is for the client); the rest
/// are the server's, keep their cause as `source`, and are told to clients
/// only as "internal error" (see [`ManageError::is_internal`]).
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no such user: {0}")]
    NoSuchUser(String),
    #[error("no such terminal")]
    NoSuchTerminal,
    /// Nothing at a path in a home (the files API).
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A command could not start because the sandbox is at its memory
    /// limit (the tenant's state, a conflict; an import says 413).
    #[error("{0}")]
    OutOfMemory(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Unavailable(String),
    /// The sandbox could not exec the command (not found: 127, not
    /// executable: 126) or enter its cwd (125). `exec` answers it as the
    /// command's own end, with `message` on stderr, as a shell would.
    #[error("{message}")]
    NotStarted { exit_code: i32, message: String },
    #[error("state database: {0}")]
    State(#[from] StateError),
    /// Provisioning a tenant's uid and home failed.
    #[error("provisioning: {0}")]
    Prepare(#[source] PrepareError),
    #[error("sessions: {0}")]
    Session(#[source] SessionError),
    #[error("sandbox: {0}")]
    Backend(#[from] BackendError),
    /// A command could not start in the sandbox; `detail` names the shim's
    /// step and hint.
    #[error("{detail}")]
    Start {
        detail: String,
        #[source]
        source: BackendError,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Archive {
        what: &'static str,
        #[source]
        source: warren_runtime::archive::ArchiveError,
    },
    #[error("{what}: {source}")]
    Decode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// A blocking task panicked or was cancelled.
    #[error("blocking task: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// A server-side failure with no typed cause (a tool's unexpected end).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ManageError {
    /// The server's failure, not the caller's: clients get no detail.
    pub fn is_internal(&self) -> bool {
        !matches!(
            self,
            ManageError::BadRequest(_)
                | ManageError::NoSuchUser(_)
                | ManageError::NoSuchTerminal
                | ManageError::NotFound(_)
                | ManageError::Conflict(_)
                | ManageError::OutOfMemory(_)
                | ManageError::TooLarge(_)
                | ManageError::Unavailable(_)
                | ManageError::NotStarted { .. }
        )
    }

    /// `map_err(ManageError::io("what was done"))`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ManageError {
        let what = what.into();
        move |source| ManageError::Io { what, source }
    }
}

/// Its step for entering the command's working directory (shim/src/command.rs).
const STEP_CHDIR: &str = "chdir ";
/// What the caller is told when a command could not start because the
/// sandbox ended or ran out of memory meanwhile.
const TRY_AGAIN: &str = "nothing ran; try again (the next command starts a fresh sandbox), \
                         or raise the tenant's memory limit if this repeats";

/// What a failure to start a command in a sandbox means for the caller:
/// the command's own end when it cannot be exec'd or its cwd entered (the
/// same answer as when the shim's "started" wins the race and the command
/// then exits 127/126/125), a conflict when the sandbox is at its pids
/// limit (the tenant's state, not the server's fault), else the server's
/// failure (with the shim's hint, for the log).
fn start_failure(e: BackendError) -> ManageError {
    match e.source.downcast_ref::<StarterEnded>() {
        Some(StarterEnded::OutOfMemory) => {
            return ManageError::OutOfMemory(format!(
                "the sandbox is at its memory limit: the command could not start; {TRY_AGAIN}"
            ))
        }
        Some(StarterEnded::Killed | StarterEnded::SandboxEnded(_)) => {
            return ManageError::Conflict(format!(
                "the user's sandbox ended (its memory limit, or a stop) while the command was \
                 starting; {TRY_AGAIN}"
            ))
        }
        _ => {}
    }
    let Some(f) = e.source.downcast_ref::<SetupError>() else {
        return e.into();
    };
    let gone = JOIN_STEPS.iter().any(|s| f.step.starts_with(s));
    let gone_errno = [nix::errno::Errno::ESRCH, nix::errno::Errno::ENOENT].map(|e| Some(e as i32));
    if gone && (f.errno.is_none() || gone_errno.contains(&f.errno)) {
        return ManageError::Conflict(format!(
            "the user's sandbox ended (its memory limit, or a stop) while the command was \
             starting; {TRY_AGAIN}"
        ));
    }
    let with_hint = match &f.hint {
        Some(h) => format!("{f} ({h})"),
        None => f.to_string(),
    };
    // The request's own cwd missing (or not a directory) is the command's
    // failure too: 125, as `env --chdir` says it.
    if f.step == STEP_EXEC || f.step.starts_with(STEP_CHDIR) {
        return ManageError::NotStarted {
            exit_code: f.exit_code(),
            message: format!("warren: {with_hint}\n"),
        };
    }
    match f.limit_reached() {
        Some(LimitReached::Memory) => {
            return ManageError::OutOfMemory(format!(
                "the sandbox is at its memory limit: the command could not be forked; {TRY_AGAIN}"
            ))
        }
        Some(LimitReached::Pids) => {
            return ManageError::Conflict(
                "the sandbox is at its limit of processes (pids): no command can start; \
                 wait for some to end or raise the tenant's pids limit"
                    .into(),
            )
        }
        Some(LimitReached::HostPtys) | None => {}
    }
    let detail = format!("{}: {with_hint}", e.context);
    ManageError::Start { detail, source: e }
}

impl From<PrepareError> for ManageError {
    fn from(e: PrepareError) -> Self {
        match e {
            PrepareError::Tenant(t) => ManageError::BadRequest(format!("invalid user id: {t}")),
            PrepareError::State(StateError::SlugTaken { .. }) => {
                ManageError::Conflict(e.to_string())
            }
            // A home left by a tenant deleted before uids were remembered
            // (or made by hand): the message says how to adopt it.
            PrepareError::Workspace(WorkspaceError::WrongOwner { .. }) => {
                ManageError::Conflict(e.to_string())
            }
            other => ManageError::Prepare(other),
        }
    }
}

impl From<SessionError> for ManageError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::NotFound => ManageError::NoSuchTerminal,
            SessionError::Capacity(m) => ManageError::Unavailable(m),
            // The tenant's own limits, as for a command (start_failure).
            SessionError::Limit {
                limit: LimitReached::Memory,
                message,
            } => ManageError::OutOfMemory(message),
            SessionError::Limit { message, .. } => ManageError::Conflict(message),
            SessionError::ShuttingDown => ManageError::Unavailable(e.to_string()),
            // The tenant's limit, not the server's failure.
            SessionError::Backend(b)
                if matches!(
                    b.source.downcast_ref::<StarterEnded>(),
                    Some(StarterEnded::OutOfMemory)
                ) =>
            {
                ManageError::OutOfMemory(format!(
                    "the user's sandbox ran out of memory while it started; {TRY_AGAIN}"
                ))
            }
            other => ManageError::Session(other),
        }
    }
}

/// How commands reach a user's sandbox.
#[derive(Clone)]
pub enum Runner {
    /// `warren serve`: the user's held sandbox, started if needed.
    Registry(Arc<Registry>),
    /// The command line: a sandbox for the one command.
    OneShot(Arc<dyn Backend>),
}

/// A tenant as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserView {
    pub id: String,
    pub slug: String,
    pub host_uid: u32,
    /// The host gid the tenant's files get (with subordinate ids, the
    /// tenant's id of the range); `None` when this server cannot map the
    /// tenant (its range is exhausted, or only host root could be mapped).
    pub host_gid: Option<u32>,
    /// The home on the host.
    pub home_dir: PathBuf,
    /// Unix seconds.
    pub created_at: i64,
    pub last_seen: i64,
    /// The tenant's overrides (`"default"` = the server's).
    pub limits: LimitOverrides,
    /// The tenant's terminal command line; None: the server's.
    pub shell: Option<String>,
    /// `running`, `starting` (or stopping) or `stopped`.
    pub sandbox: String,
    pub terminals: usize,
}

/// The management service.
pub struct Manager {
    settings: Settings,
    /// The server's limits; a tenant's overrides apply on top.
    defaults: Limits,
    state: Mutex<State>,
    runner: Runner,
    /// What one import may hold.
    import_limits: warren_runtime::archive::ArchiveLimits,
    /// Counts commands and their OOM kills (the server's `/metrics`).
    metrics: Option<Arc<dyn crate::counters::ServiceCounters>>,
    /// Audit entries the database could not take yet (see `crate::audit`).
    /// Locked after `state`, never before.
    audit_backlog: Mutex<AuditBacklog>,
    /// Per-tenant lock so imports and deletes of one tenant never overlap.
    tenant_locks: Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The tenants with an export being compressed (one each).
    exports: compressor::ExportSlots,
    /// The server's disk limits on homes (docs/disk.md).
    disk: warren_runtime::disk::DiskLimits,
    /// The tenants' named services (docs/services.md).
    services: Arc<supervisor::Services>,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Manager {
    pub fn new(
        settings: Settings,
        defaults: Limits,
        runner: Runner,
    ) -> Result<Manager, ManageError> {
        let state = State::open(&settings.state_dir)?;
        let registry = match &runner {
            Runner::Registry(reg) => Some(Arc::clone(reg)),
            Runner::OneShot(_) => None,
        };
        let manager = Manager {
            settings,
            defaults,
            state: Mutex::new(state),
            runner,
            import_limits: Default::default(),
            metrics: None,
            audit_backlog: Mutex::new(AuditBacklog::new(AUDIT_BACKLOG_MAX)),
            tenant_locks: Mutex::new(Default::default()),
            exports: Default::default(),
            disk: Default::default(),
            services: supervisor::Services::new(registry, Default::default()),
        };
        manager.load_services()?;
        // At start: a workspace root left looser by an older warren is
        // brought to its mode now, not at the first sandbox.
        crate::sandbox::ensure_workspace_root(&manager.settings, manager.isolation())?;
        Ok(manager)
    }

    /// With other limits for imports than the defaults (1 GiB, 100 000
    /// entries).
    pub fn with_import_limits(mut self, limits: warren_runtime::archive::ArchiveLimits) -> Manager {
        self.import_limits = limits;
        self
    }

    /// With the server's disk limits on homes (as its sandboxes get them).
    pub fn with_disk(mut self, disk: warren_runtime::disk::DiskLimits) -> Manager {
        self.disk = disk;
        self
    }

    /// With the services' settings (keep-alive, log size); before
    /// [`Manager::start_services`].
    pub fn with_services(mut self, settings: ServiceSettings) -> Manager {
        let registry = self.services.registry().ok().cloned();
        self.services = supervisor::Services::new(registry, settings);
        self.load_services()
            .unwrap_or_else(|e| tracing::error!("services could not be loaded: {e}"));
        self
    }

    /// Feeds the server's metrics.
    pub fn with_metrics(mut self, metrics: Arc<dyn crate::counters::ServiceCounters>) -> Manager {
        self.metrics = Some(metrics);
        self
    }

    /// The tier the tenants' sandboxes run in.
    pub fn isolation(&self) -> Isolation {
        match &self.runner {
            Runner::Registry(reg) => reg.backend().isolation(),
            Runner::OneShot(b) => b.isolation(),
        }
    }

    /// `warren-import`/`warren-export` are bound into the sandbox only in
    /// the namespaces tier.
    fn need_namespaces_tier(&self) -> Result<(), ManageError> {
        match self.isolation() {
            Isolation::Namespaces => Ok(()),
            tier => Err(ManageError::Conflict(format!(
                "export/import need the namespaces tier; this sandbox runs in the {tier} tier"
            ))),
        }
    }

    fn count_exec(&self, reason: EndReason) {
        if let Some(m) = &self.metrics {
            m.exec();
            if reason == EndReason::MemoryLimit {
                m.oom_kill();
            }
        }
    }

    pub fn import_limits(&self) -> warren_runtime::archive::ArchiveLimits {
        self.import_limits
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The per-tenant lock that keeps imports and deletes apart.
    pub fn tenant_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .tenant_locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        Arc::clone(locks.entry(id.to_string()).or_default())
    }

    /// Where uploads wait while they are checked.
    pub fn upload_dir(&self) -> PathBuf {
        self.settings.state_dir.join("uploads")
    }

    pub fn now(&self) -> i64 {
        now_secs()
    }
}

impl Drop for Manager {
    /// A last try for held audit entries; what cannot be written is said.
    fn drop(&mut self) {
        let left = self.flush_audit();
        if left > 0 {
            tracing::error!("audit log: {left} entries could not be written and are lost");
        }
    }
}

fn sandbox_state(running: bool, busy: bool) -> String {
    match (running, busy) {
        (_, true) => "starting",
        (true, false) => "running",
        (false, false) => "stopped",
    }
    .to_string()
}

#[cfg(test)]
mod tests;
