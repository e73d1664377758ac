//! Archives for tests, here and in other crates: a set of hostile ones,
//! each of which must be refused with nothing written, and a small good
//! one. The hostile headers are written byte by byte, since the tar crate's
//! builder (rightly) will not write `..` or absolute names.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use tar::{EntryType, Header};

use super::ArchiveLimits;

/// One hostile archive.
#[derive(Debug, Clone)]
pub struct Hostile {
    /// A short name for test output.
    pub name: &'static str,
    /// The tar.gz bytes (or, for `not-gzip`, a plain tar).
    pub archive: Vec<u8>,
    /// A piece of the error message the refusal must contain.
    pub refusal: String,
}

/// A tar stream written header by header, with any name.
#[derive(Default)]
pub struct RawTar {
    out: Vec<u8>,
}

impl RawTar {
    pub fn new() -> RawTar {
        RawTar::default()
    }

    /// A header with `name` and `link` copied in as raw bytes (at most 100
    /// each), claiming `size` bytes, with no data after it.
    pub fn header(&mut self, name: &[u8], kind: EntryType, mode: u32, size: u64, link: &[u8]) {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link);
        if matches!(kind, EntryType::Char | EntryType::Block) {
            h.set_device_major(1).expect("gnu header");
            h.set_device_minor(3).expect("gnu header");
        }
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
    }

    /// A header and its data, padded to the next block.
    pub fn entry(&mut self, name: &[u8], kind: EntryType, mode: u32, data: &[u8], link: &[u8]) {
        self.header(name, kind, mode, data.len() as u64, link);
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
    }

    pub fn file(&mut self, name: &[u8], data: &[u8]) {
        self.entry(name, EntryType::Regular, 0o644, data, b"");
    }

    /// A pax extended header whose records apply to the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) {
        let mut data = Vec::new();
        for (key, value) in records {
            // "<len> key=value\n", where len counts itself.
            let body = key.len() + value.len() + 3;
            let mut len = body + 1;
            while len != body + len.to_string().len() {
                len = body + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        self.entry(b"PaxHeaders/x", EntryType::XHeader, 0o644, &data, b"");
    }

    /// The end-of-archive marker and the tar bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.extend(std::iter::repeat_n(0u8, 1024));
        self.out
    }
}

pub fn gzip(tar: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(tar).expect("gzip to memory");
    gz.finish().expect("gzip to memory")
}

/// A small good archive: a directory, files (one executable), a symlink
/// inside and a hard link.
pub fn good_archive() -> Vec<u8> {
    let mut t = RawTar::new();
    t.entry(b"dir/", EntryType::Directory, 0o750, b"", b"");
    t.file(b"dir/hello.txt", b"hello\n");
    t.entry(
        b"dir/run.sh",
        EntryType::Regular,
        0o755,
        b"#!/bin/sh\necho hi\n",
        b"",
    );
    t.entry(b"hello", EntryType::Symlink, 0o777, b"", b"dir/hello.txt");
    t.entry(
        b"dir/again.txt",
        EntryType::Link,
        0o644,
        b"",
        b"dir/hello.txt",
    );
    gzip(&t.finish())
}

fn one(build: impl FnOnce(&mut RawTar)) -> Vec<u8> {
    let mut t = RawTar::new();
    build(&mut t);
    gzip(&t.finish())
}

/// The hostile archives, each refused under `limits` (the entry-count one
/// is built from `limits.max_entries`). Each starts with an innocent file
/// `first.txt`, so "nothing written" is tested, not only "refused early".
pub fn hostile_set(limits: &ArchiveLimits) -> Vec<Hostile> {
    let r = |name: &'static str, refusal: &str, build: &dyn Fn(&mut RawTar)| Hostile {
        name,
        archive: one(|t| {
            t.file(b"first.txt", b"innocent\n");
            build(t)
        }),
        refusal: refusal.to_string(),
    };
    let truncated = {
        let mut big = RawTar::new();
        // Incompressible data, so that cutting the stream cuts the tar.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let data: Vec<u8> = (0..64 << 10)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        big.file(b"first.txt", b"innocent\n");
        big.file(b"noise", &data);
        let full = gzip(&big.finish());
        full[..full.len() / 2].to_vec()
    };
    let mut set = vec![
        r("dotdot", "path leaves the workspace", &|t| {
            t.file(b"../escaped", b"x")
        }),
        r("dotdot-inside", "path leaves the workspace", &|t| {
            t.file(b"a/../../escaped", b"x")
        }),
        r("absolute", "absolute paths are not allowed", &|t| {
            t.file(b"/tmp/escaped", b"x")
        }),
        r(
            "symlink-then-file",
            "goes through the symlink \"link\"",
            &|t| {
                t.entry(b"sub/", EntryType::Directory, 0o755, b"", b"");
                t.entry(b"link", EntryType::Symlink, 0o777, b"", b"sub");
                t.file(b"link/file", b"through the link")
            },
        ),
        r(
            "symlink-out-then-file",
            "points outside the workspace",
            &|t| {
                t.entry(b"etc", EntryType::Symlink, 0o777, b"", b"/etc");
                t.file(b"etc/passwd", b"x")
            },
        ),
        r("symlink-outside", "points outside the workspace", &|t| {
            t.entry(b"up", EntryType::Symlink, 0o777, b"", b"../../etc")
        }),
        r(
            "symlink-dotdot-after-name",
            "`..` may only lead a target",
            &|t| {
                t.entry(b"sub/", EntryType::Directory, 0o755, b"", b"");
                t.entry(b"sub/up", EntryType::Symlink, 0o777, b"", b"..");
                t.entry(b"out", EntryType::Symlink, 0o777, b"", b"sub/up/..")
            },
        ),
        r(
            "hardlink-etc-passwd",
            "hard link to \"/etc/passwd\"",
            &|t| t.entry(b"passwd", EntryType::Link, 0o644, b"", b"/etc/passwd"),
        ),
        r(
            "hardlink-not-in-archive",
            "not an earlier file of this archive",
            &|t| t.entry(b"x", EntryType::Link, 0o644, b"", b"elsewhere"),
        ),
        r("device", "device nodes are not allowed", &|t| {
            t.entry(b"null", EntryType::Char, 0o666, b"", b"")
        }),
        r("block-device", "device nodes are not allowed", &|t| {
            t.entry(b"sda", EntryType::Block, 0o660, b"", b"")
        }),
        r("fifo", "fifos are not allowed", &|t| {
            t.entry(b"pipe", EntryType::Fifo, 0o644, b"", b"")
        }),
        r("setuid", "the setuid bit is not allowed", &|t| {
            t.entry(b"suid", EntryType::Regular, 0o4755, b"\x7fELF", b"")
        }),
        r("setgid-dir", "the setgid bit is not allowed", &|t| {
            t.entry(b"sgid/", EntryType::Directory, 0o2775, b"", b"")
        }),
        r("claims-10gib", "claims 10737418240 bytes", &|t| {
            t.header(b"big", EntryType::Regular, 0o644, 10 << 30, b"")
        }),
        r("pax-path-escape", "path leaves the workspace", &|t| {
            t.pax(&[("path", b"../pax-escaped")]);
            t.file(b"harmless", b"x")
        }),
        r(
            "pax-size-mismatch",
            "pax size 10737418240 disagrees",
            &|t| {
                t.pax(&[("size", b"10737418240")]);
                t.file(b"small", b"x")
            },
        ),
        r("gnu-longname-escape", "path leaves the workspace", &|t| {
            let mut name = b"../".to_vec();
            name.extend(std::iter::repeat_n(b'a', 200));
            name.push(0);
            t.entry(b"././@LongLink", EntryType::GNULongName, 0o644, &name, b"");
            t.file(b"harmless", b"x")
        }),
        r(
            "longname-claims-10gib",
            "extended header of 10737418240 bytes",
            &|t| {
                t.header(
                    b"././@LongLink",
                    EntryType::GNULongName,
                    0o644,
                    10 << 30,
                    b"",
                )
            },
        ),
        r("nul-in-name", "NUL byte in a name", &|t| {
            t.pax(&[("path", b"a\0b")]);
            t.file(b"harmless", b"x")
        }),
        r("duplicate", "appears twice", &|t| {
            t.file(b"first.txt", b"again")
        }),
        Hostile {
            name: "too-many-entries",
            archive: one(|t| {
                for i in 0..=limits.max_entries {
                    t.file(format!("f{i}").as_bytes(), b"");
                }
            }),
            refusal: format!("more than {} entries", limits.max_entries),
        },
        Hostile {
            name: "not-gzip",
            archive: {
                let mut t = RawTar::new();
                t.file(b"first.txt", b"plain tar");
                t.finish()
            },
            refusal: "not a gzip'd tar archive".into(),
        },
        Hostile {
            name: "truncated-gzip",
            archive: truncated,
            refusal: "truncated".into(),
        },
    ];
    set.push(Hostile {
        name: "trailing-garbage",
        archive: {
            let mut a = good_archive();
            a.extend_from_slice(b"more");
            a
        },
        refusal: "data after the end of the archive".into(),
    });
    set
}
