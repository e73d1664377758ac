//! The real backend: each user's sandbox is a `warren-shim create` held
//! open (no command, PID 1 waits). In the namespace tier PID 1 starts
//! every terminal and exec'd command on a request over its control
//! channel (`warren_runtime::control`, the `by_init` module); in the tiers
//! without namespaces they are a `warren-shim join` into it. Either way
//! the PTY comes from the sandbox's own devpts.
//!
//! Shims are started with an ordinary exec from an async worker thread,
//! never from the blocking pool: a shim's parent-death signal fires when the
//! *thread* that started it exits, and blocking-pool threads come and go.
//! Blocking reads (the report pipe, the PTY-master socket) run on the pool.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use warren_runtime::network::NetworkPolicy;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use warren_runtime::cgroups::{Cgroups, Limits, Roots};
use warren_runtime::connector;
use warren_runtime::control;
use warren_runtime::disk::{DiskBackend, DiskLimits};
use warren_runtime::launch::{self, JoinTarget, Mode};
use warren_runtime::record::SandboxRecord;
use warren_runtime::report::{self, Event, Exit, Reader};
use warren_runtime::spec::Isolation;
use warren_runtime::spec::SandboxSpec;

use crate::backend::{
    Backend, BackendError, BoxFuture, EndCause, ExecChild, ExecCommand, ExecStdio, PortError,
    ProcessExit, Sandbox, SandboxEnd, Spawned, StarterEnded, TerminalProcess,
};
use crate::by_init::{self, InitChild};
use crate::child::wait_child;
use crate::oom::{memory_pressure, oom_kills, read_oom_kills};
use crate::sandbox::{prepare, PrepareError, Request, Settings};
use crate::user::UserId;
use crate::WinSize;

/// How long a shell may take to exit after a hang-up before its shim is
/// killed.
const HANGUP_GRACE: Duration = Duration::from_secs(2);

/// How long a sandbox or a terminal may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a failed join may take to write why and exit before it is
/// killed.
const JOIN_REPORT_GRACE: Duration = Duration::from_secs(1);

/// Sandboxes made by `warren-shim`.
pub struct SandboxBackend {
    settings: Settings,
    limits: Limits,
    require_limits: bool,
    isolation: Isolation,
    network: NetworkPolicy,
    shim: PathBuf,
    shell: Vec<String>,
    disk: DiskLimits,
    disk_backend: DiskBackend,
}

impl SandboxBackend {
    /// Also readies cgroups for this process (on v2 it moves itself into
    /// its own leaf) and sweeps sandboxes' cgroups left by a crash.
    pub fn new(settings: Settings, limits: Limits, require_limits: bool) -> SandboxBackend {
        if let Ok(c) = Cgroups::probe(&Roots::default()) {
            if c.availability().complete() {
                match c.prepare() {
                    Ok(()) => log_sweep(c.sweep_stale()),
                    Err(e) => tracing::warn!("cgroups: {e}"),
                }
            }
        }
        let shell = if std::path::Path::new("/bin/bash").exists() {
            vec!["/bin/bash".to_string(), "-l".to_string()]
        } else {
            vec!["/bin/sh".to_string(), "-l".to_string()]
        };
        SandboxBackend {
            settings,
            limits,
            require_limits,
            isolation: Isolation::Namespaces,
            network: NetworkPolicy::public(),
            shim: launch::shim_path(),
            shell,
            disk: DiskLimits::NONE,
            disk_backend: DiskBackend::Auto,
        }
    }

    /// With another isolation tier than `namespaces` (chosen once, at
    /// start: `host::choose_tier`).
    pub fn with_isolation(mut self, isolation: Isolation) -> SandboxBackend {
        self.isolation = isolation;
        self
    }

    /// With disk limits on homes (docs/disk.md); none by default.
    pub fn with_disk(mut self, disk: DiskLimits, backend: DiskBackend) -> SandboxBackend {
        self.disk = disk;
        self.disk_backend = backend;
        self
    }

    /// With another network policy than `public` (docs/network.md).
    pub fn with_network(mut self, network: NetworkPolicy) -> SandboxBackend {
        self.network = network;
        self
    }

    /// With another `warren-shim` than the one next to this executable.
    pub fn with_shim(mut self, shim: PathBuf) -> SandboxBackend {
        self.shim = shim;
        self
    }

    /// Terminals run this command line instead of `bash -l` (`--shell`;
    /// checked by [`parse_shell`]).
    pub fn with_shell(mut self, argv: Vec<String>) -> SandboxBackend {
        self.shell = argv;
        self
    }
}

/// The longest shell command line taken (the API document's `maxLength`).
pub const SHELL_MAX_CHARS: usize = 1024;

/// `--shell "zsh -l"`: the words of a terminal's command line, split on
/// whitespace (no quoting). The first names the program, found on the
/// sandbox's PATH or given as an absolute path.
pub fn parse_shell(line: &str) -> Result<Vec<String>, String> {
    let argv: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    match argv.first() {
        _ if line.chars().count() > SHELL_MAX_CHARS => Err(format!(
            "the shell is longer than {SHELL_MAX_CHARS} characters"
        )),
        None => Err("the shell is empty: give a command line such as \"bash -l\"".into()),
        Some(_) if line.contains('\0') => Err("the shell contains a NUL byte".into()),
        Some(p) if p.contains('/') && !p.starts_with('/') => Err(format!(
            "the shell {p:?} is a relative path: give a name on PATH or an absolute path"
        )),
        Some(_) => Ok(argv),
    }
}

/// Says which cgroups a crashed run left and the sweep removed.
fn log_sweep(swept: Result<Vec<PathBuf>, warren_runtime::cgroups::CgroupError>) {
    match swept {
        Ok(removed) if removed.is_empty() => {}
        Ok(removed) => {
            let names: Vec<String> = removed.iter().map(|p| p.display().to_string()).collect();
            tracing::info!(
                count = removed.len(),
                "removed cgroups whose creator is gone (left by a crash): {}",
                names.join(", ")
            );
        }
        Err(e) => tracing::warn!("sweeping cgroups left by a crash: {e}"),
    }
}

/// Wraps a started shim whose command has pipes.
fn shim_command(
    mut child: Child,
    report: Reader<File>,
    command_pid: Option<i32>,
    cgroup: Option<String>,
    oom_before: u64,
    sandbox_oom: Option<Arc<OnceLock<bool>>>,
) -> ExecChild {
    ExecChild {
        stdin: child.stdin.take(),
        stdout: child.stdout.take(),
        stderr: child.stderr.take(),
        process: Box::new(ShimCommand {
            oom_before,
            child: Mutex::new(child),
            report: Some(report),
            command_pid,
            cgroup,
            sandbox_oom,
            exit: None,
        }),
    }
}

/// The report that decides a join: `Started` (the command's host pid) or
/// `Failed`. The joining shim sends `Started` right after forking the
/// command, so a `Failed` followed by `Started` came from the command's own
/// child (its chdir, its exec: "not found") and is the command's outcome,
/// an exit code with `Exited`, as when it comes after `Started`; only a
/// `Failed` with no `Started` after it is the join failing. Both report on
/// one channel, so the order is a race (a 500 the API fuzzer found).
fn first_join_event(mut next: impl FnMut() -> Option<Event>) -> Option<Event> {
    let mut failed = None;
    loop {
        match next() {
            Some(e @ Event::Started { .. }) => return Some(e),
            Some(e @ Event::Failed(_)) if failed.is_none() => failed = Some(e),
            Some(_) => continue,
            None => return failed,
        }
    }
}

/// A terminal's start that failed and said why (typed, so that a limit:
/// the sandbox's pids or memory, the host's PTYs, is told from a fault).
fn terminal_failed(f: warren_runtime::report::SetupError) -> BackendError {
    let context = match &f.hint {
        Some(h) => format!("open terminal (hint: {h})"),
        None => "open terminal".to_string(),
    };
    BackendError::new(context, f)
}

fn err(context: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::new(context.to_string(), e.to_string())
}

/// A set-up failure with its hint, for the operator's log.
fn with_hint(e: &warren_runtime::report::SetupError) -> String {
    match &e.hint {
        Some(h) => format!("{e} (hint: {h})"),
        None => e.to_string(),
    }
}

impl Backend for SandboxBackend {
    fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// Runs one command in a sandbox of its own for `user` (the sandbox
    /// ends with the command): what the command line's `warren exec` and
    /// `warren users import/export` use when no server holds the user's
    /// sandbox. Call from an async worker thread (see the module comment).
    fn exec_once<'a>(
        &'a self,
        user: &'a UserId,
        cmd: ExecCommand,
        stdio: ExecStdio,
    ) -> BoxFuture<'a, Result<ExecChild, BackendError>> {
        Box::pin(async move {
            let req = Request {
                user: user.as_str().to_string(),
                argv: cmd.argv,
                env: cmd.env,
                limits: self.limits,
                require_limits: self.require_limits,
                tmp_size_mib: 256,
                isolation: self.isolation,
                disk: self.disk,
                disk_backend: self.disk_backend,
                network: self.network.clone(),
                ..Default::default()
            };
            let settings = self.settings.clone();
            let rel = cmd.cwd;
            let mut spec = tokio::task::spawn_blocking(move || prepare(&settings, &req))
                .await
                .map_err(|e| err("prepare sandbox", e))?
                .map_err(|e| err("prepare sandbox", e))?;
            if let Some(rel) = rel {
                spec.cwd = spec.cwd.join(rel);
            }
            let launched = launch::start(
                &self.shim,
                &spec,
                stdio.stdin.into(),
                stdio.stdout.into(),
                stdio.stderr.into(),
            )
            .map_err(|e| err("start warren-shim", e))?;
            Ok(shim_command(
                launched.child,
                Reader::new(launched.report),
                None,
                None,
                0,
                None,
            ))
        })
    }

    fn start_sandbox<'a>(
        &'a self,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<Arc<dyn Sandbox>, BackendError>> {
        Box::pin(async move {
            let req = Request {
                user: user.as_str().to_string(),
                hold: true,
                limits: self.limits,
                require_limits: self.require_limits,
                tmp_size_mib: 256,
                term: Some("xterm-256color".into()),
                isolation: self.isolation,
                disk: self.disk,
                disk_backend: self.disk_backend,
                network: self.network.clone(),
                ..Default::default()
            };
            let settings = self.settings.clone();
            let (spec, tenant_shell) = tokio::task::spawn_blocking(move || {
                let spec = prepare(&settings, &req)?;
                // The tenant's own shell, if set (checked when it was).
                let shell = crate::state::State::open(&settings.state_dir)?
                    .find(&req.user)?
                    .and_then(|r| r.shell)
                    .and_then(|line| parse_shell(&line).ok());
                Ok::<_, PrepareError>((spec, shell))
            })
            .await
            .map_err(|e| err("prepare sandbox", e))?
            .map_err(|e| err("prepare sandbox", e))?;
            let launched = launch::start_with_connector(
                &self.shim,
                &spec,
                Stdio::null(),
                Stdio::null(),
                Stdio::inherit(),
            )
            .map_err(|e| err("start warren-shim", e))?;
            let connector = launched.connector.map(Connector::new);
            let control = launched.control.map(Arc::new);
            let shim = Arc::new(Mutex::new(launched.child));
            let shim_pid = shim.lock().map(|c| c.id() as i32).unwrap_or(0);
            let reader = Reader::new(launched.report);
            let ready = tokio::time::timeout(
                START_TIMEOUT,
                tokio::task::spawn_blocking(move || wait_ready(reader)),
            )
            .await;
            let ReadyInfo {
                init_pid,
                cgroup,
                record,
                reader,
            } = match ready {
                Ok(Ok(Ok(r))) => r,
                Ok(Ok(Err(e))) => return Err(e),
                Ok(Err(e)) => return Err(err("start sandbox", e)),
                Err(_) => {
                    let _ = kill(Pid::from_raw(shim_pid), Signal::SIGKILL);
                    return Err(err("start sandbox", "timed out"));
                }
            };
            let mut template = spec;
            template.hold = false;
            template.argv = tenant_shell.unwrap_or_else(|| self.shell.clone());
            Ok(Arc::new(UserSandbox {
                shim_path: self.shim.clone(),
                template,
                target: JoinTarget {
                    init_pid,
                    parent_pid: shim_pid,
                    cgroup,
                    record: Some(Box::new(record.clone())),
                },
                record,
                shim,
                reader: Mutex::new(Some(reader)),
                ended_out_of_memory: Arc::new(OnceLock::new()),
                connector,
                control,
                next_terminal: AtomicU64::new(1),
            }) as Arc<dyn Sandbox>)
        })
    }
}

/// What a held sandbox reported by the time it was ready: PID 1's pid, its
/// cgroup id and its record.
struct ReadyInfo {
    init_pid: i32,
    cgroup: Option<String>,
    record: SandboxRecord,
    reader: Reader<File>,
}

/// Reads the held sandbox's events until PID 1 says it is ready.
fn wait_ready(mut reader: Reader<File>) -> Result<ReadyInfo, BackendError> {
    let (mut init, mut sandbox, mut ready) = (None, None, false);
    // At a tight memory limit the OOM killer may end the sandbox while it
    // starts: the shim's last word is then the cgroup's counters.
    let (mut out_of_memory, mut failed) = (false, None);
    // The shim records the sandbox before it clones it, so the record
    // comes before Ready.
    while !(ready && init.is_some()) {
        match reader.next_event() {
            Some(Event::Started { init_pid }) => init = init.or(Some(init_pid)),
            Some(Event::Sandbox { cgroup, record }) => {
                if !record.limits.missing.is_empty() {
                    let reasons: Vec<&str> =
                        record.limits.reasons.values().map(String::as_str).collect();
                    tracing::warn!(
                        "sandbox without the {} limit(s): {}",
                        record.limits.missing.join(", "),
                        reasons.join("; ")
                    );
                }
                sandbox = Some((cgroup, record));
            }
            Some(Event::Ready) => ready = true,
            Some(Event::LimitsHit { events, .. }) => out_of_memory |= events.oom_killed(),
            // Read on to the end: the counters come after the failure.
            Some(Event::Failed(e)) => failed = failed.or(Some(e)),
            Some(_) => {}
            None if out_of_memory => {
                return Err(BackendError::new(
                    "start sandbox",
                    StarterEnded::OutOfMemory,
                ))
            }
            None => {
                return Err(err(
                    "start sandbox",
                    match failed {
                        Some(e) => with_hint(&e),
                        None => "the shim ended before the sandbox was ready".into(),
                    },
                ))
            }
        }
    }
    let Some((cgroup, record)) = sandbox else {
        return Err(err("start sandbox", "the shim sent no record"));
    };
    Ok(ReadyInfo {
        init_pid: init.unwrap_or_default(),
        cgroup,
        record: *record,
        reader,
    })
}

/// The server's end of a sandbox's connector (`runtime::connector`): one
/// request at a time, each a round trip on a local socket.
struct Connector(Arc<Mutex<(OwnedFd, u32)>>);

/// How long the connector may take to answer (it connects on loopback).
const CONNECTOR_ANSWER: Duration = Duration::from_secs(5);

impl Connector {
    fn new(fd: OwnedFd) -> Connector {
        // Best effort: without it a stuck connector holds one request.
        let _ = connector::set_answer_timeout(&fd, CONNECTOR_ANSWER);
        Connector(Arc::new(Mutex::new((fd, 0))))
    }

    async fn connect(&self, port: u16) -> Result<std::net::TcpStream, PortError> {
        let sock = Arc::clone(&self.0);
        let failed =
            |source: Box<dyn std::error::Error + Send + Sync>| PortError::Failed { port, source };
        let got = tokio::task::spawn_blocking(move || {
            let mut held = sock.lock().map_err(|_| connector::ConnectError::Gone)?;
            held.1 = held.1.wrapping_add(1);
            connector::request(&held.0, port, held.1)
        })
        .await
        .map_err(|e| failed(e.into()))?;
        let stream = match got {
            Ok(fd) => std::net::TcpStream::from(fd),
            Err(connector::ConnectError::NotListening(p)) => {
                return Err(PortError::NotListening(p))
            }
            Err(connector::ConnectError::Gone) => return Err(PortError::NotRunning),
            Err(e) => return Err(failed(e.into())),
        };
        stream.set_nonblocking(true).map_err(|e| failed(e.into()))?;
        Ok(stream)
    }
}

/// One user's held sandbox.
struct UserSandbox {
    /// What the shim recorded, shown as it is.
    record: SandboxRecord,
    shim_path: PathBuf,
    /// The user's spec with the login shell as the command.
    template: SandboxSpec,
    target: JoinTarget,
    shim: Arc<Mutex<Child>>,
    reader: Mutex<Option<Reader<File>>>,
    /// Set when the sandbox has ended: whether the OOM killer ended it.
    /// A command killed with it may find the cgroup (and its counter)
    /// already removed; its shim read the counters first.
    ended_out_of_memory: Arc<OnceLock<bool>>,
    /// Reaches ports inside the sandbox's network namespace (previews).
    connector: Option<Connector>,
    /// The namespace tier: PID 1's control channel, which starts the
    /// terminals (`terminal_by_init`); the other tiers join instead.
    control: Option<Arc<OwnedFd>>,
    /// The id of the next terminal asked of PID 1.
    next_terminal: AtomicU64,
}

impl Sandbox for UserSandbox {
    fn record(&self) -> &SandboxRecord {
        &self.record
    }

    fn disk_usage(&self) -> Option<warren_runtime::disk::DiskUsage> {
        let d = self.template.disk.as_ref()?;
        warren_runtime::disk::usage(
            &d.images,
            &self.template.workspace,
            &self.template.tenant.slug,
            Some(self.target.parent_pid),
        )
    }

    fn network_usage(&self) -> Option<warren_runtime::network::NetUsage> {
        // Only a sandbox with a network namespace of its own: elsewhere
        // PID 1's /proc/<pid>/net is the host's.
        let public =
            self.record.network.as_ref()?.mode == warren_runtime::network::NetworkMode::Public;
        let pid = self.target.init_pid;
        (public && pid > 1).then(|| warren_runtime::network::usage_of(pid))?
    }

    fn usage(&self) -> Option<warren_runtime::cgroups::Usage> {
        let id = self.target.cgroup.as_deref()?;
        Cgroups::probe(&Roots::default())
            .ok()?
            .open(id)
            .ok()?
            .usage()
            .ok()
    }

    fn exec(
        &self,
        cmd: ExecCommand,
        stdio: ExecStdio,
    ) -> BoxFuture<'_, Result<ExecChild, BackendError>> {
        Box::pin(async move {
            if let Some(control) = &self.control {
                return self.command_by_init(control, cmd, stdio).await;
            }
            let mut spec = self.template.clone();
            spec.tty = None;
            spec.argv = cmd.argv;
            for (k, v) in cmd.env {
                spec.env.retain(|(ek, _)| *ek != k);
                spec.env.push((k, v));
            }
            if let Some(rel) = cmd.cwd {
                spec.cwd = spec.cwd.join(rel);
            }
            // Counted before the command can run: an OOM kill right after
            // it starts must show as a rise.
            let pressure_before = memory_pressure(self.target.cgroup.as_deref());
            let oom_before = oom_kills(self.target.cgroup.as_deref());
            let launched = launch::start_as(
                &self.shim_path,
                &spec,
                &Mode::Join(self.target.clone()),
                stdio.stdin.into(),
                stdio.stdout.into(),
                stdio.stderr.into(),
            )
            .map_err(|e| err("start warren-shim join", e))?;
            let mut child = launched.child;
            // The command's host pid (its process group) comes first; a
            // failed join says why instead.
            let mut reader = Reader::new(launched.report);
            let first = tokio::time::timeout(
                START_TIMEOUT,
                tokio::task::spawn_blocking(move || {
                    let first = first_join_event(|| reader.next_event());
                    (first, reader)
                }),
            )
            .await;
            match first {
                Ok(Ok((Some(Event::Started { init_pid }), reader))) => Ok(shim_command(
                    child,
                    reader,
                    Some(init_pid),
                    self.target.cgroup.clone(),
                    oom_before,
                    Some(Arc::clone(&self.ended_out_of_memory)),
                )),
                Ok(Ok((Some(Event::Failed(f)), _))) => {
                    let _ = child.wait();
                    // A join step failing while the sandbox ends is that
                    // end, whatever errno the dying namespaces gave.
                    if crate::backend::JOIN_STEPS
                        .iter()
                        .any(|s| f.step.starts_with(s))
                        && self.is_ending()
                    {
                        let ended = StarterEnded::SandboxEnded(f.to_string());
                        return Err(BackendError::new("exec", ended));
                    }
                    // Typed, so the API can tell a command that cannot be
                    // exec'd (127/126, as a shell) or a sandbox at its
                    // pids limit (409) from the server's own failure.
                    Err(BackendError::new("exec", f))
                }
                // No word in time, or the report ended with none: the shim
                // is stuck or gone. At a tight memory limit the kernel
                // stalls it in reclaim or kills it once it is in the
                // sandbox's cgroup, and a sandbox ending meanwhile kills
                // everything in that cgroup, the joining shim too: the
                // tenant's state, which the API answers 409, not 500.
                other => {
                    let by_itself = match other {
                        Err(_) => None,
                        Ok(_) => exit_soon(&mut child).await,
                    };
                    let _ = child.kill();
                    let status = child.wait();
                    if memory_pressure(self.target.cgroup.as_deref()) > pressure_before {
                        return Err(BackendError::new("exec", StarterEnded::OutOfMemory));
                    }
                    Err(match (other, by_itself, status) {
                        (Err(_), _, _) => err("exec", "timed out joining the sandbox"),
                        (_, Some(s), _)
                            if ExitStatusExt::signal(&s) == Some(Signal::SIGKILL as i32) =>
                        {
                            BackendError::new("exec", StarterEnded::Killed)
                        }
                        (_, _, Ok(s)) => BackendError::new("exec", StarterEnded::Other(s)),
                        (_, _, Err(e)) => err("exec", e),
                    })
                }
            }
        })
    }

    fn open_terminal(&self, size: WinSize) -> BoxFuture<'_, Result<Spawned, BackendError>> {
        Box::pin(async move {
            if let Some(control) = &self.control {
                return self.terminal_by_init(control, size).await;
            }
            let mut spec = self.template.clone();
            spec.tty = Some(WinSize {
                rows: size.rows,
                cols: size.cols,
            });
            let pressure_before = memory_pressure(self.target.cgroup.as_deref());
            let launched = launch::start_as(
                &self.shim_path,
                &spec,
                &Mode::Join(self.target.clone()),
                Stdio::null(),
                Stdio::null(),
                Stdio::inherit(),
            )
            .map_err(|e| err("start warren-shim join", e))?;
            let sock = launched
                .pty_socket
                .ok_or_else(|| err("open terminal", "no terminal socket"))?;
            let mut child = launched.child;
            let master = tokio::time::timeout(
                START_TIMEOUT,
                tokio::task::spawn_blocking(move || warren_runtime::pty::recv_fd(&sock)),
            )
            .await;
            let mut report = Some(launched.report);
            let master = match master {
                Ok(Ok(Ok(Some(m)))) => m,
                other => {
                    // The join failed: its report says why. It may close the
                    // terminal socket (dropped with the command it could not
                    // fork) just before it writes that report: killed at once,
                    // it could leave no word (a pids-limit refusal then read
                    // as a fault). So it gets a moment to finish first.
                    let grace = std::time::Instant::now() + JOIN_REPORT_GRACE;
                    while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < grace
                    {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    let _ = child.kill();
                    let events = match report.take() {
                        Some(r) => tokio::task::spawn_blocking(move || report::read_all(r))
                            .await
                            .unwrap_or_default(),
                        None => Vec::new(),
                    };
                    // Reaped: a zombie in the sandbox's cgroup would hold
                    // one of its pids for good, and with it the next shell.
                    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
                    // Typed, so that a limit (the sandbox's pids or memory,
                    // the host's PTYs) is told apart from a fault.
                    let failed = events.into_iter().find_map(|e| match e {
                        Event::Failed(f) => Some(f),
                        _ => None,
                    });
                    return Err(match failed {
                        Some(f) => terminal_failed(f),
                        // No word: stalled or killed at the memory limit.
                        None if memory_pressure(self.target.cgroup.as_deref())
                            > pressure_before =>
                        {
                            BackendError::new("open terminal", StarterEnded::OutOfMemory)
                        }
                        None => err("open terminal", format!("{other:?}")),
                    });
                }
            };
            let master_for_kill = master
                .try_clone()
                .map_err(|e| err("dup the PTY master", e))?;
            Ok(Spawned {
                master,
                process: Box::new(JoinedShell {
                    child: Mutex::new(child),
                    report,
                    master: master_for_kill,
                    cgroup: self.target.cgroup.clone(),
                    oom_before: oom_kills(self.target.cgroup.as_deref()),
                    exit: None,
                    hung_up: None,
                }),
            })
        })
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // PID 1 ends the sandbox on SIGTERM; the shim removes the cgroup.
            if self.signal_shim_if_running(Signal::SIGTERM)
                && tokio::time::timeout(Duration::from_secs(5), wait_child(&self.shim))
                    .await
                    .is_err()
            {
                self.signal_shim_if_running(Signal::SIGKILL);
                wait_child(&self.shim).await;
            }
            let _ = self.final_events().await;
            self.remove_leftover_cgroup().await;
        })
    }

    /// The shim supervises PID 1 and exits right after it: its pidfd is
    /// the one event that covers both a dead PID 1 and a dead shim.
    fn ended(&self) -> BoxFuture<'_, SandboxEnd> {
        Box::pin(async move {
            let status = wait_child(&self.shim).await;
            let events = self.final_events().await;
            let oom_left = oom_kills(self.target.cgroup.as_deref()) > 0;
            let end = end_of_sandbox(status, &events, oom_left);
            let _ = self
                .ended_out_of_memory
                .set(end.cause == EndCause::OutOfMemory);
            end
        })
    }

    fn is_ending(&self) -> bool {
        self.shim_exited() || init_is_exiting(self.target.init_pid)
    }

    fn listening_ports(&self) -> Result<Vec<u16>, PortError> {
        if self.record.tier != warren_runtime::spec::Isolation::Namespaces {
            return Err(PortError::Unavailable(
                "this sandbox shares the host's network (no network namespace of its own)",
            ));
        }
        let pid = self.target.init_pid;
        if pid <= 1 || self.is_ending() {
            return Err(PortError::NotRunning);
        }
        // PID 1's /proc/<pid>/net is its network namespace's, readable
        // from the host like its counters (`network_usage`).
        Ok(connector::listening_ports(std::path::Path::new(&format!(
            "/proc/{pid}/net"
        ))))
    }

    fn connect_port(&self, port: u16) -> BoxFuture<'_, Result<std::net::TcpStream, PortError>> {
        Box::pin(async move {
            if self.record.tier != warren_runtime::spec::Isolation::Namespaces {
                return Err(PortError::Unavailable(
                    "this sandbox shares the host's network (no network namespace of its own)",
                ));
            }
            let Some(connector) = &self.connector else {
                return Err(PortError::Unavailable("this sandbox has no connector"));
            };
            if self.is_ending() {
                return Err(PortError::NotRunning);
            }
            connector.connect(port).await
        })
    }
}

impl UserSandbox {
    /// Asks PID 1 for a terminal (`warren_runtime::control`): it forks
    /// the shell itself, so no process joins from outside.
    async fn terminal_by_init(
        &self,
        control: &Arc<OwnedFd>,
        size: WinSize,
    ) -> Result<Spawned, BackendError> {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        use std::os::fd::AsRawFd;
        let id = self.next_terminal.fetch_add(1, Ordering::Relaxed);
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| err("open terminal", e))?;
        let (report_r, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| err("open terminal", e))?;
        let request = control::Request::Terminal {
            id,
            argv: self.template.argv.clone(),
            size: warren_runtime::pty::WinSize {
                rows: size.rows,
                cols: size.cols,
            },
        };
        let pressure_before = memory_pressure(self.target.cgroup.as_deref());
        let fds = [theirs.as_raw_fd(), report_w.as_raw_fd()];
        if let Err(e) = control::send(control.as_ref(), &request, &fds) {
            if self.is_ending() {
                let ended = StarterEnded::SandboxEnded(format!("ask PID 1 for a terminal: {e}"));
                return Err(BackendError::new("open terminal", ended));
            }
            return Err(err("open terminal: ask PID 1", e));
        }
        // Only PID 1 and the shell hold the other ends now: their end is EOF.
        drop((theirs, report_w));
        let master = tokio::time::timeout(
            START_TIMEOUT,
            tokio::task::spawn_blocking(move || warren_runtime::pty::recv_fd(&ours)),
        )
        .await;
        let master = match master {
            Ok(Ok(Ok(Some(m)))) => m,
            other => {
                // PID 1 (a refused fork) or the shell's process (a failed
                // step) wrote why; PID 1 closes the report once it reaped
                // the shell, which a stuck start is killed for.
                if other.is_err() {
                    let _ = control::send(control.as_ref(), &control::Request::Kill { id }, &[]);
                }
                let events = tokio::time::timeout(
                    START_TIMEOUT,
                    tokio::task::spawn_blocking(move || report::read_all(File::from(report_r))),
                )
                .await;
                let failed = match events {
                    Ok(Ok(events)) => events.into_iter().find_map(|e| match e {
                        Event::Failed(f) => Some(f),
                        _ => None,
                    }),
                    _ => None,
                };
                return Err(match failed {
                    Some(f) => terminal_failed(f),
                    None if memory_pressure(self.target.cgroup.as_deref()) > pressure_before => {
                        BackendError::new("open terminal", StarterEnded::OutOfMemory)
                    }
                    None if self.is_ending() => BackendError::new(
                        "open terminal",
                        StarterEnded::SandboxEnded("PID 1 ended".into()),
                    ),
                    None => err("open terminal", format!("{other:?}")),
                });
            }
        };
        let report = by_init::receiver(report_r).map_err(|e| err("open terminal", e))?;
        Ok(Spawned {
            master,
            process: Box::new(InitChild {
                id,
                control: Arc::clone(control),
                report,
                events: Vec::new(),
                cgroup: self.target.cgroup.clone(),
                oom_before: oom_kills(self.target.cgroup.as_deref()),
                exit: None,
            }),
        })
    }

    /// Asks PID 1 to run a command (`warren_runtime::control`): it forks
    /// it itself on the streams sent along, so no process joins from
    /// outside.
    async fn command_by_init(
        &self,
        control: &Arc<OwnedFd>,
        cmd: ExecCommand,
        stdio: ExecStdio,
    ) -> Result<ExecChild, BackendError> {
        use std::os::fd::AsRawFd;
        let id = self.next_terminal.fetch_add(1, Ordering::Relaxed);
        let streams = by_init::Streams::open(stdio).map_err(|e| err("exec", e))?;
        let (report_r, report_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| err("exec", e))?;
        let mut report = by_init::receiver(report_r).map_err(|e| err("exec", e))?;
        let request = control::Request::Command {
            id,
            argv: cmd.argv,
            env: cmd.env,
            cwd: cmd.cwd,
        };
        let pressure_before = memory_pressure(self.target.cgroup.as_deref());
        let oom_before = oom_kills(self.target.cgroup.as_deref());
        let [stdin, stdout, stderr] = &streams.theirs;
        let fds = [stdin, stdout, stderr].map(|f| f.as_raw_fd());
        let fds = [fds[0], fds[1], fds[2], report_w.as_raw_fd()];
        if let Err(e) = control::send(control.as_ref(), &request, &fds) {
            if self.is_ending() {
                let ended = StarterEnded::SandboxEnded(format!("ask PID 1 to exec: {e}"));
                return Err(BackendError::new("exec", ended));
            }
            return Err(err("exec: ask PID 1", e));
        }
        // Only PID 1 and the command hold the other ends now: their end
        // is EOF.
        drop((streams.theirs, report_w));
        let events = match tokio::time::timeout(START_TIMEOUT, by_init::started(&mut report)).await
        {
            Ok(Ok(events)) => events,
            Ok(Err(Some(Event::Failed(f)))) => return Err(BackendError::new("exec", f)),
            other => {
                if other.is_err() {
                    let _ = control::send(control.as_ref(), &control::Request::Kill { id }, &[]);
                }
                let pressed = memory_pressure(self.target.cgroup.as_deref()) > pressure_before;
                return Err(if pressed || self.ended_out_of_memory().await {
                    BackendError::new("exec", StarterEnded::OutOfMemory)
                } else if self.is_ending() {
                    BackendError::new("exec", StarterEnded::SandboxEnded("PID 1 ended".into()))
                } else {
                    err("exec", "PID 1 did not start the command in time")
                });
            }
        };
        Ok(ExecChild {
            stdin: streams.stdin,
            stdout: streams.stdout,
            stderr: streams.stderr,
            process: Box::new(InitChild {
                id,
                control: Arc::clone(control),
                report,
                events,
                cgroup: self.target.cgroup.clone(),
                oom_before,
                exit: None,
            }),
        })
    }

    /// Whether the sandbox has ended of its memory limit (the OOM killer
    /// took PID 1: its cgroup, with the counters, may be gone already); a
    /// sandbox still running has not.
    async fn ended_out_of_memory(&self) -> bool {
        self.is_ending() && ended_of_oom(&self.ended_out_of_memory).await
    }

    /// Signals the shim unless it has been reaped (the sandbox ended by
    /// itself): checked and sent under the lock that every reaping of it
    /// takes, so the pid cannot have been reaped and reused in between.
    fn signal_shim_if_running(&self, signal: Signal) -> bool {
        let Ok(mut child) = self.shim.lock() else {
            return false;
        };
        if !matches!(child.try_wait(), Ok(None)) {
            return false;
        }
        let _ = kill(Pid::from_raw(child.id() as i32), signal);
        true
    }

    fn shim_exited(&self) -> bool {
        self.shim
            .lock()
            .ok()
            .and_then(|mut c| c.try_wait().ok().flatten())
            .is_some()
    }

    /// What the shim reported after the sandbox was ready (PID 1's exit,
    /// the limits hit), read once the shim has exited. Empty for the
    /// second caller.
    async fn final_events(&self) -> Vec<Event> {
        let reader = self.reader.lock().ok().and_then(|mut r| r.take());
        let Some(mut reader) = reader else {
            return Vec::new();
        };
        let events = tokio::task::spawn_blocking(move || {
            std::iter::from_fn(|| reader.next_event()).collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for e in &events {
            if let Event::LimitsHit { events, .. } = e {
                tracing::info!(?events, "sandbox limits were hit");
            }
        }
        events
    }

    /// A shim killed before it could clean up leaves the sandbox's cgroup
    /// behind (issue 10, item 8): remove it here.
    async fn remove_leftover_cgroup(&self) {
        let Some(id) = self.target.cgroup.clone() else {
            return;
        };
        let removed = tokio::task::spawn_blocking(move || {
            let cg = Cgroups::probe(&Roots::default()).ok()?.open(&id).ok()?;
            Some(cg.destroy())
        })
        .await;
        if let Ok(Some(Err(e))) = removed {
            tracing::warn!("removing a dead sandbox's cgroup: {e}");
        }
    }
}

/// Why a sandbox ended, from its shim's exit status, the shim's last
/// reports and whether its cgroup (still there when the shim was killed)
/// counted an OOM kill.
fn end_of_sandbox(
    shim: Option<std::process::ExitStatus>,
    events: &[Event],
    oom_left: bool,
) -> SandboxEnd {
    use std::os::unix::process::ExitStatusExt;
    let oom = oom_left
        || events.iter().any(|e| match e {
            Event::LimitsHit { events, .. } => events.oom_killed(),
            _ => false,
        });
    let init_exit = events.iter().find_map(|e| match e {
        Event::Exited { exit } => Some(*exit),
        _ => None,
    });
    let (signal, code) = match init_exit {
        Some(Exit::Signal(s)) => (Some(s), None),
        Some(Exit::Code(c)) => (None, Some(c)),
        // No report: the shim itself was killed.
        None => (shim.and_then(|s| s.signal()), None),
    };
    let cause = if oom {
        EndCause::OutOfMemory
    } else if signal.is_some() || init_exit.is_none() {
        EndCause::Killed
    } else {
        EndCause::Exited
    };
    SandboxEnd {
        cause,
        signal,
        code,
    }
}

/// Whether `pid` is gone, a zombie, or exiting (PF_EXITING in the flags of
/// /proc/<pid>/stat). A sandbox's PID 1 is exiting while the kernel kills
/// the rest of its pid namespace, before its pidfd says so.
fn init_is_exiting(pid: i32) -> bool {
    const PF_EXITING: u64 = 0x4;
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // The command name is in parentheses and may hold spaces.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return false;
    };
    let fields: Vec<&str> = rest.split(' ').collect();
    let state = fields.first().copied().unwrap_or("");
    let flags: u64 = fields.get(6).and_then(|f| f.parse().ok()).unwrap_or(0);
    matches!(state, "Z" | "X" | "x") || flags & PF_EXITING != 0
}

/// How a child whose report just ended exits, if it does within half a
/// second (it closes the report as it exits).
async fn exit_soon(child: &mut Child) -> Option<std::process::ExitStatus> {
    for _ in 0..50 {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// Whether an ending sandbox ended of its memory limit, as the registry's
/// watcher sets `ended` once it has read the shim's last report (within
/// 2 s, or not known: false).
async fn ended_of_oom(ended: &OnceLock<bool>) -> bool {
    for _ in 0..100 {
        if let Some(oom) = ended.get() {
            return *oom;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A terminal's shell: the `warren-shim join` supervising it.
struct JoinedShell {
    child: Mutex<Child>,
    report: Option<File>,
    master: OwnedFd,
    cgroup: Option<String>,
    oom_before: u64,
    exit: Option<ProcessExit>,
    /// When `kill` sent the hang-up.
    hung_up: Option<std::time::Instant>,
}

impl TerminalProcess for JoinedShell {
    fn wait(&mut self) -> BoxFuture<'_, ProcessExit> {
        Box::pin(async move {
            if let Some(exit) = self.exit {
                return exit;
            }
            // After `kill`, the shell had its chance to hang up; then the
            // shim goes, and its parent-death signal takes the shell along.
            let status = match self.hung_up {
                Some(_) => {
                    match tokio::time::timeout(HANGUP_GRACE, wait_child(&self.child)).await {
                        Ok(status) => status,
                        Err(_) => {
                            if let Ok(mut c) = self.child.lock() {
                                let _ = c.kill();
                            }
                            wait_child(&self.child).await
                        }
                    }
                }
                None => wait_child(&self.child).await,
            };
            // The shim reports the shell's own exit (code or signal).
            let events = match self.report.take() {
                Some(r) => tokio::task::spawn_blocking(move || report::read_all(r))
                    .await
                    .unwrap_or_default(),
                None => Vec::new(),
            };
            let exit = events
                .iter()
                .find_map(|e| match e {
                    Event::Exited { exit } => Some(*exit),
                    _ => None,
                })
                .or_else(|| status.map(|s| Exit::Code(s.code().unwrap_or(128 + 9))));
            let mut out = exit.map(ProcessExit::from).unwrap_or_default();
            out.memory_limit =
                out.signal == Some(9) && oom_kills(self.cgroup.as_deref()) > self.oom_before;
            self.exit = Some(out);
            out
        })
    }

    fn kill(&mut self) {
        // The foreground job dies at once; the shell gets a hang-up through
        // the shim, which forwards it and then reaps the shell itself. A
        // SIGKILLed shim would leave the shell to the *host's* init (the
        // shim is in the host's pid namespace), and until that reaps it the
        // sandbox's pid namespace cannot end. `wait` SIGKILLs the shim if
        // the shell ignores the hang-up.
        if let Ok(fg) = rustix::termios::tcgetpgrp(&self.master) {
            let _ = killpg(Pid::from_raw(fg.as_raw_nonzero().get()), Signal::SIGKILL);
        }
        if self.hung_up.is_none() {
            if let Ok(c) = self.child.lock() {
                let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGHUP);
            }
            self.hung_up = Some(std::time::Instant::now());
        }
    }
}

/// A command run by a shim (`join` into a held sandbox, or a one-shot
/// `create`) with plain pipes.
struct ShimCommand {
    child: Mutex<Child>,
    report: Option<Reader<File>>,
    /// Joined: the command's host pid, which is also its process group.
    command_pid: Option<i32>,
    /// Joined: the sandbox's cgroup, whose OOM counter says "memory limit".
    cgroup: Option<String>,
    oom_before: u64,
    /// Joined: how the sandbox ended, once it has.
    sandbox_oom: Option<Arc<OnceLock<bool>>>,
    exit: Option<ProcessExit>,
}

impl ShimCommand {
    /// Whether the OOM killer took the command (it died of SIGKILL): the
    /// sandbox's counter rose; or, when the sandbox ended meanwhile and its
    /// cgroup is gone with the counter, the sandbox ended out of memory.
    async fn oom_killed(&self) -> bool {
        if let Some(now) = read_oom_kills(self.cgroup.as_deref()) {
            return now > self.oom_before;
        }
        match &self.sandbox_oom {
            Some(ended) => ended_of_oom(ended).await,
            None => false,
        }
    }
}

impl TerminalProcess for ShimCommand {
    fn wait(&mut self) -> BoxFuture<'_, ProcessExit> {
        Box::pin(async move {
            if let Some(exit) = self.exit {
                return exit;
            }
            let status = wait_child(&self.child).await;
            let events = match self.report.take() {
                Some(mut r) => tokio::task::spawn_blocking(move || {
                    std::iter::from_fn(|| r.next_event()).collect::<Vec<_>>()
                })
                .await
                .unwrap_or_default(),
                None => Vec::new(),
            };
            let mut out = ProcessExit::default();
            match events.iter().find_map(|e| match e {
                Event::Exited { exit } => Some(*exit),
                _ => None,
            }) {
                Some(Exit::Code(c)) => out.code = Some(c),
                Some(Exit::Signal(s)) => out.signal = Some(s),
                None => {
                    out.code = status.and_then(|s| s.code());
                    out.signal =
                        status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s));
                }
            }
            // One-shot: the shim reads the cgroup's counters at the end.
            // Joined: the sandbox lives on; compare its OOM counter.
            let hit = events.iter().any(|e| match e {
                Event::LimitsHit { events, .. } => events.oom_killed(),
                _ => false,
            });
            out.memory_limit =
                hit || (out.signal == Some(9) && self.cgroup.is_some() && self.oom_killed().await);
            self.exit = Some(out);
            out
        })
    }

    fn kill(&mut self) {
        match self.command_pid {
            // The command's group; its shim then reports the exit.
            Some(pid) => {
                // Before its setpgid the command is not yet a group leader.
                if killpg(Pid::from_raw(pid), Signal::SIGKILL).is_err() {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            // One-shot: PID 1 and everything in the sandbox die with the
            // shim (parent-death signal).
            None => {
                if let Ok(mut c) = self.child.lock() {
                    let _ = c.kill();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::errno::Errno;
    use std::os::unix::process::ExitStatusExt;
    use warren_runtime::report::SetupError;

    fn first(events: Vec<Event>) -> Option<Event> {
        let mut events = events.into_iter();
        first_join_event(|| events.next())
    }

    #[test]
    fn a_shell_line_is_bounded_like_the_api_document_says() {
        let longest = format!("bash {}", "x".repeat(SHELL_MAX_CHARS - 5));
        assert_eq!(parse_shell(&longest).unwrap().len(), 2);
        let err = parse_shell(&format!("{longest}y")).unwrap_err();
        assert!(err.contains("longer than 1024"), "{err}");
        assert!(parse_shell("   ").is_err());
        assert!(parse_shell("bin/zsh").is_err());
    }

    #[test]
    fn a_command_not_found_is_its_outcome_even_when_reported_first() {
        let not_found = Event::Failed(SetupError::errno(report::STEP_EXEC, Errno::ENOENT));
        let started = Event::Started { init_pid: 42 };
        assert_eq!(
            first(vec![not_found.clone(), started.clone()]),
            Some(started.clone())
        );
        assert_eq!(first(vec![started.clone(), not_found]), Some(started));
    }

    #[test]
    fn the_command_failing_in_its_child_is_its_outcome_in_either_order() {
        let no_cwd = Event::Failed(SetupError::errno("chdir /workspace/a/nope", Errno::ENOENT));
        let started = Event::Started { init_pid: 42 };
        assert_eq!(
            first(vec![no_cwd.clone(), started.clone()]),
            Some(started.clone())
        );
        assert_eq!(first(vec![started.clone(), no_cwd]), Some(started));
    }

    #[test]
    fn a_set_up_step_failing_ends_the_join() {
        let failed = Event::Failed(SetupError::errno("join namespaces", Errno::EPERM));
        assert_eq!(first(vec![failed.clone()]), Some(failed));
        assert_eq!(first(vec![]), None);
    }

    #[test]
    fn a_sandbox_end_says_why() {
        let killed = [Event::Exited {
            exit: Exit::Signal(9),
        }];
        let end = end_of_sandbox(None, &killed, false);
        assert_eq!(
            (end.cause, end.signal, end.code),
            (EndCause::Killed, Some(9), None)
        );
        let exited = [Event::Exited {
            exit: Exit::Code(3),
        }];
        let end = end_of_sandbox(None, &exited, false);
        assert_eq!(
            (end.cause, end.signal, end.code),
            (EndCause::Exited, None, Some(3))
        );
        // The shim itself was killed: no report, its own status says how.
        let shim = std::process::ExitStatus::from_raw(9);
        let end = end_of_sandbox(Some(shim), &[], false);
        assert_eq!((end.cause, end.signal), (EndCause::Killed, Some(9)));
        // An OOM kill counted by the cgroup wins.
        let oom = [
            Event::Exited {
                exit: Exit::Signal(9),
            },
            Event::LimitsHit {
                limits: Limits::default(),
                events: warren_runtime::cgroups::Events {
                    oom_kills: Some(1),
                    ..Default::default()
                },
            },
        ];
        assert_eq!(
            end_of_sandbox(None, &oom, false).cause,
            EndCause::OutOfMemory
        );
        assert_eq!(
            end_of_sandbox(Some(shim), &[], true).cause,
            EndCause::OutOfMemory
        );
    }

    #[test]
    fn a_running_process_is_not_exiting_and_a_missing_one_is_gone() {
        assert!(!init_is_exiting(std::process::id() as i32));
        assert!(init_is_exiting(i32::MAX));
    }
}
