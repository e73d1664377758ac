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
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{watch, OwnedMutexGuard};

use super::auth::random_bytes;
use super::backend::{Backend, BackendError, Sandbox};
use super::protocol::{close, ExitInfo, ExitReason, WinSize};
use super::terminal::{Terminal, Viewer};
use super::user::UserId;

/// How many ended terminals are remembered per user, and for how long.
pub const ENDED_KEPT: usize = 32;
pub const ENDED_TTL: Duration = Duration::from_secs(24 * 3600);

/// The registry's configurable limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_sandboxes: usize,
    pub max_terminals_per_user: usize,
    /// How long a terminal with no viewer is kept.
    pub terminal_grace: Duration,
    /// How long a sandbox with no terminal is kept.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sandboxes: 32,
            max_terminals_per_user: 8,
            terminal_grace: Duration::from_secs(5 * 60),
            idle_timeout: Duration::from_secs(30 * 60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no such terminal")]
    NotFound,
    #[error("{0}")]
    Capacity(String),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("backend: {0}")]
    Backend(#[from] BackendError),
    #[error("terminal set-up: {0}")]
    Io(#[from] std::io::Error),
}

impl SessionError {
    /// The WebSocket close code for this error.
    pub fn close_code(&self) -> u16 {
        match self {
            SessionError::NotFound => close::NOT_FOUND,
            SessionError::Capacity(_) => close::CAPACITY,
            SessionError::ShuttingDown => close::UNAVAILABLE,
            SessionError::Backend(_) | SessionError::Io(_) => close::INTERNAL,
        }
    }

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

/// What attaching to a terminal id gives.
pub enum Attachment {
    Live(Viewer),
    /// The terminal has ended; this is how.
    Ended(ExitInfo),
}

struct UserEntry {
    /// Held while this user's sandbox is started, a terminal is opened in
    /// it, or it is stopped.
    start_lock: Arc<tokio::sync::Mutex<()>>,
    sandbox: Option<Arc<dyn Sandbox>>,
    terminals: HashMap<String, Arc<Terminal>>,
    /// Since when the user has had no terminal.
    idle_since: Instant,
    ended: VecDeque<(String, ExitInfo, Instant)>,
}

impl UserEntry {
    fn new() -> UserEntry {
        UserEntry {
            start_lock: Arc::new(tokio::sync::Mutex::new(())),
            sandbox: None,
            terminals: HashMap::new(),
            idle_since: Instant::now(),
            ended: VecDeque::new(),
        }
    }

    fn unused(&self) -> bool {
        self.sandbox.is_none()
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
    limits: Limits,
    inner: Mutex<Inner>,
    shutting_down: watch::Sender<bool>,
    /// Number of terminals whose driver is still running.
    live: watch::Sender<usize>,
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
    pub fn new(backend: Arc<dyn Backend>, limits: Limits) -> Arc<Registry> {
        let registry = Arc::new(Registry {
            backend,
            limits,
            inner: Mutex::new(Inner::default()),
            shutting_down: watch::channel(false).0,
            live: watch::channel(0).0,
        });
        tokio::spawn(reaper(Arc::downgrade(&registry), limits));
        registry
    }

    pub fn limits(&self) -> Limits {
        self.limits
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
        let _one_at_a_time = start_lock.lock().await;
        if self.is_shutting_down() {
            return Err(SessionError::ShuttingDown);
        }

        let (existing, evicted) = self.reserve(user)?;
        let sandbox = match existing {
            Some(sandbox) => sandbox,
            None => {
                if let Some((sandbox, _their_lock)) = evicted {
                    sandbox.stop().await;
                }
                match self.backend.start_sandbox(user).await {
                    Ok(sandbox) => {
                        let mut inner = self.inner();
                        let entry = inner
                            .users
                            .entry(user.clone())
                            .or_insert_with(UserEntry::new);
                        entry.sandbox = Some(Arc::clone(&sandbox));
                        entry.idle_since = Instant::now();
                        sandbox
                    }
                    Err(e) => {
                        self.inner().sandboxes -= 1;
                        return Err(e.into());
                    }
                }
            }
        };

        let spawned = sandbox.open_terminal(size).await?;
        let id = new_terminal_id();
        let (terminal, driver) =
            Terminal::start(id.clone(), user.clone(), sandbox.applied(), spawned, size)?;
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
    ) -> Result<
        (
            Option<Arc<dyn Sandbox>>,
            Option<(Arc<dyn Sandbox>, OwnedMutexGuard<()>)>,
        ),
        SessionError,
    > {
        let mut inner = self.inner();
        let Inner { users, sandboxes } = &mut *inner;
        let entry = users.entry(user.clone()).or_insert_with(UserEntry::new);
        let max_terms = self.limits.max_terminals_per_user;
        if entry.terminals.len() >= max_terms {
            return Err(SessionError::Capacity(format!(
                "you have {} terminals open, the most allowed per user; close one first",
                entry.terminals.len()
            )));
        }
        if let Some(sandbox) = &entry.sandbox {
            return Ok((Some(Arc::clone(sandbox)), None));
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

    fn terminal_ended(&self, user: &UserId, id: &str, info: ExitInfo) {
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
                if entry.terminals.is_empty()
                    && entry.sandbox.is_some()
                    && now.saturating_duration_since(entry.idle_since) >= self.limits.idle_timeout
                {
                    if let Ok(guard) = Arc::clone(&entry.start_lock).try_lock_owned() {
                        if let Some(sandbox) = entry.sandbox.take() {
                            *sandboxes -= 1;
                            tracing::info!(%user, "stopping idle sandbox");
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
            terminal.kill(ExitReason::IdleTimeout);
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
            terminal.kill(ExitReason::ServerShutdown);
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
                .filter_map(|u| u.sandbox.take())
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
        .filter(|(u, e)| *u != except && e.sandbox.is_some() && e.terminals.is_empty())
        .map(|(u, e)| (u, e.idle_since))
        .collect();
    candidates.sort_by_key(|(_, since)| *since);
    let candidates: Vec<UserId> = candidates.into_iter().map(|(u, _)| u.clone()).collect();
    for user in candidates {
        let entry = users.get_mut(&user)?;
        if let Ok(guard) = Arc::clone(&entry.start_lock).try_lock_owned() {
            let sandbox = entry.sandbox.take()?;
            tracing::info!(%user, "stopping idle sandbox to make room");
            return Some((sandbox, guard));
        }
    }
    None
}

/// Applies the grace period and the idle timeout, a few times per the
/// shorter of the two.
async fn reaper(registry: Weak<Registry>, limits: Limits) {
    let shortest = limits.terminal_grace.min(limits.idle_timeout);
    let tick = (shortest / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
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
