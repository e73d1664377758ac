//! This node in a pool behind a load balancer (docs/scale-out.md): the
//! agent-check port's replies as HAProxy reads them, `GET`/`PUT /api/node`
//! and the `X-Warren-Node` header. Echo backend: runs in every mode.

mod common;

use std::net::SocketAddr;

use common::*;
use serde_json::json;
use tokio::io::AsyncReadExt;
use warren::web::NodeConfig;
use warren_domain::node::NodeSettings;

async fn node_server(d: &Dirs, max_users: usize) -> TestServer {
    TestServer::with(Options {
        management: Some(management(d)),
        node: NodeConfig {
            settings: NodeSettings {
                id: Some("node-a".into()),
                max_users: Some(max_users),
                state_file: None,
            },
            agent_listen: Some("127.0.0.1:0".parse().unwrap()),
        },
        ..Default::default()
    })
    .await
}

/// What HAProxy's agent check reads: one line, then the close.
async fn agent_says(addr: SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        s.read_to_string(&mut reply),
    )
    .await
    .expect("the agent closes after its line")
    .unwrap();
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reports_weight_then_drain_when_full_or_draining() {
    let d = dirs();
    let server = node_server(&d, 2).await;
    let agent = server.agent.expect("agent port");

    let reply = agent_says(agent).await;
    assert!(
        reply.starts_with("up ready ") && reply.ends_with("%\n"),
        "{reply:?}"
    );
    let empty: u32 = reply["up ready ".len()..reply.len() - 2].parse().unwrap();
    let r = admin(server.addr, "GET", "/api/node", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let node = r.json();
    assert_eq!(node["id"], "node-a");
    assert_eq!(node["state"], "active");
    assert_eq!(node["accepting"], true);
    assert_eq!(node["users"], json!({"used": 0, "max": 2}));

    // One user of two: half the headroom, so a lighter weight.
    let r = admin(
        server.addr,
        "POST",
        "/api/users",
        Some(json!({"id": "alice"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let reply = agent_says(agent).await;
    let half: u32 = reply["up ready ".len()..reply.len() - 2].parse().unwrap();
    assert!(half < empty && half >= 1, "{half} vs {empty}");

    // Full: drain, and the API says why.
    admin(
        server.addr,
        "POST",
        "/api/users",
        Some(json!({"id": "bob"})),
    )
    .await;
    assert_eq!(agent_says(agent).await, "drain\n");
    let node = admin(server.addr, "GET", "/api/node", None).await.json();
    assert_eq!(node["accepting"], false);
    assert_eq!(node["closed_reason"], "users_full");
    assert_eq!(node["agent_reply"], "drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_drains_and_undrains_the_node() {
    let d = dirs();
    let server = node_server(&d, 100).await;
    let agent = server.agent.expect("agent port");

    let r = admin(
        server.addr,
        "PUT",
        "/api/node",
        Some(json!({"state": "draining"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "draining");
    assert_eq!(r.json()["closed_reason"], "draining");
    assert_eq!(agent_says(agent).await, "drain\n");

    // Bad input changes nothing.
    for bad in [
        json!({"state": "off"}),
        json!({}),
        json!({"state": "active", "extra": 1}),
    ] {
        let r = admin(server.addr, "PUT", "/api/node", Some(bad.clone())).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    let node = admin(server.addr, "GET", "/api/node", None).await.json();
    assert_eq!(node["state"], "draining");

    // Only the admin token.
    let r = api(
        server.addr,
        "PUT",
        "/api/node",
        None,
        Some(json!({"state": "active"}).to_string().into_bytes()),
    )
    .await;
    assert_eq!(r.status, 401);
    let session = server.login("mallory").await;
    let r = api(
        server.addr,
        "PUT",
        "/api/node",
        Some(&session),
        Some(json!({"state": "active"}).to_string().into_bytes()),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(agent_says(agent).await, "drain\n");

    let r = admin(
        server.addr,
        "PUT",
        "/api/node",
        Some(json!({"state": "active"})),
    )
    .await;
    assert_eq!(r.json()["state"], "active");
    assert!(agent_says(agent).await.starts_with("up ready "));

    // The change is audited.
    let log = admin(server.addr, "GET", "/api/audit?action=node.state", None)
        .await
        .json();
    assert!(log.to_string().contains("draining"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_names_the_node() {
    let d = dirs();
    let server = node_server(&d, 10).await;
    let r = http_get(server.addr, "/healthz", &[]).await;
    assert_eq!(r.header("x-warren-node"), Some("node-a"));
    let r = http_get(server.addr, "/no-such-page", &[]).await;
    assert_eq!(r.header("x-warren-node"), Some("node-a"));
    // Without an id, no header.
    let plain = TestServer::start().await;
    let r = http_get(plain.addr, "/healthz", &[]).await;
    assert_eq!(r.header("x-warren-node"), None);
}

/// `warren node` drives the running server's `/api/node`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warren_node_drains_and_undrains_the_running_server() {
    let d = dirs();
    let server = node_server(&d, 10).await;
    let agent = server.agent.expect("agent port");
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), format!("{ADMIN_TOKEN}\n")).unwrap();
    let run = |args: &'static [&'static str]| {
        let url = format!("http://{}", server.addr);
        let token = token.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
                .arg("node")
                .args(args)
                .arg("--url")
                .arg(url)
                .arg("--admin-token-file")
                .arg(token)
                .output()
                .unwrap()
        })
    };
    let out = run(&["drain"]).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "draining");
    assert_eq!(agent_says(agent).await, "drain\n");
    let out = run(&["undrain"]).await.unwrap();
    assert!(out.status.success());
    assert!(agent_says(agent).await.starts_with("up ready "));
    let out = run(&["show"]).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["id"], "node-a");
    assert_eq!(v["state"], "active");

    // A wrong token: a clear error, nothing changed.
    std::fs::write(token.path(), "not-the-admin-token-0123456789abcdef").unwrap();
    let out = run(&["drain"]).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let node = admin(server.addr, "GET", "/api/node", None).await.json();
    assert_eq!(node["state"], "active");
}

/// A drained node that restarts is still draining: it must not take new
/// users before the operator says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_survives_a_restart() {
    let d = dirs();
    let state_file = d.settings.state_dir.join("node-state");
    let start = || {
        TestServer::with(Options {
            management: Some(management(&d)),
            node: NodeConfig {
                settings: NodeSettings {
                    id: Some("node-a".into()),
                    max_users: None,
                    state_file: Some(state_file.clone()),
                },
                agent_listen: Some("127.0.0.1:0".parse().unwrap()),
            },
            ..Default::default()
        })
    };
    let server = start().await;
    let r = admin(
        server.addr,
        "PUT",
        "/api/node",
        Some(json!({"state": "draining"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    server.shutdown(std::time::Duration::from_secs(10)).await;

    let server = start().await;
    let node = admin(server.addr, "GET", "/api/node", None).await.json();
    assert_eq!(node["state"], "draining");
    assert_eq!(agent_says(server.agent.unwrap()).await, "drain\n");
}
