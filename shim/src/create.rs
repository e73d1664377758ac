//! `warren-shim create`: the table of contents of a new sandbox. This is the
//! namespace tier; the tiers without namespaces share the outer steps and
//! fork a leader instead of PID 1 (see `shared`).
//!
//! Three processes take part:
//! - the shim itself, outside, which clones the sandbox, writes its id maps
//!   and supervises it;
//! - the sandbox's PID 1 (`sandbox_init`), which builds the root, drops to
//!   the sandbox user and reaps;
//! - the command (`exec_command`), forked by PID 1.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;

use crate::{limits, shared, spawn};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::{pipe, sethostname, setsid};
use warren_runtime::info::{SandboxInfo, APPLETS, INFO_BIN, INFO_DIR, INFO_PATH};
use warren_runtime::init::{self, SignalTarget};
use warren_runtime::mounts::{self, MountOp};
use warren_runtime::record::SandboxRecord;
use warren_runtime::report::{self, Event, Exit, SetupError};
use warren_runtime::spec::SandboxSpec;
use warren_runtime::sys::{self, Forked};
use warren_runtime::{caps, host, idmap, namespaces};

/// Outside the sandbox: create it, supervise it, report how it ended.
pub fn run(
    spec: SandboxSpec,
    pty_socket: Option<OwnedFd>,
    report: &mut File,
) -> Result<Exit, SetupError> {
    // Die with our caller: a sandbox must never outlive whoever asked for it.
    spawn::die_with_parent()?;
    // Nothing we inherited may reach the sandbox (CVE-2024-21626).
    sys::cloexec_from(3).map_err(|e| SetupError::errno("mark inherited fds close-on-exec", e))?;
    // Host root's supplementary groups would follow us in as unmapped
    // groups that still grant access; an unprivileged caller cannot drop
    // its own and has setgroups denied inside instead.
    if nix::unistd::geteuid().is_root() {
        let _ = sys::clear_supplementary_groups();
    }
    // The cgroup exists, limits written and read back, before the sandbox.
    let created = limits::create(&spec)?;
    // Recorded once, from what was read back: the server and warren-info
    // show this record as it is.
    let record = limits::record(&spec, &created, report);
    let cgroup = created.cgroup;
    let namespaced = !spec.isolation.shares_host();
    // Planning, from the host as it is now; nothing is mounted yet. The
    // tiers without namespaces mount nothing and only describe themselves.
    let tier = if namespaced {
        Tier::Namespaces(plan_root(&spec, record)?)
    } else {
        Tier::SharedHost(Box::new(shared::describe(&spec, record)))
    };
    // Block before cloning so no signal or SIGCHLD is lost before supervise.
    init::block_signals().map_err(|e| SetupError::errno("block signals", e))?;

    let (ready_r, ready_w) = pipe().map_err(|e| SetupError::errno("create sync pipe", e))?;
    // The cgroup namespace is unshared by PID 1 once it sits in its cgroup,
    // so that cgroup becomes the namespace's root.
    let flags = if namespaced {
        namespaces::sandbox_flags()
    } else {
        CloneFlags::empty()
    };
    let pid = match sys::clone_process(flags) {
        Ok(Forked::Child) => {
            drop(ready_w);
            match &tier {
                Tier::Namespaces(plan) => sandbox_init(&spec, plan, ready_r, pty_socket, report),
                Tier::SharedHost(described) => {
                    shared::leader(&spec, described, ready_r, pty_socket, report)
                }
            }
        }
        Ok(Forked::Parent(pid)) => pid,
        Err(e) if namespaced => {
            let (why, fix) = host::why_no_userns(Path::new("/proc"), e);
            return Err(SetupError::errno(
                format!("create namespaces ({})", namespaces::names(flags).join(",")),
                e,
            )
            .with_message(why)
            .with_hint(fix));
        }
        Err(e) => return Err(SetupError::errno("fork sandbox leader", e)),
    };
    drop(ready_r);
    // Only PID 1 sends on it; our copy would hide a failed start (no EOF).
    drop(pty_socket);

    // Only a process outside the new user namespace may write its maps.
    let maps = if namespaced {
        idmap::write_maps_from_parent(pid, &spec)
    } else {
        Ok(())
    };
    let placed = maps.and_then(|()| cgroup.as_ref().map_or(Ok(()), |cg| limits::enter(cg, pid)));
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

    let exit = init::supervise(pid, SignalTarget::Process(pid), false);
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

/// What the sandbox is built from, by tier.
enum Tier {
    /// The mount plan.
    Namespaces(Vec<MountOp>),
    /// No mounts: a description for the command's environment.
    SharedHost(Box<shared::Described>),
}

/// The mount plan of the `host` profile, plus what `warren-info` needs:
/// the description in /etc and this binary, under that name (and, as
/// symlinks to it, under the names of the other applets).
fn plan_root(spec: &SandboxSpec, record: SandboxRecord) -> Result<Vec<MountOp>, SetupError> {
    let mut plan = mounts::plan(spec, Path::new("/"));
    let info = SandboxInfo {
        user: spec.tenant.slug.clone(),
        uid: spec.uid,
        hostname: spec.hostname.clone(),
        namespaces: namespaces::names(namespaces::with_cgroup_if_available(
            namespaces::sandbox_flags(),
            Path::new("/proc"),
        ))
        .into_iter()
        .map(String::from)
        .collect(),
        sandbox: record,
    };
    let json = serde_json::to_string_pretty(&info)
        .map_err(|e| SetupError::new("describe sandbox", e.to_string()))?;
    mounts::add_etc_file(&mut plan, INFO_PATH.trim_start_matches("/etc/"), json);
    let me =
        std::env::current_exe().map_err(|e| SetupError::new("find warren-shim", e.to_string()))?;
    mounts::add_readonly_file(&mut plan, me, INFO_BIN.into());
    // One binary, several names: argv[0] picks the tool.
    for applet in APPLETS {
        mounts::add_symlink(
            &mut plan,
            "warren-info".into(),
            Path::new(INFO_DIR).join(applet),
        );
    }
    Ok(plan)
}

/// PID 1 of the sandbox, until it re-executes itself ([`init_after_exec`]).
/// Never returns.
fn sandbox_init(
    spec: &SandboxSpec,
    plan: &[MountOp],
    ready: OwnedFd,
    pty_socket: Option<OwnedFd>,
    report: &mut File,
) -> ! {
    match init_steps(spec, plan, ready, pty_socket, report) {
        Ok(never) => match never {},
        Err(err) => spawn::fail_and_exit(report, err),
    }
}

/// PID 1 again, re-executed inside the sandbox (`warren-shim init`): the
/// last steps, then reap until the command ends. Never returns: exits with
/// the command's status.
pub fn init_after_exec(spec: SandboxSpec, pty_socket: Option<OwnedFd>, report: &mut File) -> ! {
    let started = (|| {
        spawn::die_with_parent()?;
        // The re-exec kept the report pipe and the PTY socket open across
        // exec on purpose; close-on-exec again before the command is
        // exec'd, or it would inherit PID 1's report pipe and could forge
        // its own outcome (leaked fds: CVE-2024-21626).
        sys::cloexec_from(3).map_err(|e| SetupError::errno("close-on-exec after re-exec", e))?;
        // Run from warren-info's path, shown as the shim it is (`ps`).
        let _ = nix::sys::prctl::set_name(c"warren-shim");
        // After the last credential change and the exec: the tenant's
        // processes (same uid) can no longer open /proc/1/mem, environ or
        // maps, nor forge PID 1's reports. The exec made the sandbox's user
        // namespace own this memory, so the shim that joins terminals (its
        // owner) still holds CAP_SYS_PTRACE over it; the tenant holds none.
        sys::set_non_dumpable().map_err(|e| SetupError::errno("set non-dumpable", e))?;
        spawn::confine_and_spawn(&spec, pty_socket, report)
    })();
    let cmd = match started {
        Ok(cmd) => cmd,
        Err(err) => spawn::fail_and_exit(report, err),
    };
    let _ = report::send(report, &Event::Ready);
    let exit = match cmd {
        Some(cmd) => init::supervise(cmd, SignalTarget::Group(cmd), true),
        None => init::hold(),
    };
    let _ = report::send(report, &Event::Exited { exit });
    // Returning from PID 1 makes the kernel kill everything else left in
    // the pid namespace: nothing outlives the command.
    sys::exit_immediately(exit.shell_code())
}

/// The sandbox side, in order, up to the re-exec of PID 1 (which continues
/// in [`init_after_exec`]). Only returns on failure.
fn init_steps(
    spec: &SandboxSpec,
    plan: &[MountOp],
    ready: OwnedFd,
    pty_socket: Option<OwnedFd>,
    report: &mut File,
) -> Result<std::convert::Infallible, SetupError> {
    spawn::die_with_parent()?;
    wait_for_parent(ready)?;
    // Now inside our cgroup: it becomes the root of our cgroup namespace.
    if namespaces::cgroup_namespace_available(Path::new("/proc")) {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| SetupError::errno("unshare cgroup namespace", e))?;
    }
    // Early: from here on no execve can gain privileges (setuid, file caps).
    sys::set_no_new_privs().map_err(|e| SetupError::errno("set no_new_privs", e))?;
    // Files we create must have an owner the namespace can represent (else
    // EOVERFLOW). Without a mapped root we become the sandbox user now: uid 0
    // is not mapped, so this keeps our capabilities. With subordinate ids
    // our own uid is root inside and already can.
    // Before that, while we are still the shim's own host uid: as root the
    // workspace root is 0700 and root's, closed to the tenant's host uid.
    let sources = mounts::open_sources_in_child(plan)?;
    if spec.id_map.ns_root.is_none() {
        caps::become_user_keeping_caps(spec.uid, spec.gid)?;
    }
    // Needs the capabilities we hold in the new user namespace.
    mounts::apply_in_child(plan, &sources)?;
    drop(sources);
    if spec.id_map.ns_root.is_some() {
        hand_home_to_tenant(spec)?;
    }
    sethostname(&spec.hostname).map_err(|e| SetupError::errno("set hostname", e))?;
    sys::loopback_up().map_err(|e| SetupError::errno("bring up lo", e))?;
    // Our own session: no controlling terminal shared with the caller.
    setsid().map_err(|e| SetupError::errno("setsid", e))?;
    // Last thing that needs privilege is done: become the user, keep nothing.
    caps::become_user_without_caps(spec.uid, spec.gid)?;
    // Credential changes clear the parent-death signal: set it again.
    spawn::die_with_parent()?;
    // PID 1's memory still belongs to the namespace the shim was started
    // in; made non-dumpable, an unprivileged caller could not join it. Run
    // afresh in here, it belongs to the sandbox's namespace.
    reexec_as_init(spec, pty_socket, report)
}

/// Executes the sandbox's read-only copy of this shim ([`INFO_BIN`]) as
/// `warren-shim init`, handing over the spec (a memfd), the report channel
/// and the terminal socket; every other fd is close-on-exec. Only returns
/// on failure.
fn reexec_as_init(
    spec: &SandboxSpec,
    pty_socket: Option<OwnedFd>,
    report: &File,
) -> Result<std::convert::Infallible, SetupError> {
    use nix::sys::memfd::{memfd_create, MFdFlags};
    use std::ffi::CString;
    use std::io::Seek;
    use std::os::fd::AsRawFd;
    let step = "re-execute PID 1";
    let json = serde_json::to_vec(spec).map_err(|e| SetupError::new(step, e.to_string()))?;
    let memfd = memfd_create("warren-spec", MFdFlags::MFD_CLOEXEC)
        .map_err(|e| SetupError::errno(step, e))?;
    let mut spec_file = File::from(memfd);
    spec_file
        .write_all(&json)
        .and_then(|_| spec_file.rewind())
        .map_err(|e| SetupError::new(step, e.to_string()))?;
    let mut argv = vec!["warren-shim".to_string(), "init".into()];
    let mut pass = |flag: &str, fd: &dyn AsRawFd| -> Result<(), SetupError> {
        sys::clear_cloexec(&fd.as_raw_fd()).map_err(|e| SetupError::errno(step, e))?;
        argv.extend([flag.to_string(), fd.as_raw_fd().to_string()]);
        Ok(())
    };
    pass("--spec-fd", &spec_file)?;
    pass("--report-fd", report)?;
    if let Some(sock) = &pty_socket {
        pass("--pty-socket-fd", sock)?;
    }
    let argv: Vec<CString> = argv
        .into_iter()
        .map(|a| CString::new(a).expect("no NUL in flags and numbers"))
        .collect();
    let bin = CString::new(INFO_BIN).expect("a constant path");
    let err = nix::unistd::execve::<CString, CString>(&bin, &argv, &[]).unwrap_err();
    Err(SetupError::errno(format!("{step} ({INFO_BIN})"), err))
}

/// With subordinate ids the server created the home as itself (root in
/// here); on first use it goes to the sandbox user, i.e. the tenant's own
/// host id. Only the home itself: it is empty the first time.
fn hand_home_to_tenant(spec: &SandboxSpec) -> Result<(), SetupError> {
    use std::os::unix::fs::MetadataExt;
    let home = spec.home();
    let step = || format!("give {} to the sandbox user", home.display());
    let meta =
        std::fs::symlink_metadata(&home).map_err(|e| SetupError::new(step(), e.to_string()))?;
    if meta.uid() == 0 {
        nix::unistd::chown(
            &home,
            Some(nix::unistd::Uid::from_raw(spec.uid)),
            Some(nix::unistd::Gid::from_raw(spec.gid)),
        )
        .map_err(|e| SetupError::errno(step(), e))?;
    }
    Ok(())
}

/// Blocks until the parent has written our id maps and placed us in our
/// cgroup (or died).
pub(crate) fn wait_for_parent(ready: OwnedFd) -> Result<(), SetupError> {
    let mut byte = [0u8; 1];
    match File::from(ready).read(&mut byte) {
        Ok(1) => Ok(()),
        _ => Err(SetupError::new(
            "wait for id maps",
            "the shim exited before releasing the sandbox",
        )),
    }
}
