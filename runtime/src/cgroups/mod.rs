//! cgroup limits for sandboxes: a thin, checked cgroupfs driver.
//!
//! Every sandbox gets its own cgroup, nested under the cgroup this process
//! already lives in: `<own>/warren/sbx-<id>` (on cgroup v1, one such directory
//! per controller hierarchy). We never write to cgroups we did not create and
//! never move processes we did not start, except this process itself on v2
//! (see [`Cgroups::prepare`]).
//!
//! Two drivers sit behind one trait: `v2` for a unified hierarchy and `v1`
//! for legacy and hybrid hosts (where cgroup2 may be mounted too, but without
//! the controllers we need). Every write is read back: a limit that silently
//! failed to apply is a security bug, and cgroups-rs was found swallowing such
//! failures (docs/cgroups.md, docs/dependencies.md#q1-cgroups).
//!
//! All file access goes through the `Kernel` seam and every path starts at
//! an injectable root ([`Roots`]), so the logic is unit-tested on a temp dir.

use std::fmt;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

mod v1;
mod v2;

#[cfg(test)]
mod tests;

/// The controllers whose limits we set, in the order we report them.
pub const LIMITED: [&str; 3] = ["memory", "cpu", "pids"];

/// Directory under our own cgroup that holds every sandbox cgroup.
const BASE: &str = "warren";
/// v2 leaf this process moves itself into (no-internal-processes rule).
const SUPERVISOR: &str = "supervisor";
/// Prefix of a sandbox cgroup; `sweep_stale` touches nothing else.
const SANDBOX_PREFIX: &str = "sbx-";

/// A sandbox id for `name` owned by this process:
/// `<name>-<pid>-t<start time>`. A sweep never removes the cgroup of an id
/// whose owner is still alive; the start time (clock ticks after boot, from
/// /proc/self/stat) tells the owner from a later process given its pid.
pub fn owned_id(name: &str) -> String {
    let pid = std::process::id();
    match std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| parse_start_time(&s))
    {
        Some(start) => format!("{name}-{pid}-t{start}"),
        None => format!("{name}-{pid}"),
    }
}

/// Who created a sandbox cgroup, from its directory name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owner {
    pid: i32,
    /// Absent in ids made before the start time was recorded.
    start: Option<u64>,
}

/// The owner at the end of an `sbx-<name>-<pid>[-t<start>]` directory name.
fn owner_of(dir_name: &str) -> Option<Owner> {
    let (rest, last) = dir_name.rsplit_once('-')?;
    let (pid, start) = match last.strip_prefix('t') {
        Some(t) => (rest.rsplit_once('-')?.1, Some(t.parse().ok()?)),
        None => (last, None),
    };
    let pid = pid.parse().ok().filter(|p: &i32| *p > 0)?;
    Some(Owner { pid, start })
}

/// Field 22 of /proc/<pid>/stat: the process's start time after boot.
fn parse_start_time(stat: &str) -> Option<u64> {
    // The command name is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

impl Owner {
    /// Whether the process that made the cgroup still runs: its pid exists
    /// and, where recorded, with the same start time (not a reused pid).
    fn alive(&self, k: &dyn Kernel) -> bool {
        k.alive(self.pid)
            && self
                .start
                .is_none_or(|t| k.start_time(self.pid).is_none_or(|now| now == t))
    }
}
/// CFS period for the cpu limit: the kernel's default, 100 ms.
const CPU_PERIOD_US: u64 = 100_000;
/// How long `destroy` waits for killed processes to leave their cgroup.
const DESTROY_TIMEOUT: Duration = Duration::from_secs(2);
/// A sandbox cgroup younger than this may be between `mkdir` and
/// `add_process` in another process, so `sweep_stale` leaves it alone.
const SWEEP_GRACE: Duration = Duration::from_secs(10);

/// Where the kernel's files are. Injectable so tests run on a temp dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    /// The cgroup mount root, `/sys/fs/cgroup`: a cgroup2 mount (v2) or the
    /// tmpfs holding the v1 controller mounts (v1/hybrid).
    pub cgroup: PathBuf,
    /// The proc root, `/proc`: we read `self/cgroup` and `self/mountinfo`.
    pub proc: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            cgroup: PathBuf::from("/sys/fs/cgroup"),
            proc: PathBuf::from("/proc"),
        }
    }
}

/// Which cgroup interface the host offers for our limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    /// Legacy or hybrid: one hierarchy per controller (or group of them).
    V1,
    /// Unified: one hierarchy, `/sys/fs/cgroup` is cgroup2.
    V2,
}

/// Resource limits of one sandbox. `None` leaves that resource unlimited.
/// Swap is never allowed when memory is limited: a limit that can spill into
/// swap is not a limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Memory (RAM) in bytes; rounded down to the page size.
    pub memory_bytes: Option<u64>,
    /// CPU time in cores: 0.5 is half of one CPU, 2.0 two whole CPUs.
    pub cpu: Option<f64>,
    /// Number of processes and threads.
    pub pids: Option<u64>,
}

impl Default for Limits {
    /// 512 MiB without swap, half a CPU, 512 tasks (ARCHITECTURE.md tier 1).
    fn default() -> Self {
        Limits {
            memory_bytes: Some(512 << 20),
            cpu: Some(0.5),
            pids: Some(512),
        }
    }
}

/// The smallest pids limit a sandbox can run anything in: its PID 1, the
/// shim joining it and the command (below it every exec, and every terminal,
/// failed with EAGAIN: a 500 the API fuzzer found).
pub const MIN_PIDS: u64 = 3;

/// The largest pids limit the kernel takes (PID_MAX_LIMIT, 2^22 on 64-bit):
/// above it `pids.max` refuses the write with EINVAL and every sandbox of
/// the tenant failed to start (a 500 the API fuzzer found).
pub const MAX_PIDS: u64 = 1 << 22;

impl Limits {
    /// No limits at all.
    pub const NONE: Limits = Limits {
        memory_bytes: None,
        cpu: None,
        pids: None,
    };

    /// Rejects values the kernel would refuse or that would make a sandbox
    /// unusable, before anything is created.
    pub fn validate(&self) -> Result<(), CgroupError> {
        if let Some(m) = self.memory_bytes {
            if m < 1 << 20 {
                return Err(CgroupError::InvalidLimits(format!(
                    "memory {m} bytes is below 1 MiB; no shell starts in that"
                )));
            }
        }
        if let Some(c) = self.cpu {
            // The kernel's minimum CFS quota is 1 ms per 100 ms period.
            if !c.is_finite() || !(0.01..=65536.0).contains(&c) {
                return Err(CgroupError::InvalidLimits(format!(
                    "cpu {c} cores is outside 0.01..=65536"
                )));
            }
        }
        if let Some(p) = self.pids.filter(|&p| p < MIN_PIDS) {
            return Err(CgroupError::InvalidLimits(format!(
                "pids {p} leaves no room for a command: the sandbox's PID 1 and the shim \
                 that joins it count too (at least {MIN_PIDS})"
            )));
        }
        if let Some(p) = self.pids.filter(|&p| p > MAX_PIDS) {
            return Err(CgroupError::InvalidLimits(format!(
                "pids {p} is above the kernel's most ({MAX_PIDS}); \"none\" means no limit"
            )));
        }
        Ok(())
    }

    /// These limits without the ones this host cannot apply, for a caller
    /// that has decided to run with what it can get (and says so).
    pub fn only_available(&self, avail: &Availability) -> Limits {
        let keep = |c: &str| !avail.missing.contains(&c);
        Limits {
            memory_bytes: self.memory_bytes.filter(|_| keep("memory")),
            cpu: self.cpu.filter(|_| keep("cpu")),
            pids: self.pids.filter(|_| keep("pids")),
        }
    }

    fn requested(&self) -> Vec<&'static str> {
        let mut r = Vec::new();
        if self.memory_bytes.is_some() {
            r.push("memory");
        }
        if self.cpu.is_some() {
            r.push("cpu");
        }
        if self.pids.is_some() {
            r.push("pids");
        }
        r
    }

    /// `cpu` as a CFS quota per [`CPU_PERIOD_US`].
    fn cpu_quota_us(&self) -> Option<u64> {
        self.cpu.map(|c| (c * CPU_PERIOD_US as f64).round() as u64)
    }
}

/// Which limits this process can apply here, and why not the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Availability {
    pub version: Version,
    /// Limits that cannot be applied (`"memory"`, `"cpu"`, `"pids"`); empty
    /// when all can.
    pub missing: Vec<&'static str>,
    /// One line per missing limit: what is wrong and how to fix the host.
    pub reasons: Vec<String>,
}

impl Availability {
    /// True when every limit in [`LIMITED`] can be applied.
    pub fn complete(&self) -> bool {
        self.missing.is_empty()
    }

    fn reason(&self, controller: &str) -> Option<&str> {
        let i = self.missing.iter().position(|m| *m == controller)?;
        self.reasons.get(i).map(String::as_str)
    }
}

/// What a successful [`Cgroups::create`] set, as the kernel reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Every file written, with the value read back from it.
    pub settings: Vec<(PathBuf, String)>,
    /// Limits that applied only in part, in words (e.g. swap accounting off).
    pub notes: Vec<String>,
}

/// Why a sandbox may have ended, from the kernel's counters. `None` means the
/// counter does not exist here (controller absent, or an older kernel).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Events {
    /// Processes the OOM killer killed (v2 `memory.events` oom_kill; v1
    /// `memory.oom_control` oom_kill, kernel 4.13+).
    pub oom_kills: Option<u64>,
    /// Whole-group OOM kills (v2 `memory.events` oom_group_kill, 6.0+).
    pub oom_group_kills: Option<u64>,
    /// Times memory use hit the limit (v2 `memory.events` max; v1
    /// `memory.failcnt`). Reclaim usually follows, not necessarily a kill.
    pub memory_limit_hits: Option<u64>,
    /// Forks refused by `pids.max` (`pids.events` max).
    pub pids_limit_hits: Option<u64>,
}

impl Events {
    /// True when the OOM killer killed something in the sandbox.
    pub fn oom_killed(&self) -> bool {
        self.oom_kills.unwrap_or(0) > 0 || self.oom_group_kills.unwrap_or(0) > 0
    }
}

/// Resource use of a sandbox so far; `None` where not measurable here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// `memory.current` (v2) or `memory.usage_in_bytes` (v1).
    pub memory_bytes: Option<u64>,
    /// `cpu.stat` usage_usec (v2) or `cpuacct.usage` / 1000 (v1).
    pub cpu_usec: Option<u64>,
    /// `pids.current`.
    pub pids: Option<u64>,
}

/// Errors of the cgroups module. Each carries the path and errno involved;
/// [`CgroupError::hint`] says how to fix the host where we know.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("invalid sandbox id {id:?}: {why}")]
    InvalidId { id: String, why: &'static str },
    #[error("invalid limits: {0}")]
    InvalidLimits(String),
    #[error("cannot find this process's cgroup: {0}")]
    OwnCgroup(String),
    #[error("the {controller} controller is not available: {reason}")]
    Unavailable {
        controller: &'static str,
        reason: String,
    },
    #[error("cannot read {}: {}", path.display(), errno.desc())]
    Read { path: PathBuf, errno: Errno },
    #[error("cannot write {value:?} to {}: {}", path.display(), errno.desc())]
    Write {
        path: PathBuf,
        value: String,
        errno: Errno,
    },
    /// The write succeeded but the kernel reports another value.
    #[error("{}: wrote {value:?} but the kernel reports {actual:?}", path.display())]
    NotApplied {
        path: PathBuf,
        value: String,
        actual: String,
    },
    #[error("cannot enable {controllers} in {}: {}", path.display(), errno.desc())]
    Enable {
        path: PathBuf,
        controllers: String,
        errno: Errno,
    },
    #[error("cannot create {}: {}", path.display(), errno.desc())]
    Create { path: PathBuf, errno: Errno },
    #[error("cannot remove {}: {}", path.display(), errno.desc())]
    Remove { path: PathBuf, errno: Errno },
    #[error("cannot kill pid {pid} of {}: {}", path.display(), errno.desc())]
    Kill {
        path: PathBuf,
        pid: i32,
        errno: Errno,
    },
    #[error("{} is in use by pids {pids:?}", path.display())]
    InUse { path: PathBuf, pids: Vec<i32> },
    #[error("pids {pids:?} still in {} {waited:?} after being killed", path.display())]
    StillPopulated {
        path: PathBuf,
        pids: Vec<i32>,
        waited: Duration,
    },
}

const HINT_DELEGATE: &str = "run warren as root, or in a cgroup delegated to its user \
     (systemd: a unit with Delegate=yes); see docs/cgroups.md";
const HINT_INTERNAL: &str = "cgroup v2 forbids processes in a cgroup whose controllers are \
     enabled for children: start warren in a cgroup of its own (systemd: Delegate=yes) and \
     call Cgroups::prepare before starting sandboxes; see docs/cgroups.md";

impl CgroupError {
    /// The errno behind this error, when the kernel gave one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            CgroupError::Read { errno, .. }
            | CgroupError::Write { errno, .. }
            | CgroupError::Enable { errno, .. }
            | CgroupError::Create { errno, .. }
            | CgroupError::Remove { errno, .. }
            | CgroupError::Kill { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// How to fix the host, when we know.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            CgroupError::Enable {
                errno: Errno::EBUSY,
                ..
            } => Some(HINT_INTERNAL),
            CgroupError::Enable { .. } | CgroupError::Unavailable { .. } => Some(HINT_DELEGATE),
            e if matches!(e.errno(), Some(Errno::EACCES | Errno::EPERM | Errno::EROFS)) => {
                Some(HINT_DELEGATE)
            }
            CgroupError::NotApplied { .. } => {
                Some("the kernel changed or ignored the value; check dmesg and the kernel's cgroup documentation")
            }
            CgroupError::InUse { .. } => {
                Some("another sandbox with this id is running; destroy it first")
            }
            _ => None,
        }
    }
}

/// The host's cgroup layout as seen from this process, and the factory for
/// sandbox cgroups.
///
/// Typical use: the long-lived supervisor calls [`Cgroups::probe`], checks
/// [`Cgroups::availability`], calls [`Cgroups::prepare`] once at start-up
/// and [`Cgroups::sweep_stale`]; each sandbox then gets [`Cgroups::create`].
#[derive(Debug)]
pub struct Cgroups {
    driver: Arc<dyn Driver>,
    kernel: Arc<dyn Kernel>,
    proc_root: PathBuf,
    prepared: AtomicBool,
}

impl Cgroups {
    /// Finds out which cgroup version the host has, where this process's own
    /// cgroups are, and which limits it may set there. Changes nothing.
    /// A host without usable cgroups is not an error: the answer says which
    /// limits are missing and why ([`Cgroups::availability`]).
    pub fn probe(roots: &Roots) -> Result<Cgroups, CgroupError> {
        Cgroups::probe_with(roots, Arc::new(RealKernel))
    }

    pub(crate) fn probe_with(
        roots: &Roots,
        kernel: Arc<dyn Kernel>,
    ) -> Result<Cgroups, CgroupError> {
        let k = kernel.as_ref();
        let own_file = roots.proc.join("self/cgroup");
        let own = match k.read(&own_file) {
            Ok(s) => s,
            // No /proc/self/cgroup: a kernel without CONFIG_CGROUPS.
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(read_err(&own_file, &e)),
        };
        let own = parse_proc_cgroup(&own)?;
        let unified = k.is_cgroup2(&roots.cgroup).unwrap_or(false);
        let driver: Arc<dyn Driver> = if unified {
            Arc::new(v2::V2::probe(k, &roots.cgroup, &own)?)
        } else {
            let mi_file = roots.proc.join("self/mountinfo");
            let mountinfo = k.read(&mi_file).map_err(|e| read_err(&mi_file, &e))?;
            Arc::new(v1::V1::probe(k, &parse_mountinfo(&mountinfo), &own)?)
        };
        Ok(Cgroups {
            driver,
            kernel,
            proc_root: roots.proc.clone(),
            prepared: AtomicBool::new(false),
        })
    }

    pub fn version(&self) -> Version {
        self.driver.version()
    }

    /// Which limits can be applied, and why not the others.
    pub fn availability(&self) -> Availability {
        self.driver.availability()
    }

    /// The `<own>/warren` directories sandbox cgroups are created in.
    pub fn base_dirs(&self) -> Vec<PathBuf> {
        self.driver.bases().into_iter().map(|d| d.path).collect()
    }

    /// One-time set-up of `<own>/warren`. On v2 this moves this process (its
    /// own pid, nothing else) into the leaf `<own>/warren/supervisor` and
    /// enables `memory cpu pids` for children, checking each step. Idempotent;
    /// [`Cgroups::create`] calls it too, but a server should call it before
    /// starting any shim, so that the shims inherit the leaf instead of
    /// keeping the server's cgroup populated.
    pub fn prepare(&self) -> Result<(), CgroupError> {
        if self.prepared.load(Ordering::Acquire) {
            return Ok(());
        }
        self.driver.prepare(self.kernel.as_ref())?;
        self.prepared.store(true, Ordering::Release);
        Ok(())
    }

    /// Creates the cgroup of sandbox `id` (`[a-z0-9_-]{1,64}`) with `limits`,
    /// checking every value the kernel reports back. A requested limit this
    /// host cannot apply is an error; use [`Limits::only_available`] to run
    /// with less. A leftover empty cgroup of the same id (a crashed run) is
    /// replaced; one with processes in it is [`CgroupError::InUse`].
    ///
    /// The returned handle removes the cgroup when dropped in this process;
    /// prefer [`SandboxCgroup::destroy`], which reports failures.
    pub fn create(
        &self,
        id: &str,
        limits: &Limits,
    ) -> Result<(SandboxCgroup, Applied), CgroupError> {
        validate_id(id)?;
        limits.validate()?;
        let avail = self.availability();
        for c in limits.requested() {
            if let Some(reason) = avail.reason(c) {
                return Err(CgroupError::Unavailable {
                    controller: c,
                    reason: reason.to_string(),
                });
            }
        }
        self.prepare()?;
        let k = self.kernel.as_ref();
        let mut sandbox = self.handle(id, Vec::new(), true);
        for base in self.driver.bases() {
            let dir = base.child(&format!("{SANDBOX_PREFIX}{id}"));
            match k.mkdir(&dir.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    // A leftover of a crashed run is replaced, so that no
                    // stale value survives for a limit this call leaves unset.
                    let pids = procs(k, &dir.path)?;
                    if !pids.is_empty() {
                        return Err(CgroupError::InUse {
                            path: dir.path,
                            pids,
                        });
                    }
                    k.rmdir(&dir.path).map_err(|e| remove_err(&dir.path, &e))?;
                    k.mkdir(&dir.path).map_err(|e| create_err(&dir.path, &e))?;
                }
                Err(e) => return Err(create_err(&dir.path, &e)),
            }
            // From here on, dropping `sandbox` on an error removes the dir.
            sandbox.dirs.push(dir);
        }
        let applied = self.driver.apply(k, &sandbox.dirs, limits)?;
        Ok((sandbox, applied))
    }

    /// A handle on the existing cgroup of sandbox `id`, e.g. to add a process
    /// that joins it or to destroy it from another process. Dropping this
    /// handle leaves the cgroup alone.
    pub fn open(&self, id: &str) -> Result<SandboxCgroup, CgroupError> {
        validate_id(id)?;
        let k = self.kernel.as_ref();
        let mut dirs = Vec::new();
        for base in self.driver.bases() {
            let dir = base.child(&format!("{SANDBOX_PREFIX}{id}"));
            if !k.exists(&dir.path) {
                return Err(CgroupError::Read {
                    path: dir.path,
                    errno: Errno::ENOENT,
                });
            }
            dirs.push(dir);
        }
        Ok(self.handle(id, dirs, false))
    }

    /// Removes leftover `sbx-*` cgroups (from a crashed earlier run). One
    /// whose id names its creating shim (pid and start time) is removed,
    /// however young, as soon as that creator is gone: a sandbox without a
    /// pid namespace (the landlock tier) can leave processes behind a killed
    /// creator, and those are killed with the cgroup. One whose id names no
    /// owner is removed when it holds no processes and is older than a few
    /// seconds (it may be between creation and its first process). Returns
    /// the directories removed.
    pub fn sweep_stale(&self) -> Result<Vec<PathBuf>, CgroupError> {
        self.sweep_stale_older_than(SWEEP_GRACE)
    }

    /// [`Cgroups::sweep_stale`] with an explicit grace period.
    pub fn sweep_stale_older_than(&self, grace: Duration) -> Result<Vec<PathBuf>, CgroupError> {
        let k = self.kernel.as_ref();
        let now = SystemTime::now();
        let mut removed = Vec::new();
        for base in self.driver.bases() {
            let entries = match k.subdirs(&base.path) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(read_err(&base.path, &e)),
            };
            for (name, mtime) in entries {
                if !name.starts_with(SANDBOX_PREFIX) {
                    continue;
                }
                let young = mtime
                    .and_then(|t| now.duration_since(t).ok())
                    .is_some_and(|age| age < grace);
                let dir = base.path.join(&name);
                // Between mkdir and placing its first process, a sandbox's
                // cgroup is empty: its creator being alive is what keeps it.
                // One whose creator is gone is stale however young (a crash
                // right after a start used to leave it behind: issue 10,
                // item 9); only an id that names no creator gets the grace.
                let owner = owner_of(&name);
                let keep = match owner {
                    Some(o) => o.alive(k),
                    None => young,
                };
                if keep {
                    continue;
                }
                if !procs(k, &dir)?.is_empty() {
                    // Orphaned by its dead creator: ours to end (the id names
                    // the creator, so a pid could only make us wait longer).
                    if owner.is_some() {
                        if let Ok(cg) = self.open(&name[SANDBOX_PREFIX.len()..]) {
                            let paths: Vec<PathBuf> =
                                cg.paths().into_iter().map(Path::to_path_buf).collect();
                            cg.destroy()?;
                            removed.extend(paths);
                        }
                    }
                    continue;
                }
                match k.rmdir(&dir) {
                    Ok(()) => removed.push(dir),
                    // Busy (a process arrived, or a child cgroup) or already
                    // gone: someone else's business, not an error.
                    Err(e)
                        if matches!(
                            errno_of(&e),
                            Errno::EBUSY | Errno::ENOTEMPTY | Errno::ENOENT
                        ) => {}
                    Err(e) => return Err(remove_err(&dir, &e)),
                }
            }
        }
        Ok(removed)
    }

    fn handle(&self, id: &str, dirs: Vec<Dir>, armed: bool) -> SandboxCgroup {
        SandboxCgroup {
            id: id.to_string(),
            dirs,
            proc_root: self.proc_root.clone(),
            driver: Arc::clone(&self.driver),
            kernel: Arc::clone(&self.kernel),
            owner: self.kernel.own_pid(),
            armed,
        }
    }
}

/// The cgroup(s) of one sandbox: one directory on v2, one per controller
/// hierarchy on v1.
#[derive(Debug)]
pub struct SandboxCgroup {
    id: String,
    dirs: Vec<Dir>,
    /// The proc root (`/proc`), for `/proc/<pid>/cgroup`.
    proc_root: PathBuf,
    driver: Arc<dyn Driver>,
    kernel: Arc<dyn Kernel>,
    /// The pid that created this handle. A forked child has a copy of the
    /// handle; its Drop must not tear down the parent's sandbox.
    owner: i32,
    /// Whether Drop removes the cgroup (created, not yet destroyed).
    armed: bool,
}

impl SandboxCgroup {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn version(&self) -> Version {
        self.driver.version()
    }

    /// The sandbox's cgroup directories (one on v2).
    pub fn paths(&self) -> Vec<&Path> {
        self.dirs.iter().map(|d| d.path.as_path()).collect()
    }

    /// Moves `pid` into the sandbox cgroup (every hierarchy on v1) by writing
    /// `cgroup.procs`, and checks that the kernel places it there. Call this
    /// from the parent before the child runs anything of the tenant's.
    ///
    /// The check reads `/proc/<pid>/cgroup`, not `cgroup.procs`: on v1 a
    /// read of `cgroup.procs` sizes its list by the task count and then
    /// walks the tasks, dropping those that no longer fit, so a fork in the
    /// sandbox meanwhile pushed a just-moved pid (walked last, in the newest
    /// css_set) off the list; opening terminals 10 at a time into one
    /// sandbox failed that way (issue 15). `/proc/<pid>/cgroup` answers for
    /// the one process, from the migration the write has completed.
    pub fn add_process(&self, pid: Pid) -> Result<(), CgroupError> {
        let k = self.kernel.as_ref();
        let value = pid.as_raw().to_string();
        for d in &self.dirs {
            let file = d.path.join("cgroup.procs");
            write(k, &file, &value)?;
            if let Some(actual) = self.misplaced(d, pid)? {
                return Err(CgroupError::NotApplied {
                    path: file,
                    value,
                    actual,
                });
            }
        }
        Ok(())
    }

    /// Opens, in the parent, the files through which a single-threaded
    /// child moves itself in ([`SelfEntry::enter`]): the child writes "0"
    /// (itself) there before it runs anything else.
    ///
    /// Why the child and not the parent: on v1 a write of a pid to
    /// `cgroup.procs` takes the global threadgroup lock for writing, which
    /// waits for an RCU grace period (7-18 ms on an idle host); a thread
    /// moving itself through `tasks` skips that lock (it cannot exit or
    /// exec under us), and takes 0.2 ms. On v2, where a thread cannot move
    /// alone, the child writes `cgroup.procs`: no cheaper, but it overlaps
    /// with the parent's own steps. The permission checks use the opener's
    /// credentials (the file's), so the child's new user namespace changes
    /// nothing.
    pub fn open_self_entry(&self) -> Result<SelfEntry, CgroupError> {
        let name = match self.version() {
            Version::V1 => "tasks",
            Version::V2 => "cgroup.procs",
        };
        let mut files = Vec::new();
        for d in &self.dirs {
            let path = d.path.join(name);
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| CgroupError::Write {
                    path: path.clone(),
                    value: "0".into(),
                    errno: errno_of(&e),
                })?;
            files.push((file, path, d.clone()));
        }
        Ok(SelfEntry {
            files,
            version: self.version(),
            proc_root: self.proc_root.clone(),
            kernel: self.kernel.clone(),
        })
    }

    /// Whether `pid` is in this sandbox's cgroup, in every hierarchy, as its
    /// `/proc/<pid>/cgroup` says.
    pub fn contains(&self, pid: Pid) -> Result<bool, CgroupError> {
        for d in &self.dirs {
            if self.misplaced(d, pid)?.is_some() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// `None` when `pid` is in `d`, else where it is instead, in words.
    fn misplaced(&self, d: &Dir, pid: Pid) -> Result<Option<String>, CgroupError> {
        let placed = self.placement(pid)?;
        Ok(match d.holds(self.version(), &placed) {
            Some(p) if p == d.in_hierarchy => None,
            Some(p) => Some(format!("/proc/{pid}/cgroup places it in {}", p.display())),
            None => Some(format!("/proc/{pid}/cgroup has no line for this hierarchy")),
        })
    }

    /// `/proc/<pid>/cgroup`, parsed.
    fn placement(&self, pid: Pid) -> Result<Vec<OwnCgroup>, CgroupError> {
        let file = self.proc_root.join(pid.as_raw().to_string()).join("cgroup");
        parse_proc_cgroup(&read(self.kernel.as_ref(), &file)?)
    }

    /// The pids in the sandbox cgroup (all hierarchies, deduplicated).
    pub fn pids(&self) -> Result<Vec<Pid>, CgroupError> {
        let mut all = Vec::new();
        for d in &self.dirs {
            all.extend(procs(self.kernel.as_ref(), &d.path)?);
        }
        all.sort_unstable();
        all.dedup();
        Ok(all.into_iter().map(Pid::from_raw).collect())
    }

    /// v2 only: an `O_DIRECTORY` fd of the sandbox cgroup, for
    /// `clone3(CLONE_INTO_CGROUP)`, which starts a child inside the cgroup
    /// with no window in which it runs unlimited. `None` on v1.
    pub fn dir_fd(&self) -> Result<Option<OwnedFd>, CgroupError> {
        use nix::fcntl::{open, OFlag};
        use nix::sys::stat::Mode;
        if self.version() != Version::V2 {
            return Ok(None);
        }
        let path = &self.dirs[0].path;
        open(
            path.as_path(),
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map(Some)
        .map_err(|errno| CgroupError::Read {
            path: path.clone(),
            errno,
        })
    }

    /// The kernel's counters that say why the sandbox ended (OOM kill,
    /// refused forks). Read them before [`SandboxCgroup::destroy`].
    pub fn events(&self) -> Result<Events, CgroupError> {
        self.driver.events(self.kernel.as_ref(), &self.dirs)
    }

    /// True when the OOM killer killed a process of the sandbox.
    pub fn oom_killed(&self) -> Result<bool, CgroupError> {
        Ok(self.events()?.oom_killed())
    }

    /// Memory, CPU time and process count so far.
    pub fn usage(&self) -> Result<Usage, CgroupError> {
        self.driver.usage(self.kernel.as_ref(), &self.dirs)
    }

    /// Kills every process in the sandbox cgroup (v2: `cgroup.kill`, else
    /// each listed pid, all of which are the sandbox's), waits up to 2 s for
    /// them to leave, then removes the cgroup directories. Works when the
    /// processes are already gone. `<own>/warren` stays: other sandboxes may
    /// be using it.
    pub fn destroy(mut self) -> Result<(), CgroupError> {
        self.armed = false;
        self.teardown()
    }

    /// Leaves the cgroup in place when this handle is dropped (its owner is
    /// now someone else, e.g. a process that will call `open` + `destroy`).
    pub fn keep(mut self) -> Vec<PathBuf> {
        self.armed = false;
        self.dirs.iter().map(|d| d.path.clone()).collect()
    }

    fn teardown(&self) -> Result<(), CgroupError> {
        let k = self.kernel.as_ref();
        let start = Instant::now();
        loop {
            self.driver.kill(k, &self.dirs)?;
            let mut left = None;
            for d in &self.dirs {
                let pids = procs(k, &d.path)?;
                if !pids.is_empty() {
                    left = Some((d.path.clone(), pids));
                    break;
                }
            }
            let Some((path, pids)) = left else { break };
            if start.elapsed() > DESTROY_TIMEOUT {
                return Err(CgroupError::StillPopulated {
                    path,
                    pids,
                    waited: start.elapsed(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for d in self.dirs.iter().rev() {
            loop {
                match k.rmdir(&d.path) {
                    Ok(()) => break,
                    Err(e) if errno_of(&e) == Errno::ENOENT => break,
                    // A killed task can keep the cgroup busy for a moment
                    // after it left cgroup.procs.
                    Err(e) if errno_of(&e) == Errno::EBUSY && start.elapsed() < DESTROY_TIMEOUT => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(remove_err(&d.path, &e)),
                }
            }
        }
        Ok(())
    }
}

/// The open cgroup files through which a single-threaded process moves
/// itself into a sandbox's cgroup ([`SandboxCgroup::open_self_entry`]).
#[derive(Debug)]
pub struct SelfEntry {
    files: Vec<(std::fs::File, PathBuf, Dir)>,
    version: Version,
    proc_root: PathBuf,
    kernel: Arc<dyn Kernel>,
}

impl SelfEntry {
    /// Moves the calling process, which must be single-threaded (on v1 only
    /// the calling thread moves), into the sandbox's cgroup in every
    /// hierarchy, and checks with `/proc/self/cgroup` that it is there.
    pub fn enter(self) -> Result<(), CgroupError> {
        for (file, path, _) in &self.files {
            // One write: cgroupfs parses each write(2) as a whole value.
            match (&*file).write(b"0") {
                Ok(1) => {}
                Ok(_) => return Err(write_failed(path, Errno::EIO)),
                Err(e) => return Err(write_failed(path, errno_of(&e))),
            }
        }
        let own = self.proc_root.join("self/cgroup");
        let placed = parse_proc_cgroup(&read(self.kernel.as_ref(), &own)?)?;
        for (_, path, d) in &self.files {
            let actual = match d.holds(self.version, &placed) {
                Some(p) if p == d.in_hierarchy => continue,
                Some(p) => format!("/proc/self/cgroup places it in {}", p.display()),
                None => "/proc/self/cgroup has no line for this hierarchy".into(),
            };
            return Err(CgroupError::NotApplied {
                path: path.clone(),
                value: "0".into(),
                actual,
            });
        }
        Ok(())
    }
}

fn write_failed(path: &Path, errno: Errno) -> CgroupError {
    CgroupError::Write {
        path: path.to_path_buf(),
        value: "0".into(),
        errno,
    }
}

impl Drop for SandboxCgroup {
    /// Best effort: a handle that was neither destroyed nor kept is removed
    /// (its processes killed) so that an early return or a panic does not
    /// leak a running sandbox. Errors are ignored here; `destroy` has them.
    fn drop(&mut self) {
        if self.armed && self.owner == self.kernel.own_pid() {
            let _ = self.teardown();
        }
    }
}

/// One cgroup directory and the controllers it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dir {
    path: PathBuf,
    /// The same cgroup as `/proc/<pid>/cgroup` names it (its path in the
    /// hierarchy, from our cgroup namespace's root).
    in_hierarchy: PathBuf,
    controllers: Vec<&'static str>,
}

impl Dir {
    fn serves(&self, controller: &str) -> bool {
        self.controllers.contains(&controller)
    }

    /// The sub-cgroup `name` of this one.
    fn child(&self, name: &str) -> Dir {
        Dir {
            path: self.path.join(name),
            in_hierarchy: self.in_hierarchy.join(name),
            controllers: self.controllers.clone(),
        }
    }

    /// Whether `proc_cgroup` (a process's `/proc/<pid>/cgroup`) places the
    /// process in this cgroup: on v1 the line of this hierarchy's
    /// controllers, on v2 the `0::` line.
    fn holds<'a>(&self, version: Version, proc_cgroup: &'a [OwnCgroup]) -> Option<&'a Path> {
        let line = proc_cgroup.iter().find(|l| match version {
            Version::V2 => l.controllers.is_empty(),
            Version::V1 => l.controllers.iter().any(|c| self.serves(c)),
        })?;
        Some(line.path.as_path())
    }
}

fn dir_for<'a>(dirs: &'a [Dir], controller: &str) -> Option<&'a Path> {
    dirs.iter()
        .find(|d| d.serves(controller))
        .map(|d| d.path.as_path())
}

/// What differs between cgroup v1 and v2. Creation, placement and teardown
/// are shared (above); file names and set-up rules are not.
trait Driver: fmt::Debug + Send + Sync {
    fn version(&self) -> Version;
    fn availability(&self) -> Availability;
    /// Creates `<own>/warren` (v2: also the supervisor leaf and controllers).
    fn prepare(&self, k: &dyn Kernel) -> Result<(), CgroupError>;
    /// The `<own>/warren` directories with the controllers each serves,
    /// only for controllers this process can use.
    fn bases(&self) -> Vec<Dir>;
    /// Writes and checks the limit files of a fresh sandbox cgroup.
    fn apply(&self, k: &dyn Kernel, dirs: &[Dir], limits: &Limits) -> Result<Applied, CgroupError>;
    /// Sends SIGKILL to everything in `dirs`; called repeatedly by teardown.
    fn kill(&self, k: &dyn Kernel, dirs: &[Dir]) -> Result<(), CgroupError>;
    fn events(&self, k: &dyn Kernel, dirs: &[Dir]) -> Result<Events, CgroupError>;
    fn usage(&self, k: &dyn Kernel, dirs: &[Dir]) -> Result<Usage, CgroupError>;
}

/// The kernel as this module sees it: file operations on cgroupfs and /proc,
/// statfs, our pid, and a kill. Tests substitute a fake with kernel-like
/// rules on a temp dir.
pub(crate) trait Kernel: fmt::Debug + Send + Sync {
    fn read(&self, path: &Path) -> io::Result<String>;
    /// Writes `value` to an existing file in one write (cgroupfs semantics:
    /// no create, no truncate).
    fn write(&self, path: &Path, value: &str) -> io::Result<()>;
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    fn rmdir(&self, path: &Path) -> io::Result<()>;
    fn exists(&self, path: &Path) -> bool;
    /// Names and modification times of the sub-directories of `path`.
    fn subdirs(&self, path: &Path) -> io::Result<Vec<(String, Option<SystemTime>)>>;
    /// Whether this process may write `path` (access(2) W_OK).
    fn writable(&self, path: &Path) -> bool;
    /// statfs(path) == CGROUP2_SUPER_MAGIC.
    fn is_cgroup2(&self, path: &Path) -> io::Result<bool>;
    fn own_pid(&self) -> i32;
    /// Whether a process with this pid exists.
    fn alive(&self, pid: i32) -> bool;
    /// The start time of process `pid` (field 22 of /proc/<pid>/stat), if
    /// it can be read.
    fn start_time(&self, _pid: i32) -> Option<u64> {
        None
    }
    fn page_size(&self) -> u64;
    /// SIGKILLs `pid` if it is (still) listed in the `cgroup.procs` file
    /// `procs`, without racing against pid reuse.
    fn kill_member(&self, procs: &Path, pid: i32) -> io::Result<()>;
}

/// The real kernel.
#[derive(Debug)]
struct RealKernel;

impl Kernel for RealKernel {
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        // One write: cgroupfs parses each write(2) as a whole value.
        let n = f.write(value.as_bytes())?;
        if n != value.len() {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }

    fn mkdir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn subdirs(&self, path: &Path) -> io::Result<Vec<(String, Option<SystemTime>)>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(path)? {
            let e = e?;
            let meta = e.metadata()?;
            if meta.is_dir() {
                out.push((
                    e.file_name().to_string_lossy().into_owned(),
                    meta.modified().ok(),
                ));
            }
        }
        Ok(out)
    }

    fn writable(&self, path: &Path) -> bool {
        nix::unistd::access(path, nix::unistd::AccessFlags::W_OK).is_ok()
    }

    fn is_cgroup2(&self, path: &Path) -> io::Result<bool> {
        let s = nix::sys::statfs::statfs(path).map_err(io::Error::from)?;
        Ok(s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
    }

    fn own_pid(&self) -> i32 {
        std::process::id() as i32
    }

    fn alive(&self, pid: i32) -> bool {
        // Signal 0: existence check only; EPERM also means "exists".
        !matches!(
            nix::sys::signal::kill(Pid::from_raw(pid), None),
            Err(Errno::ESRCH)
        )
    }

    fn start_time(&self, pid: i32) -> Option<u64> {
        parse_start_time(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    fn page_size(&self) -> u64 {
        nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .map_or(4096, |p| p as u64)
    }

    fn kill_member(&self, procs: &Path, pid: i32) -> io::Result<()> {
        use nix::sys::signal::Signal;
        let listed = || -> io::Result<bool> {
            Ok(parse_pids(&std::fs::read_to_string(procs)?).contains(&pid))
        };
        // Pin the process first, then check it is the one in our cgroup: a
        // pid read from cgroup.procs may have exited and been reused by an
        // unrelated process since. A pidfd cannot follow a reused pid.
        match crate::sys::pidfd_open(Pid::from_raw(pid)) {
            Ok(fd) => {
                if !listed()? {
                    return Ok(());
                }
                match crate::sys::cgroups::pidfd_send_signal(&fd, Signal::SIGKILL) {
                    Ok(()) | Err(Errno::ESRCH) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            Err(Errno::ESRCH) => Ok(()),
            // Kernels before 5.3: no pidfd. Check, then kill; the window is
            // a few microseconds and the kernel allocates pids cyclically.
            Err(Errno::ENOSYS) => {
                if !listed()? {
                    return Ok(());
                }
                match nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL) {
                    Ok(()) | Err(Errno::ESRCH) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// `[a-z0-9_-]{1,64}`: ids become directory names, so nothing else gets in.
pub fn validate_id(id: &str) -> Result<(), CgroupError> {
    let bad = |why| {
        Err(CgroupError::InvalidId {
            id: id.chars().take(80).collect(),
            why,
        })
    };
    if id.is_empty() {
        return bad("empty");
    }
    if id.len() > 64 {
        return bad("longer than 64 characters");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return bad("only a-z, 0-9, '_' and '-' are allowed");
    }
    Ok(())
}

/// One line of /proc/self/cgroup: `hierarchy-id:controllers:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OwnCgroup {
    /// Empty for the cgroup2 line (`0::/path`).
    controllers: Vec<String>,
    path: PathBuf,
}

fn parse_proc_cgroup(text: &str) -> Result<Vec<OwnCgroup>, CgroupError> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CgroupError::OwnCgroup(format!(
                "malformed /proc/self/cgroup line {line:?}"
            )));
        };
        let path = PathBuf::from(path);
        if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
            return Err(CgroupError::OwnCgroup(format!(
                "cgroup path {} is outside our cgroup namespace",
                path.display()
            )));
        }
        out.push(OwnCgroup {
            controllers: ctls
                .split(',')
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect(),
            path,
        });
    }
    Ok(out)
}

/// A cgroup or cgroup2 mount from /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CgroupMount {
    /// The path inside the hierarchy that is mounted (field 4).
    root: PathBuf,
    mount_point: PathBuf,
    v2: bool,
    /// Controllers of a v1 mount (from the super options); empty for v2.
    controllers: Vec<String>,
}

fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 5 || r.len() < 3 {
            continue;
        }
        let v2 = match r[0] {
            "cgroup" => false,
            "cgroup2" => true,
            _ => continue,
        };
        let controllers = if v2 {
            Vec::new()
        } else {
            r[2].split(',')
                .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains('='))
                .map(String::from)
                .collect()
        };
        out.push(CgroupMount {
            root: PathBuf::from(unescape_octal(l[3])),
            mount_point: PathBuf::from(unescape_octal(l[4])),
            v2,
            controllers,
        });
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\NNN` octal.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `root` joined with an absolute cgroup path from /proc/self/cgroup.
fn under(root: &Path, cgroup_path: &Path) -> PathBuf {
    root.join(cgroup_path.strip_prefix("/").unwrap_or(cgroup_path))
}

/// Parses `key value` lines (memory.events, pids.events, cpu.stat, ...).
fn flat_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn parse_pids(text: &str) -> Vec<i32> {
    text.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn errno_of(e: &io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

fn read_err(path: &Path, e: &io::Error) -> CgroupError {
    CgroupError::Read {
        path: path.to_path_buf(),
        errno: errno_of(e),
    }
}

fn create_err(path: &Path, e: &io::Error) -> CgroupError {
    CgroupError::Create {
        path: path.to_path_buf(),
        errno: errno_of(e),
    }
}

fn remove_err(path: &Path, e: &io::Error) -> CgroupError {
    CgroupError::Remove {
        path: path.to_path_buf(),
        errno: errno_of(e),
    }
}

fn read(k: &dyn Kernel, path: &Path) -> Result<String, CgroupError> {
    k.read(path).map_err(|e| read_err(path, &e))
}

/// Reads a file that may not exist on this kernel (`None` then).
fn read_optional(k: &dyn Kernel, path: &Path) -> Result<Option<String>, CgroupError> {
    match k.read(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(read_err(path, &e)),
    }
}

fn read_u64(k: &dyn Kernel, path: &Path) -> Result<Option<u64>, CgroupError> {
    Ok(read_optional(k, path)?.and_then(|s| s.trim().parse().ok()))
}

/// The pids in a cgroup; none when the cgroup does not exist (any more).
/// On v1 the list can miss a process while the cgroup's processes fork
/// (see [`SandboxCgroup::add_process`]): fine for the callers' repeated
/// polls, not as proof that one process is in.
fn procs(k: &dyn Kernel, dir: &Path) -> Result<Vec<i32>, CgroupError> {
    Ok(read_optional(k, &dir.join("cgroup.procs"))?
        .map(|s| parse_pids(&s))
        .unwrap_or_default())
}

/// SIGKILLs each pid listed in `dir`'s cgroup.procs: every one of them is a
/// process of the sandbox, so none is someone else's.
fn kill_listed(k: &dyn Kernel, dir: &Path) -> Result<(), CgroupError> {
    let file = dir.join("cgroup.procs");
    for pid in procs(k, dir)? {
        k.kill_member(&file, pid).map_err(|e| CgroupError::Kill {
            path: dir.to_path_buf(),
            pid,
            errno: errno_of(&e),
        })?;
    }
    Ok(())
}

fn write(k: &dyn Kernel, path: &Path, value: &str) -> Result<(), CgroupError> {
    k.write(path, value).map_err(|e| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        errno: errno_of(&e),
    })
}

/// Writes `value` and reads it back: the kernel echoes limit files exactly
/// (memory values are page-rounded by the caller first), so anything else
/// means the limit is not what we asked for.
fn set(k: &dyn Kernel, path: &Path, value: &str, applied: &mut Applied) -> Result<(), CgroupError> {
    write(k, path, value)?;
    let actual = read(k, path)?.trim().to_string();
    if actual != value {
        return Err(CgroupError::NotApplied {
            path: path.to_path_buf(),
            value: value.to_string(),
            actual,
        });
    }
    applied.settings.push((path.to_path_buf(), actual));
    Ok(())
}

/// [`set`] for a file that only some kernels or configurations have;
/// returns false (and writes nothing) when it is absent.
fn set_if_present(
    k: &dyn Kernel,
    path: &Path,
    value: &str,
    applied: &mut Applied,
) -> Result<bool, CgroupError> {
    if !k.exists(path) {
        return Ok(false);
    }
    set(k, path, value, applied)?;
    Ok(true)
}

/// `bytes` rounded down to a whole page, as the kernel stores memory limits.
fn page_round(k: &dyn Kernel, bytes: u64) -> u64 {
    let page = k.page_size().max(1);
    bytes / page * page
}

/// Creates `path` if it does not exist yet.
fn mkdir_exist_ok(k: &dyn Kernel, path: &Path) -> Result<(), CgroupError> {
    match k.mkdir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(create_err(path, &e)),
    }
}

#[cfg(test)]
mod owner_tests {
    use super::*;

    #[test]
    fn the_owner_comes_from_the_name() {
        let o = |pid, start| Some(Owner { pid, start });
        assert_eq!(owner_of("sbx-alice-1234"), o(1234, None));
        assert_eq!(owner_of("sbx-a-b-77"), o(77, None));
        assert_eq!(owner_of("sbx-a-b-77-t123456"), o(77, Some(123456)));
        assert_eq!(owner_of("sbx-alice"), None);
        assert_eq!(owner_of("sbx-x-0"), None);
        assert_eq!(owner_of("sbx-x-t12"), None);
        let me = std::process::id();
        let id = owned_id("bob");
        let start = parse_start_time(&std::fs::read_to_string("/proc/self/stat").unwrap());
        assert_eq!(id, format!("bob-{me}-t{}", start.unwrap()));
        assert!(validate_id(&format!("{}-{id}", "x".repeat(32))).is_ok());
        assert_eq!(
            parse_start_time("7 (a b) c) S 1 7 7 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 4242 1 2"),
            Some(4242)
        );
    }
}
