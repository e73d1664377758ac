//! Bad input to the management API and the command line gets a clear 400
//! (or exit code 2) and changes nothing (issue 10, item 9 "odd ids"):
//! ids holding a lone space, a right-to-left override or another
//! invisible character, a limits body that is not an object, an audit
//! page above the maximum. Echo backend: runs anywhere, no root.

mod common;

use std::process::{Command, Stdio};

use common::*;
use serde_json::{json, Value};

/// Ids that look like nothing, or like another id.
const ODD_IDS: &[&str] = &[
    " ",
    "  ",
    " alice",
    "alice ",
    "al\u{202E}ecila",
    "\u{202E}",
    "a\u{200B}b",
    "a\u{00A0}b",
    "\u{FEFF}alice",
    "a\u{2066}b\u{2069}",
    "a\u{E0041}",
    "a\u{3000}b",
    "a\u{180E}b",
    "a\u{FE0F}",
    "a\u{2028}b",
    "a\u{0085}b",
];

fn path_of(id: &str) -> String {
    let mut out = String::new();
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn ids_of(addr: std::net::SocketAddr) -> Vec<Value> {
    let r = admin(addr, "GET", "/api/users", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["users"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_ids_are_refused_with_400_and_create_nothing() {
    let d = dirs();
    let server = TestServer::with(Options {
        management: Some(management(&d)),
        ..Default::default()
    })
    .await;
    let addr = server.addr;
    for id in ODD_IDS {
        let r = admin(addr, "POST", "/api/users", Some(json!({ "id": id }))).await;
        assert_eq!(r.status, 400, "create {id:?}: {}", r.text());
        let e = r.json()["error"].as_str().unwrap().to_string();
        assert!(e.starts_with("invalid user id: "), "{id:?}: {e}");
        let r = admin(addr, "GET", &format!("/api/users/{}", path_of(id)), None).await;
        assert_eq!(r.status, 400, "show {id:?}: {}", r.text());
    }
    let r = admin(
        addr,
        "POST",
        "/api/users",
        Some(json!({"id": "al\u{202E}ecila"})),
    )
    .await;
    assert!(r.text().contains("U+202E"), "{}", r.text());
    let r = admin(addr, "POST", "/api/users", Some(json!({"id": " "}))).await;
    assert!(r.text().contains("space"), "{}", r.text());
    assert!(ids_of(addr).await.is_empty());
    let ws = &d.settings.workspace_root;
    let homes: Vec<_> = std::fs::read_dir(ws)
        .map(|r| r.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(homes.is_empty(), "homes made for refused ids: {homes:?}");
    // Inner spaces and visible non-ASCII stay valid.
    for id in ["Alice Smith", "Zoë", "名前"] {
        let r = admin(addr, "POST", "/api/users", Some(json!({ "id": id }))).await;
        assert_eq!(r.status, 201, "{id:?}: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limits_body_that_is_not_an_object_is_refused() {
    let d = dirs();
    let server = TestServer::with(Options {
        management: Some(management(&d)),
        ..Default::default()
    })
    .await;
    let addr = server.addr;
    admin(addr, "POST", "/api/users", Some(json!({"id": "alice"}))).await;
    let set = json!({"memory_bytes": 268435456, "cpus": "none"});
    let r = admin(addr, "PUT", "/api/users/alice/limits", Some(set)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let before = r.json()["limits"].clone();
    // serde reads a struct from an array too: `[]` was "all defaults" and
    // `[1048576, 2]` set memory and cpus.
    for body in [
        json!([]),
        json!([1048576, 2]),
        json!(null),
        json!(1),
        json!("default"),
        json!(true),
    ] {
        let r = admin(addr, "PUT", "/api/users/alice/limits", Some(body.clone())).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let e = r.json()["error"].as_str().unwrap().to_string();
        assert!(e.contains("must be a JSON object"), "{body}: {e}");
    }
    for (path, body) in [
        ("/api/users", json!([])),
        ("/api/users", json!(["alice"])),
        ("/api/users/alice/exec", json!([["true"]])),
    ] {
        let r = admin(addr, "POST", path, Some(body.clone())).await;
        assert_eq!(r.status, 400, "{path} {body}: {}", r.text());
    }
    let r = admin(addr, "GET", "/api/users/alice", None).await;
    assert_eq!(
        r.json()["limits"],
        before,
        "a refused body changed the limits"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_page_above_the_maximum_is_refused_not_cut() {
    let d = dirs();
    let server = TestServer::with(Options {
        management: Some(management(&d)),
        ..Default::default()
    })
    .await;
    let addr = server.addr;
    for (query, status) in [
        ("limit=1001", 400),
        ("limit=4294967295", 400),
        ("limit=1000", 200),
        ("limit=0", 200),
        ("", 200),
    ] {
        let r = admin(addr, "GET", &format!("/api/audit?{query}"), None).await;
        assert_eq!(r.status, status, "{query}: {}", r.text());
        if status == 400 {
            let e = r.json()["error"].as_str().unwrap().to_string();
            assert!(e.contains("maximum of 1000"), "{query}: {e}");
        }
    }
}

/// The command line refuses the same ids (exit code 2) and creates nothing.
#[test]
fn the_command_line_refuses_odd_ids() {
    let d = dirs();
    let warren = shim().with_file_name("warren");
    for id in [" ", "al\u{202E}ecila", "a\u{200B}b"] {
        let out = Command::new(&warren)
            .arg("users")
            .arg("--state-dir")
            .arg(&d.settings.state_dir)
            .arg("--workspace-root")
            .arg(&d.settings.workspace_root)
            .args(["create", id])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{id:?}: {stderr}");
        assert!(stderr.contains("invalid user id"), "{id:?}: {stderr}");
    }
    assert!(
        !d.settings.workspace_root.exists() || {
            std::fs::read_dir(&d.settings.workspace_root)
                .unwrap()
                .next()
                .is_none()
        }
    );
}
