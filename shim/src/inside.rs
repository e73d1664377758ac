//! Steps of the sandbox's first process (the namespace tier's PID 1, the
//! other tiers' leader) before any command starts.

use std::os::unix::fs::MetadataExt;

use nix::unistd::{sethostname, setsid, Gid, Uid};
use warren_runtime::plan::Plan;
use warren_runtime::report::SetupError;
use warren_runtime::spec::SandboxSpec;
use warren_runtime::{caps, init, sys};

/// Unshares a cgroup namespace, where the kernel has them: called once in
/// our cgroup, which becomes its root.
pub fn unshare_cgroup_namespace(plan: &Plan) -> Result<(), SetupError> {
    if !plan.cgroup_namespace {
        return Ok(());
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
        .map_err(|e| SetupError::errno("unshare cgroup namespace", e))
}

pub fn set_no_new_privs() -> Result<(), SetupError> {
    sys::set_no_new_privs().map_err(|e| SetupError::errno("set no_new_privs", e))
}

pub fn set_non_dumpable() -> Result<(), SetupError> {
    sys::set_non_dumpable().map_err(|e| SetupError::errno("set non-dumpable", e))
}

/// Files we create must have an owner the namespace can represent (else
/// EOVERFLOW). Without a mapped root we become the sandbox user now: uid 0
/// is not mapped, so this keeps our capabilities. With subordinate ids our
/// own uid is root inside and already can.
pub fn become_user_for_mounts(spec: &SandboxSpec) -> Result<(), SetupError> {
    match spec.id_map.ns_root {
        None => caps::become_user_keeping_caps(spec.uid, spec.gid),
        Some(_) => Ok(()),
    }
}

/// With subordinate ids the server created the home as itself (root in
/// here); on first use it goes to the sandbox user, i.e. the tenant's own
/// host id. Only the home itself: it is empty the first time.
pub fn hand_home_to_tenant(spec: &SandboxSpec) -> Result<(), SetupError> {
    if spec.id_map.ns_root.is_none() {
        return Ok(());
    }
    let home = spec.home();
    let step = || format!("give {} to the sandbox user", home.display());
    let meta =
        std::fs::symlink_metadata(&home).map_err(|e| SetupError::new(step(), e.to_string()))?;
    if meta.uid() == 0 {
        let (uid, gid) = (Uid::from_raw(spec.uid), Gid::from_raw(spec.gid));
        nix::unistd::chown(&home, Some(uid), Some(gid))
            .map_err(|e| SetupError::errno(step(), e))?;
    }
    Ok(())
}

pub fn set_hostname(spec: &SandboxSpec) -> Result<(), SetupError> {
    sethostname(&spec.hostname).map_err(|e| SetupError::errno("set hostname", e))
}

pub fn loopback_up() -> Result<(), SetupError> {
    sys::loopback_up().map_err(|e| SetupError::errno("bring up lo", e))
}

/// Our own session: no controlling terminal shared with the caller.
pub fn new_session() -> Result<(), SetupError> {
    setsid()
        .map(drop)
        .map_err(|e| SetupError::errno("setsid", e))
}

/// Orphans of the command become ours, not the host init's.
pub fn become_subreaper() -> Result<(), SetupError> {
    init::become_subreaper().map_err(|e| SetupError::errno("become child subreaper", e))
}
