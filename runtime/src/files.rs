//! One file or folder in and out of a home, by path: what `warren-get` and
//! `warren-put` do inside the sandbox, as its user (docs/api.md, "Files").
//!
//! A path is relative to the home and checked as text first ([`parse`]):
//! no `..`, no absolute path, no NUL. It is then resolved one name at a
//! time from the home's fd with `openat(O_NOFOLLOW)`, as `archive::extract`
//! resolves entries (the sandbox's seccomp filter answers openat2 with
//! ENOSYS): a symlink anywhere on the path is refused, never followed, so
//! no path leads out of the home. Every check runs before anything is
//! written, so a refused request changes nothing; a file is written under
//! a temporary name and renamed into place, so a failed one leaves no
//! half-written file.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::archive::{
    self, ArchiveError, ArchiveLimits, Summary, MAX_COMPONENT_BYTES, MAX_DEPTH, MAX_PATH_BYTES,
};

/// Why a path was refused, or a file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The path's text breaks a rule (`..`, absolute, NUL, too long).
    #[error("bad path {path:?}: {why}")]
    BadPath { path: String, why: &'static str },
    #[error("{path:?} goes through the symlink {link:?} (symlinks are never followed)")]
    Symlink { path: String, link: String },
    #[error("{path:?}: {at:?} is not a directory")]
    NotDirectory { path: String, at: String },
    #[error("no such file or directory: {0:?}")]
    NotFound(String),
    #[error("{0:?} is a directory (send a tar.gz with ?archive=tar.gz to unpack into it)")]
    IsDirectory(String),
    #[error("{0:?} is not a regular file or a directory")]
    Special(String),
    #[error("{0}")]
    Archive(#[from] ArchiveError),
    #[error("{op} {path:?}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Exit statuses of `warren-get` and `warren-put`, which the server turns
/// back into its answer (domain `manage::files`).
pub mod exit {
    /// The path or the input is refused (400; nothing was written).
    pub const REFUSED: u8 = 1;
    /// The path names a directory where a file is needed, or the like (409).
    pub const CONFLICT: u8 = 5;
    /// Reading or writing failed (the server's or the disk's fault).
    pub const FAILED: u8 = 3;
    /// Nothing at the path (404).
    pub const NOT_FOUND: u8 = 4;
    /// Over a limit (413).
    pub const TOO_LARGE: u8 = 6;
}

impl FileError {
    /// The tool's exit status for this error (see [`exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            FileError::BadPath { .. } | FileError::Symlink { .. } | FileError::Special(_) => {
                exit::REFUSED
            }
            FileError::NotDirectory { .. } | FileError::IsDirectory(_) => exit::CONFLICT,
            FileError::NotFound(_) => exit::NOT_FOUND,
            FileError::Io { source, .. } if is_full(source) => exit::TOO_LARGE,
            FileError::Io { .. } => exit::FAILED,
            FileError::Archive(ArchiveError::Io { source, .. }) if is_full(source) => {
                exit::TOO_LARGE
            }
            FileError::Archive(ArchiveError::Io { .. }) => exit::FAILED,
            FileError::Archive(ArchiveError::Conflict { .. }) => exit::CONFLICT,
            FileError::Archive(
                ArchiveError::EntryTooBig { .. }
                | ArchiveError::TooManyBytes { .. }
                | ArchiveError::TooLarge { .. }
                | ArchiveError::TooManyEntries { .. }
                | ArchiveError::TooMuchMetadata { .. },
            ) => exit::TOO_LARGE,
            FileError::Archive(_) => exit::REFUSED,
        }
    }
}

/// ENOSPC or EDQUOT: the home's disk or quota is full.
fn is_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// The names of a path relative to the home; empty for the home itself.
/// Empty names and `.` are skipped (`a//b/./c` is `a/b/c`).
pub fn parse(path: &str) -> Result<Vec<Vec<u8>>, FileError> {
    let bad = |why| FileError::BadPath {
        path: path.to_string(),
        why,
    };
    if path.contains('\0') {
        return Err(bad("NUL byte in the path"));
    }
    if path.starts_with('/') {
        return Err(bad(
            "absolute paths are not allowed (paths are relative to the home)",
        ));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(bad("longer than 4096 bytes"));
    }
    let mut comps = Vec::new();
    for name in path.split('/') {
        match name {
            "" | "." => {}
            ".." => return Err(bad("`..` is not allowed (the path must stay in the home)")),
            n if n.len() > MAX_COMPONENT_BYTES => {
                return Err(bad("a name is longer than 255 bytes"))
            }
            n => comps.push(n.as_bytes().to_vec()),
        }
    }
    if comps.len() > MAX_DEPTH {
        return Err(bad("nested more than 256 levels deep"));
    }
    Ok(comps)
}

fn shown(comps: &[Vec<u8>]) -> String {
    comps
        .iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn open_dir_at<P: rustix::path::Arg>(dir: impl AsFd, name: P) -> Result<OwnedFd, Errno> {
    rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// What is at `comps[..=i]` below `dir`, by its own type (never followed).
fn kind_at(dir: BorrowedFd<'_>, name: &[u8]) -> Result<Option<FileType>, Errno> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Opens the directories of `comps` below `root` as far as they exist,
/// never following a symlink: the deepest one and how many names were
/// opened. A symlink or a file on the way is refused.
fn existing_dirs(root: BorrowedFd<'_>, comps: &[Vec<u8>]) -> Result<(OwnedFd, usize), FileError> {
    let io = |op, e: Errno, upto: usize| FileError::Io {
        op,
        path: shown(&comps[..upto]),
        source: e.into(),
    };
    let mut cur = open_dir_at(root, c".").map_err(|e| io("open", e, 0))?;
    for (i, name) in comps.iter().enumerate() {
        match kind_at(cur.as_fd(), name).map_err(|e| io("stat", e, i + 1))? {
            None => return Ok((cur, i)),
            Some(FileType::Directory) => {}
            Some(FileType::Symlink) => {
                return Err(FileError::Symlink {
                    path: shown(comps),
                    link: shown(&comps[..=i]),
                })
            }
            Some(_) => {
                return Err(FileError::NotDirectory {
                    path: shown(comps),
                    at: shown(&comps[..=i]),
                })
            }
        }
        // A symlink swapped in since the stat fails here with ELOOP.
        cur = open_dir_at(&cur, name.as_slice()).map_err(|e| match e {
            Errno::LOOP | Errno::NOTDIR => FileError::Symlink {
                path: shown(comps),
                link: shown(&comps[..=i]),
            },
            e => io("open", e, i + 1),
        })?;
    }
    Ok((cur, comps.len()))
}

/// What [`open`] found.
pub enum Found {
    /// A regular file, open for reading, and its size.
    File(File, u64),
    /// A directory, open for [`archive::export_at`].
    Dir(OwnedFd),
}

/// Opens what is at `comps` below `root` for reading: a regular file or a
/// directory, reached without following a symlink.
pub fn open(root: BorrowedFd<'_>, comps: &[Vec<u8>]) -> Result<Found, FileError> {
    let Some((name, parents)) = comps.split_last() else {
        return Ok(Found::Dir(existing_dirs(root, comps)?.0));
    };
    let (dir, opened) = existing_dirs(root, parents)?;
    if opened < parents.len() {
        return Err(FileError::NotFound(shown(comps)));
    }
    let name = name.as_slice();
    let io = |op, e: Errno| FileError::Io {
        op,
        path: shown(comps),
        source: e.into(),
    };
    match kind_at(dir.as_fd(), name).map_err(|e| io("stat", e))? {
        None => Err(FileError::NotFound(shown(comps))),
        Some(FileType::RegularFile) => {
            // NONBLOCK: a fifo swapped in since the stat must not hang us;
            // the fstat below refuses it.
            let fd = rfs::openat(
                &dir,
                name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| match e {
                Errno::LOOP => FileError::Symlink {
                    path: shown(comps),
                    link: shown(comps),
                },
                e => io("open", e),
            })?;
            let st = rfs::fstat(&fd).map_err(|e| io("stat", e))?;
            if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                return Err(FileError::Special(shown(comps)));
            }
            let file = File::from(fd);
            // Reads of a regular file ignore O_NONBLOCK.
            Ok(Found::File(file, st.st_size.max(0) as u64))
        }
        Some(FileType::Directory) => open_dir_at(&dir, name)
            .map(Found::Dir)
            .map_err(|e| match e {
                Errno::LOOP | Errno::NOTDIR => FileError::Symlink {
                    path: shown(comps),
                    link: shown(comps),
                },
                e => io("open", e),
            }),
        Some(FileType::Symlink) => Err(FileError::Symlink {
            path: shown(comps),
            link: shown(comps),
        }),
        Some(_) => Err(FileError::Special(shown(comps))),
    }
}

/// Writes `out` the way `warren-get` answers: a line `file` or `dir`, then
/// the file's bytes or the directory as tar.gz (within `limits`).
pub fn get<W: Write>(
    root: BorrowedFd<'_>,
    comps: &[Vec<u8>],
    mut out: W,
    limits: &ArchiveLimits,
) -> Result<(), FileError> {
    let write_err = |e| FileError::Io {
        op: "write",
        path: "stdout".into(),
        source: e,
    };
    match open(root, comps)? {
        Found::File(mut file, _) => {
            out.write_all(b"file\n").map_err(write_err)?;
            io::copy(&mut file, &mut out).map_err(|e| FileError::Io {
                op: "copy",
                path: shown(comps),
                source: e,
            })?;
        }
        Found::Dir(dir) => {
            out.write_all(b"dir\n").map_err(write_err)?;
            let exported = archive::export_at(dir.as_fd(), &mut out, limits)?;
            for s in &exported.skipped {
                eprintln!("warren-get: left out {:?}: {}", s.path, s.reason);
            }
        }
    }
    out.flush().map_err(write_err)
}

/// Directories made for a put, removed again (deepest first) when the put
/// fails, so a failed put leaves nothing behind.
struct Made<'a> {
    parent: OwnedFd,
    names: &'a [Vec<u8>],
    keep: bool,
}

impl Drop for Made<'_> {
    fn drop(&mut self) {
        if self.keep || self.names.is_empty() {
            return;
        }
        for depth in (1..=self.names.len()).rev() {
            let (name, above) = self.names[..depth].split_last().expect("depth >= 1");
            let Ok(mut dir) = open_dir_at(&self.parent, c".") else {
                return;
            };
            for n in above {
                match open_dir_at(&dir, n.as_slice()) {
                    Ok(d) => dir = d,
                    Err(_) => return,
                }
            }
            let _ = rfs::unlinkat(&dir, name.as_slice(), AtFlags::REMOVEDIR);
        }
    }
}

/// Makes the missing directories `names` below `parent` (mode 0777 less
/// the umask, as mkdir -p does): the last one, and a guard that removes
/// them all unless the put succeeds.
fn make_dirs<'a>(
    parent: OwnedFd,
    names: &'a [Vec<u8>],
    path: &[Vec<u8>],
) -> Result<(OwnedFd, Made<'a>), FileError> {
    let mut made = Made {
        parent,
        names: &[],
        keep: false,
    };
    let mut cur = open_dir_at(&made.parent, c".").map_err(|e| FileError::Io {
        op: "open",
        path: shown(path),
        source: e.into(),
    })?;
    for (i, name) in names.iter().enumerate() {
        let io = |op, e: Errno| FileError::Io {
            op,
            path: shown(path),
            source: e.into(),
        };
        rfs::mkdirat(&cur, name.as_slice(), Mode::from_raw_mode(0o777))
            .map_err(|e| io("create directory", e))?;
        made.names = &names[..=i];
        cur = open_dir_at(&cur, name.as_slice()).map_err(|e| io("open", e))?;
    }
    Ok((cur, made))
}

/// Writes `input` to the file at `comps` below `root`, making missing
/// parent directories; an existing file is replaced (keeping its mode),
/// never written through. Returns the bytes written.
pub fn put_file(
    root: BorrowedFd<'_>,
    comps: &[Vec<u8>],
    input: &mut dyn Read,
) -> Result<u64, FileError> {
    let Some((name, parents)) = comps.split_last() else {
        return Err(FileError::BadPath {
            path: String::new(),
            why: "name a file (the home itself is a directory)",
        });
    };
    let io = |op, e: io::Error| FileError::Io {
        op,
        path: shown(comps),
        source: e,
    };
    let (dir, opened) = existing_dirs(root, parents)?;
    let mut mode = 0o666;
    if opened == parents.len() {
        match kind_at(dir.as_fd(), name).map_err(|e| io("stat", e.into()))? {
            None => {}
            Some(FileType::RegularFile) => {
                let st = rfs::statat(&dir, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| io("stat", e.into()))?;
                mode = st.st_mode & 0o777;
            }
            Some(FileType::Directory) => return Err(FileError::IsDirectory(shown(comps))),
            Some(FileType::Symlink) => {
                return Err(FileError::Symlink {
                    path: shown(comps),
                    link: shown(comps),
                })
            }
            Some(_) => return Err(FileError::Special(shown(comps))),
        }
    }
    // Every check passed: from here on, things are written.
    let (parent, mut made) = make_dirs(dir, &parents[opened..], comps)?;
    let counter = Cell::new(0u64);
    let (temp, fd) =
        temp_file(&counter, parent.as_fd(), mode).map_err(|e| io("create", e.into()))?;
    let mut file = File::from(fd);
    let result = io::copy(input, &mut file)
        .map_err(|e| io("write", e))
        .and_then(|n| {
            // The umask may have cut the kept mode.
            if mode != 0o666 {
                rfs::fchmod(&file, Mode::from_raw_mode(mode)).map_err(|e| io("chmod", e.into()))?;
            }
            rfs::renameat(&parent, &temp, &parent, name.as_slice())
                .map_err(|e| io("rename", e.into()))?;
            Ok(n)
        });
    if result.is_err() {
        let _ = rfs::unlinkat(&parent, &temp, AtFlags::empty());
    }
    made.keep = result.is_ok();
    result
}

fn temp_file(
    counter: &Cell<u64>,
    parent: BorrowedFd<'_>,
    mode: u32,
) -> Result<(String, OwnedFd), Errno> {
    loop {
        let n = counter.get();
        counter.set(n + 1);
        let name = format!(".warren-put.{}.{n}", std::process::id());
        match rfs::openat(
            parent,
            name.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        ) {
            Ok(fd) => return Ok((name, fd)),
            Err(Errno::EXIST) if n < 1_000_000 => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Unpacks the tar.gz `archive` into the directory at `comps` below
/// `root` (made, with its missing parents, when missing) under the rules
/// and limits of `archive::extract`: a refused archive writes nothing, not
/// even the directories.
pub fn put_archive<R: Read + Seek>(
    root: BorrowedFd<'_>,
    comps: &[Vec<u8>],
    mut input: R,
    limits: &ArchiveLimits,
) -> Result<Summary, FileError> {
    let (dir, opened) = existing_dirs(root, comps)?;
    if opened < comps.len() {
        // The archive is checked before its directory is made.
        let read_err = |e| {
            FileError::Archive(ArchiveError::Io {
                op: "read",
                path: "the archive".into(),
                source: e,
            })
        };
        let start = input.stream_position().map_err(read_err)?;
        archive::validate(&mut input, limits)?;
        input.seek(SeekFrom::Start(start)).map_err(read_err)?;
    }
    let (dest, mut made) = make_dirs(dir, &comps[opened..], comps)?;
    let summary = archive::extract_at(input, dest.as_fd(), limits)?;
    made.keep = true;
    Ok(summary)
}

#[cfg(test)]
mod tests;
