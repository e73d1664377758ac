//! Runs named services (docs/services.md): one task per running service,
//! which starts the command in its user's sandbox through the session
//! registry (as the user, in the sandbox's namespaces and limits, like an
//! exec'd command), keeps the tail of its output, and restarts it by its
//! policy with an exponential backoff.
//!
//! A running service holds a [`Lease`](crate::sessions::Lease) on its
//! sandbox when `keep_alive` is on, so the idle timeout does not stop it.
//! Without it the service ends with its sandbox and starts again when the
//! sandbox next starts. A sandbox stopped under a service (shutdown,
//! delete) never makes it restart: no loop against a dying sandbox.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::sync::{broadcast, watch};

use crate::backend::{ExecCommand, ExecStdio, Stream};
use crate::sessions::{Registry, SessionError};
use crate::user::UserId;

use super::service_spec::{RestartPolicy, ServiceSpec};
use super::{start_failure, ManageError};

/// The first wait before a restart; it doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run this long counts as healthy: the next backoff starts again at
/// [`BACKOFF_MIN`].
pub const HEALTHY_RUN: Duration = Duration::from_secs(30);
/// Default bytes of output kept per service.
pub const DEFAULT_LOG_BYTES: usize = 64 << 10;
/// How long `create` and `start` wait for the first start to be over.
const FIRST_START_WAIT: Duration = Duration::from_secs(10);
/// How long a stop waits for the command's end after killing it.
const STOP_WAIT: Duration = Duration::from_secs(10);
/// After the command's end, how long its pipes may stay open (a
/// background child of it may hold them).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

/// The supervisor's settings (`warren serve --services-keep-alive`,
/// `--service-log-bytes`).
#[derive(Debug, Clone, Copy)]
pub struct ServiceSettings {
    /// A running service keeps its sandbox past the idle timeout.
    pub keep_alive: bool,
    /// Bytes of output kept per service.
    pub log_bytes: usize,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        ServiceSettings {
            keep_alive: true,
            log_bytes: DEFAULT_LOG_BYTES,
        }
    }
}

/// Where a service is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceState {
    Starting,
    Running,
    /// Waiting before a restart.
    BackingOff,
    /// Not running: stopped by request, exited as its policy allows, or
    /// waiting for its sandbox to start again.
    Stopped,
    /// Ended with a failure its policy does not restart, or could not be
    /// started.
    Failed,
}

/// How a service's last run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceExit {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Unix seconds.
    pub at: i64,
    /// What ended it when not itself: `stopped` (asked), `sandbox_stopped`,
    /// `memory_limit`, `not_started` (with the error in the log).
    pub reason: String,
}

/// A service's live status.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    pub state: ServiceState,
    /// Restarts made by the policy since the server started it.
    pub restarts: u64,
    pub last_exit: Option<ServiceExit>,
    /// Unix seconds of the current run's start.
    pub started_at: Option<i64>,
}

/// The last bytes of a service's output, and the live follow.
pub struct ServiceLog {
    tail: Mutex<VecDeque<u8>>,
    max: usize,
    follow: broadcast::Sender<Bytes>,
}

impl ServiceLog {
    fn new(max: usize) -> ServiceLog {
        ServiceLog {
            tail: Mutex::new(VecDeque::new()),
            max: max.max(1),
            follow: broadcast::channel(256).0,
        }
    }

    fn push(&self, data: &[u8]) {
        let mut tail = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
        let data = &data[data.len().saturating_sub(self.max)..];
        let over = (tail.len() + data.len()).saturating_sub(self.max);
        tail.drain(..over);
        tail.extend(data);
        let _ = self.follow.send(Bytes::copy_from_slice(data));
    }

    /// A line of the supervisor's own, marked as such.
    fn note(&self, line: &str) {
        self.push(format!("[warren] {line}\n").as_bytes());
    }

    /// The last `bytes` bytes (all that is kept when `None`).
    pub fn tail(&self, bytes: Option<usize>) -> Vec<u8> {
        let tail = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
        let skip = bytes.map_or(0, |b| tail.len().saturating_sub(b));
        tail.iter().skip(skip).copied().collect()
    }

    /// The tail and, atomically with it, a subscription to what follows.
    pub fn tail_and_follow(&self, bytes: Option<usize>) -> (Vec<u8>, broadcast::Receiver<Bytes>) {
        let tail = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
        let rx = self.follow.subscribe();
        let skip = bytes.map_or(0, |b| tail.len().saturating_sub(b));
        (tail.iter().skip(skip).copied().collect(), rx)
    }
}

/// One service: its definition, status, output, and the task running it.
pub struct Service {
    pub user: UserId,
    spec: Mutex<ServiceSpec>,
    status: Mutex<ServiceStatus>,
    pub log: ServiceLog,
    run: tokio::sync::Mutex<Option<Run>>,
}

/// The task running a service and how to stop it.
struct Run {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Service {
    pub fn new(user: UserId, spec: ServiceSpec, log_bytes: usize) -> Arc<Service> {
        Arc::new(Service {
            user,
            spec: Mutex::new(spec),
            status: Mutex::new(ServiceStatus {
                state: ServiceState::Stopped,
                restarts: 0,
                last_exit: None,
                started_at: None,
            }),
            log: ServiceLog::new(log_bytes),
            run: tokio::sync::Mutex::new(None),
        })
    }

    pub fn spec(&self) -> ServiceSpec {
        self.spec
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set_enabled(&self, enabled: bool) -> ServiceSpec {
        let mut spec = self.spec.lock().unwrap_or_else(PoisonError::into_inner);
        spec.enabled = enabled;
        spec.clone()
    }

    pub fn status(&self) -> ServiceStatus {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut ServiceStatus)) {
        f(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn set_state(&self, state: ServiceState) {
        self.update(|s| s.state = state);
    }

    /// Starts the service's task unless it runs.
    pub async fn start(self: &Arc<Self>, registry: &Arc<Registry>, settings: ServiceSettings) {
        let mut run = self.run.lock().await;
        if run.as_ref().is_some_and(|r| !r.task.is_finished()) {
            return;
        }
        let (stop, stopped) = watch::channel(false);
        self.update(|s| {
            s.state = ServiceState::Starting;
        });
        let task = tokio::spawn(supervise(
            Arc::clone(self),
            Arc::clone(registry),
            settings,
            stopped,
        ));
        *run = Some(Run { stop, task });
    }

    /// Whether its task runs (running, starting or backing off).
    pub async fn is_running(&self) -> bool {
        self.run
            .lock()
            .await
            .as_ref()
            .is_some_and(|r| !r.task.is_finished())
    }

    /// Stops the service's task (killing its command) and waits for it.
    pub async fn stop(&self) {
        let mut run = self.run.lock().await;
        if let Some(Run { stop, task }) = run.take() {
            stop.send_replace(true);
            let abort = task.abort_handle();
            if tokio::time::timeout(STOP_WAIT, task).await.is_err() {
                tracing::warn!(user = %self.user, "a service did not stop within {STOP_WAIT:?}");
                abort.abort();
            }
        }
        self.update(|s| {
            if s.state != ServiceState::Failed {
                s.state = ServiceState::Stopped;
            }
            s.started_at = None;
        });
    }
}

/// Every service of every tenant this server knows, by (tenant, name).
pub struct Services {
    registry: Option<Arc<Registry>>,
    settings: ServiceSettings,
    table: Mutex<std::collections::BTreeMap<(String, String), Arc<Service>>>,
}

impl Services {
    /// `registry`: None when services cannot run here (the command line's
    /// one-shot sandboxes).
    pub fn new(registry: Option<Arc<Registry>>, settings: ServiceSettings) -> Arc<Services> {
        Arc::new(Services {
            registry,
            settings,
            table: Mutex::new(Default::default()),
        })
    }

    fn table(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<(String, String), Arc<Service>>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn registry(&self) -> Result<&Arc<Registry>, ManageError> {
        self.registry
            .as_ref()
            .ok_or_else(|| ManageError::Unavailable("services run only in `warren serve`".into()))
    }

    /// Adds a service (not started); false when the name is taken.
    pub fn insert(&self, user: UserId, spec: ServiceSpec) -> Option<Arc<Service>> {
        let key = (user.as_str().to_string(), spec.name.clone());
        let mut table = self.table();
        if table.contains_key(&key) {
            return None;
        }
        let svc = Service::new(user, spec, self.settings.log_bytes);
        table.insert(key, Arc::clone(&svc));
        Some(svc)
    }

    pub fn get(&self, user: &str, name: &str) -> Option<Arc<Service>> {
        self.table()
            .get(&(user.to_string(), name.to_string()))
            .cloned()
    }

    /// A tenant's services, by name.
    pub fn of(&self, user: &str) -> Vec<Arc<Service>> {
        self.table()
            .iter()
            .filter(|((u, _), _)| u == user)
            .map(|(_, s)| Arc::clone(s))
            .collect()
    }

    pub fn all(&self) -> Vec<Arc<Service>> {
        self.table().values().cloned().collect()
    }

    /// Stops a service and forgets it.
    pub async fn remove(&self, user: &str, name: &str) -> Option<Arc<Service>> {
        let svc = self.get(user, name)?;
        svc.stop().await;
        self.table().remove(&(user.to_string(), name.to_string()))
    }

    /// Stops and forgets all of a tenant's services (it is being deleted).
    pub async fn remove_all_of(&self, user: &str) -> usize {
        let services = self.of(user);
        futures_util::future::join_all(services.iter().map(|s| s.stop())).await;
        let mut table = self.table();
        table.retain(|(u, _), _| u != user);
        services.len()
    }

    /// Starts a service and waits (a bounded while) for its first start
    /// to be over: when `create` or `start` answers, the service runs (its
    /// directory made) or says why it could not.
    pub async fn start(&self, svc: &Arc<Service>) -> Result<(), ManageError> {
        svc.start(self.registry()?, self.settings).await;
        let deadline = Instant::now() + FIRST_START_WAIT;
        while svc.status().state == ServiceState::Starting && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Starts every enabled service, then again each time its user's
    /// sandbox starts (a sandbox stopped when idle, without keep-alive,
    /// takes its services with it).
    pub async fn start_enabled(self: &Arc<Self>) {
        let Some(registry) = self.registry.clone() else {
            return;
        };
        let mut started = registry.subscribe_started();
        for svc in self.all() {
            if svc.spec().enabled {
                svc.start(&registry, self.settings).await;
            }
        }
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let user = tokio::select! {
                    r = started.recv() => match r {
                        Ok(u) => u,
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = registry.shutting_down() => return,
                };
                let Some(me) = me.upgrade() else { return };
                for svc in me.of(user.as_str()) {
                    if svc.spec().enabled && !svc.is_running().await {
                        svc.start(&registry, me.settings).await;
                    }
                }
            }
        });
    }
}

fn now_secs() -> i64 {
    super::now_secs()
}

/// What ended one run.
enum RunEnd {
    /// The stop was asked: the task ends.
    Stopped,
    /// The command ended (or could not start); `ok`: by its policy's
    /// measure a success.
    Ended { ok: bool, sandbox_gone: bool },
}

/// The service's task: runs, restarts by policy, waits for its sandbox.
async fn supervise(
    svc: Arc<Service>,
    registry: Arc<Registry>,
    settings: ServiceSettings,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let began = Instant::now();
        let end = run_once(&svc, &registry, settings, &mut stop).await;
        let (ok, sandbox_gone) = match end {
            RunEnd::Stopped => return,
            RunEnd::Ended { ok, sandbox_gone } => (ok, sandbox_gone),
        };
        if registry.is_shutting_down() {
            svc.set_state(ServiceState::Stopped);
            return;
        }
        if sandbox_gone && !settings.keep_alive {
            // Its sandbox was stopped (idle): [`Services`] starts it again
            // with the next one.
            svc.update(|s| {
                s.state = ServiceState::Stopped;
                s.started_at = None;
            });
            svc.log
                .note("the sandbox stopped; the service starts again with the next sandbox");
            return;
        }
        let policy = svc.spec().restart;
        let again = match policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !ok,
            RestartPolicy::Never => false,
        };
        if !again {
            svc.set_state(if ok {
                ServiceState::Stopped
            } else {
                ServiceState::Failed
            });
            svc.update(|s| s.started_at = None);
            return;
        }
        if began.elapsed() >= HEALTHY_RUN {
            backoff = BACKOFF_MIN;
        }
        svc.update(|s| {
            s.state = ServiceState::BackingOff;
            s.started_at = None;
            s.restarts += 1;
        });
        svc.log
            .note(&format!("restarting in {:.0?} ({policy} policy)", backoff));
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopped(&mut stop) => return,
            _ = registry.shutting_down() => {
                svc.set_state(ServiceState::Stopped);
                return;
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Starts the command once and waits for its end (or the stop).
async fn run_once(
    svc: &Arc<Service>,
    registry: &Arc<Registry>,
    settings: ServiceSettings,
    stop: &mut watch::Receiver<bool>,
) -> RunEnd {
    svc.set_state(ServiceState::Starting);
    let spec = svc.spec();
    let lease = tokio::select! {
        l = registry.lease(&svc.user) => l,
        _ = stopped(stop) => return RunEnd::Stopped,
    };
    let lease = match lease {
        Ok(l) => l,
        Err(SessionError::ShuttingDown) => {
            return RunEnd::Ended {
                ok: false,
                sandbox_gone: true,
            }
        }
        Err(e) => {
            not_started(svc, &ManageError::from(e));
            return RunEnd::Ended {
                ok: false,
                sandbox_gone: false,
            };
        }
    };
    let sandbox = Arc::clone(lease.sandbox());
    let cwd = spec.cwd_in_home();
    // Made as the user, inside the sandbox: never a path on the host.
    let mkdir = ExecCommand {
        argv: vec!["mkdir".into(), "-p".into(), "--".into(), cwd.clone()],
        env: Vec::new(),
        cwd: None,
    };
    if let Ok(mut c) = sandbox.exec(mkdir, null_stdio()).await {
        c.process.wait().await;
    }
    let stdio = ExecStdio {
        stdin: Stream::Null,
        stdout: Stream::Piped,
        stderr: Stream::Piped,
    };
    let mut child = match sandbox.exec(spec.command(), stdio).await {
        Ok(c) => c,
        Err(e) => {
            let gone = sandbox.is_ending();
            not_started(svc, &start_failure(e));
            return RunEnd::Ended {
                ok: false,
                sandbox_gone: gone,
            };
        }
    };
    // Without keep-alive the sandbox may idle out under the service.
    let _lease = settings.keep_alive.then_some(lease);
    svc.update(|s| {
        s.state = ServiceState::Running;
        s.started_at = Some(now_secs());
    });
    svc.log.note(&format!("started: {}", spec.argv.join(" ")));
    let pumps = [
        child
            .stdout
            .take()
            .map(|p| pump(svc, tokio::process::ChildStdout::from_std(p))),
        child
            .stderr
            .take()
            .map(|p| pump(svc, tokio::process::ChildStderr::from_std(p))),
    ];
    let (exit, asked) = tokio::select! {
        exit = child.process.wait() => (exit, false),
        _ = stopped(stop) => {
            child.process.kill();
            (child.process.wait().await, true)
        }
    };
    for p in pumps.into_iter().flatten().flatten() {
        let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, p).await;
    }
    let sandbox_gone = sandbox.is_ending() || registry.is_shutting_down();
    let reason = if asked {
        "stopped"
    } else if sandbox_gone {
        "sandbox_stopped"
    } else if exit.memory_limit {
        "memory_limit"
    } else if exit.signal.is_some() {
        "signal"
    } else {
        "exit"
    };
    svc.log.note(&match (exit.code, exit.signal) {
        (Some(c), _) => format!("exited with code {c}"),
        (_, Some(s)) => format!("killed by signal {s}"),
        _ => "ended".to_string(),
    });
    svc.update(|s| {
        s.last_exit = Some(ServiceExit {
            exit_code: exit.code,
            signal: exit.signal,
            at: now_secs(),
            reason: reason.into(),
        })
    });
    if asked {
        return RunEnd::Stopped;
    }
    RunEnd::Ended {
        ok: exit.code == Some(0),
        sandbox_gone,
    }
}

/// Resolves once the stop is asked (no borrow of the channel held).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A start that failed: said in the log and as the last exit.
fn not_started(svc: &Service, e: &ManageError) {
    let (code, message) = match e {
        ManageError::NotStarted { exit_code, message } => {
            (Some(*exit_code), message.trim_end().to_string())
        }
        other if other.is_internal() => {
            tracing::warn!(user = %svc.user, "a service could not start: {other}");
            (
                None,
                "could not start; the server's log has the details".into(),
            )
        }
        other => (None, other.to_string()),
    };
    svc.log.note(&format!("not started: {message}"));
    svc.update(|s| {
        s.last_exit = Some(ServiceExit {
            exit_code: code,
            signal: None,
            at: now_secs(),
            reason: "not_started".into(),
        })
    });
}

fn null_stdio() -> ExecStdio {
    ExecStdio {
        stdin: Stream::Null,
        stdout: Stream::Null,
        stderr: Stream::Null,
    }
}

/// Copies a pipe into the service's log until its end.
fn pump(
    svc: &Arc<Service>,
    pipe: std::io::Result<impl tokio::io::AsyncRead + Unpin + Send + 'static>,
) -> Option<tokio::task::JoinHandle<()>> {
    let mut pipe = pipe.ok()?;
    let svc = Arc::clone(svc);
    Some(tokio::spawn(async move {
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = pipe.read(&mut buf).await {
            if n == 0 {
                break;
            }
            svc.log.push(&buf[..n]);
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_keeps_only_its_last_bytes() {
        let log = ServiceLog::new(8);
        log.push(b"hello ");
        log.push(b"world");
        assert_eq!(log.tail(None), b"lo world");
        assert_eq!(log.tail(Some(3)), b"rld");
        log.push(b"0123456789abc");
        assert_eq!(log.tail(None), b"56789abc");
    }
}
