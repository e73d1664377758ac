//! `warren serve` with the real backend: every terminal a shell in its
//! user's sandbox. Needs what sandboxes need (root, or an unprivileged user
//! with user namespaces); tests/matrix.sh runs it in every mode, and the
//! workspace must be built first (`cargo build --workspace`) so that
//! target/<profile>/warren-shim exists.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_apart_and_their_terminals_share_one_sandbox() {
    let d = dirs();
    let server = sandbox_server(&d).await;
    let mut a1 = server.open("alice").await;
    assert_eq!(a1.hello.as_ref().unwrap()["tier"], "namespaces");
    a1.run(
        "whoami; hostname; echo note > ~/mine; (exec -a alice-marker sleep 300 &) ; echo O''K",
        "OK",
    )
    .await;
    let mut a2 = server.open("alice").await;
    let seen = a2
        .run(
            "cat ~/mine; ps -eo args | grep -c '^alice-marke[r]'; echo E''ND",
            "END",
        )
        .await;
    assert!(
        seen.contains("note") && seen.contains("\r\n1\r\n"),
        "second terminal, same sandbox: {seen:?}"
    );

    let mut b = server.open("bob").await;
    let bob = b
        .run("whoami; ls /workspace; ls /workspace/alice 2>&1; ps -eo args | grep -c '^alice-marke[r]'; echo E''ND", "END")
        .await;
    assert!(bob.contains("bob\r\n"), "{bob:?}");
    assert!(
        bob.contains("'/workspace/alice': No such file or directory"),
        "{bob:?}"
    );
    assert!(
        bob.contains("\r\n0\r\n"),
        "bob must not see alice's processes: {bob:?}"
    );
    // On the host, the two homes have different owners as root.
    use std::os::unix::fs::MetadataExt;
    let owner = |u: &str| {
        std::fs::metadata(d.settings.workspace_root.join(u))
            .unwrap()
            .uid()
    };
    if nix::unistd::geteuid().is_root()
        && std::fs::read_to_string("/proc/self/uid_map")
            .unwrap()
            .contains("4294967295")
    {
        assert_ne!(owner("alice"), owner("bob"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_learns_how_a_shell_ended() {
    let d = dirs();
    let server = sandbox_server(&d).await;
    let mut c = server.open("carol").await;
    c.send_input("exit 7\r").await;
    let exit = c.read_control("exit").await;
    assert_eq!(exit["code"], 7, "{exit}");
    assert_eq!(exit["reason"], "exit", "{exit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_limit_kill_is_reported_as_such() {
    let limited = std::fs::read_to_string("/proc/self/uid_map")
        .unwrap()
        .contains("4294967295")
        && nix::unistd::geteuid().is_root();
    if !limited {
        eprintln!("not root in the initial user namespace: no cgroup limits to hit here");
        return;
    }
    let d = dirs();
    let server = sandbox_server(&d).await;
    let mut c = server.open("dave").await;
    // tail keeps the last 900 MiB of an endless pipe: a pure memory hog,
    // and it is the terminal's process (exec), so the OOM kill ends it.
    c.send_input("exec tail -c 900M < <(exec cat /dev/zero)\r")
        .await;
    let exit = tokio::time::timeout(Duration::from_secs(60), c.read_control("exit"))
        .await
        .expect("no exit frame");
    assert_eq!(exit["reason"], "memory_limit", "{exit}");
}

/// Directories of sandbox cgroups for `slug` still present on the host.
fn cgroups_of(slug: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![std::path::PathBuf::from("/sys/fs/cgroup")];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("sbx-{slug}-"))
            {
                found.push(e.path());
            } else if e.path().components().count() < 12 {
                stack.push(e.path());
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_the_page_and_removes_the_sandboxes() {
    let d = dirs();
    let server = sandbox_server(&d).await;
    let mut c = server.open("erin").await;
    c.run("echo up''-2", "up-2").await;
    let root = std::fs::read_to_string("/proc/self/uid_map")
        .unwrap()
        .contains("4294967295")
        && nix::unistd::geteuid().is_root();
    if root {
        assert!(
            !cgroups_of("erin").is_empty(),
            "a running sandbox has its cgroup"
        );
    }
    server.shutdown(Duration::from_secs(15)).await;
    let exit = c.read_control("exit").await;
    assert_eq!(exit["reason"], "server_shutdown", "{exit}");
    assert!(
        cgroups_of("erin").is_empty(),
        "cgroups left: {:?}",
        cgroups_of("erin")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reattach_restores_top_in_a_sandbox() {
    let d = dirs();
    let server = sandbox_server(&d).await;
    let mut c = server.open("frank").await;
    let id = c.terminal_id();
    c.send_input("top -d 1\r").await;
    c.read_until("Tasks:").await;
    c.close().await;

    let mut c = server.attach("frank", &id).await;
    c.expect_hello().await;
    let snapshot = match c.next_event().await {
        Event::Binary(b) => b,
        other => panic!("expected the screen snapshot, got {other:?}"),
    };
    let mut screen = vt100::Parser::new(
        std::num::NonZeroU16::new(24).unwrap(),
        std::num::NonZeroU16::new(80).unwrap(),
        0,
    );
    screen.process(&snapshot);
    let s = screen.screen();
    // top redraws the whole screen in place: the snapshot is that screen,
    // header first, not a scroll of old frames.
    let text = s.contents();
    assert!(text.starts_with("top - "), "{text}");
    assert!(text.contains("Tasks:") && text.contains("PID"), "{text}");
    // Only the sandbox's processes: a handful, not the host's hundreds.
    assert!(!text.contains("kworker"), "{text}");
    c.send_input("q").await;
    c.run("echo back''-2", "back-2").await;
}

/// The landlock tier (hosts without user namespaces): every terminal is a
/// `warren-shim join` without setns, the homes are host paths, and Landlock
/// (not a mount namespace) keeps the users apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn landlock_tier_serves_users_apart() {
    if warren_runtime::sys::landlock_abi() == 0 {
        let must_run = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
            || std::env::var("WARREN_MUST_RUN").is_ok_and(|v| v == "1");
        assert!(!must_run, "CI requires Landlock for the landlock tier");
        eprintln!("SKIP: this kernel has no Landlock: the landlock tier cannot run");
        return;
    }
    let d = dirs();
    let server = sandbox_server_in(&d, warren_runtime::spec::Isolation::Landlock).await;
    let ws = d.settings.workspace_root.clone();
    let alice_home = ws.join("alice").display().to_string();
    // Unique on this host: /proc is shared in this tier.
    let marker = format!("alice-marker-{}", std::process::id());
    let pattern = format!(
        "{}[{}]",
        &marker[..marker.len() - 1],
        &marker[marker.len() - 1..]
    );

    let mut a1 = server.open("alice").await;
    let hello = a1.hello.clone().unwrap();
    assert_eq!(hello["tier"], "landlock", "{hello}");
    // The limits in force, or which are not: every limit is one or the other.
    let limits = &hello["limits"];
    let missing: Vec<&str> = limits["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    for (name, key) in [("memory", "memory_bytes"), ("cpu", "cpu"), ("pids", "pids")] {
        assert_ne!(
            missing.contains(&name),
            !limits[key].is_null(),
            "{name}: {limits}"
        );
    }
    assert!(
        limits["per_process"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "core dumps off"),
        "{limits}"
    );
    let seen = a1
        .run(
            &format!("cd; pwd; echo note > mine; (exec -a {marker} sleep 300 &); echo O''K"),
            "OK",
        )
        .await;
    assert!(
        seen.contains(&alice_home),
        "home is the host path: {seen:?}"
    );

    // A second terminal joins the same sandbox: same home, same cgroup.
    let mut a2 = server.open("alice").await;
    let again = a2.run("cat ~/mine; echo E''ND", "END").await;
    assert!(again.contains("note"), "{again:?}");

    let mut b = server.open("bob").await;
    let bob = b
        .run(
            &format!(
                "cat {alice_home}/mine; ls {alice_home}; ls {}; touch {alice_home}/x; echo E''ND",
                ws.display()
            ),
            "END",
        )
        .await;
    assert_eq!(
        bob.matches("Permission denied").count(),
        4,
        "bob can neither read, list nor write alice's files: {bob:?}"
    );
    assert!(!ws.join("alice/x").exists());
    // Bob can see that alice's marker runs (one /proc for all), but cannot
    // signal it.
    let kill = b
        .run(
            &format!("pkill -f {pattern}; echo rc=$?; echo E''ND"),
            "END",
        )
        .await;
    assert!(kill.contains("Operation not permitted"), "{kill:?}");
    let still = a2
        .run(&format!("pgrep -fc {pattern}; echo E''ND"), "END")
        .await;
    assert!(
        still.split(['\r', '\n']).any(|l| l == "1"),
        "alice's process survived: {still:?}"
    );
    server.shutdown(Duration::from_secs(15)).await;
}

/// PID 1 starts each terminal itself: the shell's parent is inside the
/// sandbox (not 0, the mark of a parent outside the pid namespace), and
/// every process inside descends from PID 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminals_shell_has_its_parent_inside_and_ps_shows_one_tree() {
    let d = dirs();
    let server = sandbox_server(&d).await;
    let mut t = server.open("pam").await;
    // Parents of every process inside, and the shell's own parent.
    let seen = t
        .run(
            "(sleep 60 &); sh -c 'sleep 61' & echo P''PID=$PPID; for s in /proc/[0-9]*/stat; do read -r p c st pp rest < $s; \
             echo \"P $p $pp\"; done; echo E''ND",
            "END",
        )
        .await;
    let ppid: i32 = seen
        .split("PPID=")
        .nth(1)
        .and_then(|r| r.split('\r').next())
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no PPID in {seen:?}"));
    assert_ne!(
        ppid, 0,
        "the shell's parent is outside the sandbox: {seen:?}"
    );
    let parents: std::collections::HashMap<i32, i32> = seen
        .lines()
        .filter_map(|l| {
            let mut w = l.trim().strip_prefix("P ")?.split(' ');
            Some((w.next()?.parse().ok()?, w.next()?.trim().parse().ok()?))
        })
        .collect();
    assert!(parents.contains_key(&1), "no PID 1 inside: {seen:?}");
    assert!(parents.len() >= 3, "{seen:?}");
    for (&pid, &parent) in &parents {
        // Walk up: every process reaches PID 1, whose parent is outside.
        let (mut at, mut hops) = (pid, 0);
        while at != 1 {
            at = *parents.get(&at).unwrap_or_else(|| {
                panic!("pid {pid} (parent {parent}) is not under PID 1: {seen:?}")
            });
            assert_ne!(at, 0, "pid {pid} has a parent outside: {seen:?}");
            hops += 1;
            assert!(hops < 100, "{seen:?}");
        }
    }
    assert_eq!(parents[&1], 0, "{seen:?}");
    assert!(
        parents.contains_key(&ppid),
        "the shell's parent {ppid} is not inside: {seen:?}"
    );
}

/// The tenant cannot end, signal or look into PID 1, which holds the
/// server's control channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_cannot_reach_pid1_or_its_channel() {
    let d = dirs();
    let server = sandbox_server(&d).await;
    let mut t = server.open("quinn").await;
    let seen = t
        .run(
            "kill -9 1; echo kill=$?; ls /proc/1/fd >/dev/null 2>&1; echo fd=$?; \
             cat /proc/1/environ >/dev/null 2>&1; echo env=$?; \
             ls -l /proc/$$/fd | grep -c socket; echo E''ND",
            "END",
        )
        .await;
    assert!(seen.contains("fd=2"), "PID 1's fds are readable: {seen:?}");
    assert!(
        seen.contains("env=1"),
        "PID 1's environ is readable: {seen:?}"
    );
    assert!(
        seen.contains("\r\n0\r\n"),
        "the shell holds a socket (the control channel?): {seen:?}"
    );
    // PID 1 lived through it: the sandbox still opens terminals.
    let mut again = server.open("quinn").await;
    let still = again.run("echo al''ive", "alive").await;
    assert!(still.contains("alive"), "{still:?}");
    let _ = t;
}
