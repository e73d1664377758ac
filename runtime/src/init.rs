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
pub enum SignalTarget {
    Process(Pid),
    /// The child's process group (the child made itself a group leader).
    Group(Pid),
}

/// Forwards signals to `child` until it exits, and returns how it ended.
/// With `reap_orphans` (PID 1 of a sandbox), every other child that exits
/// meanwhile is reaped as well.
pub fn supervise(child: Pid, target: SignalTarget, reap_orphans: bool) -> Exit {
    supervise_with(child, target, reap_orphans, |_| false)
}

/// [`supervise`], but `handle` sees each signal first and may keep it (by
/// returning true) instead of forwarding it: `warren run -t` turns SIGWINCH
/// into a resize of the sandbox's terminal.
pub fn supervise_with(
    child: Pid,
    target: SignalTarget,
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
                SignalTarget::Process(p) => kill(p, sig),
                // The group may not exist yet (child not yet setpgid) or any
                // more; then the process itself is the best target.
                SignalTarget::Group(p) => {
                    kill(Pid::from_raw(-p.as_raw()), sig).or_else(|_| kill(p, sig))
                }
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

/// Makes the calling process a child subreaper: orphans among its
/// descendants become its children instead of the host init's, so none
/// can leave its process tree. Where there is no pid namespace, this is what
/// keeps a sandbox's processes within reach ([`kill_all_children`]).
pub fn become_subreaper() -> Result<(), Errno> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// Kills every child with SIGKILL and reaps it, again and again, until no
/// child is left: a subreaper inherits the orphans of each child it kills,
/// and kills those next. Ends the rest of a sandbox that has no pid
/// namespace to end with its PID 1.
pub fn kill_all_children(proc_root: &std::path::Path) {
    let me = nix::unistd::getpid();
    loop {
        // A child that died is our zombie until we reap it, so no pid in
        // this list can have been reused for someone else.
        for pid in children_of(proc_root, me) {
            let _ = kill(pid, Signal::SIGKILL);
        }
        match waitpid(None, None) {
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return,
        }
    }
}

/// The processes whose parent is `parent`, from /proc/*/stat.
fn children_of(proc_root: &std::path::Path, parent: Pid) -> Vec<Pid> {
    let Ok(rd) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat"))
                .ok()
                .and_then(|stat| {
                    let rest = &stat[stat.rfind(')')? + 2..];
                    rest.split(' ').nth(1)?.parse::<i32>().ok()
                })
                == Some(parent.as_raw())
        })
        .map(Pid::from_raw)
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_are_found_by_their_parent_pid() {
        let d = tempfile::tempdir().unwrap();
        for (pid, ppid, comm) in [
            (10, 1, "init"),
            (11, 10, "a b) c"),
            (12, 10, "x"),
            (13, 11, "y"),
        ] {
            let dir = d.path().join(pid.to_string());
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("stat"), format!("{pid} ({comm}) S {ppid} 0 0")).unwrap();
        }
        std::fs::create_dir(d.path().join("self")).unwrap();
        let mut kids = children_of(d.path(), Pid::from_raw(10));
        kids.sort();
        assert_eq!(kids, [Pid::from_raw(11), Pid::from_raw(12)]);
        assert!(children_of(d.path(), Pid::from_raw(12)).is_empty());
    }
}
