//! Which namespaces a sandbox gets. Creation happens in one `clone` in the
//! shim ([`crate::sys::clone_process`]) so that the child is PID 1 of the new
//! pid namespace from its first instruction.

use std::path::Path;

use nix::sched::CloneFlags;

/// The namespaces every sandbox is created in. The cgroup namespace is added
/// when the kernel has one ([`with_cgroup_if_available`]).
pub fn sandbox_flags() -> CloneFlags {
    CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS
}

/// Whether the kernel has cgroup namespaces (`/proc/self/ns/cgroup`, 4.6+).
/// The sandbox's PID 1 unshares one after it was put in its cgroup, so that
/// cgroup, not the caller's, is what the sandbox sees as `/`.
pub fn cgroup_namespace_available(proc_root: &Path) -> bool {
    proc_root.join("self/ns/cgroup").exists()
}

/// Adds CLONE_NEWCGROUP when the kernel has cgroup namespaces.
pub fn with_cgroup_if_available(flags: CloneFlags, proc_root: &Path) -> CloneFlags {
    if cgroup_namespace_available(proc_root) {
        flags | CloneFlags::CLONE_NEWCGROUP
    } else {
        flags
    }
}

/// Names of the namespaces in `flags`, for reports and `warren doctor`.
pub fn names(flags: CloneFlags) -> Vec<&'static str> {
    [
        (CloneFlags::CLONE_NEWUSER, "user"),
        (CloneFlags::CLONE_NEWNS, "mount"),
        (CloneFlags::CLONE_NEWPID, "pid"),
        (CloneFlags::CLONE_NEWNET, "net"),
        (CloneFlags::CLONE_NEWIPC, "ipc"),
        (CloneFlags::CLONE_NEWUTS, "uts"),
        (CloneFlags::CLONE_NEWCGROUP, "cgroup"),
    ]
    .into_iter()
    .filter(|(f, _)| flags.contains(*f))
    .map(|(_, n)| n)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_namespace_only_when_present() {
        let d = tempfile::tempdir().unwrap();
        let f = with_cgroup_if_available(sandbox_flags(), d.path());
        assert_eq!(names(f), ["user", "mount", "pid", "net", "ipc", "uts"]);
        std::fs::create_dir_all(d.path().join("self/ns")).unwrap();
        std::fs::write(d.path().join("self/ns/cgroup"), "").unwrap();
        let f = with_cgroup_if_available(sandbox_flags(), d.path());
        assert!(names(f).contains(&"cgroup"));
    }
}
