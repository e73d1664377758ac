//! What a tenant must not reach from inside, in every privilege mode (the
//! matrix runs this binary in each): the metadata of the host's device
//! nodes, the kernel's knobs under /proc, the sandbox's PID 1, and any
//! supplementary group (issue 10, items 2, 6 and 6b).

use std::process::Command;

use warren_tests::{skip, warren_bin, Env, Mode, PROBE_IN_SANDBOX};

#[test]
fn device_nodes_keep_their_metadata_and_still_work() {
    let env = Env::new();
    let a = env.probe(
        "alice",
        &[
            "chmod:/dev/null=0777",
            "chown:/dev/null",
            "touch:/dev/null",
            "touch:/dev/urandom",
            "touch:/dev/tty",
            "mountopts:/dev/null",
            "write:/dev/null=x",
            "open_ro:/dev/urandom",
            "open_rw:/dev/zero",
        ],
    );
    // The read-only bind answers before any ownership check: EROFS.
    for q in [
        "chmod:/dev/null=0777",
        "chown:/dev/null",
        "touch:/dev/null",
        "touch:/dev/urandom",
        "touch:/dev/tty",
    ] {
        assert_eq!(a.get(q), "EROFS", "{q}: {:?}", a.0);
    }
    assert!(a.get("mountopts:/dev/null").contains("ro"), "{:?}", a.0);
    assert!(!a.get("mountopts:/dev/null").contains("nodev"), "{:?}", a.0);
    assert_eq!(a.get("write:/dev/null=x"), "ok");
    assert_eq!(a.get("open_ro:/dev/urandom"), "ok");
    assert_eq!(a.get("open_rw:/dev/zero"), "ok");
}

#[test]
fn dev_tty_still_works_in_a_terminal() {
    let env = Env::new();
    let out = env
        .warren_run("alice")
        .args(["--tty", "always", "--", PROBE_IN_SANDBOX])
        .args(["open_rw:/dev/tty", "touch:/dev/tty"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert!(out.status.success(), "{text}");
    assert!(text.contains("open_rw:/dev/tty\tok"), "{text}");
    assert!(text.contains("touch:/dev/tty\tEROFS"), "{text}");
}

#[test]
fn kernel_knobs_under_proc_are_readonly_or_masked() {
    let env = Env::new();
    let mut q = vec![
        "write:/proc/sys/kernel/core_pattern=|/tmp/x",
        "mountopts:/proc/sys",
        "read:/proc/timer_list",
        "open_ro:/proc/self/status",
    ];
    let has = |p: &str| std::path::Path::new(p).exists();
    if has("/proc/acpi") {
        q.push("ls:/proc/acpi");
    }
    if has("/proc/sysrq-trigger") {
        q.push("write:/proc/sysrq-trigger=h");
    }
    let a = env.probe("alice", &q);
    // EROFS comes from the read-only bind, before the owner check (EACCES)
    // and before Landlock: it holds on a kernel without Landlock too.
    assert_eq!(
        a.get("write:/proc/sys/kernel/core_pattern=|/tmp/x"),
        "EROFS"
    );
    if has("/proc/sysrq-trigger") {
        assert_eq!(a.get("write:/proc/sysrq-trigger=h"), "EROFS");
    }
    assert!(
        a.get("mountopts:/proc/sys").split(',').any(|o| o == "ro"),
        "{:?}",
        a.0
    );
    assert_eq!(a.get("read:/proc/timer_list"), "", "masked: empty");
    assert_eq!(a.get("open_ro:/proc/self/status"), "ok");
    if has("/proc/acpi") {
        assert_eq!(a.get("ls:/proc/acpi"), "", "masked: an empty directory");
    }
}

/// Root inside plain `unshare --user --map-root-user` has one id, the
/// host's root: warren refuses, says how to get ids, and doctor fails.
#[test]
fn root_under_plain_unshare_is_refused_with_the_fix() {
    if !matches!(Mode::current(), Mode::Root | Mode::UserNs) {
        return; // there the namespace's root is a non-root id of the host
    }
    let env = Env::new();
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user"])
        .arg(warren_bin())
        .args(env.run_args("alice", "auto"))
        .args(["--", "/bin/true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("refusing to run a tenant as host root"),
        "{err}"
    );
    assert!(
        err.contains("unshare --user --map-auto --map-root-user"),
        "{err}"
    );
    assert!(
        !env.workspace_root().exists() && !env.state_dir().exists(),
        "refused before anything was made"
    );
    // The server refuses at start, not at each login.
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user"])
        .arg(warren_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(env.state_dir())
        .arg("--workspace-root")
        .arg(env.workspace_root())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--map-auto"), "{err}");
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user"])
        .arg(warren_bin())
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids = &v["host"]["id_mapping"];
    assert_eq!(ids["ok"], false, "{v:#}");
    assert!(ids["fix"].as_str().unwrap().contains("--map-auto"), "{v:#}");
}

/// The host's root under another name: root runs warren under `unshare
/// --user --map-user=1000`, so warren's one id, 1000, is host uid 0. Found
/// in review of the fix above, which looked only at uid 0.
#[test]
fn host_root_mapped_to_a_non_root_id_is_refused() {
    if !matches!(Mode::current(), Mode::Root | Mode::UserNs) {
        return; // there our ids are not the host's root
    }
    let env = Env::new();
    let out = Command::new("unshare")
        .args(["--user", "--map-user=1000", "--map-group=1000"])
        .arg(warren_bin())
        .args(env.run_args("alice", "auto"))
        .args(["--", "/bin/true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("refusing to run a tenant as host root"),
        "{err}"
    );
    assert!(
        !env.workspace_root().exists() && !env.state_dir().exists(),
        "refused before anything was made"
    );
}

/// The groups this test process holds, as getgroups(2) lists them.
fn own_groups() -> Vec<String> {
    let mut g: Vec<String> = nix::unistd::getgroups()
        .unwrap()
        .iter()
        .map(|g| g.as_raw().to_string())
        .collect();
    g.sort();
    g
}

/// Whether this mode lets warren drop supplementary groups: CAP_SETGID
/// where setgroups is allowed. An unprivileged operator's single-id
/// namespace must deny it (CVE-2018-7169), so its own groups stay.
fn groups_droppable(mode: Mode) -> bool {
    matches!(mode, Mode::Root | Mode::UserNs | Mode::SubUid)
}

/// Kept groups can only be the operator's own: its gid (the sandbox's 1000
/// inside) or unmapped ones (the overflow gid).
fn only_operators_own(groups: &str) -> bool {
    groups
        .split(',')
        .all(|g| g.is_empty() || g == "1000" || g == "65534")
}

#[test]
fn tenant_has_no_supplementary_group() {
    let env = Env::new();
    let mode = Mode::current();
    let a = env.probe("alice", &["status:Groups", "groups"]);
    let out = env
        .warren_run("alice")
        .args(["--tty", "always", "--", PROBE_IN_SANDBOX, "groups"])
        .output()
        .unwrap();
    let tty = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    let in_tty = tty
        .lines()
        .find_map(|l| l.strip_prefix("groups\t"))
        .unwrap_or_else(|| panic!("no answer in a terminal: {tty}"));
    for (what, groups) in [
        ("Groups:", a.get("status:Groups").replace(' ', ",")),
        ("getgroups", a.get("groups").to_string()),
        ("in a terminal", in_tty.to_string()),
    ] {
        if groups_droppable(mode) {
            assert_eq!(groups, "", "{what} in {mode:?}");
        } else {
            assert!(only_operators_own(&groups), "{what} in {mode:?}: {groups}");
        }
    }
}

#[test]
fn tiers_without_namespaces_drop_groups_where_permitted() {
    if warren_runtime::sys::landlock_abi() == 0 {
        skip("this kernel has no Landlock: the landlock tier cannot run");
        return;
    }
    let env = Env::new();
    let mode = Mode::current();
    // Without CAP_SETGID the operator cannot drop its own groups: the
    // tenant, which runs as the operator's uid there, keeps exactly those.
    let want = if matches!(mode, Mode::Root | Mode::UserNs) {
        String::new()
    } else {
        own_groups().join(",")
    };
    for tier in ["landlock", "none"] {
        let a = env.probe_tier("alice", tier, &["groups"]);
        assert_eq!(a.get("groups"), want, "{tier} in {mode:?}");
    }
}
#[test]
fn pid1_is_unreadable_by_its_tenant() {
    let env = Env::new();
    let q = [
        "open_ro:/proc/1/mem",
        "open_ro:/proc/1/environ",
        "open_ro:/proc/1/maps",
        "open_rw:/proc/1/exe",
        "open_ro:/proc/self/maps",
    ];
    let a = env.probe("alice", &q);
    // /proc/1/exe: the shim's binary (CVE-2019-5736 wrote through it).
    for q in &q[..4] {
        assert!(
            matches!(a.get(q), "EACCES" | "EPERM"),
            "{q}: {} in {:?}",
            a.get(q),
            Mode::current()
        );
    }
    assert_eq!(a.get("open_ro:/proc/self/maps"), "ok");
}

/// The command holds only its stdio: PID 1 re-executes itself keeping its
/// report pipe open across that exec, and a command that inherited it could
/// write PID 1's reports (forge its own exit or limits). Leaked fds:
/// CVE-2024-21626.
#[test]
fn the_command_inherits_no_fd_but_its_stdio() {
    let env = Env::new();
    let a = env.probe("alice", &["fds"]);
    assert_eq!(a.get("fds"), "0,1,2", "{:?}", a.0);
}
