//! A held sandbox's PID 1 starting terminals on request
//! (`warren_runtime::control`): each shell is PID 1's own child, so it is
//! in the sandbox's cgroup and every namespace from its first instruction,
//! and its parent is inside the sandbox.
//!
//! A request brings only what to run and the PTY's size; the confinement
//! is PID 1's own plan, made outside before the sandbox existed, applied
//! with the first command's steps ([`confine`]). The ids, no capabilities
//! and `no_new_privs` are PID 1's already and are inherited.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};

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

use crate::command::confine;
use crate::process::fork_command;

/// One terminal's shell: its pid here and its report pipe, where its exit
/// goes once reaped.
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
    fork_command(report, |report| shell_steps(&spec, plan, sock, report))
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
