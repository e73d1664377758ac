//! Files in and out of a home by path (docs/api.md, "Files"): read and
//! written inside the sandbox as the user by `warren-get` and `warren-put`
//! (`runtime::files`), so no host-side code follows a symlink in a home and
//! the user's limits apply. Paths are checked here first, as text, and
//! again by the tools as they resolve them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use warren_runtime::files::exit;

use crate::backend::{ExecChild, ExecCommand, ExecStdio, Stream};
use crate::exec::{self, EndReason, ExecResult};

use super::archives::{check_archive, Output, Pumped, ARCHIVE_TIMEOUT};
use super::{ManageError, Manager, Running};

/// The tools, inside the sandbox (the shim answers to these names).
pub const GET_COMMAND: &str = "/opt/warren/bin/warren-get";
pub const PUT_COMMAND: &str = "/opt/warren/bin/warren-put";

/// What `GET .../files/{path}` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file: its bytes follow.
    File,
    /// A directory: a tar.gz of it follows.
    Dir,
}

/// What a put wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Uploaded {
    pub path: String,
    /// Bytes of the file (for an archive, of the files unpacked).
    pub bytes: u64,
}

/// A download: what it is, and its bytes as they come.
pub type FileStream = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send>,
>;

fn check_path(path: &str) -> Result<(), ManageError> {
    warren_runtime::files::parse(path)
        .map(|_| ())
        .map_err(|e| ManageError::BadRequest(e.to_string()))
}

impl Manager {
    /// Streams the file or folder at `path` in the user's home: a file's
    /// bytes, or a folder as tar.gz. What it is and whether it exists is
    /// known before the first byte (the tool says `file` or `dir` first).
    pub async fn get_file(
        self: &Arc<Self>,
        actor: &str,
        id: &str,
        path: &str,
    ) -> Result<(FileKind, FileStream), ManageError> {
        check_path(path)?;
        self.need_namespaces_tier()?;
        let limits = self.import_limits;
        let cmd = ExecCommand {
            argv: vec![
                GET_COMMAND.into(),
                "--max-bytes".into(),
                limits.max_bytes.to_string(),
                "--max-entries".into(),
                limits.max_entries.to_string(),
                "--".into(),
                path.into(),
            ],
            ..Default::default()
        };
        let stdio = ExecStdio {
            stdin: Stream::Null,
            stdout: Stream::Piped,
            stderr: Stream::Piped,
        };
        let Running { child, _lease } = self.start(id, cmd, stdio).await?;
        let ExecChild {
            stdout,
            stderr,
            mut process,
            ..
        } = child;
        let mut stdout = stdout
            .and_then(|s| tokio::process::ChildStdout::from_std(s).ok())
            .ok_or_else(|| ManageError::Internal("warren-get: no stdout".into()))?;
        let mut stderr = stderr.and_then(|s| tokio::process::ChildStderr::from_std(s).ok());
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while head.len() < 5 && !head.ends_with(b"\n") {
            match stdout.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        let kind = match head.as_slice() {
            b"file\n" => FileKind::File,
            b"dir\n" => FileKind::Dir,
            _ => {
                // Refused or failed before a byte: its exit says why.
                let mut text = Vec::new();
                if let Some(e) = stderr.as_mut() {
                    let _ = e.take(64 << 10).read_to_end(&mut text).await;
                }
                let end = process.wait().await;
                let r = ExecResult {
                    exit_code: end.code,
                    signal: end.signal,
                    reason: if end.memory_limit {
                        EndReason::MemoryLimit
                    } else if end.signal.is_some() {
                        EndReason::Signal
                    } else {
                        EndReason::Exit
                    },
                    stdout: String::new(),
                    stderr: String::from_utf8_lossy(&text).into_owned(),
                    stdout_truncated: false,
                    stderr_truncated: false,
                    duration_ms: 0,
                };
                let e = failure("warren-get", &r);
                self.audit(
                    actor,
                    "files.get",
                    Some(id),
                    if e.is_internal() { "failed" } else { "refused" },
                    serde_json::json!({"path": path, "error": e.to_string()}),
                );
                return Err(e);
            }
        };
        let stream = self.pump(
            Pumped {
                stdout: Output::Raw(stdout),
                stderr,
                process,
                lease: _lease,
            },
            actor,
            id,
            "files.get",
            serde_json::json!({ "path": path }),
        );
        Ok((kind, Box::pin(stream)))
    }

    /// Writes the upload as the file at `path` in the user's home (parents
    /// made), or with `archive` unpacks it (a tar.gz) into the directory
    /// `path`. The upload is spooled host-side first (bounded like an
    /// import; an archive is checked whole), then written by `warren-put`
    /// inside the sandbox as the user. A refused put writes nothing.
    pub async fn put_file<S>(
        &self,
        actor: &str,
        id: &str,
        path: &str,
        archive: bool,
        mut upload: S,
    ) -> Result<Uploaded, ManageError>
    where
        S: futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Unpin,
    {
        let result = async {
            check_path(path)?;
            self.record(id)?;
            self.need_namespaces_tier()?;
            let lock = self.tenant_lock(id);
            let _one_at_a_time = lock.lock().await;
            let limits = self.import_limits;
            let max = if archive {
                limits.max_archive_bytes()
            } else {
                limits.max_entry_bytes
            };
            let (mut file, size) = self.spool(&mut upload, max).await?;
            if archive {
                if size == 0 {
                    return Err(ManageError::BadRequest(
                        "empty upload: send a tar.gz as the request body".into(),
                    ));
                }
                file = check_archive(file, limits).await?;
            }
            let mut argv = vec![PUT_COMMAND.to_string()];
            if archive {
                argv.push("--archive".into());
            }
            for (flag, n) in [
                ("--max-bytes", limits.max_bytes),
                ("--max-entries", limits.max_entries),
                ("--max-entry-bytes", limits.max_entry_bytes),
            ] {
                argv.extend([flag.to_string(), n.to_string()]);
            }
            argv.extend(["--".to_string(), path.to_string()]);
            let cmd = ExecCommand {
                argv,
                ..Default::default()
            };
            let stdio = ExecStdio {
                stdin: Stream::Fd(file.into()),
                stdout: Stream::Piped,
                stderr: Stream::Piped,
            };
            let running = self.start(id, cmd, stdio).await?;
            let r = exec::collect(running.child, Vec::new(), ARCHIVE_TIMEOUT, 64 << 10).await;
            if r.reason != EndReason::Exit || r.exit_code != Some(0) {
                return Err(failure("warren-put", &r));
            }
            serde_json::from_str::<Uploaded>(r.stdout.trim()).map_err(|e| ManageError::Decode {
                what: format!("warren-put said {:?}", r.stdout),
                source: e,
            })
        }
        .await;
        match &result {
            Ok(u) => self.audit(
                actor,
                "files.put",
                Some(id),
                "ok",
                serde_json::json!({"path": u.path, "bytes": u.bytes, "archive": archive}),
            ),
            Err(e) => self.audit(
                actor,
                "files.put",
                Some(id),
                if e.is_internal() { "failed" } else { "refused" },
                serde_json::json!({"path": path, "archive": archive, "error": e.to_string()}),
            ),
        }
        result
    }
}

/// What a failed `warren-get` or `warren-put` means for the caller
/// (`runtime::files::exit`). Each refusal changed nothing in the home.
fn failure(tool: &str, r: &ExecResult) -> ManageError {
    let why = r
        .stderr
        .trim()
        .trim_start_matches(&format!("{tool}: "))
        .to_string();
    match (r.reason, r.exit_code.and_then(|c| u8::try_from(c).ok())) {
        (EndReason::MemoryLimit, _) => ManageError::TooLarge(format!(
            "{tool} needs more memory than the user's memory limit allows; nothing was written"
        )),
        (EndReason::Signal, _) => ManageError::Conflict(format!(
            "{tool} was killed by signal {} inside the user's sandbox (the user's limits or own processes)",
            r.signal.unwrap_or(0)
        )),
        (EndReason::Exit, Some(exit::REFUSED)) => ManageError::BadRequest(why),
        (EndReason::Exit, Some(exit::NOT_FOUND)) => ManageError::NotFound(why),
        (EndReason::Exit, Some(exit::CONFLICT)) => ManageError::Conflict(why),
        (EndReason::Exit, Some(exit::TOO_LARGE)) => ManageError::TooLarge(why),
        _ => ManageError::Internal(format!(
            "{tool} ended with {:?} {:?}/{:?}: {}",
            r.reason, r.exit_code, r.signal, why
        )),
    }
}
