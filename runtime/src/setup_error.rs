//! A set-up step that failed, as data: which step, the errno and a hint
//! for fixing the host, so the caller can print a useful message instead
//! of "something went wrong, see logs". The shim sends it on the report
//! channel (`crate::report`).

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

/// Exit code of `warren run` when the sandbox could not be set up (the
/// command never ran). Mirrors `docker run`'s 125.
pub const EXIT_SETUP_FAILED: i32 = 125;
/// The command was found but could not be executed.
pub const EXIT_NOT_EXECUTABLE: i32 = 126;
/// The command was not found inside the sandbox.
pub const EXIT_NOT_FOUND: i32 = 127;
/// The sandbox's command was killed because the memory limit was reached.
pub const EXIT_MEMORY_LIMIT: i32 = 121;

/// A set-up step that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{step}: {message}{}", errno_suffix(*.errno))]
pub struct SetupError {
    /// The step in the shim's table of contents, e.g. `"mount /proc"`.
    pub step: String,
    /// The errno the kernel returned, when there was one.
    pub errno: Option<i32>,
    /// What went wrong, in words.
    pub message: String,
    /// How to fix it, when we know.
    pub hint: Option<String>,
}

fn errno_suffix(errno: Option<i32>) -> String {
    match errno {
        Some(e) => format!(" ({:?})", Errno::from_raw(e)),
        None => String::new(),
    }
}

impl SetupError {
    pub fn new(step: impl Into<String>, message: impl Into<String>) -> Self {
        SetupError {
            step: step.into(),
            errno: None,
            message: message.into(),
            hint: None,
        }
    }

    pub fn errno(step: impl Into<String>, errno: Errno) -> Self {
        SetupError {
            step: step.into(),
            errno: Some(errno as i32),
            message: errno.desc().to_string(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    /// The exit code the caller should use for this failure.
    pub fn exit_code(&self) -> i32 {
        if self.step == STEP_EXEC {
            match self.errno.map(Errno::from_raw) {
                Some(Errno::ENOENT) => EXIT_NOT_FOUND,
                _ => EXIT_NOT_EXECUTABLE,
            }
        } else {
            EXIT_SETUP_FAILED
        }
    }
}

/// Name of the final step, so callers can tell "command not found" from a
/// broken sandbox.
pub const STEP_EXEC: &str = "exec command";

/// The step that forks the command in the sandbox: EAGAIN there is the
/// sandbox's pids limit, ENOMEM its memory limit.
pub const STEP_FORK_COMMAND: &str = "fork command";

/// The step that opens the command's PTY in the sandbox's devpts: ENOSPC
/// there means the host has no PTY left for sandboxes.
pub const STEP_OPEN_TERMINAL: &str = "open terminal";

/// A limit that refused a set-up step, where no fault of the host or of
/// warren did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitReached {
    /// The sandbox's pids limit (or, without a cgroup, its nproc rlimit).
    Pids,
    /// The sandbox's memory limit.
    Memory,
    /// The host's PTYs: a sandbox's devpts instance may use
    /// `kernel.pty.max` less `kernel.pty.reserve`, counted host-wide.
    HostPtys,
}

impl SetupError {
    /// Which limit refused this step, if a limit did.
    pub fn limit_reached(&self) -> Option<LimitReached> {
        match (self.step.as_str(), Errno::from_raw(self.errno?)) {
            (STEP_FORK_COMMAND, Errno::EAGAIN) => Some(LimitReached::Pids),
            (STEP_FORK_COMMAND, Errno::ENOMEM) => Some(LimitReached::Memory),
            (STEP_OPEN_TERMINAL, Errno::ENOSPC) => Some(LimitReached::HostPtys),
            _ => None,
        }
    }
}
