//! `warren run` from the inside: identity, processes, network, filesystem,
//! persistence, exit codes, signals and leftovers, in whichever privilege
//! mode this binary runs (tests/matrix.sh runs it in all three).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use warren_tests::{host_pids_matching, Env, Mode};

#[test]
fn identity_home_and_hostname() {
    let env = Env::new();
    let a = env.probe(
        "alice",
        &[
            "uid", "gid", "euid", "user", "group", "env:HOME", "env:USER", "cwd", "hostname",
            "groups",
        ],
    );
    assert_eq!(a.get("uid"), "1000");
    assert_eq!(a.get("euid"), "1000");
    assert_eq!(a.get("gid"), "1000");
    assert_eq!(a.get("user"), "alice");
    assert_eq!(a.get("group"), "alice");
    assert_eq!(a.get("env:HOME"), "/workspace/alice");
    assert_eq!(a.get("env:USER"), "alice");
    assert_eq!(a.get("cwd"), "/workspace/alice");
    assert_eq!(a.get("hostname"), "alice-sandbox");
    // Supplementary groups: none as root (dropped before entering); an
    // unprivileged caller's own groups can only show up as the overflow id.
    let groups = a.get("groups");
    match Mode::current() {
        Mode::Root => assert_eq!(groups, ""),
        _ => assert!(
            groups
                .split(',')
                .all(|g| g.is_empty() || g == "65534" || g == "1000"),
            "{groups}"
        ),
    }
}

#[test]
fn whoami_and_id_resolve_names() {
    let env = Env::new();
    let out = env.run("alice", &["sh", "-c", "whoami; id -un; id -gn"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "alice\nalice\nalice\n"
    );
}

#[test]
fn only_the_sandbox_processes_are_visible() {
    let env = Env::new();
    let a = env.probe(
        "alice",
        &["pids", "pid", "pid1", "status:NoNewPrivs", "status:CapEff"],
    );
    assert_eq!(
        a.get("pids"),
        "1,2",
        "PID 1 (init) and the probe, nothing else"
    );
    assert_eq!(a.get("pid"), "2");
    assert_eq!(a.get("pid1"), "warren-shim");
    assert_eq!(a.get("status:NoNewPrivs"), "1");
    assert_eq!(a.get("status:CapEff"), "0000000000000000");
}

#[test]
fn network_is_only_loopback_and_up() {
    let env = Env::new();
    let a = env.probe("alice", &["netifs", "lo_up", "ls:/sys/class/net"]);
    assert_eq!(a.get("netifs"), "lo");
    assert_eq!(a.get("ls:/sys/class/net"), "lo");
    assert_eq!(a.get("lo_up"), "yes");
}

#[test]
fn system_paths_are_readonly_nosuid_nodev() {
    let env = Env::new();
    let a = env.probe(
        "alice",
        &[
            "mountopts:/usr",
            "mountopts:/etc",
            "mountopts:/",
            "mountopts:/tmp",
            "mountopts:/proc",
            "mountopts:/workspace/alice",
            "write:/usr/x",
            "write:/etc/x",
            "write:/x",
            "write:/dev/x",
            "write:/tmp/x",
            "write:/workspace/x",
            "exists:/bin/sh",
            "read:/etc/hostname",
        ],
    );
    for m in ["/usr", "/"] {
        assert_eq!(a.get(&format!("mountopts:{m}")), "nodev,nosuid,ro", "{m}");
    }
    assert_eq!(a.get("mountopts:/etc"), "nodev,noexec,nosuid,ro");
    assert_eq!(a.get("mountopts:/tmp"), "nodev,nosuid,rw");
    assert!(a.get("mountopts:/proc").contains("nosuid"));
    assert!(a.get("mountopts:/workspace/alice").contains("rw"));
    for w in ["/usr/x", "/etc/x", "/x", "/dev/x", "/workspace/x"] {
        assert_eq!(a.get(&format!("write:{w}")), "EROFS", "{w}");
    }
    assert_eq!(a.get("write:/tmp/x"), "ok");
    assert_eq!(a.get("exists:/bin/sh"), "yes");
    assert_eq!(a.get("read:/etc/hostname"), "alice-sandbox");
}

#[test]
fn host_paths_and_other_tenants_are_invisible() {
    let env = Env::new();
    // bob exists on disk before alice looks.
    assert!(env.run("bob", &["true"]).status.success());
    let root = env.workspace_root();
    let questions: Vec<String> = [
        "ls:/workspace",
        "exists:/workspace/bob",
        "exists:/home",
        "exists:/root",
        "exists:/var",
        "exists:/etc/shadow",
        "exists:/etc/sudoers",
        "exists:/boot",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("exists:{}", root.display()),
        format!("exists:{}", env.dir.path().display()),
    ])
    .collect();
    let q: Vec<&str> = questions.iter().map(String::as_str).collect();
    let a = env.probe("alice", &q);
    assert_eq!(a.get("ls:/workspace"), "alice");
    for q in &q[1..] {
        assert_eq!(a.get(q), "no", "{q}");
    }
}

#[test]
fn dev_is_minimal() {
    let env = Env::new();
    let a = env.probe(
        "alice",
        &[
            "ls:/dev",
            "ls:/dev/pts",
            "open_rw:/dev/null",
            "read:/dev/null",
            "mountopts:/dev/pts",
            "mountopts:/dev/shm",
            "write:/dev/shm/x",
        ],
    );
    assert_eq!(
        a.get("ls:/dev"),
        "fd,full,null,ptmx,pts,random,shm,stderr,stdin,stdout,tty,urandom,zero"
    );
    assert_eq!(
        a.get("ls:/dev/pts"),
        "ptmx",
        "a fresh devpts instance shows no host terminals"
    );
    assert_eq!(a.get("open_rw:/dev/null"), "ok");
    assert_eq!(a.get("read:/dev/null"), "");
    assert!(a.get("mountopts:/dev/pts").contains("nosuid"));
    assert_eq!(a.get("write:/dev/shm/x"), "ok");
}

#[test]
fn workspace_persists_and_is_private_on_the_host() {
    let env = Env::new();
    let a = env.probe(
        "alice",
        &[
            "write:/workspace/alice/note=hello",
            "mkdir:/workspace/alice/d",
        ],
    );
    assert_eq!(a.get("write:/workspace/alice/note=hello"), "ok");
    let b = env.probe(
        "alice",
        &["read:/workspace/alice/note", "exists:/workspace/alice/d"],
    );
    assert_eq!(b.get("read:/workspace/alice/note"), "hello");
    assert_eq!(b.get("exists:/workspace/alice/d"), "yes");

    let home = env.workspace_root().join("alice");
    let meta = std::fs::metadata(&home).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o700);
    match std::fs::metadata(home.join("note")) {
        Ok(note) => assert_eq!(
            note.uid(),
            meta.uid(),
            "files are owned by the tenant's host uid"
        ),
        // With subordinate ids the home belongs to the tenant's own id:
        // even the user running warren cannot look inside.
        Err(e) => {
            assert_eq!(Mode::current(), Mode::SubUid, "{e}");
            assert_eq!(e.raw_os_error(), Some(libc_eacces()));
        }
    }
}

fn libc_eacces() -> i32 {
    nix::errno::Errno::EACCES as i32
}

#[test]
fn tenants_get_host_uids_by_mode() {
    let env = Env::new();
    assert!(env.run("alice", &["true"]).status.success());
    assert!(env.run("bob", &["true"]).status.success());
    let owner = |u: &str| {
        std::fs::metadata(env.workspace_root().join(u))
            .unwrap()
            .uid()
    };
    let me = nix::unistd::geteuid().as_raw();
    match Mode::current() {
        Mode::Root | Mode::SubUid | Mode::UserNs => {
            assert_ne!(owner("alice"), owner("bob"), "distinct host uid per tenant");
            assert_ne!(owner("alice"), 0);
            assert_ne!(owner("alice"), me, "not our own uid either");
            // Stable: a second run (a new process, state re-read) keeps it.
            let before = owner("alice");
            assert!(env.run("alice", &["true"]).status.success());
            assert_eq!(owner("alice"), before);
        }
        Mode::User | Mode::UserNsUser => {
            assert_eq!(
                owner("alice"),
                me,
                "single-uid mode maps every tenant to our own uid"
            );
            assert_eq!(owner("bob"), me);
        }
    }
}

#[test]
fn exit_codes_pass_through() {
    let env = Env::new();
    let code = |cmd: &[&str]| env.run("alice", cmd).status.code();
    assert_eq!(code(&["true"]), Some(0));
    assert_eq!(code(&["false"]), Some(1));
    assert_eq!(code(&[warren_tests::PROBE_IN_SANDBOX, "exit:42"]), Some(42));
    assert_eq!(
        code(&[warren_tests::PROBE_IN_SANDBOX, "kill_self:9"]),
        Some(128 + 9)
    );
    assert_eq!(
        code(&[warren_tests::PROBE_IN_SANDBOX, "kill_self:15"]),
        Some(128 + 15)
    );
    let missing = env.run("alice", &["no-such-command-xyz"]);
    assert_eq!(missing.status.code(), Some(127));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("not found"),
        "{missing:?}"
    );
    let not_exec = env.run("alice", &["/etc/hostname"]);
    assert_eq!(not_exec.status.code(), Some(126), "{not_exec:?}");
}

#[test]
fn stdin_and_stdout_pass_through() {
    let env = Env::new();
    let mut child = env
        .warren_run("alice")
        // No limits: stderr then holds only the command's own output,
        // also where limits are unavailable and would be warned about.
        .args(["--memory", "none", "--cpus", "none", "--pids", "none"])
        .args(["--", "sh", "-c", "tr a-z A-Z; echo err >&2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
}

/// Starts `script` in alice's sandbox and waits for it to print "ready".
fn start_ready(
    env: &Env,
    script: &str,
) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut child = env
        .warren_run("alice")
        .args(["--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    (child, out)
}

#[test]
fn signals_are_forwarded() {
    let env = Env::new();
    let (mut child, mut out) = start_ready(
        &env,
        "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.05; done",
    );
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "got-term\n");
    assert_eq!(child.wait().unwrap().code(), Some(42));

    // Ctrl-C: SIGINT reaches the command, which dies of it: 128+2.
    let (mut child, _out) = start_ready(&env, "echo ready; exec sleep 30");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130));
}

fn wait_gone(tag: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if host_pids_matching(tag).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn nothing_survives_the_command() {
    let env = Env::new();
    let tag = format!("env:LEFTOVER_{}", std::process::id());
    let out = env.run("alice", &[warren_tests::PROBE_IN_SANDBOX, "orphan", &tag]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("orphan\tspawned"));
    assert!(
        wait_gone(&tag),
        "the orphaned grandchild outlived the sandbox"
    );
}

#[test]
fn killing_warren_kills_the_sandbox() {
    let env = Env::new();
    let tag = format!("env:KILLED_{}", std::process::id());
    let mut child = env
        .warren_run("alice")
        .args([
            "--",
            warren_tests::PROBE_IN_SANDBOX,
            "orphan",
            &tag,
            "sleep:60000",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "orphan\tspawned\n");
    assert!(!host_pids_matching(&tag).is_empty());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        wait_gone(&tag),
        "sandbox processes outlived a SIGKILLed warren"
    );
}

#[test]
fn setup_failures_name_the_step() {
    let env = Env::new();
    let out = env
        .warren_run("alice")
        .args(["--cwd", "/nonexistent", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("chdir /nonexistent") && err.contains("ENOENT") && err.contains("hint:"),
        "{err}"
    );

    let out = env
        .warren_run("alice")
        .args(["--ro-bind", "/etc/hostname:/usr/new-file", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("create mount point") && err.contains("EROFS"),
        "{err}"
    );
}

#[test]
fn symlinked_home_is_refused() {
    let env = Env::new();
    std::fs::create_dir_all(env.workspace_root()).unwrap();
    let outside = env.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, env.workspace_root().join("mallory")).unwrap();
    let out = env.run("mallory", &["true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("symlink"),
        "{out:?}"
    );
}

#[test]
fn doctor_passes_here() {
    let out = std::process::Command::new(warren_tests::warren_bin())
        .arg("doctor")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("[ok  ] trial sandbox"), "{text}");
    assert!(text.contains("default isolation: namespaces"), "{text}");
}

#[test]
fn terminal_comes_from_the_sandbox_devpts() {
    let env = Env::new();
    let out = env
        .warren_run("alice")
        .args([
            "--tty",
            "always",
            "--",
            "sh",
            "-c",
            "tty; stty size; ls -1 /dev/pts; exit 7",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert_eq!(text, "/dev/pts/0\n24 80\n0\nptmx\n");
}

#[test]
fn warren_info_describes_the_sandbox_from_inside() {
    let env = Env::new();
    let out = env.run("alice", &["warren-info"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("user         alice (uid 1000)"), "{text}");
    assert!(
        text.contains("isolation    namespaces (user, mount, pid, net, ipc, uts"),
        "{text}"
    );
    assert!(
        text.contains("seccomp default-v2, capabilities none, no_new_privs on"),
        "{text}"
    );
    assert!(text.contains("usage        memory"), "{text}");
    // Root, and root of a namespace mapping host root too, may write the
    // host's cgroups.
    if matches!(Mode::current(), Mode::Root | Mode::UserNs) {
        assert!(
            text.contains("limits       memory 512.0 MiB (no swap), cpu 0.5 core(s), 512 tasks"),
            "{text}"
        );
    } else {
        assert!(
            text.contains("not enforced on this host: memory, cpu, pids"),
            "{text}"
        );
    }
}
