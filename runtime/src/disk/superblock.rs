//! An image's geometry and usage from its superblock (`dumpe2fs -h`).

use std::path::Path;

use super::programs::{os, run};
use super::{DiskError, DiskUsage};

/// The filesystem's geometry, from `dumpe2fs -h` of an image or device.
pub(super) struct Geometry {
    pub block: u64,
    pub blocks: u64,
    pub overhead: u64,
}

pub(super) fn geometry(image_or_dev: &Path) -> Result<Geometry, DiskError> {
    let dump = run("dumpe2fs", &[os("-h"), image_or_dev.as_os_str()])?;
    let field = |name: &str| superblock_field(&dump, name);
    match (field("Block size"), field("Block count")) {
        (Some(block), Some(blocks)) => Ok(Geometry {
            block,
            blocks,
            overhead: field("Overhead clusters").unwrap_or(0),
        }),
        _ => Err(DiskError::Program {
            program: "dumpe2fs".into(),
            output: format!("no block size or count for {}", image_or_dev.display()),
        }),
    }
}

pub(super) fn superblock_field(dump: &str, name: &str) -> Option<u64> {
    dump.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// Usage from `dumpe2fs -h`'s superblock fields.
pub fn superblock_usage(dump: &str) -> Option<DiskUsage> {
    let field = |name: &str| superblock_field(dump, name);
    let block = field("Block size")?;
    let blocks = field("Block count")?;
    let free = field("Free blocks")?;
    let inodes = field("Inode count")?;
    let free_inodes = field("Free inodes")?;
    // What ext4 keeps back for itself when mounted: 2% or 4096 blocks,
    // whichever is less (ext4_calculate_resv_clusters).
    // Kept back: ext4's own 2% or 4096 blocks, and the reserve that is
    // the byte limit (see `set_byte_limit`).
    let kept = (blocks / 50).min(4096) + field("Reserved block count").unwrap_or(0);
    // As statfs counts: without the filesystem's own metadata.
    let blocks = blocks.saturating_sub(field("Overhead clusters").unwrap_or(0));
    let used = blocks.saturating_sub(free);
    let available = free.saturating_sub(kept);
    Some(DiskUsage {
        bytes_used: used * block,
        bytes_total: (used + available) * block,
        bytes_available: available * block,
        inodes_used: inodes - free_inodes,
        inodes_total: inodes,
        mounted: false,
    })
}
