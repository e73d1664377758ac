//! cgroup limits from the inside: memory, pids and CPU hold, the caller
//! learns why a sandbox ended, and no cgroup is left behind. As root the
//! limits are enforced; without cgroup access the missing limits are
//! reported and `--require-limits` refuses to run. tests/vm runs this file
//! again on cgroup v2.

use std::path::PathBuf;
use std::process::Output;

use warren_tests::{Answers, Env, PROBE_IN_SANDBOX};

/// Whether this process may create cgroups for its sandboxes, the way the
/// runtime decides it.
fn limits_available() -> bool {
    use warren_runtime::cgroups::{Cgroups, Roots};
    Cgroups::probe(&Roots::default()).is_ok_and(|c| c.availability().complete())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// Directories of our sandboxes' cgroups for tenant `slug` that still exist.
fn leftover_cgroups(slug: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![PathBuf::from("/sys/fs/cgroup")];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("sbx-{slug}-"))
            {
                found.push(p);
            } else if p.components().count() < 12 {
                stack.push(p);
            }
        }
    }
    found
}

fn assert_no_leftovers(slug: &str) {
    let left = leftover_cgroups(slug);
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
}

fn run_probe(env: &Env, user: &str, extra: &[&str], cmd: &[&str]) -> Output {
    env.warren_run(user)
        .args(extra)
        .arg("--")
        .args(cmd)
        .output()
        .unwrap()
}

#[test]
fn memory_hog_is_killed_near_the_limit() {
    let env = Env::new();
    let user = "memhog";
    if !limits_available() {
        let out = run_probe(&env, user, &[], &[PROBE_IN_SANDBOX, "uid"]);
        assert!(out.status.success());
        assert!(
            text(&out.stderr).contains("running without the memory, cpu, pids limit(s)"),
            "{}",
            text(&out.stderr)
        );
        let out = run_probe(&env, user, &["--require-limits"], &["true"]);
        assert_eq!(out.status.code(), Some(125));
        assert!(
            text(&out.stderr).contains("apply limits"),
            "{}",
            text(&out.stderr)
        );
        return;
    }
    // The hog is the command: the caller is told, with its own exit code.
    let out = run_probe(&env, user, &[], &[PROBE_IN_SANDBOX, "hog:2048"]);
    assert_eq!(out.status.code(), Some(121), "{out:?}");
    assert!(
        text(&out.stderr).contains("killed: memory limit 512 MiB reached"),
        "{}",
        text(&out.stderr)
    );
    let last: u64 = text(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("hog-mib\t")?.parse().ok())
        .next_back()
        .unwrap_or(0);
    assert!((384..=512).contains(&last), "killed after {last} MiB");
    assert_no_leftovers(user);

    // A hog next to a shell: on cgroup v1 the OOM killer takes the hog and
    // the shell lives on; on v2 memory.oom.group=1 ends the sandbox as one.
    let out = run_probe(
        &env,
        user,
        &[],
        &[
            "sh",
            "-c",
            &format!("{PROBE_IN_SANDBOX} hog:2048 >/dev/null; echo after-hog-$?"),
        ],
    );
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if v2 {
        assert_eq!(out.status.code(), Some(121), "{out:?}");
    } else {
        assert_eq!(text(&out.stdout), "after-hog-137\n", "{out:?}");
        assert_eq!(out.status.code(), Some(0));
    }
    assert_no_leftovers(user);
}

#[test]
fn fork_bomb_stops_at_the_pids_limit_and_the_sandbox_stays_usable() {
    let env = Env::new();
    let user = "forker";
    if !limits_available() {
        // No bomb without a limit to stop it: only the warning is checked.
        let out = run_probe(&env, user, &["--pids", "64"], &["true"]);
        let err = text(&out.stderr);
        assert!(
            err.contains("running without the") && err.contains("pids limit"),
            "{err}"
        );
        return;
    }
    let out = run_probe(
        &env,
        user,
        &["--pids", "64"],
        &[
            "sh",
            "-c",
            &format!("{PROBE_IN_SANDBOX} forkbomb; {PROBE_IN_SANDBOX} uid"),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let a = Answers::parse(&text(&out.stdout));
    let (n, errno) = a.get("forkbomb").split_once(' ').unwrap();
    let n: u64 = n.parse().unwrap();
    // 64 tasks: init, sh and the probe take three.
    assert!((55..=61).contains(&n), "forked {n} children");
    assert_eq!(errno, "EAGAIN");
    assert_eq!(
        a.get("uid"),
        "1000",
        "the sandbox is still usable after the bomb"
    );
    assert!(
        text(&out.stderr).contains("pids limit 64 reached"),
        "{}",
        text(&out.stderr)
    );
    assert_no_leftovers(user);
}

#[test]
fn two_busy_threads_get_half_a_cpu() {
    let env = Env::new();
    let user = "spinner";
    let spin = if limits_available() {
        "spin:2x3000"
    } else {
        "spin:2x300"
    };
    let out = run_probe(&env, user, &[], &[PROBE_IN_SANDBOX, spin]);
    assert!(out.status.success(), "{out:?}");
    let pct: u64 = Answers::parse(&text(&out.stdout))
        .get(spin)
        .parse()
        .unwrap();
    if limits_available() {
        assert!(
            (20..=55).contains(&pct),
            "{pct}% of one CPU under a 50% limit"
        );
    } else {
        assert!(
            text(&out.stderr).contains("running without"),
            "{}",
            text(&out.stderr)
        );
    }
    assert_no_leftovers(user);
}

#[test]
fn limits_in_force_are_reported() {
    let env = Env::new();
    let out = run_probe(
        &env,
        "verbose",
        &["--verbose", "--memory", "256M", "--cpus", "1.5"],
        &["true"],
    );
    assert!(out.status.success(), "{out:?}");
    let err = text(&out.stderr);
    if limits_available() {
        assert!(
            err.contains("limits: memory 256 MiB (no swap), cpu 1.5 core(s), pids 512"),
            "{err}"
        );
    } else {
        assert!(err.contains("warning: running without"), "{err}");
    }
    assert!(err.contains("confined: seccomp default-v2"), "{err}");
    let bad = run_probe(&env, "verbose", &["--memory", "12Q"], &["true"]);
    assert_eq!(bad.status.code(), Some(2), "a bad size is a usage error");
}
