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
    /// Only our own ids: an unprivileged user, or root inside someone else's
    /// user namespace (`unshare --user --map-root-user`).
    Single { uid: u32, gid: u32 },
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
            IdRange::Any
        } else {
            IdRange::Single { uid, gid }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_map_is_recognized() {
        assert!(is_identity_map("         0          0 4294967295\n"));
        assert!(!is_identity_map("         0       1000          1\n"));
        assert!(!is_identity_map(""));
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
