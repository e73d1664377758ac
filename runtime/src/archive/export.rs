//! Writing a directory as tar.gz: walked by directory fds, never following
//! a symlink, and holding only what `extract` accepts, so an export can
//! always be imported again.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::Compression;
use rustix::fs::{self as rfs, AtFlags, Dir, FileType, Mode, OFlags, Stat, CWD};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use tar::{EntryType, Header};

use super::rules::{check_symlink_target, MAX_DEPTH, MAX_PATH_BYTES};
use super::{ArchiveError, ArchiveLimits, Summary};

/// What [`export`] wrote, and what it left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exported {
    pub summary: Summary,
    pub skipped: Vec<Skipped>,
}

/// An entry left out of an export, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// Writes the contents of `dir` (not `dir` itself: paths are relative,
/// without a leading `./`) to `out` as tar.gz.
///
/// Symlinks are stored as symlinks, never followed; files with several
/// links as one file and hard links to it. Modes keep the permission bits
/// (setuid, setgid and sticky are dropped), owners are stored as 0.
/// Left out, and listed in [`Exported::skipped`]: sockets, fifos and
/// device nodes, symlinks pointing outside `dir`, names too long or too
/// deep, and what cannot be read. Going over `limits` is an error (the
/// archive written so far is incomplete): an export is importable under
/// the same limits.
pub fn export<W: Write>(
    dir: &Path,
    out: W,
    limits: &ArchiveLimits,
) -> Result<Exported, ArchiveError> {
    export_at(open_root(dir)?.as_fd(), out, limits)
}

/// [`export`] as a plain tar ([`export_tar_at`]).
pub fn export_tar<W: Write>(
    dir: &Path,
    out: W,
    limits: &ArchiveLimits,
) -> Result<Exported, ArchiveError> {
    export_tar_at(open_root(dir)?.as_fd(), out, limits)
}

/// The directory to export, not followed if it is a symlink.
fn open_root(dir: &Path) -> Result<OwnedFd, ArchiveError> {
    rfs::openat(
        CWD,
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ArchiveError::io("open", dir.display().to_string(), e.into()))
}

/// [`export`] of the directory open at `root` (resolved by the caller,
/// as `files::open` does without following a symlink).
pub fn export_at<W: Write>(
    root: BorrowedFd<'_>,
    out: W,
    limits: &ArchiveLimits,
) -> Result<Exported, ArchiveError> {
    let mut gz = gzip(Cut::new(out));
    match export_tar_at(root, &mut gz, limits) {
        Ok(exported) => {
            gz.finish()
                .map_err(|e| ArchiveError::io("write", "the archive", e))?;
            Ok(exported)
        }
        Err(e) => {
            // No gzip trailer either (the encoder writes one when dropped).
            gz.get_mut().cut();
            Err(e)
        }
    }
}

/// [`export_at`] without the compression: a plain tar (what
/// `warren-export --format tar` writes for the server to compress outside
/// the tenant's CPU limit, docs/archives.md). Same entries, same rules;
/// on an error the tar written so far has no end marker.
pub fn export_tar_at<W: Write>(
    root: BorrowedFd<'_>,
    out: W,
    limits: &ArchiveLimits,
) -> Result<Exported, ArchiveError> {
    let mut walk = Walk {
        tar: tar::Builder::new(Cut::new(out)),
        limits: *limits,
        seen: 0,
        exported: Exported::default(),
        links: HashMap::new(),
    };
    if let Err(e) = walk.dir(root, &[], 0) {
        // The builder writes the end marker when dropped: an archive cut
        // short must not look complete.
        walk.tar.get_mut().cut();
        return Err(e);
    }
    walk.tar
        .into_inner()
        .map_err(|e| ArchiveError::io("write", "the archive", e))?;
    Ok(walk.exported)
}

/// A writer that can be cut: after [`Cut::cut`] it refuses every write, so
/// what a dropped tar builder or gzip encoder would still add (an end
/// marker, a trailer) never reaches the output of a failed export.
struct Cut<W: Write> {
    out: W,
    cut: bool,
}

impl<W: Write> Cut<W> {
    fn new(out: W) -> Self {
        Cut { out, cut: false }
    }

    fn cut(&mut self) {
        self.cut = true;
    }
}

impl<W: Write> Write for Cut<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.cut {
            true => Err(io::Error::other("the export failed")),
            false => self.out.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.cut {
            true => Ok(()),
            false => self.out.flush(),
        }
    }
}

/// The gzip stream every export writes (one member), wherever it is
/// compressed: inside the sandbox or by the server.
pub fn gzip<W: Write>(out: W) -> GzEncoder<W> {
    // Level 3 with the zlib-rs backend: on the 210 MB home of
    // bench-export 3.5 s of CPU and 63.1 % of the data, against gzip -3's
    // 5.9 s and 63.7 % (level 1: 2.0 s and 72 %; level 6: 62 %, twice
    // the CPU). miniz_oxide at 3 took 5.1 s.
    GzEncoder::new(out, Compression::new(3))
}

struct Walk<W: Write> {
    tar: tar::Builder<Cut<W>>,
    limits: ArchiveLimits,
    /// Entries met, exported or not (bounds the walk).
    seen: u64,
    exported: Exported,
    /// (dev, inode) of files with several links → the path exported first.
    links: HashMap<(u64, u64), Vec<u8>>,
}

fn shown(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

fn header(kind: EntryType, st: &Stat, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(st.st_mode & 0o777);
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(size);
    h
}

impl<W: Write> Walk<W> {
    fn skip(&mut self, path: &[u8], reason: impl Into<String>) {
        self.exported.skipped.push(Skipped {
            path: shown(path),
            reason: reason.into(),
        });
    }

    fn write_err(path: &[u8], e: io::Error) -> ArchiveError {
        ArchiveError::io("write the archive at", shown(path), e)
    }

    /// Exports the entries of the directory `fd`, whose path is `prefix`
    /// and which is `depth` levels below the root.
    fn dir(&mut self, fd: BorrowedFd<'_>, prefix: &[u8], depth: usize) -> Result<(), ArchiveError> {
        let mut names = Vec::new();
        let mut listing =
            Dir::read_from(fd).map_err(|e| ArchiveError::io("list", shown(prefix), e.into()))?;
        while let Some(entry) = listing.read() {
            let entry = entry.map_err(|e| ArchiveError::io("list", shown(prefix), e.into()))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(name.to_vec());
            }
        }
        drop(listing);
        names.sort();
        for name in names {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                [prefix, b"/", &name].concat()
            };
            self.seen += 1;
            if self.seen > self.limits.max_entries {
                return Err(ArchiveError::TooManyEntries {
                    limit: self.limits.max_entries,
                });
            }
            if path.len() > MAX_PATH_BYTES {
                self.skip(&path, format!("path longer than {MAX_PATH_BYTES} bytes"));
                continue;
            }
            let st = match rfs::statat(fd, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue, // gone meanwhile
                Err(e) => {
                    self.skip(&path, format!("cannot stat: {e}"));
                    continue;
                }
            };
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => self.subdir(fd, &name, &path, depth)?,
                FileType::RegularFile => self.file(fd, &name, &path)?,
                FileType::Symlink => self.symlink(fd, &name, &path, &st, depth)?,
                _ => self.skip(&path, "sockets, fifos and device nodes are not exported"),
            }
        }
        Ok(())
    }

    /// Opens `name` in `parent` without following a symlink, and stats
    /// what was opened (not what was listed). None when it is gone or
    /// cannot be opened (noted as skipped).
    fn open(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
        flags: OFlags,
    ) -> Result<Option<(OwnedFd, Stat)>, ArchiveError> {
        let flags = flags | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rfs::openat(parent, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => {
                self.skip(path, format!("cannot open: {e}"));
                return Ok(None);
            }
        };
        let st = rfs::fstat(&fd).map_err(|e| ArchiveError::io("stat", shown(path), e.into()))?;
        Ok(Some((fd, st)))
    }

    fn subdir(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
        depth: usize,
    ) -> Result<(), ArchiveError> {
        if depth + 1 > MAX_DEPTH {
            self.skip(path, format!("nested deeper than {MAX_DEPTH} levels"));
            return Ok(());
        }
        let Some((fd, st)) = self.open(parent, name, path, OFlags::DIRECTORY)? else {
            return Ok(());
        };
        let mut h = header(EntryType::Directory, &st, 0);
        self.tar
            .append_data(&mut h, OsStr::from_bytes(path), io::empty())
            .map_err(|e| Self::write_err(path, e))?;
        self.exported.summary.entries += 1;
        self.exported.summary.dirs += 1;
        self.dir(fd.as_fd(), path, depth + 1)
    }

    fn file(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
    ) -> Result<(), ArchiveError> {
        // O_NONBLOCK: should a fifo have replaced the file, open must not
        // hang; the type check below then refuses it.
        let flags = OFlags::NONBLOCK | OFlags::NOCTTY;
        let Some((fd, st)) = self.open(parent, name, path, flags)? else {
            return Ok(());
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            self.skip(path, "changed while being exported");
            return Ok(());
        }
        let os_path = OsStr::from_bytes(path);
        let id = (st.st_dev, st.st_ino);
        if st.st_nlink > 1 {
            if let Some(first) = self.links.get(&id) {
                let mut h = header(EntryType::Link, &st, 0);
                self.tar
                    .append_link(&mut h, os_path, OsStr::from_bytes(first))
                    .map_err(|e| Self::write_err(path, e))?;
                self.exported.summary.entries += 1;
                self.exported.summary.hardlinks += 1;
                return Ok(());
            }
        }
        let size = st.st_size.max(0) as u64;
        let summary = &mut self.exported.summary;
        if size > self.limits.max_entry_bytes {
            return Err(ArchiveError::EntryTooBig {
                path: shown(path),
                size,
                limit: self.limits.max_entry_bytes,
            });
        }
        if summary.bytes.saturating_add(size) > self.limits.max_bytes {
            return Err(ArchiveError::TooManyBytes {
                path: shown(path),
                size,
                limit: self.limits.max_bytes,
            });
        }
        let mut h = header(EntryType::Regular, &st, size);
        // Exactly `size` bytes, whatever the file does meanwhile: a file
        // that shrinks is padded with zeros, one that grows is cut.
        let data = File::from(fd).take(size).chain(io::repeat(0)).take(size);
        self.tar
            .append_data(&mut h, os_path, data)
            .map_err(|e| Self::write_err(path, e))?;
        summary.entries += 1;
        summary.files += 1;
        summary.bytes += size;
        if st.st_nlink > 1 {
            self.links.insert(id, path.to_vec());
        }
        Ok(())
    }

    fn symlink(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
        st: &Stat,
        depth: usize,
    ) -> Result<(), ArchiveError> {
        let target = match rfs::readlinkat(parent, name, Vec::new()) {
            Ok(t) => t.into_bytes(),
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => {
                self.skip(path, format!("cannot read the link: {e}"));
                return Ok(());
            }
        };
        if let Err(rule) = check_symlink_target(&target, depth) {
            self.skip(path, rule.to_string());
            return Ok(());
        }
        let mut h = header(EntryType::Symlink, st, 0);
        self.tar
            .append_link(&mut h, OsStr::from_bytes(path), OsStr::from_bytes(&target))
            .map_err(|e| Self::write_err(path, e))?;
        self.exported.summary.entries += 1;
        self.exported.summary.symlinks += 1;
        Ok(())
    }
}
