//! cgroup v2 (unified hierarchy) driver.
//!
//! Layout: `<own>/warren/supervisor` holds this process, `<own>/warren/sbx-<id>`
//! each sandbox. The leaf exists because of the kernel's no-internal-processes
//! rule: a (non-root) cgroup that enables controllers for its children may
//! hold no processes itself, so we leave `<own>` before enabling
//! `memory cpu pids` in `<own>/cgroup.subtree_control` and
//! `<own>/warren/cgroup.subtree_control`. cgroups-rs ignored exactly this
//! write's result (docs/dependencies.md#q1-cgroups); we check both.

use std::path::{Path, PathBuf};

use super::{
    dir_for, flat_keyed, mkdir_exist_ok, page_round, procs, read, read_optional, read_u64, set,
    set_if_present, under, write, Applied, Availability, CgroupError, Dir, Driver, Events, Kernel,
    Limits, OwnCgroup, Usage, Version, BASE, CPU_PERIOD_US, LIMITED, SUPERVISOR,
};

#[derive(Debug)]
pub(super) struct V2 {
    /// `<own>`: the cgroup under which we create ours. This process's cgroup,
    /// or the one above `warren/supervisor` once we moved there.
    parent: PathBuf,
    /// `<own>/warren`.
    base: PathBuf,
    /// `base` as /proc/<pid>/cgroup names it (from the cgroup2 root).
    in_hierarchy: PathBuf,
    /// This process still lives in `parent` (not the root) and must move
    /// into the supervisor leaf before controllers can be enabled.
    move_self: bool,
    available: Vec<&'static str>,
    missing: Vec<(&'static str, String)>,
}

impl V2 {
    pub(super) fn probe(k: &dyn Kernel, root: &Path, own: &[OwnCgroup]) -> Result<V2, CgroupError> {
        let Some(mine) = own.iter().find(|c| c.controllers.is_empty()) else {
            return Ok(V2::without_limits(
                root,
                root.to_path_buf(),
                "/proc/self/cgroup has no cgroup2 (0::) entry".into(),
            ));
        };
        let own_dir = under(root, &mine.path);
        // Already in our supervisor leaf (a shim started by a prepared
        // server, or a second probe): the sandboxes go next to it.
        let (parent, in_parent) = match strip_suffix(&own_dir, &[BASE, SUPERVISOR]) {
            Some(p) => (p, false),
            None => (own_dir.clone(), true),
        };
        // Only the real root cgroup is exempt from the no-internal-processes
        // rule, and only it lacks cgroup.type. The root of a cgroup namespace
        // (a container's "/") is an ordinary cgroup.
        let parent_is_root = parent == root && !k.exists(&root.join("cgroup.type"));
        let base = parent.join(BASE);
        let move_self = in_parent && !parent_is_root;

        let offered_file = parent.join("cgroup.controllers");
        let Some(offered) = read_optional(k, &offered_file)? else {
            return Ok(V2::without_limits(
                root,
                parent,
                format!("{} does not exist", offered_file.display()),
            ));
        };
        let offered: Vec<&str> = offered.split_whitespace().collect();
        let mut v2 = V2 {
            in_hierarchy: in_hierarchy(root, &base),
            parent,
            base,
            move_self,
            available: Vec::new(),
            missing: Vec::new(),
        };
        for c in LIMITED {
            if offered.contains(&c) {
                v2.available.push(c);
            } else {
                v2.missing.push((
                    c,
                    format!(
                        "{c} is not offered to {} (its cgroup.controllers is {:?}): enable it in \
                         the parent cgroup's cgroup.subtree_control, or under systemd use \
                         Delegate=yes",
                        v2.parent.display(),
                        offered.join(" ")
                    ),
                ));
            }
        }
        if let Some(why) = v2.why_not_writable(k, parent_is_root)? {
            for c in std::mem::take(&mut v2.available) {
                v2.missing.push((c, why.clone()));
            }
        }
        v2.missing
            .sort_by_key(|(c, _)| LIMITED.iter().position(|l| l == c));
        Ok(v2)
    }

    fn without_limits(root: &Path, parent: PathBuf, why: String) -> V2 {
        let base = parent.join(BASE);
        V2 {
            in_hierarchy: in_hierarchy(root, &base),
            parent,
            base,
            move_self: false,
            available: Vec::new(),
            missing: LIMITED.iter().map(|c| (*c, why.clone())).collect(),
        }
    }

    /// Why `prepare` would fail for lack of permission, or because of other
    /// processes in our cgroup (which are not ours to move).
    fn why_not_writable(
        &self,
        k: &dyn Kernel,
        parent_is_root: bool,
    ) -> Result<Option<String>, CgroupError> {
        if self.available.is_empty() {
            return Ok(None);
        }
        let subtree = read(k, &self.parent.join("cgroup.subtree_control"))?;
        let enabled: Vec<&str> = subtree.split_whitespace().collect();
        let enable_in_parent = self.available.iter().any(|c| !enabled.contains(c));
        let mut must_write = Vec::new();
        if k.exists(&self.base) {
            must_write.push(self.base.clone());
            must_write.push(self.base.join("cgroup.subtree_control"));
        } else {
            must_write.push(self.parent.clone());
        }
        if enable_in_parent {
            must_write.push(self.parent.join("cgroup.subtree_control"));
        }
        if self.move_self {
            must_write.push(self.parent.join("cgroup.procs"));
        }
        if let Some(p) = must_write.iter().find(|p| !k.writable(p)) {
            return Ok(Some(format!(
                "cannot write {}: the cgroup belongs to another user (rootless without \
                 delegation, or root inside a user namespace); run as root or in a delegated \
                 cgroup (systemd: Delegate=yes)",
                p.display()
            )));
        }
        if enable_in_parent && !parent_is_root {
            let me = k.own_pid();
            let others: Vec<i32> = procs(k, &self.parent)?
                .into_iter()
                .filter(|p| *p != me)
                .collect();
            if !others.is_empty() {
                return Ok(Some(format!(
                    "{} also holds processes we did not start (pids {others:?}), and cgroup v2 \
                     forbids enabling controllers for the children of a cgroup with processes; \
                     start warren in a cgroup of its own (systemd: Delegate=yes)",
                    self.parent.display()
                )));
            }
        }
        Ok(None)
    }

    /// Writes `+c` for each controller not yet enabled in `dir`, then checks
    /// that the kernel lists all of them.
    fn enable(k: &dyn Kernel, dir: &Path, wanted: &[&'static str]) -> Result<(), CgroupError> {
        let file = dir.join("cgroup.subtree_control");
        let current = read(k, &file)?;
        let todo: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|c| !current.split_whitespace().any(|x| x == *c))
            .collect();
        if todo.is_empty() {
            return Ok(());
        }
        let value = todo
            .iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(" ");
        k.write(&file, &value).map_err(|e| CgroupError::Enable {
            path: file.clone(),
            controllers: value.clone(),
            errno: super::errno_of(&e),
        })?;
        let now = read(k, &file)?;
        if todo
            .iter()
            .any(|c| !now.split_whitespace().any(|x| x == *c))
        {
            return Err(CgroupError::NotApplied {
                path: file,
                value,
                actual: now.trim().to_string(),
            });
        }
        Ok(())
    }
}

impl Driver for V2 {
    fn version(&self) -> Version {
        Version::V2
    }

    fn availability(&self) -> Availability {
        Availability {
            version: Version::V2,
            missing: self.missing.iter().map(|(c, _)| *c).collect(),
            reasons: self.missing.iter().map(|(_, r)| r.clone()).collect(),
        }
    }

    fn prepare(&self, k: &dyn Kernel) -> Result<(), CgroupError> {
        mkdir_exist_ok(k, &self.base)?;
        let leaf = self.base.join(SUPERVISOR);
        mkdir_exist_ok(k, &leaf)?;
        if self.move_self {
            // Our own pid only: other processes in our cgroup are not ours.
            let me = k.own_pid();
            let file = leaf.join("cgroup.procs");
            write(k, &file, &me.to_string())?;
            if !procs(k, &leaf)?.contains(&me) {
                return Err(CgroupError::NotApplied {
                    path: file,
                    value: me.to_string(),
                    actual: "pid not listed".into(),
                });
            }
        }
        V2::enable(k, &self.parent, &self.available)?;
        V2::enable(k, &self.base, &self.available)
    }

    fn bases(&self) -> Vec<Dir> {
        vec![Dir {
            path: self.base.clone(),
            in_hierarchy: self.in_hierarchy.clone(),
            controllers: self.available.clone(),
        }]
    }

    fn apply(&self, k: &dyn Kernel, dirs: &[Dir], limits: &Limits) -> Result<Applied, CgroupError> {
        let dir = &dirs[0].path;
        let mut a = Applied::default();
        if let Some(bytes) = limits.memory_bytes {
            set(
                k,
                &dir.join("memory.max"),
                &page_round(k, bytes).to_string(),
                &mut a,
            )?;
            if !set_if_present(k, &dir.join("memory.swap.max"), "0", &mut a)? {
                a.notes.push(
                    "swap is not limited: memory.swap.max is missing (kernel without swap \
                     accounting; boot with swapaccount=1). Harmless on a host without swap."
                        .into(),
                );
            }
            // On OOM, kill the whole sandbox rather than one process of it.
            if !set_if_present(k, &dir.join("memory.oom.group"), "1", &mut a)? {
                a.notes.push(
                    "memory.oom.group is missing (kernel before 4.19): an OOM kills single \
                     processes, not the whole sandbox"
                        .into(),
                );
            }
        }
        if let Some(quota) = limits.cpu_quota_us() {
            set(
                k,
                &dir.join("cpu.max"),
                &format!("{quota} {CPU_PERIOD_US}"),
                &mut a,
            )?;
        }
        if let Some(n) = limits.pids {
            set(k, &dir.join("pids.max"), &n.to_string(), &mut a)?;
        }
        Ok(a)
    }

    fn kill(&self, k: &dyn Kernel, dirs: &[Dir]) -> Result<(), CgroupError> {
        for d in dirs {
            let kill_file = d.path.join("cgroup.kill");
            // cgroup.kill (5.14+) kills atomically, new forks included.
            if k.exists(&kill_file) {
                match k.write(&kill_file, "1") {
                    Ok(()) => continue,
                    // Removed under us: nothing left to kill.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        return Err(CgroupError::Write {
                            path: kill_file,
                            value: "1".into(),
                            errno: super::errno_of(&e),
                        })
                    }
                }
            }
            super::kill_listed(k, &d.path)?;
        }
        Ok(())
    }

    fn events(&self, k: &dyn Kernel, dirs: &[Dir]) -> Result<Events, CgroupError> {
        let mut ev = Events::default();
        if let Some(d) = dir_for(dirs, "memory") {
            if let Some(text) = read_optional(k, &d.join("memory.events"))? {
                ev.oom_kills = flat_keyed(&text, "oom_kill");
                ev.oom_group_kills = flat_keyed(&text, "oom_group_kill");
                ev.memory_limit_hits = flat_keyed(&text, "max");
            }
        }
        if let Some(d) = dir_for(dirs, "pids") {
            if let Some(text) = read_optional(k, &d.join("pids.events"))? {
                ev.pids_limit_hits = flat_keyed(&text, "max");
            }
        }
        Ok(ev)
    }

    fn usage(&self, k: &dyn Kernel, dirs: &[Dir]) -> Result<Usage, CgroupError> {
        let dir = &dirs[0].path;
        let mut u = Usage::default();
        if dirs[0].serves("memory") {
            u.memory_bytes = read_u64(k, &dir.join("memory.current"))?;
        }
        // cpu.stat usage_usec is a core file: present without the cpu controller.
        if let Some(text) = read_optional(k, &dir.join("cpu.stat"))? {
            u.cpu_usec = flat_keyed(&text, "usage_usec");
        }
        if dirs[0].serves("pids") {
            u.pids = read_u64(k, &dir.join("pids.current"))?;
        }
        Ok(u)
    }
}

/// `path` without the trailing components `suffix`, if it ends with them.
fn strip_suffix(path: &Path, suffix: &[&str]) -> Option<PathBuf> {
    let mut p = path;
    for s in suffix.iter().rev() {
        if p.file_name()? != *s {
            return None;
        }
        p = p.parent()?;
    }
    Some(p.to_path_buf())
}

/// `dir` under the cgroup2 mount `root` as /proc/<pid>/cgroup names it.
fn in_hierarchy(root: &Path, dir: &Path) -> PathBuf {
    Path::new("/").join(dir.strip_prefix(root).unwrap_or(dir))
}
