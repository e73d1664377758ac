//! cgroup v1 driver, for legacy and hybrid hosts.
//!
//! Each controller is its own hierarchy, mounted wherever mountinfo says
//! (`cpu` and `cpuacct` may be one mount `cpu,cpuacct` or two). A sandbox
//! gets `<own>/warren/sbx-<id>` in every hierarchy we use, where `<own>` is
//! this process's cgroup in that hierarchy. A cgroup2 mount on a hybrid host
//! carries no controllers we need and is ignored.

use std::path::{Path, PathBuf};

use super::{
    dir_for, flat_keyed, kill_listed, mkdir_exist_ok, page_round, read_optional, read_u64, set,
    set_if_present, Applied, Availability, CgroupError, CgroupMount, Dir, Driver, Events, Kernel,
    Limits, OwnCgroup, Usage, Version, BASE, CPU_PERIOD_US, LIMITED,
};

/// The controllers we limit, plus `cpuacct` for CPU usage (accounting only:
/// its absence is not a missing limit).
const USED: [&str; 4] = ["memory", "cpu", "pids", "cpuacct"];

#[derive(Debug)]
pub(super) struct V1 {
    /// Usable hierarchies: `<own>/warren` in each, with its controllers.
    bases: Vec<Dir>,
    missing: Vec<(&'static str, String)>,
}

impl V1 {
    pub(super) fn probe(
        k: &dyn Kernel,
        mounts: &[CgroupMount],
        own: &[OwnCgroup],
    ) -> Result<V1, CgroupError> {
        let mut v1 = V1 {
            bases: Vec::new(),
            missing: Vec::new(),
        };
        for c in USED {
            match locate(k, mounts, own, c) {
                Ok((base, in_hierarchy)) => match v1.bases.iter_mut().find(|d| d.path == base) {
                    // `cpu,cpuacct` co-mounted: one directory serves both.
                    Some(d) => d.controllers.push(c),
                    None => v1.bases.push(Dir {
                        path: base,
                        in_hierarchy,
                        controllers: vec![c],
                    }),
                },
                Err(why) if LIMITED.contains(&c) => v1.missing.push((c, why)),
                Err(_) => {}
            }
        }
        Ok(v1)
    }
}

/// `<own>/warren` of controller `c` (its directory, and its path in the
/// hierarchy), or why this process cannot use it.
fn locate(
    k: &dyn Kernel,
    mounts: &[CgroupMount],
    own: &[OwnCgroup],
    c: &str,
) -> Result<(PathBuf, PathBuf), String> {
    let Some(mine) = own.iter().find(|o| o.controllers.iter().any(|x| x == c)) else {
        return Err(format!(
            "no {c} hierarchy in /proc/self/cgroup (controller not compiled in, disabled with \
             cgroup_disable=, or bound to cgroup v2)"
        ));
    };
    let Some(mount) = mounts
        .iter()
        .find(|m| !m.v2 && m.controllers.iter().any(|x| x == c) && mine.path.starts_with(&m.root))
    else {
        return Err(format!(
            "the {c} hierarchy is not mounted where this process can see its own cgroup {} \
             (mount it, e.g. mount -t cgroup -o {c} cgroup /sys/fs/cgroup/{c})",
            mine.path.display()
        ));
    };
    let rel = mine.path.strip_prefix(&mount.root).unwrap_or(Path::new(""));
    let own_dir = if rel.as_os_str().is_empty() {
        mount.mount_point.clone()
    } else {
        mount.mount_point.join(rel)
    };
    if !k.exists(&own_dir) {
        return Err(format!(
            "our {c} cgroup {} does not exist",
            own_dir.display()
        ));
    }
    let base = own_dir.join(BASE);
    let target = if k.exists(&base) { &base } else { &own_dir };
    if !k.writable(target) {
        return Err(format!(
            "cannot write {}: the cgroup belongs to another user (rootless, or root inside a \
             user namespace); run as root or in a delegated cgroup",
            target.display()
        ));
    }
    Ok((base, mine.path.join(BASE)))
}

impl Driver for V1 {
    fn version(&self) -> Version {
        Version::V1
    }

    fn availability(&self) -> Availability {
        Availability {
            version: Version::V1,
            missing: self.missing.iter().map(|(c, _)| *c).collect(),
            reasons: self.missing.iter().map(|(_, r)| r.clone()).collect(),
        }
    }

    fn prepare(&self, k: &dyn Kernel) -> Result<(), CgroupError> {
        // v1 has no no-internal-processes rule: nothing moves, nothing to enable.
        for b in &self.bases {
            mkdir_exist_ok(k, &b.path)?;
        }
        Ok(())
    }

    fn bases(&self) -> Vec<Dir> {
        self.bases.clone()
    }

    fn apply(&self, k: &dyn Kernel, dirs: &[Dir], limits: &Limits) -> Result<Applied, CgroupError> {
        let mut a = Applied::default();
        let need = |c: &'static str| {
            dir_for(dirs, c).ok_or_else(|| CgroupError::Unavailable {
                controller: c,
                reason: "no usable hierarchy".into(),
            })
        };
        if let Some(bytes) = limits.memory_bytes {
            let d = need("memory")?;
            let v = page_round(k, bytes).to_string();
            // memsw is memory+swap and must stay >= the memory limit, so the
            // memory limit goes first; the same value then means no swap.
            set(k, &d.join("memory.limit_in_bytes"), &v, &mut a)?;
            if !set_if_present(k, &d.join("memory.memsw.limit_in_bytes"), &v, &mut a)? {
                a.notes.push(
                    "swap is not limited: memory.memsw.limit_in_bytes is missing (kernel without \
                     swap accounting; boot with swapaccount=1). Harmless on a host without swap."
                        .into(),
                );
            }
            a.notes.push(
                "cgroup v1 has no memory.oom.group: an OOM kills single processes of the \
                 sandbox, not all of it"
                    .into(),
            );
        }
        if let Some(quota) = limits.cpu_quota_us() {
            let d = need("cpu")?;
            set(
                k,
                &d.join("cpu.cfs_period_us"),
                &CPU_PERIOD_US.to_string(),
                &mut a,
            )?;
            set(k, &d.join("cpu.cfs_quota_us"), &quota.to_string(), &mut a)?;
        }
        if let Some(n) = limits.pids {
            set(k, &need("pids")?.join("pids.max"), &n.to_string(), &mut a)?;
        }
        Ok(a)
    }

    fn kill(&self, k: &dyn Kernel, dirs: &[Dir]) -> Result<(), CgroupError> {
        for d in dirs {
            kill_listed(k, &d.path)?;
        }
        Ok(())
    }

    fn events(&self, k: &dyn Kernel, dirs: &[Dir]) -> Result<Events, CgroupError> {
        let mut ev = Events::default();
        if let Some(d) = dir_for(dirs, "memory") {
            if let Some(text) = read_optional(k, &d.join("memory.oom_control"))? {
                // The oom_kill field exists since kernel 4.13.
                ev.oom_kills = flat_keyed(&text, "oom_kill");
            }
            // With memsw set, hitting the limit may count in memsw only.
            let hits = read_u64(k, &d.join("memory.failcnt"))?;
            let memsw_hits = read_u64(k, &d.join("memory.memsw.failcnt"))?;
            ev.memory_limit_hits = hits.max(memsw_hits);
        }
        if let Some(d) = dir_for(dirs, "pids") {
            if let Some(text) = read_optional(k, &d.join("pids.events"))? {
                ev.pids_limit_hits = flat_keyed(&text, "max");
            }
        }
        Ok(ev)
    }

    fn usage(&self, k: &dyn Kernel, dirs: &[Dir]) -> Result<Usage, CgroupError> {
        let mut u = Usage::default();
        if let Some(d) = dir_for(dirs, "memory") {
            u.memory_bytes = read_u64(k, &d.join("memory.usage_in_bytes"))?;
        }
        if let Some(d) = dir_for(dirs, "cpuacct") {
            u.cpu_usec = read_u64(k, &d.join("cpuacct.usage"))?.map(|ns| ns / 1000);
        }
        if let Some(d) = dir_for(dirs, "pids") {
            u.pids = read_u64(k, &d.join("pids.current"))?;
        }
        Ok(u)
    }
}
