//! Regressions for what the API fuzzer (tests/fuzz/api.sh) found, against
//! real sandboxes. Runs in every mode of tests/matrix.sh.

mod common;

use common::*;
use serde_json::json;

/// A pids limit below 3 left no room for a command beside the sandbox's
/// PID 1 and the shim joining it: every exec after it answered 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pids_limit_too_small_to_run_anything_is_refused() {
    let d = dirs();
    let server = api_server(&d).await;
    let addr = server.addr;
    let r = admin(addr, "POST", "/api/users", Some(json!({"id": "pids"}))).await;
    assert_eq!(r.status, 201, "{}", r.text());
    // Below 3 nothing runs; above the kernel's most (2^22) pids.max refuses
    // the write and no sandbox starts.
    for pids in [1u64, 2, (1 << 22) + 1, 14903877307169396] {
        let r = admin(
            addr,
            "PUT",
            "/api/users/pids/limits",
            Some(json!({ "pids": pids })),
        )
        .await;
        assert_eq!(r.status, 400, "pids {pids}: {}", r.text());
        assert!(r.text().contains("pids"), "{}", r.text());
    }
    let r = admin(addr, "GET", "/api/users/pids", None).await;
    assert_eq!(r.json()["limits"]["pids"], "default", "nothing changed");
    let r = admin(
        addr,
        "PUT",
        "/api/users/pids/limits",
        Some(json!({"pids": 3})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = admin(
        addr,
        "POST",
        "/api/users/pids/exec",
        Some(json!({"argv": ["sh", "-c", "echo hi"]})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["stdout"], "hi\n", "{}", r.text());
}

/// A command that is not there exits 127, however its failure and its
/// start race to be reported (one in many answered 500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_command_exits_127_every_time() {
    let d = dirs();
    let server = api_server(&d).await;
    let addr = server.addr;
    let r = admin(addr, "POST", "/api/users", Some(json!({"id": "nocmd"}))).await;
    assert_eq!(r.status, 201, "{}", r.text());
    for n in 0..20 {
        let r = admin(
            addr,
            "POST",
            "/api/users/nocmd/exec",
            Some(json!({"argv": [format!("no-such-command-{n}")]})),
        )
        .await;
        assert_eq!(r.status, 200, "try {n}: {}", r.text());
        assert_eq!(r.json()["exit_code"], 127, "try {n}: {}", r.text());
    }
}

/// A command that cannot be forked because the sandbox runs as many
/// processes as its pids limit allows is a 409 that says so, not a 500;
/// the next command, once there is room, runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sandbox_refuses_a_command_with_409() {
    let d = dirs();
    let server = api_server(&d).await;
    let addr = server.addr;
    let r = admin(addr, "POST", "/api/users", Some(json!({"id": "full"}))).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = admin(
        addr,
        "PUT",
        "/api/users/full/limits",
        Some(json!({"pids": 3})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // PID 1 and a command of two processes fill the sandbox.
    let first = tokio::spawn(async move {
        admin(
            addr,
            "POST",
            "/api/users/full/exec",
            Some(json!({"argv": ["sh", "-c", "sleep 3 & exec sleep 3"]})),
        )
        .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let stats = admin(addr, "GET", "/api/users/full/stats", None)
        .await
        .json();
    let enforced = stats["limits"]["pids"] == 3;
    let r = admin(
        addr,
        "POST",
        "/api/users/full/exec",
        Some(json!({"argv": ["true"]})),
    )
    .await;
    if enforced {
        assert_eq!(r.status, 409, "{}", r.text());
        assert!(r.text().contains("pids limit"), "{}", r.text());
    } else {
        // This mode has no pids limit ({stats}): the command just runs.
        assert_eq!(r.status, 200, "{stats}: {}", r.text());
    }
    let first = first.await.unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    let r = admin(
        addr,
        "POST",
        "/api/users/full/exec",
        Some(json!({"argv": ["true"]})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A working directory that is not there is the command's failure (exit
/// 125), however its report and the command's start race (one in many
/// answered 500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_cwd_fails_the_command_every_time() {
    let d = dirs();
    let server = api_server(&d).await;
    let addr = server.addr;
    let r = admin(addr, "POST", "/api/users", Some(json!({"id": "nocwd"}))).await;
    assert_eq!(r.status, 201, "{}", r.text());
    for n in 0..20 {
        let r = admin(
            addr,
            "POST",
            "/api/users/nocwd/exec",
            Some(json!({"argv": ["true"], "cwd": format!("nope-{n}")})),
        )
        .await;
        assert_eq!(r.status, 200, "try {n}: {}", r.text());
        assert_ne!(r.json()["exit_code"], 0, "try {n}: {}", r.text());
    }
}

/// An archive too big to unpack within the user's memory limit is a 413
/// that says so, not a 500, and leaves the home as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_over_the_memory_limit_is_a_413() {
    let d = dirs();
    let server = api_server(&d).await;
    let addr = server.addr;
    let r = admin(addr, "POST", "/api/users", Some(json!({"id": "mem"}))).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = admin(
        addr,
        "PUT",
        "/api/users/mem/limits",
        Some(json!({"memory_bytes": 1 << 20})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Its sandbox running, stats say what is enforced in this mode.
    let r = admin(
        addr,
        "POST",
        "/api/users/mem/exec",
        Some(json!({"argv": ["true"]})),
    )
    .await;
    // So tight a limit may not leave room for a command (PID 1 forks it):
    // that is said so, never a 500.
    assert!(
        r.status == 200 || (r.status == 409 && r.text().contains("memory limit")),
        "{}",
        r.text()
    );
    let stats = admin(addr, "GET", "/api/users/mem/stats", None)
        .await
        .json();
    let enforced = stats["limits"]["memory_bytes"] == 1 << 20
        && !stats["limits_missing"]
            .as_array()
            .is_some_and(|m| m.iter().any(|c| c == "memory"));
    // 3 MB that do not compress.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..3_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    tar.append_data(&mut header, "big", data.as_slice())
        .unwrap();
    let archive = tar.into_inner().unwrap().finish().unwrap();
    let r = api(
        addr,
        "POST",
        "/api/users/mem/import",
        Some(ADMIN_TOKEN),
        Some(archive),
    )
    .await;
    if enforced {
        assert_eq!(r.status, 413, "{}", r.text());
        assert!(r.text().contains("memory limit"), "{}", r.text());
    } else {
        // No memory limit in this mode ({stats}): it unpacks.
        assert_eq!(r.status, 200, "{stats}: {}", r.text());
    }
}
