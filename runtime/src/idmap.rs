//! User and group id maps of the sandbox's user namespace.
//!
//! The sandbox user (uid/gid 1000 inside) maps to exactly one host uid and
//! gid. Which host ids are available depends on who runs warren (see
//! [`IdRange`] and docs/sandbox.md): host root maps each tenant to its own
//! allocated id; anyone else maps the one id they have.

use std::fs;
use std::path::Path;

use nix::errno::Errno;
use nix::unistd::{Gid, Pid, Uid};

use crate::report::SetupError;
use crate::spec::SandboxSpec;

/// Which host ids this process may map into a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdRange {
    /// Real root in the initial user namespace: any host id, so each tenant
    /// gets a distinct one.
    Any,
    /// Only our own ids: an unprivileged user, or root inside a user
    /// namespace that maps only it, to a non-root id of the parent
    /// (`unshare --user --map-root-user` run by an unprivileged user).
    Single { uid: u32, gid: u32 },
    /// Root inside a user namespace that maps more ids than its own
    /// (`unshare --user --map-auto --map-root-user`, a rootless container):
    /// each tenant gets one of those other ids (never our own, never the
    /// parent's root), and we write the sandbox's maps ourselves, holding
    /// CAP_SETUID/CAP_SETGID over every id of our namespace. Ranges are in
    /// our namespace's ids.
    Delegated { uids: SubRange, gids: SubRange },
    /// Root inside a user namespace whose only id is the parent's root
    /// (`unshare --user --map-root-user` run by root): every tenant would be
    /// host uid 0, so no sandbox starts ([`IdRange::refusal`]).
    ParentRootOnly,
    /// An unprivileged user with /etc/subuid and /etc/subgid ranges and the
    /// setuid newuidmap/newgidmap helpers: each tenant gets its own id from
    /// the ranges, and our own ids map to root inside (to hand the tenant
    /// its home on first use).
    Subordinate {
        uid: u32,
        gid: u32,
        uids: SubRange,
        gids: SubRange,
    },
}

/// A range from /etc/subuid or /etc/subgid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubRange {
    pub start: u32,
    pub count: u32,
}

/// The newuidmap/newgidmap helpers (Debian package `uidmap`).
pub const NEWUIDMAP: &str = "/usr/bin/newuidmap";
pub const NEWGIDMAP: &str = "/usr/bin/newgidmap";

/// The first range for `name` or `id` in a subuid/subgid file's contents.
pub fn sub_range(contents: &str, name: Option<&str>, id: u32) -> Option<SubRange> {
    contents.lines().find_map(|l| {
        let mut f = l.trim().splitn(3, ':');
        let who = f.next()?;
        let (start, count) = (f.next()?.parse().ok()?, f.next()?.parse().ok()?);
        let me = Some(who) == name || who.parse::<u32>().ok() == Some(id);
        (me && count > 0).then_some(SubRange { start, count })
    })
}

impl IdRange {
    /// Reads what this process may map from its own uid_map: only a process
    /// whose namespace maps the whole 32-bit range, and which is root there,
    /// can hand out arbitrary ids.
    pub fn of_current_process(proc_root: &Path) -> IdRange {
        let (uid, gid) = (Uid::effective().as_raw(), Gid::effective().as_raw());
        let full = fs::read_to_string(proc_root.join("self/uid_map"))
            .map(|m| is_identity_map(&m))
            .unwrap_or(false);
        if uid == 0 && full {
            return IdRange::Any;
        }
        if uid == 0 {
            let read = |f: &str| fs::read_to_string(proc_root.join(f)).unwrap_or_default();
            let (umap, gmap) = (read("self/uid_map"), read("self/gid_map"));
            if let (Some(uids), Some(gids)) = (delegable(&umap), delegable(&gmap)) {
                return IdRange::Delegated { uids, gids };
            }
            if is_host_root(proc_root, &umap, &gmap, uid, gid) {
                return IdRange::ParentRootOnly;
            }
        }
        // Not root here, yet perhaps the host's root (`unshare --user
        // --map-user=1000` run by root): our one id would be every tenant's.
        if uid != 0 && !full {
            let read = |f: &str| fs::read_to_string(proc_root.join(f)).unwrap_or_default();
            if is_host_root(
                proc_root,
                &read("self/uid_map"),
                &read("self/gid_map"),
                uid,
                gid,
            ) {
                return IdRange::ParentRootOnly;
            }
        }
        let helpers = Path::new(NEWUIDMAP).exists() && Path::new(NEWGIDMAP).exists();
        if uid != 0 && full && helpers {
            let name = nix::unistd::User::from_uid(Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|u| u.name);
            let read = |f| fs::read_to_string(Path::new("/etc").join(f)).unwrap_or_default();
            let uids = sub_range(&read("subuid"), name.as_deref(), uid);
            let gids = sub_range(&read("subgid"), name.as_deref(), gid);
            if let (Some(uids), Some(gids)) = (uids, gids) {
                return IdRange::Subordinate {
                    uid,
                    gid,
                    uids,
                    gids,
                };
            }
        }
        IdRange::Single { uid, gid }
    }
}

/// Why a sandbox cannot start with these ids, and how to get others.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error(
        "refusing to run a tenant as host root: this process's only id in its user namespace is \
         the host's uid/gid 0 (plain `unshare --user --map-root-user`, or `--map-user=N`, run as \
         root), so \
         every tenant would be uid 0 on the host; start it under `unshare --user --map-auto \
         --map-root-user` (maps root's /etc/subuid and /etc/subgid ranges: each tenant gets its \
         own non-root id), or run warren as root or as a normal user; see docs/hosts.md"
    )]
    OnlyHostRoot,
}

impl IdRange {
    /// `Some` when no tenant may be mapped with these ids.
    pub fn refusal(&self) -> Option<IdError> {
        matches!(self, IdRange::ParentRootOnly).then_some(IdError::OnlyHostRoot)
    }

    /// Whether each tenant gets a host id of its own (not ours).
    pub fn distinct_per_tenant(&self) -> bool {
        matches!(
            self,
            IdRange::Any | IdRange::Delegated { .. } | IdRange::Subordinate { .. }
        )
    }
}

/// Whether our `uid` (or `gid`) is the host's root. A sysctl file belongs
/// to the host's root in every namespace, so it shows as ours exactly when
/// ours is the host's, however deeply nested. Without /proc/sys (a fixture)
/// the maps decide: the parent's 0 (conservative when nested).
fn is_host_root(proc_root: &Path, uid_map: &str, gid_map: &str, uid: u32, gid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    match fs::metadata(proc_root.join("sys/kernel/osrelease")) {
        Ok(m) => m.uid() == uid || m.gid() == gid,
        Err(_) => outer_id(uid_map, uid) == Some(0) || outer_id(gid_map, gid) == Some(0),
    }
}

/// The parent-namespace id that `id` maps to in a `uid_map`/`gid_map`.
pub fn outer_id(map: &str, id: u32) -> Option<u32> {
    map_lines(map).find_map(|(inner, outer, count)| {
        let off = u64::from(id).checked_sub(inner)?;
        (off < count).then(|| (outer + off) as u32)
    })
}

/// The largest run of ids in a map that are neither our root (inner 0)
/// nor the parent's root (outer 0): both can only be a range's first id.
fn delegable(map: &str) -> Option<SubRange> {
    map_lines(map)
        .map(|(inner, outer, count)| {
            let skip = u64::from(inner == 0 || outer == 0);
            (inner + skip, count.saturating_sub(skip))
        })
        .filter(|&(start, count)| count > 0 && start + count <= 1 << 32)
        .max_by_key(|&(_, count)| count)
        .map(|(start, count)| SubRange {
            start: start as u32,
            count: count.min(u64::from(u32::MAX)) as u32,
        })
}

/// `inner outer count` lines, widened so sums cannot overflow.
fn map_lines(map: &str) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
    map.lines().filter_map(|l| {
        let mut f = l.split_whitespace().map(|v| v.parse::<u64>().ok());
        Some((f.next()??, f.next()??, f.next()??))
    })
}

/// `0 0 4294967295`: the initial user namespace (or one that maps it whole).
fn is_identity_map(map: &str) -> bool {
    map.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f == ["0", "0", "4294967295"]
    })
}

/// Writes `setgroups`, `uid_map` and `gid_map` of the child `pid` from its
/// parent, which is still outside the new user namespace. `setgroups` is
/// always denied: the sandbox user has no supplementary groups to manage, and
/// an unprivileged writer may not write gid_map otherwise.
pub fn write_maps_from_parent(pid: Pid, spec: &SandboxSpec) -> Result<(), SetupError> {
    if let Some((root_uid, root_gid)) = spec.id_map.ns_root {
        return write_maps_with_helpers(pid, spec, root_uid, root_gid);
    }
    let dir = Path::new("/proc").join(pid.as_raw().to_string());
    let uid_line = format!("{} {} 1\n", spec.uid, spec.id_map.host_uid);
    let gid_line = format!("{} {} 1\n", spec.gid, spec.id_map.host_gid);
    for (file, contents) in [
        ("setgroups", "deny\n"),
        ("uid_map", uid_line.as_str()),
        ("gid_map", gid_line.as_str()),
    ] {
        fs::write(dir.join(file), contents).map_err(|e| {
            let errno = Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
            SetupError::errno(format!("write {file}"), errno)
                .with_message(format!(
                    "writing {:?} to {file}: {}",
                    contents.trim(),
                    errno.desc()
                ))
                .with_hint(
                    "only root in the initial user namespace can map a tenant to its own host id; \
                     as another user warren maps your own uid and gid (see docs/sandbox.md)",
                )
        })?;
    }
    Ok(())
}

/// Subordinate ids: only the setuid helpers may write such maps. Our own
/// ids become root inside, the tenant's id becomes the sandbox user.
fn write_maps_with_helpers(
    pid: Pid,
    spec: &SandboxSpec,
    root_uid: u32,
    root_gid: u32,
) -> Result<(), SetupError> {
    for (helper, root, inside, host) in [
        (NEWUIDMAP, root_uid, spec.uid, spec.id_map.host_uid),
        (NEWGIDMAP, root_gid, spec.gid, spec.id_map.host_gid),
    ] {
        let args = [
            pid.as_raw().to_string(),
            "0".into(),
            root.to_string(),
            "1".into(),
            inside.to_string(),
            host.to_string(),
            "1".into(),
        ];
        let out = std::process::Command::new(helper)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| SetupError::new(format!("run {helper}"), e.to_string()))?;
        if !out.status.success() {
            return Err(SetupError::new(
                format!("run {helper}"),
                format!(
                    "{}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            )
            .with_hint(
                "check the /etc/subuid and /etc/subgid ranges of this user (see docs/sandbox.md)",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_by_name_or_id() {
        let f = "root:100000:65536\nalice:200000:65536\n1005:300000:10\nbob:1:0\n";
        assert_eq!(
            sub_range(f, Some("alice"), 1000),
            Some(SubRange {
                start: 200000,
                count: 65536
            })
        );
        assert_eq!(
            sub_range(f, None, 1005),
            Some(SubRange {
                start: 300000,
                count: 10
            })
        );
        assert_eq!(
            sub_range(f, Some("bob"), 7),
            None,
            "an empty range is no range"
        );
        assert_eq!(sub_range(f, Some("carol"), 7), None);
    }

    #[test]
    fn identity_map_is_recognized() {
        assert!(is_identity_map("         0          0 4294967295\n"));
        assert!(!is_identity_map("         0       1000          1\n"));
        assert!(!is_identity_map(""));
    }

    fn proc_with(uid_map: &str, gid_map: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("self")).unwrap();
        fs::write(d.path().join("self/uid_map"), uid_map).unwrap();
        fs::write(d.path().join("self/gid_map"), gid_map).unwrap();
        d
    }

    #[test]
    fn delegable_ids_skip_both_roots() {
        let auto = "         0          0          1\n         1 3100000000      65535\n";
        assert_eq!(
            delegable(auto),
            Some(SubRange {
                start: 1,
                count: 65535
            })
        );
        // A rootless container: root maps to 1000, the rest follows.
        assert_eq!(
            delegable("0 1000 65536\n"),
            Some(SubRange {
                start: 1,
                count: 65535
            })
        );
        assert_eq!(delegable("0 0 1\n"), None);
        assert_eq!(delegable("0 1000 1\n"), None);
        assert_eq!(outer_id(auto, 0), Some(0));
        assert_eq!(outer_id(auto, 2), Some(3100000001));
        assert_eq!(outer_id(auto, 70000), None);
    }

    #[test]
    fn root_mapped_to_parent_root_alone_is_refused() {
        if !Uid::effective().is_root() {
            return; // of_current_process reads our own euid
        }
        let d = proc_with("0 0 1\n", "0 0 1\n");
        let r = IdRange::of_current_process(d.path());
        assert_eq!(r, IdRange::ParentRootOnly);
        let msg = r.refusal().unwrap().to_string();
        assert!(
            msg.contains("unshare --user --map-auto --map-root-user"),
            "{msg}"
        );
        let d = proc_with("0 0 1\n1 3100000000 65535\n", "0 0 1\n1 3100000000 65535\n");
        assert!(matches!(
            IdRange::of_current_process(d.path()),
            IdRange::Delegated { .. }
        ));
        let d = proc_with("0 1000 1\n", "0 1000 1\n");
        assert!(matches!(
            IdRange::of_current_process(d.path()),
            IdRange::Single { uid: 0, gid: 0 }
        ));
    }

    #[test]
    fn non_root_or_nested_root_gets_single_range() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("self")).unwrap();
        fs::write(d.path().join("self/uid_map"), "0 1000 1\n").unwrap();
        assert!(matches!(
            IdRange::of_current_process(d.path()),
            IdRange::Single { .. }
        ));
    }
}
