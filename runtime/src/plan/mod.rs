//! The whole confinement plan of one sandbox, in pure code: the spec and
//! what the host offers ([`HostFacts`], probed beforehand by
//! [`crate::host::facts`]) become the namespaces, the mounts, the rlimits,
//! the Landlock rules, the seccomp filters, the command's environment and
//! the record `warren-info` shows. Nothing here makes a syscall or reads a
//! file, so every tier's plan is unit-tested without root; the shim only
//! executes it, step by step (bubblewrap's op list, nsjail's `containProc`).
//!
//! Which tier builds what:
//!
//! | | `namespaces` | `landlock` | `none` |
//! |---|---|---|---|
//! | namespaces | user, mount, pid, net, ipc, uts (+cgroup) | none | none |
//! | mounts | the `host` profile's root plus `warren-info` | none | none |
//! | rlimits | none (the cgroup and namespaces bound it) | core, nofile, and what the cgroup misses | same as `landlock` |
//! | Landlock | second wall: writes to the home, /tmp, /dev/shm, binds | the only wall: home, system dirs, binds, the terminal | none |
//! | seccomp | the spec's profile | the profile plus the shared-host filter | none (`off`) |
//! | `warren-info` | `/etc/warren-info.json` | `$WARREN_INFO`, the tool on PATH | same as `landlock` |

use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use serde::{Deserialize, Serialize};

use crate::info::{SandboxInfo, APPLETS, INFO_BIN, INFO_DIR, INFO_ENV, INFO_PATH, INFO_TOOL};
use crate::landlock::LandlockPaths;
use crate::mounts::{self, HostFiles, MountOp};
use crate::namespaces;
use crate::network::{self, NetworkFacts, NetworkPlan};
use crate::record::{LimitsInForce, SandboxRecord};
use crate::rlimits::{self, Rlimit};
use crate::seccomp::{self, BpfProgram, Profile, SeccompError};
use crate::spec::{Isolation, SandboxSpec};

/// The Landlock ABI from which Landlock decides which named unix sockets
/// may be connected to (LANDLOCK_ACCESS_FS_RESOLVE_UNIX), so the
/// shared-host filter can allow unix sockets.
pub const LANDLOCK_RESOLVE_UNIX_ABI: u32 = 9;

/// What the host offers, as probed before planning ([`crate::host::facts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// The kernel has cgroup namespaces (`/proc/self/ns/cgroup`).
    pub cgroup_namespace: bool,
    /// The kernel's Landlock ABI; 0 when Landlock is unavailable.
    pub landlock_abi: u32,
    /// The host's name: the tiers without a uts namespace report it.
    pub hostname: String,
    /// The uid the shim runs as: `RLIMIT_NPROC` counts a uid host-wide,
    /// so it is only set for a tenant with a host uid of its own.
    pub caller_uid: u32,
    /// The running shim binary, bound into the namespace tier as
    /// `warren-info` (and the applets).
    pub shim_exe: PathBuf,
    /// The `warren-info` binary next to the shim, if installed: the tiers
    /// without namespaces run it from there.
    pub info_tool: Option<PathBuf>,
    /// The host paths the mount plan looks at.
    pub files: HostFiles,
    /// pasta, nft and the host's addresses, for a `public` sandbox.
    pub network: NetworkFacts,
}

/// The whole plan; see the module documentation for what each tier gets.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub tier: Isolation,
    /// The namespaces `clone` creates; empty in the tiers without them.
    pub clone_flags: CloneFlags,
    /// PID 1 unshares a cgroup namespace once it sits in its cgroup, so
    /// that cgroup becomes the namespace's root.
    pub cgroup_namespace: bool,
    /// How the root is built, in order; empty without a mount namespace.
    pub mounts: Vec<MountOp>,
    /// The record `warren-info` shows; what the mounts or the command's
    /// environment carry.
    pub info: SandboxInfo,
    /// What confines each command, the first and every joined one.
    pub confinement: Confinement,
    /// pasta and the egress filter, for a `public` sandbox.
    pub network: NetworkPlan,
}

/// What confines a command of the sandbox. Serializable: the namespace
/// tier's PID 1 receives it across its re-exec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confinement {
    /// Per-process limits, set before the tenant's ids are taken.
    pub rlimits: Vec<Rlimit>,
    /// What Landlock allows; `None`: no Landlock at all.
    pub landlock: Option<LandlockPlan>,
    pub seccomp: SeccompPlan,
    /// The command's whole environment.
    pub env: Vec<(String, String)>,
    /// The kernel's Landlock ABI, reported when Landlock is not used.
    pub landlock_abi: u32,
}

impl Plan {
    /// The namespaces a command joining the sandbox enters: all of them,
    /// the cgroup namespace included.
    pub fn join_flags(&self) -> CloneFlags {
        with_cgroup_namespace(self.clone_flags, self.cgroup_namespace)
    }
}

/// The Landlock rules of a tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockPlan {
    pub paths: LandlockPaths,
    /// Add the session's own terminal as a device rule: where `/dev/pts`
    /// is the host's, it is not allowed as a whole.
    pub terminal: bool,
}

impl LandlockPlan {
    /// The rules for a process on terminal `tty` (a `/dev/pts/N`), known
    /// only once the terminal is opened.
    pub fn rules_for(&self, tty: Option<&Path>) -> LandlockPaths {
        match tty {
            Some(slave) if self.terminal => self.paths.clone().with_terminal(slave),
            _ => self.paths.clone(),
        }
    }
}

/// Which seccomp filters are installed, last before the command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeccompPlan {
    /// No filter at all (`none` tier).
    Off,
    /// The spec's profile.
    Profile(Profile),
    /// The spec's profile plus the shared-host filter (no sockets but unix
    /// ones Landlock can confine, no SysV IPC).
    WithSharedHost {
        profile: Profile,
        /// Landlock confines named unix sockets, so they may be created.
        unix_confined: bool,
    },
}

impl SeccompPlan {
    /// The name in the sandbox's record: none without a filter.
    pub fn reported_name(&self) -> Option<String> {
        match self {
            SeccompPlan::Off => None,
            _ => Some(self.name()),
        }
    }

    /// The name reported to users: `default-v2`, `default-v2+shared-host-v1`, `off`.
    pub fn name(&self) -> String {
        match self {
            SeccompPlan::Off => "off".into(),
            SeccompPlan::Profile(p) => p.name().into(),
            SeccompPlan::WithSharedHost { profile, .. } => {
                format!("{}+{}", profile.name(), seccomp::SHARED_HOST_FILTER_NAME)
            }
        }
    }

    /// The filters, compiled, in installation order.
    pub fn filters(&self) -> Result<Vec<BpfProgram>, SeccompError> {
        match *self {
            SeccompPlan::Off => Ok(Vec::new()),
            SeccompPlan::Profile(p) => p.filters(),
            SeccompPlan::WithSharedHost {
                profile,
                unix_confined,
            } => {
                let mut filters = profile.filters()?;
                filters.push(seccomp::shared_host_filter(unix_confined)?);
                Ok(filters)
            }
        }
    }
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("describe sandbox: {0}")]
    Describe(#[from] serde_json::Error),
}

/// The plan for `spec` on a host with `host`'s facts, whose cgroup gave
/// `cgroup`.
pub fn build(
    spec: &SandboxSpec,
    host: &HostFacts,
    cgroup: LimitsInForce,
) -> Result<Plan, PlanError> {
    build_with_disk(spec, host, cgroup, None)
}

/// [`build`], with the disk limits the home got (`crate::disk::attach`).
pub fn build_with_disk(
    spec: &SandboxSpec,
    host: &HostFacts,
    mut cgroup: LimitsInForce,
    disk: Option<crate::disk::DiskInForce>,
) -> Result<Plan, PlanError> {
    let (net, net_record, net_missing) =
        network::plan(&spec.network, spec.isolation, &host.network);
    if let Some(why) = net_missing.filter(|_| !cgroup.missing.iter().any(|m| m == network::MISSING))
    {
        cgroup.missing.push(network::MISSING.into());
        cgroup.reasons.insert(network::MISSING.into(), why);
    }
    let namespaced = !spec.isolation.shares_host();
    let clone_flags = match namespaced {
        true => namespaces::sandbox_flags(),
        false => CloneFlags::empty(),
    };
    let cgroup_namespace = namespaced && host.cgroup_namespace;
    let rlimits = rlimits_for(spec, host, &cgroup.missing);
    let seccomp = seccomp_for(spec, host);
    let joined = with_cgroup_namespace(clone_flags, cgroup_namespace);
    let mut info = info_record(spec, host, joined, seccomp, &rlimits, cgroup);
    info.sandbox.disk = disk;
    // The none tier shares the host's network whatever the policy, as it
    // shares everything else: no record of a network it does not have.
    info.sandbox.network = (spec.isolation != Isolation::None).then_some(net_record);
    let (mounts, env, landlock) = match namespaced {
        true => (
            root_mounts(spec, host, &info, net.resolv_conf.clone())?,
            spec.env.clone(),
            Some(namespaced_landlock(spec)),
        ),
        false => (
            Vec::new(),
            shared_host_env(spec, host, &info)?,
            shared_host_landlock(spec, host),
        ),
    };
    Ok(Plan {
        tier: spec.isolation,
        clone_flags,
        cgroup_namespace,
        mounts,
        info,
        confinement: Confinement {
            rlimits,
            landlock,
            seccomp,
            env,
            landlock_abi: host.landlock_abi,
        },
        network: net,
    })
}

fn with_cgroup_namespace(flags: CloneFlags, cgroup_namespace: bool) -> CloneFlags {
    match cgroup_namespace {
        true => flags | CloneFlags::CLONE_NEWCGROUP,
        false => flags,
    }
}

/// The record of what the sandbox got, as `warren-info` shows it. The one
/// place it is made; everything it says is already decided in `plan`.
fn info_record(
    spec: &SandboxSpec,
    host: &HostFacts,
    entered: CloneFlags,
    seccomp: SeccompPlan,
    rlimits: &[Rlimit],
    cgroup: LimitsInForce,
) -> SandboxInfo {
    let namespaced = !spec.isolation.shares_host();
    SandboxInfo {
        user: spec.tenant.slug.clone(),
        uid: spec.process_ids().0,
        // Without a uts namespace the sandbox answers to the host's name.
        hostname: match namespaced {
            true => spec.hostname.clone(),
            false => host.hostname.clone(),
        },
        namespaces: namespaces::names(entered)
            .into_iter()
            .map(String::from)
            .collect(),
        sandbox: SandboxRecord {
            tier: spec.isolation,
            limits: LimitsInForce {
                per_process: rlimits.iter().map(ToString::to_string).collect(),
                ..cgroup
            },
            seccomp: seccomp.reported_name(),
            landlock: (spec.isolation != Isolation::None)
                .then(|| crate::landlock::expected(host.landlock_abi)),
            disk: None,
            network: None,
        },
    }
}

/// None in the namespace tier; in the others the rlimits that bound part of
/// what a missing cgroup limit would (see [`rlimits`]).
fn rlimits_for(spec: &SandboxSpec, host: &HostFacts, missing: &[String]) -> Vec<Rlimit> {
    if !spec.isolation.shares_host() {
        return Vec::new();
    }
    let own_uid = spec.process_ids().0 != host.caller_uid;
    rlimits::for_shared_host(&spec.limits, missing, own_uid)
}

fn seccomp_for(spec: &SandboxSpec, host: &HostFacts) -> SeccompPlan {
    match spec.isolation {
        Isolation::Namespaces => SeccompPlan::Profile(spec.seccomp),
        Isolation::Landlock => SeccompPlan::WithSharedHost {
            profile: spec.seccomp,
            unix_confined: host.landlock_abi >= LANDLOCK_RESOLVE_UNIX_ABI,
        },
        Isolation::None => SeccompPlan::Off,
    }
}

/// The `host` profile's root, plus what `warren-info` needs: the record in
/// /etc and the shim itself under that name (and, as symlinks to it, under
/// the names of the other applets: `argv[0]` picks the tool).
fn root_mounts(
    spec: &SandboxSpec,
    host: &HostFacts,
    info: &SandboxInfo,
    resolv_conf: Option<String>,
) -> Result<Vec<MountOp>, PlanError> {
    let mut ops = mounts::plan_from(spec, &host.files);
    if let Some(conf) = resolv_conf {
        // Never the host's file: it may name a resolver the policy refuses.
        mounts::replace_etc_file(&mut ops, "resolv.conf", conf);
    }
    let json = serde_json::to_string_pretty(info)?;
    mounts::add_etc_file(&mut ops, INFO_PATH.trim_start_matches("/etc/"), json);
    mounts::add_readonly_file(&mut ops, host.shim_exe.clone(), INFO_BIN.into());
    for applet in APPLETS {
        mounts::add_symlink(&mut ops, INFO_TOOL.into(), Path::new(INFO_DIR).join(applet));
    }
    login_profile(&mut ops);
    Ok(ops)
}

/// Where the host's /etc/profile goes in the sandbox: /etc/profile is
/// warren's, which runs it and then puts [`INFO_DIR`] back on PATH (a login
/// shell's profile resets PATH, and `warren-info` went missing with it).
pub const HOST_PROFILE: &str = "/etc/profile.host";

/// The sandbox's /etc/profile (see [`HOST_PROFILE`]).
pub fn profile_text() -> String {
    format!(
        "# A warren sandbox's /etc/profile: the host's ({HOST_PROFILE}), then\n\
         # warren's tools (warren-info, container-info, warren-download) back on\n\
         # PATH, which the host's may have reset.\n\
         if [ -r {HOST_PROFILE} ]; then . {HOST_PROFILE}; fi\n\
         case \":$PATH:\" in\n  *:{INFO_DIR}:*) ;;\n  *) PATH=\"$PATH:{INFO_DIR}\"; export PATH ;;\nesac\n"
    )
}

fn login_profile(ops: &mut Vec<MountOp>) {
    for op in ops.iter_mut() {
        if let MountOp::CopyFile { target, .. }
        | MountOp::Bind { target, .. }
        | MountOp::TreeBind { target, .. }
        | MountOp::Symlink { target, .. } = op
        {
            if target == Path::new("/etc/profile") {
                *target = HOST_PROFILE.into();
            }
        }
    }
    mounts::add_etc_file(ops, "profile", profile_text());
}

/// Second wall, after pivot_root: writes only to the home, /tmp, /dev/shm,
/// terminals and the read-write binds.
fn namespaced_landlock(spec: &SandboxSpec) -> LandlockPlan {
    let mut paths = LandlockPaths::for_sandbox(spec.home());
    let writable = spec.binds.iter().filter(|b| !b.readonly);
    paths.read_write.extend(writable.map(|b| b.target.clone()));
    LandlockPlan {
        paths,
        terminal: false,
    }
}

/// The only wall around the filesystem (`landlock` tier): the home,
/// read-only system directories, the binds (shared at their own place;
/// `warren-info` is one) and the session's terminal. `None` tier: none.
fn shared_host_landlock(spec: &SandboxSpec, host: &HostFacts) -> Option<LandlockPlan> {
    if spec.isolation != Isolation::Landlock {
        return None;
    }
    let mut paths = LandlockPaths::for_shared_host(spec.home());
    for b in &spec.binds {
        match b.readonly {
            true => paths.read_only.push(b.target.clone()),
            false => paths.read_write.push(b.target.clone()),
        }
    }
    paths.read_only.extend(host.info_tool.clone());
    Some(LandlockPlan {
        paths,
        terminal: true,
    })
}

/// The command's environment without a mount namespace: the record in
/// [`INFO_ENV`] and `warren-info`'s directory at the end of PATH (there is
/// no /etc or /opt of the sandbox's own for them).
fn shared_host_env(
    spec: &SandboxSpec,
    host: &HostFacts,
    info: &SandboxInfo,
) -> Result<Vec<(String, String)>, PlanError> {
    let mut env = spec.env.clone();
    env.retain(|(k, _)| k != INFO_ENV);
    env.push((INFO_ENV.into(), serde_json::to_string(info)?));
    if let Some(dir) = host.info_tool.as_deref().and_then(Path::parent) {
        let dir = dir.display().to_string();
        // A login shell's /etc/profile (the host's, in these tiers) resets
        // PATH: bash puts the directory back before its first prompt.
        if !env.iter().any(|(k, _)| k == "PROMPT_COMMAND") {
            env.push((
                "PROMPT_COMMAND".into(),
                format!("case \":$PATH:\" in *:{dir}:*) ;; *) PATH=\"$PATH:{dir}\";; esac"),
            ));
        }
        match env.iter_mut().find(|(k, _)| k == "PATH") {
            Some((_, path)) if !path.split(':').any(|p| p == dir) => {
                path.push(':');
                path.push_str(&dir);
            }
            Some(_) => {}
            None => env.push(("PATH".into(), dir)),
        }
    }
    Ok(env)
}

#[cfg(test)]
mod tests;
