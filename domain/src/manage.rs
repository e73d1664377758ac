//! Tenant management: the one code path behind the HTTP API (`/api/...`)
//! and the command line (`warren users ...`, `warren exec`). Both build a
//! [`Manager`]; they differ only in how commands reach a user's sandbox
//! ([`Runner`]): the server joins the user's held sandbox through the
//! session registry, the command line starts a one-shot sandbox.
//!
//! Every action that changes something or runs something for a tenant is
//! written to the audit log (state database), with who asked.

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use warren_runtime::cgroups::{Limits, Usage};
use warren_runtime::report::{SetupError, STEP_EXEC};
use warren_runtime::spec::Isolation;
use warren_runtime::tenant::Tenant;
use warren_runtime::workspace::{self, HomeUsage, WalkBounds, WorkspaceError};

use crate::audit::{AuditBacklog, Flushed, AUDIT_BACKLOG_MAX};
use crate::backend::{
    AppliedLimits, Backend, BackendError, ExecChild, ExecCommand, ExecStdio, StarterEnded,
};
use crate::exec::{self, EndReason, ExecEnd, ExecResult};
use crate::sandbox::{provision, PrepareError, Settings};
use crate::sessions::{Lease, Registry, SessionError, TerminalInfo};
use crate::state::{AuditEntry, LimitOverrides, NewAuditEntry, State, StateError, TenantRecord};
use crate::user::UserId;

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

/// A management failure, with what the caller should be told.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no such user: {0}")]
    NoSuchUser(String),
    #[error("no such terminal")]
    NoSuchTerminal,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Unavailable(String),
    /// Detail for the log only; callers see a generic message.
    #[error("internal error: {0}")]
    Internal(String),
    /// The sandbox could not exec the command (not found: 127, not
    /// executable: 126) or enter its cwd (125). `exec` answers it as the
    /// command's own end, with `message` on stderr, as a shell would.
    #[error("{message}")]
    NotStarted { exit_code: i32, message: String },
}

/// The shim's name for forking a command in a running sandbox
/// (shim/src/join.rs).
const STEP_FORK_COMMAND: &str = "fork command";
/// Its step for entering the command's working directory (shim/src/spawn.rs).
const STEP_CHDIR: &str = "chdir ";
/// The join's steps that meet a sandbox whose PID 1 has ended
/// (shim/src/join.rs): a pid that cannot be opened, a pid reused, a
/// namespace set that is gone (ESRCH).
const STEPS_SANDBOX_GONE: [&str; 3] = [
    "open sandbox PID 1",
    "check sandbox PID 1",
    "join namespaces",
];
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
    if let Some(StarterEnded::OutOfMemory) = e.source.downcast_ref::<StarterEnded>() {
        return ManageError::Conflict(format!(
            "the sandbox is at its memory limit: the command could not start; {TRY_AGAIN}"
        ));
    }
    let Some(f) = e.source.downcast_ref::<SetupError>() else {
        return e.into();
    };
    let gone = STEPS_SANDBOX_GONE.iter().any(|s| f.step.starts_with(s));
    if gone && (f.errno.is_none() || f.errno == Some(nix::errno::Errno::ESRCH as i32)) {
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
    if f.step == STEP_FORK_COMMAND && f.errno == Some(nix::errno::Errno::ENOMEM as i32) {
        return ManageError::Conflict(format!(
            "the sandbox is at its memory limit: the command could not be forked; {TRY_AGAIN}"
        ));
    }
    if f.step == STEP_FORK_COMMAND && f.errno == Some(nix::errno::Errno::EAGAIN as i32) {
        return ManageError::Conflict(
            "the sandbox is at its limit of processes (pids): no command can start; \
             wait for some to end or raise the tenant's pids limit"
                .into(),
        );
    }
    ManageError::Internal(format!("{}: {with_hint}", e.context))
}

impl From<StateError> for ManageError {
    fn from(e: StateError) -> Self {
        ManageError::Internal(e.to_string())
    }
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
            other => ManageError::Internal(other.to_string()),
        }
    }
}

impl From<SessionError> for ManageError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::NotFound => ManageError::NoSuchTerminal,
            SessionError::Capacity(m) => ManageError::Unavailable(m),
            SessionError::ShuttingDown => ManageError::Unavailable(e.to_string()),
            other => ManageError::Internal(other.to_string()),
        }
    }
}

impl From<BackendError> for ManageError {
    fn from(e: BackendError) -> Self {
        ManageError::Internal(e.to_string())
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

/// A running command plus whatever keeps its sandbox alive.
pub struct Running {
    pub child: ExecChild,
    _lease: Option<Lease>,
}

/// A tenant as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserView {
    pub id: String,
    pub slug: String,
    pub host_uid: u32,
    /// Unix seconds.
    pub created_at: i64,
    pub last_seen: i64,
    /// The tenant's overrides (`"default"` = the server's).
    pub limits: LimitOverrides,
    /// `running`, `starting` (or stopping) or `stopped`.
    pub sandbox: String,
    pub terminals: usize,
}

/// `stats`: what a tenant uses now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stats {
    pub user: UserView,
    /// `running`, `starting` or `stopped`.
    pub sandbox: String,
    /// The sandbox's isolation tier (when running).
    pub tier: Option<String>,
    /// The limits in force (when running: as applied; else what the next
    /// sandbox will ask for).
    pub limits: Limits,
    /// Limits that could not be applied on this host, and why.
    pub limits_missing: Vec<String>,
    pub limits_reasons: Vec<String>,
    /// From the sandbox's cgroup (when running and it has one).
    pub memory_bytes: Option<u64>,
    pub cpu_usec: Option<u64>,
    pub pids: Option<u64>,
    pub terminals: usize,
    pub running_commands: usize,
    pub workspace: Option<HomeUsage>,
    /// Why `workspace` is missing.
    pub workspace_error: Option<String>,
}

/// The body of an `exec` request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    /// Relative to the user's home.
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Given to the command on stdin (UTF-8 text).
    #[serde(default)]
    pub stdin: Option<String>,
    /// Seconds; default 60, at most 3600.
    #[serde(default)]
    pub timeout_secs: Option<f64>,
}

/// What delete did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deleted {
    pub id: String,
    pub home_removed: bool,
    pub terminals_closed: usize,
}

/// The management service.
pub struct Manager {
    settings: Settings,
    /// The server's limits; a tenant's overrides apply on top.
    defaults: Limits,
    state: Mutex<State>,
    runner: Runner,
    /// What one import may hold.
    import_limits: warren_runtime::archive::Limits,
    /// Counts commands and their OOM kills (the server's `/metrics`).
    metrics: Option<Arc<dyn crate::counters::ServiceCounters>>,
    /// Audit entries the database could not take yet (see `crate::audit`).
    /// Locked after `state`, never before.
    audit_backlog: Mutex<AuditBacklog>,
    /// Per-tenant lock so imports and deletes of one tenant never overlap.
    tenant_locks: Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
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
        let manager = Manager {
            settings,
            defaults,
            state: Mutex::new(state),
            runner,
            import_limits: Default::default(),
            metrics: None,
            audit_backlog: Mutex::new(AuditBacklog::new(AUDIT_BACKLOG_MAX)),
            tenant_locks: Mutex::new(Default::default()),
        };
        // At start: a workspace root left looser by an older warren is
        // brought to its mode now, not at the first sandbox.
        crate::sandbox::ensure_workspace_root(&manager.settings, manager.isolation())?;
        Ok(manager)
    }

    /// With other limits for imports than the defaults (1 GiB, 100 000
    /// entries).
    pub fn with_import_limits(mut self, limits: warren_runtime::archive::Limits) -> Manager {
        self.import_limits = limits;
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

    pub fn import_limits(&self) -> warren_runtime::archive::Limits {
        self.import_limits
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends to the audit log. A failure to write it (a full disk) is
    /// never fatal to the action, which has already happened: the entry is
    /// held with any earlier ones and written with the next (see
    /// `crate::audit`).
    pub fn audit(
        &self,
        actor: &str,
        action: &str,
        tenant: Option<&str>,
        outcome: &str,
        detail: serde_json::Value,
    ) {
        let entry = NewAuditEntry::now(actor, action, tenant, outcome, detail);
        let mut state = self.state();
        let mut backlog = self.audit_backlog();
        let dropped = backlog.push(entry);
        if dropped > 0 {
            if let Some(m) = &self.metrics {
                m.audit_dropped(dropped);
            }
            if backlog.dropped() == dropped {
                tracing::error!(
                    "audit log: more than {AUDIT_BACKLOG_MAX} entries waiting for the state \
                     database; dropping the oldest (counted in warren_audit_dropped_total)"
                );
            }
        }
        if backlog.due(AUDIT_RETRY_EVERY) {
            self.write_audit_backlog(&mut state, &mut backlog);
        } else if let Some(m) = &self.metrics {
            m.audit_pending(backlog.len());
        }
    }

    fn audit_backlog(&self) -> std::sync::MutexGuard<'_, AuditBacklog> {
        self.audit_backlog
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write_audit_backlog(&self, state: &mut State, backlog: &mut AuditBacklog) {
        match backlog.flush(state) {
            Ok(Flushed::Wrote(n)) if n > 1 => {
                tracing::info!(
                    "audit log: wrote {n} entries held while the state database refused writes"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::error!(
                "audit log: {e}; holding entries in memory (at most {AUDIT_BACKLOG_MAX}) \
                 and retrying"
            ),
        }
        if let Some(m) = &self.metrics {
            m.audit_pending(backlog.len());
        }
    }

    /// Writes held audit entries, if any; returns how many still wait.
    pub fn flush_audit(&self) -> usize {
        let mut state = self.state();
        let mut backlog = self.audit_backlog();
        if !backlog.is_empty() {
            self.write_audit_backlog(&mut state, &mut backlog);
        }
        backlog.len()
    }

    /// The server's retry of held audit entries, every
    /// [`AUDIT_RETRY_EVERY`], for as long as the manager lives.
    pub async fn retry_audit_periodically(me: std::sync::Weak<Manager>) {
        loop {
            tokio::time::sleep(AUDIT_RETRY_EVERY).await;
            let Some(m) = me.upgrade() else { return };
            if m.audit_backlog().is_empty() {
                continue;
            }
            let _ = tokio::task::spawn_blocking(move || m.flush_audit()).await;
        }
    }

    pub fn audit_log(
        &self,
        tenant: Option<&str>,
        action: Option<&str>,
        after: i64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, ManageError> {
        // Held entries first, so a page never skips what happened before.
        self.flush_audit();
        Ok(self
            .state()
            .audit_log(tenant, action, after, limit.min(1000))?)
    }

    fn record(&self, id: &str) -> Result<TenantRecord, ManageError> {
        UserId::parse(id).map_err(|e| ManageError::BadRequest(format!("invalid user id: {e}")))?;
        self.state()
            .find(id)?
            .ok_or_else(|| ManageError::NoSuchUser(id.to_string()))
    }

    fn view(&self, r: TenantRecord) -> UserView {
        let (sandbox, terminals) = match &self.runner {
            Runner::Registry(reg) => match UserId::parse(&r.id) {
                Ok(u) => {
                    let s = reg.sessions_of(&u);
                    (
                        sandbox_state(s.sandbox.is_some(), s.busy),
                        s.terminals.len(),
                    )
                }
                Err(_) => ("stopped".into(), 0),
            },
            Runner::OneShot(_) => ("stopped".into(), 0),
        };
        UserView {
            id: r.id,
            slug: r.slug,
            host_uid: r.host_uid,
            created_at: r.created_at,
            last_seen: r.last_seen,
            limits: r.limits,
            sandbox,
            terminals,
        }
    }

    pub fn list(&self) -> Result<Vec<UserView>, ManageError> {
        let records = self.state().list()?;
        Ok(records.into_iter().map(|r| self.view(r)).collect())
    }

    pub fn show(&self, id: &str) -> Result<UserView, ManageError> {
        let r = self.record(id)?;
        Ok(self.view(r))
    }

    /// Creates the tenant (uid allocation, home) unless it exists; true
    /// when it was created now.
    pub fn get_or_create(&self, actor: &str, id: &str) -> Result<(UserView, bool), ManageError> {
        UserId::parse(id).map_err(|e| ManageError::BadRequest(format!("invalid user id: {e}")))?;
        let existed = self.state().find(id)?.is_some();
        let p = provision(&self.settings, id, self.isolation())?;
        if !existed {
            self.audit(
                actor,
                "user.create",
                Some(id),
                "ok",
                serde_json::json!({"host_uid": p.record.host_uid}),
            );
        }
        Ok((self.view(p.record), !existed))
    }

    pub fn set_limits(
        &self,
        actor: &str,
        id: &str,
        limits: &LimitOverrides,
    ) -> Result<UserView, ManageError> {
        self.record(id)?;
        limits.validate().map_err(ManageError::BadRequest)?;
        if !self.state().set_limits(id, limits)? {
            return Err(ManageError::NoSuchUser(id.to_string()));
        }
        self.audit(
            actor,
            "limits",
            Some(id),
            "ok",
            serde_json::to_value(limits).unwrap_or_default(),
        );
        self.show(id)
    }

    pub async fn stats(&self, id: &str) -> Result<Stats, ManageError> {
        let r = self.record(id)?;
        let user = self.view(r.clone());
        let (sandbox, running_commands) = match &self.runner {
            Runner::Registry(reg) => {
                let s = reg.sessions_of(
                    &UserId::parse(id).map_err(|e| ManageError::BadRequest(e.to_string()))?,
                );
                (s.sandbox, s.running_commands)
            }
            Runner::OneShot(_) => (None, 0),
        };
        let applied = sandbox
            .as_ref()
            .map(|s| s.limits())
            .unwrap_or(AppliedLimits {
                limits: r.limits.apply(self.defaults),
                ..Default::default()
            });
        let usage = sandbox
            .as_ref()
            .and_then(|s| s.usage())
            .unwrap_or(Usage::default());
        let tenant = Tenant::parse(id).map_err(|e| ManageError::BadRequest(e.to_string()))?;
        let bounds = WalkBounds {
            deadline: Instant::now() + STATS_WALK_TIME,
            max_entries: STATS_WALK_ENTRIES,
            max_depth: 256,
        };
        let root = self.settings.workspace_root.clone();
        let measured =
            tokio::task::spawn_blocking(move || workspace::measure(&root, &tenant, bounds))
                .await
                .map_err(|e| ManageError::Internal(e.to_string()))?;
        let (workspace, workspace_error) = match measured {
            Ok(u) => (Some(u), None),
            // With subordinate ids the home belongs to an id the server
            // cannot read: count from inside, as its owner, when the user's
            // sandbox is running (stats never start one).
            Err(e) => {
                let child = match (&sandbox, &self.runner) {
                    (Some(sb), _) => Some(sb.exec(find_command(), ExecStdio::piped()).await),
                    // The command line may start a one-shot sandbox for it.
                    (None, Runner::OneShot(b)) => {
                        let user = UserId::parse(id)
                            .map_err(|e| ManageError::BadRequest(e.to_string()))?;
                        Some(b.exec_once(&user, find_command(), ExecStdio::piped()).await)
                    }
                    (None, Runner::Registry(_)) => None,
                };
                match child {
                    Some(Ok(child)) => (Some(measure_inside(child).await), None),
                    Some(Err(inner)) => (None, Some(format!("{e}; from inside: {inner}"))),
                    None => (
                        None,
                        Some(format!(
                            "{e} (start the user's sandbox to count from inside)"
                        )),
                    ),
                }
            }
        };
        Ok(Stats {
            sandbox: user.sandbox.clone(),
            terminals: user.terminals,
            user,
            tier: sandbox.as_ref().map(|s| s.tier().to_string()),
            limits: applied.limits,
            limits_missing: applied.missing,
            limits_reasons: applied.reasons,
            memory_bytes: usage.memory_bytes,
            cpu_usec: usage.cpu_usec,
            pids: usage.pids,
            running_commands,
            workspace,
            workspace_error,
        })
    }

    /// Starts `cmd` in the user's sandbox.
    pub async fn start(
        &self,
        id: &str,
        cmd: ExecCommand,
        stdio: ExecStdio,
    ) -> Result<Running, ManageError> {
        self.record(id)?;
        let user = UserId::parse(id).map_err(|e| ManageError::BadRequest(e.to_string()))?;
        match &self.runner {
            Runner::Registry(reg) => {
                let lease = reg.lease(&user).await?;
                let child = lease
                    .sandbox()
                    .exec(cmd, stdio)
                    .await
                    .map_err(start_failure)?;
                Ok(Running {
                    child,
                    _lease: Some(lease),
                })
            }
            Runner::OneShot(backend) => Ok(Running {
                child: backend
                    .exec_once(&user, cmd, stdio)
                    .await
                    .map_err(start_failure)?,
                _lease: None,
            }),
        }
    }

    fn exec_command(req: &ExecRequest) -> Result<(ExecCommand, Duration), ManageError> {
        if req.argv.is_empty() || req.argv[0].is_empty() {
            return Err(ManageError::BadRequest("argv must name a command".into()));
        }
        if let Some(n) = req.cwd.as_ref().map(|c| c.chars().count()) {
            if n > MAX_CWD_CHARS {
                return Err(ManageError::BadRequest(format!(
                    "cwd is {n} characters long; the limit is {MAX_CWD_CHARS}"
                )));
            }
        }
        let cwd = exec::resolve_cwd(req.cwd.as_deref())
            .map_err(|e| ManageError::BadRequest(e.to_string()))?;
        for (k, v) in &req.env {
            let ok = !k.is_empty() && !k.contains('=') && !k.contains('\0') && !v.contains('\0');
            if !ok {
                return Err(ManageError::BadRequest(format!(
                    "invalid environment variable {k:?}"
                )));
            }
        }
        if req.argv.iter().any(|a| a.contains('\0')) {
            return Err(ManageError::BadRequest("argv contains a NUL byte".into()));
        }
        let timeout = match req.timeout_secs {
            None => exec::DEFAULT_TIMEOUT,
            Some(t)
                if t.is_finite()
                    && (MIN_TIMEOUT_SECS..=exec::MAX_TIMEOUT.as_secs_f64()).contains(&t) =>
            {
                Duration::from_secs_f64(t)
            }
            Some(t) => {
                return Err(ManageError::BadRequest(format!(
                    "timeout_secs {t} is outside {MIN_TIMEOUT_SECS} to {}",
                    exec::MAX_TIMEOUT.as_secs()
                )))
            }
        };
        Ok((
            ExecCommand {
                argv: req.argv.clone(),
                env: req
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                cwd,
            },
            timeout,
        ))
    }

    /// Checks the request and starts the command; a failed start is
    /// audited here.
    async fn start_exec(
        &self,
        actor: &str,
        id: &str,
        req: &ExecRequest,
        stdio: ExecStdio,
    ) -> Result<(Running, Duration), ManageError> {
        let (cmd, timeout) = Self::exec_command(req)?;
        match self.start(id, cmd, stdio).await {
            Ok(r) => Ok((r, timeout)),
            // Audited by the caller, as the command's end.
            Err(e @ ManageError::NotStarted { .. }) => Err(e),
            Err(e) => {
                self.audit(
                    actor,
                    "exec",
                    Some(id),
                    "failed",
                    serde_json::json!({"argv": req.argv, "error": e.to_string()}),
                );
                Err(e)
            }
        }
    }

    /// Counts and audits a command that ran.
    fn exec_ended(&self, actor: &str, id: &str, argv: &[String], end: &ExecEnd, stream: bool) {
        self.count_exec(end.reason);
        self.audit(
            actor,
            "exec",
            Some(id),
            "ok",
            serde_json::json!({
                "argv": argv,
                "stream": stream,
                "exit_code": end.exit_code,
                "signal": end.signal,
                "reason": end.reason,
                "duration_ms": end.duration_ms,
            }),
        );
    }

    /// The end of a command that could not be exec'd, counted and audited
    /// like any other; its message is what it "printed" on stderr.
    fn not_started_end(
        &self,
        actor: &str,
        id: &str,
        argv: &[String],
        exit_code: i32,
        began: Instant,
        stream: bool,
    ) -> ExecEnd {
        let end = ExecEnd {
            exit_code: Some(exit_code),
            signal: None,
            reason: EndReason::Exit,
            duration_ms: began.elapsed().as_millis() as u64,
        };
        self.exec_ended(actor, id, argv, &end, stream);
        end
    }

    /// Runs a command and returns everything it did.
    pub async fn exec(
        &self,
        actor: &str,
        id: &str,
        req: ExecRequest,
    ) -> Result<ExecResult, ManageError> {
        let began = Instant::now();
        let (running, timeout) = match self.start_exec(actor, id, &req, ExecStdio::piped()).await {
            Err(ManageError::NotStarted { exit_code, message }) => {
                let end = self.not_started_end(actor, id, &req.argv, exit_code, began, false);
                return Ok(ExecResult {
                    exit_code: end.exit_code,
                    signal: None,
                    reason: end.reason,
                    stdout: String::new(),
                    stderr: message,
                    stdout_truncated: false,
                    stderr_truncated: false,
                    duration_ms: end.duration_ms,
                });
            }
            other => other?,
        };
        let stdin = req.stdin.clone().unwrap_or_default().into_bytes();
        let result = exec::collect(running.child, stdin, timeout, exec::MAX_OUTPUT).await;
        drop(running._lease);
        self.exec_ended(actor, id, &req.argv, &result.end(), false);
        Ok(result)
    }

    /// Runs a command and streams its output (NDJSON, see
    /// [`exec::stream`]).
    pub async fn exec_stream(
        self: &Arc<Self>,
        actor: &str,
        id: &str,
        req: ExecRequest,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>, ManageError>
    {
        let began = Instant::now();
        let (running, timeout) = match self.start_exec(actor, id, &req, ExecStdio::piped()).await {
            Err(ManageError::NotStarted { exit_code, message }) => {
                let end = self.not_started_end(actor, id, &req.argv, exit_code, began, true);
                return Ok(not_started_stream(&message, &end));
            }
            other => other?,
        };
        let Running { child, _lease } = running;
        let me = Arc::clone(self);
        let (actor, id2, argv) = (actor.to_string(), id.to_string(), req.argv.clone());
        let stdin = req.stdin.unwrap_or_default().into_bytes();
        Ok(exec::stream(child, stdin, timeout, move |end: &ExecEnd| {
            drop(_lease);
            me.exec_ended(&actor, &id2, &argv, end, true);
        }))
    }

    /// Runs a command with the caller's own stdio (the command line's
    /// `warren exec`): nothing is captured, the end is returned.
    pub async fn exec_inherit(
        &self,
        actor: &str,
        id: &str,
        req: ExecRequest,
    ) -> Result<ExecEnd, ManageError> {
        let stdio = ExecStdio {
            stdin: std::process::Stdio::inherit(),
            stdout: std::process::Stdio::inherit(),
            stderr: std::process::Stdio::inherit(),
        };
        let began = Instant::now();
        let (mut running, timeout) = match self.start_exec(actor, id, &req, stdio).await {
            Err(ManageError::NotStarted { exit_code, message }) => {
                // The caller's stderr is the command's.
                eprint!("{message}");
                return Ok(self.not_started_end(actor, id, &req.argv, exit_code, began, false));
            }
            other => other?,
        };
        let (exit, timed_out) = exec::wait_with_timeout(&mut running.child.process, timeout).await;
        let end = ExecEnd {
            exit_code: exit.code,
            signal: exit.signal,
            reason: exec::reason_of(&exit, timed_out),
            duration_ms: began.elapsed().as_millis() as u64,
        };
        self.exec_ended(actor, id, &req.argv, &end, false);
        Ok(end)
    }

    pub fn terminals(&self, id: &str) -> Result<Vec<TerminalInfo>, ManageError> {
        self.record(id)?;
        match &self.runner {
            Runner::Registry(reg) => Ok(reg
                .sessions_of(
                    &UserId::parse(id).map_err(|e| ManageError::BadRequest(e.to_string()))?,
                )
                .terminals),
            Runner::OneShot(_) => Ok(Vec::new()),
        }
    }

    pub fn close_terminal(&self, actor: &str, id: &str, terminal: &str) -> Result<(), ManageError> {
        self.record(id)?;
        let Runner::Registry(reg) = &self.runner else {
            return Err(ManageError::NoSuchTerminal);
        };
        let user = UserId::parse(id).map_err(|e| ManageError::BadRequest(e.to_string()))?;
        reg.close_terminal(&user, terminal)?;
        self.audit(
            actor,
            "terminal.close",
            Some(id),
            "ok",
            serde_json::json!({"terminal": terminal}),
        );
        Ok(())
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

    /// Stops the user's sandbox, removes the tenant and, if asked, its
    /// home. The uid is never given to another id; a kept home's id gets
    /// it back when re-created (see `state`).
    pub async fn delete(
        &self,
        actor: &str,
        id: &str,
        remove_home: bool,
    ) -> Result<Deleted, ManageError> {
        let record = self.record(id)?;
        let lock = self.tenant_lock(id);
        let _one_at_a_time = lock.lock().await;
        let user = UserId::parse(id).map_err(|e| ManageError::BadRequest(e.to_string()))?;
        let (terminals_closed, _start_lock) = match &self.runner {
            Runner::Registry(reg) => {
                let n = reg.sessions_of(&user).terminals.len();
                (n, Some(reg.stop_user(&user, Duration::from_secs(10)).await))
            }
            Runner::OneShot(_) => (0, None),
        };
        let tenant = Tenant::parse(id).map_err(|e| ManageError::BadRequest(e.to_string()))?;
        let mut home_removed = false;
        if remove_home {
            if let Err(e) = self.remove_home(&user, &tenant).await {
                self.audit(
                    actor,
                    "delete",
                    Some(id),
                    "failed",
                    serde_json::json!({"error": e.to_string()}),
                );
                return Err(e);
            }
            home_removed = true;
        }
        self.state().delete(id, !home_removed)?;
        self.audit(
            actor,
            "delete",
            Some(id),
            "ok",
            serde_json::json!({"home_removed": home_removed, "host_uid": record.host_uid, "terminals_closed": terminals_closed}),
        );
        Ok(Deleted {
            id: id.to_string(),
            home_removed,
            terminals_closed,
        })
    }

    /// Removes the home without following any symlink in it: moved aside
    /// first (so nothing starts in a half-removed home), then removed with
    /// `remove_dir_all`, which never follows symlinks. A home the server
    /// cannot read (subordinate ids) is emptied from inside a sandbox, as
    /// its owner, first.
    async fn remove_home(&self, user: &UserId, tenant: &Tenant) -> Result<(), ManageError> {
        let root = self.settings.workspace_root.clone();
        let home = tenant.workspace_in(&root);
        match std::fs::symlink_metadata(&home) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ManageError::Internal(format!("{}: {e}", home.display()))),
            Ok(m) if !m.is_dir() => {
                return Err(ManageError::Conflict(format!(
                    "{} is not a directory; remove it by hand",
                    home.display()
                )))
            }
            Ok(_) => {}
        }
        // With subordinate ids the home belongs to an id we cannot read.
        let emptied_inside = std::fs::read_dir(&home).is_err();
        if emptied_inside {
            self.empty_from_inside(user).await?;
        }
        let aside = root.join(format!(
            ".deleted-{}-{}",
            tenant.slug,
            crate::random::random_token()
                .chars()
                .take(8)
                .collect::<String>()
        ));
        std::fs::rename(&home, &aside)
            .map_err(|e| ManageError::Internal(format!("move {} aside: {e}", home.display())))?;
        tokio::task::spawn_blocking(move || {
            // An emptied home cannot be listed by us, only removed.
            let r = if emptied_inside {
                std::fs::remove_dir(&aside)
            } else {
                std::fs::remove_dir_all(&aside)
            };
            r.map_err(|e| (aside, e))
        })
        .await
        .map_err(|e| ManageError::Internal(e.to_string()))?
        .map_err(|(p, e)| ManageError::Internal(format!("remove {}: {e}", p.display())))
    }

    async fn empty_from_inside(&self, user: &UserId) -> Result<(), ManageError> {
        let backend = match &self.runner {
            Runner::Registry(reg) => reg.backend(),
            Runner::OneShot(b) => Arc::clone(b),
        };
        let cmd = ExecCommand {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                "chmod -R u+rwX . 2>/dev/null; find . -mindepth 1 -delete".into(),
            ],
            ..Default::default()
        };
        let child = backend.exec_once(user, cmd, ExecStdio::piped()).await?;
        let r = exec::collect(child, Vec::new(), Duration::from_secs(300), 64 << 10).await;
        if r.reason != EndReason::Exit || r.exit_code != Some(0) {
            return Err(ManageError::Internal(format!(
                "emptying the home from inside its sandbox failed: {}",
                r.stderr.trim()
            )));
        }
        Ok(())
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

/// The commands that move a home in and out, inside the sandbox as the
/// user (the shim answers to these names; see docs/archives.md).
pub const IMPORT_COMMAND: &str = "/opt/warren/bin/warren-import";
pub const EXPORT_COMMAND: &str = "/opt/warren/bin/warren-export";

/// How long an import or export may run.
pub const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// What an import did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Imported {
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    /// Bytes of the upload (compressed).
    pub upload_bytes: u64,
}

impl Manager {
    /// Streams the user's home as tar.gz, made inside their sandbox by
    /// `warren-export` as the user: host-side code never walks the home.
    /// A failure after the first byte ends the stream with an error (the
    /// client sees a cut transfer, never a complete-looking archive).
    pub async fn export(
        self: &Arc<Self>,
        actor: &str,
        id: &str,
    ) -> Result<impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>>, ManageError>
    {
        self.need_namespaces_tier()?;
        let cmd = ExecCommand {
            argv: vec![EXPORT_COMMAND.into()],
            ..Default::default()
        };
        let stdio = ExecStdio {
            stdin: std::process::Stdio::null(),
            stdout: std::process::Stdio::piped(),
            stderr: std::process::Stdio::piped(),
        };
        let running = self.start(id, cmd, stdio).await?;
        let Running { child, _lease } = running;
        let ExecChild {
            stdout,
            stderr,
            mut process,
            ..
        } = child;
        let stdout = stdout
            .and_then(|s| tokio::process::ChildStdout::from_std(s).ok())
            .ok_or_else(|| ManageError::Internal("export: no stdout".into()))?;
        let stderr = stderr.and_then(|s| tokio::process::ChildStderr::from_std(s).ok());
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(8);
        let me = Arc::clone(self);
        let (actor, id) = (actor.to_string(), id.to_string());
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let errors = tokio::spawn(async move {
                let mut text = String::new();
                if let Some(mut e) = stderr {
                    let mut buf = Vec::new();
                    let _ = (&mut e).take(64 << 10).read_to_end(&mut buf).await;
                    text = String::from_utf8_lossy(&buf).into_owned();
                }
                text
            });
            let mut out = stdout;
            let mut sent = 0u64;
            let mut buf = vec![0u8; 64 << 10];
            let copy = async {
                loop {
                    match out.read(&mut buf).await {
                        Ok(0) => return true,
                        Ok(n) => {
                            sent += n as u64;
                            let chunk = bytes::Bytes::copy_from_slice(&buf[..n]);
                            if tx.send(Ok(chunk)).await.is_err() {
                                return false; // the client went away
                            }
                        }
                        Err(_) => return false,
                    }
                }
            };
            let completed = tokio::time::timeout(ARCHIVE_TIMEOUT, copy)
                .await
                .unwrap_or(false);
            if !completed {
                process.kill();
            }
            let exit = process.wait().await;
            let stderr = errors.await.unwrap_or_default();
            let ok = completed && exit.code == Some(0);
            if !ok {
                let why = format!(
                    "export failed (exit {:?}, signal {:?}): {}",
                    exit.code,
                    exit.signal,
                    stderr.trim()
                );
                tracing::warn!(user = %id, "{why}");
                let _ = tx.send(Err(std::io::Error::other(why))).await;
            }
            drop(_lease);
            me.audit(
                &actor,
                "export",
                Some(&id),
                if ok { "ok" } else { "failed" },
                serde_json::json!({"bytes": sent, "exit_code": exit.code, "signal": exit.signal}),
            );
        });
        Ok(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    }

    /// Unpacks a tar.gz into the user's home. The upload is spooled to an
    /// unnamed temporary file (bounded), checked whole by
    /// `archive::validate` — a refused archive writes nothing into the
    /// home — and only then unpacked by `warren-import` inside the user's
    /// sandbox, as the user, so the host never writes into a home a tenant
    /// controls. Imports (and deletes) of one tenant run one at a time.
    pub async fn import<S>(&self, actor: &str, id: &str, upload: S) -> Result<Imported, ManageError>
    where
        S: futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Unpin,
    {
        self.record(id)?;
        let lock = self.tenant_lock(id);
        let _one_at_a_time = lock.lock().await;
        let result = self.import_locked(id, upload).await;
        match &result {
            Ok(s) => self.audit(
                actor,
                "import",
                Some(id),
                "ok",
                serde_json::to_value(s).unwrap_or_default(),
            ),
            Err(e) => self.audit(
                actor,
                "import",
                Some(id),
                match e {
                    ManageError::Internal(_) => "failed",
                    _ => "refused",
                },
                serde_json::json!({"error": e.to_string()}),
            ),
        }
        result
    }

    async fn import_locked<S>(&self, id: &str, mut upload: S) -> Result<Imported, ManageError>
    where
        S: futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Unpin,
    {
        use futures_util::StreamExt;
        use std::io::{Seek, Write};
        self.need_namespaces_tier()?;
        let dir = self.upload_dir();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| ManageError::Internal(format!("{}: {e}", dir.display())))?;
        let mut file = tempfile::tempfile_in(&dir).map_err(|e| {
            ManageError::Internal(format!("temporary file in {}: {e}", dir.display()))
        })?;
        let mut size = 0u64;
        while let Some(chunk) = upload.next().await {
            let chunk =
                chunk.map_err(|e| ManageError::BadRequest(format!("reading the upload: {e}")))?;
            size += chunk.len() as u64;
            let max = self.import_limits.max_archive_bytes();
            if size > max {
                return Err(ManageError::TooLarge(format!(
                    "the upload is larger than {} MiB",
                    max >> 20
                )));
            }
            file.write_all(&chunk)
                .map_err(|e| ManageError::Internal(format!("spooling the upload: {e}")))?;
        }
        if size == 0 {
            return Err(ManageError::BadRequest(
                "empty upload: send a tar.gz as the request body".into(),
            ));
        }
        file.rewind()
            .map_err(|e| ManageError::Internal(e.to_string()))?;
        let check = file
            .try_clone()
            .map_err(|e| ManageError::Internal(e.to_string()))?;
        let limits = self.import_limits;
        tokio::task::spawn_blocking(move || warren_runtime::archive::validate(check, &limits))
            .await
            .map_err(|e| ManageError::Internal(e.to_string()))?
            .map_err(|e| {
                use warren_runtime::archive::ArchiveError as A;
                match e {
                    A::Io { .. } => ManageError::Internal(format!("checking the upload: {e}")),
                    A::EntryTooBig { .. }
                    | A::TooManyBytes { .. }
                    | A::TooLarge { .. }
                    | A::TooManyEntries { .. }
                    | A::TooMuchMetadata { .. } => {
                        ManageError::TooLarge(format!("archive refused: {e}"))
                    }
                    e => ManageError::BadRequest(format!("archive refused: {e}")),
                }
            })?;
        file.rewind()
            .map_err(|e| ManageError::Internal(e.to_string()))?;
        let cmd = ExecCommand {
            argv: vec![
                IMPORT_COMMAND.into(),
                "--max-bytes".into(),
                limits.max_bytes.to_string(),
                "--max-entries".into(),
                limits.max_entries.to_string(),
                "--max-entry-bytes".into(),
                limits.max_entry_bytes.to_string(),
            ],
            ..Default::default()
        };
        let stdio = ExecStdio {
            stdin: std::process::Stdio::from(file),
            stdout: std::process::Stdio::piped(),
            stderr: std::process::Stdio::piped(),
        };
        let running = self.start(id, cmd, stdio).await?;
        let r = exec::collect(running.child, Vec::new(), ARCHIVE_TIMEOUT, 64 << 10).await;
        if r.reason != EndReason::Exit || r.exit_code != Some(0) {
            if r.reason != EndReason::Exit {
                // Killed while unpacking: its staging directory is left.
                self.clean_import_leftovers(id).await;
            }
            return Err(import_failure(&r));
        }
        let s: warren_runtime::archive::Summary =
            serde_json::from_str(r.stdout.trim()).map_err(|e| {
                ManageError::Internal(format!("warren-import said {:?}: {e}", r.stdout))
            })?;
        Ok(Imported {
            entries: s.entries,
            files: s.files,
            dirs: s.dirs,
            symlinks: s.symlinks,
            bytes: s.bytes,
            upload_bytes: size,
        })
    }
}

impl Manager {
    /// Removes what an import killed while unpacking left in the home
    /// (`warren-import --clean`, inside the sandbox as the user: host-side
    /// code never walks a home). Best effort: the next import sweeps too.
    async fn clean_import_leftovers(&self, id: &str) {
        let cmd = ExecCommand {
            argv: vec![IMPORT_COMMAND.into(), "--clean".into()],
            ..Default::default()
        };
        let stdio = ExecStdio {
            stdin: std::process::Stdio::null(),
            stdout: std::process::Stdio::piped(),
            stderr: std::process::Stdio::piped(),
        };
        let r = match self.start(id, cmd, stdio).await {
            Ok(running) => {
                exec::collect(running.child, Vec::new(), Duration::from_secs(60), 64 << 10).await
            }
            Err(e) => {
                tracing::warn!(user = id, "cleaning after a killed import: {e}");
                return;
            }
        };
        if r.reason != EndReason::Exit || r.exit_code != Some(0) {
            tracing::warn!(
                user = id,
                "cleaning after a killed import: {:?} {:?}: {}",
                r.reason,
                r.exit_code,
                r.stderr.trim()
            );
        }
    }
}

/// What a failed `warren-import` means for the caller. Imports are
/// all-or-nothing, so each of these changed nothing in the home. The
/// user's own limits and processes are not a server fault (found by the
/// API fuzzer: an OOM kill answered 500, then a SIGKILL not recognised as
/// one did).
fn import_failure(r: &ExecResult) -> ManageError {
    const NOTHING: &str = "nothing was imported";
    match r.reason {
        EndReason::MemoryLimit => ManageError::TooLarge(format!(
            "unpacking this archive needs more memory than the user's memory limit allows; {NOTHING}"
        )),
        EndReason::Signal => ManageError::Conflict(format!(
            "warren-import was killed by signal {} inside the user's sandbox (the user's limits or own processes); {NOTHING}",
            r.signal.unwrap_or(0)
        )),
        // ENOSPC, EDQUOT: the home's disk or quota, the user's to free.
        _ if r.stderr.contains("(os error 28)") || r.stderr.contains("(os error 122)") => {
            ManageError::TooLarge(format!(
                "the user's home has no room for this archive ({}); {NOTHING}",
                r.stderr.trim()
            ))
        }
        // Exit 1: refused against this home (it has a directory where the
        // archive has a file, a directory it cannot write...), checked
        // before anything is written.
        EndReason::Exit if r.exit_code == Some(1) => ManageError::Conflict(format!(
            "the archive does not fit the user's home: {}; {NOTHING}",
            r.stderr.trim().trim_start_matches("warren-import: ")
        )),
        _ => ManageError::Internal(format!(
            "warren-import ended with {:?} {:?}/{:?}: {}",
            r.reason,
            r.exit_code,
            r.signal,
            r.stderr.trim()
        )),
    }
}

/// The NDJSON of `exec/stream` for a command that could not be exec'd:
/// its message on stderr, then its end.
fn not_started_stream(
    message: &str,
    end: &ExecEnd,
) -> tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    for value in [
        serde_json::json!({"stream": "stderr", "data": message}),
        serde_json::to_value(end).unwrap_or_default(),
    ] {
        let mut line = value.to_string().into_bytes();
        line.push(b'\n');
        let _ = tx.try_send(Ok(bytes::Bytes::from(line)));
    }
    rx
}

/// Counts a home from inside its sandbox with `find -P` (never follows a
/// symlink), bounded like the host-side walk.
fn find_command() -> ExecCommand {
    ExecCommand {
        argv: ["find", ".", "-mindepth", "1", "-printf", "%y %s\n"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    }
}

async fn measure_inside(child: ExecChild) -> HomeUsage {
    let r = exec::collect(child, Vec::new(), STATS_WALK_TIME, 64 << 20).await;
    let mut u = HomeUsage {
        complete: r.reason == EndReason::Exit && r.exit_code == Some(0) && !r.stdout_truncated,
        ..Default::default()
    };
    for line in r.stdout.lines() {
        let (kind, size) = line.split_once(' ').unwrap_or((line, "0"));
        match kind {
            "f" => {
                u.files += 1;
                u.bytes += size.parse::<u64>().unwrap_or(0);
            }
            "d" => u.dirs += 1,
            "l" => u.symlinks += 1,
            _ => u.other += 1,
        }
    }
    u
}

fn sandbox_state(running: bool, busy: bool) -> String {
    match (running, busy) {
        (_, true) => "starting",
        (true, false) => "running",
        (false, false) => "stopped",
    }
    .to_string()
}
