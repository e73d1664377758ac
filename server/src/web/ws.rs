//! The WebSocket under the terminal routes: yawc (RFC 6455 with RFC 7692
//! permessage-deflate), the one WebSocket stack of the server.
//!
//! What is negotiated with a client offering permessage-deflate (browsers
//! always do), and why (docs/protocol.md#compression):
//! * no context takeover, both ways, even when the client did not ask:
//!   nothing carries over between messages, so the deflate state is
//!   borrowed from one shared pool for a message and given back, and an
//!   idle terminal holds none (kept, it would cost ~370 KiB a connection);
//! * each message is compressed and flushed whole: echo never waits for
//!   later output;
//! * a message under [`COMPRESS_FROM`] bytes goes out plain (RSV1 off, as
//!   RFC 7692 allows per message): a keystroke's echo costs no deflate.

use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::body::Bytes;
use axum::http::header::{HeaderValue, SEC_WEBSOCKET_PROTOCOL};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::{ready, Sink, Stream};
use yawc::streaming::Streaming;
use yawc::{DeflatePool, Frame, HttpStream, IncomingUpgrade, Options, WebSocket, WebSocketError};

use super::protocol::close;

pub use yawc::close::CloseCode;
pub use yawc::OpCode;

/// Largest WebSocket message accepted from a client.
pub const MAX_MESSAGE: usize = 1 << 20;

/// Smallest message sent compressed: shorter ones (typing, echo, prompts)
/// gain a few bytes at most and would cost a deflate each.
pub const COMPRESS_FROM: usize = 256;

/// Idle deflate and inflate states kept for reuse, per direction: about
/// the number of messages compressed at one moment (the runtime's worker
/// threads), not the number of connections.
const POOL: usize = 8;

/// Socket read buffer (grows for a larger frame, then shrinks back).
const READ_BUFFER: usize = 4096;
/// Socket write buffer (likewise; every send is flushed at once).
const WRITE_BUFFER: usize = 1024;

fn options() -> Options {
    static POOLED: OnceLock<DeflatePool> = OnceLock::new();
    let pool = POOLED.get_or_init(|| DeflatePool::new(POOL)).clone();
    Options::default()
        .with_low_latency_compression()
        .server_no_context_takeover()
        .client_no_context_takeover()
        .with_deflate_pool(pool)
        .with_compression_threshold(COMPRESS_FROM)
        // yawc's limits are exclusive: a message of exactly MAX_MESSAGE passes.
        .with_limits(MAX_MESSAGE + 1, MAX_MESSAGE + 1)
        .with_read_buffer_capacity(READ_BUFFER)
        .with_write_buffer_capacity(WRITE_BUFFER)
}

/// Answers the handshake (picking `subprotocol` if the client offered it)
/// and runs `handle` on the socket once the connection is upgraded.
pub fn accept<F, Fut>(
    upgrade: IncomingUpgrade,
    headers: &HeaderMap,
    subprotocol: &'static str,
    handle: F,
) -> Response
where
    F: FnOnce(Socket) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (response, upgraded) = match upgrade.upgrade(options()) {
        Ok(pair) => pair,
        Err(e) => {
            // Only a bad option set fails here, never the client's offer.
            tracing::error!("WebSocket upgrade: {e}");
            return Response::builder()
                .status(500)
                .body(Body::empty())
                .expect("static response");
        }
    };
    tokio::spawn(async move {
        match upgraded.await {
            Ok(ws) => handle(Socket::new(ws)).await,
            Err(e) => tracing::debug!("WebSocket upgrade did not complete: {e}"),
        }
    });
    let mut response = response.map(Body::new);
    if offers(headers, subprotocol) {
        response.headers_mut().insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(subprotocol),
        );
    }
    response
}

/// Whether the client's `Sec-WebSocket-Protocol` lists `name`.
fn offers(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == name)
}

/// A message from the client, as the relay takes it.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    /// Terminal input: a whole message, or one fragment of one (the bytes
    /// go to the PTY as they come either way).
    Binary(Bytes),
    /// A whole text message, checked to be UTF-8.
    Text(String),
    /// The client's close frame (the library queues the answer).
    Close,
    /// A ping or a pong (the library answers pings).
    Control,
}

/// A message or frame the connection ends on.
#[derive(Debug)]
pub struct Broken {
    /// The close code (1002, 1007, 1009, ...).
    pub code: u16,
    pub reason: String,
    /// The library refused the frame and has queued the close frame itself:
    /// [`Socket::flush_close`] sends it.
    pub answered: bool,
}

impl Broken {
    fn ours(code: u16, reason: &str) -> Broken {
        Broken {
            code,
            reason: reason.to_string(),
            answered: false,
        }
    }
}

/// The message being reassembled from fragments.
enum Partial {
    /// A binary message of this many bytes so far (already passed on).
    Binary(usize),
    /// A text message, kept until its last fragment to check UTF-8.
    Text(Vec<u8>),
}

/// An upgraded connection: messages in, frames out. yawc's frame layer
/// (its `Streaming`) checks each frame, inflates, answers pings and closes,
/// and queues the close frame for a frame it refuses; fragments are put
/// together here, so every refusal comes with its close code exactly once.
pub struct Socket {
    frames: Streaming<HttpStream>,
    messages: Reassembly,
}

/// Frames into messages: binary fragments pass on as they come, text is
/// kept whole; the size limit, UTF-8 and the fragment order are checked.
#[derive(Default)]
struct Reassembly {
    partial: Option<Partial>,
}

impl Socket {
    fn new(ws: WebSocket<HttpStream>) -> Socket {
        Socket {
            frames: ws.into_streaming(),
            messages: Reassembly::default(),
        }
    }

    /// Sends what the library owes the client (a pong, a close frame).
    pub async fn flush_close(&mut self) {
        use futures_util::SinkExt;
        // `poll_ready` writes the owed frames, `flush` pushes them out.
        let ready = std::future::poll_fn(|cx| Pin::new(&mut *self).poll_ready(cx)).await;
        if ready.is_ok() {
            let _ = self.flush().await;
        }
    }
}

impl Reassembly {
    /// What one frame adds: a message to pass on, nothing yet (a text
    /// fragment), or a refusal.
    fn take(&mut self, frame: Frame) -> Result<Option<Incoming>, Broken> {
        let fin = frame.is_fin();
        match (frame.opcode(), self.partial.take()) {
            (OpCode::Ping | OpCode::Pong, partial) => {
                self.partial = partial;
                Ok(Some(Incoming::Control))
            }
            (OpCode::Close, _) => Ok(Some(Incoming::Close)),
            (OpCode::Binary | OpCode::Text, Some(_)) => Err(Broken::ours(
                close::PROTOCOL_ERROR,
                "a new message inside a fragmented one",
            )),
            (OpCode::Continuation, None) => Err(Broken::ours(
                close::PROTOCOL_ERROR,
                "a continuation frame outside a message",
            )),
            (OpCode::Binary, None) => {
                if !fin {
                    self.partial = Some(Partial::Binary(frame.payload().len()));
                }
                Ok(Some(Incoming::Binary(frame.into_payload())))
            }
            (OpCode::Continuation, Some(Partial::Binary(so_far))) => {
                let len = so_far + frame.payload().len();
                if len > MAX_MESSAGE {
                    return Err(Broken::ours(close::MESSAGE_TOO_BIG, "message too big"));
                }
                if !fin {
                    self.partial = Some(Partial::Binary(len));
                }
                Ok(Some(Incoming::Binary(frame.into_payload())))
            }
            (OpCode::Text, None) => self.text(Vec::new(), frame),
            (OpCode::Continuation, Some(Partial::Text(so_far))) => self.text(so_far, frame),
        }
    }

    fn text(&mut self, mut so_far: Vec<u8>, frame: Frame) -> Result<Option<Incoming>, Broken> {
        if so_far.len() + frame.payload().len() > MAX_MESSAGE {
            return Err(Broken::ours(close::MESSAGE_TOO_BIG, "message too big"));
        }
        let fin = frame.is_fin();
        let bytes = if so_far.is_empty() && fin {
            frame.into_payload().to_vec()
        } else {
            so_far.extend_from_slice(frame.payload());
            so_far
        };
        if !fin {
            self.partial = Some(Partial::Text(bytes));
            return Ok(None);
        }
        String::from_utf8(bytes)
            .map(|text| Some(Incoming::Text(text)))
            .map_err(|_| Broken::ours(close::INVALID_PAYLOAD, "text frame is not UTF-8"))
    }
}

impl Stream for Socket {
    type Item = Result<Incoming, Broken>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let frame = match ready!(self.frames.poll_next_frame(cx)) {
                Ok(frame) => frame,
                // The end, or a broken connection: nothing to answer.
                Err(WebSocketError::ConnectionClosed) => return Poll::Ready(None),
                Err(e) if e.is_io_error() => return Poll::Ready(None),
                Err(e) => {
                    return Poll::Ready(Some(Err(Broken {
                        code: 0,
                        reason: e.to_string(),
                        answered: true,
                    })))
                }
            };
            match self.messages.take(frame) {
                Ok(None) => continue,
                Ok(Some(message)) => return Poll::Ready(Some(Ok(message))),
                Err(broken) => return Poll::Ready(Some(Err(broken))),
            }
        }
    }
}

impl Sink<Frame> for Socket {
    type Error = WebSocketError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.frames).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Frame) -> Result<(), Self::Error> {
        Pin::new(&mut self.frames).start_send(frame)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.frames).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.frames).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(frames: Vec<Frame>) -> Vec<Result<Option<Incoming>, u16>> {
        let mut r = Reassembly::default();
        frames
            .into_iter()
            .map(|f| r.take(f).map_err(|b| b.code))
            .collect()
    }

    #[test]
    fn fragments_become_messages() {
        let got = feed(vec![
            Frame::text("{\"ty").with_fin(false),
            Frame::ping(Bytes::new()),
            Frame::continuation("pe\":\"ping\"}"),
            Frame::binary("ab").with_fin(false),
            Frame::continuation("c"),
        ]);
        assert_eq!(
            got,
            vec![
                Ok(None),
                Ok(Some(Incoming::Control)),
                Ok(Some(Incoming::Text(r#"{"type":"ping"}"#.into()))),
                Ok(Some(Incoming::Binary("ab".into()))),
                Ok(Some(Incoming::Binary("c".into()))),
            ]
        );
    }

    #[test]
    fn broken_messages_get_their_close_code() {
        let last = |frames| feed(frames).pop().unwrap();
        assert_eq!(last(vec![Frame::continuation("x")]), Err(1002));
        assert_eq!(
            last(vec![Frame::binary("a").with_fin(false), Frame::text("b")]),
            Err(1002)
        );
        assert_eq!(last(vec![Frame::text(vec![0xff, 0xfe])]), Err(1007));
        let half = vec![b'x'; MAX_MESSAGE / 2 + 1];
        assert_eq!(
            last(vec![
                Frame::binary(half.clone()).with_fin(false),
                Frame::continuation(half.clone()),
            ]),
            Err(1009)
        );
        assert_eq!(
            last(vec![
                Frame::text(half.clone()).with_fin(false),
                Frame::continuation(half),
            ]),
            Err(1009)
        );
        // Exactly the limit passes.
        let whole = vec![b'x'; MAX_MESSAGE / 2];
        assert!(last(vec![
            Frame::binary(whole.clone()).with_fin(false),
            Frame::continuation(whole),
        ])
        .is_ok());
    }

    #[test]
    fn finds_the_offered_subprotocol() {
        let mut h = HeaderMap::new();
        assert!(!offers(&h, "warren.v1"));
        h.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("chat, warren.v1"),
        );
        assert!(offers(&h, "warren.v1"));
        assert!(!offers(&h, "warren.v2"));
    }
}
