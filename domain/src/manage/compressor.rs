//! Gzip of a home export on a thread of the server: `warren-export
//! --format tar` walks the home inside the sandbox (as the user, confined:
//! host-side code never opens a path in a home), and the server compresses
//! its plain tar here, outside the user's CPU limit (docs/archives.md).
//!
//! Nothing in the tar is interpreted: it is bytes in, gzip out, so the
//! tenant controls nothing here but the data. The cost is bounded: one
//! export at a time per tenant ([`ExportSlots`]), one thread each, at a
//! lower priority (nice 10) than the server's own threads, so terminals
//! and the API stay responsive while it runs.
//!
//! The gzip trailer is written only when the caller says the export
//! succeeded ([`Compressor::trailer`]): an export that failed (a limit,
//! a kill, a timeout) never looks like a complete archive.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

/// The nice value of a compressing thread: below the server's threads.
const NICE: i32 = 10;

/// Bytes of compressed output per chunk sent on.
const CHUNK: usize = 64 << 10;

/// What the thread sends.
enum Out {
    Data(Bytes),
    /// The tar ended (true) or reading it failed (false).
    InputEnd(bool),
    /// Nothing more comes (the trailer was sent, or is left out).
    Finished,
}

/// One export's compression, running on its own thread.
pub(super) struct Compressor {
    out: mpsc::Receiver<Out>,
    verdict: Option<oneshot::Sender<bool>>,
}

impl Compressor {
    /// Starts compressing `input` (the tool's stdout) on a new thread.
    pub fn start(input: std::process::ChildStdout) -> io::Result<Compressor> {
        let (tx, out) = mpsc::channel(4);
        let (verdict, verdict_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("export-gzip".into())
            .spawn(move || compress(input, tx, verdict_rx))?;
        Ok(Compressor {
            out,
            verdict: Some(verdict),
        })
    }

    /// The next compressed chunk; `Ok(None)` once the tar has ended (then,
    /// after [`Compressor::trailer`] with true, once all is sent).
    pub async fn next(&mut self) -> io::Result<Option<Bytes>> {
        match self.out.recv().await {
            Some(Out::Data(b)) => Ok(Some(b)),
            Some(Out::InputEnd(true) | Out::Finished) => Ok(None),
            Some(Out::InputEnd(false)) => Err(io::Error::other("reading the tar failed")),
            None => Err(io::Error::other("the compressing thread ended early")),
        }
    }

    /// After the tar ended: with `ok` the rest of the gzip stream and its
    /// trailer follow from [`Compressor::next`]; without, nothing more.
    pub fn trailer(&mut self, ok: bool) {
        if let Some(v) = self.verdict.take() {
            let _ = v.send(ok);
        }
    }
}

/// The thread: tar in, gzip out in chunks, the trailer only on a yes.
fn compress(
    mut input: std::process::ChildStdout,
    tx: mpsc::Sender<Out>,
    verdict: oneshot::Receiver<bool>,
) {
    // Best effort: without it the export only competes at the server's
    // own priority.
    if let Some(tid) = rustix::process::Pid::from_raw(nix::unistd::gettid().as_raw()) {
        let _ = rustix::process::setpriority_process(Some(tid), NICE);
    }
    let mut gz = warren_runtime::archive::gzip(Chunks {
        tx: tx.clone(),
        buf: Vec::with_capacity(CHUNK),
        cut: false,
    });
    let mut buf = vec![0u8; 256 << 10];
    let read_all = loop {
        match input.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => {
                if gz.write_all(&buf[..n]).is_err() {
                    // The client went away: nothing more to send.
                    gz.get_mut().cut = true;
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break false,
        }
    };
    drop(input);
    if tx.blocking_send(Out::InputEnd(read_all)).is_err() || !read_all {
        gz.get_mut().cut = true;
        return;
    }
    if verdict.blocking_recv() != Ok(true) {
        gz.get_mut().cut = true;
        let _ = tx.blocking_send(Out::Finished);
        return;
    }
    let finished = gz.try_finish().and_then(|()| gz.get_mut().flush());
    gz.get_mut().cut = true; // the encoder is done: its drop adds nothing
    if finished.is_ok() {
        let _ = tx.blocking_send(Out::Finished);
    }
}

/// Collects the gzip output into chunks for the channel; once `cut`, it
/// takes nothing more (a dropped encoder would write its trailer).
struct Chunks {
    tx: mpsc::Sender<Out>,
    buf: Vec<u8>,
    cut: bool,
}

impl Write for Chunks {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.cut {
            return Err(io::Error::other("the export ended"));
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.cut || self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Out::Data(chunk))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }
}

/// The tenants with an export running: one at a time each.
#[derive(Default)]
pub(super) struct ExportSlots(Arc<Mutex<HashSet<String>>>);

/// A tenant's export slot, given back when dropped.
pub(super) struct ExportSlot {
    slots: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl ExportSlots {
    /// The tenant's slot, or None while another export of theirs runs.
    pub fn take(&self, id: &str) -> Option<ExportSlot> {
        let mut running = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        running.insert(id.to_string()).then(|| ExportSlot {
            slots: Arc::clone(&self.0),
            id: id.to_string(),
        })
    }
}

impl Drop for ExportSlot {
    fn drop(&mut self) {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn child(script: &str) -> std::process::Child {
        Command::new("sh")
            .args(["-c", script])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    }

    async fn drain(c: &mut Compressor) -> io::Result<Vec<u8>> {
        let mut all = Vec::new();
        while let Some(b) = c.next().await? {
            all.extend_from_slice(&b);
        }
        Ok(all)
    }

    fn gunzip(data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data).read_to_end(&mut out)?;
        Ok(out)
    }

    #[tokio::test]
    async fn compresses_and_writes_the_trailer_only_on_success() {
        // Text and incompressible bytes, so that chunks go out before the
        // end in both cases.
        let mut data = Vec::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..100_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.extend_from_slice(&x.to_le_bytes());
            data.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &data).unwrap();
        let script = format!("cat '{}'", file.path().display());
        for ok in [true, false] {
            let mut p = child(&script);
            let mut c = Compressor::start(p.stdout.take().unwrap()).unwrap();
            let mut all = drain(&mut c).await.unwrap();
            assert!(p.wait().unwrap().success());
            assert!(!all.is_empty());
            c.trailer(ok);
            all.extend(drain(&mut c).await.unwrap());
            match ok {
                true => assert!(gunzip(&all).unwrap() == data),
                // Without the trailer the stream is cut: gunzip says so.
                false => assert!(gunzip(&all).is_err(), "{} bytes", all.len()),
            }
        }
    }

    #[tokio::test]
    async fn an_empty_tar_is_an_empty_gzip() {
        let mut p = child("exit 0");
        let mut c = Compressor::start(p.stdout.take().unwrap()).unwrap();
        // An empty tar is no error here: the tool's exit decides.
        assert_eq!(drain(&mut c).await.unwrap(), Vec::<u8>::new());
        p.wait().unwrap();
        c.trailer(true);
        let gz = drain(&mut c).await.unwrap();
        assert_eq!(gunzip(&gz).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn one_export_at_a_time_per_tenant() {
        let slots = ExportSlots::default();
        let a = slots.take("alice").unwrap();
        assert!(slots.take("alice").is_none());
        let b = slots.take("bob").unwrap();
        drop(a);
        assert!(slots.take("alice").is_some());
        drop(b);
    }
}
