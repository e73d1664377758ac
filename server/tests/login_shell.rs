//! `warren-info` in the web terminal (issue 16): the terminal's login
//! shell (`bash -l`, whose /etc/profile resets PATH) and a non-login shell
//! find it in every tier, and `container-info` answers too where the
//! sandbox has its own /opt/warren/bin (the namespaces tier). Runs in every
//! mode of tests/matrix.sh.

mod common;

use common::*;
use warren_runtime::spec::Isolation;

async fn facts_in(tier: Isolation, names: &[&str]) {
    let d = dirs();
    let server = sandbox_server_in(&d, tier).await;
    let mut t = server.open("infoseeker").await;
    for name in names {
        for shell in ["", "bash -c "] {
            let line = if shell.is_empty() {
                format!("{name}; echo E''ND")
            } else {
                format!("{shell}'{name}'; echo E''ND")
            };
            let out = t.run(&line, "END").await;
            assert!(!out.contains("not found"), "{tier:?} {line}: {out}");
            assert!(
                out.contains("infoseeker"),
                "{tier:?} {line}: no user in {out}"
            );
            assert!(
                out.contains(&tier.to_string()),
                "{tier:?} {line}: no tier in {out}"
            );
        }
    }
    t.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warren_info_and_container_info_in_the_namespaces_tier() {
    facts_in(Isolation::Namespaces, &["warren-info", "container-info"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warren_info_in_the_shared_host_tiers() {
    facts_in(Isolation::None, &["warren-info"]).await;
    if warren_runtime::sys::landlock_abi() == 0 {
        let must_run = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
            || std::env::var("WARREN_MUST_RUN").is_ok_and(|v| v == "1");
        assert!(!must_run, "CI requires Landlock for the landlock tier");
        eprintln!("SKIP: this kernel has no Landlock: the landlock tier cannot run");
        return;
    }
    facts_in(Isolation::Landlock, &["warren-info"]).await;
}

/// `--shell` (issue 16): the operator's command line instead of `bash -l`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_shell_replaces_bash_l() {
    let d = dirs();
    let check =
        "ps -o args= -p $$; shopt -q login_shell && echo LOGIN-\"$0\" || echo NOTLOGIN-\"$0\"";
    // The default: a login bash.
    let server = sandbox_server(&d).await;
    let mut t = server.open("sheller").await;
    let out = t.run(&format!("{check}; echo E''ND"), "END").await;
    assert!(out.contains("\nLOGIN-/bin/bash"), "{out}");
    t.close().await;
    drop(server);
    // `--shell "bash --norc"`.
    let backend = warren_domain::sandboxes::SandboxBackend::new(
        d.settings.clone(),
        warren_runtime::cgroups::Limits::default(),
        false,
    )
    .with_shim(shim())
    .with_shell(warren_domain::sandboxes::parse_shell("bash --norc").unwrap());
    let server = TestServer::with(Options {
        backend: std::sync::Arc::new(backend),
        ..Default::default()
    })
    .await;
    let mut t = server.open("sheller").await;
    let out = t.run(&format!("{check}; echo E''ND"), "END").await;
    assert!(
        out.contains("NOTLOGIN-bash") && out.contains("bash --norc"),
        "{out}"
    );
    t.close().await;
}

/// A tenant's own shell (`PUT /api/users/{user}/shell`) wins over the
/// server's from their next sandbox on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_shell_replaces_the_servers() {
    let d = dirs();
    let server = api_server(&d).await;
    let r = admin(
        server.addr,
        "POST",
        "/api/users",
        Some(serde_json::json!({"id": "zshfan"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = admin(
        server.addr,
        "PUT",
        "/api/users/zshfan/shell",
        Some(serde_json::json!({"shell": "bash --norc"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["shell"], "bash --norc");
    let mut t = server.open("zshfan").await;
    let out = t
        .run(
            "ps -o args= -p $$; shopt -q login_shell || echo NOTLOGIN-\"$0\"; echo E''ND",
            "END",
        )
        .await;
    assert!(
        out.contains("NOTLOGIN-bash") && out.contains("bash --norc"),
        "{out}"
    );
    t.close().await;
}
