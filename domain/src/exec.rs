//! Running a command non-interactively in a user's sandbox and collecting
//! what it did: exit code or signal, stdout and stderr (bounded), and why it
//! ended (exit, signal, timeout, memory limit). The API's `exec` and the
//! command line's `warren exec` share this; so do import and export, which
//! are commands too (`warren-import`, `warren-export` inside the sandbox).

use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::backend::{ExecChild, ProcessExit};

/// Longest timeout a caller may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default timeout of `exec`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Most bytes of stdout (and of stderr) `exec` returns; the rest is read
/// and dropped, and the result says it was truncated.
pub const MAX_OUTPUT: usize = 1 << 20;
/// After the command exits, how long to wait for the ends of its pipes
/// (a background job may hold them open).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

/// Why a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// It exited by itself (`exit_code`).
    Exit,
    /// A signal ended it (`signal`).
    Signal,
    /// It ran past its timeout and was killed.
    Timeout,
    /// The sandbox hit its memory limit and the kernel killed it.
    MemoryLimit,
}

/// What `exec` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecResult {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: EndReason,
    /// UTF-8 (invalid sequences replaced).
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub duration_ms: u64,
}

impl ExecResult {
    /// The end without the output.
    pub fn end(&self) -> ExecEnd {
        ExecEnd {
            exit_code: self.exit_code,
            signal: self.signal,
            reason: self.reason,
            duration_ms: self.duration_ms,
        }
    }
}

/// The end of a streamed exec (the last NDJSON line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecEnd {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: EndReason,
    pub duration_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CwdError {
    #[error("cwd must be a path relative to the user's home, without '..': {0:?}")]
    Outside(String),
}

/// Checks an exec's working directory: relative to the home, made of
/// plain names only. (It is entered inside the sandbox, as the user.)
pub fn resolve_cwd(cwd: Option<&str>) -> Result<Option<PathBuf>, CwdError> {
    let Some(cwd) = cwd.filter(|c| !c.is_empty() && *c != ".") else {
        return Ok(None);
    };
    let p = Path::new(cwd);
    let plain = p
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !plain || cwd.contains('\0') || cwd.len() > 4096 {
        return Err(CwdError::Outside(cwd.chars().take(200).collect()));
    }
    Ok(Some(p.to_path_buf()))
}

pub fn reason_of(exit: &ProcessExit, timed_out: bool) -> EndReason {
    if timed_out {
        EndReason::Timeout
    } else if exit.memory_limit {
        EndReason::MemoryLimit
    } else if exit.signal.is_some() {
        EndReason::Signal
    } else {
        EndReason::Exit
    }
}

/// Reads all of `r`, keeping the first `max` bytes.
async fn read_bounded(mut r: impl AsyncRead + Unpin, max: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = max.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                truncated |= n > room;
            }
        }
    }
    (kept, truncated)
}

fn to_tokio<T, U>(pipe: Option<T>, f: impl FnOnce(T) -> std::io::Result<U>) -> Option<U> {
    pipe.and_then(|p| f(p).ok())
}

/// Writes `data` to the command's stdin, then closes it, in the background
/// (a command that never reads must not block the caller).
fn feed_stdin(pipe: Option<std::process::ChildStdin>, data: Vec<u8>) {
    if let Some(mut w) = to_tokio(pipe, tokio::process::ChildStdin::from_std) {
        tokio::spawn(async move {
            let _ = w.write_all(&data).await;
            let _ = w.shutdown().await;
        });
    }
}

/// Feeds `stdin`, collects the output, enforces the timeout.
pub async fn collect(
    child: ExecChild,
    stdin: Vec<u8>,
    timeout: Duration,
    max_output: usize,
) -> ExecResult {
    let began = Instant::now();
    let ExecChild {
        stdin: pin,
        stdout,
        stderr,
        mut process,
    } = child;
    feed_stdin(pin, stdin);
    let out = tokio::spawn(read_pipe(
        to_tokio(stdout, tokio::process::ChildStdout::from_std),
        max_output,
    ));
    let err = tokio::spawn(read_pipe(
        to_tokio(stderr, tokio::process::ChildStderr::from_std),
        max_output,
    ));
    let (exit, timed_out) = wait_with_timeout(&mut process, timeout).await;
    let (stdout, stdout_truncated) = drain(out).await;
    let (stderr, stderr_truncated) = drain(err).await;
    ExecResult {
        exit_code: exit.code,
        signal: exit.signal,
        reason: reason_of(&exit, timed_out),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        stdout_truncated,
        stderr_truncated,
        duration_ms: began.elapsed().as_millis() as u64,
    }
}

async fn read_pipe(r: Option<impl AsyncRead + Unpin>, max: usize) -> (Vec<u8>, bool) {
    match r {
        Some(r) => read_bounded(r, max).await,
        None => (Vec::new(), false),
    }
}

/// The reader's result, or what it had not got after a short wait (a
/// background job of the command may keep the pipe open forever).
async fn drain(h: tokio::task::JoinHandle<(Vec<u8>, bool)>) -> (Vec<u8>, bool) {
    let abort = h.abort_handle();
    match tokio::time::timeout(DRAIN_AFTER_EXIT, h).await {
        Ok(Ok(r)) => r,
        _ => {
            abort.abort();
            (Vec::new(), true)
        }
    }
}

/// Waits for the process; past `timeout` kills it and waits again.
pub async fn wait_with_timeout(
    process: &mut Box<dyn crate::backend::TerminalProcess>,
    timeout: Duration,
) -> (ProcessExit, bool) {
    match tokio::time::timeout(timeout, process.wait()).await {
        Ok(exit) => (exit, false),
        Err(_) => {
            process.kill();
            (process.wait().await, true)
        }
    }
}

/// One line of a streamed exec.
#[derive(Debug, Serialize)]
struct Chunk<'a> {
    stream: &'static str,
    data: &'a str,
}

/// Runs the command and streams NDJSON: `{"stream":"stdout","data":"..."}`
/// lines as output arrives, then one [`ExecEnd`] line. `on_end` sees the
/// end (for the audit log).
pub fn stream(
    child: ExecChild,
    stdin: Vec<u8>,
    timeout: Duration,
    on_end: impl FnOnce(&ExecEnd) + Send + 'static,
) -> mpsc::Receiver<Result<Bytes, std::io::Error>> {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        let began = Instant::now();
        let ExecChild {
            stdin: pin,
            stdout,
            stderr,
            mut process,
        } = child;
        feed_stdin(pin, stdin);
        let pumps = [
            to_tokio(stdout, tokio::process::ChildStdout::from_std)
                .map(|r| tokio::spawn(pump(r, "stdout", tx.clone()))),
            to_tokio(stderr, tokio::process::ChildStderr::from_std)
                .map(|r| tokio::spawn(pump(r, "stderr", tx.clone()))),
        ];
        let (exit, timed_out) = wait_with_timeout(&mut process, timeout).await;
        for p in pumps.into_iter().flatten() {
            let abort = p.abort_handle();
            if tokio::time::timeout(DRAIN_AFTER_EXIT, p).await.is_err() {
                abort.abort();
            }
        }
        let end = ExecEnd {
            exit_code: exit.code,
            signal: exit.signal,
            reason: reason_of(&exit, timed_out),
            duration_ms: began.elapsed().as_millis() as u64,
        };
        on_end(&end);
        let mut line = serde_json::to_vec(&end).unwrap_or_default();
        line.push(b'\n');
        let _ = tx.send(Ok(Bytes::from(line))).await;
    });
    rx
}

/// Copies a pipe into NDJSON chunks. A slow client slows the command: the
/// channel is bounded and the pipe is read only when there is room.
async fn pump(
    mut r: impl AsyncRead + Unpin,
    name: &'static str,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        carry.extend_from_slice(&buf[..n]);
        let text = utf8_prefix(&mut carry);
        if text.is_empty() {
            continue;
        }
        if send_chunk(&tx, name, &text).await.is_err() {
            return;
        }
    }
    if !carry.is_empty() {
        let _ = send_chunk(&tx, name, &String::from_utf8_lossy(&carry)).await;
    }
}

async fn send_chunk(
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
    stream: &'static str,
    data: &str,
) -> Result<(), ()> {
    let mut line = serde_json::to_vec(&Chunk { stream, data }).map_err(|_| ())?;
    line.push(b'\n');
    tx.send(Ok(Bytes::from(line))).await.map_err(|_| ())
}

/// Takes the longest prefix of `buf` that is text, keeping an incomplete
/// UTF-8 sequence at the end for the next read (invalid bytes become U+FFFD).
fn utf8_prefix(buf: &mut Vec<u8>) -> String {
    let mut out = String::new();
    let mut rest: &[u8] = buf;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                rest = &[];
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(good).unwrap_or_default());
                match e.error_len() {
                    Some(n) => {
                        out.push('\u{fffd}');
                        rest = &bad[n..];
                    }
                    None => {
                        rest = bad;
                        break;
                    }
                }
            }
        }
    }
    let keep = rest.to_vec();
    *buf = keep;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cwd_stays_inside_the_home() {
        assert_eq!(resolve_cwd(None).unwrap(), None);
        assert_eq!(resolve_cwd(Some(".")).unwrap(), None);
        assert_eq!(
            resolve_cwd(Some("src/app")).unwrap(),
            Some(PathBuf::from("src/app"))
        );
        for bad in ["/etc", "../bob", "a/../../x", "a\0b"] {
            assert!(resolve_cwd(Some(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn utf8_is_split_only_at_character_boundaries() {
        let mut buf = "hé".as_bytes().to_vec();
        buf.push(0xe2); // the first byte of '€'
        assert_eq!(utf8_prefix(&mut buf), "hé");
        assert_eq!(buf, vec![0xe2]);
        buf.extend_from_slice(&[0x82, 0xac, 0xff, b'!']);
        assert_eq!(utf8_prefix(&mut buf), "€\u{fffd}!");
        assert!(buf.is_empty());
    }
}
