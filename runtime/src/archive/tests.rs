use std::collections::BTreeMap;
use std::fs;
use std::io::Cursor;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use tar::EntryType;

use super::testing::{gzip, hostile_set, RawTar};
use super::*;

/// Everything below `root` that an extraction could change: type, mode,
/// size, content or link target, mtime; never following a symlink.
fn listing(root: &Path) -> BTreeMap<Vec<u8>, String> {
    fn walk(dir: &Path, rel: &[u8], out: &mut BTreeMap<Vec<u8>, String>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let rel = [rel, b"/", e.file_name().as_bytes()].concat();
            let m = fs::symlink_metadata(e.path()).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("link -> {:?}", fs::read_link(e.path()).unwrap())
            } else if m.is_dir() {
                format!("dir {:o} {}", m.mode() & 0o7777, m.mtime())
            } else if m.is_file() {
                format!(
                    "file {:o} {} {:?}",
                    m.mode() & 0o7777,
                    m.mtime(),
                    fs::read(e.path()).unwrap()
                )
            } else {
                format!("special {:o}", m.mode())
            };
            out.insert(rel.clone(), what);
            if m.is_dir() {
                walk(&e.path(), &rel, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, b"", &mut out);
    out
}

/// A destination inside a scratch directory, already holding a file, so
/// "nothing written" covers both the destination and its surroundings.
fn new_scratch() -> (tempfile::TempDir, std::path::PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let dest = d.path().join("home");
    fs::create_dir(&dest).unwrap();
    fs::write(dest.join("existing"), "mine\n").unwrap();
    (d, dest)
}

fn small_limits() -> ArchiveLimits {
    ArchiveLimits {
        max_entries: 50,
        ..ArchiveLimits::default()
    }
}

#[test]
fn every_hostile_archive_is_refused_by_validate_with_its_reason() {
    let limits = small_limits();
    let set = hostile_set(&limits);
    assert!(set.len() >= 20);
    for h in set {
        let err = validate(Cursor::new(&h.archive), &limits)
            .expect_err(&format!("{} was accepted", h.name));
        let msg = err.to_string();
        assert!(
            msg.contains(&h.refusal),
            "{}: {msg:?} does not say {:?}",
            h.name,
            h.refusal
        );
        assert!(err.is_refusal(), "{}: {err:?} is not a refusal", h.name);
    }
}

#[test]
fn every_hostile_archive_is_refused_by_extract_with_nothing_written() {
    let limits = small_limits();
    for h in hostile_set(&limits) {
        let (scratch, dest) = new_scratch();
        let before = listing(scratch.path());
        let err = extract(Cursor::new(&h.archive), &dest, &limits)
            .expect_err(&format!("{} was extracted", h.name));
        assert!(err.to_string().contains(&h.refusal), "{}: {err}", h.name);
        assert_eq!(
            listing(scratch.path()),
            before,
            "{} wrote something",
            h.name
        );
    }
}

#[test]
fn refusals_name_the_entry_and_the_rule() {
    let limits = ArchiveLimits::default();
    let msg = |name: &str| {
        let h = hostile_set(&small_limits())
            .into_iter()
            .find(|h| h.name == name)
            .unwrap();
        validate(Cursor::new(&h.archive), &limits)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        msg("dotdot"),
        "entry \"../escaped\": path leaves the workspace (`..`)"
    );
    assert_eq!(
        msg("device"),
        "entry \"null\": device nodes are not allowed"
    );
    assert_eq!(
        msg("claims-10gib"),
        "entry \"big\" claims 10737418240 bytes, over the 1 GiB per-file limit"
    );
    assert_eq!(
        msg("hardlink-etc-passwd"),
        "entry \"passwd\": hard link to \"/etc/passwd\", which is not an earlier file of this archive"
    );
    assert_eq!(
        msg("symlink-then-file"),
        "entry \"link/file\": goes through the symlink \"link\" earlier in the archive"
    );
    assert_eq!(
        msg("symlink-outside"),
        "entry \"up\": symlink to \"../../etc\" points outside the workspace"
    );
}

#[test]
fn the_whole_archive_limit_counts_every_file() {
    let mut t = RawTar::new();
    t.file(b"a", &[1; 600]);
    t.file(b"b", &[2; 600]);
    let archive = gzip(&t.finish());
    let limits = ArchiveLimits {
        max_bytes: 1000,
        ..ArchiveLimits::default()
    };
    let err = validate(Cursor::new(&archive), &limits).unwrap_err();
    assert_eq!(
        err.to_string(),
        "entry \"b\" claims 600 bytes, over the 1000 bytes limit for the whole archive"
    );
    let ok = validate(Cursor::new(&archive), &ArchiveLimits::default()).unwrap();
    assert_eq!((ok.files, ok.bytes), (2, 1200));
}

#[test]
fn a_short_data_section_is_truncation_even_with_a_valid_gzip_stream() {
    let mut t = RawTar::new();
    t.header(b"short", EntryType::Regular, 0o644, 4096, b"");
    t.file(b"x", b"y");
    // No end marker and less data than claimed: the tar stream just stops.
    let mut tar = t.finish();
    tar.truncate(512 + 1024);
    let err = validate(Cursor::new(gzip(&tar)), &ArchiveLimits::default()).unwrap_err();
    assert!(matches!(err, ArchiveError::Truncated), "{err:?}");
}

#[test]
fn a_corrupt_gzip_trailer_is_caught() {
    let mut archive = testing::good_archive();
    let crc = archive.len() - 8;
    archive[crc] ^= 0xff;
    let err = validate(Cursor::new(&archive), &ArchiveLimits::default()).unwrap_err();
    assert!(matches!(err, ArchiveError::Corrupt { .. }), "{err:?}");
}

#[test]
fn gzip_that_is_not_tar_is_refused() {
    let err = validate(
        Cursor::new(gzip(b"hello, this is not a tar archive at all")),
        &ArchiveLimits::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("not a tar archive"), "{err}");
}

#[test]
fn an_empty_archive_is_fine() {
    let s = validate(
        Cursor::new(gzip(&RawTar::new().finish())),
        &ArchiveLimits::default(),
    )
    .unwrap();
    assert_eq!(s, Summary::default());
}

#[test]
fn the_good_archive_unpacks_with_modes_links_and_times() {
    let archive = testing::good_archive();
    let s = validate(Cursor::new(&archive), &ArchiveLimits::default()).unwrap();
    assert_eq!(
        s,
        Summary {
            entries: 5,
            files: 2,
            dirs: 1,
            symlinks: 1,
            hardlinks: 1,
            bytes: 6 + 18,
        }
    );
    let (_scratch, dest) = new_scratch();
    assert_eq!(
        extract(Cursor::new(&archive), &dest, &ArchiveLimits::default()).unwrap(),
        s
    );
    assert_eq!(fs::read(dest.join("existing")).unwrap(), b"mine\n");
    assert_eq!(fs::read(dest.join("dir/hello.txt")).unwrap(), b"hello\n");
    let mode = |p: &str| fs::symlink_metadata(dest.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("dir"), 0o750);
    assert_eq!(mode("dir/run.sh"), 0o755);
    assert_eq!(mode("dir/hello.txt"), 0o644);
    assert_eq!(
        fs::read_link(dest.join("hello")).unwrap(),
        Path::new("dir/hello.txt")
    );
    let ino = |p: &str| fs::metadata(dest.join(p)).unwrap().ino();
    assert_eq!(ino("dir/again.txt"), ino("dir/hello.txt"));
    let mtime = |p: &str| fs::symlink_metadata(dest.join(p)).unwrap().mtime();
    assert_eq!(
        (mtime("dir"), mtime("dir/run.sh"), mtime("hello")),
        (1_700_000_000, 1_700_000_000, 1_700_000_000)
    );
    // No temporary names left behind.
    let names: Vec<_> = fs::read_dir(dest.join("dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");

    // Importing again replaces in place, hard link included.
    extract(Cursor::new(&archive), &dest, &ArchiveLimits::default()).unwrap();
    assert_eq!(ino("dir/again.txt"), ino("dir/hello.txt"));
    let names: Vec<_> = fs::read_dir(dest.join("dir")).unwrap().collect();
    assert_eq!(names.len(), 3);
}

#[test]
fn a_symlink_in_the_destination_is_replaced_never_written_through() {
    let (scratch, dest) = new_scratch();
    let outside = scratch.path().join("outside.txt");
    fs::write(&outside, "do not touch\n").unwrap();
    fs::create_dir(dest.join("dir")).unwrap();
    symlink(&outside, dest.join("dir/hello.txt")).unwrap();
    extract(
        Cursor::new(testing::good_archive()),
        &dest,
        &ArchiveLimits::default(),
    )
    .unwrap();
    assert_eq!(fs::read(&outside).unwrap(), b"do not touch\n");
    let m = fs::symlink_metadata(dest.join("dir/hello.txt")).unwrap();
    assert!(m.is_file());
    assert_eq!(fs::read(dest.join("dir/hello.txt")).unwrap(), b"hello\n");
}

#[test]
fn a_destination_that_conflicts_refuses_the_archive_with_nothing_written() {
    // A symlink where the archive has a directory: never followed.
    let (scratch, dest) = new_scratch();
    let outside = scratch.path().join("outside");
    fs::create_dir(&outside).unwrap();
    symlink(&outside, dest.join("dir")).unwrap();
    let before = listing(scratch.path());
    let err = extract(
        Cursor::new(testing::good_archive()),
        &dest,
        &ArchiveLimits::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "entry \"dir\": the workspace has a symlink (never followed) where the archive has a directory"
    );
    assert_eq!(listing(scratch.path()), before);

    // A directory where the archive has a file.
    let (scratch, dest) = new_scratch();
    fs::create_dir(dest.join("hello")).unwrap();
    let before = listing(scratch.path());
    let err = extract(
        Cursor::new(testing::good_archive()),
        &dest,
        &ArchiveLimits::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("a directory where the archive has a symlink"),
        "{err}"
    );
    assert_eq!(listing(scratch.path()), before);
}

#[test]
fn a_pipe_is_spooled_into_a_seekable_file() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("a.tgz");
    fs::write(&src, testing::good_archive()).unwrap();
    let mut cat = Command::new("cat")
        .arg(&src)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pipe = fs::File::from(std::os::fd::OwnedFd::from(cat.stdout.take().unwrap()));
    let spool = seekable(pipe, d.path(), &ArchiveLimits::default()).unwrap();
    cat.wait().unwrap();
    let dest = d.path().join("out");
    fs::create_dir(&dest).unwrap();
    let s = extract(spool, &dest, &ArchiveLimits::default()).unwrap();
    assert_eq!(s.files, 2);
    // The spool had no name: only the source and the destination exist.
    assert_eq!(fs::read_dir(d.path()).unwrap().count(), 2);
}

/// A tree with what a home holds, and what an export must leave out.
fn sample_home(root: &Path) {
    let w = |p: &str, data: &[u8], mode: u32| {
        fs::write(root.join(p), data).unwrap();
        fs::set_permissions(root.join(p), fs::Permissions::from_mode(mode)).unwrap();
    };
    fs::create_dir_all(root.join("src/deep/er")).unwrap();
    fs::create_dir(root.join("empty")).unwrap();
    w("src/main.rs", b"fn main() {}\n", 0o644);
    w("src/deep/er/run", b"#!/bin/sh\n", 0o750);
    w("src/deep/big", &vec![7u8; 300_000], 0o600);
    let long = "n".repeat(150);
    fs::create_dir(root.join(&long)).unwrap();
    w(&format!("{long}/{long}"), b"long name\n", 0o644);
    w("caf\u{e9}", b"utf-8 name\n", 0o644);
    fs::write(
        root.join(std::ffi::OsStr::from_bytes(b"raw\xff")),
        b"not utf-8\n",
    )
    .unwrap();
    symlink("src/main.rs", root.join("main")).unwrap();
    symlink("../main.rs", root.join("src/deep/up")).unwrap();
    symlink(format!("{long}/{long}"), root.join("long-link")).unwrap();
    fs::hard_link(root.join("src/main.rs"), root.join("src/also.rs")).unwrap();
    // Left out of an export, with a note:
    symlink("/etc/passwd", root.join("abs")).unwrap();
    symlink("../outside", root.join("escape")).unwrap();
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    // A read-only directory with a file in it.
    fs::create_dir(root.join("ro")).unwrap();
    w("ro/kept", b"kept\n", 0o444);
    fs::set_permissions(root.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    // Times that must survive.
    for p in ["src/main.rs", "src/deep", "ro"] {
        let t = nix::sys::time::TimeSpec::new(1_600_000_000, 0);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &root.join(p),
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }
}

#[test]
fn export_then_import_round_trips() {
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("alice");
    fs::create_dir(&home).unwrap();
    sample_home(&home);

    let mut archive = Vec::new();
    let exported = export(&home, &mut archive, &ArchiveLimits::default()).unwrap();
    let mut skipped: Vec<_> = exported.skipped.iter().map(|s| s.path.as_str()).collect();
    skipped.sort();
    assert_eq!(skipped, ["abs", "escape", "fifo"], "{:?}", exported.skipped);
    assert!(exported.skipped[0].reason.len() > 10);
    assert_eq!(exported.summary.hardlinks, 1);
    assert_eq!(
        validate(Cursor::new(&archive), &ArchiveLimits::default()).unwrap(),
        exported.summary
    );

    let bob = d.path().join("bob");
    fs::create_dir(&bob).unwrap();
    let imported = extract(Cursor::new(&archive), &bob, &ArchiveLimits::default()).unwrap();
    assert_eq!(imported, exported.summary);

    let mut want = listing(&home);
    for gone in ["/abs", "/escape", "/fifo"] {
        want.remove(gone.as_bytes()).unwrap();
    }
    assert_eq!(listing(&bob), want);
    // Again, over itself (the read-only directory included).
    extract(Cursor::new(&archive), &bob, &ArchiveLimits::default()).unwrap();
    assert_eq!(listing(&bob), want);
    assert_eq!(
        fs::metadata(bob.join("src/also.rs")).unwrap().ino(),
        fs::metadata(bob.join("src/main.rs")).unwrap().ino()
    );
}

/// The plain tar the server compresses holds the same entries as the
/// tool's tar.gz, and compressed with `archive::gzip` it is the same archive.
#[test]
fn export_tar_gzipped_by_the_caller_is_the_same_archive() {
    use std::os::fd::AsFd;
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("alice");
    fs::create_dir(&home).unwrap();
    sample_home(&home);
    let mut tgz = Vec::new();
    let exported = export(&home, &mut tgz, &ArchiveLimits::default()).unwrap();
    let root = fs::File::open(&home).unwrap();
    let mut tar = Vec::new();
    let plain = export_tar_at(root.as_fd(), &mut tar, &ArchiveLimits::default()).unwrap();
    assert_eq!(plain, exported);
    let mut gz = super::gzip(Vec::new());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    let ours = gz.finish().unwrap();
    assert_eq!(
        validate(Cursor::new(&ours), &ArchiveLimits::default()).unwrap(),
        exported.summary
    );
    let mut unpacked = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&tgz[..]), &mut unpacked).unwrap();
    assert_eq!(unpacked, tar);
}

/// An export cut short by a limit must not look complete: before, the
/// tar builder and the gzip encoder, dropped on the error, still wrote
/// the end marker and the trailer, and what was written so far validated.
#[test]
fn an_export_over_a_limit_is_not_a_complete_archive() {
    use std::os::fd::AsFd;
    let d = tempfile::tempdir().unwrap();
    for i in 0..5 {
        fs::write(d.path().join(format!("f{i}")), [b'x'; 100]).unwrap();
    }
    let few = ArchiveLimits {
        max_entries: 4,
        ..ArchiveLimits::default()
    };
    let mut tgz = Vec::new();
    export(d.path(), &mut tgz, &few).unwrap_err();
    assert!(
        validate(Cursor::new(&tgz), &ArchiveLimits::default()).is_err(),
        "a cut export validated"
    );
    let root = fs::File::open(d.path()).unwrap();
    let mut tar = Vec::new();
    export_tar_at(root.as_fd(), &mut tar, &few).unwrap_err();
    assert!(!tar.is_empty());
    // Four entries of a header and one data block each, no end marker.
    assert_eq!(tar.len(), 4 * 1024, "{}", tar.len());
}

#[test]
fn export_drops_special_bits_and_never_follows_the_root_symlink() {
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("home");
    fs::create_dir(&home).unwrap();
    fs::write(home.join("tool"), "x").unwrap();
    fs::set_permissions(home.join("tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    let mut archive = Vec::new();
    export(&home, &mut archive, &ArchiveLimits::default()).unwrap();
    let out = d.path().join("out");
    fs::create_dir(&out).unwrap();
    extract(Cursor::new(&archive), &out, &ArchiveLimits::default()).unwrap();
    assert_eq!(
        fs::metadata(out.join("tool")).unwrap().mode() & 0o7777,
        0o755
    );

    symlink(&home, d.path().join("link")).unwrap();
    let err = export(
        &d.path().join("link"),
        Vec::new(),
        &ArchiveLimits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, ArchiveError::Io { .. }), "{err:?}");
}

#[test]
fn export_stops_at_the_limits() {
    let d = tempfile::tempdir().unwrap();
    for i in 0..5 {
        fs::write(d.path().join(format!("f{i}")), [0u8; 100]).unwrap();
    }
    let few = ArchiveLimits {
        max_entries: 4,
        ..ArchiveLimits::default()
    };
    let err = export(d.path(), Vec::new(), &few).unwrap_err();
    assert_eq!(err.to_string(), "more than 4 entries");
    let small = ArchiveLimits {
        max_bytes: 250,
        ..ArchiveLimits::default()
    };
    let err = export(d.path(), Vec::new(), &small).unwrap_err();
    assert!(
        err.to_string().contains("entry \"f2\" claims 100 bytes"),
        "{err}"
    );
}

/// Archives written by GNU tar (gnu and pax formats, `./` prefixes, long
/// names) are read like ours. (tar is an Essential package on Debian.)
#[test]
fn gnu_tar_archives_are_accepted() {
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("src");
    fs::create_dir(&home).unwrap();
    sample_home(&home);
    for junk in ["abs", "escape", "fifo"] {
        fs::remove_file(home.join(junk)).unwrap();
    }
    for format in ["gnu", "pax"] {
        let archive = d.path().join(format!("{format}.tgz"));
        let st = Command::new("tar")
            .args(["--format", format, "-czf"])
            .arg(&archive)
            .arg("-C")
            .arg(&home)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        let dest = d.path().join(format!("dest-{format}"));
        fs::create_dir(&dest).unwrap();
        let s = extract(
            fs::File::open(&archive).unwrap(),
            &dest,
            &ArchiveLimits::default(),
        )
        .unwrap();
        assert_eq!(s.hardlinks, 1, "{format}");
        let mut want = listing(&home);
        let mut got = listing(&dest);
        // GNU tar stores the pax mtime of directories it is still
        // writing into; compare files and links only.
        want.retain(|_, v| !v.starts_with("dir"));
        got.retain(|_, v| !v.starts_with("dir"));
        assert_eq!(got, want, "{format}");
    }
}

#[test]
fn extreme_times_are_applied_or_clamped_never_fail_midway() {
    let mut t = RawTar::new();
    t.pax(&[("mtime", b"-100.5")]);
    t.file(b"old", b"x");
    t.header(b"future", EntryType::Regular, 0o644, 1, b"");
    let mut tar = t.finish();
    tar.truncate(tar.len() - 1024);
    // Rewrite the last header's mtime as GNU base-256: the largest there is.
    let start = tar.len() - 512;
    let mut h = tar::Header::new_gnu();
    h.as_mut_bytes().copy_from_slice(&tar[start..]);
    h.set_mtime(u64::MAX);
    h.set_cksum();
    tar[start..].copy_from_slice(h.as_bytes());
    tar.extend_from_slice(b"y");
    tar.extend(std::iter::repeat_n(0u8, 511 + 1024));
    let (_scratch, dest) = new_scratch();
    let s = extract(Cursor::new(gzip(&tar)), &dest, &ArchiveLimits::default()).unwrap();
    assert_eq!(s.files, 2);
    assert_eq!(fs::read(dest.join("future")).unwrap(), b"y");
}

/// Serves `first` until the first seek to the start, then `second`: an
/// input that changes between extract's passes.
struct Changing {
    first: Cursor<Vec<u8>>,
    second: Cursor<Vec<u8>>,
    switched: bool,
}

impl std::io::Read for Changing {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.switched {
            false => self.first.read(buf),
            true => self.second.read(buf),
        }
    }
}

impl std::io::Seek for Changing {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        if let std::io::SeekFrom::Start(_) = pos {
            self.switched = true;
        }
        match self.switched {
            false => self.first.seek(pos),
            true => self.second.seek(pos),
        }
    }
}

fn many_files(n: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..n {
        let data = vec![b'x' + (i % 3) as u8; 4096];
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, format!("d{}/f{i}", i % 2), data.as_slice())
            .unwrap();
    }
    gzip(&b.into_inner().unwrap())
}

#[test]
fn a_failure_while_unpacking_leaves_the_destination_as_it_was() {
    let (scratch, dest) = new_scratch();
    let before = listing(scratch.path());
    let good = many_files(40);
    // Cut in the middle: pass 3 writes some files, then the stream ends.
    let input = Changing {
        first: Cursor::new(good.clone()),
        second: Cursor::new(good[..good.len() / 2].to_vec()),
        switched: false,
    };
    let err = extract(input, &dest, &ArchiveLimits::default()).unwrap_err();
    assert!(err.is_refusal(), "{err}");
    assert_eq!(listing(scratch.path()), before);
}

#[test]
fn a_staging_directory_left_by_a_killed_import_is_swept_without_following_links() {
    let (scratch, dest) = new_scratch();
    let outside = scratch.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("precious"), "keep\n").unwrap();
    let left = dest.join(".warren-import-0123456789abcdef");
    fs::create_dir_all(left.join("ro/sub")).unwrap();
    fs::write(left.join("ro/sub/f"), "x").unwrap();
    symlink(&outside, left.join("out")).unwrap();
    fs::set_permissions(left.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    // Not a staging name: the user's own.
    fs::create_dir(dest.join(".warren-import-mine")).unwrap();
    let summary = extract(Cursor::new(many_files(4)), &dest, &ArchiveLimits::default()).unwrap();
    assert_eq!(summary.files, 4);
    assert!(!left.exists());
    assert!(dest.join(".warren-import-mine").is_dir());
    assert!(dest.join("d1/f3").is_file());
    assert_eq!(fs::read(outside.join("precious")).unwrap(), b"keep\n");
    let names: Vec<_> = fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert_eq!(clean(&dest).unwrap(), 0);
}

#[test]
fn the_sweep_leaves_a_running_import_alone() {
    let (_scratch, dest) = new_scratch();
    let fd =
        rustix::fs::open(&dest, rustix::fs::OFlags::RDONLY, rustix::fs::Mode::empty()).unwrap();
    // Another import, still running: its staging directory is locked.
    let (name, staged) = staging::create(std::os::fd::AsFd::as_fd(&fd)).unwrap();
    assert_eq!(clean(&dest).unwrap(), 0);
    assert!(dest.join(&name).is_dir());
    drop(staged);
    assert_eq!(clean(&dest).unwrap(), 1);
    assert!(!dest.join(&name).exists());
}
