//! What this host allows: user namespaces (and why not), cgroup layout,
//! seccomp, Landlock, newuidmap. Drives `warren doctor` and the choice of
//! the isolation tier ([`choose_tier`]).

use std::fs;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use serde::Serialize;

use crate::idmap::IdRange;
use crate::spec::Isolation;
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
    /// The kernel's Landlock ABI (0: none).
    pub landlock_abi: u32,
    pub newuidmap: Check,
}

impl HostReport {
    /// Whether the default isolation (the `namespaces` tier) is available.
    pub fn namespaces_available(&self) -> bool {
        self.user_namespaces.ok
    }

    /// What the tier choice needs from this report.
    pub fn isolation(&self) -> IsolationSupport {
        IsolationSupport {
            user_namespaces: self.user_namespaces.clone(),
            landlock_abi: self.landlock_abi,
        }
    }
}

/// What decides the isolation tier: whether user namespaces can be created
/// (and if not, why), and the Landlock ABI.
#[derive(Debug, Clone, Serialize)]
pub struct IsolationSupport {
    pub user_namespaces: Check,
    pub landlock_abi: u32,
}

/// Only what the tier choice needs, without the rest of [`probe`]. Forks
/// (see [`probe`]): call it before starting threads.
pub fn probe_isolation() -> IsolationSupport {
    IsolationSupport {
        user_namespaces: user_namespaces(Path::new("/proc")),
        landlock_abi: sys::landlock_abi(),
    }
}

/// `--isolation`: a tier by name, or the strongest this host allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierRequest {
    Auto,
    Exactly(Isolation),
}

/// The tier to use, and why, in one line for the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TierChoice {
    pub isolation: Isolation,
    pub why: String,
    /// Said loudly whenever this tier is in use (`none`; `landlock` where
    /// signals are not scoped).
    pub warning: Option<String>,
}

/// No tier that was asked for (or, with `auto`, none at all) is available.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TierError {
    #[error("--isolation namespaces: {why}")]
    NoNamespaces { why: String, fix: String },
    #[error(
        "--isolation landlock: this kernel has no Landlock (not built, or not in the lsm= list)"
    )]
    NoLandlock,
    #[error(
        "no isolation is available on this host: {why}, and the kernel has no Landlock for the \
         landlock tier"
    )]
    NothingAvailable { why: String, fix: String },
}

impl TierError {
    /// How to fix the host.
    pub fn hint(&self) -> String {
        match self {
            TierError::NoNamespaces { fix, .. } if fix.contains("--isolation landlock") => {
                fix.clone()
            }
            TierError::NoNamespaces { fix, .. } => {
                format!("{fix}; or use --isolation landlock (weaker, see docs/security.md)")
            }
            TierError::NoLandlock => "boot with lsm=...,landlock, or use --isolation none \
                                      (no isolation, development only)"
                .into(),
            TierError::NothingAvailable { fix, .. } => format!(
                "{fix}; or boot with lsm=...,landlock; --isolation none runs without isolation \
                 (development only)"
            ),
        }
    }
}

/// The ABI that scopes signals and abstract sockets to the sandbox.
pub const LANDLOCK_SCOPE_ABI: u32 = 6;

/// Picks the tier: `auto` takes the strongest the host allows (namespaces,
/// else landlock) and never `none`; a tier asked for by name is checked.
pub fn choose_tier(req: TierRequest, host: &IsolationSupport) -> Result<TierChoice, TierError> {
    let userns = &host.user_namespaces;
    let landlock = |why: String| {
        let abi = host.landlock_abi;
        let warning = (abi < LANDLOCK_SCOPE_ABI).then(|| {
            format!(
                "Landlock ABI {abi} cannot scope signals (ABI {LANDLOCK_SCOPE_ABI}, Linux 6.12): \
                 where tenants share one uid they can signal each other's processes"
            )
        });
        TierChoice {
            isolation: Isolation::Landlock,
            why: format!("{why}; Landlock ABI {abi} confines the filesystem"),
            warning,
        }
    };
    match req {
        TierRequest::Auto if userns.ok => Ok(TierChoice {
            isolation: Isolation::Namespaces,
            why: "user namespaces are available".into(),
            warning: None,
        }),
        TierRequest::Auto if host.landlock_abi > 0 => Ok(landlock(format!(
            "user namespaces are unavailable ({})",
            userns.detail
        ))),
        TierRequest::Auto => Err(TierError::NothingAvailable {
            why: userns.detail.clone(),
            fix: userns.fix.clone().unwrap_or_default(),
        }),
        TierRequest::Exactly(Isolation::Namespaces) if userns.ok => Ok(TierChoice {
            isolation: Isolation::Namespaces,
            why: "asked for; user namespaces are available".into(),
            warning: None,
        }),
        TierRequest::Exactly(Isolation::Namespaces) => Err(TierError::NoNamespaces {
            why: userns.detail.clone(),
            fix: userns.fix.clone().unwrap_or_default(),
        }),
        TierRequest::Exactly(Isolation::Landlock) if host.landlock_abi > 0 => {
            Ok(landlock("asked for".into()))
        }
        TierRequest::Exactly(Isolation::Landlock) => Err(TierError::NoLandlock),
        TierRequest::Exactly(Isolation::None) => Ok(TierChoice {
            isolation: Isolation::None,
            why: "asked for by name".into(),
            warning: Some(
                "commands run with no confinement besides their working directory and \
                 environment (development only)"
                    .into(),
            ),
        }),
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
        landlock_abi: sys::landlock_abi(),
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
        fix: (abi == 0).then(|| {
            "boot with lsm=...,landlock to get the second wall (and the landlock tier)".into()
        }),
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

    fn support(userns: bool, abi: u32) -> IsolationSupport {
        IsolationSupport {
            user_namespaces: Check {
                ok: userns,
                detail: if userns {
                    "unshare(CLONE_NEWUSER) works".into()
                } else {
                    "user namespaces are disabled: user.max_user_namespaces=0".into()
                },
                fix: (!userns).then(|| "sysctl -w user.max_user_namespaces=15000".into()),
            },
            landlock_abi: abi,
        }
    }

    #[test]
    fn auto_picks_the_strongest_tier_and_never_none() {
        use Isolation::{Landlock, Namespaces};
        let auto = |u, a| choose_tier(TierRequest::Auto, &support(u, a));
        assert_eq!(auto(true, 7).unwrap().isolation, Namespaces);
        assert_eq!(auto(true, 0).unwrap().isolation, Namespaces);
        let c = auto(false, 7).unwrap();
        assert_eq!(c.isolation, Landlock);
        assert!(c.why.contains("max_user_namespaces=0"), "{}", c.why);
        assert!(c.why.contains("Landlock ABI 7"), "{}", c.why);
        assert_eq!(c.warning, None);
        // Without signal scoping it still runs, and says what is missing.
        let old = auto(false, 3).unwrap();
        assert_eq!(old.isolation, Landlock);
        assert!(old.warning.unwrap().contains("signal"));
        let e = auto(false, 0).unwrap_err();
        assert!(matches!(e, TierError::NothingAvailable { .. }));
        assert!(e.hint().contains("--isolation none"), "{}", e.hint());
    }

    #[test]
    fn a_tier_asked_for_by_name_is_checked() {
        use Isolation::{Landlock, Namespaces};
        let named = |i, u, a| choose_tier(TierRequest::Exactly(i), &support(u, a));
        assert_eq!(named(Namespaces, true, 0).unwrap().isolation, Namespaces);
        let e = named(Namespaces, false, 7).unwrap_err();
        assert!(e.to_string().contains("max_user_namespaces=0"), "{e}");
        assert!(e.hint().contains("--isolation landlock"), "{}", e.hint());
        // Landlock by name also where namespaces would work.
        assert_eq!(named(Landlock, true, 7).unwrap().isolation, Landlock);
        assert_eq!(named(Landlock, true, 0).unwrap_err(), TierError::NoLandlock);
        let none = named(Isolation::None, true, 7).unwrap();
        assert_eq!(none.isolation, Isolation::None);
        assert!(none.warning.unwrap().contains("development only"));
    }

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
