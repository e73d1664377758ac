//! Fuzzes what a WebSocket client can send to `warren serve` (docs/protocol.md):
//! each input is a sequence of client frames, sent over a real connection
//! to a real server in this process, through the WebSocket decoder, the
//! relay's frame handler, `protocol::parse_client` and the PTY writer.
//!
//! What must hold, for any input:
//! * nothing panics (libfuzzer-sys aborts on a panic in any thread, the
//!   server's tasks included);
//! * `parse_client` only accepts sizes in range;
//! * every text frame gets exactly one reply — `pong` for a ping, an
//!   `error` frame for anything malformed — except a good resize, which
//!   gets none; nothing else changes: the terminal stays open and answers;
//! * bytes that break the WebSocket framing end the connection, and any
//!   close frame the server sends carries a documented code;
//! * the server keeps serving: the next connection gets its `hello`.
//!
//! The terminals run `cat` on a raw-mode PTY writing to /dev/null, so input
//! is harmless (no shell reads it) and can never block (no XOFF, no ^C).
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none client_frames`
//! (tests/fuzz/protocol.sh does it with a time bound).
#![no_main]

use std::io::{ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arbitrary::Arbitrary;
use clap::Parser;
use libfuzzer_sys::fuzz_target;
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};
use warren::cli::args::ServeArgs;
use warren::web::protocol::{self, ClientMessage};
use warren::web::Server;
use warren_domain::echo::EchoBackend;

/// Every wait is bounded: a server that stops answering is a finding.
const WAIT: Duration = Duration::from_secs(10);

/// Close codes the server may send (docs/protocol.md, plus the WebSocket
/// codes for a broken frame: 1002 protocol error, 1003 reserved opcode,
/// 1007 bad UTF-8, 1009 too big, 1011 a compressed message that does not
/// inflate).
const DOCUMENTED_CLOSE_CODES: &[u16] = &[
    1000, 1001, 1002, 1003, 1007, 1009, 1011, 4400, 4401, 4403, 4404, 4429, 4500, 4503,
];

#[derive(Debug, Arbitrary)]
enum Frame {
    /// Any text: JSON or not.
    Text(String),
    /// A resize with any numbers.
    Resize(i64, i64),
    /// A control frame with any `type`.
    Typed(String),
    /// Terminal input.
    Binary(Vec<u8>),
    /// WebSocket-level ping and pong.
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
struct Input {
    frames: Vec<Frame>,
    /// Raw bytes after the frames: anything, valid framing or not.
    raw_tail: Option<Vec<u8>>,
}

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

struct Fixture {
    addr: SocketAddr,
    /// The terminal each input attaches to (replaced if it ever ends).
    terminal: Mutex<Option<String>>,
    _runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(start_server)
}

/// The server as `warren serve --auth none --backend echo` builds it, with
/// a harmless terminal command.
fn start_server() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let ws = dir.path().join("ws");
    let cli = Cli::try_parse_from([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--auth",
        "none",
        "--backend",
        "echo",
        "--state-dir",
        state.to_str().unwrap(),
        "--workspace-root",
        ws.to_str().unwrap(),
    ])
    .expect("serve arguments");
    let mut config = cli.serve.to_config().expect("serve config");
    config.management = None;
    let backend = Arc::new(EchoBackend::with_argv(vec![
        "/bin/sh".into(),
        "-c".into(),
        "stty raw -echo; exec cat >/dev/null".into(),
    ]));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let server = runtime
        .block_on(Server::bind(config, backend))
        .expect("bind");
    let addr = server.local_addr();
    runtime.spawn(async move { server.run().await.expect("server run") });
    Fixture {
        addr,
        terminal: Mutex::new(None),
        _runtime: runtime,
        _dir: dir,
    }
}

type Socket = WebSocket<TcpStream>;

fn connect(addr: SocketAddr, path: &str) -> Socket {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(protocol::SUBPROTOCOL),
    );
    let (ws, _) = tungstenite::client(req, stream).expect("WebSocket handshake");
    ws
}

fn read_json(ws: &mut Socket) -> Option<serde_json::Value> {
    loop {
        match ws.read().expect("server stopped answering") {
            Message::Text(t) => return Some(serde_json::from_str(&t).expect("text frame is JSON")),
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

/// Attaches to the fuzz terminal, opening a new one when there is none or
/// it ended; returns the socket after its `hello`.
fn attach(f: &Fixture) -> Socket {
    let mut terminal = f.terminal.lock().unwrap();
    if let Some(id) = terminal.as_deref() {
        let mut ws = connect(f.addr, &format!("/ws/{id}?user=fuzz"));
        match read_json(&mut ws) {
            Some(v) if v["type"] == "hello" => return ws,
            // It ended (an `exit` frame, then a close): open another.
            _ => *terminal = None,
        }
    }
    let mut ws = connect(f.addr, "/ws?user=fuzz&cols=80&rows=24");
    let hello = read_json(&mut ws).expect("a new terminal opens");
    assert_eq!(hello["type"], "hello", "{hello}");
    *terminal = Some(hello["terminal"].as_str().unwrap().to_string());
    ws
}

fn as_text(frame: &Frame) -> Option<String> {
    match frame {
        Frame::Text(t) => Some(t.clone()),
        Frame::Resize(c, r) => Some(format!(r#"{{"type":"resize","cols":{c},"rows":{r}}}"#)),
        Frame::Typed(t) => Some(serde_json::json!({ "type": t }).to_string()),
        _ => None,
    }
}

/// The replies a text frame must get (0 or 1), checking the parser on the
/// way.
fn replies_expected(text: &str) -> usize {
    match protocol::parse_client(text) {
        Ok(ClientMessage::Resize(size)) => {
            assert!((1..=protocol::MAX_COLS).contains(&size.cols), "{size:?}");
            assert!((1..=protocol::MAX_ROWS).contains(&size.rows), "{size:?}");
            0
        }
        Ok(ClientMessage::Ping) => 1,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            1
        }
    }
}

fn send_frames(ws: &mut Socket, frames: &[Frame]) -> usize {
    let mut expected = 0;
    for frame in frames {
        let message = match frame {
            Frame::Binary(b) => Message::Binary(b.clone().into()),
            Frame::Ping(b) => Message::Ping(b.clone().into()),
            Frame::Pong(b) => Message::Pong(b.clone().into()),
            text => {
                let text = as_text(text).unwrap();
                expected += replies_expected(&text);
                Message::Text(text.into())
            }
        };
        ws.send(message)
            .expect("the server takes well-formed frames");
    }
    expected
}

/// Reads the replies to the frames and to one final ping: every one is a
/// `pong` or an `error` with a message.
fn check_replies(ws: &mut Socket, expected: usize) {
    ws.send(Message::Text(r#"{"type":"ping"}"#.into()))
        .expect("final ping");
    for n in 0..=expected {
        let v = read_json(ws).unwrap_or_else(|| panic!("closed after {n} of {expected} replies"));
        match v["type"].as_str() {
            Some("pong") => {}
            Some("error") => assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}"),
            _ => panic!("unexpected reply {v}"),
        }
        if n == expected {
            assert_eq!(v["type"], "pong", "the last reply answers the final ping");
        }
    }
}

/// After raw bytes, the server either goes on waiting for more (then our
/// half-close ends the connection) or closes; a close frame must carry a
/// documented code.
fn check_raw_tail(ws: Socket, raw: &[u8]) {
    let mut stream = ws.into_inner();
    if stream.write_all(raw).is_err() {
        return; // the server already closed: fine
    }
    let _ = stream.shutdown(Shutdown::Write);
    let mut ws = WebSocket::from_raw_socket(stream, tungstenite::protocol::Role::Client, None);
    loop {
        match ws.read() {
            Ok(Message::Close(Some(CloseFrame { code, .. }))) => {
                let code = u16::from(code);
                assert!(
                    DOCUMENTED_CLOSE_CODES.contains(&code) || code == u16::from(CloseCode::Normal),
                    "undocumented close code {code}"
                );
                return;
            }
            Ok(Message::Close(None)) => return,
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {
                panic!("the server neither closed nor ended the connection within {WAIT:?}")
            }
            // A drop without a close frame: raw bytes may end mid-frame,
            // and our half-close then ends the stream before the server
            // has a whole frame to refuse (its close codes for broken
            // frames are checked in server/tests/serve/connections.rs).
            Err(_) => return,
        }
    }
}

fuzz_target!(|input: Input| {
    let f = fixture();
    let mut ws = attach(f);
    let expected = send_frames(&mut ws, &input.frames);
    check_replies(&mut ws, expected);
    match &input.raw_tail {
        Some(raw) => check_raw_tail(ws, raw),
        None => {
            let _ = ws.close(None);
            let _ = ws.flush();
        }
    }
    // The server still serves.
    drop(attach(f));
});
