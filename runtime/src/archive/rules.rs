//! The rules every entry must pass (docs/archives.md), in pure code. The
//! same [`Checker`] runs in `validate`, in extract's first pass and again
//! while extract writes, so what was validated is what gets written.

use std::collections::HashMap;

use tar::EntryType;

use super::{ArchiveError, ArchiveLimits, Summary};

/// Longest entry path or symlink target (Linux's PATH_MAX).
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest single name (Linux's NAME_MAX).
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Deepest nesting: bounds the directory fds held while walking.
pub const MAX_DEPTH: usize = 256;
/// All names, link targets and extended headers of one archive together:
/// bounds the memory a scan keeps, whatever the entry count.
pub const MAX_METADATA_BYTES: u64 = 64 << 20;

/// Why one entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rule {
    #[error("path leaves the workspace (`..`)")]
    ParentDir,
    #[error("absolute paths are not allowed")]
    Absolute,
    #[error("NUL byte in a name")]
    Nul,
    #[error("empty name")]
    Empty,
    #[error("name of {len} bytes, over the {max}-byte limit")]
    TooLong { len: usize, max: usize },
    #[error("nested {depth} levels deep, over the {max}-level limit")]
    TooDeep { depth: usize, max: usize },
    #[error("device nodes are not allowed")]
    Device,
    #[error("fifos are not allowed")]
    Fifo,
    #[error("sparse files are not supported")]
    Sparse,
    #[error("unsupported entry type {0:?}")]
    UnsupportedType(char),
    #[error("the {0} bit is not allowed")]
    SpecialBit(&'static str),
    #[error("symlink to {target:?} points outside the workspace")]
    SymlinkOutside { target: String },
    #[error("symlink to {target:?}: `..` may only lead a target (after a name it could climb out through another symlink)")]
    SymlinkDotDot { target: String },
    #[error("symlink with an empty target")]
    SymlinkEmpty,
    #[error("goes through the symlink {link:?} earlier in the archive")]
    ThroughSymlink { link: String },
    #[error("its parent {parent:?} is not a directory in the archive")]
    ParentNotDirectory { parent: String },
    #[error("appears twice in the archive")]
    Duplicate,
    #[error("hard link to {target:?}, which is not an earlier file of this archive")]
    HardLinkTarget { target: String },
    #[error("a {kind} entry with {size} bytes of data")]
    DataOnNonFile { kind: &'static str, size: u64 },
    #[error("extended header of {size} bytes, over the {max}-byte limit")]
    ExtensionTooBig { size: u64, max: u64 },
    #[error("two extended headers of one kind for one entry")]
    DuplicateExtension,
    #[error("extended header with no entry after it")]
    DanglingExtension,
    #[error("pax size {pax} disagrees with the header's {header}")]
    PaxSizeMismatch { pax: u64, header: u64 },
}

/// What an entry is, once accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    HardLink,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "directory",
            Kind::Symlink => "symlink",
            Kind::HardLink => "hard link",
        }
    }
}

/// One header as the scanner decoded it (extensions applied).
pub(crate) struct Header<'a> {
    pub path: &'a [u8],
    pub entry_type: EntryType,
    pub mode: u32,
    pub mtime: i64,
    pub size: u64,
    pub link: &'a [u8],
}

/// An accepted entry.
#[derive(Debug, Clone)]
pub(crate) struct Checked {
    /// The name as written in the archive, for messages.
    pub name: String,
    /// Normalised components; empty for the archive's root (`./`).
    pub comps: Vec<Vec<u8>>,
    pub kind: Kind,
    /// Permission bits only (special bits are refused).
    pub mode: u32,
    pub mtime: i64,
    pub size: u64,
    /// A symlink's target, as written.
    pub link: Vec<u8>,
    /// A hard link's target, normalised.
    pub link_comps: Vec<Vec<u8>>,
}

/// An entry's path, from its components, for messages.
pub(crate) fn shown(comps: &[Vec<u8>]) -> String {
    String::from_utf8_lossy(&comps.join(&b'/')).into_owned()
}

/// A path's normalised components: relative, no `..`, no NUL, bounded;
/// empty components and `.` dropped.
pub(crate) fn components(raw: &[u8]) -> Result<Vec<Vec<u8>>, Rule> {
    if raw.contains(&0) {
        return Err(Rule::Nul);
    }
    if raw.first() == Some(&b'/') {
        return Err(Rule::Absolute);
    }
    if raw.len() > MAX_PATH_BYTES {
        return Err(Rule::TooLong {
            len: raw.len(),
            max: MAX_PATH_BYTES,
        });
    }
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(Rule::ParentDir),
            c if c.len() > MAX_COMPONENT_BYTES => {
                return Err(Rule::TooLong {
                    len: c.len(),
                    max: MAX_COMPONENT_BYTES,
                })
            }
            c => out.push(c.to_vec()),
        }
    }
    if out.len() > MAX_DEPTH {
        return Err(Rule::TooDeep {
            depth: out.len(),
            max: MAX_DEPTH,
        });
    }
    Ok(out)
}

/// A symlink at `depth` (components of its directory) may point only
/// inside the archive's root: relative, `..` only as leading components
/// and no more of them than `depth`. Lexical resolution is exact here:
/// every directory above the link is a real directory (links may not be
/// parents), and after the leading `..`s the target only descends, so
/// even through other (equally checked) symlinks it cannot climb out.
pub(crate) fn check_symlink_target(target: &[u8], depth: usize) -> Result<(), Rule> {
    let shown = || String::from_utf8_lossy(target).into_owned();
    if target.is_empty() {
        return Err(Rule::SymlinkEmpty);
    }
    if target.contains(&0) {
        return Err(Rule::Nul);
    }
    if target.len() >= MAX_PATH_BYTES {
        return Err(Rule::TooLong {
            len: target.len(),
            max: MAX_PATH_BYTES - 1,
        });
    }
    if target[0] == b'/' {
        return Err(Rule::SymlinkOutside { target: shown() });
    }
    let (mut up, mut named) = (0usize, false);
    for c in target.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." if named => return Err(Rule::SymlinkDotDot { target: shown() }),
            b".." => up += 1,
            _ => named = true,
        }
    }
    if up > depth {
        return Err(Rule::SymlinkOutside { target: shown() });
    }
    Ok(())
}

fn joined(comps: &[Vec<u8>]) -> String {
    String::from_utf8_lossy(&comps.join(&b'/')).into_owned()
}

/// One path of the archive: what it is (None when only implied as the
/// parent of a later entry) and its children.
#[derive(Default)]
struct Node {
    kind: Option<Kind>,
    children: HashMap<Box<[u8]>, usize>,
}

/// The running state of one scan: the counts against the limits and the
/// tree of every path seen so far.
pub(crate) struct Checker {
    limits: ArchiveLimits,
    summary: Summary,
    metadata: u64,
    nodes: Vec<Node>,
}

impl Checker {
    pub fn new(limits: ArchiveLimits) -> Checker {
        Checker {
            limits,
            summary: Summary::default(),
            metadata: 0,
            nodes: vec![Node {
                kind: Some(Kind::Dir),
                children: HashMap::new(),
            }],
        }
    }

    pub fn summary(&self) -> Summary {
        self.summary
    }

    /// Counts names and extended headers against [`MAX_METADATA_BYTES`].
    pub fn charge_metadata(&mut self, bytes: u64) -> Result<(), ArchiveError> {
        self.metadata = self.metadata.saturating_add(bytes);
        if self.metadata > MAX_METADATA_BYTES {
            return Err(ArchiveError::TooMuchMetadata {
                limit: MAX_METADATA_BYTES,
            });
        }
        Ok(())
    }

    /// The root of the tree of paths, for walking it.
    pub const ROOT: usize = 0;

    /// The children of `node`: (name, node).
    pub fn children(&self, node: usize) -> impl Iterator<Item = (&[u8], usize)> {
        self.nodes[node]
            .children
            .iter()
            .map(|(name, &id)| (&name[..], id))
    }

    /// What `node` is; None for a directory only implied by its children.
    pub fn kind(&self, node: usize) -> Option<Kind> {
        self.nodes[node].kind
    }

    fn child(&self, node: usize, name: &[u8]) -> Option<usize> {
        self.nodes[node].children.get(name).copied()
    }

    fn add_child(&mut self, node: usize, name: &[u8], kind: Option<Kind>) -> usize {
        let id = self.nodes.len();
        self.nodes.push(Node {
            kind,
            children: HashMap::new(),
        });
        self.nodes[node].children.insert(name.into(), id);
        id
    }

    /// Checks one entry against every rule and records it.
    pub fn check(&mut self, h: &Header<'_>) -> Result<Checked, ArchiveError> {
        let name = String::from_utf8_lossy(h.path).into_owned();
        let refuse = |rule: Rule| ArchiveError::Refused {
            path: name.clone(),
            rule,
        };
        if self.summary.entries >= self.limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        self.charge_metadata((h.path.len() + h.link.len()) as u64)?;

        let mut kind = match h.entry_type {
            EntryType::Regular | EntryType::Continuous => Kind::File,
            EntryType::Directory => Kind::Dir,
            EntryType::Symlink => Kind::Symlink,
            EntryType::Link => Kind::HardLink,
            EntryType::Char | EntryType::Block => return Err(refuse(Rule::Device)),
            EntryType::Fifo => return Err(refuse(Rule::Fifo)),
            EntryType::GNUSparse => return Err(refuse(Rule::Sparse)),
            other => return Err(refuse(Rule::UnsupportedType(other.as_byte() as char))),
        };
        // Pre-POSIX tar marked directories with a trailing slash.
        if kind == Kind::File && h.path.ends_with(b"/") {
            kind = Kind::Dir;
        }
        let comps = components(h.path).map_err(refuse)?;
        if comps.is_empty() && kind != Kind::Dir {
            return Err(refuse(Rule::Empty));
        }
        for (bit, what) in [(0o4000, "setuid"), (0o2000, "setgid"), (0o1000, "sticky")] {
            if h.mode & bit != 0 {
                return Err(refuse(Rule::SpecialBit(what)));
            }
        }
        if kind == Kind::File {
            if h.size > self.limits.max_entry_bytes {
                return Err(ArchiveError::EntryTooBig {
                    path: name,
                    size: h.size,
                    limit: self.limits.max_entry_bytes,
                });
            }
            if self.summary.bytes.saturating_add(h.size) > self.limits.max_bytes {
                return Err(ArchiveError::TooManyBytes {
                    path: name,
                    size: h.size,
                    limit: self.limits.max_bytes,
                });
            }
        } else if h.size != 0 {
            return Err(refuse(Rule::DataOnNonFile {
                kind: kind.name(),
                size: h.size,
            }));
        }

        let mut link_comps = Vec::new();
        match kind {
            Kind::Symlink => {
                check_symlink_target(h.link, comps.len().saturating_sub(1)).map_err(refuse)?
            }
            Kind::HardLink => {
                let target = || Rule::HardLinkTarget {
                    target: String::from_utf8_lossy(h.link).into_owned(),
                };
                link_comps = components(h.link).map_err(|_| refuse(target()))?;
                if !matches!(self.lookup(&link_comps), Some(Kind::File | Kind::HardLink)) {
                    return Err(refuse(target()));
                }
            }
            Kind::File | Kind::Dir => {}
        }

        self.insert(&comps, kind).map_err(refuse)?;
        self.summary.entries += 1;
        match kind {
            Kind::File => {
                self.summary.files += 1;
                self.summary.bytes += h.size;
            }
            Kind::Dir => self.summary.dirs += 1,
            Kind::Symlink => self.summary.symlinks += 1,
            Kind::HardLink => self.summary.hardlinks += 1,
        }
        Ok(Checked {
            name,
            comps,
            kind,
            mode: h.mode & 0o777,
            mtime: h.mtime,
            size: h.size,
            link: if kind == Kind::Symlink {
                h.link.to_vec()
            } else {
                Vec::new()
            },
            link_comps,
        })
    }

    /// What an earlier entry at `comps` is.
    fn lookup(&self, comps: &[Vec<u8>]) -> Option<Kind> {
        let mut node = Self::ROOT;
        for c in comps {
            node = self.child(node, c)?;
        }
        self.kind(node)
    }

    /// Records `comps` as `kind`: every parent seen so far must be a
    /// directory (so nothing is ever written through a symlink of the
    /// archive's own), and a path may appear once (directories again).
    fn insert(&mut self, comps: &[Vec<u8>], kind: Kind) -> Result<(), Rule> {
        let Some((last, parents)) = comps.split_last() else {
            return Ok(()); // the root itself
        };
        let mut node = Self::ROOT;
        for (i, c) in parents.iter().enumerate() {
            node = match self.child(node, c) {
                Some(child) => match self.kind(child) {
                    Some(Kind::Symlink) => {
                        return Err(Rule::ThroughSymlink {
                            link: joined(&comps[..=i]),
                        })
                    }
                    Some(Kind::File | Kind::HardLink) => {
                        return Err(Rule::ParentNotDirectory {
                            parent: joined(&comps[..=i]),
                        })
                    }
                    Some(Kind::Dir) | None => child,
                },
                None => self.add_child(node, c, None),
            };
        }
        match self.child(node, last) {
            None => {
                self.add_child(node, last, Some(kind));
                Ok(())
            }
            Some(child)
                if kind == Kind::Dir && matches!(self.kind(child), None | Some(Kind::Dir)) =>
            {
                self.nodes[child].kind = Some(Kind::Dir);
                Ok(())
            }
            Some(_) => Err(Rule::Duplicate),
        }
    }
}
