//! A held sandbox's PID 1 starting terminals and commands on request
//! (`warren_runtime::control`): each is PID 1's own child, so it is in the
//! sandbox's cgroup and every namespace from its first instruction, and
//! its parent is inside the sandbox.
//!
//! A request brings only what to run: the PTY's size for a terminal; the
//! environment to add and the directory to start in for a command (what
//! the tenant could type in a terminal). The confinement is PID 1's own
//! plan, made outside before the sandbox existed, applied with the first
//! command's steps ([`confine`]). The ids, no capabilities and
//! `no_new_privs` are PID 1's already and are inherited.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, PathBuf};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, killpg, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use warren_runtime::control::{self, Request};
use warren_runtime::init::FORWARDED;
use warren_runtime::plan::Confinement;
use warren_runtime::pty::WinSize;
use warren_runtime::report::{self, Event, Exit, SetupError};
use warren_runtime::spec::SandboxSpec;
use warren_runtime::sys;

use crate::command::confine;
use crate::process::fork_command;

/// One terminal's shell or command: its pid here and its report pipe,
/// where its exit goes once reaped.
struct Shell {
    pid: Pid,
    report: File,
}

/// Says the sandbox is ready, then serves `control` and reaps until told
/// to stop (SIGTERM and the like, as [`warren_runtime::init::hold`]).
pub fn serve(spec: &SandboxSpec, plan: &Confinement, control: OwnedFd, report: &mut File) -> Exit {
    let _ = report::send(report, &Event::Ready);
    let mut mask = SigSet::empty();
    FORWARDED.iter().for_each(|s| mask.add(*s));
    mask.add(Signal::SIGCHLD);
    // The mask is blocked since before the clone: nothing is lost.
    let Ok(signals) = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
    else {
        return warren_runtime::init::hold();
    };
    let mut shells: HashMap<u64, Shell> = HashMap::new();
    let mut listening = true;
    loop {
        let (signalled, requested) = {
            let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
            if listening {
                fds.push(PollFd::new(control.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(_) => return warren_runtime::init::hold(),
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), fds.get(1).is_some_and(ready))
        };
        if signalled {
            while let Ok(Some(info)) = signals.read_signal() {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGCHLD) => reap(&mut shells),
                    Ok(Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP | Signal::SIGQUIT) => {
                        return Exit::Code(0)
                    }
                    _ => {}
                }
            }
        }
        if requested {
            match control::recv(&control) {
                Ok(Some((req, fds))) => handle(spec, plan, req, fds, &mut shells),
                // The server let go of the sandbox: hold on until stopped.
                Ok(None) => listening = false,
                // A message that does not parse changes nothing.
                Err(_) => {}
            }
        }
    }
}

fn handle(
    spec: &SandboxSpec,
    plan: &Confinement,
    req: Request,
    fds: Vec<OwnedFd>,
    shells: &mut HashMap<u64, Shell>,
) {
    match req {
        Request::Terminal { id, argv, size } => {
            let Ok([sock, report]) = <[OwnedFd; 2]>::try_from(fds) else {
                return; // without its fds nobody would hear of it
            };
            let mut report = File::from(report);
            match start(spec, plan, argv, size, sock, &mut report) {
                Ok(pid) => {
                    shells.insert(id, Shell { pid, report });
                }
                Err(e) => {
                    let _ = report::send(&mut report, &Event::Failed(e));
                }
            }
        }
        Request::Command { id, argv, env, cwd } => {
            let Ok([stdin, stdout, stderr, report]) = <[OwnedFd; 4]>::try_from(fds) else {
                return; // without its fds nobody would hear of it
            };
            let mut report = File::from(report);
            let stdio = [stdin, stdout, stderr];
            match run(spec, plan, (argv, env, cwd), stdio, &mut report) {
                Ok(pid) => {
                    let init_pid = pid.as_raw();
                    let _ = report::send(&mut report, &Event::Started { init_pid });
                    shells.insert(id, Shell { pid, report });
                }
                Err(e) => {
                    let _ = report::send(&mut report, &Event::Failed(e));
                }
            }
        }
        Request::Kill { id } => {
            if let Some(shell) = shells.get(&id) {
                // Before its setsid the shell leads no group yet.
                if killpg(shell.pid, Signal::SIGKILL).is_err() {
                    let _ = kill(shell.pid, Signal::SIGKILL);
                }
            }
        }
    }
}

/// Forks the terminal's shell: a new PTY from the sandbox's devpts (its
/// master sent on `sock`), the plan's Landlock and seccomp, then exec.
fn start(
    spec: &SandboxSpec,
    plan: &Confinement,
    argv: Vec<String>,
    size: WinSize,
    sock: OwnedFd,
    report: &mut File,
) -> Result<Pid, SetupError> {
    if argv.is_empty() || argv.len() > 256 {
        return Err(SetupError::new("start terminal", "no command, or too long"));
    }
    let mut spec = spec.clone();
    spec.argv = argv;
    spec.tty = Some(size);
    spec.hold = false;
    fork_command(report, |report| {
        before_pid1_under_oom();
        shell_steps(&spec, plan, sock, report)
    })
}

/// A command's argv, the environment it adds, and the directory it starts
/// in (relative to the home).
type Command = (Vec<String>, Vec<(String, String)>, Option<PathBuf>);

/// Forks a command on the `stdio` sent with it: the plan's Landlock and
/// seccomp, then exec, as a terminal's shell without the terminal.
fn run(
    spec: &SandboxSpec,
    plan: &Confinement,
    (argv, env, cwd): Command,
    stdio: [OwnedFd; 3],
    report: &mut File,
) -> Result<Pid, SetupError> {
    if argv.is_empty() || argv.len() > 4096 {
        return Err(SetupError::new("start command", "no command, or too long"));
    }
    let mut spec = spec.clone();
    let mut plan = plan.clone();
    spec.argv = argv;
    spec.tty = None;
    spec.hold = false;
    // The environment is the tenant's own, as in a terminal: what the
    // plan's confinement is made of is not in it.
    for (k, v) in env {
        plan.env.retain(|(ek, _)| *ek != k);
        plan.env.push((k, v));
    }
    if let Some(rel) = cwd {
        // Checked by the server already; nothing here may leave the home.
        let plain = rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            let step = format!("chdir {}", rel.display());
            return Err(SetupError::new(
                step,
                "not a plain relative path in the home",
            ));
        }
        spec.cwd = spec.cwd.join(rel);
    }
    fork_command(report, |report| {
        before_pid1_under_oom();
        let io =
            |e: std::io::Error| SetupError::new("set up stdin, stdout and stderr", e.to_string());
        // Above 2 first (try_clone dups to 3 or more), so no stream lands
        // on a slot another is still to be copied from.
        let high = stdio
            .iter()
            .map(OwnedFd::try_clone)
            .collect::<Result<Vec<_>, _>>()
            .map_err(io)?;
        drop(stdio);
        for (fd, target) in high.iter().zip(0..) {
            sys::dup_onto(fd, target).map_err(|e| io(e.into()))?;
        }
        drop(high); // 0, 1 and 2 are the copies that stay
        let ready = confine(&spec, &plan, None, report)?; // Landlock, seccomp last
        ready.exec(&spec, report)
    })
}

/// How much more the kernel's OOM killer prefers a terminal's shell or a
/// command (and what they start) to PID 1: a fresh fork has PID 1's
/// size, and killing PID 1 would end the whole sandbox. Raising it needs
/// no privilege; the tenant cannot lower it again.
const OOM_SCORE_ADJ: &str = "500";

/// First in a forked shell or command, before it allocates anything. Best
/// effort: without it only which process an OOM kill picks changes.
fn before_pid1_under_oom() {
    let _ = std::fs::write("/proc/self/oom_score_adj", OOM_SCORE_ADJ);
}

/// In the shell's process: the joined command's last steps.
fn shell_steps(
    spec: &SandboxSpec,
    plan: &Confinement,
    sock: OwnedFd,
    report: &mut File,
) -> Result<Infallible, SetupError> {
    let ready = confine(spec, plan, Some(sock), report)?; // terminal, Landlock, seccomp last
    ready.exec(spec, report)
}

/// Reaps every child that has exited (orphans of the sandbox too); a
/// terminal's shell has its exit reported and its report closed.
fn reap(shells: &mut HashMap<u64, Shell>) {
    loop {
        let (pid, exit) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, Exit::Code(code)),
            Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, Exit::Signal(sig as i32)),
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => continue,
        };
        let id = shells.iter().find(|(_, s)| s.pid == pid).map(|(id, _)| *id);
        if let Some(mut shell) = id.and_then(|id| shells.remove(&id)) {
            let _ = report::send(&mut shell.report, &Event::Exited { exit });
        }
    }
}
