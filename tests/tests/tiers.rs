//! Isolation tiers: what `--isolation auto` picks when user namespaces are
//! really gone, and what the landlock tier still guarantees, checked from
//! the inside with the probe.
//!
//! User namespaces are taken away two ways, each for real:
//! - `no-userns` (tests/src/bin) installs a seccomp filter refusing
//!   clone/unshare with CLONE_NEWUSER, like Docker's default profile, then
//!   execs warren;
//! - `unshare --user --map-root-user` makes a user namespace in which the
//!   test writes user.max_user_namespaces=0 (that sysctl is per namespace
//!   and its root may lower it), then execs warren there.
//!
//! The probe runs from its own host path in every tier (nothing is mounted
//! in the tiers without namespaces, so a bind shares a path where it is).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use warren_runtime::cgroups::{Cgroups, Roots};
use warren_tests::{alive, bin_dir, must_run, probe_bin, skip, warren_bin, Answers, Env, Mode};

const NO_USERNS: &str = env!("CARGO_BIN_EXE_no-userns");

fn landlock_abi() -> u32 {
    warren_runtime::sys::landlock_abi()
}

/// The landlock tier needs Landlock; without it there is nothing to test.
fn have_landlock() -> bool {
    if landlock_abi() == 0 {
        skip("this kernel has no Landlock: the landlock tier cannot run");
        return false;
    }
    true
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// `warren` with `args` under the `no-userns` seccomp filter.
fn without_userns(args: Vec<std::ffi::OsString>) -> Command {
    let mut c = Command::new(NO_USERNS);
    c.arg(warren_bin()).args(args).stdin(Stdio::null());
    c
}

fn probe_args(questions: &[&str]) -> Vec<std::ffi::OsString> {
    let mut a = vec!["--".into(), probe_bin().into_os_string()];
    a.extend(questions.iter().map(Into::into));
    a
}

fn home(env: &Env, user: &str) -> PathBuf {
    env.workspace_root().join(user)
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn auto_falls_back_to_landlock_when_seccomp_refuses_user_namespaces() {
    if !have_landlock() {
        return;
    }
    let env = Env::new();
    let alice = home(&env, "alice");
    let (write, read) = (
        format!("write:{}=hello", p(&alice.join("note"))),
        format!("read:{}", p(&alice.join("note"))),
    );
    let mut args = env.run_args("alice", "auto");
    args.extend(probe_args(&[
        "env:HOME",
        "cwd",
        "status:Seccomp",
        "status:NoNewPrivs",
        &write,
        &read,
        "netifs",
    ]));
    let out = without_userns(args).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let err = text(&out.stderr);
    // Said once, on stderr, with the reason found on this host.
    assert!(
        err.contains("warren: isolation landlock: user namespaces are unavailable"),
        "{err}"
    );
    assert!(err.contains("seccomp filter"), "{err}");
    let a = Answers::parse(&text(&out.stdout));
    assert_eq!(a.get("env:HOME"), p(&alice));
    assert_eq!(a.get("cwd"), p(&alice));
    assert_eq!(a.get("status:Seccomp"), "2");
    assert_eq!(a.get("status:NoNewPrivs"), "1");
    assert_eq!(a.get(&write), "ok");
    assert_eq!(a.get(&read), "hello");
    // No network namespace of its own: the host's interfaces are visible.
    let host_ifs = std::fs::read_to_string("/proc/net/dev").unwrap();
    assert!(
        a.get("netifs").split(',').count() >= 1 && host_ifs.contains("lo:"),
        "{a:?}"
    );
}

#[test]
fn auto_falls_back_when_max_user_namespaces_is_zero() {
    if !have_landlock() {
        return;
    }
    let env = Env::new();
    let mut c = Command::new("unshare");
    if matches!(Mode::current(), Mode::Root | Mode::UserNs) {
        // Root under plain `unshare --map-root-user` would be host root,
        // which warren refuses: go in as nobody, which owns the test's dir.
        nix::unistd::chown(env.dir.path(), Some(65534.into()), Some(65534.into())).unwrap();
        c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "unshare",
        ]);
    }
    c.args(["--user", "--map-root-user", "--", "/bin/sh", "-c"])
        .arg(r#"echo 0 > /proc/sys/user/max_user_namespaces || exit 99; exec "$@""#)
        .arg("sh")
        .arg(warren_bin())
        .args(env.run_args("alice", "auto"))
        .args(probe_args(&["status:Seccomp", "env:HOME"]))
        .stdin(Stdio::null());
    let out = c.output().unwrap();
    let err = text(&out.stderr);
    if !out.status.success() && err.contains("unshare failed") {
        skip(&format!("cannot create a user namespace here: {err}"));
        return;
    }
    assert_ne!(
        out.status.code(),
        Some(99),
        "user.max_user_namespaces is not writable in a new user namespace: {}",
        show(&out)
    );
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        err.contains("isolation landlock: user namespaces are unavailable")
            && err.contains("user.max_user_namespaces=0"),
        "{err}"
    );
    let a = Answers::parse(&text(&out.stdout));
    assert_eq!(a.get("status:Seccomp"), "2");
    assert_eq!(a.get("env:HOME"), p(&home(&env, "alice")));
}

#[test]
fn namespaces_by_name_fails_clearly_without_user_namespaces() {
    let env = Env::new();
    let marker = env.dir.path().join("ran");
    let mut args = env.run_args("alice", "namespaces");
    args.extend(["--".into(), "/bin/touch".into(), marker.clone().into()]);
    let out = without_userns(args).output().unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", show(&out));
    let err = text(&out.stderr);
    assert!(err.contains("--isolation namespaces: "), "{err}");
    assert!(err.contains("seccomp filter"), "{err}");
    assert!(
        err.contains("hint: ") && err.contains("--isolation landlock"),
        "{err}"
    );
    assert!(!marker.exists(), "nothing may run");
    assert!(!env.workspace_root().exists(), "nothing may be created");
}

#[test]
fn landlock_tier_keeps_tenants_apart() {
    if !have_landlock() {
        return;
    }
    let env = Env::new();
    let (alice, bob) = (home(&env, "alice"), home(&env, "bob"));
    let secret = format!("write:{}=s3cret", p(&alice.join("secret")));
    let a = env.probe_tier("alice", "landlock", &[&secret]);
    assert_eq!(a.get(&secret), "ok");

    let state = env.state_dir();
    let questions = [
        // Alice's home: read, write, list, create.
        format!("read:{}", p(&alice.join("secret"))),
        format!("write:{}=x", p(&alice.join("planted"))),
        format!("ls:{}", p(&alice)),
        format!("mkdir:{}", p(&alice.join("d"))),
        // The workspace root and the server's state.
        format!("ls:{}", p(&env.workspace_root())),
        format!("ls:{}", p(&state)),
        format!("read:{}", p(&state.join("warren.db"))),
        format!("write:{}=x", p(&state.join("planted"))),
        // The host's shared /tmp.
        "ls:/tmp".to_string(),
        format!("write:{}=x", p(&env.dir.path().join("planted"))),
    ];
    let own = [
        format!("write:{}=mine", p(&bob.join("mine"))),
        format!("read:{}", p(&bob.join("mine"))),
        format!("write:{}=t", p(&bob.join(".tmp/t"))),
        "env:TMPDIR".to_string(),
        "read:/etc/hostname".to_string(),
    ];
    let all: Vec<&str> = questions.iter().chain(&own).map(String::as_str).collect();
    let b = env.probe_tier("bob", "landlock", &all);
    for q in &questions {
        assert_eq!(b.get(q), "EACCES", "{q}: {b:?}");
    }
    assert_eq!(b.get(&own[0]), "ok");
    assert_eq!(b.get(&own[1]), "mine");
    assert_eq!(b.get(&own[2]), "ok", "TMPDIR is private and writable");
    assert_eq!(b.get("env:TMPDIR"), p(&bob.join(".tmp")));
    assert_ne!(
        b.get("read:/etc/hostname"),
        "EACCES",
        "system files stay readable"
    );
    // Nothing of bob's reached alice's home or the state.
    assert!(!alice.join("planted").exists() && !alice.join("d").exists());
    assert!(!state.join("planted").exists());

    // Bob's home works for ordinary commands.
    let out = env
        .warren_run_tier("bob", "landlock")
        .args(["--", "/bin/sh", "-c", "echo made > f && cat f && ls"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(text(&out.stdout), "made\nf\nmine\n");
}

#[test]
fn landlock_tier_cannot_signal_another_tenant() {
    if !have_landlock() {
        return;
    }
    let mode = Mode::current();
    if landlock_abi() < 6 && mode != Mode::Root {
        // Only root gives each tenant its own uid; one shared uid needs
        // Landlock's signal scoping.
        skip(&format!(
            "Landlock ABI {} cannot scope signals (ABI 6, Linux 6.12)",
            landlock_abi()
        ));
        return;
    }
    let env = Env::new();
    let mut bob = env
        .warren_run_tier("bob", "landlock")
        .arg("--")
        .arg(probe_bin())
        .args(["pid", "sleep:60000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(bob.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let bob_pid: i32 = line
        .trim()
        .strip_prefix("pid\t")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid from bob's probe: {line:?}"));
    assert!(alive(bob_pid));

    let to_bob = format!("signal:{bob_pid}:0");
    let to_bob_term = format!("signal:{bob_pid}:15");
    let to_server = format!("signal:{}:0", std::process::id());
    let a = env.probe_tier(
        "alice",
        "landlock",
        &[&to_bob, &to_bob_term, &to_server, "signal:0:0"],
    );
    assert_eq!(a.get(&to_bob), "EPERM", "{a:?}");
    assert_eq!(a.get(&to_bob_term), "EPERM", "{a:?}");
    assert_eq!(a.get(&to_server), "EPERM", "the server is out of reach");
    assert_eq!(a.get("signal:0:0"), "ok", "its own process group");
    assert!(alive(bob_pid), "bob's process survived");

    // Ending `warren run` ends everything it started: no pid namespace
    // does it here, the parent-death signals and the leader do.
    bob.kill().unwrap();
    bob.wait().unwrap();
    let start = Instant::now();
    while alive(bob_pid) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(bob_pid), "bob's probe outlived its warren run");
}

#[test]
fn landlock_tier_leaves_no_orphan_behind() {
    if !have_landlock() {
        return;
    }
    let env = Env::new();
    // The subshell exits at once: its sleep is an orphan of the command.
    let out = env
        .warren_run_tier("alice", "landlock")
        .args(["--", "/bin/sh", "-c", "(sleep 300 & echo $!)"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let pid: i32 = text(&out.stdout).trim().parse().unwrap();
    let start = Instant::now();
    while alive(pid) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(pid), "the orphan {pid} outlived the sandbox");
}

#[test]
fn landlock_tier_reaches_no_socket_on_loopback() {
    if !have_landlock() {
        return;
    }
    let env = Env::new();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let connect = format!("connect:{}", tcp.local_addr().unwrap());
    let send = format!("udp:{}", udp.local_addr().unwrap());
    let a = env.probe_tier("alice", "landlock", &[&connect, &send, "unix_socket"]);
    // seccomp refuses the sockets (and Landlock, ABI 4, every TCP connect).
    assert_eq!(a.get(&connect), "EPERM", "{a:?}");
    assert_eq!(a.get(&send), "EPERM", "{a:?}");
    // Named unix sockets only where Landlock decides which (ABI 9).
    let unix = if landlock_abi() >= 9 { "ok" } else { "EPERM" };
    assert_eq!(a.get("unix_socket"), unix, "{a:?}");
    tcp.set_nonblocking(true).unwrap();
    assert!(tcp.accept().is_err(), "nothing connected");
    udp.set_nonblocking(true).unwrap();
    assert!(udp.recv(&mut [0u8; 8]).is_err(), "nothing arrived");
}

/// The limits this host cannot apply to a cgroup, as warren sees them.
fn missing_limits() -> Vec<&'static str> {
    match Cgroups::probe(&Roots::default()) {
        Ok(c) => c.availability().missing,
        Err(_) => vec!["memory", "cpu", "pids"],
    }
}

#[test]
fn landlock_tier_applies_seccomp_rlimits_and_reports_missing_limits() {
    if !have_landlock() {
        return;
    }
    let env = Env::new();
    let rlimits = [
        "rlimit:core",
        "rlimit:nofile",
        "rlimit:data",
        "rlimit:nproc",
    ];
    let syscalls = ["syscall:keyctl", "syscall:bpf", "syscall:unshare_newuser"];
    let mut questions = vec![
        "status:Seccomp",
        "status:NoNewPrivs",
        "status:CapEff",
        "status:CapPrm",
        "status:CapBnd",
    ];
    questions.extend(rlimits);
    questions.extend(syscalls);
    let host = Answers::parse(&text(
        &Command::new(probe_bin())
            .args(&questions)
            .output()
            .unwrap()
            .stdout,
    ));
    let a = env.probe_tier("alice", "landlock", &questions);
    assert_eq!(a.get("status:Seccomp"), "2");
    assert_eq!(a.get("status:NoNewPrivs"), "1");
    assert_eq!(a.get("status:CapEff"), "0000000000000000");
    assert_eq!(a.get("status:CapPrm"), "0000000000000000");
    let mode = Mode::current();
    if matches!(mode, Mode::Root | Mode::UserNs | Mode::UserNsUser) {
        // Privileged enough to empty the bounding set too.
        assert_eq!(a.get("status:CapBnd"), "0000000000000000");
    }
    for s in syscalls {
        assert_ne!(
            host.get(s),
            "EPERM",
            "{s}: the kernel must answer otherwise"
        );
        assert_eq!(a.get(s), "EPERM", "{s}: the filter must refuse it");
    }

    assert_eq!(a.get("rlimit:core"), "0 0");
    let host_nofile_hard: u64 = host
        .get("rlimit:nofile")
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let nofile = host_nofile_hard.min(4096);
    assert_eq!(a.get("rlimit:nofile"), format!("{nofile} {nofile}"));
    let missing = missing_limits();
    let memory = 512u64 << 20;
    if missing.contains(&"memory") {
        assert_eq!(a.get("rlimit:data"), format!("{memory} {memory}"));
    } else {
        assert_eq!(a.get("rlimit:data"), host.get("rlimit:data"));
    }
    if missing.contains(&"pids") && mode == Mode::Root {
        assert_eq!(a.get("rlimit:nproc"), "512 512");
    } else {
        assert_eq!(a.get("rlimit:nproc"), host.get("rlimit:nproc"));
    }

    // warren-info says the same, and so does the warning of `warren run`.
    let tool = bin_dir().join("warren-info");
    assert!(
        tool.exists(),
        "{} is missing: run `cargo build --workspace`",
        tool.display()
    );
    let out = env
        .warren_run_tier("alice", "landlock")
        .args(["--", "warren-info"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let info = text(&out.stdout);
    assert!(
        info.contains("isolation    landlock (no namespaces"),
        "{info}"
    );
    assert!(info.contains("seccomp default-v2+shared-host-v1"), "{info}");
    assert!(info.contains("per process  core dumps off"), "{info}");
    let err = text(&out.stderr);
    if missing.is_empty() {
        assert!(
            info.contains("limits       memory 512.0 MiB (no swap), cpu 0.5 core(s), 512 tasks"),
            "{info}"
        );
        assert!(!err.contains("running without"), "{err}");
    } else {
        eprintln!("this host cannot apply: {missing:?}");
        let line = info
            .lines()
            .find(|l| l.contains("not enforced on this host:"))
            .unwrap_or_else(|| panic!("no missing limits in {info}"));
        for m in &missing {
            assert!(line.contains(m), "{m} missing from {line:?}");
            assert!(err.contains(m), "the warning names {m}: {err}");
        }
        assert!(
            err.contains("warren: warning: running without the"),
            "{err}"
        );
        if missing.contains(&"memory") {
            assert!(
                info.contains("memory 512 MiB per process (RLIMIT_DATA)"),
                "{info}"
            );
        }
    }
}

#[test]
fn warren_info_reports_the_tier_in_every_tier() {
    let env = Env::new();
    let mut tiers = vec!["namespaces", "none"];
    if landlock_abi() > 0 {
        tiers.push("landlock");
    } else if must_run() {
        panic!("CI requires Landlock for the landlock tier");
    }
    for tier in tiers {
        // A user per tier: with subordinate ids the namespace tier hands a
        // home to an id the other tiers (which run as our own) cannot use.
        let user = format!("user-{tier}");
        // Chosen through the environment, as a service file would.
        let mut c = warren_tests::warren_command();
        let mut args = env.run_args(&user, tier);
        let at = args.iter().position(|a| a == "--isolation").unwrap();
        args.drain(at..at + 2);
        c.args(args)
            .env("WARREN_ISOLATION", tier)
            .args(["--", "warren-info"])
            .stdin(Stdio::null());
        let out = c.output().unwrap();
        assert!(out.status.success(), "{tier}: {}", show(&out));
        let info = text(&out.stdout);
        assert!(
            info.contains(&format!("isolation    {tier} (")),
            "{tier}: {info}"
        );
        assert!(
            info.contains(&format!("user         {user}")),
            "{tier}: {info}"
        );
        let err = text(&out.stderr);
        match tier {
            "none" => assert!(err.contains("warren: warning: isolation none"), "{err}"),
            "landlock" => assert!(err.contains("warren: isolation landlock"), "{err}"),
            _ => assert!(!err.contains("isolation"), "quiet by default: {err}"),
        }
    }
}
