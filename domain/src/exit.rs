//! How a terminal ended, in the domain's words. The web layer turns it into
//! the `exit` frame (`warren::web::protocol::ExitInfo`).

use crate::backend::SandboxEnd;

/// Why a terminal ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCause {
    /// The shell exited by itself (`code` or `signal` says how).
    Exit,
    /// Nobody watched the terminal for the grace period, or the sandbox was
    /// idle past the idle timeout.
    IdleTimeout,
    /// The sandbox hit its memory limit and the kernel killed the shell.
    MemoryLimit,
    /// The server is shutting down.
    ServerShutdown,
    /// The terminal was closed on the server's side (its sandbox was
    /// stopped, or it was closed through the API).
    Closed,
    /// The sandbox itself ended (its PID 1 died, or was killed); the next
    /// terminal starts a fresh one.
    SandboxEnded,
}

impl ExitCause {
    /// The name logs and the audit log use (the same as the wire's).
    pub fn as_str(self) -> &'static str {
        match self {
            ExitCause::Exit => "exit",
            ExitCause::IdleTimeout => "idle_timeout",
            ExitCause::MemoryLimit => "memory_limit",
            ExitCause::ServerShutdown => "server_shutdown",
            ExitCause::Closed => "closed",
            ExitCause::SandboxEnded => "sandbox_ended",
        }
    }
}

/// How a terminal ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalExit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: ExitCause,
    /// With [`ExitCause::SandboxEnded`]: why the sandbox ended, when known.
    pub sandbox: Option<SandboxEnd>,
}
