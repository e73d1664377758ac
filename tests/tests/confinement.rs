//! Confinement from the inside: the seccomp filter, capabilities,
//! no_new_privs, setuid binaries, Landlock.

use std::process::Command;

use warren_tests::{probe_bin, Answers, Env, Mode, PROBE_IN_SANDBOX};

/// Syscall probes the filter must let through unchanged.
const ALLOWED: &[&str] = &[
    "personality_query",
    "ioctl_tiocgwinsz",
    "socket_unix",
    "unshare_newns",
    "clone_newns",
];
/// Refused with ENOSYS (so libc falls back, or x32 is simply absent).
const ENOSYS: &[&str] = &["clone3", "x32_getpid"];

fn host_probe(questions: &[String]) -> Answers {
    let out = Command::new(probe_bin()).args(questions).output().unwrap();
    Answers::parse(&String::from_utf8_lossy(&out.stdout))
}

#[test]
fn denied_syscalls_get_eperm_from_the_filter() {
    let env = Env::new();
    let names = host_probe(&["syscalls".into()]).get("syscalls").to_string();
    let questions: Vec<String> = names.split(',').map(|n| format!("syscall:{n}")).collect();
    let q: Vec<&str> = questions.iter().map(String::as_str).collect();
    // The kernel's own answers, outside any sandbox, as the same user.
    let baseline = host_probe(&questions);
    let inside = env.probe("alice", &q);
    let (mut told_apart, mut same_as_kernel) = (0, Vec::new());
    for n in names.split(',') {
        let key = format!("syscall:{n}");
        let (kernel, got) = (baseline.get(&key), inside.get(&key));
        if ALLOWED.contains(&n) {
            assert_eq!(got, kernel, "{n}: the filter must not touch this call");
            continue;
        }
        let want = if ENOSYS.contains(&n) {
            "ENOSYS"
        } else {
            "EPERM"
        };
        if kernel == want {
            // The kernel itself says the same here (e.g. pivot_root as an
            // unprivileged user): runtime::seccomp's own tests cover it.
            same_as_kernel.push(n);
            assert_eq!(got, want, "{n}");
            continue;
        }
        assert_eq!(
            got, want,
            "{n}: kernel answers {kernel} outside, so {got} inside means the filter missed it"
        );
        told_apart += 1;
    }
    eprintln!("{told_apart} denied syscalls told apart from the kernel's answer; same as the kernel: {same_as_kernel:?}");
    assert!(
        told_apart >= 30,
        "only {told_apart} rows could be told apart"
    );
}

#[test]
fn tiocsti_is_refused_on_the_sandbox_terminal() {
    let env = Env::new();
    let out = env
        .warren_run("alice")
        .args([
            "--tty",
            "always",
            "--",
            PROBE_IN_SANDBOX,
            "tiocsti",
            "tiocsti:high",
            "status:Seccomp",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let a = Answers::parse(&String::from_utf8_lossy(&out.stdout).replace('\r', ""));
    assert_eq!(a.get("tiocsti"), "EPERM");
    assert_eq!(
        a.get("tiocsti:high"),
        "EPERM",
        "CVE-2019-10063: the high bits must not slip past"
    );
    assert_eq!(a.get("status:Seccomp"), "2");
}

#[test]
fn no_capabilities_and_no_new_privileges() {
    let env = Env::new();
    let a = env.probe(
        "alice",
        &[
            "status:CapInh",
            "status:CapPrm",
            "status:CapEff",
            "status:CapBnd",
            "status:CapAmb",
            "status:NoNewPrivs",
            "status:Seccomp",
        ],
    );
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(a.get(&format!("status:{set}")), "0000000000000000", "{set}");
    }
    assert_eq!(a.get("status:NoNewPrivs"), "1");
    assert_eq!(a.get("status:Seccomp"), "2");
}

/// A setuid-root copy of the probe, made by root (the matrix runner makes
/// one for the unprivileged modes and passes it in WARREN_SUID_PROBE).
fn suid_probe(env: &Env) -> Option<std::path::PathBuf> {
    if let Ok(p) = std::env::var("WARREN_SUID_PROBE") {
        return Some(p.into());
    }
    if Mode::current() != Mode::Root {
        return None;
    }
    use std::os::unix::fs::PermissionsExt;
    let p = env.dir.path().join("suid-probe");
    std::fs::copy(probe_bin(), &p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o4755)).unwrap();
    Some(p)
}

#[test]
fn setuid_binaries_gain_nothing() {
    let env = Env::new();
    let Some(suid) = suid_probe(&env) else {
        warren_tests::skip("no setuid-root probe: run as root or through tests/matrix.sh");
        return;
    };
    let meta = std::fs::metadata(&suid).unwrap();
    use std::os::unix::fs::MetadataExt;
    // Host root shows as the overflow uid inside `unshare --user`.
    let me = nix::unistd::geteuid().as_raw();
    assert!(
        meta.mode() & 0o4000 != 0 && (meta.uid() == 0 || meta.uid() != me),
        "{suid:?} is not setuid root"
    );
    let out = env
        .warren_run("alice")
        .arg("--ro-bind")
        .arg(format!("{}:/opt/suid-probe", suid.display()))
        .args(["--", "/opt/suid-probe", "euid", "uid", "status:CapEff"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let a = Answers::parse(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(a.get("euid"), "1000");
    assert_eq!(a.get("status:CapEff"), "0000000000000000");
}

#[test]
fn landlock_is_a_second_wall() {
    let env = Env::new();
    let data = env.dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = env
        .warren_run("alice")
        .arg("--verbose")
        .arg("--bind")
        .arg(format!("{}:/opt/data", data.display()))
        .args([
            "--",
            PROBE_IN_SANDBOX,
            "write:/proc/self/comm=x",
            "write:/opt/data/f",
            "write:/tmp/f",
            "write:/workspace/alice/f",
            "write:/dev/shm/f",
            "open_rw:/dev/null",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let a = Answers::parse(&String::from_utf8_lossy(&out.stdout));
    // /proc/self/comm is writable by its owner; only Landlock says no.
    assert_eq!(a.get("write:/proc/self/comm=x"), "EACCES");
    for w in [
        "write:/opt/data/f",
        "write:/tmp/f",
        "write:/workspace/alice/f",
        "write:/dev/shm/f",
        "open_rw:/dev/null",
    ] {
        assert_eq!(a.get(w), "ok", "{w}");
    }
    // The level reached is reported, not assumed.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("landlock") && err.contains("enforced"),
        "{err}"
    );
    // Outside the sandbox the same write works: it really was Landlock.
    let host = Command::new(probe_bin())
        .arg("write:/proc/self/comm=x")
        .output()
        .unwrap();
    assert_eq!(
        Answers::parse(&String::from_utf8_lossy(&host.stdout)).get("write:/proc/self/comm=x"),
        "ok"
    );
}
