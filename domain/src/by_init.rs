//! What a held sandbox's PID 1 starts on request over its control channel
//! (`warren_runtime::control`), seen from the server: a command's
//! streams as fds to send, the report that says it started, and the
//! process handle that waits for its exit and kills it through PID 1.
//! Terminals are asked for in `sandboxes` (their PTY master comes back
//! on a socket); both end up as an [`InitChild`].

use std::os::fd::{AsFd, OwnedFd};
use std::process::{ChildStderr, ChildStdin, ChildStdout};
use std::sync::Arc;

use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use tokio::io::AsyncReadExt;
use warren_runtime::control;
use warren_runtime::report::{self, Event, Exit};

use crate::backend::{BoxFuture, ExecStdio, ProcessExit, Stream, TerminalProcess};

/// A command's three streams: the ends PID 1 is sent (stdin, stdout,
/// stderr) and the ends we keep (the pipes asked for).
pub(crate) struct Streams {
    pub theirs: [OwnedFd; 3],
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<ChildStderr>,
}

impl Streams {
    pub fn open(stdio: ExecStdio) -> std::io::Result<Streams> {
        let (stdin, their_in) = end(stdio.stdin, 0)?;
        let (stdout, their_out) = end(stdio.stdout, 1)?;
        let (stderr, their_err) = end(stdio.stderr, 2)?;
        Ok(Streams {
            theirs: [their_in, their_out, their_err],
            stdin: stdin.map(ChildStdin::from),
            stdout: stdout.map(ChildStdout::from),
            stderr: stderr.map(ChildStderr::from),
        })
    }
}

/// Ours (a pipe's other end, if piped) and theirs for stream `n` (0 is
/// the command's input).
fn end(s: Stream, n: i32) -> std::io::Result<(Option<OwnedFd>, OwnedFd)> {
    let input = n == 0;
    Ok(match s {
        Stream::Piped => {
            let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
            match input {
                true => (Some(w), r),
                false => (Some(r), w),
            }
        }
        Stream::Null => {
            let null = std::fs::OpenOptions::new()
                .read(input)
                .write(!input)
                .open("/dev/null")?;
            (None, null.into())
        }
        Stream::Inherit => {
            let own = match n {
                0 => std::io::stdin().as_fd().try_clone_to_owned(),
                1 => std::io::stdout().as_fd().try_clone_to_owned(),
                _ => std::io::stderr().as_fd().try_clone_to_owned(),
            }?;
            (None, own)
        }
        Stream::Fd(fd) => (None, fd),
    })
}

/// The report of a request read so far, until it says the command started
/// (`Ok`, with what was read) or ends without (`Err`: the `Failed` that
/// says why, if any). A `Failed` from the command's own child (its chdir,
/// its exec) may come before PID 1's `Started`: that is the command's
/// outcome, reported again as its exit.
pub(crate) async fn started(
    report: &mut tokio::net::unix::pipe::Receiver,
) -> Result<Vec<u8>, Option<Event>> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let events = report::read_all(&bytes[..whole]);
        if events.iter().any(|e| matches!(e, Event::Started { .. })) {
            return Ok(bytes);
        }
        match report.read(&mut chunk).await {
            Ok(n @ 1..) => bytes.extend_from_slice(&chunk[..n]),
            _ => return Err(events.into_iter().find(|e| matches!(e, Event::Failed(_)))),
        }
    }
}

/// A terminal's shell or a command started by PID 1: its report pipe
/// brings the exit PID 1 reaped; a kill is a request to PID 1.
pub(crate) struct InitChild {
    pub id: u64,
    pub control: Arc<OwnedFd>,
    pub report: tokio::net::unix::pipe::Receiver,
    /// The report read so far (kept across a cancelled `wait`).
    pub events: Vec<u8>,
    pub cgroup: Option<String>,
    pub oom_before: u64,
    pub exit: Option<ProcessExit>,
}

impl TerminalProcess for InitChild {
    fn wait(&mut self) -> BoxFuture<'_, ProcessExit> {
        Box::pin(async move {
            if let Some(exit) = self.exit {
                return exit;
            }
            let mut chunk = [0u8; 1024];
            // Each read is cancel-safe; what it read is kept.
            while let Ok(n @ 1..) = self.report.read(&mut chunk).await {
                self.events.extend_from_slice(&chunk[..n]);
            }
            let exit = report::read_all(&self.events[..])
                .into_iter()
                .find_map(|e| match e {
                    Event::Exited { exit } => Some(exit),
                    _ => None,
                });
            // None: PID 1 ended first, and the sandbox's end killed it.
            let mut out = ProcessExit::from(exit.unwrap_or(Exit::Signal(Signal::SIGKILL as i32)));
            out.memory_limit = out.signal == Some(9)
                && crate::oom::oom_kills(self.cgroup.as_deref()) > self.oom_before;
            self.exit = Some(out);
            out
        })
    }

    fn kill(&mut self) {
        // PID 1 signals its group: the server never names a pid inside
        // the sandbox. A gone PID 1 took it along.
        let kill = control::Request::Kill { id: self.id };
        let _ = control::send(self.control.as_ref(), &kill, &[]);
    }
}

/// `fd` as an async reader (the report's read end).
pub(crate) fn receiver(fd: OwnedFd) -> std::io::Result<tokio::net::unix::pipe::Receiver> {
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
}
