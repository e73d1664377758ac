//! Joining a live sandbox (`warren-shim join`), the way each terminal of
//! the web server enters its user's sandbox: same namespaces and cgroup,
//! confinement re-applied from the caller's spec.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use warren_domain::sandbox::{prepare, Request, Settings};
use warren_runtime::launch::{self, JoinTarget, Mode};
use warren_runtime::report::Event;
use warren_tests::{bin_dir, Env};

struct Held {
    shim: Child,
    target: JoinTarget,
}

fn settings(env: &Env) -> Settings {
    Settings {
        state_dir: env.state_dir(),
        workspace_root: env.workspace_root(),
        uid_base: 1_900_000_000,
    }
}

fn request(user: &str, argv: &[&str]) -> Request {
    Request {
        user: user.into(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        tmp_size_mib: 64,
        ..Default::default()
    }
}

/// Starts a sandbox for `user` that holds itself open, and waits for it.
fn hold(env: &Env, user: &str) -> Held {
    let spec = prepare(
        &settings(env),
        &Request {
            hold: true,
            ..request(user, &[])
        },
    )
    .unwrap();
    let shim = bin_dir().join("warren-shim");
    let l = launch::start(&shim, &spec, Stdio::null(), Stdio::null(), Stdio::inherit()).unwrap();
    let (tx, rx) = mpsc::channel();
    let report = l.report;
    std::thread::spawn(move || {
        for line in BufReader::new(report).lines().map_while(Result::ok) {
            if let Ok(e) = serde_json::from_str::<Event>(&line) {
                if tx.send(e).is_err() {
                    break;
                }
            }
        }
    });
    // Joining before PID 1 has built the root (Ready) would land in a
    // half-made mount namespace; Started (from the shim) gives PID 1's pid.
    let (mut cgroup, mut record, mut init_pid, mut ready) = (None, None, None, false);
    while !(ready && init_pid.is_some()) {
        match rx
            .recv_timeout(Duration::from_secs(10))
            .expect("sandbox did not start")
        {
            Event::Sandbox {
                cgroup: id,
                record: r,
            } => (cgroup, record) = (id, Some(r)),
            Event::Started { init_pid: pid } => init_pid = init_pid.or(Some(pid)),
            Event::Ready => ready = true,
            Event::Failed(e) => panic!("sandbox failed: {e}"),
            _ => {}
        }
    }
    Held {
        target: JoinTarget {
            init_pid: init_pid.unwrap(),
            parent_pid: l.child.id() as i32,
            cgroup,
            record,
        },
        shim: l.child,
    }
}

impl Held {
    fn join(&self, env: &Env, user: &str, argv: &[&str]) -> std::process::Output {
        let spec = prepare(&settings(env), &request(user, argv)).unwrap();
        let shim = bin_dir().join("warren-shim");
        let l = launch::start_as(
            &shim,
            &spec,
            &Mode::Join(self.target.clone()),
            Stdio::null(),
            Stdio::piped(),
            Stdio::piped(),
        )
        .unwrap();
        let report = l.report;
        let events = std::thread::spawn(move || warren_runtime::report::read_all(report));
        let out = l.child.wait_with_output().unwrap();
        let events = events.join().unwrap();
        if let Some(err) = events.iter().find_map(|e| match e {
            Event::Failed(err) => Some(err),
            _ => None,
        }) {
            panic!("join failed: {err} (hint: {:?})", err.hint);
        }
        out
    }

    fn stop(mut self) {
        kill(Pid::from_raw(self.shim.id() as i32), Signal::SIGTERM).unwrap();
        let st = self.shim.wait().unwrap();
        assert!(st.success(), "held sandbox ended with {st}");
        assert!(!std::path::Path::new(&format!("/proc/{}", self.target.init_pid)).exists());
    }
}

fn ns(pid: &str, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn joined_commands_share_the_sandbox() {
    let env = Env::new();
    let held = hold(&env, "alice");
    let out = held.join(&env, "alice", &["sh", "-c", "whoami; hostname; cat /proc/1/comm; ls /workspace; cat /proc/self/status | grep -E '^(CapEff|NoNewPrivs|Seccomp):'; echo data > /workspace/alice/j; sleep 30 >/dev/null 2>&1 & echo $!"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        &lines[..4],
        ["alice", "alice-sandbox", "warren-shim", "alice"],
        "{text}"
    );
    assert!(
        text.contains("CapEff:\t0000000000000000")
            && text.contains("NoNewPrivs:\t1")
            && text.contains("Seccomp:\t2"),
        "{text}"
    );

    // A second command sees the first one's file and its orphaned sleep,
    // which the sandbox's PID 1 adopted.
    let out = held.join(
        &env,
        "alice",
        &[
            "sh",
            "-c",
            "cat /workspace/alice/j; ps -o comm= ax | sort | uniq -c | tr -s ' '",
        ],
    );
    let text2 = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text2.starts_with("data\n") && text2.contains("1 sleep"),
        "{text2}"
    );

    // Host view: the joined command is in PID 1's namespaces and cgroup.
    let init = held.target.init_pid.to_string();
    let out = held.join(&env, "alice", &["sh", "-c", "sleep 0.3 & exec sleep 0.5"]);
    assert!(out.status.success());
    for kind in ["pid", "mnt", "net", "user", "uts", "ipc"] {
        assert_ne!(
            ns(&init, kind),
            ns("self", kind),
            "{kind}: the sandbox has its own"
        );
    }
    if let Some(id) = &held.target.cgroup {
        let cg = std::fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap();
        assert!(cg.contains(id), "{cg}");
    }
    held.stop();
}

#[test]
fn a_joined_terminal_is_the_sandboxs_own() {
    let env = Env::new();
    let held = hold(&env, "bob");
    let mut spec = prepare(&settings(&env), &request("bob", &["sh"])).unwrap();
    spec.tty = Some(warren_runtime::pty::WinSize {
        rows: 33,
        cols: 101,
    });
    let shim = bin_dir().join("warren-shim");
    let l = launch::start_as(
        &shim,
        &spec,
        &Mode::Join(held.target.clone()),
        Stdio::null(),
        Stdio::null(),
        Stdio::inherit(),
    )
    .unwrap();
    let report = l.report;
    let events = std::thread::spawn(move || warren_runtime::report::read_all(report));
    let master = warren_runtime::pty::recv_fd(l.pty_socket.as_ref().unwrap())
        .unwrap()
        .expect("a terminal");
    let mut m = std::fs::File::from(master);
    m.write_all(b"tty; stty size; exit 5\n").unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    // EIO once the shell has exited and the slave is closed; a shell that
    // never started never opens the slave, so the wait is bounded.
    use std::os::fd::AsFd;
    loop {
        let mut fds = [nix::poll::PollFd::new(
            m.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(10_000u16)).unwrap();
        if ready == 0 {
            panic!(
                "no output for 10 s after {:?}; events {:?}",
                String::from_utf8_lossy(&all),
                events.join().unwrap()
            );
        }
        match m.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&all).replace('\r', "");
    let st = l.child.wait_with_output().unwrap().status;
    let events = events.join().unwrap();
    assert!(
        !events.iter().any(|e| matches!(e, Event::Failed(_))),
        "{events:?}"
    );
    assert!(text.contains("/dev/pts/0\n33 101\n"), "{text}");
    assert_eq!(st.code(), Some(5));
    held.stop();
}

#[test]
fn a_stale_pid_is_refused() {
    let env = Env::new();
    let held = hold(&env, "carol");
    let mut target = held.target.clone();
    target.parent_pid = std::process::id() as i32;
    let spec = prepare(&settings(&env), &request("carol", &["true"])).unwrap();
    let l = launch::start_as(
        &bin_dir().join("warren-shim"),
        &spec,
        &Mode::Join(target),
        Stdio::null(),
        Stdio::null(),
        Stdio::null(),
    )
    .unwrap();
    let events = warren_runtime::report::read_all(l.report);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Failed(err) if err.step == "check sandbox PID 1")),
        "{events:?}"
    );
    held.stop();
}

/// A joined command (each web terminal) holds no supplementary group
/// where warren may drop them (issue 10, 6b; tests/tests/hardening.rs has
/// the rows for the first command and the other modes).
#[test]
fn a_joined_command_has_no_supplementary_group() {
    use warren_tests::Mode;
    let env = Env::new();
    let held = hold(&env, "alice");
    let out = held.join(
        &env,
        "alice",
        &["/bin/sh", "-c", "grep '^Groups:' /proc/self/status"],
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    held.stop();
    let groups = text.trim().trim_start_matches("Groups:").trim().to_string();
    if matches!(Mode::current(), Mode::Root | Mode::UserNs | Mode::SubUid) {
        assert_eq!(groups, "", "{text}");
    } else {
        // The operator's own, which it may not drop (CVE-2018-7169).
        assert!(
            groups
                .split(' ')
                .all(|g| g.is_empty() || g == "1000" || g == "65534"),
            "{text}"
        );
    }
}

/// What `ps -o args` shows for `pid`: its command line, NULs as spaces.
fn ps_args(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let text = String::from_utf8_lossy(&raw).replace('\0', " ");
    text.trim_end().to_string()
}

#[test]
fn the_shims_processes_are_named_for_ps() {
    let env = Env::new();
    let held = hold(&env, "carol");
    assert_eq!(ps_args(held.shim.id() as i32), "warren-shim create carol");
    assert_eq!(ps_args(held.target.init_pid), "warren: init carol");
    // `comm` (15 bytes) stays the binary's name.
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", held.target.init_pid)).unwrap();
    assert_eq!(comm.trim(), "warren-shim");
    // Inside, PID 1 shows the same.
    let out = held.join(
        &env,
        "carol",
        &["sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline"],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "warren: init carol"
    );
    // A joining shim, while its command runs.
    let spec = prepare(&settings(&env), &request("carol", &["sleep", "5"])).unwrap();
    let shim = bin_dir().join("warren-shim");
    let mode = Mode::Join(held.target.clone());
    let mut l = launch::start_as(
        &shim,
        &spec,
        &mode,
        Stdio::null(),
        Stdio::null(),
        Stdio::inherit(),
    )
    .unwrap();
    let pid = l.child.id() as i32;
    let mut seen = String::new();
    for _ in 0..100 {
        seen = ps_args(pid);
        if seen.starts_with("warren: join") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(seen, "warren: join carol");
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    l.child.wait().unwrap();
    held.stop();
}
