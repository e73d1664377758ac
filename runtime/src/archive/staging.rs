//! All-or-nothing imports: an archive is unpacked into a staging directory
//! inside the destination (same filesystem), and only once all of it is
//! there are its entries renamed into place. A failure or a kill while
//! unpacking (the user's memory limit, a full disk, a quota) leaves only the
//! staging directory, which is removed on the failure, by the server after
//! a kill (`warren-import --clean`), and by the next import.
//!
//! Everything here walks by directory fds and never follows a symlink
//! (`O_NOFOLLOW | O_DIRECTORY`, `*at` calls with single names).

use std::hash::{BuildHasher, Hasher};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, Dir, FileType, FlockOperation, Mode, OFlags, CWD};
use rustix::io::Errno;

use super::rules::{Checker, Kind};
use super::ArchiveError;

/// Staging directories are `.warren-import-` and 16 hex digits, at the top
/// of the destination. Such names are reserved: `sweep` removes them.
pub const STAGING_PREFIX: &str = ".warren-import-";

/// How long [`create`] waits for another import's [`sweep`] of the same
/// destination to end.
const DEST_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Holds `dest` locked against a concurrent [`create`] or [`sweep`]: a
/// staging directory exists, unlocked, between its `mkdirat` and its
/// `flock`, and a sweep in that window would take it for a killed import's.
fn lock_dest(dest: BorrowedFd<'_>, wait: bool) -> Result<bool, Errno> {
    let deadline = std::time::Instant::now() + DEST_LOCK_WAIT;
    loop {
        match rfs::flock(dest, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(true),
            Err(Errno::WOULDBLOCK) if wait && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(Errno::WOULDBLOCK) if !wait => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// A fresh staging directory (0700) in `dest`: its name and fd.
pub(crate) fn create(dest: BorrowedFd<'_>) -> Result<(String, OwnedFd), ArchiveError> {
    lock_dest(dest, true).map_err(|e| ArchiveError::io("lock", ".", e.into()))?;
    let made = create_locked(dest);
    let _ = rfs::flock(dest, FlockOperation::Unlock);
    made
}

fn create_locked(dest: BorrowedFd<'_>) -> Result<(String, OwnedFd), ArchiveError> {
    loop {
        // RandomState is seeded from the OS: a name other processes of the
        // user cannot guess, so they cannot prepare it.
        let n = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let name = format!("{STAGING_PREFIX}{n:016x}");
        match rfs::mkdirat(dest, name.as_str(), Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(ArchiveError::io("create directory", name, e.into())),
        }
        let fd = open_dir(dest, name.as_str())
            .map_err(|e| ArchiveError::io("open", name.clone(), e.into()))?;
        // Held while the import runs, and released by the kernel when it
        // is killed: another import's sweep leaves a live one alone.
        rfs::flock(&fd, FlockOperation::NonBlockingLockExclusive)
            .map_err(|e| ArchiveError::io("lock", name.clone(), e.into()))?;
        return Ok((name, fd));
    }
}

/// True for a name [`create`] makes.
fn is_staging_name(name: &[u8]) -> bool {
    name.strip_prefix(STAGING_PREFIX.as_bytes())
        .is_some_and(|hex| hex.len() == 16 && hex.iter().all(u8::is_ascii_hexdigit))
}

/// Removes the staging directories that imports killed while unpacking
/// left in the directory `dest` (opened without following a symlink);
/// `warren-import --clean`. Returns how many were removed.
pub fn clean(dest: &Path) -> Result<usize, ArchiveError> {
    let fd = open_dir(CWD, dest)
        .map_err(|e| ArchiveError::io("open", dest.display().to_string(), e.into()))?;
    sweep(fd.as_fd())
}

/// Removes the staging directories left in `dest` by imports that were
/// killed. Returns how many were removed.
pub(crate) fn sweep(dest: BorrowedFd<'_>) -> Result<usize, ArchiveError> {
    // Another import is making its staging directory: sweep next time.
    if !lock_dest(dest, false).map_err(|e| ArchiveError::io("lock", ".", e.into()))? {
        return Ok(0);
    }
    let swept = sweep_locked(dest);
    let _ = rfs::flock(dest, FlockOperation::Unlock);
    swept
}

fn sweep_locked(dest: BorrowedFd<'_>) -> Result<usize, ArchiveError> {
    let mut names = Vec::new();
    let mut listing = Dir::read_from(dest).map_err(|e| ArchiveError::io("list", ".", e.into()))?;
    while let Some(entry) = listing.read() {
        let entry = entry.map_err(|e| ArchiveError::io("list", ".", e.into()))?;
        if is_staging_name(entry.file_name().to_bytes()) {
            names.push(entry.file_name().to_bytes().to_vec());
        }
    }
    let mut removed = 0;
    for name in &names {
        let err = |e: Errno| ArchiveError::io("remove", String::from_utf8_lossy(name), e.into());
        let fd = match open_dir(dest, name.as_slice()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => continue,
            // Not a directory (a symlink, a file): removed, never followed.
            Err(Errno::LOOP | Errno::NOTDIR) => {
                remove_tree(dest, name).map_err(err)?;
                removed += 1;
                continue;
            }
            Err(e) => return Err(err(e)),
        };
        match rfs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            // An import still running (the user's own, beside the server's).
            Err(Errno::WOULDBLOCK) => continue,
            Err(e) => return Err(err(e)),
        }
        remove_tree(dest, name).map_err(err)?;
        removed += 1;
    }
    Ok(removed)
}

fn open_dir<P: rustix::path::Arg>(dir: impl AsFd, name: P) -> Result<OwnedFd, Errno> {
    rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Removes `name` in `parent` and everything below it, without following
/// a symlink (a symlink is removed, never entered).
pub(crate) fn remove_tree(parent: BorrowedFd<'_>, name: &[u8]) -> Result<(), Errno> {
    match rfs::unlinkat(parent, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(e) => return Err(e),
    }
    let fd = open_dir(parent, name)?;
    // A directory left read-only must be writable to be emptied.
    let _ = rfs::fchmod(&fd, Mode::from_raw_mode(0o700));
    let mut children = Vec::new();
    let mut listing = Dir::read_from(&fd)?;
    while let Some(entry) = listing.read() {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            children.push(name);
        }
    }
    drop(listing);
    for child in &children {
        remove_tree(fd.as_fd(), child)?;
    }
    match rfs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Moves the unpacked archive from `staged` into `dest` along the archive's
/// tree of paths: what `dest` lacks is renamed whole, a directory both have
/// is entered, and files, symlinks and hard links replace what is there
/// (pass 2 already refused the conflicts). Renames only: no data is written,
/// so this is quick and cannot run out of space.
pub(crate) fn move_into_place(
    plan: &Checker,
    node: usize,
    staged: BorrowedFd<'_>,
    dest: BorrowedFd<'_>,
    path: &mut Vec<Vec<u8>>,
) -> Result<(), ArchiveError> {
    for (name, child) in plan.children(node) {
        path.push(name.to_vec());
        let io = |op: &'static str, e: Errno, path: &[Vec<u8>]| {
            ArchiveError::io(op, super::rules::shown(path), e.into())
        };
        let is_dir = matches!(plan.kind(child), None | Some(Kind::Dir));
        let existing = match rfs::statat(dest, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Some(st),
            Err(Errno::NOENT) => None,
            Err(e) => return Err(io("stat", e, path)),
        };
        match existing {
            Some(st) if is_dir && FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                let to = open_dir(dest, name).map_err(|e| io("open", e, path))?;
                // A read-only directory of ours that the archive lists
                // receives its entries now; its mode comes from the archive
                // at the end.
                if st.st_mode & 0o300 != 0o300 {
                    rfs::fchmod(&to, Mode::from_raw_mode((st.st_mode & 0o777) | 0o700))
                        .map_err(|e| io("chmod", e, path))?;
                }
                let from = open_dir(staged, name).map_err(|e| io("open", e, path))?;
                move_into_place(plan, child, from.as_fd(), to.as_fd(), path)?;
            }
            _ => {
                rfs::renameat(staged, name, dest, name).map_err(|e| match e {
                    Errno::ISDIR | Errno::NOTDIR | Errno::NOTEMPTY | Errno::EXIST => {
                        ArchiveError::Conflict {
                            path: super::rules::shown(path),
                            reason: "the workspace changed during the import".into(),
                        }
                    }
                    e => io("rename", e, path),
                })?;
            }
        }
        path.pop();
    }
    Ok(())
}
