use std::io::Cursor;
use std::os::fd::AsFd;
use std::path::Path;

use super::*;
use crate::archive::testing::{good_archive, gzip, hostile_set, RawTar};

fn root(dir: &Path) -> OwnedFd {
    open_dir_at(rustix::fs::CWD, dir).unwrap()
}

fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in walk(dir) {
        out.push(e.strip_prefix(dir).unwrap().display().to_string());
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(p.clone());
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        }
    }
    out
}

#[test]
fn paths_are_checked_as_text() {
    assert_eq!(parse("").unwrap(), Vec::<Vec<u8>>::new());
    assert_eq!(
        parse("a//b/./c/").unwrap(),
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
    for bad in ["../x", "a/../b", "..", "/etc/passwd", "a\0b"] {
        assert!(
            matches!(parse(bad), Err(FileError::BadPath { .. })),
            "{bad:?} accepted"
        );
    }
    assert!(parse(&"a".repeat(256)).is_err());
    assert!(parse(&"a/".repeat(300)).is_err());
    assert!(parse(&"a".repeat(4097)).is_err());
}

#[test]
fn a_file_goes_in_and_comes_out() {
    let home = tempfile::tempdir().unwrap();
    let r = root(home.path());
    let n = put_file(r.as_fd(), &parse("a/b/c.txt").unwrap(), &mut &b"hello"[..]).unwrap();
    assert_eq!(n, 5);
    assert_eq!(
        std::fs::read(home.path().join("a/b/c.txt")).unwrap(),
        b"hello"
    );
    // Replaced, keeping its mode.
    std::fs::set_permissions(
        home.path().join("a/b/c.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o751),
    )
    .unwrap();
    put_file(r.as_fd(), &parse("a/b/c.txt").unwrap(), &mut &b"bye"[..]).unwrap();
    let meta = std::fs::metadata(home.path().join("a/b/c.txt")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o751
    );
    let mut out = Vec::new();
    get(
        r.as_fd(),
        &parse("a/b/c.txt").unwrap(),
        &mut out,
        &ArchiveLimits::default(),
    )
    .unwrap();
    assert_eq!(out, b"file\nbye");
    assert_eq!(listing(home.path()), ["a", "a/b", "a/b/c.txt"]);
}

#[test]
fn a_folder_comes_out_as_tar_gz_and_goes_back_in() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("src/d")).unwrap();
    std::fs::write(home.path().join("src/d/f"), b"data").unwrap();
    let r = root(home.path());
    let mut out = Vec::new();
    get(
        r.as_fd(),
        &parse("src").unwrap(),
        &mut out,
        &ArchiveLimits::default(),
    )
    .unwrap();
    assert!(out.starts_with(b"dir\n"));
    let tgz = out[4..].to_vec();
    put_archive(
        r.as_fd(),
        &parse("copy/here").unwrap(),
        Cursor::new(tgz),
        &ArchiveLimits::default(),
    )
    .unwrap();
    assert_eq!(
        std::fs::read(home.path().join("copy/here/d/f")).unwrap(),
        b"data"
    );
}

#[test]
fn symlinks_on_the_path_are_refused_with_nothing_written() {
    let home = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"s").unwrap();
    std::os::unix::fs::symlink(outside.path(), home.path().join("out")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), home.path().join("s")).unwrap();
    let r = root(home.path());
    let limits = ArchiveLimits::default();
    for path in ["out/secret", "out", "s", "out/new/x"] {
        let comps = parse(path).unwrap();
        assert!(
            matches!(
                get(r.as_fd(), &comps, Vec::new(), &limits),
                Err(FileError::Symlink { .. })
            ),
            "get {path}"
        );
        assert!(
            matches!(
                put_file(r.as_fd(), &comps, &mut &b"x"[..]),
                Err(FileError::Symlink { .. })
            ),
            "put {path}"
        );
        let tgz = Cursor::new(good_archive());
        assert!(
            matches!(
                put_archive(r.as_fd(), &comps, tgz, &limits),
                Err(FileError::Symlink { .. })
            ),
            "put archive {path}"
        );
    }
    assert_eq!(listing(outside.path()), ["secret"]);
    assert_eq!(std::fs::read(outside.path().join("secret")).unwrap(), b"s");
    assert_eq!(listing(home.path()), ["out", "s"]);
}

#[test]
fn a_hostile_archive_makes_not_even_its_directory() {
    let home = tempfile::tempdir().unwrap();
    let r = root(home.path());
    let limits = ArchiveLimits::default();
    for h in hostile_set(&limits) {
        let err = put_archive(
            r.as_fd(),
            &parse("new/dir").unwrap(),
            Cursor::new(h.archive.clone()),
            &limits,
        );
        assert!(err.is_err(), "{}", h.name);
        assert_eq!(listing(home.path()), Vec::<String>::new(), "{}", h.name);
    }
    // A good one makes its directory.
    let mut t = RawTar::new();
    t.file(b"f", b"x");
    let ok = gzip(&t.finish());
    put_archive(r.as_fd(), &parse("d").unwrap(), Cursor::new(ok), &limits).unwrap();
    assert_eq!(listing(home.path()), ["d", "d/f"]);
}

#[test]
fn missing_and_wrong_kinds_are_told_apart() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join("d")).unwrap();
    std::fs::write(home.path().join("f"), b"").unwrap();
    let r = root(home.path());
    let limits = ArchiveLimits::default();
    let e = get(r.as_fd(), &parse("nope/x").unwrap(), Vec::new(), &limits).unwrap_err();
    assert_eq!(e.exit_code(), exit::NOT_FOUND, "{e}");
    let e = get(r.as_fd(), &parse("nope").unwrap(), Vec::new(), &limits).unwrap_err();
    assert_eq!(e.exit_code(), exit::NOT_FOUND, "{e}");
    let e = put_file(r.as_fd(), &parse("d").unwrap(), &mut &b""[..]).unwrap_err();
    assert_eq!(e.exit_code(), exit::CONFLICT, "{e}");
    let e = put_file(r.as_fd(), &parse("f/x").unwrap(), &mut &b""[..]).unwrap_err();
    assert_eq!(e.exit_code(), exit::CONFLICT, "{e}");
    let e = put_file(r.as_fd(), &[], &mut &b""[..]).unwrap_err();
    assert_eq!(e.exit_code(), exit::REFUSED, "{e}");
    assert_eq!(listing(home.path()), ["d", "f"]);
}
