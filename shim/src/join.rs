//! `warren-shim join`: a new command in a live sandbox (a terminal of the
//! web server joining the user's sandbox).
//!
//! Everything is re-derived from the caller's spec, never from the
//! sandbox: the user, capabilities (none), Landlock and seccomp are applied
//! here exactly as for the sandbox's first command; only the namespaces and
//! the cgroup are the sandbox's. In the tiers without namespaces only the
//! cgroup is (see `shared`).

use std::fs::File;
use std::io::Read;
use std::os::fd::{OwnedFd, RawFd};
use std::path::Path;

use nix::sched::CloneFlags;
use nix::unistd::Pid;
use warren_runtime::init::{self, SignalTarget};
use warren_runtime::record::SandboxRecord;
use warren_runtime::report::{self, Event, Exit, SetupError};
use warren_runtime::spec::SandboxSpec;
use warren_runtime::sys::{self, Forked};
use warren_runtime::{caps, namespaces};

use crate::{limits, shared, spawn};

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

pub fn run(
    spec: SandboxSpec,
    target: Target,
    pty_socket: Option<OwnedFd>,
    report: &mut File,
) -> Result<Exit, SetupError> {
    spawn::die_with_parent()?;
    sys::cloexec_from(3).map_err(|e| SetupError::errno("mark inherited fds close-on-exec", e))?;
    let record = target.record_fd.map(read_record).transpose()?;
    // Pin PID 1, then check it is who we think: a pidfd cannot be
    // redirected to a later process reusing the number.
    let pidfd = sys::pidfd_open(target.init_pid).map_err(|e| {
        SetupError::errno(format!("open sandbox PID 1 ({})", target.init_pid), e)
            .with_hint("the sandbox has ended")
    })?;
    check_parent(target.init_pid, target.parent_pid)?;
    // From the host side, while cgroupfs is still visible: the command and
    // this supervisor count against the sandbox's limits from now on.
    if let Some(id) = &target.cgroup {
        limits::join(id)?;
    }
    if nix::unistd::geteuid().is_root() {
        let _ = sys::clear_supplementary_groups();
    }
    init::block_signals().map_err(|e| SetupError::errno("block signals", e))?;
    let shared_host = spec.isolation.shares_host();
    // Without namespaces there is nothing to enter; what the sandbox's
    // cgroup and the spec do not give, the command gets as the first did.
    let described = if shared_host {
        // The record the sandbox was made with, as the caller got it; or,
        // from a caller without one, worked out again the same way.
        let record = record.unwrap_or_else(|| {
            let limits = limits::expected(&spec, target.cgroup.is_some());
            SandboxRecord::of(&spec, limits, sys::landlock_abi())
        });
        // The command's orphans stay ours, not the host init's.
        init::become_subreaper().map_err(|e| SetupError::errno("become child subreaper", e))?;
        Some(shared::describe(&spec, record))
    } else {
        let mut flags = namespaces::sandbox_flags();
        if namespaces::cgroup_namespace_available(Path::new("/proc")) {
            flags |= CloneFlags::CLONE_NEWCGROUP;
        }
        nix::sched::setns(&pidfd, flags).map_err(|e| {
            SetupError::errno(
                format!("join namespaces ({})", namespaces::names(flags).join(",")),
                e,
            )
        })?;
        None
    };
    drop(pidfd);
    // A joined pid namespace applies to children only.
    match sys::fork_process().map_err(|e| SetupError::errno("fork command", e))? {
        Forked::Child => {
            let err = match &described {
                Some(d) => shared::command_steps(&spec, d, pty_socket, report)
                    .map(|never| match never {})
                    .unwrap_err(),
                None => command_steps(&spec, pty_socket, report).unwrap_err(),
            };
            spawn::fail_and_exit(report, err)
        }
        Forked::Parent(child) => {
            drop(pty_socket);
            let _ = report::send(
                report,
                &Event::Started {
                    init_pid: child.as_raw(),
                },
            );
            let exit = init::supervise(child, SignalTarget::Group(child), shared_host);
            // Without a cgroup to hold them until the sandbox stops, what
            // the shell left behind goes with it (no pid namespace does).
            if shared_host && target.cgroup.is_none() {
                init::kill_all_children(Path::new("/proc"));
            }
            let _ = report::send(report, &Event::Exited { exit });
            Ok(exit)
        }
    }
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

/// In the sandbox: the same steps as a first command, then exec. Only
/// returns on failure.
fn command_steps(
    spec: &SandboxSpec,
    pty_socket: Option<OwnedFd>,
    report: &mut File,
) -> Result<(), SetupError> {
    spawn::die_with_parent()?;
    sys::set_no_new_privs().map_err(|e| SetupError::errno("set no_new_privs", e))?;
    caps::become_user_without_caps(spec.uid, spec.gid)?;
    spawn::die_with_parent()?;
    let ready = spawn::confine(spec, pty_socket, report)?;
    ready.exec(spec, report)
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
