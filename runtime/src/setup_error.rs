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
