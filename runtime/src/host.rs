//! What this host allows: user namespaces (and why not), cgroup layout
//! (and how to get a delegated subtree), seccomp, Landlock, newuidmap.
//! Drives `warren doctor` and the choice of the isolation tier
//! ([`choose_tier`]).
//!
//! The probes that touch the kernel are thin; what they found is turned into
//! words by pure functions that take a proc root / cgroup root, so the
//! explanations are unit-tested on fake trees (see the tests below).

use std::fs;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use serde::Serialize;

use crate::cgroups::{Availability, Version, LIMITED};
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
        user_namespaces: user_namespaces(Path::new("/proc"), try_user_namespace()),
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

/// Probes the running host. Forks a short-lived child to try a user
/// namespace, so call it from a single-threaded process.
pub fn probe() -> HostReport {
    let proc_root = Path::new("/proc");
    let who = Who::of_current_process(proc_root);
    HostReport {
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        user_namespaces: user_namespaces(proc_root, try_user_namespace()),
        id_mapping: id_mapping(proc_root),
        cgroups: cgroups(
            proc_root,
            Path::new("/sys/fs/cgroup"),
            who,
            systemd_booted(Path::new("/run")),
        ),
        seccomp: seccomp(proc_root),
        landlock: landlock(),
        landlock_abi: sys::landlock_abi(),
        newuidmap: newuidmap(),
    }
}

/// What a sandbox of `spec` can get on this host, for [`crate::plan::build`]:
/// cgroup namespaces, the Landlock ABI, the host's name, our uid, where
/// this shim and `warren-info` are, and the host paths the mount plan
/// looks at. Fails only when the running binary cannot be found.
pub fn facts(spec: &crate::spec::SandboxSpec) -> std::io::Result<crate::plan::HostFacts> {
    let shim_exe = std::env::current_exe()?;
    let info_tool = shim_exe.with_file_name(crate::info::INFO_TOOL);
    Ok(crate::plan::HostFacts {
        cgroup_namespace: crate::namespaces::cgroup_namespace_available(Path::new("/proc")),
        landlock_abi: sys::landlock_abi(),
        hostname: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
        caller_uid: nix::unistd::getuid().as_raw(),
        info_tool: info_tool.is_file().then_some(info_tool),
        shim_exe,
        files: crate::mounts::HostFiles::probe(spec, Path::new("/")),
        network: match spec.network.mode {
            crate::network::NetworkMode::Public => crate::network::probe(),
            crate::network::NetworkMode::None => crate::network::NetworkFacts::default(),
        },
    })
}

/// `warren doctor`'s answer: can this host give `public` in `tier`, and if
/// not, why and how to fix it.
pub fn network_check(tier: crate::spec::Isolation, facts: &crate::network::NetworkFacts) -> Check {
    match crate::network::why_missing(tier, facts) {
        None => Check {
            ok: true,
            detail: format!(
                "public available: pasta {}, nft {}, {} host address(es) refused to sandboxes",
                facts.pasta.as_deref().unwrap_or(Path::new("?")).display(),
                facts.nft.as_deref().unwrap_or(Path::new("?")).display(),
                facts.host_addrs.len()
            ),
            fix: None,
        },
        Some(why) => Check {
            ok: false,
            detail: format!("public not available: {why}"),
            fix: Some(match tier {
                crate::spec::Isolation::Namespaces if facts.pasta.is_none() => "apt-get install passt".into(),
                crate::spec::Isolation::Namespaces if facts.nft.is_none() => "apt-get install nftables".into(),
                crate::spec::Isolation::Namespaces => "give the host a default route (ip route)".into(),
                _ => "allow user namespaces (see the user namespaces line), or run with --network none"
                    .into(),
            }),
        },
    }
}

/// Who this process is, as far as cgroup delegation is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// Real root in the initial user namespace.
    Root,
    /// An unprivileged user.
    User { uid: u32 },
    /// Root inside a user namespace (`unshare --user --map-root-user`);
    /// `outer_uid` is the host uid that root maps to, when it is one uid.
    RootInUserns { outer_uid: Option<u32> },
}

impl Who {
    pub fn of_current_process(proc_root: &Path) -> Who {
        match IdRange::of_current_process(proc_root) {
            IdRange::Any => Who::Root,
            IdRange::Single { uid, .. } | IdRange::Subordinate { uid, .. } if uid != 0 => {
                Who::User { uid }
            }
            _ => Who::RootInUserns {
                outer_uid: outer_uid_of_root(
                    &fs::read_to_string(proc_root.join("self/uid_map")).unwrap_or_default(),
                ),
            },
        }
    }
}

/// The host uid that uid 0 maps to, from a `uid_map` ("0 1000 1").
fn outer_uid_of_root(uid_map: &str) -> Option<u32> {
    uid_map.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        match f.as_slice() {
            ["0", outer, _] => outer.parse().ok(),
            _ => None,
        }
    })
}

/// Whether systemd is the init system (its own test: `/run/systemd/system`
/// exists, as in sd_booted(3)).
pub fn systemd_booted(run_root: &Path) -> bool {
    run_root.join("systemd/system").is_dir()
}

fn read_sysctl(proc_root: &Path, name: &str) -> Option<i64> {
    fs::read_to_string(proc_root.join("sys").join(name.replace('.', "/")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// What trying a user namespace found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsernsProbe {
    /// Created, and a capability inside it works (it could make a mount
    /// namespace).
    Works,
    /// `unshare(CLONE_NEWUSER)` itself failed.
    CreateFailed(Errno),
    /// The namespace was created but could not be used: making a mount
    /// namespace inside it failed (its capabilities are denied, or mount
    /// namespaces are disabled). Ubuntu's AppArmor restriction does
    /// exactly this (creation allowed, then the `unprivileged_userns`
    /// profile denies every capability), so testing creation alone would
    /// report a working host where no sandbox can start.
    UnusableInside(Errno),
}

/// Forks a child that tries `unshare(CLONE_NEWUSER)` and then
/// `unshare(CLONE_NEWNS)` inside it (which needs CAP_SYS_ADMIN in the new
/// namespace). The child exits with 0, the errno of the first step, or 128
/// plus the errno of the second.
fn try_user_namespace() -> UsernsProbe {
    const SECOND: i32 = 128;
    let forked = match sys::fork_process() {
        Ok(f) => f,
        Err(e) => return UsernsProbe::CreateFailed(e),
    };
    match forked {
        Forked::Child => {
            let code = match nix::sched::unshare(CloneFlags::CLONE_NEWUSER) {
                Err(e) => (e as i32).clamp(1, SECOND - 1),
                Ok(()) => match nix::sched::unshare(CloneFlags::CLONE_NEWNS) {
                    Ok(()) => 0,
                    Err(e) => SECOND + (e as i32).clamp(1, 127),
                },
            };
            sys::exit_immediately(code)
        }
        Forked::Parent(pid) => match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, 0)) => UsernsProbe::Works,
            Ok(WaitStatus::Exited(_, c)) if c >= SECOND => {
                UsernsProbe::UnusableInside(Errno::from_raw(c - SECOND))
            }
            Ok(WaitStatus::Exited(_, c)) => UsernsProbe::CreateFailed(Errno::from_raw(c)),
            Ok(_) => UsernsProbe::CreateFailed(Errno::ECHILD),
            Err(e) => UsernsProbe::CreateFailed(e),
        },
    }
}

/// The `user namespaces` line of the report for what the probe found.
pub fn user_namespaces(proc_root: &Path, found: UsernsProbe) -> Check {
    let (detail, fix) = match found {
        UsernsProbe::Works => {
            return Check {
                ok: true,
                detail: "user namespaces work (created one and made a mount namespace in it)"
                    .into(),
                fix: None,
            }
        }
        UsernsProbe::CreateFailed(e) => why_no_userns(proc_root, e),
        UsernsProbe::UnusableInside(e) => why_no_caps_in_userns(proc_root, e),
    };
    Check {
        ok: false,
        detail,
        fix: Some(fix),
    }
}

/// Turns an unshare failure into the host setting behind it.
pub fn why_no_userns(proc_root: &Path, e: Errno) -> (String, String) {
    let see = "see docs/hosts.md";
    if let Some(found) = namespace_kind_disabled(proc_root) {
        return found;
    }
    if read_sysctl(proc_root, "kernel.unprivileged_userns_clone") == Some(0) {
        return (
            "unprivileged user namespaces are disabled: kernel.unprivileged_userns_clone=0".into(),
            format!("sysctl -w kernel.unprivileged_userns_clone=1, or run warren as root; {see}"),
        );
    }
    if apparmor_restricts_userns(proc_root) {
        return apparmor_restriction(e);
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

/// The sandbox needs every namespace kind; `user.max_<kind>_namespaces=0`
/// makes creating that kind fail with ENOSPC.
fn namespace_kind_disabled(proc_root: &Path) -> Option<(String, String)> {
    ["user", "mnt", "pid", "net", "ipc", "uts", "cgroup"]
        .iter()
        .map(|kind| format!("user.max_{kind}_namespaces"))
        .find(|name| read_sysctl(proc_root, name) == Some(0))
        .map(|name| {
            (
                format!("namespaces are disabled: {name}=0"),
                format!("sysctl -w {name}=15000 (persist it in /etc/sysctl.d/); see docs/hosts.md"),
            )
        })
}

/// A user namespace could be created but not used.
fn why_no_caps_in_userns(proc_root: &Path, e: Errno) -> (String, String) {
    if let Some(found) = namespace_kind_disabled(proc_root) {
        return found;
    }
    if apparmor_restricts_userns(proc_root) {
        return apparmor_restriction(e);
    }
    (
        format!(
            "a user namespace was created but its capabilities are denied (a mount namespace \
             inside it failed: {e}); a security module or seccomp filter restricts user namespaces"
        ),
        "check the host's LSM policy (AppArmor, SELinux) for user namespaces, or run warren as \
         root; see docs/hosts.md"
            .into(),
    )
}

/// Ubuntu 23.10+ (on by default since 24.04).
fn apparmor_restricts_userns(proc_root: &Path) -> bool {
    read_sysctl(proc_root, "kernel.apparmor_restrict_unprivileged_userns") == Some(1)
}

fn apparmor_restriction(e: Errno) -> (String, String) {
    let warren = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/local/bin/warren"));
    let shim = crate::launch::shim_path();
    (
        format!(
            "user namespaces are restricted by AppArmor: \
             kernel.apparmor_restrict_unprivileged_userns=1 ({e})"
        ),
        format!(
            "allow them for warren with this AppArmor profile in /etc/apparmor.d/warren, then \
             `apparmor_parser -r /etc/apparmor.d/warren`:\n{}\
             or run warren as root; the blunt alternative (for every program) is \
             sysctl -w kernel.apparmor_restrict_unprivileged_userns=0; see docs/hosts.md",
            apparmor_profile(&warren, &shim)
        ),
    )
}

/// An AppArmor profile that lets the warren binaries (the server probes,
/// the shim creates the sandboxes) create user namespaces and leaves them
/// otherwise unconfined, as Ubuntu's own profiles for such programs do.
pub fn apparmor_profile(warren: &Path, shim: &Path) -> String {
    let attach = match (warren.parent(), warren.file_name(), shim.file_name()) {
        (Some(dir), Some(w), Some(s)) if shim.parent() == Some(dir) => format!(
            "{}/{{{},{}}}",
            apparmor_path(&dir.to_string_lossy()),
            apparmor_path(&w.to_string_lossy()),
            apparmor_path(&s.to_string_lossy())
        ),
        _ => format!(
            "{{{},{}}}",
            apparmor_path(&warren.to_string_lossy()),
            apparmor_path(&shim.to_string_lossy())
        ),
    };
    let attach = if attach.contains(char::is_whitespace) {
        format!("\"{attach}\"")
    } else {
        attach
    };
    format!(
        "abi <abi/4.0>,\n\
         include <tunables/global>\n\
         profile warren {attach} flags=(unconfined) {{\n  userns,\n  \
         include if exists <local/warren>\n}}\n"
    )
}

/// Escapes AppArmor's glob characters in a literal path.
fn apparmor_path(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for c in p.chars() {
        if matches!(c, '{' | '}' | '[' | ']' | '*' | '?' | '\\' | '"' | ',') {
            out.push('\\');
        }
        out.push(c);
    }
    out
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
        IdRange::Delegated { uids, gids } => Check {
            ok: true,
            detail: format!(
                "root in a user namespace with more ids than its own: each tenant gets its own \
                 id from {}+{} (gids {}+{}) of this namespace, never root",
                uids.start, uids.count, gids.start, gids.count
            ),
            fix: None,
        },
        range @ IdRange::ParentRootOnly => Check {
            ok: false,
            detail: "root in a user namespace whose only id is the host's root: every tenant \
                     would run as host uid 0, so sandboxes are refused"
                .into(),
            fix: range.refusal().map(|e| {
                let e = e.to_string();
                let how = e.find("start it under").map_or(e.as_str(), |i| &e[i..]);
                how.to_string()
            }),
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
/// the same driver that applies them; when some are missing, how to get a
/// cgroup subtree warren may manage on this kind of host.
pub fn cgroups(proc_root: &Path, cgroup_root: &Path, who: Who, systemd: bool) -> Check {
    use crate::cgroups::{Cgroups, Roots};
    let roots = Roots {
        cgroup: cgroup_root.to_path_buf(),
        proc: proc_root.to_path_buf(),
    };
    match Cgroups::probe(&roots) {
        Ok(c) => {
            let a = c.availability();
            let user_manager = match (a.version, who) {
                (Version::V2, Who::User { uid }) => user_manager_controllers(cgroup_root, uid),
                (
                    Version::V2,
                    Who::RootInUserns {
                        outer_uid: Some(uid),
                    },
                ) => user_manager_controllers(cgroup_root, uid),
                _ => None,
            };
            cgroups_check(&a, who, systemd, user_manager.as_deref())
        }
        Err(e) => Check {
            ok: false,
            detail: format!("cgroups: {e}"),
            fix: e.hint().map(String::from),
        },
    }
}

/// The controllers systemd gives the user's manager (`user@UID.service`)
/// on cgroup v2, which is all a rootless service or scope can be delegated;
/// `None` when there is no such cgroup (no systemd, or no user manager).
pub fn user_manager_controllers(cgroup_root: &Path, uid: u32) -> Option<Vec<String>> {
    let file = cgroup_root
        .join("user.slice")
        .join(format!("user-{uid}.slice"))
        .join(format!("user@{uid}.service"))
        .join("cgroup.controllers");
    let s = fs::read_to_string(file).ok()?;
    Some(s.split_whitespace().map(String::from).collect())
}

/// The `cgroups` line of the report from the driver's answer.
pub fn cgroups_check(
    a: &Availability,
    who: Who,
    systemd: bool,
    user_manager: Option<&[String]>,
) -> Check {
    let layout = match a.version {
        Version::V2 => "cgroup v2",
        Version::V1 => "cgroup v1/hybrid",
    };
    if a.complete() {
        return Check {
            ok: true,
            detail: format!("{layout}: memory, cpu and pids limits can be applied"),
            fix: None,
        };
    }
    Check {
        ok: false,
        detail: format!(
            "{layout}: cannot apply the {} limit(s): {}",
            a.missing.join(", "),
            a.reasons.join("; ")
        ),
        fix: Some(delegation_fix(a.version, who, systemd, user_manager)),
    }
}

/// How to get a cgroup subtree this process may manage, by host kind.
pub fn delegation_fix(
    version: Version,
    who: Who,
    systemd: bool,
    user_manager: Option<&[String]>,
) -> String {
    let see = "see docs/hosts.md and docs/cgroups.md";
    match (version, who) {
        (Version::V1, Who::Root) => format!(
            "the reason above names the missing piece; as a service, use deploy/warren.service \
             (Delegate=yes keeps systemd out of warren's cgroups); {see}"
        ),
        (Version::V1, _) => format!(
            "on cgroup v1 the controller hierarchies belong to root, and systemd never delegates \
             them to other users (delegation is not safe on v1): run warren as root \
             (deploy/warren.service), or boot the host with cgroup v2 \
             (systemd.unified_cgroup_hierarchy=1) and use a delegated cgroup; until then \
             sandboxes run without these limits (--require-limits refuses to); {see}"
        ),
        (Version::V2, Who::Root) if systemd => format!(
            "give warren a cgroup of its own: run `warren serve` as a service with Delegate=yes \
             (deploy/warren.service), and start a one-shot run as \
             `systemd-run --scope -p Delegate=yes warren run ...`; {see}"
        ),
        (Version::V2, Who::Root) => format!(
            "give warren a cgroup of its own: mkdir /sys/fs/cgroup/warren, move the shell that \
             starts warren there (echo $$ > /sys/fs/cgroup/warren/cgroup.procs), then start \
             warren from it; {see}"
        ),
        (Version::V2, Who::User { uid }) if systemd => {
            let mut fix = String::from(
                "start warren in a cgroup delegated by your systemd user manager: \
                 `systemd-run --user --scope -p Delegate=yes warren serve ...`, or install \
                 deploy/warren-user.service (systemctl --user; `loginctl enable-linger` keeps \
                 it running without a login)",
            );
            fix.push_str(&user_manager_note(uid, user_manager));
            fix.push_str(&format!("; {see}"));
            fix
        }
        (Version::V2, Who::User { .. }) => format!(
            "without systemd, root must delegate a cgroup: create one, chown it and its \
             cgroup.procs, cgroup.subtree_control and cgroup.threads to this user, and start \
             warren inside it; {see}"
        ),
        (Version::V2, Who::RootInUserns { outer_uid }) => {
            let mut fix = "cgroupfs belongs to the user who ran unshare, not to root in this \
                 namespace: start the job in a cgroup delegated to that user, e.g. \
                 `systemd-run --user --scope -p Delegate=yes unshare --user --map-root-user ...` \
                 (a delegated cgroup is owned by that user, who is root in here)"
                .to_string();
            if let Some(uid) = outer_uid {
                fix.push_str(&user_manager_note(uid, user_manager));
            }
            fix.push_str(&format!("; {see}"));
            fix
        }
    }
}

/// What the user manager lacks, when it lacks something we limit.
fn user_manager_note(uid: u32, controllers: Option<&[String]>) -> String {
    let Some(have) = controllers else {
        return String::new();
    };
    let lacking: Vec<&str> = LIMITED
        .iter()
        .copied()
        .filter(|c| !have.iter().any(|h| h == c))
        .collect();
    if lacking.is_empty() {
        return String::new();
    }
    format!(
        ". Your user manager (user@{uid}.service) is not given the {} controller(s), so it cannot \
         delegate them: as root, write `[Service]` and `Delegate=pids memory cpu` to \
         /etc/systemd/system/user@.service.d/delegate.conf, run `systemctl daemon-reload`, then \
         log out and in again",
        lacking.join(", ")
    )
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

    /// A fake /proc with the given sysctls (`"user.max_user_namespaces"`)
    /// and a /proc/self/status with the given Seccomp mode.
    fn fake_proc(sysctls: &[(&str, &str)], seccomp: u8) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, value) in sysctls {
            let file = d.path().join("sys").join(name.replace('.', "/"));
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(file, format!("{value}\n")).unwrap();
        }
        fs::create_dir_all(d.path().join("self")).unwrap();
        fs::write(
            d.path().join("self/status"),
            format!("Name:\twarren\nSeccomp:\t{seccomp}\n"),
        )
        .unwrap();
        d
    }

    #[test]
    fn user_namespaces_that_work_are_ok() {
        let p = fake_proc(&[], 0);
        let c = user_namespaces(p.path(), UsernsProbe::Works);
        assert!(c.ok && c.fix.is_none(), "{c:?}");
    }

    #[test]
    fn max_user_namespaces_zero() {
        let p = fake_proc(&[("user.max_user_namespaces", "0")], 0);
        let c = user_namespaces(p.path(), UsernsProbe::CreateFailed(Errno::ENOSPC));
        assert!(!c.ok);
        assert!(c.detail.contains("user.max_user_namespaces=0"), "{c:?}");
        assert!(c
            .fix
            .unwrap()
            .contains("sysctl -w user.max_user_namespaces="));
        // A namespace kind the sandbox needs, disabled in the same way.
        let p = fake_proc(&[("user.max_mnt_namespaces", "0")], 0);
        let c = user_namespaces(p.path(), UsernsProbe::UnusableInside(Errno::ENOSPC));
        assert!(c.detail.contains("user.max_mnt_namespaces=0"), "{c:?}");
    }

    #[test]
    fn unprivileged_userns_clone_zero() {
        let p = fake_proc(
            &[
                ("user.max_user_namespaces", "63000"),
                ("kernel.unprivileged_userns_clone", "0"),
            ],
            0,
        );
        let c = user_namespaces(p.path(), UsernsProbe::CreateFailed(Errno::EPERM));
        assert!(
            c.detail.contains("kernel.unprivileged_userns_clone=0"),
            "{c:?}"
        );
        assert!(c
            .fix
            .unwrap()
            .contains("sysctl -w kernel.unprivileged_userns_clone=1"));
    }

    /// Ubuntu 24.04 lets the namespace be created and denies its
    /// capabilities; older policy (no `unprivileged_userns` profile) denies
    /// the creation. Both are the AppArmor restriction, and the fix is a
    /// profile for the warren binaries.
    #[test]
    fn apparmor_restriction_either_way() {
        let p = fake_proc(
            &[
                ("user.max_user_namespaces", "63000"),
                ("kernel.apparmor_restrict_unprivileged_userns", "1"),
            ],
            0,
        );
        for found in [
            UsernsProbe::UnusableInside(Errno::EPERM),
            UsernsProbe::CreateFailed(Errno::EACCES),
        ] {
            let c = user_namespaces(p.path(), found);
            assert!(!c.ok);
            assert!(
                c.detail
                    .contains("kernel.apparmor_restrict_unprivileged_userns=1"),
                "{c:?}"
            );
            let fix = c.fix.unwrap();
            assert!(fix.contains("/etc/apparmor.d/warren"), "{fix}");
            assert!(fix.contains("  userns,\n"), "{fix}");
            assert!(fix.contains("apparmor_parser -r"), "{fix}");
        }
    }

    #[test]
    fn capabilities_denied_without_apparmor_says_so() {
        let p = fake_proc(&[("kernel.apparmor_restrict_unprivileged_userns", "0")], 0);
        let c = user_namespaces(p.path(), UsernsProbe::UnusableInside(Errno::EPERM));
        assert!(!c.ok);
        assert!(c.detail.contains("capabilities are denied"), "{c:?}");
        assert!(!c.detail.contains("AppArmor:"), "{c:?}");
    }

    #[test]
    fn seccomp_filtered_container() {
        let p = fake_proc(&[("user.max_user_namespaces", "63000")], 2);
        let c = user_namespaces(p.path(), UsernsProbe::CreateFailed(Errno::EPERM));
        assert!(c.detail.contains("seccomp filter"), "{c:?}");
        assert!(c.fix.unwrap().contains("--isolation landlock"));
    }

    #[test]
    fn apparmor_profile_text() {
        let text = apparmor_profile(
            Path::new("/usr/local/bin/warren"),
            Path::new("/usr/local/bin/warren-shim"),
        );
        assert_eq!(
            text,
            "abi <abi/4.0>,\ninclude <tunables/global>\n\
             profile warren /usr/local/bin/{warren,warren-shim} flags=(unconfined) {\n  userns,\n  \
             include if exists <local/warren>\n}\n"
        );
        // The shim somewhere else; glob characters and spaces in paths.
        let text = apparmor_profile(Path::new("/opt/w arren/warren"), Path::new("/x/sh{im}"));
        assert!(
            text.contains("profile warren \"{/opt/w arren/warren,/x/sh\\{im\\}}\" flags="),
            "{text}"
        );
    }

    #[test]
    fn who_from_uid_map() {
        assert_eq!(
            outer_uid_of_root("         0       1000          1\n"),
            Some(1000)
        );
        assert_eq!(
            outer_uid_of_root("         0          0 4294967295\n"),
            Some(0)
        );
        assert_eq!(
            outer_uid_of_root("      1000       1000          1\n"),
            None
        );
    }

    #[test]
    fn systemd_is_detected_by_run_systemd_system() {
        let d = tempfile::tempdir().unwrap();
        assert!(!systemd_booted(d.path()));
        fs::create_dir_all(d.path().join("systemd/system")).unwrap();
        assert!(systemd_booted(d.path()));
    }

    fn missing(version: Version, why: &str) -> Availability {
        Availability {
            version,
            missing: LIMITED.to_vec(),
            reasons: LIMITED.iter().map(|_| why.to_string()).collect(),
        }
    }

    const NOT_WRITABLE: &str = "cannot write /sys/fs/cgroup/user.slice/cgroup.procs: the cgroup \
        belongs to another user (rootless without delegation, or root inside a user namespace)";

    #[test]
    fn complete_limits_need_no_fix() {
        let a = Availability {
            version: Version::V2,
            missing: vec![],
            reasons: vec![],
        };
        let c = cgroups_check(&a, Who::User { uid: 1000 }, true, None);
        assert!(c.ok && c.fix.is_none(), "{c:?}");
    }

    #[test]
    fn rootless_on_v2_gets_a_delegated_scope_or_the_user_unit() {
        let a = missing(Version::V2, NOT_WRITABLE);
        let c = cgroups_check(&a, Who::User { uid: 1000 }, true, None);
        assert!(!c.ok);
        assert!(c.detail.contains("memory, cpu, pids") && c.detail.contains("cannot write"));
        let fix = c.fix.unwrap();
        assert!(
            fix.contains("systemd-run --user --scope -p Delegate=yes warren serve"),
            "{fix}"
        );
        assert!(fix.contains("deploy/warren-user.service"), "{fix}");
        assert!(!fix.contains("user@1000.service"), "{fix}");
    }

    #[test]
    fn rootless_on_v2_is_told_when_the_user_manager_lacks_cpu() {
        let cg = tempfile::tempdir().unwrap();
        let dir = cg
            .path()
            .join("user.slice/user-1000.slice/user@1000.service");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("cgroup.controllers"), "memory pids\n").unwrap();
        let have = user_manager_controllers(cg.path(), 1000).unwrap();
        assert_eq!(have, ["memory", "pids"]);
        assert_eq!(user_manager_controllers(cg.path(), 1001), None);
        let a = missing(Version::V2, NOT_WRITABLE);
        let fix = cgroups_check(&a, Who::User { uid: 1000 }, true, Some(&have))
            .fix
            .unwrap();
        assert!(
            fix.contains("user@1000.service) is not given the cpu controller"),
            "{fix}"
        );
        assert!(fix.contains("/etc/systemd/system/user@.service.d/delegate.conf"));
        // All three delegated: no note.
        fs::write(dir.join("cgroup.controllers"), "cpu memory pids io\n").unwrap();
        let have = user_manager_controllers(cg.path(), 1000).unwrap();
        let fix = cgroups_check(&a, Who::User { uid: 1000 }, true, Some(&have))
            .fix
            .unwrap();
        assert!(!fix.contains("delegate.conf"), "{fix}");
    }

    #[test]
    fn root_on_v2_gets_the_service_unit_or_a_scope() {
        let a = missing(
            Version::V2,
            "/sys/fs/cgroup/user.slice/session-1.scope also holds processes we did not start",
        );
        let fix = cgroups_check(&a, Who::Root, true, None).fix.unwrap();
        assert!(fix.contains("deploy/warren.service"), "{fix}");
        assert!(fix.contains("systemd-run --scope -p Delegate=yes warren run"));
        let fix = cgroups_check(&a, Who::Root, false, None).fix.unwrap();
        assert!(fix.contains("mkdir /sys/fs/cgroup/warren"), "{fix}");
        assert!(!fix.contains("systemd-run"), "{fix}");
    }

    #[test]
    fn unshare_in_ci_on_v2_points_at_a_delegated_scope_around_unshare() {
        let a = missing(Version::V2, NOT_WRITABLE);
        let who = Who::RootInUserns {
            outer_uid: Some(1000),
        };
        let fix = cgroups_check(&a, who, true, None).fix.unwrap();
        assert!(
            fix.contains(
                "systemd-run --user --scope -p Delegate=yes unshare --user --map-root-user"
            ),
            "{fix}"
        );
    }

    /// A fake cgroup v1 tree (the temp dir is no cgroup2 mount, so the real
    /// driver takes the v1 path) whose own memory cgroup is missing: the
    /// driver reports the limit missing, and a rootless process is told that
    /// v1 is root's alone.
    #[test]
    fn cgroups_on_a_fake_v1_tree_without_our_cgroup() {
        let proc_root = tempfile::tempdir().unwrap();
        let cg = tempfile::tempdir().unwrap();
        fs::create_dir_all(proc_root.path().join("self")).unwrap();
        fs::write(
            proc_root.path().join("self/cgroup"),
            "5:memory:/user.slice\n4:pids:/user.slice\n3:cpu:/user.slice\n0::/user.slice\n",
        )
        .unwrap();
        let mut mountinfo = String::new();
        for (i, c) in ["memory", "pids", "cpu"].iter().enumerate() {
            let mnt = cg.path().join(c);
            fs::create_dir_all(&mnt).unwrap();
            mountinfo.push_str(&format!(
                "{} 20 0:{} / {} rw,relatime shared:{} - cgroup cgroup rw,{c}\n",
                30 + i,
                40 + i,
                mnt.display(),
                10 + i
            ));
        }
        fs::write(proc_root.path().join("self/mountinfo"), mountinfo).unwrap();
        let c = cgroups(proc_root.path(), cg.path(), Who::User { uid: 1000 }, true);
        assert!(!c.ok, "{c:?}");
        assert!(
            c.detail.starts_with("cgroup v1/hybrid: cannot apply"),
            "{c:?}"
        );
        assert!(c.detail.contains("does not exist"), "{c:?}");
        let fix = c.fix.unwrap();
        assert!(fix.contains("systemd never delegates"), "{fix}");
        assert!(fix.contains("systemd.unified_cgroup_hierarchy=1"), "{fix}");
        assert!(fix.contains("deploy/warren.service"), "{fix}");
    }
}
