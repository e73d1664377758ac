//! The `namespaces` tier: one table of contents per process, in order. The
//! order is the security argument (docs/sandbox.md, "How it is built").
//!
//! Four processes take part: the shim outside ([`create`]), which clones
//! the sandbox, writes its id maps and supervises it; the sandbox's PID 1,
//! which builds the root and drops to the sandbox user ([`pid1_in_child`]),
//! then re-executes itself inside ([`init_after_exec`]) and reaps; the
//! command it forks; and, later, each joining shim ([`join()`]).

use std::convert::Infallible;
use std::fs::File;
use std::os::fd::OwnedFd;

use warren_runtime::caps;
use warren_runtime::cgroups::SelfEntry;
use warren_runtime::idmap::write_maps_from_parent;
use warren_runtime::mounts::{apply_in_child, open_sources_in_child};
use warren_runtime::plan::{Confinement, Plan};
use warren_runtime::report::{Exit, SetupError};
use warren_runtime::spec::SandboxSpec;
use warren_runtime::sys::{self, Forked};

use crate::command::confine;
use crate::connector;
use crate::inside::*;
use crate::join::{self, Target};
use crate::limits;
use crate::network::{
    network_pipe, network_ready_from_parent, open_namespaces_from_parent, reap_pastas_children,
    start_network_from_parent, stop_pasta, wait_for_network_in_child,
};
use crate::outside::{self, detach_from_caller, or_kill, or_kill_with};
use crate::process::*;
use crate::reexec::reexec_as_init;
use crate::terminals;

/// Outside: create the sandbox, supervise it, report how it ended.
pub fn create(
    spec: SandboxSpec,
    pty: Option<OwnedFd>,
    connector: Option<OwnedFd>,
    control: Option<OwnedFd>,
    report: &mut File,
) -> Result<Exit, SetupError> {
    detach_from_caller()?; // a sandbox never outlives its caller nor sees its fds
    set_creator_title(&spec.tenant.slug); // `ps` says whose sandbox this shim holds
    let created = outside::create_cgroup(&spec)?; // limits in place before anything runs
    let disk = outside::attach_disk(&spec)?; // the home's image over it before the sandbox binds it; unmounted when dropped
    let plan = outside::plan(
        &spec,
        disk.record_in(created.limits.clone()),
        disk.in_force(),
    )?; // decided from the host as it is, only the home mounted
    outside::report_record(&created, &plan, report); // the one record of what the sandbox got
    let cgroup = created.cgroup;
    let entry = limits::open_entry(cgroup.as_ref())?; // PID 1 moves itself in through these
    block_signals()?; // before the clone: no signal or SIGCHLD is lost before supervise
    let (ready_r, ready_w) = sync_pipe()?; // PID 1 waits for its maps
    let (net_r, net_w) = network_pipe()?; // and, before any command, for its network
    let pid = match outside::clone_into_namespaces(&plan)? {
        Forked::Child => pid1_in_child(
            &spec,
            &plan,
            (ready_r, net_r),
            net_w,
            (entry, pty, control),
            report,
        ),
        Forked::Parent(pid) => pid,
    };
    drop((entry, ready_r, net_r, pty, control)); // only PID 1 uses them; our copies would hide its failure (no EOF)
    or_kill(pid, write_maps_from_parent(pid, &spec))?; // only from outside the new user namespace
    let ns = or_kill_with(pid, open_namespaces_from_parent(&plan.network, pid))?; // while PID 1 is still dumpable
    let connector_ns = or_kill_with(
        pid,
        connector::open_namespaces_from_parent(connector.as_ref(), pid),
    )?; // likewise
        // The filter's helper and pasta start now, alongside the cgroup entry
        // and PID 1's mounts; PID 1 starts no command before both are done.
    or_kill(pid, reap_pastas_children(&plan.network, spec.hold))?;
    let net = or_kill_with(pid, start_network_from_parent(&plan.network, ns))?;
    if let Err(e) = release(ready_w, pid, report) {
        net.stop();
        return Err(e);
    }
    // The filter loaded and pasta's route there: only then may PID 1 go on
    // to the tenant's command (the tenant never holds CAP_NET_ADMIN there).
    let pasta = or_kill_with(pid, net.wait(pid))?;
    network_ready_from_parent(net_w);
    or_kill(
        pid,
        connector::start_from_parent(connector, connector_ns, &spec.tenant.slug),
    )?; // the server reaches ports inside through it
    let exit = outside::supervise(pid, report); // until PID 1, and with it the sandbox, ends
    let pasta = stop_pasta(pasta); // nothing of its network is left
    outside::remove_cgroup(cgroup, &spec, report);
    drop(disk); // nothing of the sandbox is left to write to the home
    if let Some(p) = pasta {
        p.end(spec.hold); // its exit overlapped the two steps above
    }
    Ok(exit)
}

/// PID 1, up to its re-exec; never returns.
fn pid1_in_child(
    spec: &SandboxSpec,
    plan: &Plan,
    ready: (OwnedFd, OwnedFd),
    net_w: OwnedFd,
    fds: (Option<SelfEntry>, Option<OwnedFd>, Option<OwnedFd>),
    report: &mut File,
) -> ! {
    drop(net_w); // the shim's end: its exit must read as EOF here
    let Err(err) = pid1_steps(spec, plan, ready, fds, report);
    fail_and_exit(report, err)
}

fn pid1_steps(
    spec: &SandboxSpec,
    plan: &Plan,
    (ready, net_ready): (OwnedFd, OwnedFd),
    (entry, pty, control): (Option<SelfEntry>, Option<OwnedFd>, Option<OwnedFd>),
    report: &mut File,
) -> Result<Infallible, SetupError> {
    die_with_parent()?; // a clone starts without it
    limits::enter_in_child(entry)?; // counted before it runs anything, while the shim writes our maps
    wait_for_parent(ready)?; // our id maps are in place
    unshare_cgroup_namespace(plan)?; // now in our cgroup: it becomes the namespace's root
    set_no_new_privs()?; // early: from here on no execve can gain privileges
    let sources = open_sources_in_child(&plan.mounts)?; // as the shim's host uid: the workspace root is 0700
    become_user_for_mounts(spec)?; // files we create need an owner the namespace maps
    apply_in_child(&plan.mounts, &sources)?; // our caps in the new userns; ends in pivot_root
    drop(sources);
    hand_home_to_tenant(spec)?; // with subordinate ids the server made it as root-inside
    set_hostname(spec)?;
    loopback_up()?;
    wait_for_network_in_child(&plan.network, net_ready)?; // the filter and pasta's route: no command starts without them
    new_session()?; // no controlling terminal shared with the caller
    caps::become_user_without_caps(spec.uid, spec.gid)?; // the last privileged step is done
    die_with_parent()?; // credential changes clear it
    if !spec.hold && control.is_none() {
        // Nothing will join it: no exec needed for a joiner to reach us
        // (docs/security.md, "The sandbox's PID 1"); non-dumpable next.
        init_after_exec(spec.clone(), plan.confinement.clone(), pty, control, report)
    }
    reexec_as_init(spec, &plan.confinement, (pty, control), report) // then the sandbox's userns owns our memory
}

/// PID 1 again, re-executed inside (`warren-shim init`), or straight on
/// in a sandbox nothing joins: confine itself, fork the command, reap until
/// it ends; or, held with a control channel, start terminals on request
/// until told to stop. Never returns.
pub fn init_after_exec(
    spec: SandboxSpec,
    plan: Confinement,
    pty: Option<OwnedFd>,
    control: Option<OwnedFd>,
    report: &mut File,
) -> ! {
    let started = (|| {
        die_with_parent()?;
        // A re-exec kept the report fd and terminal socket open (CVE-2024-21626).
        sys::cloexec_from(3).map_err(|e| SetupError::errno("close-on-exec after re-exec", e))?;
        let _ = nix::sys::prctl::set_name(c"warren-shim"); // run from warren-info's path
        set_title("init", &spec.tenant.slug);
        set_non_dumpable()?; // after the last exec: the tenant cannot read our memory
        let ready = confine(&spec, &plan, pty, report)?; // terminal, Landlock, seccomp last
        start_command(spec.hold, report, |report| ready.exec(&spec, report))
    })();
    let cmd = started.unwrap_or_else(|err| fail_and_exit(report, err));
    let exit = match (cmd, control) {
        (None, Some(control)) => terminals::serve(&spec, &plan, control, report),
        (cmd, _) => reap(cmd, report),
    };
    exit_with(report, exit) // ending PID 1 kills everything left in the pid namespace
}

/// A joining shim: enter the live sandbox, run one command in it.
pub fn join(
    spec: SandboxSpec,
    target: Target,
    pty: Option<OwnedFd>,
    report: &mut File,
) -> Result<Exit, SetupError> {
    detach_from_caller()?; // as for create
    set_title("join", &spec.tenant.slug);
    let pidfd = join::pin_init(&target)?; // PID 1 is still the one its shim started
    let (got, disk) = outside::joined_cgroup(&spec, &target)?; // as the first command got it
    let plan = outside::plan(&spec, got, disk)?; // on the host's mounts, charged to us, not the tenant
    join::enter_cgroup(&target)?; // from the host side, while cgroupfs is visible
    block_signals()?;
    join::enter_namespaces(pidfd, &plan)?;
    // A joined pid namespace applies to children only.
    let child = fork_command(report, |report| {
        joined_command(&spec, &plan.confinement, pty, report)
    })?;
    let exit = join::supervise(child, false, report);
    Ok(join::report_exit(exit, report))
}

/// The joined command, in the sandbox: the first command's steps.
fn joined_command(
    spec: &SandboxSpec,
    plan: &Confinement,
    pty: Option<OwnedFd>,
    report: &mut File,
) -> Result<Infallible, SetupError> {
    die_with_parent()?;
    set_no_new_privs()?; // early: no execve can gain privileges
    caps::become_user_without_caps(spec.uid, spec.gid)?;
    die_with_parent()?; // credential changes clear it
    let ready = confine(spec, plan, pty, report)?; // terminal, Landlock, seccomp last
    ready.exec(spec, report)
}
