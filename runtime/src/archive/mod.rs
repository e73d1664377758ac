//! Workspace archives: export a home as tar.gz, and check and unpack one,
//! safely against hostile archives.
//!
//! Three entry points, one set of rules ([`Rule`], docs/archives.md):
//! - [`validate`]: a pure scan of a tar.gz stream. It reads every byte
//!   (headers, data, the gzip trailer) and writes nothing; the server runs
//!   it host-side on an upload before anything reaches a workspace.
//! - [`extract`]: validates the whole archive first, then checks it against
//!   the destination, then unpacks it, checking every entry again while
//!   writing. A refused archive writes nothing. It runs inside the user's
//!   sandbox, as the user (`warren-import`), so it never races a running
//!   sandbox and is confined like any of the user's processes; it is still
//!   written as if the archive and the destination were hostile: it never
//!   follows a symlink, never sets ownership or special mode bits.
//! - [`export`]: writes a directory as tar.gz, walking by directory fds
//!   without following symlinks, and only what [`extract`] accepts
//!   ([`export_tar_at`]: the same as a plain tar, which the server
//!   compresses with [`gzip`]).
//!
//! `testing::hostile_set` builds the hostile archives the tests use, so
//! other crates' tests can refuse the very same bytes. It is test code, out
//! of the production library: other crates get it from the `testing`
//! feature in their `[dev-dependencies]`.

mod export;
mod extract;
mod rules;
mod scan;
mod staging;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

use std::io::{self, Read};

use serde::{Deserialize, Serialize};

pub use export::{export, export_at, export_tar, export_tar_at, gzip, Exported, Skipped};
pub use extract::{extract, extract_at, seekable};
pub use rules::{Rule, MAX_COMPONENT_BYTES, MAX_DEPTH, MAX_METADATA_BYTES, MAX_PATH_BYTES};
pub use staging::{clean, STAGING_PREFIX};

const GIB: u64 = 1 << 30;

/// How much one archive may hold. Declared sizes are checked against these
/// before any data is read, and the bytes actually read are counted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveLimits {
    /// Total bytes of file data (uncompressed).
    pub max_bytes: u64,
    /// Entries: files, directories, symlinks, hard links.
    pub max_entries: u64,
    /// Bytes of one file.
    pub max_entry_bytes: u64,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        ArchiveLimits {
            max_bytes: GIB,
            max_entries: 100_000,
            max_entry_bytes: GIB,
        }
    }
}

impl ArchiveLimits {
    /// An upper bound on the compressed size of an archive within these
    /// limits: its data plus 1/64 of it (gzip grows incompressible data by
    /// far less), 4 KiB of headers and names per entry, and 1 MiB. Use it
    /// to bound an upload or a spool file.
    pub fn max_archive_bytes(&self) -> u64 {
        self.max_bytes
            .saturating_add(self.max_entries.saturating_mul(4096))
            .saturating_add(self.max_bytes / 64)
            .saturating_add(1 << 20)
    }
}

/// What an archive holds (or what was written).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// files + dirs + symlinks + hardlinks.
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// Bytes of file data.
    pub bytes: u64,
}

/// Why an archive was refused, or could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("not a gzip'd tar archive (no gzip header)")]
    NotGzip,
    #[error("corrupt archive: {detail}")]
    Corrupt { detail: String },
    #[error("the archive ends early (truncated)")]
    Truncated,
    #[error("data after the end of the archive")]
    TrailingData,
    /// One entry breaks a rule; `path` is the entry's name as written in
    /// the archive.
    #[error("entry {path:?}: {rule}")]
    Refused { path: String, rule: Rule },
    #[error("entry {path:?} claims {size} bytes, over the {} per-file limit", human(*.limit))]
    EntryTooBig { path: String, size: u64, limit: u64 },
    #[error("entry {path:?} claims {size} bytes, over the {} limit for the whole archive", human(*.limit))]
    TooManyBytes { path: String, size: u64, limit: u64 },
    #[error("the archive is larger than {}", human(*.limit))]
    TooLarge { limit: u64 },
    #[error("more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("the archive's names and extended headers total more than {} (limit)", human(*.limit))]
    TooMuchMetadata { limit: u64 },
    /// The destination disagrees with the archive (found before anything
    /// is written).
    #[error("entry {path:?}: {reason}")]
    Conflict { path: String, reason: String },
    /// The host side failed (reading the input, writing the destination):
    /// not the archive's fault.
    #[error("{op} {path:?}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

impl ArchiveError {
    /// True when the archive (or, for [`ArchiveError::Conflict`], the
    /// archive against this destination) is at fault: a client error.
    /// False for [`ArchiveError::Io`]: the host failed.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, ArchiveError::Io { .. })
    }

    pub(crate) fn io(op: &'static str, path: impl Into<String>, source: io::Error) -> Self {
        ArchiveError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// "1 GiB", "64 MiB", or a byte count.
pub(crate) fn human(bytes: u64) -> String {
    match bytes {
        b if b >= GIB && b % GIB == 0 => format!("{} GiB", b / GIB),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b => format!("{b} bytes"),
    }
}

/// Checks a tar.gz stream against the rules and `limits` without writing
/// anything: reads it to the end (so a truncated or corrupt gzip stream is
/// caught), and returns what it holds.
pub fn validate<R: Read>(archive: R, limits: &ArchiveLimits) -> Result<Summary, ArchiveError> {
    // The scan itself reads (and counts) every entry's data.
    let checker = scan::scan(archive, limits, |_, _| Ok(()))?;
    Ok(checker.summary())
}
