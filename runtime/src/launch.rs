//! Starting the shim from the caller's side: the spec goes in on fd 3 (a
//! sealed-size memfd, so no pipe can fill up), events come back on fd 4.

use std::fs::File;
use std::io::{Seek, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::sys::memfd::{memfd_create, MFdFlags};

use crate::report::{Event, Exit, SetupError};
use crate::spec::SandboxSpec;

/// The fd numbers the shim finds its inputs on.
pub const SPEC_FD: i32 = 3;
pub const REPORT_FD: i32 = 4;
/// Only with a terminal: the socket the sandbox's PID 1 sends the PTY
/// master over.
pub const PTY_SOCKET_FD: i32 = 5;
/// Only when joining with a record: the sandbox's record (a memfd), for
/// the joined command's `warren-info` in the tiers without namespaces.
pub const RECORD_FD: i32 = 6;
/// Only for a held sandbox of the server: the socket its connector serves
/// ([`crate::connector`]).
pub const CONNECTOR_FD: i32 = 7;
/// Only for a held sandbox of the namespace tier: the control channel's
/// end PID 1 keeps (`crate::control`).
pub const CONTROL_FD: i32 = 8;

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("invalid sandbox spec: {0}")]
    Spec(#[from] crate::spec::SpecError),
    #[error("cannot start the shim {path}: {source}")]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot pass the spec to the shim: {0}")]
    Pass(std::io::Error),
}

/// Where the shim binary is: `$WARREN_SHIM`, or `warren-shim` next to the
/// running executable.
pub fn shim_path() -> PathBuf {
    if let Some(p) = std::env::var_os("WARREN_SHIM") {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("warren-shim")))
        .unwrap_or_else(|| PathBuf::from("warren-shim"))
}

/// A started shim and the read end of its report channel.
pub struct Launched {
    pub child: Child,
    pub report: File,
    /// With `spec.tty`: receive the PTY master here (`pty::recv_fd`).
    pub pty_socket: Option<OwnedFd>,
    /// With [`start_with_connector`]: the server's end of the sandbox's
    /// connector ([`crate::connector::request`]).
    pub connector: Option<OwnedFd>,
    /// A held sandbox of the namespace tier: the server's end of PID 1's
    /// control channel (`crate::control`).
    pub control: Option<OwnedFd>,
}

/// Starts `shim create` for `spec` with the given stdio.
pub fn start(
    shim: &Path,
    spec: &SandboxSpec,
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
) -> Result<Launched, LaunchError> {
    start_as(shim, spec, &Mode::Create, stdin, stdout, stderr)
}

/// [`start`], and the sandbox (of the namespaces tier) gets a connector
/// that reaches ports inside its network namespace ([`crate::connector`]).
pub fn start_with_connector(
    shim: &Path,
    spec: &SandboxSpec,
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
) -> Result<Launched, LaunchError> {
    start_inner(shim, spec, &Mode::Create, true, [stdin, stdout, stderr])
}

/// A live sandbox to run a command in (`warren-shim join`).
#[derive(Debug, Clone, PartialEq)]
pub struct JoinTarget {
    /// The sandbox's PID 1 as the host sees it (`Event::Started`).
    pub init_pid: i32,
    /// The shim that created the sandbox; the caller must not have reaped
    /// it, so that PID 1's pid cannot have been reused.
    pub parent_pid: i32,
    /// The sandbox's cgroup (`Event::Sandbox`), if it has one.
    pub cgroup: Option<String>,
    /// The sandbox's record (`Event::Sandbox`): a joined command's
    /// `warren-info` shows it unchanged. Without it the joining shim works
    /// it out again.
    pub record: Option<Box<crate::record::SandboxRecord>>,
}

/// Create a sandbox, or join a live one.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Create,
    Join(JoinTarget),
}

/// [`start`] for either mode.
pub fn start_as(
    shim: &Path,
    spec: &SandboxSpec,
    mode: &Mode,
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
) -> Result<Launched, LaunchError> {
    start_inner(shim, spec, mode, false, [stdin, stdout, stderr])
}

fn start_inner(
    shim: &Path,
    spec: &SandboxSpec,
    mode: &Mode,
    with_connector: bool,
    [stdin, stdout, stderr]: [Stdio; 3],
) -> Result<Launched, LaunchError> {
    spec.validate()?;
    let spec_fd = memfd_json("warren-spec", spec)?;
    let mut record_fd = None;
    let (report_r, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| LaunchError::Pass(e.into()))?;

    let mut cmd = Command::new(shim);
    // PID 1 keeps the shim's command line: show its name, not the host path.
    std::os::unix::process::CommandExt::arg0(&mut cmd, "warren-shim");
    match mode {
        Mode::Create => {
            cmd.arg("create");
        }
        Mode::Join(t) => {
            cmd.args([
                "join",
                "--init-pid",
                &t.init_pid.to_string(),
                "--parent-pid",
                &t.parent_pid.to_string(),
            ]);
            if let Some(id) = &t.cgroup {
                cmd.args(["--cgroup", id]);
            }
            if let Some(record) = &t.record {
                cmd.args(["--record-fd", &RECORD_FD.to_string()]);
                record_fd = Some(memfd_json("warren-record", record)?);
            }
        }
    }
    cmd.args([
        "--spec-fd",
        &SPEC_FD.to_string(),
        "--report-fd",
        &REPORT_FD.to_string(),
    ])
    .stdin(stdin)
    .stdout(stdout)
    .stderr(stderr)
    .env_clear();
    let mut fds = vec![(spec_fd, SPEC_FD), (report_w, REPORT_FD)];
    fds.extend(record_fd.map(|fd| (fd, RECORD_FD)));
    let mut pty_socket = None;
    if spec.tty.is_some() {
        let (ours, theirs) = seqpacket_pair()?;
        cmd.args(["--pty-socket-fd", &PTY_SOCKET_FD.to_string()]);
        fds.push((theirs, PTY_SOCKET_FD));
        pty_socket = Some(ours);
    }
    let mut connector = None;
    if with_connector && *mode == Mode::Create {
        let (ours, theirs) = seqpacket_pair()?;
        cmd.args(["--connector-fd", &CONNECTOR_FD.to_string()]);
        fds.push((theirs, CONNECTOR_FD));
        connector = Some(ours);
    }
    let mut control = None;
    if *mode == Mode::Create && spec.hold && !spec.isolation.shares_host() {
        let (ours, theirs) = seqpacket_pair()?;
        cmd.args(["--control-fd", &CONTROL_FD.to_string()]);
        fds.push((theirs, CONTROL_FD));
        control = Some(ours);
    }
    let child = crate::sys::spawn_with_fds(&mut cmd, fds).map_err(|source| LaunchError::Spawn {
        path: shim.to_path_buf(),
        source,
    })?;
    Ok(Launched {
        child,
        report: File::from(report_r),
        pty_socket,
        connector,
        control,
    })
}

/// A close-on-exec unix seqpacket pair: our end and the shim's.
fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd), LaunchError> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| LaunchError::Pass(e.into()))
}

/// `value` as JSON in a memfd, read from its start: no pipe to fill up.
fn memfd_json(name: &str, value: &impl serde::Serialize) -> Result<OwnedFd, LaunchError> {
    let json = serde_json::to_vec(value).map_err(|e| LaunchError::Pass(e.into()))?;
    let memfd: OwnedFd =
        memfd_create(name, MFdFlags::MFD_CLOEXEC).map_err(|e| LaunchError::Pass(e.into()))?;
    let mut f = File::from(memfd);
    f.write_all(&json)
        .and_then(|_| f.rewind())
        .map_err(LaunchError::Pass)?;
    Ok(OwnedFd::from(f))
}

/// How a sandbox run ended, from its events.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The command ran and ended like this.
    Exited(Exit),
    /// The command was killed because the sandbox reached its memory limit.
    MemoryLimit { exit: Exit, limit_bytes: u64 },
    /// Set-up failed (or the command could not be executed).
    Failed(SetupError),
    /// The shim ended without saying why (killed from outside).
    Vanished(Exit),
}

impl Outcome {
    /// Reads the story from the events; `shim_exit` is the fallback.
    pub fn from_events(events: &[Event], shim_exit: Exit) -> Outcome {
        if let Some(err) = events.iter().find_map(|e| match e {
            Event::Failed(err) => Some(err.clone()),
            _ => None,
        }) {
            return Outcome::Failed(err);
        }
        let exit = events.iter().find_map(|e| match e {
            Event::Exited { exit } => Some(*exit),
            _ => None,
        });
        let oom_limit = events.iter().find_map(|e| match e {
            Event::LimitsHit { limits, events } if events.oom_killed() => limits.memory_bytes,
            _ => None,
        });
        match (exit, oom_limit) {
            // Killed by SIGKILL (itself, or its shell reporting 128+9) while
            // the OOM killer was at work in its cgroup: the limit did it.
            (Some(exit), Some(limit_bytes)) if exit.shell_code() == 128 + 9 => {
                Outcome::MemoryLimit { exit, limit_bytes }
            }
            (None, Some(limit_bytes)) if shim_exit.shell_code() == 128 + 9 => {
                Outcome::MemoryLimit {
                    exit: shim_exit,
                    limit_bytes,
                }
            }
            (Some(exit), _) => Outcome::Exited(exit),
            (None, _) => Outcome::Vanished(shim_exit),
        }
    }

    /// The exit code a command-line caller should return.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Exited(e) | Outcome::Vanished(e) => e.shell_code(),
            Outcome::MemoryLimit { .. } => crate::report::EXIT_MEMORY_LIMIT,
            Outcome::Failed(err) => err.exit_code(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_wins_over_exit() {
        let err = SetupError::new("exec command", "x");
        let ev = vec![
            Event::Started { init_pid: 1 },
            Event::Failed(err.clone()),
            Event::Exited {
                exit: Exit::Code(127),
            },
        ];
        assert_eq!(
            Outcome::from_events(&ev, Exit::Code(127)),
            Outcome::Failed(err)
        );
        let ev = vec![
            Event::Started { init_pid: 1 },
            Event::Exited {
                exit: Exit::Signal(2),
            },
        ];
        assert_eq!(Outcome::from_events(&ev, Exit::Code(130)).exit_code(), 130);
        assert_eq!(
            Outcome::from_events(&[], Exit::Signal(9)),
            Outcome::Vanished(Exit::Signal(9))
        );
        let oom = crate::cgroups::Events {
            oom_kills: Some(1),
            ..Default::default()
        };
        let hit = Event::LimitsHit {
            limits: crate::cgroups::Limits::default(),
            events: oom,
        };
        let ev = vec![
            Event::Exited {
                exit: Exit::Signal(9),
            },
            hit.clone(),
        ];
        assert_eq!(Outcome::from_events(&ev, Exit::Code(137)).exit_code(), 121);
        // A child was OOM-killed but the command itself went on and exited.
        let ev = vec![
            Event::Exited {
                exit: Exit::Code(0),
            },
            hit,
        ];
        assert_eq!(
            Outcome::from_events(&ev, Exit::Code(0)),
            Outcome::Exited(Exit::Code(0))
        );
    }
}
