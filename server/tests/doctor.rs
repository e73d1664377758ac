//! `warren doctor` run as a program: its user-namespace probe (create one,
//! then use a capability in it) on this host, and on a host where the
//! namespace can be created but not used. The explanations for the other
//! host kinds are unit tests on fake trees (warren-runtime, host.rs).

use std::process::{Command, Stdio};

fn doctor_json(prefix: &[&str]) -> serde_json::Value {
    let mut argv: Vec<&str> = prefix.to_vec();
    argv.extend([env!("CARGO_BIN_EXE_warren"), "doctor", "--json"]);
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{argv:?}: not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// User namespaces work on every host the matrix runs on (as root, as a
/// user, inside `unshare --user`).
#[test]
fn user_namespaces_work_here() {
    let v = doctor_json(&[]);
    let userns = &v["host"]["user_namespaces"];
    assert_eq!(userns["ok"], true, "{v:#}");
    assert!(userns["fix"].is_null(), "{v:#}");
    for check in ["id_mapping", "cgroups", "seccomp", "landlock", "newuidmap"] {
        assert!(v["host"][check]["ok"].is_boolean(), "{check}: {v:#}");
    }
}

/// A namespace that can be created but not used is what Ubuntu's AppArmor
/// restriction gives an unprivileged process; testing creation alone would
/// call such a host fine. Made here with user.max_mnt_namespaces=0 inside a
/// user namespace of our own (the limit binds the namespaces below it).
#[test]
fn a_user_namespace_that_cannot_be_used_is_a_failure() {
    let unshare = Command::new("unshare")
        .args(["--user", "--map-root-user", "true"])
        .status();
    if !unshare.is_ok_and(|s| s.success()) {
        let reason = "`unshare --user --map-root-user` does not work here";
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
            "CI requires this test to run: {reason}"
        );
        return eprintln!("SKIP: {reason}");
    }
    let script = format!(
        "echo 0 > /proc/sys/user/max_mnt_namespaces && exec {} doctor --json",
        env!("CARGO_BIN_EXE_warren")
    );
    let v = doctor_json(&["unshare", "--user", "--map-root-user", "sh", "-c", &script]);
    let userns = &v["host"]["user_namespaces"];
    assert_eq!(userns["ok"], false, "{v:#}");
    assert!(
        userns["detail"]
            .as_str()
            .unwrap()
            .contains("user.max_mnt_namespaces=0"),
        "{v:#}"
    );
    assert!(
        userns["fix"]
            .as_str()
            .unwrap()
            .contains("sysctl -w user.max_mnt_namespaces="),
        "{v:#}"
    );
}

/// Doctor reports the open-file and PTY capacity (issue 10 §4), read from
/// this process's limits and /proc/sys/kernel/pty.
#[test]
fn doctor_reports_open_file_and_pty_capacity() {
    let v = doctor_json(&["sh", "-c", "ulimit -Sn 512 && exec \"$0\" \"$@\""]);
    let c = &v["capacity"];
    assert_eq!(c["open_files"]["soft"], 512, "{c:#}");
    let hard = c["open_files"]["hard"].as_u64().unwrap();
    assert_eq!(c["open_files"]["terminals"], hard / 6, "{c:#}");
    let max: u64 = std::fs::read_to_string("/proc/sys/kernel/pty/max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(c["ptys"]["max"], max, "{c:#}");
    assert!(c["ptys"]["nr"].as_u64().unwrap() <= max, "{c:#}");
}

/// Doctor says how many terminals and sandboxes the open-file limit and
/// the host's PTYs allow, and how to raise each (issue 15): a sandbox's
/// devpts stops at kernel.pty.max less kernel.pty.reserve, counted over
/// the host.
#[test]
fn doctor_reports_what_the_capacity_allows_and_how_to_raise_it() {
    let v = doctor_json(&["sh", "-c", "ulimit -Sn 512 && exec \"$0\" \"$@\""]);
    let c = &v["capacity"];
    let (per_terminal, per_sandbox) = (
        c["fds_per_terminal"].as_u64().unwrap(),
        c["fds_per_sandbox"].as_u64().unwrap(),
    );
    let hard = c["open_files"]["hard"].as_u64().unwrap();
    assert_eq!(
        c["open_files"]["sandboxes"],
        hard / (per_terminal + per_sandbox),
        "{c:#}"
    );
    assert!(
        c["open_files"]["raise"]
            .as_str()
            .unwrap()
            .contains("LimitNOFILE="),
        "{c:#}"
    );
    let read = |name: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/sys/kernel/pty/{name}"))
            .map_or(0, |s| s.trim().parse().unwrap())
    };
    let p = &c["ptys"];
    assert_eq!(p["reserve"], read("reserve"), "{c:#}");
    let (nr, max, reserve) = (
        p["nr"].as_u64().unwrap(),
        p["max"].as_u64().unwrap(),
        p["reserve"].as_u64().unwrap(),
    );
    // nr moves with whatever else runs here: the figures agree with each other.
    assert_eq!(
        p["terminals"],
        max.saturating_sub(reserve).saturating_sub(nr),
        "{c:#}"
    );
    assert!(
        p["raise"]
            .as_str()
            .unwrap()
            .contains("sysctl -w kernel.pty.max="),
        "{c:#}"
    );

    // The same in words.
    let out = Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("doctor")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |name: &str| {
        text.lines()
            .find(|l| l.contains(&format!("] {name}")))
            .unwrap_or_else(|| panic!("no {name} line in {text}"))
    };
    assert!(
        line("open files").contains("sandboxes of one terminal"),
        "{text}"
    );
    assert!(line("ptys").contains("kernel.pty.reserve"), "{text}");
    assert!(text.contains("sysctl -w kernel.pty.max=N"), "{text}");
    assert!(text.contains("LimitNOFILE="), "{text}");
}
