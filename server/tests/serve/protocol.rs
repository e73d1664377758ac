//! The warren.v1 protocol over a real shell: input, output, resize,
//! keepalive, malformed frames, exit.

use std::time::Duration;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frames_carry_input_and_output() {
    let server = TestServer::start().await;
    let mut c = server.open("alice").await;
    c.run("echo $((40+2))z", "42z").await;
    // Bytes that are not UTF-8 pass through unchanged.
    c.run("printf '\\377\\376ok%s\\n' 7", "ok7").await;
    assert!(find(&c.output, b"\xff\xfeok7").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_changes_the_terminal_size() {
    let server = TestServer::start().await;
    let session = server.login("alice").await;
    let mut c = Client::connect(
        server.addr,
        "/ws?cols=90&rows=30",
        &[("cookie", &cookie(&session))],
    )
    .await
    .unwrap();
    let hello = c.expect_hello().await;
    assert_eq!(
        (hello["cols"].as_u64(), hello["rows"].as_u64()),
        (Some(90), Some(30))
    );
    c.run("echo S$(stty size)E", "S30 90E").await;
    c.send_text(r#"{"type":"resize","cols":100,"rows":40}"#)
        .await;
    c.run("echo S$(stty size)E", "S40 100E").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_gets_pong() {
    let server = TestServer::start().await;
    let mut c = server.open("alice").await;
    c.send_text(r#"{"type":"ping"}"#).await;
    assert_eq!(c.read_control("pong").await["type"], "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_an_error_and_change_nothing() {
    let server = TestServer::start().await;
    let mut c = server.open("alice").await;
    c.run("echo S$(stty size)E", "S24 80E").await;
    for (frame, says) in [
        ("not json", "not valid JSON"),
        ("{}", "no \"type\""),
        (r#"{"type":"launch"}"#, "unknown control frame type"),
        (r#"{"type":"resize","cols":0,"rows":5}"#, "out of range"),
        (
            r#"{"type":"resize","cols":"wide","rows":5}"#,
            "bad resize frame",
        ),
        (
            r#"{"type":"resize","cols":80,"rows":99999}"#,
            "bad resize frame",
        ),
    ] {
        c.send_text(frame).await;
        let err = c.read_control("error").await;
        let message = err["message"].as_str().unwrap();
        assert!(message.contains(says), "{frame}: {message}");
    }
    // Same terminal, same size, still working.
    c.run("echo S$(stty size)E", "S24 80E").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_initial_size_is_4400() {
    let server = TestServer::start().await;
    let session = server.login("alice").await;
    let mut c = Client::connect(
        server.addr,
        "/ws?cols=0&rows=24",
        &[("cookie", &cookie(&session))],
    )
    .await
    .unwrap();
    let (code, reason, _) = c.expect_close().await;
    assert_eq!(code, 4400);
    assert!(reason.contains("out of range"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_exit_sends_the_status_and_closes() {
    let server = TestServer::start().await;
    let mut c = server.open("alice").await;
    c.send_input("echo bye$((1+1)); exit 3\r").await;
    let (code, _, texts) = c.expect_close().await;
    assert_eq!(code, 1000);
    assert!(find(&c.output, b"bye2").is_some());
    let exit = texts
        .iter()
        .find(|v| v["type"] == "exit")
        .expect("exit frame");
    assert_eq!(exit["reason"], "exit");
    assert_eq!(exit["code"], 3);
    assert!(exit["signal"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_shell_reports_the_signal() {
    let server = TestServer::start().await;
    let mut c = server.open("alice").await;
    c.send_input("kill -9 $$\r").await;
    let (_, _, texts) = c.expect_close().await;
    let exit = texts
        .iter()
        .find(|v| v["type"] == "exit")
        .expect("exit frame");
    assert_eq!(exit["signal"], 9);
    assert!(exit["code"].is_null());
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// Issue 15, part 2, as it stands: a client offering permessage-deflate (as
/// browsers do) is answered without the extension, and plain frames carry
/// the terminal both ways. tungstenite, under axum's `ws`, implements no
/// permessage-deflate (docs/protocol.md#flow-control).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_offering_permessage_deflate_gets_plain_frames() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    use tokio_tungstenite::tungstenite::Message;

    let server = TestServer::start().await;
    let session = server.login("alice").await;
    let mut req = format!("ws://{}/ws", server.addr)
        .into_client_request()
        .unwrap();
    let h = req.headers_mut();
    h.insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("warren.v1"),
    );
    h.insert(
        "sec-websocket-extensions",
        HeaderValue::from_static("permessage-deflate; client_max_window_bits"),
    );
    h.insert("cookie", HeaderValue::from_str(&cookie(&session)).unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers().get("sec-websocket-extensions"), None);
    ws.send(Message::Binary(b"echo de$((1+1))flate\r".to_vec().into()))
        .await
        .unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while find(&out, b"de2flate").is_none() {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => out.extend_from_slice(&b),
            Ok(Some(Ok(_))) => {}
            other => panic!("waiting for the echo: {other:?}; so far {out:?}"),
        }
    }
}
