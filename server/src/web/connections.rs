//! The accept loop: every TCP connection is counted against a global and a
//! per-address cap before hyper sees it, and served with a header-read
//! timeout. `axum::serve` has neither, so 20,000 half-sent requests used
//! to take the server to its fd limit (issue 10 §4).
//!
//! * Above a cap the client gets `503` (server full) or `429` (too many
//!   from its address) with a one-line body, and the connection is closed.
//!   Writing that answer takes a task and an fd for at most
//!   [`REFUSE_LINGER`]; at most [`MAX_REFUSING`] such answers are in flight,
//!   further connections above the cap are closed without one.
//! * A request head must arrive in full within the header timeout, counted
//!   from the connection's start or from its previous response, so it is
//!   also the idle timeout of a keep-alive connection that never becomes
//!   a WebSocket (hyper's `header_read_timeout` restarts on every request).
//! * A connection holds its place until its socket closes: an upgraded
//!   WebSocket keeps it (the permit travels inside the socket).
//!
//! IPv6 clients are counted per /64, the block one host is usually given.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};

/// How long a refused connection may take to receive its answer.
pub const REFUSE_LINGER: Duration = Duration::from_secs(1);
/// Most refusals being written at once.
pub const MAX_REFUSING: usize = 64;

/// The caps and the timeout (docs/serve.md §Connections).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Most connections open at once, WebSockets included.
    pub max: usize,
    /// Most from one client address (IPv6: one /64).
    pub max_per_address: usize,
    /// A request head must be complete within this; also how long an idle
    /// keep-alive connection is kept.
    pub header_timeout: Duration,
}

impl Default for ConnLimits {
    /// 4096 connections cost 4096 fds, beside ~6 per terminal (32
    /// sandboxes x 8 terminals = ~1,500); 256 per address leave room for a
    /// NAT-ed office of browsers (each keeps ~6 HTTP connections plus one
    /// per terminal); 10 s is ample for any real client to send its headers.
    fn default() -> Self {
        ConnLimits {
            max: 4096,
            max_per_address: 256,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The global cap.
    Full,
    /// The per-address cap.
    PerAddress,
}

impl Refusal {
    /// The whole HTTP answer.
    fn response(self) -> &'static [u8] {
        match self {
            Refusal::Full => {
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
                  content-length: 40\r\nretry-after: 5\r\nconnection: close\r\n\r\n\
                  server busy: too many open connections\r\n"
            }
            Refusal::PerAddress => {
                b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain; charset=utf-8\r\n\
                  content-length: 45\r\nretry-after: 5\r\nconnection: close\r\n\r\n\
                  too many open connections from your address\r\n"
            }
        }
    }
}

/// Counts open connections, in total and per client address.
#[derive(Debug)]
pub struct Limiter {
    limits: ConnLimits,
    open: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

impl Limiter {
    pub fn new(limits: ConnLimits) -> Arc<Limiter> {
        Arc::new(Limiter {
            limits,
            open: Mutex::new(Counts::default()),
        })
    }

    /// Takes a place for a connection from `peer`, or says why not.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Permit, Refusal> {
        let key = address_key(peer);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.total >= self.limits.max {
            return Err(Refusal::Full);
        }
        let n = open.by_address.entry(key).or_insert(0);
        if *n >= self.limits.max_per_address {
            return Err(Refusal::PerAddress);
        }
        *n += 1;
        open.total += 1;
        Ok(Permit {
            limiter: Arc::clone(self),
            key,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

/// What a client is counted as: its address, an IPv6 one cut to its /64
/// (and an IPv4-mapped one as IPv4).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// One place in the limiter, given back on drop.
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<Limiter>,
    key: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.limiter.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_address.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.by_address.remove(&self.key);
            }
        }
    }
}

/// A TCP stream that holds its connection's [`Permit`] until it closes,
/// through an upgrade to a WebSocket.
struct Counted {
    stream: TcpStream,
    _permit: Permit,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Accepts and serves until `stop` turns true, then asks every HTTP
/// connection to finish its request and close, and returns when they have
/// (upgraded WebSockets are the relay's to end).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limiter: Arc<Limiter>,
    mut stop: watch::Receiver<bool>,
) {
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    // Every connection task holds a sender; `recv` returns None when the
    // last one is gone.
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                accept_failed(e).await;
                continue;
            }
        };
        match limiter.admit(peer.ip()) {
            Ok(permit) => {
                let conn = Counted {
                    stream,
                    _permit: permit,
                };
                tokio::spawn(serve_one(
                    conn,
                    router.clone(),
                    limiter.limits.header_timeout,
                    stop.clone(),
                    open_tx.clone(),
                ));
            }
            Err(why) => refuse(stream, peer, why, &refusing),
        }
    }
    drop(open_tx);
    let _ = open_rx.recv().await;
}

/// A failed accept: the client's own trouble is skipped; anything else
/// (out of fds: EMFILE, ENFILE) is logged and waited out briefly rather
/// than retried in a busy loop.
async fn accept_failed(e: io::Error) {
    use io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    ) {
        return;
    }
    tracing::error!("accept error: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn serve_one(
    conn: Counted,
    router: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    _open: mpsc::Sender<()>,
) {
    // Keystrokes and their echo are small writes that must not wait.
    let _ = conn.stream.set_nodelay(true);
    let service = TowerToHyperService::new(router);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let connection = builder
        .serve_connection(TokioIo::new(conn), service)
        .with_upgrades();
    tokio::pin!(connection);
    let stopping = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stopping => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        // A header timeout or a client that went away: routine.
        tracing::debug!("connection ended: {e}");
    }
}

/// Answers a connection above a cap and closes it, from a task of its own
/// that lasts at most [`REFUSE_LINGER`]; without a free refusal slot the
/// connection is just closed.
fn refuse(stream: TcpStream, peer: SocketAddr, why: Refusal, refusing: &Arc<Semaphore>) {
    tracing::debug!(%peer, ?why, "connection refused");
    let Ok(slot) = Arc::clone(refusing).try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _slot = slot;
        let _ = tokio::time::timeout(REFUSE_LINGER, async {
            let mut stream = stream;
            stream.write_all(why.response()).await?;
            stream.shutdown().await?;
            // Read what the client sent until it closes, so the answer is
            // not lost to a reset of unread data.
            let mut sink = [0u8; 1024];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<(), io::Error>(())
        })
        .await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max: usize, per: usize) -> Arc<Limiter> {
        Limiter::new(ConnLimits {
            max,
            max_per_address: per,
            header_timeout: Duration::from_secs(1),
        })
    }

    #[test]
    fn per_address_then_global() {
        let l = limiter(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = l.admit(a).unwrap();
        let _p2 = l.admit(a).unwrap();
        assert_eq!(l.admit(a).unwrap_err(), Refusal::PerAddress);
        let _p3 = l.admit(b).unwrap();
        assert_eq!(l.admit(b).unwrap_err(), Refusal::Full);
        drop(p1);
        assert_eq!(l.open(), 2);
        assert!(l.admit(a).is_ok());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let l = limiter(10, 1);
        let _p = l.admit("2001:db8::1".parse().unwrap()).unwrap();
        assert!(l.admit("2001:db8::2".parse().unwrap()).is_err());
        assert!(l.admit("2001:db8:0:1::2".parse().unwrap()).is_ok());
        let _q = l.admit("10.0.0.1".parse().unwrap()).unwrap();
        assert!(l.admit("::ffff:10.0.0.1".parse().unwrap()).is_err());
    }

    #[test]
    fn answers_say_their_length() {
        for r in [Refusal::Full, Refusal::PerAddress] {
            let text = std::str::from_utf8(r.response()).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(len, body.len(), "{text}");
        }
    }
}
