//! Named services (issue 13, docs/services.md) with real sandboxes: a
//! crashing service restarted with backoff, its logs showing both runs; a
//! service outliving its user's terminals and the idle timeout; enabled
//! services back after a server restart; deleting the user stops them (the
//! process is gone); bad input refused with nothing changed. Runs in every
//! mode of tests/matrix.sh.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use warren_domain::sandboxes::SandboxBackend;
use warren_domain::sessions::SessionLimits;

/// A real-sandbox server with the management API and these session limits.
async fn server(d: &Dirs, limits: SessionLimits) -> TestServer {
    let backend = SandboxBackend::new(
        d.settings.clone(),
        warren_runtime::cgroups::Limits::default(),
        false,
    )
    .with_shim(shim());
    TestServer::with(Options {
        backend: Arc::new(backend),
        management: Some(management(d)),
        limits,
        ..Default::default()
    })
    .await
}

async fn show(s: &TestServer, user: &str, name: &str) -> Value {
    let r = admin(
        s.addr,
        "GET",
        &format!("/api/users/{user}/services/{name}"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

async fn logs(s: &TestServer, user: &str, name: &str) -> String {
    let r = admin(
        s.addr,
        "GET",
        &format!("/api/users/{user}/services/{name}/logs"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

async fn until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn create(s: &TestServer, user: &str, body: Value) -> Value {
    let r = admin(
        s.addr,
        "POST",
        &format!("/api/users/{user}/services"),
        Some(body),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

async fn sh(s: &TestServer, user: &str, script: &str) -> String {
    let r = admin(
        s.addr,
        "POST",
        &format!("/api/users/{user}/exec"),
        Some(json!({"argv": ["sh", "-c", script], "timeout_secs": 60})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["exit_code"], 0, "{script}: {v}");
    v["stdout"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_crashing_service_is_restarted_with_backoff_and_its_logs_show_both_runs() {
    let d = dirs();
    let s = server(&d, SessionLimits::default()).await;
    new_user(&s, "alice").await;
    let v = create(
        &s,
        "alice",
        json!({"name": "web", "port": 8001,
               "argv": ["sh", "-c", "echo run as $(id -un) port=$PORT in $(pwd); exit 3"]}),
    )
    .await;
    assert_eq!(v["cwd"], "sandboxes/web");
    let again = admin(
        s.addr,
        "POST",
        "/api/users/alice/services",
        Some(json!({"name": "web", "argv": ["true"]})),
    )
    .await;
    assert_eq!(again.status, 409, "{}", again.text());

    until("two runs", || async {
        logs(&s, "alice", "web").await.matches("run as").count() >= 2
    })
    .await;
    let log = logs(&s, "alice", "web").await;
    assert!(
        log.contains("run as alice port=8001 in /workspace/alice/sandboxes/web"),
        "{log}"
    );
    assert!(log.contains("exited with code 3"), "{log}");
    assert!(log.contains("restarting in 1s"), "{log}");
    let v = show(&s, "alice", "web").await;
    assert!(v["restarts"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(v["last_exit"]["exit_code"], 3, "{v}");
    // The tail by size.
    let r = admin(
        s.addr,
        "GET",
        "/api/users/alice/services/web/logs?bytes=5",
        None,
    )
    .await;
    assert_eq!(r.body.len(), 5);

    // The directory was made in the home, as alice.
    let owner = sh(&s, "alice", "stat -c %U sandboxes/web").await;
    assert_eq!(owner.trim(), "alice");

    let r = admin(s.addr, "POST", "/api/users/alice/services/web/stop", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "stopped");
    assert_eq!(r.json()["enabled"], false);
    let r = admin(s.addr, "DELETE", "/api/users/alice/services/web", None).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = admin(s.addr, "GET", "/api/users/alice/services/web", None).await;
    assert_eq!(r.status, 404, "{}", r.text());
    let audit = admin(s.addr, "GET", "/api/audit?user=alice", None)
        .await
        .text();
    for action in ["service.create", "service.stop", "service.delete"] {
        assert!(audit.contains(action), "{action}: {audit}");
    }
}

#[tokio::test]
async fn a_service_survives_its_users_terminals_and_the_idle_timeout_and_a_server_restart() {
    let d = dirs();
    let limits = SessionLimits {
        idle_timeout: Duration::from_millis(500),
        terminal_grace: Duration::from_millis(200),
        ..Default::default()
    };
    let s = server(&d, limits).await;
    new_user(&s, "alice").await;
    // A heartbeat in the home: the file's count grows while it runs.
    create(
        &s,
        "alice",
        json!({"name": "beat", "restart": "always",
               "argv": ["sh", "-c", "echo up; while :; do echo x >> beats; sleep 0.2; done"]}),
    )
    .await;
    let term = s.open("alice").await;
    term.close().await;
    until("running", || async {
        logs(&s, "alice", "beat").await.contains("up")
    })
    .await;
    // Its terminal gone, then well past the idle timeout.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let v = show(&s, "alice", "beat").await;
    assert_eq!(v["state"], "running", "{v}");
    assert_eq!(v["restarts"], 0, "never stopped: {v}");
    let stats = admin(s.addr, "GET", "/api/users/alice/stats", None)
        .await
        .json();
    assert_eq!(
        stats["services"],
        json!([{"name": "beat", "state": "running", "restarts": 0}]),
        "{stats}"
    );
    let metrics = admin(s.addr, "GET", "/metrics", None).await.text();
    assert!(
        metrics.contains("warren_services{state=\"running\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("warren_service_restarts{user=\"alice\",service=\"beat\"} 0"),
        "{metrics}"
    );
    assert_eq!(stats["sandbox"], "running", "{stats}");
    assert_eq!(stats["terminals"], 0, "{stats}");
    // In alice's sandbox: its pid namespace shows the service's loop, run
    // as alice.
    let ps = sh(&s, "alice", "ps -o user=,args= ax | grep '[w]hile'").await;
    assert!(ps.trim_start().starts_with("alice"), "{ps}");
    let beats = d.settings.workspace_root.join("alice/sandboxes/beat/beats");
    let count = || {
        std::fs::read_to_string(&beats)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let before = count();
    tokio::time::sleep(Duration::from_secs(1)).await;
    if nix::unistd::geteuid().is_root()
        || std::fs::read_dir(d.settings.workspace_root.join("alice")).is_ok()
    {
        assert!(count() > before, "still beating");
    }

    // A server restart on the same state: the enabled service runs again.
    s.shutdown(Duration::from_secs(30)).await;
    // Stopped with the server: nothing beats until the next one starts.
    let stopped_at = count();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(count(), stopped_at, "the service ended with the server");
    let s = server(&d, limits).await;
    until("back after the restart", || async {
        show(&s, "alice", "beat").await["state"] == "running"
    })
    .await;
    let out = sh(&s, "alice", "sleep 1; wc -l < sandboxes/beat/beats").await;
    let now: usize = out.trim().parse().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later: usize = sh(&s, "alice", "wc -l < sandboxes/beat/beats")
        .await
        .trim()
        .parse()
        .unwrap();
    assert!(later > now, "beating again: {now} then {later}");

    // Deleting the user stops it: the heartbeat ends (the home is kept).
    let r = admin(s.addr, "DELETE", "/api/users/alice", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    new_user(&s, "alice").await;
    let r = admin(s.addr, "GET", "/api/users/alice/services", None).await;
    assert_eq!(r.json()["services"], json!([]), "{}", r.text());
    let a: usize = sh(&s, "alice", "wc -l < sandboxes/beat/beats")
        .await
        .trim()
        .parse()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let out = sh(
        &s,
        "alice",
        "wc -l < sandboxes/beat/beats; ps ax | grep -c '[w]hile'; true",
    )
    .await;
    let mut lines = out.lines().map(|l| l.trim().parse::<usize>().unwrap());
    let (b, loops) = (lines.next().unwrap(), lines.next().unwrap());
    assert_eq!(a, b, "nothing beats after the delete");
    assert_eq!(loops, 0, "no service left in the new sandbox");
}

/// `?follow=1`: the tail, then what the service prints afterwards, as it
/// comes (chunked), on one open response.
#[tokio::test]
async fn logs_follow_streams_the_output_as_it_comes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let d = dirs();
    let s = server(&d, SessionLimits::default()).await;
    new_user(&s, "alice").await;
    create(
        &s,
        "alice",
        json!({"name": "ticker",
               "argv": ["sh", "-c", "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.3; done"]}),
    )
    .await;
    until("ticking", || async {
        logs(&s, "alice", "ticker").await.contains("tick 1\n")
    })
    .await;
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "GET /api/users/alice/services/ticker/logs?follow=1 HTTP/1.1\r\nHost: {}\r\n\
         Authorization: Bearer {ADMIN_TOKEN}\r\n\r\n",
        s.addr
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 4096];
    // Wait for a tick number larger than any in the tail.
    let tail_last = logs(&s, "alice", "ticker").await.matches("tick ").count();
    loop {
        let text = String::from_utf8_lossy(&seen).to_string();
        if text.contains(&format!("tick {}\n", tail_last + 3)) {
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
            assert!(
                text.to_ascii_lowercase()
                    .contains("transfer-encoding: chunked"),
                "{text}"
            );
            assert!(text.contains("tick 1\n"), "the tail comes first: {text}");
            break;
        }
        assert!(Instant::now() < deadline, "no live output: {text}");
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
            .await
            .expect("output within 10 s")
            .unwrap();
        assert!(n > 0, "the follow ended early: {text}");
        seen.extend_from_slice(&buf[..n]);
    }
    // Deleting the service ends its followers.
    let r = admin(s.addr, "DELETE", "/api/users/alice/services/ticker", None).await;
    assert_eq!(r.status, 204);
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if buf.windows(5).any(|w| w == b"\r\n0\r\n") {
                        return;
                    }
                }
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the follow ends with its service");
}

#[tokio::test]
async fn bad_services_get_400_and_change_nothing() {
    let d = dirs();
    let s = server(&d, SessionLimits::default()).await;
    new_user(&s, "alice").await;
    let bad = [
        json!({"name": "../x", "argv": ["true"]}),
        json!({"name": "a b", "argv": ["true"]}),
        json!({"name": "", "argv": ["true"]}),
        json!({"name": "web", "argv": ["true"], "cwd": "../bob"}),
        json!({"name": "web", "argv": ["true"], "cwd": "/etc"}),
        json!({"name": "web", "argv": []}),
        json!({"name": "web", "argv": ["x".repeat(70_000)]}),
        json!({"name": "web", "argv": ["true"], "env": {"BIG": "x".repeat(70_000)}}),
        json!({"name": "web", "argv": ["true"], "env": {"A=B": "x"}}),
        json!({"name": "web", "argv": ["true"], "restart": "sometimes"}),
        json!({"name": "web", "argv": ["true"], "port": 70000}),
        json!({"name": "web", "argv": ["true"], "unknown": 1}),
    ];
    for b in bad {
        let r = admin(s.addr, "POST", "/api/users/alice/services", Some(b.clone())).await;
        assert_eq!(r.status, 400, "{b}: {}", r.text());
    }
    let r = admin(s.addr, "GET", "/api/users/alice/services", None).await;
    assert_eq!(r.json()["services"], json!([]));
    let r = admin(s.addr, "GET", "/api/users/alice/services/..", None).await;
    assert!(r.status == 400 || r.status == 404, "{}", r.text());
    let r = admin(
        s.addr,
        "POST",
        "/api/users/bob/services",
        Some(json!({"name": "web", "argv": ["true"]})),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    let audit = admin(s.addr, "GET", "/api/audit?user=alice", None)
        .await
        .text();
    assert!(!audit.contains("service."), "{audit}");
}

/// `warren services ...` talks to the running server with the admin token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_manages_services_through_the_server() {
    let d = dirs();
    let s = server(&d, SessionLimits::default()).await;
    new_user(&s, "alice").await;
    let token = d.settings.state_dir.join("cli-admin-token");
    std::fs::write(&token, ADMIN_TOKEN).unwrap();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
            .arg("services")
            .arg("--url")
            .arg(format!("http://{}", s.addr))
            .arg("--admin-token-file")
            .arg(&token)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let run = |args: Vec<String>| {
        let cli = &cli;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            tokio::task::block_in_place(|| cli(&args))
        }
    };
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (code, out, err) = run(v(&[
        "create",
        "alice",
        "hello",
        "--port",
        "9000",
        "-e",
        "WHO=cli",
        "--",
        "sh",
        "-c",
        "echo hello $WHO on $PORT; sleep 60",
    ]))
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("\"name\": \"hello\""), "{out}");
    until("output", || async {
        logs(&s, "alice", "hello")
            .await
            .contains("hello cli on 9000")
    })
    .await;
    let (code, out, _) = run(v(&["list", "alice"])).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("hello") && out.contains("running"), "{out}");
    let (code, out, _) = run(v(&["logs", "alice", "hello"])).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("hello cli on 9000"), "{out}");
    let (code, _, err) = run(v(&["create", "alice", "bad/name", "--", "true"])).await;
    assert_eq!(code, Some(1));
    assert!(
        err.contains("400") && err.contains("invalid service name"),
        "{err}"
    );
    let (code, out, err) = run(v(&["stop", "alice", "hello"])).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("\"state\": \"stopped\""), "{out}");
    let (code, _, err) = run(v(&["delete", "alice", "hello"])).await;
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = run(v(&["show", "alice", "hello"])).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("404"), "{err}");
}

/// `--services-keep-alive false`: an idle sandbox stops with its service
/// in it, and the service starts again with the user's next sandbox.
#[tokio::test]
async fn without_keep_alive_a_service_stops_with_its_idle_sandbox_and_comes_back_with_the_next() {
    let d = dirs();
    let backend = SandboxBackend::new(
        d.settings.clone(),
        warren_runtime::cgroups::Limits::default(),
        false,
    )
    .with_shim(shim());
    let mut m = management(&d);
    m.services.keep_alive = false;
    let s = TestServer::with(Options {
        backend: Arc::new(backend),
        management: Some(m),
        limits: SessionLimits {
            idle_timeout: Duration::from_millis(500),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    new_user(&s, "alice").await;
    create(
        &s,
        "alice",
        json!({"name": "nap", "argv": ["sh", "-c", "echo up; sleep 600"]}),
    )
    .await;
    until("stopped with its idle sandbox", || async {
        let v = show(&s, "alice", "nap").await;
        v["state"] == "stopped" && v["last_exit"]["reason"] == "sandbox_stopped"
    })
    .await;
    let v = show(&s, "alice", "nap").await;
    assert!(v["enabled"].as_bool().unwrap(), "still enabled: {v}");
    // The service ends with PID 1; its shim then removes the cgroup and
    // reaps pasta (tens of ms) while the registry holds the user's start
    // lock, which stats read as `starting`.
    until("the sandbox stopped", || async {
        let stats = admin(s.addr, "GET", "/api/users/alice/stats", None)
            .await
            .json();
        stats["sandbox"] == "stopped"
    })
    .await;
    // The next sandbox (a command) brings it back.
    sh(&s, "alice", "true").await;
    until("running again", || async {
        show(&s, "alice", "nap").await["state"] == "running"
    })
    .await;
    // Its output reaches the log a moment after it runs.
    until("both runs in its log", || async {
        logs(&s, "alice", "nap").await.matches("up\n").count() == 2
    })
    .await;
    assert_eq!(logs(&s, "alice", "nap").await.matches("up\n").count(), 2);
}
