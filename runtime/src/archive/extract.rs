//! Unpacking a checked archive into a directory, through directory fds
//! only.
//!
//! Every path is resolved one validated name at a time from the
//! destination's fd with `openat(O_NOFOLLOW | O_DIRECTORY)`: a name is never
//! `..` and never contains `/`, and a symlink (or a file) where a directory
//! is expected fails with ELOOP (ENOTDIR) instead of being followed. That is
//! what `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` would give, and it
//! also works on kernels and under seccomp profiles without openat2.
//! New files, symlinks and hard links are made under a temporary name and
//! renamed over the target, which replaces a symlink there instead of
//! writing through it.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, CWD};
use rustix::io::Errno;

use super::rules::{shown, Checked, Checker, Kind};
use super::scan::{scan, stream_err};
use super::staging;
use super::{ArchiveError, ArchiveLimits, Summary};

/// Unpacks the tar.gz `archive` into the directory `dest` (opened without
/// following a symlink), after checking the whole archive against the
/// rules and the destination; see [`extract_at`].
pub fn extract<R: Read + Seek>(
    archive: R,
    dest: &Path,
    limits: &ArchiveLimits,
) -> Result<Summary, ArchiveError> {
    let fd = open_dir_at(CWD, dest)
        .map_err(|e| ArchiveError::io("open", dest.display().to_string(), e.into()))?;
    extract_at(archive, fd.as_fd(), limits)
}

/// Unpacks the tar.gz `archive` (read from its current position) into the
/// directory `dest`, in three passes:
/// 1. the whole archive against the rules and `limits` (as [`super::validate`]);
/// 2. the archive against `dest`: no symlink or file where the archive
///    needs a directory, no directory where it puts a file, and writable
///    directories (so a refused archive writes nothing);
/// 3. unpacking, every entry checked again as it is written; files,
///    symlinks and hard links replace what is there, directories get their
///    modes and times last (deepest first), and `dest` itself keeps its own.
///
/// Modes keep only the permission bits; ownership is never set; times are
/// kept. Input that changes between the passes is still checked in pass 3,
/// but could then be refused after part of it was written; so could a
/// destination that someone else changes meanwhile, or a full disk.
pub fn extract_at<R: Read + Seek>(
    mut archive: R,
    dest: BorrowedFd<'_>,
    limits: &ArchiveLimits,
) -> Result<Summary, ArchiveError> {
    let read_err = |e| ArchiveError::io("read", "the archive", e);
    let start = archive.stream_position().map_err(read_err)?;
    let plan = scan(&mut archive, limits, |_, _| Ok(()))?;
    check_destination(&plan, Checker::ROOT, dest, &mut Vec::new())?;
    archive.seek(SeekFrom::Start(start)).map_err(read_err)?;
    // Leftovers of imports that were killed go first; then this one is
    // unpacked aside, so a failure or a kill changes nothing.
    staging::sweep(dest)?;
    let (name, staged) = staging::create(dest)?;
    let result = unpack_and_move(&mut archive, limits, &plan, staged.as_fd(), dest);
    drop(staged);
    let removed = staging::remove_tree(dest, name.as_bytes())
        .map_err(|e| ArchiveError::io("remove", name, e.into()));
    let summary = result?;
    removed?;
    Ok(summary)
}

/// Pass 3: unpacks into `staged`, then, with the whole archive there,
/// moves it into `dest` and sets the directories' modes and times.
fn unpack_and_move<R: Read>(
    archive: &mut R,
    limits: &ArchiveLimits,
    plan: &Checker,
    staged: BorrowedFd<'_>,
    dest: BorrowedFd<'_>,
) -> Result<Summary, ArchiveError> {
    let mut writer = Writer {
        dest: staged,
        parent: None,
        dirs: Vec::new(),
        next_temp: Cell::new(0),
    };
    let checker = scan(archive, limits, |entry, data| writer.write(entry, data))?;
    writer.parent = None;
    staging::move_into_place(plan, Checker::ROOT, staged, dest, &mut Vec::new())?;
    writer.dest = dest;
    writer.finish()?;
    Ok(checker.summary())
}

/// `input` if it can seek; otherwise a copy of it (at most
/// [`ArchiveLimits::max_archive_bytes`]) in an unnamed temporary file in
/// `spool_dir`, which disappears when closed.
pub fn seekable(
    mut input: File,
    spool_dir: &Path,
    limits: &ArchiveLimits,
) -> Result<File, ArchiveError> {
    if input.stream_position().is_ok() {
        return Ok(input);
    }
    let shown = spool_dir.display().to_string();
    let fd = rfs::openat(
        CWD,
        spool_dir,
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| ArchiveError::io("create a temporary file in", shown.clone(), e.into()))?;
    let mut spool = File::from(fd);
    let max = limits.max_archive_bytes();
    let copied = io::copy(&mut (&mut input).take(max + 1), &mut spool)
        .map_err(|e| ArchiveError::io("spool the archive into", shown, e))?;
    if copied > max {
        return Err(ArchiveError::TooLarge { limit: max });
    }
    spool
        .seek(SeekFrom::Start(0))
        .map_err(|e| ArchiveError::io("read", "the archive", e))?;
    Ok(spool)
}

fn open_dir_at<P: rustix::path::Arg>(dir: impl AsFd, name: P) -> Result<OwnedFd, Errno> {
    rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Opens `comps` below `root` one name at a time, never following a
/// symlink; with `create`, missing directories are made (mode 0755).
fn open_dir(root: BorrowedFd<'_>, comps: &[Vec<u8>], create: bool) -> Result<OwnedFd, Errno> {
    let mut cur = open_dir_at(root, c".")?;
    for c in comps {
        if create {
            match rfs::mkdirat(&cur, c.as_slice(), Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e),
            }
        }
        cur = open_dir_at(&cur, c.as_slice())?;
    }
    Ok(cur)
}

fn type_name(t: FileType) -> &'static str {
    match t {
        FileType::Symlink => "a symlink (never followed)",
        FileType::Directory => "a directory",
        FileType::RegularFile => "a file",
        _ => "a special file",
    }
}

/// Pass 2: walks the archive's tree of paths against what exists below
/// `dir`. Only stats and opens directories; writes nothing.
fn check_destination(
    plan: &Checker,
    node: usize,
    dir: BorrowedFd<'_>,
    path: &mut Vec<Vec<u8>>,
) -> Result<(), ArchiveError> {
    if plan.children(node).next().is_some() {
        let writable = rfs::accessat(
            dir,
            c".",
            rfs::Access::WRITE_OK | rfs::Access::EXEC_OK,
            AtFlags::EACCESS,
        );
        if let Err(e) = writable {
            // A read-only directory of ours that the archive lists (and so
            // sets the mode of anyway) is opened up while unpacking.
            let euid = rustix::process::geteuid().as_raw();
            let ours = node != Checker::ROOT
                && plan.kind(node) == Some(Kind::Dir)
                && rfs::fstat(dir).is_ok_and(|st| st.st_uid == euid);
            if !ours {
                return Err(ArchiveError::Conflict {
                    path: shown(path),
                    reason: format!("the directory is not writable ({e})"),
                });
            }
        }
    }
    for (name, child) in plan.children(node) {
        path.push(name.to_vec());
        let conflict = |reason: String| ArchiveError::Conflict {
            path: shown(path),
            reason,
        };
        let existing = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => FileType::from_raw_mode(st.st_mode),
            Err(Errno::NOENT) => {
                path.pop();
                continue;
            }
            Err(e) => return Err(ArchiveError::io("stat", shown(path), e.into())),
        };
        match plan.kind(child) {
            None | Some(Kind::Dir) => {
                if existing != FileType::Directory {
                    return Err(conflict(format!(
                        "the workspace has {} where the archive has a directory",
                        type_name(existing)
                    )));
                }
                let sub = open_dir_at(dir, name)
                    .map_err(|e| ArchiveError::io("open", shown(path), e.into()))?;
                check_destination(plan, child, sub.as_fd(), path)?;
            }
            Some(kind) => {
                if existing == FileType::Directory {
                    return Err(conflict(format!(
                        "the workspace has a directory where the archive has a {}",
                        match kind {
                            Kind::Symlink => "symlink",
                            _ => "file",
                        }
                    )));
                }
            }
        }
        path.pop();
    }
    Ok(())
}

/// Pass 3: writes entries as the scan hands them over.
struct Writer<'a> {
    dest: BorrowedFd<'a>,
    /// The last parent directory opened, reused by its next entries.
    parent: Option<(Vec<Vec<u8>>, OwnedFd)>,
    /// Directories whose mode and times are set at the end.
    dirs: Vec<(Vec<Vec<u8>>, u32, i64)>,
    next_temp: Cell<u64>,
}

fn timestamps(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

impl Writer<'_> {
    fn write(&mut self, e: &Checked, data: &mut dyn Read) -> Result<(), ArchiveError> {
        // The root keeps its own mode and times: they are the host's.
        let Some((name, parent_comps)) = e.comps.split_last() else {
            return Ok(());
        };
        let io = |op: &'static str, err: Errno| ArchiveError::io(op, e.name.clone(), err.into());
        let parent = parent_fd(&mut self.parent, self.dest, parent_comps, &e.name)?;
        let counter = &self.next_temp;
        let name = name.as_slice();
        match e.kind {
            Kind::Dir => {
                match rfs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
                    Ok(()) => {}
                    Err(Errno::EXIST) => {
                        let st = rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
                            .map_err(|err| io("stat", err))?;
                        let t = FileType::from_raw_mode(st.st_mode);
                        if t != FileType::Directory {
                            return Err(ArchiveError::Conflict {
                                path: e.name.clone(),
                                reason: format!("the workspace has {} there", type_name(t)),
                            });
                        }
                        // Its entries come next; its own mode comes last.
                        if st.st_mode & 0o300 != 0o300 {
                            let fd = open_dir_at(parent, name).map_err(|err| io("open", err))?;
                            rfs::fchmod(&fd, Mode::from_raw_mode((st.st_mode & 0o777) | 0o700))
                                .map_err(|err| io("chmod", err))?;
                        }
                    }
                    Err(err) => return Err(io("create directory", err)),
                }
                self.dirs.push((e.comps.clone(), e.mode, e.mtime));
            }
            Kind::File => {
                let (temp, fd) = temp_file(counter, parent).map_err(|err| io("create", err))?;
                let result = write_file(fd, e, data).and_then(|()| {
                    rfs::renameat(parent, &temp, parent, name).map_err(|err| io("rename", err))
                });
                if result.is_err() {
                    let _ = rfs::unlinkat(parent, &temp, AtFlags::empty());
                }
                result?;
            }
            Kind::Symlink => {
                let temp = temp_name(counter, |t| rfs::symlinkat(e.link.as_slice(), parent, t))
                    .map_err(|err| io("create symlink", err))?;
                let result = rfs::utimensat(
                    parent,
                    &temp,
                    &timestamps(e.mtime),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .and_then(|()| rfs::renameat(parent, &temp, parent, name));
                if let Err(err) = result {
                    let _ = rfs::unlinkat(parent, &temp, AtFlags::empty());
                    return Err(io("create symlink", err));
                }
            }
            Kind::HardLink => {
                let (target_name, target_dir) = e
                    .link_comps
                    .split_last()
                    .expect("checked: a hard link names a file");
                let target_dir = open_dir(self.dest, target_dir, false)
                    .map_err(|err| io("open the hard link's target directory", err))?;
                let temp = temp_name(counter, |t| {
                    rfs::linkat(
                        &target_dir,
                        target_name.as_slice(),
                        parent,
                        t,
                        AtFlags::empty(),
                    )
                })
                .map_err(|err| io("create hard link", err))?;
                let result = rfs::renameat(parent, &temp, parent, name);
                // Renaming onto another link of the same file does nothing
                // and leaves the temporary name: remove it either way.
                let _ = rfs::unlinkat(parent, &temp, AtFlags::empty());
                result.map_err(|err| io("create hard link", err))?;
            }
        }
        Ok(())
    }

    /// Directories' modes and times, deepest first: a directory made
    /// read-only must already hold its children, and adding them would
    /// change its mtime.
    fn finish(&mut self) -> Result<(), ArchiveError> {
        self.parent = None;
        self.dirs.sort_by_key(|d| std::cmp::Reverse(d.0.len()));
        for (comps, mode, mtime) in &self.dirs {
            let io = |op: &'static str, err: Errno| ArchiveError::io(op, shown(comps), err.into());
            let fd = open_dir(self.dest, comps, false).map_err(|err| io("open", err))?;
            rfs::fchmod(&fd, Mode::from_raw_mode(*mode)).map_err(|err| io("chmod", err))?;
            rfs::futimens(&fd, &timestamps(*mtime)).map_err(|err| io("set times of", err))?;
        }
        Ok(())
    }
}

/// The directory holding an entry, created as needed, cached for the
/// entries after it.
fn parent_fd<'a>(
    cache: &'a mut Option<(Vec<Vec<u8>>, OwnedFd)>,
    dest: BorrowedFd<'_>,
    comps: &[Vec<u8>],
    name: &str,
) -> Result<BorrowedFd<'a>, ArchiveError> {
    if cache.as_ref().is_none_or(|(p, _)| p.as_slice() != comps) {
        let fd = open_dir(dest, comps, true).map_err(|err| match err {
            Errno::LOOP | Errno::NOTDIR => ArchiveError::Conflict {
                path: name.to_string(),
                reason: format!(
                    "the workspace has a symlink (never followed) or a file at {:?}",
                    shown(comps)
                ),
            },
            err => ArchiveError::io("open the directory of", name.to_string(), err.into()),
        })?;
        *cache = Some((comps.to_vec(), fd));
    }
    Ok(cache.as_ref().map(|(_, fd)| fd.as_fd()).expect("just set"))
}

/// Runs `make` with fresh temporary names until one does not exist yet.
fn temp_name(
    counter: &Cell<u64>,
    mut make: impl FnMut(&str) -> Result<(), Errno>,
) -> Result<String, Errno> {
    loop {
        let n = counter.get();
        counter.set(n + 1);
        let name = format!(".warren-import.{}.{n}", std::process::id());
        match make(&name) {
            Ok(()) => return Ok(name),
            Err(Errno::EXIST) if n < 1_000_000 => continue,
            Err(e) => return Err(e),
        }
    }
}

fn temp_file(counter: &Cell<u64>, parent: BorrowedFd<'_>) -> Result<(String, OwnedFd), Errno> {
    let mut fd = None;
    let name = temp_name(counter, |t| {
        fd = Some(rfs::openat(
            parent,
            t,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?);
        Ok(())
    })?;
    Ok((name, fd.expect("created")))
}

/// Copies an entry's data into a new file, then sets its mode and times.
fn write_file(fd: OwnedFd, e: &Checked, data: &mut dyn Read) -> Result<(), ArchiveError> {
    let mut file = File::from(fd);
    let mut buf = vec![0u8; 64 << 10];
    let mut written = 0u64;
    loop {
        let n = data.read(&mut buf).map_err(stream_err)?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n])
            .map_err(|err| ArchiveError::io("write", e.name.clone(), err))?;
        written += n as u64;
    }
    // Never put a short file in place, whatever the scan says afterwards.
    if written != e.size {
        return Err(ArchiveError::Truncated);
    }
    let io = |op: &'static str, err: Errno| ArchiveError::io(op, e.name.clone(), err.into());
    rfs::fchmod(&file, Mode::from_raw_mode(e.mode)).map_err(|err| io("chmod", err))?;
    rfs::futimens(&file, &timestamps(e.mtime)).map_err(|err| io("set times of", err))?;
    Ok(())
}
