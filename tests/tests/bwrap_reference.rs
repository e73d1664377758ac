//! Checks the probe itself: a handful of isolation rows run both under
//! `warren run` and under bwrap with equivalent flags must give the same
//! answers (the way youki checks its suite against runc).

use warren_tests::{bwrap_base, probe_bin, skip, Answers, Env, PROBE_IN_SANDBOX};

const ROWS: &[&str] = &[
    "uid",
    "gid",
    "user",
    "group",
    "env:HOME",
    "cwd",
    "hostname",
    "pids",
    "pid",
    "netifs",
    "lo_up",
    "exists:/home",
    "exists:/root",
    "exists:/etc/shadow",
    "write:/usr/x",
    "write:/tmp/x",
    "ls:/workspace",
    "ls:/dev/pts",
    "status:CapEff",
    "status:NoNewPrivs",
];

fn bwrap_probe(env: &Env) -> Option<Answers> {
    let etc = env.dir.path().join("bwrap-etc");
    let home = env.dir.path().join("bwrap-home");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    // The reference gets a home anyone may enter: as root, bwrap maps uid
    // 1000 to host root without capabilities over other owners' files.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(
        etc.join("passwd"),
        "alice:x:1000:1000:alice:/workspace/alice:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(etc.join("group"), "alice:x:1000:\n").unwrap();
    let mut c = bwrap_base("alice-sandbox")?;
    c.arg("--ro-bind")
        .arg(etc.join("passwd"))
        .arg("/etc/passwd")
        .arg("--ro-bind")
        .arg(etc.join("group"))
        .arg("/etc/group")
        .arg("--bind")
        .arg(&home)
        .args(["/workspace/alice", "--chdir", "/workspace/alice"])
        .args(["--clearenv", "--setenv", "HOME", "/workspace/alice"])
        .arg("--ro-bind")
        .arg(probe_bin())
        .arg(PROBE_IN_SANDBOX)
        .args(["--remount-ro", "/"])
        .arg(PROBE_IN_SANDBOX)
        .args(ROWS);
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "bwrap failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Some(Answers::parse(&String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn probe_agrees_with_bwrap() {
    let env = Env::new();
    let Some(reference) = bwrap_probe(&env) else {
        skip("bwrap is not installed (apt-get install bubblewrap)");
        return;
    };
    let ours = env.probe("alice", ROWS);
    let mut differ = Vec::new();
    for q in ROWS {
        if ours.get(q) != reference.get(q) {
            differ.push(format!(
                "{q}: warren={:?} bwrap={:?}",
                ours.get(q),
                reference.get(q)
            ));
        }
    }
    assert!(differ.is_empty(), "rows differ:\n{}", differ.join("\n"));
}
