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

/// Issue 15: a client offering permessage-deflate (as browsers do) gets
/// it, with no context takeover both ways; output over 256 bytes comes
/// compressed (RSV1), compressed input is taken, and a keystroke's echo
/// comes at once, plain (docs/protocol.md#compression). A raw client, so
/// the bits on the wire are what is checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_offering_permessage_deflate_gets_it() {
    let server = TestServer::start().await;
    let session = server.login("alice").await;
    let mut ws = deflate::RawClient::connect(server.addr, &cookie(&session)).await;
    let ext = ws.extensions.to_ascii_lowercase();
    assert!(ext.starts_with("permessage-deflate"), "{ext}");
    assert!(ext.contains("server_no_context_takeover"), "{ext}");
    assert!(ext.contains("client_no_context_takeover"), "{ext}");
    let hello = ws.read_until(|f| f.opcode == 1).await;
    let hello: serde_json::Value = serde_json::from_slice(&hello.payload).unwrap();
    assert_eq!(hello["type"], "hello");

    // Input, compressed; output of 3000 bytes comes compressed.
    ws.send(
        0x2,
        b"printf 'z%.0s' $(seq 3000); echo de$((1+1))flate\r",
        true,
    )
    .await;
    let mut out = Vec::new();
    let mut compressed = 0;
    while find(&out, b"de2flate").is_none() {
        let f = ws.read_until(|f| f.opcode == 2).await;
        compressed += usize::from(f.rsv1);
        out.extend_from_slice(&f.payload);
    }
    assert!(compressed > 0, "no output frame came compressed");
    assert!(find(&out, &[b'z'; 3000]).is_some());

    // A keystroke, plain, is echoed at once, plain (the prompt may come
    // before it, or in the same frame).
    ws.send(0x2, b"q", false).await;
    let echo = tokio::time::timeout(
        Duration::from_secs(5),
        ws.read_until(|f| f.opcode == 2 && f.payload.contains(&b'q')),
    )
    .await
    .expect("the echo of a keystroke did not come within 5 s");
    assert!(echo.payload.ends_with(b"q"), "{:?}", echo.payload);
    assert!(!echo.rsv1, "a short echo is sent uncompressed");
}

/// A compressed message that inflates past the 1 MiB limit (a few KiB on
/// the wire) gets close 1009, one that does not inflate 1011; nothing else
/// changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deflated_messages_over_the_limit_or_corrupt_get_1009_or_1011() {
    let server = TestServer::start().await;
    let session = server.login("alice").await;
    let mut ws = deflate::RawClient::connect(server.addr, &cookie(&session)).await;
    ws.read_until(|f| f.opcode == 1).await;
    ws.send(0x2, &vec![b'x'; (1 << 20) + 1], true).await;
    let close = ws.read_until(|f| f.opcode == 8).await;
    assert_eq!(close.payload[..2], 1009u16.to_be_bytes());
    // Compressed data that does not inflate (a reserved block type): 1011.
    let mut ws = deflate::RawClient::connect(server.addr, &cookie(&session)).await;
    ws.read_until(|f| f.opcode == 1).await;
    ws.send_raw_deflated(&[0xff; 8]).await;
    let close = ws.read_until(|f| f.opcode == 8).await;
    assert_eq!(close.payload[..2], 1011u16.to_be_bytes());
    let mut c = server.open("alice").await;
    c.run("echo fine-$((6*7))", "fine-42").await;
}

/// A client that does not offer permessage-deflate gets plain frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_not_offering_permessage_deflate_gets_plain_frames() {
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
    h.insert("cookie", HeaderValue::from_str(&cookie(&session)).unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers().get("sec-websocket-extensions"), None);
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        "warren.v1"
    );
    ws.send(Message::Binary(
        b"printf 'z%.0s' $(seq 3000); echo de$((1+1))flate\r"
            .to_vec()
            .into(),
    ))
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
    assert!(find(&out, &[b'z'; 3000]).is_some());
}

/// A WebSocket client speaking permessage-deflate by hand (RFC 7692 with
/// no context takeover: each message is a raw deflate stream of its own).
mod deflate {
    use std::io::Write;
    use std::net::SocketAddr;

    use flate2::write::{DeflateDecoder, DeflateEncoder};
    use flate2::Compression;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpStream;

    use crate::common::WAIT;

    pub struct Frame {
        pub rsv1: bool,
        pub opcode: u8,
        /// Inflated when `rsv1`.
        pub payload: Vec<u8>,
    }

    pub struct RawClient {
        stream: BufReader<TcpStream>,
        pub extensions: String,
    }

    impl RawClient {
        pub async fn connect(addr: SocketAddr, cookie: &str) -> RawClient {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let mut stream = BufReader::new(tcp);
            let req = format!(
                "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: warren.v1\r\n\
                 Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
                 Cookie: {cookie}\r\n\r\n"
            );
            stream.get_mut().write_all(req.as_bytes()).await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                head.push(stream.read_u8().await.unwrap());
            }
            let head = String::from_utf8(head).unwrap();
            assert!(head.starts_with("HTTP/1.1 101"), "{head}");
            let extensions = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("sec-websocket-extensions")
                        .then(|| value.trim().to_string())
                })
                .unwrap_or_default();
            RawClient { stream, extensions }
        }

        /// Sends one masked frame, deflated (RSV1) if `compress`.
        pub async fn send(&mut self, opcode: u8, payload: &[u8], compress: bool) {
            let payload = if compress {
                let mut e = DeflateEncoder::new(Vec::new(), Compression::fast());
                e.write_all(payload).unwrap();
                // A sync flush ends the message with an empty stored block,
                // whose 00 00 ff ff tail is left off (RFC 7692 7.2.1).
                e.flush().unwrap();
                let mut out = e.get_ref().clone();
                assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
                out.truncate(out.len() - 4);
                out
            } else {
                payload.to_vec()
            };
            let mut f = vec![0x80 | if compress { 0x40 } else { 0 } | opcode];
            if payload.len() < 126 {
                f.push(0x80 | payload.len() as u8);
            } else {
                f.push(0x80 | 126);
                f.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
            }
            let mask = [7u8, 1, 9, 3];
            f.extend_from_slice(&mask);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
            self.stream.get_mut().write_all(&f).await.unwrap();
        }

        /// Sends `bytes` as a binary frame marked compressed, as they are.
        pub async fn send_raw_deflated(&mut self, bytes: &[u8]) {
            let mask = [0u8; 4];
            let mut f = vec![0x80 | 0x40 | 0x2, 0x80 | bytes.len() as u8];
            f.extend_from_slice(&mask);
            f.extend_from_slice(bytes);
            self.stream.get_mut().write_all(&f).await.unwrap();
        }

        /// The next whole message (unfragmented frames only, as warren sends).
        pub async fn read(&mut self) -> Frame {
            let s = &mut self.stream;
            let b0 = s.read_u8().await.unwrap();
            let b1 = s.read_u8().await.unwrap();
            assert_eq!(b1 & 0x80, 0, "server frames are not masked");
            assert_ne!(b0 & 0x80, 0, "warren sends whole messages");
            let len = match b1 & 0x7f {
                126 => u64::from(s.read_u16().await.unwrap()),
                127 => s.read_u64().await.unwrap(),
                n => u64::from(n),
            };
            let mut payload = vec![0; len as usize];
            s.read_exact(&mut payload).await.unwrap();
            let rsv1 = b0 & 0x40 != 0;
            if rsv1 {
                let mut d = DeflateDecoder::new(Vec::new());
                d.write_all(&payload).unwrap();
                d.write_all(&[0, 0, 0xff, 0xff]).unwrap();
                d.flush().unwrap();
                payload = d.get_ref().clone();
            }
            Frame {
                rsv1,
                opcode: b0 & 0x0f,
                payload,
            }
        }

        /// Reads frames until one matches.
        pub async fn read_until(&mut self, want: impl Fn(&Frame) -> bool) -> Frame {
            tokio::time::timeout(WAIT, async {
                loop {
                    let f = self.read().await;
                    if want(&f) {
                        return f;
                    }
                }
            })
            .await
            .expect("no such frame")
        }
    }
}
