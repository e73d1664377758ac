//! Disk limits on a tenant's home: bytes and inodes.
//!
//! Two backends (docs/disk.md): the kernel's project quotas ([`quota`])
//! where the workspace root's filesystem enforces them, and the per-home
//! image: where the kernel has no project quotas there, each
//! home is a sparse ext4 file the size of the limit, made with the inode
//! limit (`mkfs.ext4 -N`), kept beside the workspace root
//! ([`images_dir`]), loop-mounted over the home while a sandbox runs and
//! unmounted after (`mount -o loop` sets autoclear, so the loop device is
//! released with the last mount). The programs are e2fsprogs' and
//! util-linux's, run as programs: no filesystem code of our own.
//!
//! Every step on one image runs under an exclusive `flock` on
//! `<images>/<slug>.lock`, so two sandboxes of one tenant starting at once,
//! or a live resize during a start, never run `mkfs` or an offline resize
//! on an image in use. Usage always comes from the filesystem itself
//! (`statvfs` of the mounted image, or its superblock via `dumpe2fs -h`),
//! never from walking the tree.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod image;
mod loops;
mod programs;
pub mod quota;
mod superblock;
mod usage;

pub use image::{
    attach, detach, image_size, lock, private_mount_namespace, remove_image, set_limit_live,
    Attached, ImageLock,
};
pub use loops::loop_device_of;
use programs::program;
pub use superblock::superblock_usage;
pub use usage::{check_lower, usage};

/// The limits asked for one home; `None`: no limit on that resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskLimits {
    pub bytes: Option<u64>,
    pub inodes: Option<u64>,
}

/// Smallest byte limit: ext4 with a journal needs a few MiB of its own.
pub const MIN_BYTES: u64 = 16 << 20;
/// Smallest inode limit.
pub const MIN_INODES: u64 = 128;

impl DiskLimits {
    pub const NONE: DiskLimits = DiskLimits {
        bytes: None,
        inodes: None,
    };
    /// The server's defaults: 1 GiB and 100 000 inodes.
    pub const DEFAULT: DiskLimits = DiskLimits {
        bytes: Some(1 << 30),
        inodes: Some(100_000),
    };

    pub fn is_none(&self) -> bool {
        *self == DiskLimits::NONE
    }

    /// Refuses limits no image can be made with.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(b) = self.bytes {
            if b < MIN_BYTES {
                return Err(format!(
                    "disk limit {b} bytes is below the smallest, {MIN_BYTES} (16 MiB)"
                ));
            }
        }
        if let Some(i) = self.inodes {
            if i < MIN_INODES {
                return Err(format!(
                    "inode limit {i} is below the smallest, {MIN_INODES}"
                ));
            }
        }
        Ok(())
    }
}

impl Default for DiskLimits {
    fn default() -> Self {
        DiskLimits::NONE
    }
}

/// How a disk limit is enforced (`--disk-backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskBackend {
    /// The best this host has: project quotas where the workspace root's
    /// filesystem has them, else the image backend where it works.
    #[default]
    Auto,
    /// A loop-mounted ext4 image per home.
    Image,
    /// The kernel's project quotas on the workspace root's filesystem.
    Quota,
}

impl std::str::FromStr for DiskBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DiskBackend::Auto),
            "image" => Ok(DiskBackend::Image),
            "quota" => Ok(DiskBackend::Quota),
            other => Err(format!(
                "unknown disk backend {other:?} (auto, image, quota)"
            )),
        }
    }
}

/// The disk part of a sandbox's spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    pub limits: DiskLimits,
    pub backend: DiskBackend,
    /// Where the images live ([`images_dir`] of the workspace root).
    pub images: PathBuf,
    /// The home's project id for project quotas: the tenant's host uid
    /// from the state database, unique among tenants in every mode (the
    /// id map's may be one uid for all). 0: none given.
    #[serde(default)]
    pub project: u32,
}

/// What a sandbox's home got, in its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskInForce {
    /// `image` or `quota`.
    pub backend: String,
    /// The byte limit: the image's size (the filesystem's own metadata
    /// takes a little of it), or the project's hard limit (0: none).
    pub bytes: u64,
    /// The inode limit: the filesystem's inode count, or the project's
    /// hard limit (0: none).
    pub inodes: u64,
}

/// What a home holds and may hold, from its filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskUsage {
    pub bytes_used: u64,
    /// What the filesystem can hold (the limit less its own metadata).
    pub bytes_total: u64,
    /// What the tenant can still write (ext4 keeps a little back for its
    /// own metadata).
    pub bytes_available: u64,
    pub inodes_used: u64,
    pub inodes_total: u64,
    /// Read from the live mount (true) or from the image's superblock.
    pub mounted: bool,
}

impl DiskUsage {
    /// Nothing more can be written (a block or an inode short).
    pub fn full(&self) -> bool {
        self.bytes_available < 4096 || self.inodes_used >= self.inodes_total
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("disk image {path}: {op}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("disk image: {program} failed: {output}")]
    Program { program: String, output: String },
    #[error(
        "the home holds more than the disk limit ({limit} bytes, {inodes} inodes); \
         raise the tenant's limit (warren users limits) or free space first"
    )]
    HomeTooBig { limit: u64, inodes: u64 },
    #[error(
        "the home uses {used} bytes and {inodes_used} inodes, more than the new limit \
         ({limit} bytes, {inodes} inodes): free space first"
    )]
    WouldNotFit {
        used: u64,
        inodes_used: u64,
        limit: u64,
        inodes: u64,
    },
    #[error("the disk image of {slug} is in use by a running sandbox")]
    InUse { slug: String },
    #[error("project quota on {path}: {op}: {source}")]
    Quota {
        op: &'static str,
        path: PathBuf,
        source: nix::errno::Errno,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DiskError + 'a {
    move |source| DiskError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Where the images of homes under `workspace_root` live: beside it,
/// `<root>.disk/` (never inside any home, not reachable by tenants).
pub fn images_dir(workspace_root: &Path) -> PathBuf {
    let name = workspace_root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "workspaces".into());
    workspace_root
        .parent()
        .unwrap_or(Path::new("/"))
        .join(format!("{name}.disk"))
}

/// The image of one home.
pub fn image_path(images: &Path, slug: &str) -> PathBuf {
    images.join(format!("{slug}.ext4"))
}

/// Why this process cannot use per-home images, with the fix; `None` when
/// it can (root in the host's user namespace, loop devices, e2fsprogs).
pub fn image_backend_unavailable(proc_root: &Path) -> Option<String> {
    if !host_root(proc_root) {
        return Some(
            "per-home disk images need root in the host's user namespace (loop devices, \
             mounting ext4); run warren as root, or keep the workspace root on its own \
             filesystem (docs/disk.md)"
                .into(),
        );
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some(
            "no loop devices (/dev/loop-control missing): load the loop module (modprobe loop)"
                .into(),
        );
    }
    for p in ["mkfs.ext4", "resize2fs", "dumpe2fs", "tune2fs", "e2fsck"] {
        if program(p).is_none() {
            return Some(format!("{p} not found: install e2fsprogs"));
        }
    }
    if program("mount").is_none() || program("losetup").is_none() {
        return Some("mount or losetup not found: install util-linux (mount)".into());
    }
    None
}

/// Whether this process is root in the host's user namespace.
fn host_root(proc_root: &Path) -> bool {
    let uid_map = fs::read_to_string(proc_root.join("self/uid_map")).unwrap_or_default();
    nix::unistd::geteuid().is_root()
        && uid_map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"]
}

/// Whether two paths (or their nearest existing ancestors) lie on one
/// filesystem: `warren doctor` warns when the state directory shares the
/// homes' filesystem with no disk limit in force.
pub fn same_filesystem(a: &Path, b: &Path) -> bool {
    let dev = |p: &Path| {
        p.ancestors()
            .find_map(|a| fs::metadata(a).ok())
            .map(|m| m.dev())
    };
    dev(a).is_some() && dev(a) == dev(b)
}

/// The usage of the filesystem holding `home`, from `statvfs`: what the
/// tenant may still write and may have in all (blocks kept back beyond
/// the limit are not theirs).
pub fn home_usage(home: &Path) -> Option<DiskUsage> {
    let st = nix::sys::statvfs::statvfs(home).ok()?;
    Some(DiskUsage {
        bytes_used: (st.blocks() - st.blocks_free()) * st.fragment_size(),
        bytes_total: (st.blocks() - st.blocks_free() + st.blocks_available()) * st.fragment_size(),
        bytes_available: st.blocks_available() * st.fragment_size(),
        inodes_used: st.files() - st.files_free(),
        inodes_total: st.files(),
        mounted: true,
    })
}

/// Bytes in words, as `df -h` would: `1.0 GiB`.
pub fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    match u {
        0 => format!("{bytes} B"),
        _ => format!("{v:.1} {}", units[u]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_live_beside_the_workspace_root() {
        assert_eq!(
            images_dir(Path::new("/var/lib/warren/workspaces")),
            Path::new("/var/lib/warren/workspaces.disk")
        );
        assert_eq!(
            image_path(Path::new("/x.disk"), "alice"),
            Path::new("/x.disk/alice.ext4")
        );
    }

    #[test]
    fn limits_are_checked_and_backends_named() {
        assert!(DiskLimits::DEFAULT.validate().is_ok());
        assert!(DiskLimits {
            bytes: Some(1 << 20),
            inodes: None
        }
        .validate()
        .is_err());
        assert!(DiskLimits {
            bytes: None,
            inodes: Some(10)
        }
        .validate()
        .is_err());
        assert_eq!("image".parse::<DiskBackend>(), Ok(DiskBackend::Image));
        assert_eq!("quota".parse::<DiskBackend>(), Ok(DiskBackend::Quota));
        assert!("zfs".parse::<DiskBackend>().is_err());
    }

    #[test]
    fn images_are_twice_the_limit_and_never_too_big_for_a_file() {
        assert_eq!(image_size(1 << 30), 2 << 30);
        assert_eq!(image_size(u64::MAX), (16 << 40) - 4096);
    }

    #[test]
    fn superblock_fields_give_usage() {
        let dump = "Inode count:              1024\nBlock count:              4096\n\
                    Free blocks:              1000\nFree inodes:              1000\n\
                    Overhead clusters:        96\nBlock size:               4096\n\
                    Reserved block count:     100\n";
        let u = superblock_usage(dump).unwrap();
        // Kept back: ext4's own 4096/50 = 81 blocks and the reserve.
        assert_eq!(u.bytes_used, 3000 * 4096);
        assert_eq!(u.bytes_available, (1000 - 81 - 100) * 4096);
        assert_eq!(u.bytes_total, (3000 + 819) * 4096);
        assert_eq!((u.inodes_used, u.inodes_total), (24, 1024));
        assert!(!u.mounted);
        assert_eq!(human(1 << 30), "1.0 GiB");
        assert_eq!(human(512), "512 B");
    }
}
