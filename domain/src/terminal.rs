//! One terminal: a PTY master, the shell behind it, the screen the shell has
//! drawn and the viewers watching it.
//!
//! **Screen state.** All output goes to the terminal's screen state on the
//! server, so a viewer that attaches (a reload, a second tab, a reconnect
//! after a dropped connection) first gets a snapshot that redraws the screen
//! as it is, a full-screen program like `vi` or `top` included, then the
//! live bytes. Taking the snapshot and registering the viewer happen under
//! the same lock as feeding the screen, so no byte is shown twice or missed.
//! The screen is parsed lazily, off the output path (`screen.rs`).
//!
//! **Back-pressure.** One task per terminal reads the master (through
//! `AsyncFd`, no thread) and hands each chunk to every viewer's bounded queue
//! ([`VIEWER_QUEUE`] chunks of at most [`READ_CHUNK`] bytes), *waiting* when
//! a queue is full. While it waits it does not read the PTY, the kernel's PTY
//! buffer fills and the program blocks in `write`. So memory per viewer is
//! bounded, nothing is dropped for a connected viewer, and the slowest
//! connected viewer sets the pace for all of them. A viewer that disconnects
//! drops its queue, which releases the terminal at once; with no viewer the
//! output only feeds the screen state and the program runs freely.
//!
//! **End.** When the shell exits, what is still buffered in the PTY is
//! delivered (waiting at most [`DRAIN_LIMIT`] for slow viewers), then every
//! viewer gets the exit status.

use std::num::NonZeroU16;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use warren_runtime::record::SandboxRecord;

use crate::backend::{Sandbox, SandboxEnd, Spawned, TerminalProcess};
use crate::exit::{ExitCause, TerminalExit};
use crate::pty::Pty;
use crate::screen::LazyScreen;
use crate::user::UserId;
use crate::WinSize;

/// Largest chunk read from the PTY at once.
pub const READ_CHUNK: usize = 16 * 1024;
/// Chunks queued per viewer before the terminal waits for it.
pub const VIEWER_QUEUE: usize = 4;
/// How long, after the shell exited, slow viewers are waited for.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// How long a terminal's output must have been quiet before its screen
/// state is compacted (`LazyScreen::compact`).
pub const COMPACT_AFTER: Duration = Duration::from_secs(1);
/// How long a shell that died with its sandbox waits for the sandbox's
/// cause of death, for its `exit` frame.
pub const SANDBOX_END_WAIT: Duration = Duration::from_secs(3);

/// The sandbox a terminal runs in, and the news of its end.
#[derive(Clone)]
pub struct SandboxLink {
    pub sandbox: Arc<dyn Sandbox>,
    /// Set once the sandbox has ended by itself, with why.
    pub end: watch::Receiver<Option<SandboxEnd>>,
}

impl SandboxLink {
    /// Why the sandbox ended, waiting a little for the news.
    async fn end(&self) -> Option<SandboxEnd> {
        let mut end = self.end.clone();
        tokio::time::timeout(SANDBOX_END_WAIT, end.wait_for(Option::is_some))
            .await
            .ok()
            .and_then(|r| r.ok().and_then(|e| *e))
    }
}

/// Something a viewer receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewerEvent {
    Output(Bytes),
    Exit(TerminalExit),
}

struct Shared {
    screen: LazyScreen,
    size: WinSize,
    viewers: Vec<(u64, mpsc::Sender<Bytes>)>,
    /// Since when nobody watches (None while somebody does).
    detached_since: Option<Instant>,
    exit: Option<TerminalExit>,
}

/// A live terminal. Shared (`Arc`) by the registry, its driver task and its
/// viewers.
pub struct Terminal {
    id: String,
    user: UserId,
    pty: Pty,
    link: SandboxLink,
    shared: Mutex<Shared>,
    kill: watch::Sender<Option<ExitCause>>,
    /// When the shell exited (None while it runs): ends pending input.
    exited: watch::Sender<Option<Instant>>,
    next_viewer: AtomicU64,
    created_at: std::time::SystemTime,
}

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminal")
            .field("id", &self.id)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

fn nz(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).unwrap_or(NonZeroU16::MIN)
}

impl Terminal {
    /// Wraps a spawned shell. Returns the terminal and its driver, a future
    /// the caller spawns; it resolves when the terminal has ended and every
    /// viewer has been told.
    pub fn start(
        id: String,
        user: UserId,
        link: SandboxLink,
        spawned: Spawned,
        size: WinSize,
    ) -> std::io::Result<(
        Arc<Terminal>,
        impl std::future::Future<Output = TerminalExit> + Send + 'static,
    )> {
        let pty = Pty::new(spawned.master)?;
        let (kill, kill_rx) = watch::channel(None);
        let terminal = Arc::new(Terminal {
            id,
            user,
            pty,
            link,
            shared: Mutex::new(Shared {
                screen: LazyScreen::new(nz(size.rows), nz(size.cols)),
                size,
                viewers: Vec::new(),
                detached_since: Some(Instant::now()),
                exit: None,
            }),
            kill,
            exited: watch::channel(None).0,
            next_viewer: AtomicU64::new(0),
            created_at: std::time::SystemTime::now(),
        });
        let driver = Arc::clone(&terminal).drive(spawned.process, kill_rx);
        Ok((terminal, driver))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn user(&self) -> &UserId {
        &self.user
    }

    /// What the terminal's sandbox got, for the `hello` frame.
    pub fn record(&self) -> &SandboxRecord {
        self.link.sandbox.record()
    }

    pub fn created_at(&self) -> std::time::SystemTime {
        self.created_at
    }

    /// The terminal's current size.
    pub fn size(&self) -> WinSize {
        self.shared().size
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a viewer: it gets a snapshot of the screen, then every byte of
    /// output from that point on.
    pub fn attach(self: &Arc<Self>) -> Viewer {
        let (tx, rx) = mpsc::channel(VIEWER_QUEUE);
        let id = self.next_viewer.fetch_add(1, Ordering::Relaxed);
        let mut s = self.shared();
        let snapshot = if s.exit.is_none() {
            s.viewers.push((id, tx));
            s.detached_since = None;
            s.screen.with_screen(snapshot)
        } else {
            // Ended: `tx` is dropped here and `next` reports the exit.
            Vec::new()
        };
        Viewer {
            terminal: Arc::clone(self),
            id,
            size: s.size,
            snapshot,
            output: rx,
        }
    }

    /// Writes input to the shell, waiting while its input queue is full
    /// (a stopped terminal, Ctrl-S, or a shell that does not read). The
    /// caller reads no more input meanwhile, so what is pending is bounded
    /// by one frame per viewer. Once the shell has exited the rest is
    /// dropped and this fails with `BrokenPipe` (issue 10, item 7).
    pub async fn write_input(&self, data: &[u8]) -> std::io::Result<()> {
        let mut exited = self.exited.subscribe();
        tokio::select! {
            written = self.pty.write_all(data) => written,
            _ = exited.wait_for(Option::is_some) => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }

    /// Resizes the PTY and the server's screen. With several viewers the
    /// last resize wins.
    pub fn resize(&self, size: WinSize) -> std::io::Result<()> {
        let mut s = self.shared();
        self.pty.resize(size)?;
        s.screen.set_size(nz(size.rows), nz(size.cols));
        s.size = size;
        Ok(())
    }

    /// Kills the shell; the viewers will be told `reason`. The first reason
    /// given wins.
    pub fn kill(&self, reason: ExitCause) {
        self.kill.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason);
                true
            } else {
                false
            }
        });
    }

    /// How long nobody has been watching (None while somebody is, or once
    /// the terminal has ended).
    pub fn detached_for(&self, now: Instant) -> Option<Duration> {
        let s = self.shared();
        match (s.exit, s.detached_since) {
            (None, Some(since)) => Some(now.saturating_duration_since(since)),
            _ => None,
        }
    }

    pub fn viewer_count(&self) -> usize {
        self.shared().viewers.len()
    }

    pub fn exit_info(&self) -> Option<TerminalExit> {
        self.shared().exit
    }

    /// Whether the screen state is held compact, as an idle terminal's is
    /// (for tests and diagnostics).
    pub fn screen_is_compact(&self) -> bool {
        self.shared().screen.is_compact()
    }

    /// The plain text on screen (for tests and diagnostics).
    pub fn screen_text(&self) -> String {
        self.shared().screen.with_screen(vt100::Screen::contents)
    }

    async fn drive(
        self: Arc<Self>,
        mut process: Box<dyn TerminalProcess>,
        mut kill_rx: watch::Receiver<Option<ExitCause>>,
    ) -> TerminalExit {
        let exited_rx = self.exited.subscribe();
        let process_side = async {
            let mut killed: Option<ExitCause> = None;
            let status = loop {
                tokio::select! {
                    status = process.wait() => break status,
                    changed = kill_rx.changed(), if killed.is_none() => {
                        killed = match changed {
                            Ok(()) => *kill_rx.borrow_and_update(),
                            Err(_) => Some(ExitCause::Closed),
                        };
                        process.kill();
                    }
                }
            };
            // Checked at once: a shell killed because its sandbox's PID 1
            // died ends while PID 1 is still exiting.
            let sandbox_ending = self.link.sandbox.is_ending();
            self.exited.send_replace(Some(Instant::now()));
            (status, killed, sandbox_ending)
        };
        let ((status, killed, sandbox_ending), ()) =
            tokio::join!(process_side, self.pump(exited_rx));
        let reason = match killed {
            Some(reason) => reason,
            None if sandbox_ending => ExitCause::SandboxEnded,
            None if status.memory_limit => ExitCause::MemoryLimit,
            None => ExitCause::Exit,
        };
        let sandbox = match reason {
            ExitCause::SandboxEnded => self.link.end().await,
            _ => None,
        };
        let info = TerminalExit {
            code: status.code,
            signal: status.signal,
            reason,
            sandbox,
        };
        let mut s = self.shared();
        s.exit = Some(info);
        // Dropping the queues' senders is how viewers learn of the end,
        // after the output still queued.
        s.viewers.clear();
        info
    }

    /// Reads the PTY until end of file, or, once the shell has exited, until
    /// nothing more is buffered. The read buffer exists only while output
    /// flows, and the screen is compacted once output has been quiet for
    /// [`COMPACT_AFTER`]: an idle terminal holds neither (issue 15).
    async fn pump(&self, mut exited: watch::Receiver<Option<Instant>>) {
        let mut compacted = false;
        loop {
            tokio::select! {
                biased;
                r = self.pty.readable() => {
                    if let Err(e) = r {
                        tracing::warn!(terminal = %self.id, "waiting on the PTY failed: {e}");
                        return;
                    }
                }
                _ = exited.wait_for(Option::is_some) => {}
                () = tokio::time::sleep(COMPACT_AFTER), if !compacted => {
                    self.shared().screen.compact();
                    compacted = true;
                    continue;
                }
            }
            compacted = false;
            let mut buf = vec![0u8; READ_CHUNK];
            let read = tokio::select! {
                biased;
                r = self.pty.read(&mut buf) => r.map(Some),
                _ = exited.wait_for(Option::is_some) => self.pty.try_read(&mut buf),
            };
            let mut n = match read {
                Ok(Some(n)) if n > 0 => n,
                // End of file, or the shell has exited and nothing is left.
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(terminal = %self.id, "reading the PTY failed: {e}");
                    return;
                }
            };
            // The kernel hands out a PTY's output a few KiB at a time: take
            // what else is there already, so a fast stream goes out in
            // fewer, bigger frames (waiting for none).
            while n < buf.len() {
                match self.pty.try_read_more(&mut buf[n..]) {
                    Ok(Some(m)) if m > 0 => n += m,
                    // Nothing more now, or the end, which the next read sees.
                    _ => break,
                }
            }
            if !self.distribute(&buf[..n], &exited).await {
                return;
            }
        }
    }

    /// Feeds one chunk to the screen and to every viewer, waiting for room
    /// in each viewer's queue. False once the drain deadline has passed.
    async fn distribute(&self, data: &[u8], exited: &watch::Receiver<Option<Instant>>) -> bool {
        let chunk = Bytes::copy_from_slice(data);
        let viewers: Vec<mpsc::Sender<Bytes>> = {
            let mut s = self.shared();
            s.screen.push(data);
            s.viewers.iter().map(|(_, tx)| tx.clone()).collect()
        };
        for tx in viewers {
            tokio::select! {
                biased;
                // An error means that viewer has gone; nothing to do.
                _ = tx.send(chunk.clone()) => {}
                _ = drain_deadline(exited.clone()) => return false,
            }
        }
        match *exited.borrow() {
            Some(at) => at.elapsed() < DRAIN_LIMIT,
            None => true,
        }
    }
}

/// Resolves [`DRAIN_LIMIT`] after the shell exited; never before it exits.
async fn drain_deadline(mut exited: watch::Receiver<Option<Instant>>) {
    let at = exited
        .wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|at| *at);
    match at {
        Some(at) => tokio::time::sleep_until((at + DRAIN_LIMIT).into()).await,
        // The driver is gone; there is nothing to wait for.
        None => std::future::pending().await,
    }
}

/// The bytes that redraw `screen` on a fresh terminal: a full reset, the
/// alternate screen if the program is using it, the cells with their
/// attributes, the cursor, and the input modes (application cursor keys,
/// bracketed paste, mouse reporting).
pub fn snapshot(screen: &vt100::Screen) -> Vec<u8> {
    let mut out = b"\x1bc".to_vec();
    if screen.alternate_screen() {
        out.extend_from_slice(b"\x1b[?1049h");
    }
    out.extend_from_slice(screen.state_formatted().as_bytes());
    out
}

/// One viewer of a terminal. Dropping it detaches.
pub struct Viewer {
    terminal: Arc<Terminal>,
    id: u64,
    size: WinSize,
    snapshot: Vec<u8>,
    output: mpsc::Receiver<Bytes>,
}

impl Viewer {
    pub fn terminal(&self) -> &Arc<Terminal> {
        &self.terminal
    }

    /// The terminal's size when this viewer attached.
    pub fn size(&self) -> WinSize {
        self.size
    }

    /// The screen snapshot to show first (empty after the first call, and
    /// for a terminal that had already ended).
    pub fn take_snapshot(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.snapshot)
    }

    /// Output already queued, without waiting (None if there is none).
    pub fn try_output(&mut self) -> Option<Bytes> {
        self.output.try_recv().ok()
    }

    /// The next output chunk, or the exit once all output has been seen.
    /// Cancel-safe.
    pub async fn next(&mut self) -> ViewerEvent {
        match self.output.recv().await {
            Some(chunk) => ViewerEvent::Output(chunk),
            None => ViewerEvent::Exit(self.terminal.exit_info().unwrap_or(TerminalExit {
                code: None,
                signal: None,
                reason: ExitCause::Closed,
                sandbox: None,
            })),
        }
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let mut s = self.terminal.shared();
        s.viewers.retain(|(id, _)| *id != self.id);
        if s.viewers.is_empty() && s.exit.is_none() {
            s.detached_since = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_redraws_the_screen() {
        let mut p = vt100::Parser::new(nz(5), nz(20), 0);
        p.process(b"\x1b[?1049h\x1b[2;3Hhello\x1b[?1h");
        let snap = snapshot(p.screen());
        assert!(snap.starts_with(b"\x1bc\x1b[?1049h"));
        let mut q = vt100::Parser::new(nz(5), nz(20), 0);
        q.process(&snap);
        assert_eq!(q.screen().contents(), p.screen().contents());
        assert_eq!(q.screen().cursor_position(), p.screen().cursor_position());
        assert!(q.screen().alternate_screen());
        assert!(q.screen().application_cursor());
    }
}
