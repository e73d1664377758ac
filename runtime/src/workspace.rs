//! Tenants' homes on the host: `<workspace root>/<slug>`, created on first
//! use with mode 0700 and owned by the tenant's host uid, without ever
//! following a symlink at the tenant's own path.

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fchmod, fstat, mkdirat, Mode};
use nix::unistd::{fchown, Gid, Uid};

use crate::tenant::Tenant;

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("cannot create workspace root {path}: {source}")]
    CreateRoot {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open workspace root {path}: {errno}")]
    OpenRoot { path: PathBuf, errno: Errno },
    #[error("{path} exists but is not a directory (a symlink there is never followed)")]
    NotADirectory { path: PathBuf },
    #[error("cannot {op} {path}: {errno}")]
    Io {
        op: &'static str,
        path: PathBuf,
        errno: Errno,
    },
    #[error(
        "{path} belongs to host uid {found}, but this tenant maps to host uid {expected}; \
         fix it with `chown -R {expected}:{expected} {path}` or use another --workspace-root"
    )]
    WrongOwner {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
}

/// The workspace root's mode where no tenant reaches it by path: the
/// sandbox's PID 1 opens the home before it becomes the tenant (and with
/// one host uid for all, that uid owns the root). Nobody else may pass it
/// (issue 10: other local users reached homes a tenant had opened up).
pub const ROOT_MODE_PRIVATE: u32 = 0o700;
/// The workspace root's mode where tenants' own host uids walk to their
/// homes by path: the tiers without a mount namespace, run as root. Others
/// may pass but not list it; each home is 0700 (docs/security.md).
pub const ROOT_MODE_TRAVERSABLE: u32 = 0o711;

/// A mode [`ensure_root`] changed, for the caller to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModeChange {
    pub was: u32,
    pub now: u32,
}

/// Creates the workspace root (and missing parents) with `mode`, or sets an
/// existing root's permission bits to exactly `mode` (0755 from an older
/// warren becomes 0700) and says so. A symlinked root is the operator's
/// choice and is followed.
pub fn ensure_root(root: &Path, mode: u32) -> Result<Option<ModeChange>, WorkspaceError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| WorkspaceError::CreateRoot {
        path: root.to_path_buf(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(root)
        .map_err(err)?;
    let was = fs::metadata(root).map_err(err)?.permissions().mode() & 0o7777;
    if was == mode {
        return Ok(None);
    }
    fs::set_permissions(root, fs::Permissions::from_mode(mode)).map_err(err)?;
    Ok(Some(ModeChange { was, now: mode }))
}

/// Makes sure `<root>/<slug>` is a real directory owned by `owner`, creating
/// it (mode 0700) on first use. An existing home may also belong to
/// `final_owner` (with subordinate ids the sandbox hands the home to the
/// tenant's id on first use). The root must exist ([`ensure_root`]).
/// Returns its path.
pub fn ensure_home(
    root: &Path,
    tenant: &Tenant,
    owner: (u32, u32),
    final_owner: u32,
) -> Result<PathBuf, WorkspaceError> {
    let path = tenant.workspace_in(root);
    let root_fd: OwnedFd = nix::fcntl::open(
        root,
        OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
        Mode::empty(),
    )
    .map_err(|errno| WorkspaceError::OpenRoot {
        path: root.to_path_buf(),
        errno,
    })?;
    let io = |op, errno| WorkspaceError::Io {
        op,
        path: path.clone(),
        errno,
    };
    // An existing home is only looked at (O_PATH: a home that already
    // belongs to a subordinate id is not ours to read); a new one is ours.
    let look = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY;
    let slug = tenant.slug.as_str();
    let (fd, created) = match openat(&root_fd, slug, look, Mode::empty()) {
        Ok(fd) => (fd, false),
        Err(Errno::ENOENT) => {
            match mkdirat(&root_fd, slug, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(io("create", e)),
            }
            let fd = openat(&root_fd, slug, flags, Mode::empty()).map_err(|e| match e {
                Errno::ELOOP | Errno::ENOTDIR => {
                    WorkspaceError::NotADirectory { path: path.clone() }
                }
                e => io("open", e),
            })?;
            (fd, true)
        }
        Err(Errno::ELOOP | Errno::ENOTDIR) => return Err(WorkspaceError::NotADirectory { path }),
        Err(e) => return Err(io("open", e)),
    };
    let st = fstat(&fd).map_err(|e| io("stat", e))?;
    if created {
        if st.st_uid != owner.0 || st.st_gid != owner.1 {
            fchown(
                &fd,
                Some(Uid::from_raw(owner.0)),
                Some(Gid::from_raw(owner.1)),
            )
            .map_err(|e| io("chown", e))?;
        }
        fchmod(&fd, Mode::from_bits_truncate(0o700)).map_err(|e| io("chmod", e))?;
    } else if st.st_uid != owner.0 && st.st_uid != final_owner {
        return Err(WorkspaceError::WrongOwner {
            path,
            found: st.st_uid,
            expected: owner.0,
        });
    }
    Ok(path)
}

/// What a home holds, as [`measure`] counts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HomeUsage {
    /// Sum of regular files' sizes (apparent, not blocks).
    pub bytes: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Sockets, fifos, devices.
    pub other: u64,
    /// False when the walk stopped at its deadline, entry bound or depth
    /// bound, or skipped a directory it could not open: the counts are then
    /// a lower bound.
    pub complete: bool,
}

/// Bounds of [`measure`].
#[derive(Debug, Clone, Copy)]
pub struct WalkBounds {
    pub deadline: std::time::Instant,
    pub max_entries: u64,
    /// Deeper directories are not entered (and make the result incomplete).
    pub max_depth: usize,
}

/// Counts the files under `<root>/<slug>` without ever following a
/// symlink: every directory is opened relative to its parent's fd with
/// `O_NOFOLLOW | O_DIRECTORY`, and entries are `fstatat`'d with
/// `AT_SYMLINK_NOFOLLOW`, so a tenant swapping a directory for a symlink
/// mid-walk gets it counted as a symlink, never walked. Fails only when the
/// home itself cannot be opened (e.g. `EACCES`: with subordinate ids it
/// belongs to an id the server cannot read).
pub fn measure(
    root: &Path,
    tenant: &Tenant,
    bounds: WalkBounds,
) -> Result<HomeUsage, WorkspaceError> {
    let root_fd = nix::fcntl::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| WorkspaceError::OpenRoot {
        path: root.to_path_buf(),
        errno,
    })?;
    let home =
        open_dir_at(&root_fd, Path::new(&tenant.slug)).map_err(|errno| WorkspaceError::Io {
            op: "open",
            path: tenant.workspace_in(root),
            errno,
        })?;
    let mut usage = HomeUsage {
        complete: true,
        ..Default::default()
    };
    let mut seen = 0u64;
    walk(home, 0, &bounds, &mut usage, &mut seen);
    Ok(usage)
}

fn open_dir_at(dir: &OwnedFd, name: &Path) -> Result<OwnedFd, Errno> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

fn walk(dir: OwnedFd, depth: usize, bounds: &WalkBounds, usage: &mut HomeUsage, seen: &mut u64) {
    use nix::sys::stat::{fstatat, SFlag};
    let Ok(dup) = dir.try_clone() else {
        usage.complete = false;
        return;
    };
    let Ok(mut entries) = nix::dir::Dir::from_fd(dup) else {
        usage.complete = false;
        return;
    };
    for entry in entries.iter() {
        let Ok(entry) = entry else {
            usage.complete = false;
            return;
        };
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        *seen += 1;
        if *seen > bounds.max_entries || std::time::Instant::now() >= bounds.deadline {
            usage.complete = false;
            return;
        }
        let Ok(st) = fstatat(&dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) else {
            usage.complete = false;
            continue;
        };
        match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFREG => {
                usage.files += 1;
                usage.bytes = usage.bytes.saturating_add(st.st_size.max(0) as u64);
            }
            SFlag::S_IFLNK => usage.symlinks += 1,
            SFlag::S_IFDIR => {
                usage.dirs += 1;
                if depth + 1 >= bounds.max_depth {
                    usage.complete = false;
                    continue;
                }
                match openat(
                    &dir,
                    name,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(sub) => walk(sub, depth + 1, bounds, usage, seen),
                    Err(_) => usage.complete = false,
                }
                if !usage.complete
                    && (*seen > bounds.max_entries || std::time::Instant::now() >= bounds.deadline)
                {
                    return;
                }
            }
            _ => usage.other += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    fn me() -> (u32, u32) {
        (Uid::effective().as_raw(), Gid::effective().as_raw())
    }

    #[test]
    fn measure_counts_without_following_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("ws");
        let t = Tenant::parse("alice").unwrap();
        let home = t.workspace_in(&root);
        fs::create_dir_all(home.join("a/b")).unwrap();
        fs::write(home.join("a/f"), b"12345").unwrap();
        fs::write(home.join("a/b/g"), b"xy").unwrap();
        // Outside the home: must not be counted through either link.
        fs::create_dir_all(d.path().join("outside")).unwrap();
        fs::write(d.path().join("outside/big"), vec![0u8; 4096]).unwrap();
        symlink(d.path().join("outside"), home.join("dirlink")).unwrap();
        symlink(d.path().join("outside/big"), home.join("filelink")).unwrap();
        let far = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let bounds = WalkBounds {
            deadline: far,
            max_entries: 1000,
            max_depth: 64,
        };
        let u = measure(&root, &t, bounds).unwrap();
        assert_eq!(
            (u.bytes, u.files, u.dirs, u.symlinks, u.complete),
            (7, 2, 2, 2, true)
        );
        // Bounded: an entry limit or a past deadline gives a partial count.
        let u = measure(
            &root,
            &t,
            WalkBounds {
                max_entries: 2,
                ..bounds
            },
        )
        .unwrap();
        assert!(!u.complete);
        let u = measure(
            &root,
            &t,
            WalkBounds {
                max_depth: 1,
                ..bounds
            },
        )
        .unwrap();
        assert!(!u.complete);
        assert_eq!(u.files, 0);
        // The home itself being a symlink is refused, not followed.
        let mallory = Tenant::parse("mallory").unwrap();
        symlink(d.path().join("outside"), mallory.workspace_in(&root)).unwrap();
        assert!(measure(&root, &mallory, bounds).is_err());
    }

    #[test]
    fn creates_private_home_once() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("ws");
        assert_eq!(ensure_root(&root, ROOT_MODE_PRIVATE).unwrap(), None);
        assert_eq!(
            fs::metadata(&root).unwrap().permissions().mode() & 0o7777,
            0o700
        );
        let t = Tenant::parse("alice").unwrap();
        let p = ensure_home(&root, &t, me(), me().0).unwrap();
        assert_eq!(p, root.join("alice"));
        let m = fs::metadata(&p).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o700);
        assert_eq!(m.uid(), me().0);
        fs::write(p.join("keep"), "x").unwrap();
        ensure_home(&root, &t, me(), me().0).unwrap();
        assert!(p.join("keep").exists());
    }

    /// Issue 10: roots were made 0711, so any local user could reach a
    /// home its tenant had opened up.
    #[test]
    fn a_loose_root_is_set_to_the_mode_asked() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("ws");
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            ensure_root(&root, ROOT_MODE_PRIVATE).unwrap(),
            Some(ModeChange {
                was: 0o755,
                now: 0o700
            })
        );
        assert_eq!(ensure_root(&root, ROOT_MODE_PRIVATE).unwrap(), None);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&root), 0o700);
        ensure_root(&root, ROOT_MODE_TRAVERSABLE).unwrap();
        assert_eq!(mode(&root), 0o711);
    }

    #[test]
    fn symlinked_home_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("ws");
        fs::create_dir(&root).unwrap();
        let outside = d.path().join("outside");
        fs::create_dir(&outside).unwrap();
        symlink(&outside, root.join("alice")).unwrap();
        let t = Tenant::parse("alice").unwrap();
        assert!(matches!(
            ensure_home(&root, &t, me(), me().0),
            Err(WorkspaceError::NotADirectory { .. })
        ));
        fs::write(root.join("bob"), "").unwrap();
        let t = Tenant::parse("bob").unwrap();
        assert!(matches!(
            ensure_home(&root, &t, me(), me().0),
            Err(WorkspaceError::NotADirectory { .. })
        ));
    }

    #[test]
    fn foreign_owner_is_reported() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("ws");
        ensure_root(&root, ROOT_MODE_PRIVATE).unwrap();
        let t = Tenant::parse("alice").unwrap();
        ensure_home(&root, &t, me(), me().0).unwrap();
        let other = (me().0.wrapping_add(1), me().1);
        assert!(matches!(
            ensure_home(&root, &t, other, other.0),
            Err(WorkspaceError::WrongOwner { .. })
        ));
    }
}
