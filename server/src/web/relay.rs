//! One WebSocket connection: authenticate, open or attach to a terminal,
//! then relay. docs/protocol.md describes what the client sees.
//!
//! Two halves run concurrently in the connection's task:
//! * the writer sends the terminal's output (and control replies) to the
//!   client. It waits on the socket, so a client that does not read stops
//!   the writer, which stops taking from its viewer queue, which stops the
//!   terminal (see `terminal.rs`);
//! * the reader takes the client's frames: binary input goes to the PTY
//!   (waiting while the program does not read: back-pressure on input),
//!   control frames are parsed, and a malformed one gets an `error` frame
//!   and changes nothing else.
//!
//! A third, the watchdog, ends the connection when the client has been
//! silent for the ping interval plus the ping timeout: the writer pings a
//! client silent for the interval, and a live one answers (browsers do it
//! by themselves), so only a dead peer trips it, even one whose full TCP
//! window has stopped the writer mid-send.
//!
//! Either half ending ends the connection; dropping the viewer detaches it
//! from the terminal, which lives on for the grace period. A frame over the
//! size limit or breaking the protocol ends it with a close frame saying
//! so (1009, 1002, 1007), never with a bare disconnect.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use yawc::Frame;

use super::auth::AuthError;
use super::protocol::{
    close, parse_client, session_close_code, ClientMessage, ExitInfo, ExitReason, ProtocolError,
    ServerMessage, WinSize, SUBPROTOCOL,
};
use super::state::{AppState, ConnectionGuard, PingPolicy};
use super::ws::{Broken, CloseCode, Incoming, Socket};
use warren_domain::sessions::Attachment;
use warren_domain::terminal::{Viewer, ViewerEvent};
use warren_domain::user::UserId;

/// Control replies queued for the writer before the reader waits.
const CONTROL_QUEUE: usize = 8;
/// How long to wait for the client's close frame after ours.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// When the client was last heard from (any frame, a pong included), and
/// whether we are listening: while the reader waits for the terminal to
/// take input, the client's pongs stay unread, and that silence is ours.
struct LastHeard {
    start: Instant,
    millis: AtomicU64,
    deaf: AtomicBool,
}

impl LastHeard {
    fn new() -> LastHeard {
        LastHeard {
            start: Instant::now(),
            millis: AtomicU64::new(0),
            deaf: AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.millis.fetch_max(ms, Ordering::Relaxed);
    }

    fn at(&self) -> Instant {
        self.start + Duration::from_millis(self.millis.load(Ordering::Relaxed))
    }

    /// Stops counting silence (the reader is busy elsewhere).
    fn stop_listening(&self) {
        self.deaf.store(true, Ordering::Relaxed);
    }

    /// Counts silence again, from now.
    fn listen(&self) {
        self.touch();
        self.deaf.store(false, Ordering::Relaxed);
    }

    fn listening(&self) -> bool {
        !self.deaf.load(Ordering::Relaxed)
    }
}

/// Why a relay ended.
enum End {
    /// The terminal ended.
    Exit(ExitInfo),
    /// The client closed, or the connection broke.
    Client,
    /// The client broke the protocol: close saying how (1009, 1002, 1007).
    Broken(Broken),
    /// No answer to pings.
    Dead,
}

/// What the connection asked for.
#[derive(Debug)]
pub enum TerminalRequest {
    New(Result<WinSize, ProtocolError>),
    Attach(String),
}

pub async fn serve(
    socket: Socket,
    app: AppState,
    user: Result<UserId, AuthError>,
    target: TerminalRequest,
    _guard: ConnectionGuard,
) {
    let user = match user {
        Ok(user) => user,
        Err(e) => {
            tracing::debug!("WebSocket refused: {e}");
            app.audit_auth_failed("/ws", e.to_string());
            let message = match e {
                AuthError::Token(jwt) => format!("not logged in: {jwt}"),
                AuthError::User(e) => format!("not logged in: {e}"),
                _ => "not logged in".to_string(),
            };
            return refuse(socket, close::UNAUTHENTICATED, &message).await;
        }
    };
    let registry = app.registry();
    let attached = match target {
        TerminalRequest::New(Err(e)) => {
            return refuse(socket, close::BAD_REQUEST, &e.to_string()).await
        }
        TerminalRequest::New(Ok(size)) => registry.open(&user, size).await.map(Attachment::Live),
        TerminalRequest::Attach(id) => registry.attach(&user, &id),
    };
    match attached {
        Err(e) => {
            if e.is_internal() {
                tracing::error!(%user, "opening a terminal failed: {e}");
            } else {
                tracing::debug!(%user, "terminal refused: {e}");
            }
            refuse(socket, session_close_code(&e), &e.client_message()).await
        }
        Ok(Attachment::Ended(info)) => {
            let info = ExitInfo::from(info);
            let mut socket = socket;
            let _ = socket
                .send(Frame::text(ServerMessage::Exit(info).to_json()))
                .await;
            goodbye(socket, close_code_for(info), info.reason.as_str()).await
        }
        Ok(Attachment::Live(viewer)) => {
            relay(socket, viewer, &user, app.metrics(), app.ping()).await
        }
    }
}

/// Largest frame [`batch`] makes of queued chunks.
const BATCH_LIMIT: usize = 64 * 1024;

/// `first` and the output queued behind it, up to [`BATCH_LIMIT`], as one
/// frame: a fast stream costs fewer frames and writes, and a single chunk
/// (typing, echo) goes out as it is, without a copy.
fn batch(first: Bytes, viewer: &mut Viewer) -> Bytes {
    let mut frame: Option<Vec<u8>> = None;
    while frame.as_ref().map_or(first.len(), Vec::len) < BATCH_LIMIT {
        let Some(more) = viewer.try_output() else {
            break;
        };
        let f = frame.get_or_insert_with(|| {
            let mut f = Vec::with_capacity(BATCH_LIMIT + more.len());
            f.extend_from_slice(&first);
            f
        });
        f.extend_from_slice(&more);
    }
    frame.map_or(first, Bytes::from)
}

fn close_code_for(info: ExitInfo) -> u16 {
    if info.reason == ExitReason::ServerShutdown {
        close::GOING_AWAY
    } else {
        close::NORMAL
    }
}

/// Sends an `error` frame and closes with `code`.
async fn refuse(mut socket: Socket, code: u16, message: &str) {
    let _ = socket
        .send(Frame::text(ServerMessage::Error { message }.to_json()))
        .await;
    goodbye(socket, code, message).await
}

/// Closes with `code` and waits briefly for the client's close frame, so
/// the client reads everything before the TCP connection goes.
async fn goodbye(mut socket: Socket, code: u16, reason: &str) {
    let frame = Frame::close(CloseCode::from(code), truncate_utf8(reason, 123));
    if socket.send(frame).await.is_err() {
        return;
    }
    await_close(socket).await;
}

/// Waits briefly for the client's close frame (or the end), so the client
/// reads everything before the TCP connection goes.
async fn await_close(mut socket: Socket) {
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(msg)) = socket.next().await {
            if msg == Incoming::Close {
                break;
            }
        }
    })
    .await;
}

/// A close reason is at most 123 bytes.
fn truncate_utf8(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

async fn relay(
    socket: Socket,
    mut viewer: Viewer,
    user: &UserId,
    metrics: &super::metrics::Metrics,
    ping: PingPolicy,
) {
    let terminal = std::sync::Arc::clone(viewer.terminal());
    let size = viewer.size();
    let hello = ServerMessage::Hello {
        protocol: SUBPROTOCOL,
        terminal: terminal.id(),
        user: user.as_str(),
        sandbox: terminal.record(),
        cols: size.cols,
        rows: size.rows,
    }
    .to_json();
    let (mut sink, mut stream) = socket.split();
    if sink.send(Frame::text(hello)).await.is_err() {
        return;
    }
    let snapshot = viewer.take_snapshot();
    if !snapshot.is_empty() && sink.send(Frame::binary(snapshot)).await.is_err() {
        return;
    }
    tracing::debug!(%user, terminal = terminal.id(), "viewer attached");

    let (control_tx, mut control_rx) = mpsc::channel::<String>(CONTROL_QUEUE);
    let heard = LastHeard::new();
    let writer = async {
        let mut next_ping = heard.at() + ping.interval;
        loop {
            tokio::select! {
                // First: ready only when due, and a steady flow of output
                // must not keep the pings from going out.
                biased;
                () = tokio::time::sleep_until(next_ping) => {
                    let due = heard.at() + ping.interval;
                    if Instant::now() >= due {
                        if sink.send(Frame::ping(Bytes::new())).await.is_err() {
                            return End::Client;
                        }
                        next_ping = Instant::now() + ping.interval;
                    } else {
                        next_ping = due;
                    }
                }
                Some(text) = control_rx.recv() => {
                    if sink.send(Frame::text(text)).await.is_err() {
                        return End::Client;
                    }
                }
                event = viewer.next() => match event {
                    ViewerEvent::Output(chunk) => {
                        let frame = batch(chunk, &mut viewer);
                        metrics.relayed("to_client", frame.len());
                        if sink.send(Frame::binary(frame)).await.is_err() {
                            return End::Client;
                        }
                    }
                    ViewerEvent::Exit(info) => return End::Exit(info.into()),
                },
            }
        }
    };
    let watchdog = async {
        loop {
            let deadline = heard.at() + ping.interval + ping.timeout;
            let now = Instant::now();
            if now < deadline {
                tokio::time::sleep_until(deadline).await;
            } else if heard.listening() {
                return End::Dead;
            } else {
                // Not listening: look again later.
                tokio::time::sleep(ping.timeout).await;
            }
        }
    };
    let reader = async {
        loop {
            let msg = match stream.next().await {
                None => return End::Client,
                Some(Err(broken)) => return End::Broken(broken),
                Some(Ok(msg)) => msg,
            };
            heard.touch();
            let reply = match msg {
                Incoming::Binary(input) => {
                    metrics.relayed("from_client", input.len());
                    // A failed write means the shell is gone; its exit
                    // frame is on the way through the writer.
                    heard.stop_listening();
                    let _ = terminal.write_input(&input).await;
                    heard.listen();
                    None
                }
                Incoming::Text(text) => match parse_client(&text) {
                    Ok(ClientMessage::Resize(size)) => match terminal.resize(size) {
                        Ok(()) => None,
                        Err(e) => {
                            tracing::debug!(terminal = terminal.id(), "resize failed: {e}");
                            Some(
                                ServerMessage::Error {
                                    message: "resize failed",
                                }
                                .to_json(),
                            )
                        }
                    },
                    Ok(ClientMessage::Ping) => Some(ServerMessage::Pong.to_json()),
                    Err(e) => Some(
                        ServerMessage::Error {
                            message: &e.to_string(),
                        }
                        .to_json(),
                    ),
                },
                Incoming::Close => return End::Client,
                // WebSocket pings are answered by the library.
                Incoming::Control => None,
            };
            if let Some(reply) = reply {
                if control_tx.send(reply).await.is_err() {
                    return End::Client;
                }
            }
        }
    };
    let ended = tokio::select! {
        end = writer => end,
        end = reader => end,
        end = watchdog => end,
    };
    drop(viewer);
    match ended {
        End::Exit(info) => {
            let exit = ServerMessage::Exit(info).to_json();
            if sink.send(Frame::text(exit)).await.is_ok() {
                if let Ok(socket) = sink.reunite(stream) {
                    goodbye(socket, close_code_for(info), info.reason.as_str()).await;
                }
            }
        }
        End::Broken(broken) => {
            tracing::debug!(%user, terminal = terminal.id(), "closing: {}", broken.reason);
            if let Ok(mut socket) = sink.reunite(stream) {
                if broken.answered {
                    socket.flush_close().await;
                    await_close(socket).await;
                } else {
                    goodbye(socket, broken.code, &broken.reason).await;
                }
            }
        }
        End::Dead => {
            tracing::info!(%user, terminal = terminal.id(), "no answer to pings: closing");
        }
        End::Client => {
            // Answer the client's close frame, if that is what ended it.
            if let Ok(mut socket) = sink.reunite(stream) {
                let _ = tokio::time::timeout(CLOSE_WAIT, socket.flush_close()).await;
            }
        }
    }
    tracing::debug!(%user, terminal = terminal.id(), "viewer detached");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit() {
        let long = "é".repeat(100);
        let t = truncate_utf8(&long, 123);
        assert!(t.len() <= 123);
        assert!(t.chars().all(|c| c == 'é'));
    }
}
