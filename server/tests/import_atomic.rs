//! Imports are all-or-nothing (issue 10, found by the API fuzzer's
//! `nothing_written_when_refused`): an import killed while unpacking, by
//! the user's memory limit or by the user's own processes, leaves the home
//! exactly as it was, seen from inside the sandbox; the next import works.
//! Runs in every mode of tests/matrix.sh.

mod common;

use common::*;
use serde_json::{json, Value};

async fn exec(server: &TestServer, user: &str, argv: &[&str]) -> Value {
    let body = json!({ "argv": argv, "timeout_secs": 120 });
    let r = admin(
        server.addr,
        "POST",
        &format!("/api/users/{user}/exec"),
        Some(body.clone()),
    )
    .await;
    assert_eq!(r.status, 200, "exec {body}: {}", r.text());
    r.json()
}

/// Every name in the home with its type and mode, and the size of every
/// file, from inside the sandbox.
async fn home(server: &TestServer, user: &str) -> String {
    let r = exec(
        server,
        user,
        &[
            "sh",
            "-c",
            "{ find . -printf '%y %m %p\\n'; find . -type f -printf 'size %p %s\\n'; } | sort",
        ],
    )
    .await;
    assert_eq!(r["exit_code"], 0, "{r}");
    r["stdout"].as_str().unwrap().to_string()
}

/// A home with something in it: a file, a read-only directory, a symlink,
/// and a file the archive also holds.
async fn fill(server: &TestServer, user: &str) {
    let r = exec(
        server,
        user,
        &[
            "sh",
            "-c",
            "mkdir -p keep/sub && echo kept > keep/sub/file && chmod 555 keep/sub \
             && ln -s keep link && echo old > f0 && chmod 600 f0",
        ],
    )
    .await;
    assert_eq!(r["exit_code"], 0, "{r}");
}

/// 20 small files `f0`..`f19` and 20 in `d/`, so some are unpacked
/// before the kill, then `big`.
fn archive(big: &[u8]) -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, name, data).unwrap();
    };
    for i in 0..20 {
        add(&format!("d/f{i}"), format!("new {i}\n").as_bytes());
        add(&format!("f{i}"), format!("new {i}\n").as_bytes());
    }
    add("big", big);
    tar.into_inner().unwrap().finish().unwrap()
}

async fn import(server: &TestServer, user: &str, data: Vec<u8>) -> ApiResponse {
    api(
        server.addr,
        "POST",
        &format!("/api/users/{user}/import"),
        Some(ADMIN_TOKEN),
        Some(data),
    )
    .await
}

/// After a refused import: the home as before.
async fn unchanged(server: &TestServer, user: &str, before: &str, answer: &ApiResponse) {
    assert_eq!(
        home(server, user).await,
        before,
        "the refused import ({} {}) changed the home",
        answer.status,
        answer.text()
    );
}

/// A small import works and leaves no staging directory behind.
async fn importable(server: &TestServer, user: &str) {
    let r = import(server, user, archive(b"small\n")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["files"], 41, "{}", r.text());
    let after = home(server, user).await;
    assert!(after.contains("size ./d/f19 7\n"), "{after}");
    assert!(after.contains("size ./keep/sub/file 5\n"), "{after}");
    assert!(!after.contains(".warren-import"), "{after}");
}

/// The user's own processes kill the unpacker (SIGKILL) once it has
/// written the first files: 409, nothing of it in the home. Every mode.
/// The kill races the unpacker: when the import ends before the kill (seen
/// once in CI's user mode) the try is repeated with a fresh user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_killed_by_the_users_processes_changes_nothing() {
    let d = dirs();
    let server = api_server(&d).await;
    for attempt in 0..4 {
        let user = format!("kill{attempt}");
        new_user(&server, &user).await;
        fill(&server, &user).await;
        let before = home(&server, &user).await;
        // 60 MiB of zeros (the test server takes 64): a small upload that
        // takes a while to write.
        let upload = archive(&vec![0u8; 60 << 20]);
        let killer = exec(
            &server,
            &user,
            &[
                "sh",
                "-c",
                "for i in $(seq 3000); do \
                   if find . -path '*/d/f3' | grep -q .; then \
                     pkill -KILL -f '^/opt/warren/bin/warren-import ' && exit 0; \
                     ps -eo pid,user,comm,args; exit 1; fi; \
                   sleep 0.02; done; ps -eo pid,user,comm,args; exit 1",
            ],
        );
        let (r, k) = tokio::join!(import(&server, &user, upload), killer);
        if k["exit_code"] != 0 && r.status == 200 {
            eprintln!("try {attempt}: the import ended before the kill ({k}); again");
            continue;
        }
        assert_eq!(k["exit_code"], 0, "the unpacker was not seen writing: {k}");
        // A kill that lands while the entries are renamed into place (the
        // window docs/archives.md owns to; seen in the userns mode, where
        // unpacking is fast) is no proof either way: try again. Without
        // staging every try changes the home, and the test fails.
        if home(&server, &user).await != before {
            eprintln!("try {attempt}: the kill landed while moving into place; again");
            continue;
        }
        assert_eq!(r.status, 409, "{}", r.text());
        assert!(r.text().contains("killed by signal 9"), "{}", r.text());
        assert!(r.text().contains("nothing was imported"), "{}", r.text());
        importable(&server, &user).await;
        return;
    }
    panic!("in four tries no kill caught the unpacker writing and left the home as it was");
}

/// Stops `user`'s sandbox (deleted, home kept, then created again) and
/// sets its memory limit, which applies from its next start.
async fn restart_with_memory(server: &TestServer, user: &str, bytes: u64) {
    let r = admin(server.addr, "DELETE", &format!("/api/users/{user}"), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["home_removed"], false, "{}", r.text());
    new_user(server, user).await;
    let r = admin(
        server.addr,
        "PUT",
        &format!("/api/users/{user}/limits"),
        Some(json!({ "memory_bytes": bytes })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// 990 files, each under 11 nested directories of 250-byte names: the
/// unpacker's tree of paths and the kernel's directory entries grow as it
/// writes them. A debug build's unpacker gets through about 3 % of them
/// under 7 MiB, half under 10 MiB, all of them under 12 MiB (measured):
/// the memory limit kills it midway (a file's data, by contrast, goes to
/// the page cache and is written back; it never gets it killed).
fn deep_names() -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let dirs: Vec<String> = ('a'..='k').map(|c| c.to_string().repeat(250)).collect();
    for i in 0..990 {
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        let name = format!("f{i:03}{}/x", dirs.join("/"));
        tar.append_data(&mut h, name, &b"x\n"[..]).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// The unpacker is OOM-killed by the user's memory limit midway: 413,
/// nothing of it in the home. Where no memory limit can be applied (the
/// unprivileged modes report it missing), the same archive just unpacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_killed_by_the_memory_limit_changes_nothing() {
    let d = dirs();
    let server = api_server(&d).await;
    new_user(&server, "mem").await;
    // Filled and listed first: 1 MiB is too little for a shell.
    fill(&server, "mem").await;
    let before = home(&server, "mem").await;
    restart_with_memory(&server, "mem", 8 << 20).await;
    let r = import(&server, "mem", deep_names()).await;
    let stats = admin(server.addr, "GET", "/api/users/mem/stats", None)
        .await
        .json();
    let enforced = stats["limits"]["memory_bytes"] == 8 << 20
        && !stats["limits_missing"]
            .as_array()
            .is_some_and(|m| m.iter().any(|c| c == "memory"));
    if !enforced {
        eprintln!("no memory limit in this mode ({stats}): the archive unpacks");
        assert_eq!(r.status, 200, "{stats}: {}", r.text());
        return;
    }
    restart_with_memory(&server, "mem", 256 << 20).await;
    unchanged(&server, "mem", &before, &r).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("memory limit"), "{}", r.text());
    assert!(r.text().contains("nothing was imported"), "{}", r.text());
    importable(&server, "mem").await;
}

/// An archive that does not fit the home (a file where the home has a
/// directory) is the client's error, 409, not the server's 500, and
/// changes nothing. Every mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_that_does_not_fit_the_home_is_a_conflict() {
    let d = dirs();
    let server = api_server(&d).await;
    new_user(&server, "fit").await;
    fill(&server, "fit").await;
    let r = exec(&server, "fit", &["mkdir", "big"]).await;
    assert_eq!(r["exit_code"], 0, "{r}");
    let before = home(&server, "fit").await;
    // `archive` holds a file `big`; the home now has a directory there.
    let r = import(&server, "fit", archive(b"a file\n")).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("does not fit"), "{}", r.text());
    assert!(r.text().contains("nothing was imported"), "{}", r.text());
    unchanged(&server, "fit", &before, &r).await;
}
