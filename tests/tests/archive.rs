//! Workspace archives in real sandboxes: `warren-export` in alice's
//! sandbox, `warren-import` of that archive in bob's, and every hostile
//! archive given to `warren-import` refused with nothing written, all as
//! the sandbox user under seccomp and Landlock.

use std::fs::File;
use std::io::{Cursor, Write};
use std::process::{Output, Stdio};

use warren_runtime::archive::{self, testing, ArchiveLimits, Summary};
use warren_tests::Env;

/// Every entry of the home as the user sees it: type, mode, size, mtime,
/// link target (`.` itself left out: its times are the host's).
const LISTING: &str = "find . -mindepth 1 -printf '%y %m %s %Ts %p -> %l\\n' | LC_ALL=C sort";

fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn listing(env: &Env, user: &str) -> String {
    let out = env.run(user, &["sh", "-c", LISTING]);
    check(&out, "listing");
    String::from_utf8(out.stdout).unwrap()
}

/// `warren-import ARGS` in `user`'s sandbox with `archive` as stdin: a
/// file (as the server passes it) or, with `pipe`, a pipe.
fn import(env: &Env, user: &str, archive: &[u8], args: &[&str], pipe: bool) -> Output {
    let mut cmd = env.warren_run(user);
    cmd.arg("--").arg("warren-import").args(args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if pipe {
        let mut child = cmd.stdin(Stdio::piped()).spawn().expect("spawn warren");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(archive).unwrap();
        drop(stdin);
        child.wait_with_output().unwrap()
    } else {
        let path = env.dir.path().join("upload.tgz");
        std::fs::write(&path, archive).unwrap();
        cmd.stdin(File::open(&path).unwrap())
            .output()
            .expect("spawn warren")
    }
}

#[test]
fn alices_export_imports_into_bobs_and_carols_homes() {
    let env = Env::new();
    let make = "mkdir -p proj/src/deep empty && printf 'fn main() {}\\n' > proj/src/main.rs \
        && printf '#!/bin/sh\\necho hi\\n' > proj/run.sh && chmod 750 proj/run.sh \
        && head -c 300000 /dev/zero > proj/src/deep/zeros && chmod 600 proj/src/deep/zeros \
        && ln -s proj/src/main.rs main && ln -s ../main.rs proj/src/deep/up \
        && ln proj/src/main.rs proj/src/also.rs \
        && ln -s /etc/passwd abs && mkfifo fifo \
        && touch -d @1600000000 proj/src/main.rs proj/src && chmod 555 proj/src/deep";
    check(
        &env.run("alice", &["sh", "-c", make]),
        "populate alice's home",
    );

    let path = env.dir.path().join("alice.tgz");
    let out = env
        .warren_run("alice")
        .args(["--", "warren-export"])
        .stdout(File::create(&path).unwrap())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    check(&out, "warren-export");
    let notes = String::from_utf8_lossy(&out.stderr);
    assert!(
        notes.contains("left out \"abs\": symlink to \"/etc/passwd\" points outside the workspace"),
        "{notes}"
    );
    assert!(notes.contains("left out \"fifo\""), "{notes}");

    // What the server does first, host-side: a pure check of the upload.
    let bytes = std::fs::read(&path).unwrap();
    let summary = archive::validate(Cursor::new(&bytes), &ArchiveLimits::default()).unwrap();
    assert_eq!(
        (
            summary.files,
            summary.hardlinks,
            summary.symlinks,
            summary.dirs
        ),
        (3, 1, 2, 4),
        "{summary:?}"
    );

    let mut want = listing(&env, "alice");
    want = want
        .lines()
        .filter(|l| !l.contains(" ./abs ") && !l.contains(" ./fifo "))
        .map(|l| format!("{l}\n"))
        .collect();
    for (user, pipe) in [("bob", false), ("carol", true)] {
        let out = import(&env, user, &bytes, &[], pipe);
        check(&out, "warren-import");
        let got: Summary = serde_json::from_slice(&out.stdout).expect("a JSON summary");
        assert_eq!(got, summary, "{user}");
        assert_eq!(
            listing(&env, user),
            want,
            "{user}'s home differs from alice's"
        );
    }
    // Importing again over the same files works and changes nothing.
    check(&import(&env, "bob", &bytes, &[], false), "second import");
    assert_eq!(listing(&env, "bob"), want);
}

#[test]
fn hostile_archives_given_to_warren_import_write_nothing() {
    let env = Env::new();
    check(
        &env.run(
            "bob",
            &["sh", "-c", "mkdir notes && echo mine > notes/todo"],
        ),
        "populate bob's home",
    );
    let before = listing(&env, "bob");
    let limits = ArchiveLimits {
        max_entries: 40,
        ..ArchiveLimits::default()
    };
    for h in testing::hostile_set(&limits) {
        for pipe in [false, true] {
            let out = import(&env, "bob", &h.archive, &["--max-entries", "40"], pipe);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{} was accepted: {err}", h.name);
            assert!(err.contains(&h.refusal), "{}: {err}", h.name);
            assert!(out.stdout.is_empty(), "{}", h.name);
        }
        assert_eq!(listing(&env, "bob"), before, "{} wrote something", h.name);
    }
}
