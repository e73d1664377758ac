//! What the shim tells its caller, as data: one JSON object per line on the
//! report channel (an inherited pipe). A set-up failure says which step
//! failed, the errno and a hint for fixing the host, so the caller can print
//! a useful message instead of "something went wrong, see logs".

use std::io::{BufRead, BufReader, Read, Write};

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

/// How the sandbox's first process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// Shell convention: the code itself, or 128+N for signal N.
    pub fn shell_code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

/// One message on the report channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Set-up finished up to the exec of the command; `init_pid` is the
    /// sandbox's PID 1 as the host sees it.
    Started { init_pid: i32 },
    /// PID 1 has built the sandbox (root, confinement): commands may join
    /// it from now on. `Started` alone is too early for that.
    Ready,
    /// The confinement actually in force (reported, not assumed): the
    /// seccomp profile and how much of the Landlock ruleset the kernel took.
    Confined {
        seccomp: String,
        landlock: crate::landlock::LandlockStatus,
    },
    /// What the sandbox got (`runtime::record`), once, after its cgroup's
    /// limits were read back: sent before the sandbox runs anything.
    Sandbox {
        /// The sandbox's cgroup id (for joining it, or reading its usage),
        /// when it has one.
        cgroup: Option<String>,
        record: crate::record::SandboxRecord,
    },
    /// After the end: the kernel's counters of limits that were hit.
    LimitsHit {
        limits: crate::cgroups::Limits,
        events: crate::cgroups::Events,
    },
    /// A step failed; the command did not run.
    Failed(SetupError),
    /// The sandbox ended.
    Exited { exit: Exit },
}

/// Writes one event as a single line. Lines stay far below PIPE_BUF, so
/// writers in different processes never interleave.
pub fn send(w: &mut impl Write, event: &Event) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)
}

/// Reads events until the channel closes (every holder exited or exec'd).
/// Lines that are not events are skipped: the channel is ours, but a caller
/// should never crash on a partial line from a killed shim.
pub fn read_all(r: impl Read) -> Vec<Event> {
    let mut reader = Reader::new(r);
    std::iter::from_fn(|| reader.next_event()).collect()
}

/// Longest report line accepted; longer ones are skipped, so a sandbox
/// that took over its PID 1 cannot make the caller buffer without bound.
pub const MAX_LINE: usize = 64 << 10;

/// Reads events one at a time, skipping lines that are too long or not
/// events.
pub struct Reader<R> {
    inner: BufReader<R>,
}

impl<R: Read> Reader<R> {
    pub fn new(r: R) -> Self {
        Reader {
            inner: BufReader::new(r),
        }
    }

    /// The next event, or `None` once the channel is closed.
    pub fn next_event(&mut self) -> Option<Event> {
        loop {
            let mut line = Vec::new();
            let n = (&mut self.inner)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line)
                .ok()?;
            if n == 0 {
                return None;
            }
            if line.len() > MAX_LINE {
                // Drop the rest of the over-long line.
                let mut sink = Vec::new();
                while !sink.ends_with(b"\n") {
                    sink.clear();
                    if (&mut self.inner)
                        .take(MAX_LINE as u64)
                        .read_until(b'\n', &mut sink)
                        .ok()?
                        == 0
                    {
                        return None;
                    }
                }
                continue;
            }
            if let Ok(e) = serde_json::from_slice(&line) {
                return Some(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_as_lines() {
        let mut buf = Vec::new();
        let failed = SetupError::errno("mount /proc", Errno::EPERM).with_hint("try X");
        send(&mut buf, &Event::Started { init_pid: 42 }).unwrap();
        send(&mut buf, &Event::Failed(failed.clone())).unwrap();
        buf.extend_from_slice(b"{truncated");
        let got = read_all(&buf[..]);
        assert_eq!(
            got,
            vec![Event::Started { init_pid: 42 }, Event::Failed(failed)]
        );
    }

    #[test]
    fn over_long_lines_are_skipped_not_buffered() {
        let mut buf = vec![b'x'; MAX_LINE * 3];
        buf.push(b'\n');
        send(&mut buf, &Event::Started { init_pid: 7 }).unwrap();
        assert_eq!(read_all(&buf[..]), vec![Event::Started { init_pid: 7 }]);
    }

    #[test]
    fn exec_failures_map_to_shell_codes() {
        assert_eq!(SetupError::errno(STEP_EXEC, Errno::ENOENT).exit_code(), 127);
        assert_eq!(SetupError::errno(STEP_EXEC, Errno::EACCES).exit_code(), 126);
        assert_eq!(
            SetupError::errno("pivot_root", Errno::EINVAL).exit_code(),
            125
        );
        assert_eq!(Exit::Signal(15).shell_code(), 143);
    }

    #[test]
    fn display_includes_errno_text() {
        let e = SetupError::errno("mount /proc", Errno::EPERM);
        assert_eq!(
            e.to_string(),
            "mount /proc: Operation not permitted (EPERM)"
        );
    }
}
