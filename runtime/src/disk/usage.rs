//! A home's usage from its filesystem, and whether a lower limit fits.

use std::path::Path;

use super::loops::{is_mounted_from, loop_device_of, mounter_of};
use super::programs::{os, run};
use super::superblock::superblock_usage;
use super::{home_usage, image_path, DiskError, DiskLimits, DiskUsage};

/// Refuses a lower limit the home's current content does not fit in.
pub fn check_lower(
    images: &Path,
    home: &Path,
    slug: &str,
    limits: DiskLimits,
) -> Result<(), DiskError> {
    let Some(u) = usage(images, home, slug, None) else {
        return Ok(());
    };
    let too_many_bytes = limits.bytes.is_some_and(|b| u.bytes_used > b);
    let too_many_inodes = limits.inodes.is_some_and(|i| u.inodes_used > i);
    if too_many_bytes || too_many_inodes {
        return Err(DiskError::WouldNotFit {
            used: u.bytes_used,
            inodes_used: u.inodes_used,
            limit: limits.bytes.unwrap_or(u64::MAX),
            inodes: limits.inodes.unwrap_or(u64::MAX),
        });
    }
    Ok(())
}

/// The home's usage from its filesystem: `statvfs` of the mounted image
/// as `mounter` (the shim holding it, whose mount namespace has it: see
/// [`super::private_mount_namespace`]) sees it, or the image's superblock
/// (`dumpe2fs -h`) when no sandbox runs; or the project quota of a home
/// with one ([`super::quota`]). `None` with neither.
pub fn usage(images: &Path, home: &Path, slug: &str, mounter: Option<i32>) -> Option<DiskUsage> {
    let image = image_path(images, slug);
    if !image.exists() {
        return super::quota::usage(home);
    }
    let dev = loop_device_of(&image);
    // Not told who holds it (the command line, another process's
    // sandbox): the first process whose mount namespace has it there.
    let mounter = mounter.or_else(|| dev.as_deref().and_then(|d| mounter_of(d, home)));
    if let (Some(dev), Some(pid)) = (dev, mounter) {
        let seen = Path::new("/proc")
            .join(pid.to_string())
            .join("root")
            .join(home.strip_prefix("/").unwrap_or(home));
        if is_mounted_from(&seen, &dev) {
            return home_usage(&seen);
        }
    }
    let out = run("dumpe2fs", &[os("-h"), image.as_os_str()]).ok()?;
    superblock_usage(&out)
}
