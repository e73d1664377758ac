//! What the session registry needs from whatever runs the shells: start a
//! sandbox for a user, open a terminal (a process on a PTY) in it, stop it.
//!
//! Two implementations: [`crate::echo::EchoBackend`] (a plain shell on a
//! PTY as the server's own user, no isolation: tests and development) and
//! the real sandbox backend, which drives `warren-shim` (see docs/serve.md,
//! "Backends").

use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{ChildStderr, ChildStdin, ChildStdout, Stdio};
use std::sync::Arc;

use warren_runtime::cgroups::Usage;
use warren_runtime::record::SandboxRecord;
use warren_runtime::report::{Exit, LimitReached, SetupError};

use crate::user::UserId;
use crate::WinSize;

/// A boxed future, so the traits stay object safe (`Arc<dyn Backend>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A backend failure, for the server's log. Clients only ever see "could
/// not start a terminal"; the detail (which step, which errno) stays here.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct BackendError {
    pub context: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl BackendError {
    pub fn new(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> BackendError {
        BackendError {
            context: context.into(),
            source: source.into(),
        }
    }

    /// The limit that refused the start, when one did rather than a fault:
    /// the sandbox's pids or memory limit, or the host's PTYs.
    pub fn limit_reached(&self) -> Option<LimitReached> {
        if let Some(StarterEnded::OutOfMemory) = self.source.downcast_ref() {
            return Some(LimitReached::Memory);
        }
        self.source.downcast_ref::<SetupError>()?.limit_reached()
    }
}

/// A command's starter (the joining shim) failed without a word before the
/// command ran: stalled or killed at the sandbox's memory limit (the
/// cgroup's OOM-kill or limit-hit counts rose meanwhile), or for another
/// reason.
#[derive(Debug, thiserror::Error)]
pub enum StarterEnded {
    #[error("the sandbox's memory limit stopped the command's starter before the command ran")]
    OutOfMemory,
    /// SIGKILL from someone else: the OOM killer, or the sandbox ending
    /// (its end kills what is left in its cgroup).
    #[error("the command's starter was killed before the command ran (the sandbox ended or ran out of memory)")]
    Killed,
    /// A join step failed because the sandbox was ending under it (setns
    /// into a dying user namespace answers EPERM in a nested one).
    #[error("the sandbox ended while the command was starting ({0})")]
    SandboxEnded(String),
    #[error("the command's starter ended before the command started ({0})")]
    Other(std::process::ExitStatus),
}

/// The joining shim's own steps, before the command exists
/// (shim/src/join.rs, shim/src/limits.rs): where a join meets a sandbox
/// that has ended.
pub const JOIN_STEPS: [&str; 5] = [
    "open sandbox PID 1",
    "check sandbox PID 1",
    "join namespaces",
    "open sandbox cgroup",
    "join cgroup",
];

/// Why a TCP port inside a sandbox could not be reached
/// ([`Sandbox::connect_port`]; previews, docs/previews.md).
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// Nothing listens on that port in the sandbox (connection refused).
    #[error("nothing is listening on port {0}")]
    NotListening(u16),
    /// The sandbox ended or is ending.
    #[error("the sandbox is not running")]
    NotRunning,
    /// This sandbox has no network namespace of its own to reach into
    /// (the tiers without namespaces share the host's).
    #[error("ports in this sandbox cannot be reached: {0}")]
    Unavailable(&'static str),
    /// Any other failure, for the server's log.
    #[error("reaching port {port} in the sandbox: {source}")]
    Failed {
        port: u16,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Starts sandboxes. One per server.
pub trait Backend: Send + Sync + 'static {
    /// The isolation tier its sandboxes run in (one per server).
    fn isolation(&self) -> warren_runtime::spec::Isolation {
        warren_runtime::spec::Isolation::Namespaces
    }

    /// Starts the sandbox of `user`. The registry calls this at most once
    /// at a time per user, and only when the user has no running sandbox.
    fn start_sandbox<'a>(
        &'a self,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<Arc<dyn Sandbox>, BackendError>>;

    /// Runs one command in a sandbox of its own for `user`, which ends with
    /// the command (the command line's `warren exec`, and clean-ups that
    /// must not go through the registry).
    fn exec_once<'a>(
        &'a self,
        user: &'a UserId,
        cmd: ExecCommand,
        stdio: ExecStdio,
    ) -> BoxFuture<'a, Result<ExecChild, BackendError>>;
}

/// One user's running sandbox.
pub trait Sandbox: Send + Sync + 'static {
    /// What the sandbox got, as its shim recorded it (`runtime::record`):
    /// shown unchanged in the `hello` frame and the stats API.
    fn record(&self) -> &SandboxRecord;

    /// Starts a new shell in the sandbox on a new PTY of the given size.
    fn open_terminal(&self, size: WinSize) -> BoxFuture<'_, Result<Spawned, BackendError>>;

    /// Runs a command in the sandbox without a terminal, with the given
    /// stdio (pipes are handed back in [`ExecChild`]).
    fn exec(
        &self,
        cmd: ExecCommand,
        stdio: ExecStdio,
    ) -> BoxFuture<'_, Result<ExecChild, BackendError>>;

    /// A TCP connection to 127.0.0.1:`port` (or `[::1]`) inside the
    /// sandbox's own network namespace, non-blocking; no host port is
    /// opened. Backends that cannot reach in say so.
    fn connect_port(&self, port: u16) -> BoxFuture<'_, Result<std::net::TcpStream, PortError>> {
        let _ = port;
        Box::pin(async {
            Err(PortError::Unavailable(
                "this backend cannot reach ports in its sandboxes",
            ))
        })
    }

    /// The TCP ports something listens on inside the sandbox's network
    /// namespace (what previews can reach), sorted.
    fn listening_ports(&self) -> Result<Vec<u16>, PortError> {
        Err(PortError::Unavailable(
            "this backend cannot reach ports in its sandboxes",
        ))
    }

    /// Live memory, CPU time and process count from the sandbox's cgroup,
    /// when it has one.
    fn usage(&self) -> Option<Usage>;

    /// The home's disk usage from its filesystem, when it has a disk limit
    /// (docs/disk.md).
    fn disk_usage(&self) -> Option<warren_runtime::disk::DiskUsage> {
        None
    }

    /// Bytes sent and received over the sandbox's network, when it has one
    /// (`public`).
    fn network_usage(&self) -> Option<warren_runtime::network::NetUsage> {
        None
    }

    /// Stops the sandbox: kills every process in it and releases what it
    /// holds (cgroups). Called once, when the sandbox is idle or the server
    /// shuts down, or after it ended by itself; processes still running get
    /// killed.
    fn stop(&self) -> BoxFuture<'_, ()>;

    /// Resolves when the sandbox has ended by itself or was stopped (its
    /// PID 1 or its creating shim died), saying why. Never resolves for a
    /// backend whose sandboxes cannot end on their own.
    fn ended(&self) -> BoxFuture<'_, SandboxEnd> {
        Box::pin(std::future::pending())
    }

    /// Whether the sandbox is ending or gone right now (its PID 1 is
    /// exiting): a shell killed at that moment was killed by the sandbox's
    /// end, not by its user.
    fn is_ending(&self) -> bool {
        false
    }
}

/// Why a sandbox ended by itself, as far as the host could tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SandboxEnd {
    pub cause: EndCause,
    /// The signal that killed PID 1 (or the creating shim), if one did.
    pub signal: Option<i32>,
    /// PID 1's exit status, if it exited.
    pub code: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndCause {
    /// The sandbox hit its memory limit: the cgroup counted an OOM kill.
    OutOfMemory,
    /// PID 1 or the shim that created the sandbox was killed by a signal.
    Killed,
    /// PID 1 exited.
    Exited,
}

/// A shell started on a PTY.
pub struct Spawned {
    /// The PTY master, close-on-exec. The server makes it non-blocking.
    pub master: OwnedFd,
    pub process: Box<dyn TerminalProcess>,
}

/// The shell behind one terminal.
pub trait TerminalProcess: Send + 'static {
    /// Waits until the shell has exited. Must be cancel-safe: the terminal
    /// drops this future to call [`kill`](Self::kill), then waits again.
    fn wait(&mut self) -> BoxFuture<'_, ProcessExit>;

    /// Kills the shell and whatever it started on its terminal. Idempotent.
    fn kill(&mut self);
}

/// How a terminal's shell ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcessExit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// The sandbox's memory limit was hit and the kernel killed it (the
    /// backend reads the cgroup's OOM-kill counter).
    pub memory_limit: bool,
}

impl From<Exit> for ProcessExit {
    /// What the shim or PID 1 reported; `memory_limit` is the caller's to
    /// read from the cgroup.
    fn from(exit: Exit) -> ProcessExit {
        match exit {
            Exit::Code(c) => ProcessExit {
                code: Some(c),
                ..Default::default()
            },
            Exit::Signal(s) => ProcessExit {
                signal: Some(s),
                ..Default::default()
            },
        }
    }
}

/// A command for [`Sandbox::exec`].
#[derive(Debug, Clone, Default)]
pub struct ExecCommand {
    pub argv: Vec<String>,
    /// Added to (and overriding) the sandbox's environment.
    pub env: Vec<(String, String)>,
    /// Relative to the user's home; `None` is the home itself. Checked by
    /// the caller to stay inside it (`exec::resolve_cwd`).
    pub cwd: Option<PathBuf>,
}

/// Where an exec'd command's stdio goes.
pub struct ExecStdio {
    pub stdin: Stream,
    pub stdout: Stream,
    pub stderr: Stream,
}

impl ExecStdio {
    /// Pipes for all three.
    pub fn piped() -> ExecStdio {
        ExecStdio {
            stdin: Stream::Piped,
            stdout: Stream::Piped,
            stderr: Stream::Piped,
        }
    }
}

/// One of an exec'd command's standard streams. Not a [`Stdio`], which
/// cannot be looked into: PID 1 (which starts commands in a held sandbox)
/// is sent the fds themselves.
#[derive(Debug)]
pub enum Stream {
    /// A pipe whose other end is the [`ExecChild`]'s.
    Piped,
    /// /dev/null.
    Null,
    /// The caller's own (the command line's `warren exec`).
    Inherit,
    /// This file or pipe.
    Fd(OwnedFd),
}

impl From<Stream> for Stdio {
    fn from(s: Stream) -> Stdio {
        match s {
            Stream::Piped => Stdio::piped(),
            Stream::Null => Stdio::null(),
            Stream::Inherit => Stdio::inherit(),
            Stream::Fd(fd) => Stdio::from(fd),
        }
    }
}

/// A running exec'd command: its pipes (those asked for) and how to wait
/// for or kill it.
pub struct ExecChild {
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<ChildStderr>,
    pub process: Box<dyn TerminalProcess>,
}
