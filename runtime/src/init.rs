//! Supervising a child: forward signals to it, reap, report how it ended.
//!
//! Used three times with the same loop: by `warren run` around the shim, by
//! the shim around the sandbox's PID 1, and by PID 1 (the sandbox's init)
//! around the command, where it also reaps orphans. Signals are blocked and
//! taken synchronously with `sigwait`, so no handler runs at an awkward time.

use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::report::Exit;

/// Signals passed on to the supervised child. SIGTSTP/SIGTTIN/SIGTTOU are
/// left alone: stopping the supervisor is the terminal's business.
pub const FORWARDED: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGALRM,
];

fn watched() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// Blocks the forwarded signals and SIGCHLD in the calling thread (and in
/// threads and children created after it). Call before starting the child,
/// so that nothing is lost between the start and [`supervise`].
pub fn block_signals() -> Result<(), Errno> {
    watched().thread_block()
}

/// Unblocks everything: for a child right before it execs.
pub fn unblock_all_signals() -> Result<(), Errno> {
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
}

/// Where forwarded signals go.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    Process(Pid),
    /// The child's process group (the child made itself a group leader).
    Group(Pid),
}

/// Forwards signals to `child` until it exits, and returns how it ended.
/// With `reap_orphans` (PID 1 of a sandbox), every other child that exits
/// meanwhile is reaped as well.
pub fn supervise(child: Pid, target: Target, reap_orphans: bool) -> Exit {
    supervise_with(child, target, reap_orphans, |_| false)
}

/// [`supervise`], but `handle` sees each signal first and may keep it (by
/// returning true) instead of forwarding it: `warren run -t` turns SIGWINCH
/// into a resize of the sandbox's terminal.
pub fn supervise_with(
    child: Pid,
    target: Target,
    reap_orphans: bool,
    mut handle: impl FnMut(Signal) -> bool,
) -> Exit {
    let set = watched();
    loop {
        let sig = match set.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig != Signal::SIGCHLD {
            if handle(sig) {
                continue;
            }
            let _ = match target {
                Target::Process(p) => kill(p, sig),
                // The group may not exist yet (child not yet setpgid) or any
                // more; then the process itself is the best target.
                Target::Group(p) => kill(Pid::from_raw(-p.as_raw()), sig).or_else(|_| kill(p, sig)),
            };
            continue;
        }
        if let Some(exit) = reap(child, reap_orphans) {
            return exit;
        }
    }
}

/// PID 1 of a sandbox held open without a command (the web server's
/// sandboxes, which terminals join): reaps orphans until SIGTERM, SIGINT,
/// SIGHUP or SIGQUIT tells it to end the sandbox.
pub fn hold() -> Exit {
    let set = watched();
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => {
                while let Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) =
                    waitpid(None, Some(WaitPidFlag::WNOHANG))
                {}
            }
            Ok(Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP | Signal::SIGQUIT) => {
                return Exit::Code(0)
            }
            _ => {}
        }
    }
}

/// Reaps what has exited; returns the child's exit once it is among them.
fn reap(child: Pid, reap_orphans: bool) -> Option<Exit> {
    let who = if reap_orphans { None } else { Some(child) };
    loop {
        match waitpid(who, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == child => return Some(Exit::Code(code)),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => {
                return Some(Exit::Signal(sig as i32))
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// Waits for `child` without forwarding anything (used when set-up failed
/// and the child is being torn down).
pub fn wait_for(child: Pid) -> Option<Exit> {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Some(Exit::Code(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Some(Exit::Signal(sig as i32)),
            Ok(_) => continue,
            Err(Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
}
