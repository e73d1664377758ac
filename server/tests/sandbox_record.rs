//! One record of what a sandbox got (`runtime::record`), seen from its
//! three windows: the terminal's `hello` frame, the stats API and
//! `warren-info --json` inside the sandbox must show the same value, in
//! every tier. Real sandboxes: runs where real_sandboxes.rs runs.

mod common;

use std::sync::Arc;

use common::*;
use serde_json::{json, Value};
use warren_domain::sandboxes::SandboxBackend;
use warren_runtime::spec::Isolation;

/// A real-sandbox server of this tier, with the management API.
async fn server_in(d: &Dirs, isolation: Isolation) -> TestServer {
    let backend = SandboxBackend::new(
        d.settings.clone(),
        warren_runtime::cgroups::Limits::default(),
        false,
    )
    .with_shim(shim())
    .with_isolation(isolation);
    TestServer::with(Options {
        backend: Arc::new(backend),
        management: Some(management(d)),
        ..Default::default()
    })
    .await
}

/// The record in a `hello` frame: the frame without its own fields.
fn record_of_hello(hello: &Value) -> Value {
    let mut record = hello.as_object().expect("hello is an object").clone();
    for own in ["type", "protocol", "terminal", "user", "cols", "rows"] {
        record.remove(own);
    }
    Value::Object(record)
}

async fn the_three_agree(isolation: Isolation) {
    let d = dirs();
    let server = server_in(&d, isolation).await;
    let addr = server.addr;
    let r = admin(addr, "POST", "/api/users", Some(json!({"id": "alice"}))).await;
    assert!(r.status == 200 || r.status == 201, "{}", r.text());

    let term = server.open("alice").await;
    let from_hello = record_of_hello(term.hello.as_ref().expect("hello"));

    let stats = admin(addr, "GET", "/api/users/alice/stats", None)
        .await
        .json();
    let from_stats = stats["record"].clone();

    let r = admin(
        addr,
        "POST",
        "/api/users/alice/exec",
        Some(json!({"argv": ["warren-info", "--json"]})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json();
    assert_eq!(out["exit_code"], 0, "{out}");
    let info: Value = serde_json::from_str(out["stdout"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("warren-info --json: {e}: {out}"));
    let from_info = info["sandbox"].clone();

    let tier = isolation.name();
    assert_eq!(from_hello["tier"], tier, "{from_hello}");
    assert_eq!(from_hello, from_stats, "hello and stats differ");
    assert_eq!(from_hello, from_info, "hello and warren-info differ");
    // The stats' own fields are read from the same record.
    assert_eq!(stats["tier"], tier, "{stats}");
    assert_eq!(stats["limits_missing"], from_stats["limits"]["missing"]);
    // What the tier gives is recorded, not assumed.
    match isolation {
        Isolation::None => {
            assert!(from_hello.get("seccomp").is_none(), "{from_hello}");
            assert!(from_hello.get("landlock").is_none(), "{from_hello}");
        }
        _ => {
            assert!(from_hello["seccomp"].is_string(), "{from_hello}");
            assert!(from_hello["landlock"]["abi"].is_u64(), "{from_hello}");
        }
    }
    term.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_stats_and_warren_info_agree_in_the_namespace_tier() {
    the_three_agree(Isolation::Namespaces).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_stats_and_warren_info_agree_in_the_landlock_tier() {
    if warren_runtime::sys::landlock_abi() == 0 {
        let must_run = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
            || std::env::var("WARREN_MUST_RUN").is_ok_and(|v| v == "1");
        assert!(!must_run, "CI requires Landlock for the landlock tier");
        eprintln!("SKIP: this kernel has no Landlock: the landlock tier cannot run");
        return;
    }
    the_three_agree(Isolation::Landlock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_stats_and_warren_info_agree_in_the_none_tier() {
    the_three_agree(Isolation::None).await;
}
