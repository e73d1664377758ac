//! What this host allows: user namespaces (and why not), cgroup layout,
//! seccomp, Landlock, newuidmap. Drives `warren doctor`.

use std::fs;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use serde::Serialize;

use crate::idmap::IdRange;
use crate::sys::{self, Forked};

/// One line of the report: does it work, and if not, why and how to fix it.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub ok: bool,
    pub detail: String,
    pub fix: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    pub kernel: String,
    pub user_namespaces: Check,
    pub id_mapping: Check,
    pub cgroups: Check,
    pub seccomp: Check,
    pub landlock: Check,
    pub newuidmap: Check,
}

impl HostReport {
    /// Whether the default isolation (the `namespaces` tier) is available.
    pub fn namespaces_available(&self) -> bool {
        self.user_namespaces.ok
    }
}

/// Probes the running host. Forks a short-lived child to try
/// `unshare(CLONE_NEWUSER)`, so call it from a single-threaded process.
pub fn probe() -> HostReport {
    let proc_root = Path::new("/proc");
    HostReport {
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        user_namespaces: user_namespaces(proc_root),
        id_mapping: id_mapping(proc_root),
        cgroups: cgroups(proc_root, Path::new("/sys/fs/cgroup")),
        seccomp: seccomp(proc_root),
        landlock: landlock(),
        newuidmap: newuidmap(),
    }
}

fn read_sysctl(proc_root: &Path, name: &str) -> Option<i64> {
    fs::read_to_string(proc_root.join("sys").join(name.replace('.', "/")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn try_unshare_user() -> Result<(), Errno> {
    match sys::fork_process()? {
        Forked::Child => {
            let code = match nix::sched::unshare(CloneFlags::CLONE_NEWUSER) {
                Ok(()) => 0,
                Err(e) => e as i32,
            };
            sys::exit_immediately(code)
        }
        Forked::Parent(pid) => match waitpid(pid, None)? {
            WaitStatus::Exited(_, 0) => Ok(()),
            WaitStatus::Exited(_, e) => Err(Errno::from_raw(e)),
            _ => Err(Errno::ECHILD),
        },
    }
}

fn user_namespaces(proc_root: &Path) -> Check {
    match try_unshare_user() {
        Ok(()) => Check {
            ok: true,
            detail: "unshare(CLONE_NEWUSER) works".into(),
            fix: None,
        },
        Err(e) => {
            let (detail, fix) = why_no_userns(proc_root, e);
            Check {
                ok: false,
                detail,
                fix: Some(fix),
            }
        }
    }
}

/// Turns an unshare failure into the host setting behind it.
pub fn why_no_userns(proc_root: &Path, e: Errno) -> (String, String) {
    let see = "see docs/hosts.md";
    if read_sysctl(proc_root, "user.max_user_namespaces") == Some(0) {
        return (
            "user namespaces are disabled: user.max_user_namespaces=0".into(),
            format!("sysctl -w user.max_user_namespaces=15000; {see}"),
        );
    }
    if read_sysctl(proc_root, "kernel.unprivileged_userns_clone") == Some(0) {
        return (
            "unprivileged user namespaces are disabled: kernel.unprivileged_userns_clone=0".into(),
            format!("sysctl -w kernel.unprivileged_userns_clone=1, or run warren as root; {see}"),
        );
    }
    if read_sysctl(proc_root, "kernel.apparmor_restrict_unprivileged_userns") == Some(1) {
        return (
            "user namespaces are restricted by AppArmor: kernel.apparmor_restrict_unprivileged_userns=1".into(),
            format!("install an AppArmor profile allowing userns for warren, or sysctl -w kernel.apparmor_restrict_unprivileged_userns=0; {see}"),
        );
    }
    let status = fs::read_to_string(proc_root.join("self/status")).unwrap_or_default();
    if status
        .lines()
        .any(|l| l.starts_with("Seccomp:") && l.trim_end().ends_with('2'))
    {
        return (
            format!("unshare(CLONE_NEWUSER) failed ({e}) and this process runs under a seccomp filter, as in most container platforms"),
            format!("run warren outside the container, or use --isolation landlock; {see}"),
        );
    }
    (
        format!("unshare(CLONE_NEWUSER) failed: {e}"),
        format!("check the kernel's CONFIG_USER_NS and user namespace limits; {see}"),
    )
}

fn id_mapping(proc_root: &Path) -> Check {
    match IdRange::of_current_process(proc_root) {
        IdRange::Any => Check {
            ok: true,
            detail: "root in the initial user namespace: each tenant gets its own host uid".into(),
            fix: None,
        },
        IdRange::Single { uid, gid } => Check {
            ok: true,
            detail: format!(
                "single id: every tenant maps to host uid {uid}/gid {gid}; tenants are kept apart by \
                 their mount namespaces, not by host file ownership"
            ),
            fix: Some(
                "run warren as root, or give this user /etc/subuid and /etc/subgid ranges \
                 (with newuidmap installed), for a distinct host uid per tenant"
                    .into(),
            ),
        },
        IdRange::Subordinate { uids, gids, .. } => Check {
            ok: true,
            detail: format!(
                "subordinate ids: each tenant gets its own host uid from {}+{} and gid from {}+{} \
                 (newuidmap/newgidmap)",
                uids.start, uids.count, gids.start, gids.count
            ),
            fix: None,
        },
    }
}

/// The cgroup layout and which limits this process could apply, asked of
/// the same driver that applies them.
fn cgroups(proc_root: &Path, cgroup_root: &Path) -> Check {
    use crate::cgroups::{Cgroups, Roots, Version};
    let roots = Roots {
        cgroup: cgroup_root.to_path_buf(),
        proc: proc_root.to_path_buf(),
    };
    match Cgroups::probe(&roots) {
        Ok(c) => {
            let a = c.availability();
            let layout = match a.version {
                Version::V2 => "cgroup v2",
                Version::V1 => "cgroup v1/hybrid",
            };
            Check {
                ok: a.complete(),
                detail: if a.complete() {
                    format!("{layout}: memory, cpu and pids limits can be applied")
                } else {
                    format!("{layout}: cannot apply the {} limit(s): {}", a.missing.join(", "), a.reasons.join("; "))
                },
                fix: (!a.complete()).then(|| {
                    "run as root, or give warren a delegated cgroup (systemd Delegate=yes); see docs/cgroups.md".into()
                }),
            }
        }
        Err(e) => Check {
            ok: false,
            detail: format!("cgroups: {e}"),
            fix: e.hint().map(String::from),
        },
    }
}

fn seccomp(proc_root: &Path) -> Check {
    let status = fs::read_to_string(proc_root.join("self/status")).unwrap_or_default();
    let has = status.lines().any(|l| l.starts_with("Seccomp:"));
    Check {
        ok: has,
        detail: if has {
            "seccomp filters supported".into()
        } else {
            "kernel without CONFIG_SECCOMP_FILTER".into()
        },
        fix: None,
    }
}

fn landlock() -> Check {
    let abi = sys::landlock_abi();
    Check {
        ok: abi > 0,
        detail: if abi > 0 {
            format!("Landlock ABI v{abi}")
        } else {
            "Landlock unavailable (not built or not in the lsm= list)".into()
        },
        fix: (abi == 0).then(|| "boot with lsm=...,landlock to get the second wall".into()),
    }
}

fn newuidmap() -> Check {
    let found = ["/usr/bin/newuidmap", "/bin/newuidmap"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    Check {
        ok: found.is_some(),
        detail: match &found {
            Some(p) => format!("{} present", p.display()),
            None => "newuidmap not installed".into(),
        },
        fix: found
            .is_none()
            .then(|| "apt-get install uidmap (only needed for subuid ranges)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_for_missing_user_namespaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        fs::create_dir_all(p.join("sys/user")).unwrap();
        fs::create_dir_all(p.join("sys/kernel")).unwrap();
        fs::create_dir_all(p.join("self")).unwrap();
        fs::write(
            p.join("sys/kernel/apparmor_restrict_unprivileged_userns"),
            "1\n",
        )
        .unwrap();
        assert!(why_no_userns(p, Errno::EPERM).0.contains("AppArmor"));
        fs::write(p.join("sys/user/max_user_namespaces"), "0\n").unwrap();
        assert!(why_no_userns(p, Errno::ENOSPC)
            .0
            .contains("max_user_namespaces=0"));
    }
}
