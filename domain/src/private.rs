//! Files and directories that only warren's own uid may reach: the state
//! directory, the database with its WAL and SHM files, and the admin token.
//! They are created 0700 (directories) or 0600 (files), and an existing one
//! that other local users could read is tightened at start, with a warning:
//! the audit log holds full exec argv, passwords on command lines included.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode bits a private directory may have.
pub const DIR_MODE: u32 = 0o700;
/// The mode bits a private file may have.
pub const FILE_MODE: u32 = 0o600;

/// A mode that was too loose and what it became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tightened {
    pub was: u32,
    pub now: u32,
}

/// Creates `dir` (and missing parents) with mode 0700, or tightens the
/// existing one (see [`tighten`]).
pub fn create_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    tighten(dir, DIR_MODE)?;
    Ok(())
}

/// Creates `path` empty with mode 0600 when it does not exist (an existing
/// file is neither truncated nor replaced), then tightens it.
pub fn create_file(path: &Path) -> io::Result<()> {
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    tighten(path, FILE_MODE)?;
    Ok(())
}

/// Clears every permission bit of `path` outside `allowed` (0755 becomes
/// 0700, 0644 becomes 0600) and warns that it did. A missing path is left
/// alone. The owner's own bits are never widened.
pub fn tighten(path: &Path, allowed: u32) -> io::Result<Option<Tightened>> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let was = meta.permissions().mode() & 0o7777;
    if was & !allowed == 0 {
        return Ok(None);
    }
    let now = was & allowed;
    fs::set_permissions(path, fs::Permissions::from_mode(now))?;
    tracing::warn!(
        path = %path.display(),
        "mode was {was:04o}, reachable by other local users; changed to {now:04o}"
    );
    Ok(Some(Tightened { was, now }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn new_directories_and_files_are_private() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let f = dir.join("f");
        create_file(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
    }

    #[test]
    fn loose_modes_are_tightened_and_content_kept() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("state");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let f = dir.join("f");
        fs::write(&f, "kept").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        create_dir(&dir).unwrap();
        create_file(&f).unwrap();
        assert_eq!((mode(&dir), mode(&f)), (0o700, 0o600));
        assert_eq!(fs::read_to_string(&f).unwrap(), "kept");
        // Already private: nothing to do, nothing widened.
        fs::set_permissions(&f, fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(tighten(&f, FILE_MODE).unwrap(), None);
        assert_eq!(mode(&f), 0o400);
        assert_eq!(tighten(&dir.join("missing"), FILE_MODE).unwrap(), None);
    }
}
