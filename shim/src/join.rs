//! Steps of `warren-shim join`, a new command in a live sandbox (a terminal
//! of the web server joining the user's sandbox).
//!
//! Everything is re-derived from the caller's spec, never from the
//! sandbox: the user, capabilities (none), Landlock and seccomp are applied
//! exactly as for the sandbox's first command; only the namespaces and the
//! cgroup are the sandbox's. In the tiers without namespaces only the
//! cgroup is.

use std::fs::File;
use std::io::Read;
use std::os::fd::{OwnedFd, RawFd};

use nix::unistd::Pid;
use warren_runtime::init::{self, SignalTarget};
use warren_runtime::namespaces;
use warren_runtime::plan::Plan;
use warren_runtime::record::SandboxRecord;
use warren_runtime::report::{self, Event, Exit, SetupError};
use warren_runtime::sys;

use crate::limits;

/// Which sandbox to join.
pub struct Target {
    /// The sandbox's PID 1, as the host sees it.
    pub init_pid: Pid,
    /// The shim that created it: PID 1 must still be its child, which pins
    /// the pid against reuse (the caller has not reaped that shim).
    pub parent_pid: Pid,
    /// The sandbox's cgroup id, when it has one.
    pub cgroup: Option<String>,
    /// Where the sandbox's record is (`--record-fd`), when the caller has it.
    pub record_fd: Option<RawFd>,
}

/// The record the sandbox was made with, as the caller got it
/// (`--record-fd`); `None` from a caller without one.
pub fn given_record(target: &Target) -> Result<Option<SandboxRecord>, SetupError> {
    target.record_fd.map(read_record).transpose()
}

/// The sandbox's record, from the caller's memfd.
fn read_record(fd: RawFd) -> Result<SandboxRecord, SetupError> {
    let step = "read sandbox record";
    let fd: OwnedFd = sys::adopt_inherited_fd(fd).map_err(|e| SetupError::errno(step, e))?;
    let mut buf = Vec::new();
    File::from(fd)
        .take(1 << 20)
        .read_to_end(&mut buf)
        .map_err(|e| SetupError::new(step, e.to_string()))?;
    serde_json::from_slice(&buf).map_err(|e| SetupError::new(step, format!("invalid record: {e}")))
}

/// Pins PID 1, then checks it is who we think: a pidfd cannot be
/// redirected to a later process reusing the number.
pub fn pin_init(target: &Target) -> Result<OwnedFd, SetupError> {
    let pidfd = sys::pidfd_open(target.init_pid).map_err(|e| {
        SetupError::errno(format!("open sandbox PID 1 ({})", target.init_pid), e)
            .with_hint("the sandbox has ended")
    })?;
    check_parent(target.init_pid, target.parent_pid)?;
    Ok(pidfd)
}

/// Moves us into the sandbox's cgroup, if it has one: the command and this
/// supervisor count against its limits from now on.
pub fn enter_cgroup(target: &Target) -> Result<(), SetupError> {
    target.cgroup.as_deref().map_or(Ok(()), limits::join)
}

/// Enters all of PID 1's namespaces, the cgroup namespace included.
pub fn enter_namespaces(pidfd: OwnedFd, plan: &Plan) -> Result<(), SetupError> {
    let flags = plan.join_flags();
    nix::sched::setns(&pidfd, flags).map_err(|e| {
        let names = namespaces::names(flags).join(",");
        SetupError::errno(format!("join namespaces ({names})"), e)
    })
}

/// Enters the mount namespace of the sandbox's leader (tiers without
/// namespaces, whose shim mounted the home's disk image in a mount
/// namespace of its own).
pub fn enter_mount_namespace(pidfd: &OwnedFd) -> Result<(), SetupError> {
    nix::sched::setns(pidfd, nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| SetupError::errno("join the sandbox's mount namespace", e))
}

/// Tells the caller the command's pid and waits for it to end, forwarding
/// signals to its group; `reap_orphans`: the command's orphans are ours.
pub fn supervise(child: Pid, reap_orphans: bool, report: &mut File) -> Exit {
    let init_pid = child.as_raw();
    let _ = report::send(report, &Event::Started { init_pid });
    init::supervise(child, SignalTarget::Group(child), reap_orphans)
}

/// Reports how the command ended.
pub fn report_exit(exit: Exit, report: &mut File) -> Exit {
    let _ = report::send(report, &Event::Exited { exit });
    exit
}

/// PID 1's parent must be the shim that created the sandbox.
fn check_parent(init: Pid, parent: Pid) -> Result<(), SetupError> {
    let stat = std::fs::read_to_string(format!("/proc/{init}/stat")).unwrap_or_default();
    let ppid = stat
        .rfind(')')
        .and_then(|i| stat[i + 2..].split(' ').nth(1))
        .and_then(|p| p.parse::<i32>().ok());
    if ppid == Some(parent.as_raw()) {
        Ok(())
    } else {
        Err(SetupError::new(
            "check sandbox PID 1",
            format!(
                "pid {init} is not a sandbox of shim {parent} (it ended and the pid was reused?)"
            ),
        ))
    }
}
