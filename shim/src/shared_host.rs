//! The tiers without namespaces (`landlock`, `none`), for hosts that forbid
//! user namespaces: one table of contents per process, in order. The two
//! tiers differ only in their plan (`none` has no Landlock and no seccomp).
//!
//! The sandbox runs on the host's own filesystem, pid, network and IPC
//! namespaces, as a host uid. The shim forks a leader and puts it in the
//! cgroup before releasing it, as in the namespace tier; the leader stays
//! outside the tenant's confinement, like the shim, holds the sandbox open
//! or forks the command, reaps, and when the command ends kills whatever is
//! left, since no pid namespace does. Every command, the first and each
//! joined one, confines itself ([`command`]).

use std::convert::Infallible;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::Path;

use warren_runtime::caps::become_tenant_without_caps;
use warren_runtime::init::kill_all_children;
use warren_runtime::plan::Plan;
use warren_runtime::report::{Exit, SetupError};
use warren_runtime::spec::SandboxSpec;
use warren_runtime::sys::Forked;

use crate::command::{confine, make_private_tmp, set_rlimits};
use crate::inside::*;
use crate::join::{self, Target};
use crate::outside::{self, detach_from_caller, or_kill};
use crate::process::*;

/// Outside: create the sandbox, supervise it, report how it ended.
pub fn create(
    spec: SandboxSpec,
    pty: Option<OwnedFd>,
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
    )?; // decided while warren-info is still visible to us
    outside::report_record(&created, &plan, report); // the one record of what the sandbox got
    let cgroup = created.cgroup;
    block_signals()?; // before the fork: no signal or SIGCHLD is lost before supervise
    let (ready_r, ready_w) = sync_pipe()?; // the leader waits for its cgroup
    let pid = match outside::fork_leader()? {
        Forked::Child => leader(&spec, &plan, ready_r, pty, report),
        Forked::Parent(pid) => pid,
    };
    drop((ready_r, pty)); // only the leader uses them; our copies would hide its failure (no EOF)
    or_kill(pid, outside::enter_cgroup(cgroup.as_ref(), pid))?; // counted before it runs anything
    release(ready_w, pid, report)?;
    let exit = outside::supervise(pid, report); // until the leader, and with it the sandbox, ends
    outside::remove_cgroup(cgroup, &spec, report);
    drop(disk); // nothing of the sandbox is left to write to the home
    Ok(exit)
}

/// The sandbox's leader, forked by the shim. Never returns: exits with the
/// command's status (0 when only held open).
fn leader(
    spec: &SandboxSpec,
    plan: &Plan,
    ready: OwnedFd,
    pty: Option<OwnedFd>,
    report: &mut File,
) -> ! {
    let started = (|| {
        die_with_parent()?; // a fork starts without it
        wait_for_parent(ready)?; // our cgroup is in place
        set_title("init", &spec.tenant.slug); // it plays PID 1's part
        new_session()?; // no controlling terminal shared with the caller
        become_subreaper()?; // nothing the command starts can leave our process tree
        set_non_dumpable()?; // tenants may share our uid: keep them out of our memory
        start_command(spec.hold, report, |report| command(spec, plan, pty, report))
    })();
    let cmd = started.unwrap_or_else(|err| fail_and_exit(report, err));
    let exit = reap(cmd, report);
    kill_all_children(Path::new("/proc")); // what a pid namespace would do when its PID 1 ends
    exit_with(report, exit)
}

/// A command of the sandbox (its first, or a joined one). Only returns on
/// failure.
fn command(
    spec: &SandboxSpec,
    plan: &Plan,
    pty: Option<OwnedFd>,
    report: &mut File,
) -> Result<Infallible, SetupError> {
    die_with_parent()?;
    set_no_new_privs()?; // early: from here on no execve can gain privileges
    set_rlimits(&plan.confinement)?; // lowering needs no privilege; done while we may still be root
    let (uid, gid) = spec.process_ids();
    become_tenant_without_caps(uid, gid)?; // the tenant's host ids, no capability
    die_with_parent()?; // credential changes clear it
    make_private_tmp(spec)?; // as the tenant: its TMPDIR, the host's /tmp being shared
    let ready = confine(spec, &plan.confinement, pty, report)?; // terminal, Landlock, seccomp last
    ready.exec(spec, report)
}

/// A joining shim: a new command in the live sandbox, in its cgroup.
pub fn join(
    spec: SandboxSpec,
    target: Target,
    pty: Option<OwnedFd>,
    report: &mut File,
) -> Result<Exit, SetupError> {
    detach_from_caller()?; // as for create
    set_title("join", &spec.tenant.slug);
    let pidfd = join::pin_init(&target)?; // the leader is still the one its shim started
    let (got, disk) = outside::joined_cgroup(&spec, &target)?; // as the first command got it
    let has_image = disk.is_some();
    let plan = outside::plan(&spec, got, disk)?; // the first command's plan, charged to us, not the tenant
    join::enter_cgroup(&target)?; // the command and we count against its limits
    block_signals()?;
    become_subreaper()?; // the command's orphans stay ours, not the host init's
    if has_image {
        join::enter_mount_namespace(&pidfd)?; // where the leader's shim mounted the home's image
    }
    drop(pidfd);
    let child = fork_command(report, |report| command(&spec, &plan, pty, report))?;
    let exit = join::supervise(child, true, report);
    if target.cgroup.is_none() {
        kill_all_children(Path::new("/proc")); // no cgroup holds what the shell left behind
    }
    Ok(join::report_exit(exit, report))
}
