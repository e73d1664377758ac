//! `warren-shim create`: the table of contents of a new sandbox.
//!
//! Three processes take part:
//! - the shim itself, outside, which clones the sandbox, writes its id maps
//!   and supervises it;
//! - the sandbox's PID 1 (`sandbox_init`), which builds the root, drops to
//!   the sandbox user and reaps;
//! - the command (`exec_command`), forked by PID 1.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;

use crate::limits;
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::{chdir, pipe, sethostname, setpgid, setsid, Pid};
use warren_runtime::init::{self, Target};
use warren_runtime::landlock::{self, LandlockPaths};
use warren_runtime::mounts::{self, MountOp};
use warren_runtime::report::{self, Event, Exit, SetupError, STEP_EXEC};
use warren_runtime::spec::SandboxSpec;
use warren_runtime::sys::{self, Forked};
use warren_runtime::{caps, host, idmap, namespaces, pty, seccomp};

/// Outside the sandbox: create it, supervise it, report how it ended.
pub fn run(
    spec: SandboxSpec,
    pty_socket: Option<OwnedFd>,
    report: &mut File,
) -> Result<Exit, SetupError> {
    // Die with our caller: a sandbox must never outlive whoever asked for it.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| SetupError::errno("set parent-death signal", e))?;
    // Nothing we inherited may reach the sandbox (CVE-2024-21626).
    sys::cloexec_from(3).map_err(|e| SetupError::errno("mark inherited fds close-on-exec", e))?;
    // Pure planning, from the host as it is now: no kernel state changes yet.
    let plan = mounts::plan(&spec, Path::new("/"));
    // Host root's supplementary groups would follow us in as unmapped
    // groups that still grant access; an unprivileged caller cannot drop
    // its own and has setgroups denied inside instead.
    if nix::unistd::geteuid().is_root() {
        let _ = sys::clear_supplementary_groups();
    }
    // The cgroup exists, limits written and read back, before the sandbox.
    let cgroup = limits::create(&spec, report)?;
    // Block before cloning so no signal or SIGCHLD is lost before supervise.
    init::block_signals().map_err(|e| SetupError::errno("block signals", e))?;

    let (ready_r, ready_w) = pipe().map_err(|e| SetupError::errno("create sync pipe", e))?;
    // The cgroup namespace is unshared by PID 1 once it sits in its cgroup,
    // so that cgroup becomes the namespace's root.
    let flags = namespaces::sandbox_flags();
    let pid = match sys::clone_process(flags) {
        Ok(Forked::Child) => {
            drop(ready_w);
            sandbox_init(&spec, &plan, ready_r, pty_socket, report)
        }
        Ok(Forked::Parent(pid)) => pid,
        Err(e) => {
            let (why, fix) = host::why_no_userns(Path::new("/proc"), e);
            return Err(SetupError::errno(
                format!("create namespaces ({})", namespaces::names(flags).join(",")),
                e,
            )
            .with_message(why)
            .with_hint(fix));
        }
    };
    drop(ready_r);
    // Only PID 1 sends on it; our copy would hide a failed start (no EOF).
    drop(pty_socket);

    // Only a process outside the new user namespace may write its maps.
    let placed = idmap::write_maps_from_parent(pid, &spec)
        .and_then(|()| cgroup.as_ref().map_or(Ok(()), |cg| limits::enter(cg, pid)));
    if let Err(err) = placed {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        init::wait_for(pid);
        return Err(err);
    }
    let mut ready = File::from(ready_w);
    ready
        .write_all(b"1")
        .map_err(|e| SetupError::new("release sandbox", e.to_string()))?;
    drop(ready);
    let _ = report::send(
        report,
        &Event::Started {
            init_pid: pid.as_raw(),
        },
    );

    let exit = init::supervise(pid, Target::Process(pid), false);
    // PID 1 reports the command's own exit; if PID 1 itself was killed it
    // could not, so we do.
    if let Exit::Signal(_) = exit {
        let _ = report::send(report, &Event::Exited { exit });
    }
    if let Some(cg) = cgroup {
        limits::finish(cg, spec.limits, report);
    }
    Ok(exit)
}

/// PID 1 of the sandbox. Never returns: exits with the command's status.
fn sandbox_init(
    spec: &SandboxSpec,
    plan: &[MountOp],
    ready: OwnedFd,
    pty_socket: Option<OwnedFd>,
    report: &mut File,
) -> ! {
    match init_steps(spec, plan, ready, pty_socket, report) {
        Ok(cmd) => {
            let exit = init::supervise(cmd, Target::Group(cmd), true);
            let _ = report::send(report, &Event::Exited { exit });
            // Returning from PID 1 makes the kernel kill everything else
            // left in the pid namespace: nothing outlives the command.
            sys::exit_immediately(exit.shell_code())
        }
        Err(err) => {
            let code = err.exit_code();
            let _ = report::send(report, &Event::Failed(err));
            sys::exit_immediately(code)
        }
    }
}

/// The sandbox side, in order. Returns the command's pid.
fn init_steps(
    spec: &SandboxSpec,
    plan: &[MountOp],
    ready: OwnedFd,
    pty_socket: Option<OwnedFd>,
    report: &mut File,
) -> Result<Pid, SetupError> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| SetupError::errno("set parent-death signal", e))?;
    wait_for_parent(ready)?;
    // Now inside our cgroup: it becomes the root of our cgroup namespace.
    if namespaces::cgroup_namespace_available(Path::new("/proc")) {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| SetupError::errno("unshare cgroup namespace", e))?;
    }
    // Early: from here on no execve can gain privileges (setuid, file caps).
    sys::set_no_new_privs().map_err(|e| SetupError::errno("set no_new_privs", e))?;
    // Files we create must have an owner the namespace can represent (else
    // EOVERFLOW). uid 0 is not mapped, so this keeps our capabilities.
    caps::become_user_keeping_caps(spec.uid, spec.gid)?;
    // Needs the capabilities we hold in the new user namespace.
    mounts::apply_in_child(plan)?;
    sethostname(&spec.hostname).map_err(|e| SetupError::errno("set hostname", e))?;
    sys::loopback_up().map_err(|e| SetupError::errno("bring up lo", e))?;
    // Our own session: no controlling terminal shared with the caller.
    setsid().map_err(|e| SetupError::errno("setsid", e))?;
    // Last thing that needs privilege is done: become the user, keep nothing.
    caps::become_user_without_caps(spec.uid, spec.gid)?;
    // Credential changes clear the parent-death signal: set it again.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| SetupError::errno("set parent-death signal", e))?;
    sys::set_non_dumpable().map_err(|e| SetupError::errno("set non-dumpable", e))?;
    // Compiled now, while allocation is still harmless; applied last.
    let filters = spec.seccomp.filters()?;
    // The terminal comes from the sandbox's own devpts; its master leaves
    // the sandbox over the socket and PID 1 keeps no copy.
    let tty = match (spec.tty, pty_socket) {
        (Some(size), Some(sock)) => {
            let (master, slave) = pty::open(size)?;
            pty::send_fd(&sock, &master)
                .map_err(|e| SetupError::errno("send terminal to caller", e))?;
            Some(slave)
        }
        (Some(_), None) => {
            return Err(SetupError::new(
                "open terminal",
                "a terminal was asked for without a socket to send it on",
            ))
        }
        (None, _) => None,
    };
    let (argv, envp) = command_strings(spec)?;
    // Second wall: writes only to the home, /tmp, /dev/shm and terminals.
    let mut paths = LandlockPaths::for_sandbox(spec.home());
    paths.read_write.extend(
        spec.binds
            .iter()
            .filter(|b| !b.readonly)
            .map(|b| b.target.clone()),
    );
    let landlock = landlock::restrict(&paths)?;
    // Last: from here on PID 1 and the command run under the filter.
    seccomp::apply(&filters)?;
    let _ = report::send(
        report,
        &Event::Confined {
            seccomp: spec.seccomp.name().to_string(),
            landlock,
        },
    );
    match sys::fork_process().map_err(|e| SetupError::errno("fork command", e))? {
        Forked::Child => exec_command(spec, tty.as_deref(), &argv, &envp, report),
        Forked::Parent(pid) => Ok(pid),
    }
}

/// Blocks until the parent has written our id maps (or died).
fn wait_for_parent(ready: OwnedFd) -> Result<(), SetupError> {
    let mut byte = [0u8; 1];
    match File::from(ready).read(&mut byte) {
        Ok(1) => Ok(()),
        _ => Err(SetupError::new(
            "wait for id maps",
            "the shim exited before releasing the sandbox",
        )),
    }
}

fn command_strings(spec: &SandboxSpec) -> Result<(Vec<CString>, Vec<CString>), SetupError> {
    let bad = |_| SetupError::new("prepare command", "NUL byte in command or environment");
    let argv = spec
        .argv
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<_, _>>()
        .map_err(bad)?;
    let envp = spec
        .env
        .iter()
        .map(|(k, v)| CString::new(format!("{k}={v}")))
        .collect::<Result<_, _>>()
        .map_err(bad)?;
    Ok((argv, envp))
}

/// The command's process: its own process group, default signals, the
/// working directory, then exec. Reports and exits if any of that fails.
fn exec_command(
    spec: &SandboxSpec,
    tty: Option<&Path>,
    argv: &[CString],
    envp: &[CString],
    report: &mut File,
) -> ! {
    let err = (|| {
        match tty {
            // Session leader on its own terminal: job control works.
            Some(path) => pty::attach_as_controlling_terminal(path)?,
            None => setpgid(Pid::from_raw(0), Pid::from_raw(0))
                .map_err(|e| SetupError::errno("setpgid", e))?,
        }
        init::unblock_all_signals().map_err(|e| SetupError::errno("unblock signals", e))?;
        sys::reset_signal_dispositions();
        chdir(&spec.cwd).map_err(|e| {
            SetupError::errno(format!("chdir {}", spec.cwd.display()), e)
                .with_hint("the working directory must exist inside the sandbox")
        })?;
        let errno = sys::exec(argv, envp);
        let err = SetupError::errno(STEP_EXEC, errno).with_message(format!(
            "{:?}: {}",
            spec.argv[0],
            errno.desc()
        ));
        Err::<(), _>(match errno {
            Errno::ENOENT => err.with_hint("the command was not found in the sandbox's PATH"),
            Errno::EACCES => err.with_hint("the file is not executable, or its mount is noexec"),
            _ => err,
        })
    })()
    .unwrap_err();
    let code = err.exit_code();
    // The report fd is still open here: it is close-on-exec and exec failed.
    let _ = report::send(report, &Event::Failed(err));
    sys::exit_immediately(code)
}
