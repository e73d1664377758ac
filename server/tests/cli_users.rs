//! `warren users ...` and `warren exec`: the command line over the same
//! code as the API, with one-shot sandboxes. Needs what sandboxes need;
//! tests/matrix.sh runs it.

mod common;

use std::process::{Command, Output, Stdio};

use common::*;
use serde_json::Value;

fn warren() -> std::path::PathBuf {
    shim().with_file_name("warren")
}

fn run(d: &Dirs, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut c = Command::new(warren());
    // The store flags go right after the subcommand (before any `--`).
    c.arg(args[0])
        .arg("--state-dir")
        .arg(&d.settings.state_dir)
        .arg("--workspace-root")
        .arg(&d.settings.workspace_root)
        .args(&args[1..])
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    if let Some(data) = stdin {
        use std::io::Write;
        let mut w = child.stdin.take().unwrap();
        w.write_all(data).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn json(o: &Output) -> Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn users_commands_and_exec() {
    let d = dirs();
    let created = json(&run(&d, &["users", "create", "alice"], None));
    assert_eq!(created["slug"], "alice");
    json(&run(&d, &["users", "create", "bob"], None));
    let bad = run(&d, &["users", "create", "../x"], None);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    let list = json(&run(&d, &["users", "list", "--json"], None));
    assert_eq!(list.as_array().unwrap().len(), 2);
    let table = run(&d, &["users", "list"], None);
    assert!(String::from_utf8_lossy(&table.stdout).contains("alice"));
    assert_eq!(
        json(&run(&d, &["users", "show", "alice"], None))["host_uid"],
        created["host_uid"]
    );
    assert_eq!(
        run(&d, &["users", "show", "ghost"], None).status.code(),
        Some(3)
    );

    // exec: exit codes, cwd, env, stdin passed through, the timeout.
    let o = run(
        &d,
        &[
            "exec",
            "--user",
            "alice",
            "--env",
            "FOO=bar",
            "--",
            "sh",
            "-c",
            "mkdir -p w; echo $FOO > w/f; cat; exit 7",
        ],
        Some(b"piped\n"),
    );
    assert_eq!(o.status.code(), Some(7), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "piped\n");
    let o = run(
        &d,
        &["exec", "--user", "alice", "--cwd", "w", "--", "cat", "f"],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "bar\n");
    let o = run(
        &d,
        &[
            "exec",
            "--user",
            "alice",
            "--timeout",
            "1",
            "--",
            "sleep",
            "20",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(124), "{o:?}");
    let o = run(
        &d,
        &["exec", "--user", "alice", "--cwd", "../bob", "--", "true"],
        None,
    );
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let o = run(&d, &["exec", "--user", "ghost", "--", "true"], None);
    assert_eq!(o.status.code(), Some(3), "{o:?}");

    // stats and limits.
    let s = json(&run(&d, &["users", "stats", "alice"], None));
    assert_eq!(s["workspace"]["files"], 1, "{s}");
    let l = json(&run(
        &d,
        &["users", "limits", "alice", r#"{"pids": 64}"#],
        None,
    ));
    assert_eq!(l["limits"]["pids"], 64);
    assert_eq!(
        run(&d, &["users", "limits", "alice", r#"{"pids": 0}"#], None)
            .status
            .code(),
        Some(2)
    );

    // export alice | import bob; a hostile archive is refused.
    let tgz = d.settings.state_dir.join("alice.tgz");
    let o = run(
        &d,
        &["users", "export", "alice", "-o", tgz.to_str().unwrap()],
        None,
    );
    assert!(o.status.success(), "{o:?}");
    let imported = json(&run(
        &d,
        &["users", "import", "bob", tgz.to_str().unwrap()],
        None,
    ));
    assert_eq!(imported["files"], 1);
    let o = run(&d, &["exec", "--user", "bob", "--", "cat", "w/f"], None);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "bar\n");
    let limits = warren_runtime::archive::ArchiveLimits::default();
    let hostile = warren_runtime::archive::testing::hostile_set(&limits);
    let dotdot = hostile.iter().find(|h| h.archive.len() < 1 << 20).unwrap();
    let o = run(&d, &["users", "import", "bob"], Some(&dotdot.archive));
    assert_eq!(o.status.code(), Some(2), "{}: {o:?}", dotdot.name);
    assert!(String::from_utf8_lossy(&o.stderr).contains("refused"));

    // delete, with the home.
    let del = json(&run(&d, &["users", "delete", "bob", "--remove-home"], None));
    assert_eq!(del["home_removed"], true);
    assert!(!d.settings.workspace_root.join("bob").exists());
    assert_eq!(
        run(&d, &["users", "show", "bob"], None).status.code(),
        Some(3)
    );
}
