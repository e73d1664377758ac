//! Small steps every process of the shim takes, whatever its side or tier:
//! dying with its parent, the sync pipe, forking the command, reporting a
//! failure, its title for `ps`.

use std::convert::Infallible;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use nix::unistd::{pipe, Pid};
use warren_runtime::init::{self, SignalTarget};
use warren_runtime::report::{self, Event, Exit, SetupError};
use warren_runtime::sys::{self, Forked};
use warren_runtime::title;

/// Asks for SIGKILL when our parent dies: nothing in a sandbox outlives
/// whoever started it. Credential changes clear it, so it is set again
/// after each.
pub fn die_with_parent() -> Result<(), SetupError> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| SetupError::errno("set parent-death signal", e))
}

/// Reports a failure and leaves a forked process at once, with the exit
/// code the failure calls for.
pub fn fail_and_exit(report: &mut File, err: SetupError) -> ! {
    let code = err.exit_code();
    let _ = report::send(report, &Event::Failed(err));
    sys::exit_immediately(code)
}

/// Shows `warren: <role> <tenant>` in `ps -o args` for the sandbox's first
/// process and joining shims (`comm` stays `warren-shim`). Best effort: it
/// is only for people reading `ps`.
pub fn set_title(role: &str, tenant: &str) {
    let _ = title::set(&["warren:", role, tenant]);
}

/// Shows `warren-shim create <tenant>` for the creating shim: tools find it
/// by that `argv[0]` and subcommand; the tenant is added for people.
pub fn set_creator_title(tenant: &str) {
    let _ = title::set(&["warren-shim", "create", tenant]);
}

pub fn block_signals() -> Result<(), SetupError> {
    init::block_signals().map_err(|e| SetupError::errno("block signals", e))
}

/// The pipe the sandbox's first process waits on until the shim has
/// written its id maps and put it in its cgroup.
pub fn sync_pipe() -> Result<(OwnedFd, OwnedFd), SetupError> {
    pipe().map_err(|e| SetupError::errno("create sync pipe", e))
}

/// Blocks until the parent has written our id maps and placed us in our
/// cgroup (or died).
pub fn wait_for_parent(ready: OwnedFd) -> Result<(), SetupError> {
    let mut byte = [0u8; 1];
    match File::from(ready).read(&mut byte) {
        Ok(1) => Ok(()),
        _ => Err(SetupError::new(
            "wait for id maps",
            "the shim exited before releasing the sandbox",
        )),
    }
}

/// Lets the sandbox's first process go on and tells the caller its pid.
pub fn release(ready: OwnedFd, pid: Pid, report: &mut File) -> Result<(), SetupError> {
    File::from(ready)
        .write_all(b"1")
        .map_err(|e| SetupError::new("release sandbox", e.to_string()))?;
    let init_pid = pid.as_raw();
    let _ = report::send(report, &Event::Started { init_pid });
    Ok(())
}

/// Forks the command's process, which runs `steps` (ending in execve) and
/// reports their failure; the parent gets its pid.
pub fn fork_command<F>(report: &mut File, steps: F) -> Result<Pid, SetupError>
where
    F: FnOnce(&mut File) -> Result<Infallible, SetupError>,
{
    match sys::fork_process().map_err(|e| SetupError::errno(report::STEP_FORK_COMMAND, e))? {
        Forked::Child => match steps(report) {
            Ok(never) => match never {},
            Err(err) => fail_and_exit(report, err),
        },
        Forked::Parent(pid) => Ok(pid),
    }
}

/// [`fork_command`], unless the sandbox only holds open (`spec.hold`).
pub fn start_command<F>(hold: bool, report: &mut File, steps: F) -> Result<Option<Pid>, SetupError>
where
    F: FnOnce(&mut File) -> Result<Infallible, SetupError>,
{
    match hold {
        true => Ok(None),
        false => fork_command(report, steps).map(Some),
    }
}

/// The sandbox's first process once started: says it is ready, then reaps
/// (forwarding signals to the command's group) until the command ends, or
/// holds the sandbox open until told to stop.
pub fn reap(cmd: Option<Pid>, report: &mut File) -> Exit {
    let _ = report::send(report, &Event::Ready);
    match cmd {
        Some(cmd) => init::supervise(cmd, SignalTarget::Group(cmd), true),
        None => init::hold(),
    }
}

/// Reports how the command ended and leaves with its status.
pub fn exit_with(report: &mut File, exit: Exit) -> ! {
    let _ = report::send(report, &Event::Exited { exit });
    sys::exit_immediately(exit.shell_code())
}
