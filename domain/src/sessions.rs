//! The session registry: one sandbox per user, holding that user's
//! terminals.
//!
//! * A terminal outlives its WebSocket: a client reattaches by terminal id,
//!   and only the terminal's own user can (anybody else gets "no such
//!   terminal", the same answer as for an id that never existed, so ids leak
//!   nothing).
//! * A terminal nobody watches is killed after the grace period
//!   (`--terminal-grace`); a sandbox with no terminal is stopped after the
//!   idle timeout (`--idle-timeout`). Both end with reason `idle_timeout`.
//! * Capacity (`--max-sandboxes`, `--max-terminals-per-user`) is checked
//!   before anything starts; when full the caller gets a clear message at
//!   once. A full server first stops a sandbox that has no terminal left.
//! * A user's sandbox starts on their first terminal. Per-user start locks
//!   make "start the sandbox, open a terminal" one step per user, so the
//!   capacity checks hold under concurrent requests.
//! * How each terminal ended is remembered for a while, so a client that
//!   comes back to a finished terminal learns why it ended.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{watch, OwnedMutexGuard};
use warren_runtime::record::SandboxRecord;
use warren_runtime::report::LimitReached;

use crate::backend::{Backend, BackendError, Sandbox, SandboxEnd};
use crate::exit::{ExitCause, TerminalExit};
use crate::random::random_bytes;
use crate::terminal::{SandboxLink, Terminal, Viewer};
use crate::user::UserId;
use crate::WinSize;

/// How many ended terminals are remembered per user, and for how long.
pub const ENDED_KEPT: usize = 32;
pub const ENDED_TTL: Duration = Duration::from_secs(24 * 3600);

/// The registry's configurable limits.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub max_sandboxes: usize,
    pub max_terminals_per_user: usize,
    /// How long a terminal with no viewer is kept.
    pub terminal_grace: Duration,
    /// How long a sandbox with no terminal is kept.
    pub idle_timeout: Duration,
    /// Stop a sandbox as soon as its last terminal has ended (and no
    /// command run through the API holds it), instead of after
    /// `idle_timeout`: nothing a user left running in the background
    /// outlives their last terminal.
    pub stop_when_no_terminals: bool,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_sandboxes: 32,
            max_terminals_per_user: 8,
            terminal_grace: Duration::from_secs(5 * 60),
            idle_timeout: Duration::from_secs(30 * 60),
            stop_when_no_terminals: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no such terminal")]
    NotFound,
    #[error("{0}")]
    Capacity(String),
    /// The user's own sandbox is at a limit (pids, memory): no new shell
    /// fits in it. Told to the user, not a fault of the server.
    #[error("{message}")]
    Limit {
        limit: LimitReached,
        message: String,
    },
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("backend: {0}")]
    Backend(#[from] BackendError),
    #[error("terminal set-up: {0}")]
    Io(#[from] std::io::Error),
}

impl SessionError {
    /// What the client is told: internal detail stays in the server's log.
    pub fn client_message(&self) -> String {
        match self {
            SessionError::Backend(_) | SessionError::Io(_) => {
                "could not start a terminal; the server's log has the details".into()
            }
            other => other.to_string(),
        }
    }

    pub fn is_internal(&self) -> bool {
        matches!(self, SessionError::Backend(_) | SessionError::Io(_))
    }
}

/// A terminal that could not start: a limit said as such (the user's
/// sandbox at its pids or memory limit, the host out of PTYs), with the
/// limit in force, else the backend's failure.
fn refused(e: BackendError, record: &SandboxRecord) -> SessionError {
    let limits = &record.limits;
    let Some(limit) = e.limit_reached() else {
        return SessionError::Backend(e);
    };
    let message = match limit {
        LimitReached::Pids => format!(
            "your sandbox is at its limit of {}processes: no new shell can start; end some \
             processes or close a terminal, or ask for a higher pids limit",
            limits.pids.map_or(String::new(), |n| format!("{n} "))
        ),
        LimitReached::Memory => format!(
            "your sandbox is at its memory limit{}: no new shell can start; end some processes \
             or close a terminal, or ask for a higher memory limit",
            limits
                .memory_bytes
                .map_or(String::new(), |b| format!(" ({} MiB)", b >> 20))
        ),
        LimitReached::HostPtys => {
            return SessionError::Capacity(
                "the server has no terminal (PTY) left: the host's kernel.pty.max is reached; \
                 try again later"
                    .into(),
            )
        }
    };
    SessionError::Limit { limit, message }
}

/// What attaching to a terminal id gives.
pub enum Attachment {
    Live(Viewer),
    /// The terminal has ended; this is how.
    Ended(TerminalExit),
}

/// What the registry tells whoever watches it (audit log, metrics).
pub trait SessionObserver: Send + Sync + 'static {
    /// A sandbox started for `user`, taking `took`.
    fn sandbox_started(&self, _user: &UserId, _took: Duration) {}
    /// A terminal opened (`took`: sandbox start, if any, plus the shell).
    fn terminal_opened(&self, _user: &UserId, _id: &str, _took: Duration) {}
    fn terminal_ended(&self, _user: &UserId, _id: &str, _info: &TerminalExit) {}
}

/// A sandbox that ended by itself and the terminals that ran in it (taken
/// together, under one lock, so no terminal of a fresh sandbox is among them).
type DeadSandbox = (Arc<dyn Sandbox>, Vec<Arc<Terminal>>);

struct UserEntry {
    /// Held while this user's sandbox is started, a terminal is opened in
    /// it, or it is stopped.
    start_lock: Arc<tokio::sync::Mutex<()>>,
    sandbox: Option<Arc<dyn Sandbox>>,
    /// With `sandbox`: the news of its end, and the task watching for it.
    end: Option<watch::Receiver<Option<SandboxEnd>>>,
    watcher: Option<tokio::task::AbortHandle>,
    /// Leases (commands run through the API) keeping the sandbox busy.
    leases: usize,
    terminals: HashMap<String, Arc<Terminal>>,
    /// Since when the user has had no terminal.
    idle_since: Instant,
    ended: VecDeque<(String, TerminalExit, Instant)>,
}

impl UserEntry {
    fn new() -> UserEntry {
        UserEntry {
            start_lock: Arc::new(tokio::sync::Mutex::new(())),
            sandbox: None,
            end: None,
            watcher: None,
            leases: 0,
            terminals: HashMap::new(),
            idle_since: Instant::now(),
            ended: VecDeque::new(),
        }
    }

    /// Takes the sandbox out to stop it: its watcher is no longer needed.
    fn take_sandbox(&mut self) -> Option<Arc<dyn Sandbox>> {
        if let Some(w) = self.watcher.take() {
            w.abort();
        }
        self.end = None;
        self.sandbox.take()
    }

    /// Takes the sandbox out because it ended by itself, with the
    /// terminals that ran in it; its watcher goes on to report why.
    fn take_dead_sandbox(&mut self) -> Option<DeadSandbox> {
        self.watcher = None;
        self.end = None;
        Some((
            self.sandbox.take()?,
            self.terminals.values().cloned().collect(),
        ))
    }

    /// The running sandbox and the news of its end.
    fn link(&self) -> Option<SandboxLink> {
        Some(SandboxLink {
            sandbox: Arc::clone(self.sandbox.as_ref()?),
            end: self.end.clone()?,
        })
    }

    fn unused(&self) -> bool {
        self.sandbox.is_none()
            && self.leases == 0
            && self.terminals.is_empty()
            && self.ended.is_empty()
            && Arc::strong_count(&self.start_lock) == 1
    }
}

#[derive(Default)]
struct Inner {
    users: HashMap<UserId, UserEntry>,
    /// Sandboxes running or being started.
    sandboxes: usize,
}

/// The registry. Create with [`Registry::new`], which also starts the task
/// that enforces the grace period and the idle timeout.
pub struct Registry {
    backend: Arc<dyn Backend>,
    limits: SessionLimits,
    inner: Mutex<Inner>,
    shutting_down: watch::Sender<bool>,
    /// Number of terminals whose driver is still running.
    live: watch::Sender<usize>,
    observer: OnceLock<Arc<dyn SessionObserver>>,
    /// Each sandbox start, by user (services waiting for their sandbox).
    started: tokio::sync::broadcast::Sender<UserId>,
}

/// A user's running sandbox, kept from the idle timeout until dropped.
pub struct Lease {
    registry: Arc<Registry>,
    user: UserId,
    sandbox: Arc<dyn Sandbox>,
}

impl Lease {
    pub fn sandbox(&self) -> &Arc<dyn Sandbox> {
        &self.sandbox
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut inner = self.registry.inner();
        if let Some(entry) = inner.users.get_mut(&self.user) {
            entry.leases = entry.leases.saturating_sub(1);
            if entry.leases == 0 && entry.terminals.is_empty() {
                entry.idle_since = Instant::now();
            }
        }
    }
}

/// One terminal, as the management API lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TerminalInfo {
    pub id: String,
    /// Unix seconds.
    pub created_at: u64,
    pub viewers: usize,
    pub cols: u16,
    pub rows: u16,
}

/// A user's sessions, as the management API shows them.
#[derive(Clone)]
pub struct UserSessions {
    pub sandbox: Option<Arc<dyn Sandbox>>,
    /// The sandbox is being started or stopped.
    pub busy: bool,
    pub terminals: Vec<TerminalInfo>,
    /// Commands (exec, import, export) running now.
    pub running_commands: usize,
}

/// A new terminal id: 96 random bits, hex.
pub fn new_terminal_id() -> String {
    random_bytes::<12>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `id` could be a terminal id (checked before any lookup).
pub fn valid_terminal_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl Registry {
    /// Must be called inside a tokio runtime (it spawns the reaper).
    pub fn new(backend: Arc<dyn Backend>, limits: SessionLimits) -> Arc<Registry> {
        let registry = Arc::new(Registry {
            backend,
            limits,
            inner: Mutex::new(Inner::default()),
            shutting_down: watch::channel(false).0,
            live: watch::channel(0).0,
            observer: OnceLock::new(),
            started: tokio::sync::broadcast::channel(64).0,
        });
        tokio::spawn(reaper(Arc::downgrade(&registry), limits));
        registry
    }

    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    /// Tells of every sandbox that starts from now on, by its user.
    pub fn subscribe_started(&self) -> tokio::sync::broadcast::Receiver<UserId> {
        self.started.subscribe()
    }

    /// Resolves once the registry is shutting down.
    pub async fn shutting_down(&self) {
        let _ = self.shutting_down.subscribe().wait_for(|s| *s).await;
    }

    /// The backend sandboxes come from.
    pub fn backend(&self) -> Arc<dyn Backend> {
        Arc::clone(&self.backend)
    }

    /// Sets who is told about sessions (once; later calls are ignored).
    pub fn set_observer(&self, observer: Arc<dyn SessionObserver>) {
        let _ = self.observer.set(observer);
    }

    fn observe(&self, f: impl FnOnce(&dyn SessionObserver)) {
        if let Some(o) = self.observer.get() {
            f(o.as_ref());
        }
    }

    /// Users the registry holds anything for.
    pub fn users(&self) -> Vec<UserId> {
        self.inner().users.keys().cloned().collect()
    }

    /// What `user` has running.
    pub fn sessions_of(&self, user: &UserId) -> UserSessions {
        let inner = self.inner();
        let Some(entry) = inner.users.get(user) else {
            return UserSessions {
                sandbox: None,
                busy: false,
                terminals: Vec::new(),
                running_commands: 0,
            };
        };
        let mut terminals: Vec<TerminalInfo> = entry
            .terminals
            .values()
            .map(|t| {
                let size = t.size();
                TerminalInfo {
                    id: t.id().to_string(),
                    created_at: t
                        .created_at()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0),
                    viewers: t.viewer_count(),
                    cols: size.cols,
                    rows: size.rows,
                }
            })
            .collect();
        terminals.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        let sessions = UserSessions {
            sandbox: entry.sandbox.clone(),
            busy: entry.start_lock.try_lock().is_err(),
            terminals,
            running_commands: entry.leases,
        };
        sessions
    }

    /// Closes one of `user`'s terminals (its viewers get reason `closed`).
    pub fn close_terminal(&self, user: &UserId, id: &str) -> Result<(), SessionError> {
        if !valid_terminal_id(id) {
            return Err(SessionError::NotFound);
        }
        let terminal = self
            .inner()
            .users
            .get(user)
            .and_then(|e| e.terminals.get(id).cloned())
            .ok_or(SessionError::NotFound)?;
        terminal.kill(ExitCause::Closed);
        Ok(())
    }

    /// `user`'s sandbox, started if needed, kept from the idle timeout
    /// while the lease lives (for commands run through the API).
    pub async fn lease(self: &Arc<Self>, user: &UserId) -> Result<Lease, SessionError> {
        let (link, _lock) = self.ensure_sandbox(user, false).await?;
        let sandbox = link.sandbox;
        let mut inner = self.inner();
        let entry = inner
            .users
            .entry(user.clone())
            .or_insert_with(UserEntry::new);
        entry.leases += 1;
        Ok(Lease {
            registry: Arc::clone(self),
            user: user.clone(),
            sandbox,
        })
    }

    /// Ends everything `user` has (terminals get reason `closed`, the
    /// sandbox is stopped) and returns their start lock: until it is
    /// dropped nothing new starts for them (delete holds it while it
    /// removes the tenant).
    pub async fn stop_user(&self, user: &UserId, limit: Duration) -> OwnedMutexGuard<()> {
        let start_lock = Arc::clone(
            &self
                .inner()
                .users
                .entry(user.clone())
                .or_insert_with(UserEntry::new)
                .start_lock,
        );
        let guard = start_lock.lock_owned().await;
        let terminals = self.terminals_of(user);
        for t in &terminals {
            t.kill(ExitCause::Closed);
        }
        let deadline = tokio::time::Instant::now() + limit;
        while !self.terminals_of(user).is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let sandbox = {
            let mut inner = self.inner();
            let Inner { users, sandboxes } = &mut *inner;
            let taken = users.get_mut(user).and_then(|e| e.take_sandbox());
            if taken.is_some() {
                *sandboxes = sandboxes.saturating_sub(1);
            }
            taken
        };
        if let Some(sandbox) = sandbox {
            tracing::info!(%user, "stopping sandbox (asked through the API)");
            if tokio::time::timeout_at(deadline, sandbox.stop())
                .await
                .is_err()
            {
                tracing::warn!(%user, "sandbox did not stop within {limit:?}");
            }
        }
        guard
    }

    /// Takes `user`'s start lock and returns their sandbox, starting it
    /// (capacity permitting) when they have none, or a fresh one when
    /// theirs has just died.
    async fn ensure_sandbox(
        self: &Arc<Self>,
        user: &UserId,
        for_terminal: bool,
    ) -> Result<(SandboxLink, OwnedMutexGuard<()>), SessionError> {
        if self.is_shutting_down() {
            return Err(SessionError::ShuttingDown);
        }
        let start_lock = Arc::clone(
            &self
                .inner()
                .users
                .entry(user.clone())
                .or_insert_with(UserEntry::new)
                .start_lock,
        );
        let one_at_a_time = start_lock.lock_owned().await;
        if self.is_shutting_down() {
            return Err(SessionError::ShuttingDown);
        }
        // Its watcher may not have seen it yet: the user must not wait for it.
        if let Some(dead) = self.take_if_ending(user) {
            self.end_dead_sandbox(user, dead, None).await;
        }
        let (existing, evicted) = self.reserve(user, for_terminal)?;
        let link = match existing {
            Some(link) => link,
            None => {
                if let Some((sandbox, _their_lock)) = evicted {
                    sandbox.stop().await;
                }
                let started = Instant::now();
                match self.backend.start_sandbox(user).await {
                    Ok(sandbox) => {
                        let link = self.install_sandbox(user, sandbox);
                        self.observe(|o| o.sandbox_started(user, started.elapsed()));
                        let _ = self.started.send(user.clone());
                        link
                    }
                    Err(e) => {
                        self.inner().sandboxes -= 1;
                        return Err(e.into());
                    }
                }
            }
        };
        Ok((link, one_at_a_time))
    }

    /// Records `user`'s new sandbox and starts the task that notices its
    /// end (issue 10, item 8: a dead PID 1 used to lock its user out until
    /// the idle timeout).
    fn install_sandbox(self: &Arc<Self>, user: &UserId, sandbox: Arc<dyn Sandbox>) -> SandboxLink {
        let (end_tx, end) = watch::channel(None);
        let watcher = tokio::spawn(watch_sandbox(
            Arc::downgrade(self),
            user.clone(),
            Arc::clone(&sandbox),
            end_tx,
        ));
        let mut inner = self.inner();
        let entry = inner
            .users
            .entry(user.clone())
            .or_insert_with(UserEntry::new);
        entry.sandbox = Some(Arc::clone(&sandbox));
        entry.end = Some(end.clone());
        entry.watcher = Some(watcher.abort_handle());
        entry.idle_since = Instant::now();
        SandboxLink { sandbox, end }
    }

    /// Takes `user`'s sandbox out if it is dying.
    fn take_if_ending(&self, user: &UserId) -> Option<DeadSandbox> {
        let mut inner = self.inner();
        let Inner { users, sandboxes } = &mut *inner;
        let entry = users.get_mut(user)?;
        if !entry.sandbox.as_ref()?.is_ending() {
            return None;
        }
        *sandboxes = sandboxes.saturating_sub(1);
        entry.take_dead_sandbox()
    }

    /// Called by a sandbox's watcher when it ended by itself.
    async fn sandbox_ended(&self, user: &UserId, sandbox: Arc<dyn Sandbox>, end: SandboxEnd) {
        let current = {
            let mut inner = self.inner();
            let Inner { users, sandboxes } = &mut *inner;
            match users.get_mut(user) {
                Some(entry)
                    if entry
                        .sandbox
                        .as_ref()
                        .is_some_and(|s| Arc::ptr_eq(s, &sandbox)) =>
                {
                    *sandboxes = sandboxes.saturating_sub(1);
                    entry.take_dead_sandbox()
                }
                // Stopped by the registry, or already replaced.
                _ => None,
            }
        };
        if let Some(dead) = current {
            self.end_dead_sandbox(user, dead, Some(end)).await;
        }
    }

    /// Ends the terminals of a sandbox that died (they are told
    /// `sandbox_ended`) and cleans up after it (its cgroup).
    async fn end_dead_sandbox(
        &self,
        user: &UserId,
        (dead, terminals): DeadSandbox,
        end: Option<SandboxEnd>,
    ) {
        match end {
            Some(e) => {
                tracing::warn!(%user, cause = ?e.cause, signal = ?e.signal, code = ?e.code, "sandbox ended by itself; the next terminal starts a fresh one")
            }
            None => {
                tracing::warn!(%user, "sandbox is ending by itself; the next terminal starts a fresh one")
            }
        }
        for t in terminals {
            t.kill(ExitCause::SandboxEnded);
        }
        dead.stop().await;
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutting_down.borrow()
    }

    /// Number of sandboxes running (or starting).
    pub fn sandbox_count(&self) -> usize {
        self.inner().sandboxes
    }

    /// Number of terminals whose shell is still running, all users.
    pub fn terminal_count(&self) -> usize {
        *self.live.borrow()
    }

    /// The live terminals of `user`.
    pub fn terminals_of(&self, user: &UserId) -> Vec<Arc<Terminal>> {
        self.inner()
            .users
            .get(user)
            .map(|u| u.terminals.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Opens a new terminal for `user` (starting their sandbox if needed)
    /// and attaches the caller to it.
    pub async fn open(
        self: &Arc<Self>,
        user: &UserId,
        size: WinSize,
    ) -> Result<Viewer, SessionError> {
        let began = Instant::now();
        let (link, _one_at_a_time) = self.ensure_sandbox(user, true).await?;
        let spawned = link
            .sandbox
            .open_terminal(size)
            .await
            .map_err(|e| refused(e, link.sandbox.record()))?;
        let id = new_terminal_id();
        let (terminal, driver) = Terminal::start(id.clone(), user.clone(), link, spawned, size)?;
        // Attach before the terminal is visible to the reaper.
        let viewer = terminal.attach();
        {
            let mut inner = self.inner();
            let entry = inner
                .users
                .entry(user.clone())
                .or_insert_with(UserEntry::new);
            entry.terminals.insert(id.clone(), Arc::clone(&terminal));
        }
        self.live.send_modify(|n| *n += 1);
        self.observe(|o| o.terminal_opened(user, &id, began.elapsed()));
        let registry = Arc::clone(self);
        let user = user.clone();
        tokio::spawn(async move {
            let info = driver.await;
            registry.terminal_ended(&user, &id, info);
        });
        Ok(viewer)
    }

    /// Checks capacity and reserves a sandbox slot if `user` has none.
    /// Returns the user's running sandbox, or None (a slot is reserved)
    /// plus an idle sandbox of someone else to stop first.
    #[allow(clippy::type_complexity)]
    fn reserve(
        &self,
        user: &UserId,
        for_terminal: bool,
    ) -> Result<
        (
            Option<SandboxLink>,
            Option<(Arc<dyn Sandbox>, OwnedMutexGuard<()>)>,
        ),
        SessionError,
    > {
        let mut inner = self.inner();
        let Inner { users, sandboxes } = &mut *inner;
        let entry = users.entry(user.clone()).or_insert_with(UserEntry::new);
        let max_terms = self.limits.max_terminals_per_user;
        if for_terminal && entry.terminals.len() >= max_terms {
            return Err(SessionError::Capacity(format!(
                "you have {} terminals open, the most allowed per user; close one first",
                entry.terminals.len()
            )));
        }
        if let Some(link) = entry.link() {
            return Ok((Some(link), None));
        }
        let mut evicted = None;
        if *sandboxes >= self.limits.max_sandboxes {
            evicted = evict_idle(users, user);
            if evicted.is_none() {
                return Err(SessionError::Capacity(format!(
                    "the server is full: {} sandboxes are running, the most it allows; try again later",
                    *sandboxes
                )));
            }
            *sandboxes -= 1;
        }
        *sandboxes += 1;
        Ok((None, evicted))
    }

    /// Attaches to one of `user`'s terminals.
    pub fn attach(&self, user: &UserId, id: &str) -> Result<Attachment, SessionError> {
        if !valid_terminal_id(id) {
            return Err(SessionError::NotFound);
        }
        let live = {
            let inner = self.inner();
            let entry = inner.users.get(user).ok_or(SessionError::NotFound)?;
            match entry.terminals.get(id) {
                Some(terminal) => Arc::clone(terminal),
                None => {
                    return entry
                        .ended
                        .iter()
                        .find(|(ended, _, _)| ended == id)
                        .map(|(_, info, _)| Attachment::Ended(*info))
                        .ok_or(SessionError::NotFound)
                }
            }
        };
        // The snapshot is taken outside the registry's lock. If the terminal
        // ended meanwhile, the viewer reports its exit at once.
        Ok(Attachment::Live(live.attach()))
    }

    fn terminal_ended(&self, user: &UserId, id: &str, info: TerminalExit) {
        {
            let mut inner = self.inner();
            if let Some(entry) = inner.users.get_mut(user) {
                entry.terminals.remove(id);
                if entry.terminals.is_empty() {
                    entry.idle_since = Instant::now();
                }
                entry
                    .ended
                    .push_back((id.to_string(), info, Instant::now()));
                while entry.ended.len() > ENDED_KEPT {
                    entry.ended.pop_front();
                }
            }
        }
        tracing::info!(%user, terminal = id, reason = info.reason.as_str(), code = ?info.code, signal = ?info.signal, "terminal ended");
        self.observe(|o| o.terminal_ended(user, id, &info));
        self.live.send_modify(|n| *n = n.saturating_sub(1));
    }

    /// One pass of the grace-period and idle-timeout rules at time `now`.
    pub fn reap(&self, now: Instant) {
        let mut to_kill = Vec::new();
        let mut to_stop = Vec::new();
        {
            let mut inner = self.inner();
            let Inner { users, sandboxes } = &mut *inner;
            for (user, entry) in users.iter_mut() {
                for terminal in entry.terminals.values() {
                    if terminal
                        .detached_for(now)
                        .is_some_and(|d| d >= self.limits.terminal_grace)
                    {
                        to_kill.push(Arc::clone(terminal));
                    }
                }
                let idle_for = now.saturating_duration_since(entry.idle_since);
                if entry.terminals.is_empty()
                    && entry.leases == 0
                    && entry.sandbox.is_some()
                    && (idle_for >= self.limits.idle_timeout || self.limits.stop_when_no_terminals)
                {
                    if let Ok(guard) = Arc::clone(&entry.start_lock).try_lock_owned() {
                        if let Some(sandbox) = entry.take_sandbox() {
                            *sandboxes -= 1;
                            if idle_for >= self.limits.idle_timeout {
                                tracing::info!(%user, "stopping idle sandbox");
                            } else {
                                tracing::info!(%user, "stopping sandbox: its last terminal ended");
                            }
                            to_stop.push((sandbox, guard));
                        }
                    }
                }
                entry
                    .ended
                    .retain(|(_, _, at)| now.saturating_duration_since(*at) < ENDED_TTL);
            }
            users.retain(|_, entry| !entry.unused());
        }
        for terminal in to_kill {
            tracing::info!(user = %terminal.user(), terminal = terminal.id(), "no viewer for the grace period; closing");
            terminal.kill(ExitCause::IdleTimeout);
        }
        for (sandbox, guard) in to_stop {
            tokio::spawn(async move {
                sandbox.stop().await;
                drop(guard);
            });
        }
    }

    /// Ends everything: refuses new terminals, kills every terminal (its
    /// viewers are told `server_shutdown`), waits for them, stops every
    /// sandbox. Gives up waiting after `limit`.
    pub async fn shutdown(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        self.shutting_down.send_replace(true);
        let (terminals, locks): (Vec<_>, Vec<_>) = {
            let inner = self.inner();
            (
                inner
                    .users
                    .values()
                    .flat_map(|u| u.terminals.values().cloned())
                    .collect(),
                inner
                    .users
                    .values()
                    .map(|u| Arc::clone(&u.start_lock))
                    .collect(),
            )
        };
        for terminal in &terminals {
            terminal.kill(ExitCause::ServerShutdown);
        }
        let mut live = self.live.subscribe();
        let _ = tokio::time::timeout_at(deadline, live.wait_for(|n| *n == 0)).await;
        // Wait for starts in progress, so no sandbox appears after this.
        let _ = tokio::time::timeout_at(deadline, async {
            for lock in &locks {
                drop(lock.lock().await);
            }
        })
        .await;
        let sandboxes: Vec<Arc<dyn Sandbox>> = {
            let mut inner = self.inner();
            let taken: Vec<_> = inner
                .users
                .values_mut()
                .filter_map(UserEntry::take_sandbox)
                .collect();
            inner.sandboxes -= taken.len().min(inner.sandboxes);
            taken
        };
        let stops = futures_util::future::join_all(sandboxes.iter().map(|s| s.stop()));
        if tokio::time::timeout_at(deadline, stops).await.is_err() {
            tracing::warn!("some sandboxes did not stop within {limit:?}");
        }
    }
}

/// Picks the sandbox idle the longest (no terminal, nobody starting one)
/// among users other than `except`, takes it out of the registry and returns
/// it with its user's start lock held.
fn evict_idle(
    users: &mut HashMap<UserId, UserEntry>,
    except: &UserId,
) -> Option<(Arc<dyn Sandbox>, OwnedMutexGuard<()>)> {
    let mut candidates: Vec<(&UserId, Instant)> = users
        .iter()
        .filter(|(u, e)| {
            *u != except && e.sandbox.is_some() && e.terminals.is_empty() && e.leases == 0
        })
        .map(|(u, e)| (u, e.idle_since))
        .collect();
    candidates.sort_by_key(|(_, since)| *since);
    let candidates: Vec<UserId> = candidates.into_iter().map(|(u, _)| u.clone()).collect();
    for user in candidates {
        let entry = users.get_mut(&user)?;
        if let Ok(guard) = Arc::clone(&entry.start_lock).try_lock_owned() {
            let sandbox = entry.take_sandbox()?;
            tracing::info!(%user, "stopping idle sandbox to make room");
            return Some((sandbox, guard));
        }
    }
    None
}

/// Applies the grace period and the idle timeout, a few times per the
/// shorter of the two.
async fn reaper(registry: Weak<Registry>, limits: SessionLimits) {
    let shortest = limits.terminal_grace.min(limits.idle_timeout);
    let mut tick = (shortest / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
    if limits.stop_when_no_terminals {
        tick = tick.min(Duration::from_millis(250));
    }
    let mut shutting_down = match registry.upgrade() {
        Some(r) => r.shutting_down.subscribe(),
        None => return,
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutting_down.wait_for(|s| *s) => return,
        }
        match registry.upgrade() {
            Some(r) => r.reap(Instant::now()),
            None => return,
        }
    }
}

/// Waits for `sandbox` to end by itself and tells the registry. Aborted
/// when the registry stops the sandbox itself.
async fn watch_sandbox(
    registry: Weak<Registry>,
    user: UserId,
    sandbox: Arc<dyn Sandbox>,
    end_tx: watch::Sender<Option<SandboxEnd>>,
) {
    let end = sandbox.ended().await;
    end_tx.send_replace(Some(end));
    if let Some(registry) = registry.upgrade() {
        registry.sandbox_ended(&user, sandbox, end).await;
    }
}

#[cfg(test)]
mod tests {
    use nix::errno::Errno;
    use warren_runtime::cgroups::Limits;
    use warren_runtime::record::LimitsInForce;
    use warren_runtime::report::{SetupError, STEP_FORK_COMMAND, STEP_OPEN_TERMINAL};
    use warren_runtime::spec::Isolation;

    use super::*;
    use crate::backend::StarterEnded;

    fn record(limits: Limits) -> SandboxRecord {
        let mut r = SandboxRecord::unlimited(Isolation::Namespaces, &Limits::NONE);
        r.limits = LimitsInForce::cgroup(limits, Vec::new());
        r
    }

    fn failed(step: &str, errno: Errno) -> BackendError {
        BackendError::new("open terminal", SetupError::errno(step, errno))
    }

    /// Issue 15: a terminal the user's own limit refused closed with 4500
    /// like a fault of the server; each limit is now said as itself.
    #[test]
    fn a_terminal_refused_by_a_limit_says_which() {
        let limited = record(Limits::default());
        let e = refused(failed(STEP_FORK_COMMAND, Errno::EAGAIN), &limited);
        assert!(
            matches!(&e, SessionError::Limit { limit: LimitReached::Pids, message }
                if message.contains("limit of 512 processes")),
            "{e}"
        );
        assert!(!e.is_internal());
        let e = refused(failed(STEP_FORK_COMMAND, Errno::ENOMEM), &limited);
        assert!(e.to_string().contains("memory limit (512 MiB)"), "{e}");
        let oom = BackendError::new("open terminal", StarterEnded::OutOfMemory);
        assert!(matches!(
            refused(oom, &limited),
            SessionError::Limit {
                limit: LimitReached::Memory,
                ..
            }
        ));
        // Without a cgroup, a refused fork is still the sandbox's limit
        // (its nproc rlimit), with no number to give.
        let e = refused(
            failed(STEP_FORK_COMMAND, Errno::EAGAIN),
            &record(Limits::NONE),
        );
        assert!(e.to_string().contains("at its limit of processes"), "{e}");
        // The host out of PTYs is the server's capacity, not the user's.
        let e = refused(failed(STEP_OPEN_TERMINAL, Errno::ENOSPC), &limited);
        assert!(
            matches!(&e, SessionError::Capacity(m) if m.contains("kernel.pty.max")),
            "{e}"
        );
        // Anything else is the server's failure, detail kept for the log.
        let e = refused(failed("join namespaces", Errno::EPERM), &limited);
        assert!(e.is_internal(), "{e}");
    }
}
