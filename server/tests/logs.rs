//! Logs (issue 16): no ANSI colour when stderr is not a terminal (a file,
//! a pipe, journald), and `--log-format json` writes one JSON object a line.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `warren serve` (echo backend) with `extra` flags and env, asks
/// for a page that does not exist (logged at debug level), and returns
/// everything it wrote to stderr up to that log line.
fn serve_and_log(extra: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warren"));
    cmd.args([
        "serve",
        "--backend",
        "echo",
        "--listen",
        "127.0.0.1:0",
        "--auth",
        "none",
    ])
    .args(extra)
    .env("WARREN_STATE_DIR", dir.path().join("state"))
    .env("WARREN_WORKSPACE_ROOT", dir.path().join("ws"))
    .env("WARREN_LOG", "debug")
    .env_remove("NO_COLOR")
    .env_remove("WARREN_LOG_FORMAT")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut all = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut asked = false;
    loop {
        assert!(Instant::now() < deadline, "no log line in 30 s:\n{all}");
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("warren serve ended:\n{all}");
        }
        all.push_str(&line);
        if !asked && line.contains("listening on http://") {
            let addr = line
                .split("http://")
                .nth(1)
                .unwrap()
                .split([' ', '/'])
                .next()
                .unwrap()
                .to_string();
            let mut s = TcpStream::connect(&addr).unwrap();
            write!(
                s,
                "GET /no-such-page HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).unwrap();
            asked = true;
        }
        if asked && line.contains("no-such-page") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    all
}

#[test]
fn no_colour_when_stderr_is_not_a_terminal() {
    let text = serve_and_log(&[], &[]);
    assert!(
        !text.contains('\x1b'),
        "escape sequences in a pipe:\n{text:?}"
    );
    assert!(text.contains("DEBUG"), "{text}");
}

#[test]
fn json_logs_are_one_object_a_line() {
    let text = serve_and_log(&["--log-format", "json"], &[]);
    let line = text
        .lines()
        .find(|l| l.contains("no-such-page"))
        .expect("the request's log line");
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(v["level"], "DEBUG", "{v}");
    assert_eq!(v["fields"]["path"], "/no-such-page", "{v}");
    // The env variable does the same.
    let text = serve_and_log(&[], &[("WARREN_LOG_FORMAT", "json")]);
    let line = text.lines().find(|l| l.contains("no-such-page")).unwrap();
    assert!(
        serde_json::from_str::<serde_json::Value>(line).is_ok(),
        "{line}"
    );
}

#[test]
fn the_token_mode_banner_says_anyone_with_the_link_picks_any_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args([
            "serve",
            "--backend",
            "echo",
            "--listen",
            "127.0.0.1:0",
            "--auth",
            "token",
        ])
        .env("WARREN_STATE_DIR", dir.path().join("state"))
        .env("WARREN_WORKSPACE_ROOT", dir.path().join("ws"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut banner = String::new();
    // The banner is a few lines; the warning ends the login part.
    for _ in 0..50 {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 || banner.contains("any user name") {
            break;
        }
        banner.push_str(&line);
    }
    let _ = child.kill();
    let _ = child.wait();
    let after_url = banner.split("/login?token=").nth(1).unwrap_or_default();
    assert!(
        after_url.contains("Anyone with this link can open a shell as any user name")
            && after_url.contains("--auth jwt"),
        "{banner}"
    );
}
