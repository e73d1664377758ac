//! What the shim tells its caller, as data: one JSON object per line on the
//! report channel (an inherited pipe). A set-up failure says which step
//! failed, the errno and a hint for fixing the host, so the caller can print
//! a useful message instead of "something went wrong, see logs".

use std::io::{BufRead, BufReader, Read, Write};

use serde::{Deserialize, Serialize};

// Failures are their own module (everything that can fail uses it, the
// report only carries them); their names stay reachable here.
pub use crate::setup_error::{
    LimitReached, SetupError, EXIT_MEMORY_LIMIT, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND,
    EXIT_SETUP_FAILED, STEP_EXEC, STEP_FORK_COMMAND, STEP_OPEN_TERMINAL,
};

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
        // Boxed: the record (network, disk) is far larger than every other
        // event.
        record: Box<crate::record::SandboxRecord>,
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
    use nix::errno::Errno;

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
    fn a_limit_is_told_apart_from_a_fault() {
        let limit = |step, errno| SetupError::errno(step, errno).limit_reached();
        assert_eq!(
            limit(STEP_FORK_COMMAND, Errno::EAGAIN),
            Some(LimitReached::Pids)
        );
        assert_eq!(
            limit(STEP_FORK_COMMAND, Errno::ENOMEM),
            Some(LimitReached::Memory)
        );
        assert_eq!(
            limit(STEP_OPEN_TERMINAL, Errno::ENOSPC),
            Some(LimitReached::HostPtys)
        );
        assert_eq!(limit(STEP_OPEN_TERMINAL, Errno::EACCES), None);
        assert_eq!(limit("join cgroup", Errno::EAGAIN), None);
        assert_eq!(
            SetupError::new(STEP_FORK_COMMAND, "no errno").limit_reached(),
            None
        );
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
