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
//! Either half ending ends the connection; dropping the viewer detaches it
//! from the terminal, which lives on for the grace period.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::auth::AuthError;
use super::http::{AppState, ConnectionGuard};
use super::protocol::{
    close, parse_client, ClientMessage, ExitInfo, ExitReason, LimitsInForce, ProtocolError,
    ServerMessage, WinSize, SUBPROTOCOL,
};
use super::sessions::Attachment;
use super::terminal::{Viewer, ViewerEvent};
use super::user::UserId;

/// Control replies queued for the writer before the reader waits.
const CONTROL_QUEUE: usize = 8;
/// How long to wait for the client's close frame after ours.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// What the connection asked for.
#[derive(Debug)]
pub enum Target {
    New(Result<WinSize, ProtocolError>),
    Attach(String),
}

pub async fn serve(
    socket: WebSocket,
    app: AppState,
    user: Result<UserId, AuthError>,
    target: Target,
    _guard: ConnectionGuard,
) {
    let user = match user {
        Ok(user) => user,
        Err(e) => {
            tracing::debug!("WebSocket refused: {e}");
            if let Some(m) = app.manager() {
                let m = std::sync::Arc::clone(m);
                let why = e.to_string();
                tokio::task::spawn_blocking(move || {
                    m.audit(
                        "anonymous",
                        "auth.failed",
                        None,
                        "refused",
                        serde_json::json!({"path": "/ws", "why": why}),
                    )
                });
            }
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
        Target::New(Err(e)) => return refuse(socket, close::BAD_REQUEST, &e.to_string()).await,
        Target::New(Ok(size)) => registry.open(&user, size).await.map(Attachment::Live),
        Target::Attach(id) => registry.attach(&user, &id),
    };
    match attached {
        Err(e) => {
            if e.is_internal() {
                tracing::error!(%user, "opening a terminal failed: {e}");
            } else {
                tracing::debug!(%user, "terminal refused: {e}");
            }
            refuse(socket, e.close_code(), &e.client_message()).await
        }
        Ok(Attachment::Ended(info)) => {
            let mut socket = socket;
            let _ = socket
                .send(Message::Text(ServerMessage::Exit(info).to_json().into()))
                .await;
            goodbye(socket, close_code_for(info), info.reason.as_str()).await
        }
        Ok(Attachment::Live(viewer)) => relay(socket, viewer, &user, app.metrics()).await,
    }
}

fn close_code_for(info: ExitInfo) -> u16 {
    if info.reason == ExitReason::ServerShutdown {
        close::GOING_AWAY
    } else {
        close::NORMAL
    }
}

/// Sends an `error` frame and closes with `code`.
async fn refuse(mut socket: WebSocket, code: u16, message: &str) {
    let _ = socket
        .send(Message::Text(
            ServerMessage::Error { message }.to_json().into(),
        ))
        .await;
    goodbye(socket, code, message).await
}

/// Closes with `code` and waits briefly for the client's close frame, so
/// the client reads everything before the TCP connection goes.
async fn goodbye(mut socket: WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: truncate_utf8(reason, 123).into(),
    };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(msg)) = socket.recv().await {
            if matches!(msg, Message::Close(_)) {
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
    socket: WebSocket,
    mut viewer: Viewer,
    user: &UserId,
    metrics: &super::metrics::Metrics,
) {
    let terminal = std::sync::Arc::clone(viewer.terminal());
    let size = viewer.size();
    let hello = ServerMessage::Hello {
        protocol: SUBPROTOCOL,
        terminal: terminal.id(),
        user: user.as_str(),
        tier: terminal.tier(),
        limits: LimitsInForce::of(terminal.applied()),
        cols: size.cols,
        rows: size.rows,
    }
    .to_json();
    let (mut sink, mut stream) = socket.split();
    if sink.send(Message::Text(hello.into())).await.is_err() {
        return;
    }
    let snapshot = viewer.take_snapshot();
    if !snapshot.is_empty() && sink.send(Message::Binary(snapshot.into())).await.is_err() {
        return;
    }
    tracing::debug!(%user, terminal = terminal.id(), "viewer attached");

    let (control_tx, mut control_rx) = mpsc::channel::<String>(CONTROL_QUEUE);
    let writer = async {
        loop {
            tokio::select! {
                biased;
                Some(text) = control_rx.recv() => {
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        return None;
                    }
                }
                event = viewer.next() => match event {
                    ViewerEvent::Output(chunk) => {
                        metrics.relayed("to_client", chunk.len());
                        if sink.send(Message::Binary(chunk)).await.is_err() {
                            return None;
                        }
                    }
                    ViewerEvent::Exit(info) => return Some(info),
                },
            }
        }
    };
    let reader = async {
        while let Some(Ok(msg)) = stream.next().await {
            let reply = match msg {
                Message::Binary(input) => {
                    metrics.relayed("from_client", input.len());
                    // A failed write means the shell is gone; its exit
                    // frame is on the way through the writer.
                    let _ = terminal.write_input(&input).await;
                    None
                }
                Message::Text(text) => match parse_client(&text) {
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
                Message::Close(_) => break,
                // WebSocket pings are answered by the library.
                Message::Ping(_) | Message::Pong(_) => None,
            };
            if let Some(reply) = reply {
                if control_tx.send(reply).await.is_err() {
                    break;
                }
            }
        }
    };
    let ended = tokio::select! {
        info = writer => info,
        () = reader => None,
    };
    drop(viewer);
    if let Some(info) = ended {
        let exit = ServerMessage::Exit(info).to_json();
        if sink.send(Message::Text(exit.into())).await.is_ok() {
            if let Ok(socket) = sink.reunite(stream) {
                goodbye(socket, close_code_for(info), info.reason.as_str()).await;
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
