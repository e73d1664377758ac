//! The network policy (docs/network.md), checked from inside sandboxes
//! against a fake internet built in network namespaces
//! (tests/fakenet/fakenet.sh), so no packet leaves the machine: upstream
//! holds 93.184.215.14 (public, named upstream.test by its resolver),
//! 10.0.0.2, 192.168.1.2 and 169.254.169.254; "the host" warren runs on
//! has 203.0.113.2, 198.51.100.7 and a service on port 8081.
//!
//! As root the test builds a world of its own per test and runs warren in
//! it (`ip netns exec`); in the unprivileged modes tests/matrix.sh builds
//! one as root and runs this binary inside it (WARREN_FAKENET=name).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};

use warren_tests::{must_run, skip, warren_command, Env, Mode};

const FAKENET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fakenet/fakenet.sh");

/// The fake internet, and how to run warren in it.
struct World {
    /// Set when this test built the world (root) and removes it on drop.
    owned: Option<String>,
}

impl World {
    fn get(tag: &str) -> Option<World> {
        if std::env::var_os("WARREN_FAKENET").is_some_and(|v| !v.is_empty()) {
            return Some(World { owned: None });
        }
        if Mode::current() != Mode::Root {
            skip("the fake internet needs root to build (tests/matrix.sh runs this binary inside one)");
            return None;
        }
        let name = format!("wn{}{tag}", std::process::id() % 100_000);
        let out = Command::new(FAKENET)
            .args(["up", &name])
            .output()
            .expect("run fakenet.sh");
        if !out.status.success() {
            let why = format!(
                "fakenet.sh up failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!must_run(), "{why}");
            skip(&why);
            return None;
        }
        Some(World { owned: Some(name) })
    }

    /// `warren` inside the world.
    fn warren(&self) -> Command {
        self.inside(warren_command())
    }

    /// `base` run inside the world.
    fn inside(&self, base: Command) -> Command {
        match &self.owned {
            None => base,
            Some(name) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &format!("{name}-w")])
                    .arg(base.get_program());
                c.args(base.get_args());
                c
            }
        }
    }

    /// `warren run` for `user` in `env` with `args` (options), then `sh -c script`.
    fn run(&self, env: &Env, user: &str, args: &[&str], script: &str) -> Output {
        self.warren()
            .args(run_args(env, user))
            .args(args)
            .args(["--", "/bin/sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .expect("spawn warren")
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(name) = &self.owned {
            let _ = Command::new(FAKENET).args(["down", name]).status();
            assert!(
                !std::path::Path::new(&format!("/run/netns/{name}-w")).exists(),
                "the fake internet is removed"
            );
        }
    }
}

fn run_args(env: &Env, user: &str) -> Vec<String> {
    vec![
        "run".into(),
        "--user".into(),
        user.into(),
        "--state-dir".into(),
        env.state_dir().display().to_string(),
        "--workspace-root".into(),
        env.workspace_root().display().to_string(),
    ]
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A shell line printing `<label> ok <body>` or `<label> refused`.
fn fetch(label: &str, url: &str) -> String {
    format!(
        "if b=$(curl -sS --max-time 5 {url} 2>/dev/null); then echo \"{label} ok $b\"; else echo \"{label} refused\"; fi; "
    )
}

/// The lines of `out` as (label, rest).
fn answers(out: &Output) -> std::collections::HashMap<String, String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn have_curl() -> bool {
    if std::path::Path::new("/usr/bin/curl").exists() {
        return true;
    }
    skip("curl is not installed (apt-get install curl)");
    false
}

#[test]
fn public_reaches_the_internet_by_address_and_name_and_nothing_of_the_host_or_private() {
    let Some(world) = World::get("a") else { return };
    if !have_curl() {
        return;
    }
    let env = Env::new();
    let mut script = String::new();
    for (label, url) in [
        ("public_ip", "http://93.184.215.14/"),
        ("public_name", "http://upstream.test/"),
        ("private10", "http://10.0.0.2/"),
        ("private192", "http://192.168.1.2/"),
        ("metadata", "http://169.254.169.254/"),
        ("host_loopback", "http://127.0.0.1:8081/"),
        ("host_addr", "http://198.51.100.7:8081/"),
        ("host_iface_addr", "http://203.0.113.2:8081/"),
    ] {
        script.push_str(&fetch(label, url));
    }
    script.push_str("echo resolv $(cat /etc/resolv.conf | head -1); ");
    script.push_str("echo info $(warren-info | grep '^network'); ");
    let out = world.run(&env, "alice", &["--network", "public"], &script);
    assert!(out.status.success(), "{}", show(&out));
    let a = answers(&out);
    let get = |k: &str| {
        a.get(k)
            .cloned()
            .unwrap_or_else(|| panic!("{k}: {}", show(&out)))
    };
    assert_eq!(
        get("public_ip"),
        "ok hello from upstream at 93.184.215.14",
        "{}",
        show(&out)
    );
    assert_eq!(
        get("public_name"),
        "ok hello from upstream at 93.184.215.14",
        "DNS through the forwarder"
    );
    for refused in [
        "private10",
        "private192",
        "metadata",
        "host_loopback",
        "host_addr",
        "host_iface_addr",
    ] {
        assert_eq!(get(refused), "refused", "{refused}: {}", show(&out));
    }
    assert_eq!(
        get("resolv"),
        "nameserver 169.254.1.1",
        "a synthesized resolv.conf"
    );
    assert!(get("info").contains("network public"), "{}", get("info"));
    assert!(
        get("info").contains("resolver 169.254.1.1"),
        "{}",
        get("info")
    );
}

#[test]
fn the_tenant_cannot_change_the_filter_or_the_network() {
    let Some(world) = World::get("b") else { return };
    if !have_curl() {
        return;
    }
    let env = Env::new();
    let script = format!(
        "nft flush ruleset 2>/dev/null && echo flush done || echo flush failed; \
         ip link set lo down 2>/dev/null && echo lo done || echo lo failed; \
         ip route add 10.0.0.0/8 via 203.0.113.1 2>/dev/null && echo route done || echo route failed; \
         {}{}",
        fetch("private10", "http://10.0.0.2/"),
        fetch("public_ip", "http://93.184.215.14/")
    );
    let out = world.run(&env, "alice", &["--network", "public"], &script);
    assert!(out.status.success(), "{}", show(&out));
    let a = answers(&out);
    for step in ["flush", "lo", "route"] {
        assert_eq!(
            a.get(step).map(String::as_str),
            Some("failed"),
            "{step}: {}",
            show(&out)
        );
    }
    assert_eq!(a["private10"], "refused", "still refused: {}", show(&out));
    assert!(a["public_ip"].starts_with("ok"), "{}", show(&out));
}

#[test]
fn allow_opens_exactly_that_and_deny_closes_more() {
    let Some(world) = World::get("c") else { return };
    if !have_curl() {
        return;
    }
    let env = Env::new();
    let mut script = String::new();
    for (label, url) in [
        ("allowed", "http://10.0.0.2/"),
        ("other_port", "http://10.0.0.2:8080/"),
        ("other_host", "http://192.168.1.2/"),
        ("public80", "http://93.184.215.14/"),
        ("denied", "http://93.184.215.14:8080/"),
    ] {
        script.push_str(&fetch(label, url));
    }
    let args = [
        "--network",
        "public",
        "--network-allow",
        "10.0.0.2:80",
        "--network-deny",
        "93.184.215.14/32:8080",
    ];
    let out = world.run(&env, "alice", &args, &script);
    assert!(out.status.success(), "{}", show(&out));
    let a = answers(&out);
    assert_eq!(
        a["allowed"],
        "ok hello from upstream at 10.0.0.2",
        "{}",
        show(&out)
    );
    assert_eq!(a["other_port"], "refused", "{}", show(&out));
    assert_eq!(a["other_host"], "refused", "{}", show(&out));
    assert!(a["public80"].starts_with("ok"), "{}", show(&out));
    assert_eq!(a["denied"], "refused", "{}", show(&out));

    let bad = world.run(&env, "alice", &["--network-allow", "10.0.0.0/33"], "true");
    assert!(!bad.status.success(), "a bad entry is refused");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("CIDR[:PORTS]"),
        "{}",
        show(&bad)
    );
}

#[test]
fn none_shows_only_loopback_and_is_what_run_gets_by_default() {
    let Some(world) = World::get("d") else { return };
    let env = Env::new();
    for args in [&["--network", "none"][..], &[][..]] {
        let out = world.run(
            &env,
            "alice",
            args,
            "ls /sys/class/net; cat /etc/resolv.conf; warren-info | grep '^network'",
        );
        assert!(out.status.success(), "{}", show(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "lo", "{text}");
        assert!(
            lines[1].starts_with("network") && lines[1].contains("none"),
            "{text}"
        );
    }
}

/// Direct children of `pid`.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| parent(*p) == Some(pid))
        .collect()
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn another_tenants_sandbox_is_unreachable_and_nothing_is_left_behind() {
    let Some(world) = World::get("e") else { return };
    if !have_curl() {
        return;
    }
    let env = Env::new();
    // bob serves on every address of his sandbox, checks he can reach it
    // himself, then waits for us.
    let mut bob = world
        .warren()
        .args(run_args(&env, "bob"))
        .args(["--network", "public", "--", "/bin/sh", "-c"])
        .arg(
            "/usr/bin/python3 -m http.server 8090 --bind 0.0.0.0 >/dev/null 2>&1 & s=$!; \
             for i in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:8090/ && break; sleep 0.1; done; \
             echo bob up; read x; kill $s",
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn warren for bob");
    let mut line = String::new();
    BufReader::new(bob.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "bob up");
    // bob's helper: warren → (ip netns exec execs) → warren-shim → pasta.
    let pasta: Vec<u32> = children(bob.id())
        .into_iter()
        .flat_map(children)
        .filter(|p| comm(*p).starts_with("pasta") || comm(*p).starts_with("passt"))
        .collect();
    assert_eq!(pasta.len(), 1, "bob's sandbox has one pasta");
    // With the helpers pasta forked and never reaped.
    let helpers: Vec<u32> = pasta.iter().copied().chain(children(pasta[0])).collect();

    let mut script = String::new();
    for (label, url) in [
        ("loopback", "http://127.0.0.1:8090/"),
        ("iface", "http://203.0.113.2:8090/"),
        ("host", "http://198.51.100.7:8090/"),
    ] {
        script.push_str(&fetch(label, url));
    }
    let out = world.run(&env, "alice", &["--network", "public"], &script);
    assert!(out.status.success(), "{}", show(&out));
    let a = answers(&out);
    for k in ["loopback", "iface", "host"] {
        assert_eq!(a[k], "refused", "alice reached bob via {k}: {}", show(&out));
    }

    bob.stdin.take().unwrap().write_all(b"done\n").unwrap();
    assert!(bob.wait().unwrap().success());
    // Killed with his sandbox. A one-shot command's shim leaves pasta's
    // teardown to init (docs/network.md), which may take seconds to reap
    // it (CI's init polls every 2 s): dead, a zombie at most.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let running: Vec<u32> = helpers.iter().copied().filter(|p| running(*p)).collect();
        if running.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "bob's pasta outlived his sandbox: {running:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `pid` exists and is not a zombie.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

#[test]
fn the_landlock_tier_reports_public_network_missing_and_require_refuses() {
    if warren_runtime::sys::landlock_abi() == 0 {
        skip("this kernel has no Landlock: the landlock tier cannot run");
        return;
    }
    let env = Env::new();
    let out = warren_command()
        .args(env.run_args("alice", "landlock"))
        .args(["--network", "public", "--", "warren-info"])
        .stdin(Stdio::null())
        .output()
        .expect("spawn warren");
    assert!(out.status.success(), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("network"), "a warning: {stderr}");
    assert!(
        stderr.contains("no network namespace"),
        "with the reason: {stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("network      none"),
        "never the host's network: {stdout}"
    );

    let refused = warren_command()
        .args(env.run_args("alice", "landlock"))
        .args(["--network", "public", "--require-network", "--", "true"])
        .stdin(Stdio::null())
        .output()
        .expect("spawn warren");
    assert!(!refused.status.success(), "{}", show(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("no network namespace"),
        "{}",
        show(&refused)
    );
}

#[test]
fn a_tenants_override_wins_over_the_servers_policy() {
    let Some(world) = World::get("f") else { return };
    if !have_curl() {
        return;
    }
    let env = Env::new();
    let users = |args: &[&str]| {
        let out = world
            .warren()
            .arg("users")
            .args(["--state-dir", &env.state_dir().display().to_string()])
            .args([
                "--workspace-root",
                &env.workspace_root().display().to_string(),
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("spawn warren users");
        assert!(out.status.success(), "{}", show(&out));
        out
    };
    users(&["create", "alice"]);
    users(&[
        "limits",
        "alice",
        r#"{"network": "public", "network_allow": ["10.0.0.2:80"]}"#,
    ]);
    let shown = String::from_utf8_lossy(&users(&["show", "alice"]).stdout).to_string();
    assert!(shown.contains("10.0.0.2/32:80"), "{shown}");
    let script = format!(
        "{}{}",
        fetch("allowed", "http://10.0.0.2/"),
        fetch("public_ip", "http://93.184.215.14/")
    );
    // `run` defaults to none; alice's override gives her public and her entry.
    let out = world.run(&env, "alice", &[], &script);
    assert!(out.status.success(), "{}", show(&out));
    let a = answers(&out);
    assert!(a["allowed"].starts_with("ok"), "{}", show(&out));
    assert!(a["public_ip"].starts_with("ok"), "{}", show(&out));
    // bob has none: the server's default for run.
    let out = world.run(&env, "bob", &[], &script);
    let a = answers(&out);
    assert_eq!(a["public_ip"], "refused", "{}", show(&out));

    let bad = world
        .warren()
        .arg("users")
        .args(["--state-dir", &env.state_dir().display().to_string()])
        .args(["limits", "alice", r#"{"network_allow": ["10.0.0.0/33"]}"#])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        !bad.status.success(),
        "a bad entry is refused: {}",
        show(&bad)
    );
    let shown = String::from_utf8_lossy(&users(&["show", "alice"]).stdout).to_string();
    assert!(shown.contains("10.0.0.2/32:80"), "nothing changed: {shown}");
}

#[test]
fn stats_and_metrics_count_the_bytes_a_sandbox_moved() {
    let Some(world) = World::get("g") else { return };
    if !have_curl() {
        return;
    }
    let env = Env::new();
    let port = 20_000 + std::process::id() % 20_000;
    let base = format!("http://127.0.0.1:{port}");
    let serve = world
        .warren()
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--network",
            "public",
        ])
        .args(["--state-dir", &env.state_dir().display().to_string()])
        .args([
            "--workspace-root",
            &env.workspace_root().display().to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn warren serve");
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = self.0.wait();
        }
    }
    let token_file = env.state_dir().join("admin-token");
    let curl = |args: &[&str]| -> String {
        let token = std::fs::read_to_string(&token_file).unwrap_or_default();
        let mut c = Command::new("curl");
        c.args([
            "-sS",
            "--max-time",
            "60",
            "-H",
            &format!("Authorization: Bearer {}", token.trim()),
        ])
        .args(args);
        let out = world.inside(c).output().expect("run curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut up = false;
    for _ in 0..200 {
        if token_file.exists() && curl(&[&format!("{base}/healthz")]).trim() == "ok" {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let serve_pid = serve.id();
    let _stop = Stop(serve);
    assert!(up, "warren serve (pid {serve_pid}) did not come up");
    let post = |path: &str, body: &str| {
        curl(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            &format!("{base}{path}"),
        ])
    };
    post("/api/users", r#"{"id": "alice"}"#);
    let ran = post(
        "/api/users/alice/exec",
        r#"{"argv": ["curl", "-sS", "-o", "/dev/null", "http://93.184.215.14/bytes/3000000"]}"#,
    );
    assert!(ran.contains(r#""exit_code":0"#), "{ran}");
    let stats: serde_json::Value =
        serde_json::from_str(&curl(&[&format!("{base}/api/users/alice/stats")])).unwrap();
    assert_eq!(stats["record"]["network"]["mode"], "public", "{stats}");
    let received = stats["network"]["received_bytes"].as_u64().unwrap_or(0);
    let sent = stats["network"]["sent_bytes"].as_u64().unwrap_or(0);
    assert!(received >= 3_000_000, "{stats}");
    assert!(sent > 0 && sent < received, "{stats}");
    let metrics = curl(&[&format!("{base}/metrics")]);
    assert!(
        metrics.contains(r#"warren_tenant_network_bytes{user="alice",direction="received"}"#),
        "{metrics}"
    );

    // Deleting alice ends her sandbox: its shim reaps pasta and the
    // helpers pasta forked and never reaped. None of them is ever handed
    // to another parent (init, or the server were it PID 1 of its own pid
    // namespace), where a dead one would linger as a zombie.
    let pasta: Vec<u32> = children(serve_pid)
        .into_iter()
        .flat_map(children)
        .filter(|p| comm(*p).starts_with("pasta") || comm(*p).starts_with("passt"))
        .collect();
    assert_eq!(pasta.len(), 1, "alice's sandbox has one pasta");
    let helpers: Vec<u32> = pasta.iter().copied().chain(children(pasta[0])).collect();
    let ours = [parent(pasta[0]).unwrap(), pasta[0]]; // her shim, pasta
    curl(&["-X", "DELETE", &format!("{base}/api/users/alice")]);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left: Vec<(u32, u32)> = helpers
            .iter()
            .filter_map(|p| Some((*p, parent(*p)?)))
            .collect();
        if left.is_empty() {
            break;
        }
        for (p, ppid) in &left {
            assert!(ours.contains(ppid), "pasta's {p} was handed to {ppid}");
        }
        assert!(
            std::time::Instant::now() < until,
            "alice's pasta outlived her sandbox: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// The parent of `pid`, while it exists (a zombie included).
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
