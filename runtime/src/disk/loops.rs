//! Which loop device holds an image, and which process has it mounted.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The loop device `image` is attached to, if any
/// (`/sys/block/loop*/loop/backing_file`).
pub fn loop_device_of(image: &Path) -> Option<PathBuf> {
    let want = fs::canonicalize(image).ok()?;
    for e in fs::read_dir("/sys/block").ok()?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = fs::read_to_string(e.path().join("loop/backing_file")) else {
            continue;
        };
        if Path::new(backing.trim()) == want {
            return Some(Path::new("/dev").join(name));
        }
    }
    None
}

/// The loop device whose filesystem is mounted at `target`, if it backs
/// `image`: found from the mount's device number
/// (`/sys/dev/block/MAJ:MIN`), one lookup however many loop devices the
/// host has, where [`loop_device_of`] reads every one's backing file (a
/// sandbox's start slowed with the number of sandboxes up: issue 15).
pub(super) fn loop_device_mounted_at(target: &Path, image: &Path) -> Option<PathBuf> {
    let dev = fs::metadata(target).ok()?.dev();
    let sys = format!("/sys/dev/block/{}:{}", libc::major(dev), libc::minor(dev));
    let link = fs::read_link(sys).ok()?;
    let name = link.file_name()?.to_str()?.to_string();
    if !name.starts_with("loop") {
        return None;
    }
    let backing = fs::read_to_string(
        Path::new("/sys/block")
            .join(&name)
            .join("loop/backing_file"),
    )
    .ok()?;
    (Path::new(backing.trim()) == fs::canonicalize(image).ok()?)
        .then(|| Path::new("/dev").join(name))
}

/// A process that has block device `dev` mounted at `home` in its mount
/// namespace (`/proc/<pid>/mountinfo`).
pub(super) fn mounter_of(dev: &Path, home: &Path) -> Option<i32> {
    use std::os::unix::fs::FileTypeExt as _;
    let meta = fs::metadata(dev).ok()?;
    if !meta.file_type().is_block_device() {
        return None;
    }
    let rdev = meta.rdev();
    let id = format!(
        " {}:{} / {} ",
        libc::major(rdev),
        libc::minor(rdev),
        home.display()
    );
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let info = fs::read_to_string(e.path().join("mountinfo")).ok()?;
        info.lines().any(|l| l.contains(&id)).then_some(pid)
    })
}

/// Whether `home` is a mount of block device `dev`.
pub(super) fn is_mounted_from(home: &Path, dev: &Path) -> bool {
    let (Ok(h), Ok(d)) = (fs::metadata(home), fs::metadata(dev)) else {
        return false;
    };
    h.dev() == d.rdev()
}
