//! The shim's steps on the host, outside the sandbox: before it exists,
//! while releasing it, and after it ended.

use std::fs::File;
use std::path::Path;

use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use warren_runtime::cgroups::SandboxCgroup;
use warren_runtime::disk::DiskInForce;
use warren_runtime::init::{self, SignalTarget};
use warren_runtime::plan::{self, Plan};
use warren_runtime::record::LimitsInForce;
use warren_runtime::report::{self, Event, Exit, SetupError};
use warren_runtime::spec::SandboxSpec;
use warren_runtime::sys::{self, Forked};
use warren_runtime::{host, namespaces, network};

use crate::disk::{self, HomeDisk};
use crate::process::die_with_parent;
use crate::{join, limits};

/// Dies with our caller, keeps every inherited fd from the sandbox
/// (CVE-2024-21626) and drops host root's supplementary groups: they would
/// follow us in as unmapped groups that still grant access (an
/// unprivileged caller cannot drop its own and has setgroups denied inside
/// instead).
pub fn detach_from_caller() -> Result<(), SetupError> {
    die_with_parent()?;
    sys::cloexec_from(3).map_err(|e| SetupError::errno("mark inherited fds close-on-exec", e))?;
    if nix::unistd::geteuid().is_root() {
        let _ = sys::clear_supplementary_groups();
    }
    Ok(())
}

/// Creates the sandbox's cgroup, limits written and read back
/// ([`limits::create`]).
pub fn create_cgroup(spec: &SandboxSpec) -> Result<limits::Created, SetupError> {
    limits::create(spec)
}

/// What the cgroup of a live sandbox gives a command joining it: as the
/// caller recorded it, or worked out again ([`limits::expected`]); and the
/// home's disk limits, as recorded.
pub fn joined_cgroup(
    spec: &SandboxSpec,
    target: &join::Target,
) -> Result<(LimitsInForce, Option<DiskInForce>), SetupError> {
    Ok(match join::given_record(target)? {
        Some(record) => (record.limits, record.disk),
        None => (limits::expected(spec, target.cgroup.is_some()), None),
    })
}

/// Mounts the home's disk image over it, before anything binds the home
/// ([`disk::attach`]); unmounted when the value is dropped.
pub fn attach_disk(spec: &SandboxSpec) -> Result<HomeDisk, SetupError> {
    disk::attach(spec)
}

/// Probes the host and plans the whole sandbox ([`plan::build`]), with
/// the home's disk limits.
pub fn plan(
    spec: &SandboxSpec,
    cgroup: LimitsInForce,
    disk: Option<DiskInForce>,
) -> Result<Plan, SetupError> {
    let facts =
        host::facts(spec).map_err(|e| SetupError::new("find warren-shim", e.to_string()))?;
    let plan = plan::build_with_disk(spec, &facts, cgroup, disk)
        .map_err(|e| SetupError::new("describe sandbox", e.to_string()))?;
    let limits = &plan.info.sandbox.limits;
    if (spec.require_limits || spec.network.required)
        && limits.missing.iter().any(|m| m == network::MISSING)
    {
        let why = limits
            .reasons
            .get(network::MISSING)
            .cloned()
            .unwrap_or_default();
        return Err(SetupError::new(
            "give the sandbox its network",
            format!("cannot give public network: {why}"),
        )
        .with_hint("see docs/network.md; or start it with --network none"));
    }
    Ok(plan)
}

/// Sends the sandbox's record, once: the server shows it as it is
/// (`hello`, stats), and `warren-info` reads the same value.
pub fn report_record(created: &limits::Created, plan: &Plan, report: &mut File) {
    let _ = report::send(
        report,
        &Event::Sandbox {
            cgroup: created.id.clone(),
            record: Box::new(plan.info.sandbox.clone()),
        },
    );
}

/// One clone into the plan's new namespaces: the child is PID 1 of the new
/// pid namespace from its first instruction.
pub fn clone_into_namespaces(plan: &Plan) -> Result<Forked, SetupError> {
    sys::clone_process(plan.clone_flags).map_err(|e| {
        let (why, fix) = host::why_no_userns(Path::new("/proc"), e);
        let names = namespaces::names(plan.clone_flags).join(",");
        SetupError::errno(format!("create namespaces ({names})"), e)
            .with_message(why)
            .with_hint(fix)
    })
}

/// Forks the leader of a sandbox without namespaces.
pub fn fork_leader() -> Result<Forked, SetupError> {
    sys::clone_process(CloneFlags::empty()).map_err(|e| SetupError::errno("fork sandbox leader", e))
}

/// Puts the sandbox's first process in the cgroup; it waits for our
/// go-ahead, so it has not run anything yet.
pub fn enter_cgroup(cgroup: Option<&SandboxCgroup>, pid: Pid) -> Result<(), SetupError> {
    cgroup.map_or(Ok(()), |cg| limits::enter(cg, pid))
}

/// Passes `result` on; on failure first kills and reaps the sandbox's
/// first process, still waiting to be released.
pub fn or_kill(pid: Pid, result: Result<(), SetupError>) -> Result<(), SetupError> {
    if result.is_err() {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        init::wait_for(pid);
    }
    result
}

/// [`or_kill`] for a step that returns a value.
pub fn or_kill_with<T>(pid: Pid, result: Result<T, SetupError>) -> Result<T, SetupError> {
    match result {
        Ok(v) => Ok(v),
        Err(e) => or_kill(pid, Err(e)).map(|()| unreachable!("an error stays an error")),
    }
}

/// Waits for the sandbox's first process. It reports the command's own
/// exit; if it was killed itself it could not, so we do.
pub fn supervise(pid: Pid, report: &mut File) -> Exit {
    let exit = init::supervise(pid, SignalTarget::Process(pid), false);
    if let Exit::Signal(_) = exit {
        let _ = report::send(report, &Event::Exited { exit });
    }
    exit
}

/// Reports the limits that were hit and removes the cgroup.
pub fn remove_cgroup(cgroup: Option<SandboxCgroup>, spec: &SandboxSpec, report: &mut File) {
    if let Some(cg) = cgroup {
        limits::finish(cg, spec.limits, report);
    }
}
