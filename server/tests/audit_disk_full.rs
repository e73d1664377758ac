//! Issue 10, item 9: audit entries written while the state disk was full
//! were lost with only an error line. The state directory here is a small
//! tmpfs filled to the last byte: the entries are held, counted in
//! `/metrics`, and written, in order and with their own times, once there
//! is room again, without any new request. Needs root (it mounts the
//! tmpfs); runs in the matrix's root mode.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A tmpfs mounted for the test, unmounted (lazily) on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("warren-test-audit")
            .arg(at)
            .status()
            .unwrap();
        assert!(ok.success(), "mount tmpfs on {}", at.display());
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes until the file system says ENOSPC.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc_enospc()) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    let _ = f.sync_all();
}

fn libc_enospc() -> i32 {
    nix::errno::Errno::ENOSPC as i32
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

async fn metrics(addr: std::net::SocketAddr) -> String {
    let r = admin(addr, "GET", "/metrics", None).await;
    assert_eq!(r.status, 200);
    r.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_entries_survive_a_full_state_disk() {
    if !nix::unistd::geteuid().is_root() {
        let must = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
            || std::env::var("WARREN_MUST_RUN").is_ok_and(|v| v == "1");
        assert!(
            !must,
            "CI requires root for the full-disk audit test (it mounts a tmpfs)"
        );
        eprintln!("SKIP: not root: cannot mount the tmpfs that plays the full state disk");
        return;
    }
    let d = dirs();
    let mnt = d.settings.state_dir.parent().unwrap().join("state-disk");
    let _disk = Tmpfs::mount(&mnt, "2m");
    let mut settings = d.settings.clone();
    settings.state_dir = mnt.join("state");
    let mut m = management(&d);
    m.settings = settings;
    let server = TestServer::with(Options {
        management: Some(m),
        ..Default::default()
    })
    .await;
    let addr = server.addr;
    assert_eq!(
        admin(
            addr,
            "POST",
            "/api/users",
            Some(serde_json::json!({"id": "alice"}))
        )
        .await
        .status,
        201
    );
    let filler = mnt.join("filler");
    fill(&filler);

    // Refused logins are audited after the answer (auth.failed); each
    // names its path.
    const N: usize = 300;
    for i in 0..N {
        let r = api(addr, "GET", &format!("/api/users/u{i}"), None, None).await;
        assert_eq!(r.status, 401);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pending = 0.0;
    while Instant::now() < deadline {
        pending = metric(&metrics(addr).await, "warren_audit_pending");
        if pending > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        pending > 0.0,
        "the full disk never refused an audit entry: the test proves nothing"
    );
    assert_eq!(
        metric(&metrics(addr).await, "warren_audit_dropped_total"),
        0.0
    );

    // Room again: the server's periodic retry writes the held entries
    // without any new request.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        pending = metric(&metrics(addr).await, "warren_audit_pending");
        if pending == 0.0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(pending, 0.0, "held audit entries were never written");
    let mut entries: Vec<Value> = Vec::new();
    let mut after = 0;
    loop {
        let page = admin(
            addr,
            "GET",
            &format!("/api/audit?action=auth.failed&after={after}&limit=1000"),
            None,
        )
        .await
        .json();
        let page = page["entries"].as_array().unwrap().clone();
        let Some(last) = page.last() else { break };
        after = last["seq"].as_i64().unwrap();
        entries.extend(page);
    }
    let paths: Vec<String> = entries
        .iter()
        .map(|e| e["detail"]["path"].as_str().unwrap().to_string())
        .collect();
    let mut want: Vec<String> = (0..N).map(|i| format!("/api/users/u{i}")).collect();
    // The refusals are audited from blocking tasks, so their order may
    // differ from the requests'; every one is there exactly once.
    let mut got = paths.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want, "audit entries lost or doubled");
    let times: Vec<i64> = entries
        .iter()
        .map(|e| e["at_ms"].as_i64().unwrap())
        .collect();
    assert!(times.iter().all(|t| *t > 0));
    assert_eq!(
        metric(&metrics(addr).await, "warren_audit_dropped_total"),
        0.0
    );
}
