//! The echo backend: a real shell on a real PTY, as the server's own user,
//! with **no isolation at all**. For the relay, protocol and auth tests
//! (no root needed) and for development. Refused off loopback.
//!
//! Spawning a child on a PTY normally needs `setsid()` and `TIOCSCTTY`
//! between fork and exec, i.e. an `unsafe` `pre_exec` hook, which this crate
//! forbids. util-linux `setsid --ctty` does both steps itself: it is started
//! with the PTY slave as stdin/stdout/stderr, makes a new session, takes
//! stdin as its controlling terminal and execs the shell (same pid, since a
//! freshly spawned child is never a process-group leader, `setsid` does not
//! fork).

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::Arc;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::watch;

use warren_runtime::cgroups::Limits;
use warren_runtime::record::SandboxRecord;
use warren_runtime::spec::Isolation;

use crate::backend::{
    Backend, BackendError, BoxFuture, ExecChild, ExecCommand, ExecStdio, PortError, ProcessExit,
    Sandbox, Spawned, TerminalProcess,
};
use crate::pty;
use crate::user::UserId;
use crate::WinSize;

/// What every echo sandbox got: tier `none`, and none of the default
/// limits, since a plain shell has no cgroup.
fn echo_record() -> SandboxRecord {
    let mut record = SandboxRecord::unlimited(Isolation::None, &Limits::default());
    record.limits.reasons = record
        .limits
        .missing
        .iter()
        .map(|m| (m.clone(), "the echo backend applies no limits".to_string()))
        .collect();
    record
}

/// Runs `argv` (default `/bin/sh`) on a PTY for every terminal.
#[derive(Debug, Clone)]
pub struct EchoBackend {
    argv: Vec<String>,
}

impl Default for EchoBackend {
    fn default() -> Self {
        EchoBackend::new()
    }
}

impl EchoBackend {
    pub fn new() -> EchoBackend {
        EchoBackend::with_argv(vec!["/bin/sh".into()])
    }

    /// Runs this command line instead of `/bin/sh` (it must not be empty).
    pub fn with_argv(argv: Vec<String>) -> EchoBackend {
        assert!(!argv.is_empty(), "the echo backend needs a command");
        EchoBackend { argv }
    }
}

impl Backend for EchoBackend {
    fn start_sandbox<'a>(
        &'a self,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<Arc<dyn Sandbox>, BackendError>> {
        let (stopped, _) = watch::channel(false);
        let sandbox = EchoSandbox {
            argv: self.argv.clone(),
            user: user.clone(),
            stopped,
            record: echo_record(),
        };
        Box::pin(async move { Ok(Arc::new(sandbox) as Arc<dyn Sandbox>) })
    }

    fn exec_once<'a>(
        &'a self,
        user: &'a UserId,
        cmd: ExecCommand,
        stdio: ExecStdio,
    ) -> BoxFuture<'a, Result<ExecChild, BackendError>> {
        Box::pin(async move {
            let sandbox = self.start_sandbox(user).await?;
            sandbox.exec(cmd, stdio).await
        })
    }
}

struct EchoSandbox {
    argv: Vec<String>,
    user: UserId,
    /// Set by `stop`; every shell of this sandbox watches it.
    stopped: watch::Sender<bool>,
    record: SandboxRecord,
}

impl EchoSandbox {
    fn spawn(&self, size: WinSize) -> Result<Spawned, BackendError> {
        let pair = pty::open(size).map_err(|e| BackendError::new("open a PTY", e))?;
        let dup = |what| {
            pair.slave
                .try_clone()
                .map_err(|e| BackendError::new(what, e))
        };
        let (stdin, stdout) = (dup("dup the PTY slave")?, dup("dup the PTY slave")?);
        let mut cmd = tokio::process::Command::new("setsid");
        cmd.arg("--ctty")
            .arg("--")
            .args(&self.argv)
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(pair.slave))
            .env_clear()
            .env("TERM", "xterm-256color")
            .env("LANG", "C.UTF-8")
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env(
                "HOME",
                std::env::var_os("HOME").unwrap_or_else(|| "/".into()),
            )
            .env("USER", self.user.as_str())
            .env("PS1", "$ ")
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| BackendError::new("start `setsid --ctty` (util-linux)", e))?;
        // The command holds the slave's fds: drop it, or the master never
        // sees end-of-file when the shell exits.
        drop(cmd);
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| BackendError::new("start the shell", "child exited at once"))?;
        let master_for_kill = pair
            .master
            .try_clone()
            .map_err(|e| BackendError::new("dup the PTY master", e))?;
        Ok(Spawned {
            master: pair.master,
            process: Box::new(EchoProcess {
                child,
                pid,
                master: master_for_kill,
                stopped: self.stopped.subscribe(),
                stop_seen: false,
            }),
        })
    }
}

impl Sandbox for EchoSandbox {
    fn record(&self) -> &SandboxRecord {
        &self.record
    }

    fn open_terminal(&self, size: WinSize) -> BoxFuture<'_, Result<Spawned, BackendError>> {
        let spawned = self.spawn(size);
        Box::pin(async move { spawned })
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        self.stopped.send_replace(true);
        Box::pin(async {})
    }

    fn exec(
        &self,
        cmd: ExecCommand,
        stdio: ExecStdio,
    ) -> BoxFuture<'_, Result<ExecChild, BackendError>> {
        Box::pin(async move {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
            let argv0 = cmd
                .argv
                .first()
                .ok_or_else(|| BackendError::new("exec", "no command"))?;
            let mut c = std::process::Command::new(argv0);
            std::os::unix::process::CommandExt::process_group(&mut c, 0);
            c.args(&cmd.argv[1..])
                .env_clear()
                .env("LANG", "C.UTF-8")
                .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                .env("HOME", &home)
                .env("USER", self.user.as_str())
                .envs(cmd.env)
                .current_dir(std::path::Path::new(&home).join(cmd.cwd.unwrap_or_default()))
                .stdin(Stdio::from(stdio.stdin))
                .stdout(Stdio::from(stdio.stdout))
                .stderr(Stdio::from(stdio.stderr));
            let mut child = c.spawn().map_err(|e| BackendError::new("exec", e))?;
            Ok(ExecChild {
                stdin: child.stdin.take(),
                stdout: child.stdout.take(),
                stderr: child.stderr.take(),
                process: Box::new(EchoCommand {
                    pid: child.id() as i32,
                    child: std::sync::Mutex::new(child),
                }),
            })
        })
    }

    /// The host's own listening ports (no isolation: development only).
    fn listening_ports(&self) -> Result<Vec<u16>, PortError> {
        Ok(warren_runtime::connector::listening_ports(
            std::path::Path::new("/proc/self/net"),
        ))
    }

    /// The host's own loopback: the echo backend isolates nothing, so a
    /// "sandbox" port is a port of the host (development and tests only).
    fn connect_port(&self, port: u16) -> BoxFuture<'_, Result<std::net::TcpStream, PortError>> {
        Box::pin(async move {
            match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(s) => s.into_std().map_err(|e| PortError::Failed {
                    port,
                    source: e.into(),
                }),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    Err(PortError::NotListening(port))
                }
                Err(e) => Err(PortError::Failed {
                    port,
                    source: e.into(),
                }),
            }
        })
    }

    fn usage(&self) -> Option<warren_runtime::cgroups::Usage> {
        None
    }
}

/// A command run by the echo backend's `exec`, in its own process group.
struct EchoCommand {
    child: std::sync::Mutex<std::process::Child>,
    pid: i32,
}

impl TerminalProcess for EchoCommand {
    fn wait(&mut self) -> BoxFuture<'_, ProcessExit> {
        Box::pin(async move {
            let status = crate::child::wait_child(&self.child).await;
            exit_of(status.ok_or_else(|| std::io::Error::other("lost the child")))
        })
    }

    fn kill(&mut self) {
        let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
    }
}

struct EchoProcess {
    child: tokio::process::Child,
    /// The shell's pid, also its session and process-group id.
    pid: i32,
    /// A dup of the master, to find the terminal's foreground job.
    master: std::os::fd::OwnedFd,
    stopped: watch::Receiver<bool>,
    stop_seen: bool,
}

impl TerminalProcess for EchoProcess {
    fn wait(&mut self) -> BoxFuture<'_, ProcessExit> {
        Box::pin(async move {
            if !self.stop_seen {
                let stop_requested = tokio::select! {
                    status = self.child.wait() => return exit_of(status),
                    r = self.stopped.wait_for(|s| *s) => r.is_ok(),
                };
                // Seen once, whether `stop` was called or the sandbox is gone.
                self.stop_seen = true;
                if stop_requested {
                    self.kill();
                }
            }
            exit_of(self.child.wait().await)
        })
    }

    fn kill(&mut self) {
        // The foreground job (e.g. `yes`) has its own process group when
        // the shell does job control; the shell's group is its pid.
        if let Ok(fg) = rustix::termios::tcgetpgrp(&self.master) {
            let _ = killpg(Pid::from_raw(fg.as_raw_nonzero().get()), Signal::SIGKILL);
        }
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
        let _ = self.child.start_kill();
    }
}

fn exit_of(status: std::io::Result<std::process::ExitStatus>) -> ProcessExit {
    match status {
        Ok(s) => ProcessExit {
            code: s.code(),
            signal: s.signal(),
            memory_limit: false,
        },
        Err(_) => ProcessExit::default(),
    }
}
