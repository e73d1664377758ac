//! Connection exhaustion (issue 10 §4) and close frames (§9): half-sent
//! requests and idle keep-alive connections are closed after the header
//! timeout, connections above the caps get 429/503, a normal login and
//! terminal work during a flood, dead WebSocket peers are dropped after
//! the ping timeout, broken frames get a close code, and `warren serve`
//! raises its soft open-file limit.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;
use warren::web::{ConnLimits, PingPolicy, WebSettings};

use crate::common::*;

fn web(limits: ConnLimits) -> WebSettings {
    WebSettings {
        connections: limits,
        ..Default::default()
    }
}

/// A TCP connection to `addr` from the loopback address `from`.
async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Reads until EOF (or a reset); returns what came, or None if the server
/// kept the connection open past `limit`.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let done = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    done.ok()
        .map(|()| String::from_utf8_lossy(&raw).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_and_idle_keep_alives_are_closed_after_the_header_timeout() {
    let timeout = Duration::from_secs(1);
    let server = TestServer::with(Options {
        web: web(ConnLimits {
            header_timeout: timeout,
            ..ConnLimits::default()
        }),
        ..Options::default()
    })
    .await;
    let mut half = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .await
            .unwrap();
        half.push(s);
    }
    // A keep-alive connection that got its answer and then says nothing.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr).as_bytes())
        .await
        .unwrap();
    let start = Instant::now();
    for s in &mut half {
        let left = (timeout * 5).saturating_sub(start.elapsed());
        assert!(
            read_to_close(s, left).await.is_some(),
            "a half-sent request still open after {:?}",
            start.elapsed()
        );
    }
    let answer = read_to_close(&mut idle, timeout * 5)
        .await
        .expect("an idle keep-alive connection still open");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        start.elapsed() >= timeout - Duration::from_millis(100),
        "closed too early: {:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_above_the_caps_are_refused_and_others_still_log_in() {
    let per_address = 16;
    let server = TestServer::with(Options {
        web: web(ConnLimits {
            max: 40,
            max_per_address: per_address,
            header_timeout: Duration::from_secs(30),
        }),
        ..Options::default()
    })
    .await;
    // A flood of half-sent requests from 127.0.0.2.
    let mut flood = Vec::new();
    for _ in 0..per_address {
        let mut s = connect_from("127.0.0.2", server.addr).await;
        s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        flood.push(s);
    }
    for _ in 0..20 {
        let mut s = connect_from("127.0.0.2", server.addr).await;
        let answer = read_to_close(&mut s, WAIT).await.expect("closed");
        assert!(answer.starts_with("HTTP/1.1 429 "), "{answer:?}");
        assert!(answer.contains("too many open connections from your address"));
    }
    // Meanwhile a normal user (from 127.0.0.1) logs in and works.
    let mut c = server.open("alice").await;
    c.run("echo still-$((6*7))", "still-42").await;
    // Fill the server from other addresses: the global cap answers 503.
    for i in 0..(40 - per_address - 1) {
        let from = format!("127.0.0.{}", 10 + i / per_address);
        let mut s = connect_from(&from, server.addr).await;
        s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        flood.push(s);
    }
    // Wait for the server to have counted them all.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut s = connect_from("127.0.0.99", server.addr).await;
    let answer = read_to_close(&mut s, WAIT).await.expect("closed");
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer:?}");
    assert!(answer.contains("server busy"));
    // The open terminal is unaffected; closing the flood makes room again.
    c.run("echo after-$((6*7))", "after-42").await;
    drop(flood);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let res = http_get(server.addr, "/healthz", &[]).await;
    assert_eq!(res.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_peer_that_answers_no_ping_is_dropped() {
    let server = TestServer::with(Options {
        web: WebSettings {
            ping: PingPolicy {
                interval: Duration::from_millis(500),
                timeout: Duration::from_secs(1),
            },
            ..Default::default()
        },
        ..Options::default()
    })
    .await;
    // A live client reads (tungstenite answers pings as it reads); a dead
    // one stops reading, so it answers nothing.
    let mut live = server.open("alice").await;
    let mut dead = server.open("bob").await;
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let _ = live.next_event_within(Duration::from_millis(100)).await;
    }
    // Alice stayed well past interval + timeout, bob did not.
    live.run("echo alive-$((6*7))", "alive-42").await;
    assert_eq!(
        *server.state.connections().borrow(),
        1,
        "bob's connection was not dropped"
    );
    // What bob finds when he looks: pings, then the end.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match dead.next_event_within(WAIT).await {
                Some(Event::Gone) | Some(Event::Close(..)) | None => return,
                _ => continue,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "bob's connection still open");
}

fn fast_pings(timeout: Duration) -> Options {
    Options {
        web: WebSettings {
            ping: PingPolicy {
                interval: Duration::from_millis(300),
                timeout,
            },
            ..Default::default()
        },
        ..Options::default()
    }
}

/// A silent client slowly reading a flood of output (so there is always
/// output waiting) is still pinged, answers, and stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_reading_a_flood_is_not_taken_for_dead() {
    let server = TestServer::with(fast_pings(Duration::from_secs(3))).await;
    let mut c = server.open("alice").await;
    c.send_input("timeout 6 yes warren-flood; echo flood-$((6*7))\r")
        .await;
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(2)).await;
        match c.next_event_within(Duration::from_secs(1)).await {
            Some(Event::Gone) | Some(Event::Close(..)) => {
                panic!("dropped while reading the flood")
            }
            _ => {}
        }
    }
    c.read_until("flood-42").await;
}

/// While the terminal does not take input (a paste into a program that
/// does not read yet), the client's pongs wait unread: that silence is the
/// server's, not a dead client's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_input_waits_for_the_terminal_is_not_taken_for_dead() {
    let server = TestServer::with(fast_pings(Duration::from_millis(600))).await;
    let mut c = server.open("alice").await;
    c.send_input("sleep 3; head -c 65536 >/dev/null; echo pasted-$((6*7))\r")
        .await;
    // 64 KiB of lines: far more than the terminal's input queue holds.
    let line = format!("{}\r", "a".repeat(63));
    c.send_input(&line.repeat(1024)).await;
    c.read_until("pasted-42").await;
    c.run("echo after-$((6*7))", "after-42").await;
}

/// Writes raw bytes under the WebSocket (a frame the library won't make).
async fn send_raw(c: &mut Client, bytes: &[u8]) {
    match c.ws().get_mut() {
        MaybeTlsStream::Plain(s) => s.write_all(bytes).await.unwrap(),
        _ => unreachable!(),
    }
}

/// A masked client frame: `first` is FIN/RSV/opcode.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![first, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_frames_get_a_close_code_first() {
    let server = TestServer::start().await;
    // Over the 1 MiB limit: 1009.
    let mut c = server.open("alice").await;
    // The server stops reading at the frame's header; the rest may never
    // be sent.
    let big = Message::Binary(vec![b'x'; (1 << 20) + 1].into());
    let _ = tokio::time::timeout(Duration::from_millis(500), c.ws().send(big)).await;
    assert_eq!(c.expect_close().await.0, 1009);
    // A reserved bit set (no extension was negotiated): 1002.
    let mut c = server.open("alice").await;
    send_raw(&mut c, &frame(0x80 | 0x40 | 0x2, b"hi")).await;
    assert_eq!(c.expect_close().await.0, 1002);
    // A text frame that is not UTF-8: 1007.
    let mut c = server.open("alice").await;
    send_raw(&mut c, &frame(0x80 | 0x1, &[0xff, 0xfe])).await;
    assert_eq!(c.expect_close().await.0, 1007);
    // A reserved opcode: 1003 (yawc's answer).
    let mut c = server.open("alice").await;
    send_raw(&mut c, &frame(0x80 | 0x3, b"hi")).await;
    assert_eq!(c.expect_close().await.0, 1003);
    // Nothing else changed: the terminals are there, a new one works.
    let mut c = server.open("alice").await;
    c.run("echo fine-$((6*7))", "fine-42").await;
}

/// `warren serve` started with a low soft limit raises it to the hard one.
#[test]
fn serve_raises_its_soft_open_file_limit() {
    let dir = tempfile::tempdir().unwrap();
    let hard = std::process::Command::new("sh")
        .args(["-c", "ulimit -Hn"])
        .output()
        .unwrap();
    let hard = String::from_utf8(hard.stdout).unwrap().trim().to_string();
    assert!(hard.parse::<u64>().unwrap() > 256, "hard limit {hard}");
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -Sn 256 && exec {} serve --backend echo --listen 127.0.0.1:0 --auth none",
            env!("CARGO_BIN_EXE_warren")
        ))
        .env("WARREN_STATE_DIR", dir.path().join("state"))
        .env("WARREN_WORKSPACE_ROOT", dir.path().join("ws"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The banner comes after the limit is raised.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let deadline = Instant::now() + WAIT;
    use std::io::BufRead;
    while !line.contains("listening on") && Instant::now() < deadline {
        line.clear();
        if stderr.read_line(&mut line).unwrap() == 0 {
            break;
        }
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let row = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(fields[3], hard, "soft limit: {row}");
    assert_eq!(fields[4], hard, "hard limit: {row}");
}

/// Full headers, then a body a byte at a time: hyper times only the
/// headers, so before the body deadline this connection stayed open for as
/// long as the client kept trickling (found in review of issue 10 §4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_a_byte_at_a_time_gets_408_at_the_body_deadline() {
    let server = TestServer::start().await;
    let s = TcpStream::connect(server.addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    wr.write_all(
        format!(
            "POST /login HTTP/1.1\r\nHost: {}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: 1000\r\n\r\nu",
            server.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let start = Instant::now();
    let trickle = tokio::spawn(async move {
        while wr.write_all(b"x").await.is_ok() {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });
    let mut reply = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(45), async {
        while !String::from_utf8_lossy(&reply).contains("\r\n\r\n") {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    trickle.abort();
    assert!(read.is_ok(), "the server kept a trickling body past 45 s");
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(29) && waited < Duration::from_secs(40),
        "answered after {waited:?}"
    );
}
