//! Export and import of a home as tar.gz, made and unpacked inside the
//! sandbox as the user (docs/archives.md).

use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backend::{ExecChild, ExecCommand, ExecStdio, Stream};
use crate::exec::{self, EndReason, ExecResult};

use super::compressor::{Compressor, ExportSlot};
use super::{ManageError, Manager, Running};

/// The commands that move a home in and out, inside the sandbox as the
/// user (the shim answers to these names; see docs/archives.md).
pub const IMPORT_COMMAND: &str = "/opt/warren/bin/warren-import";
pub const EXPORT_COMMAND: &str = "/opt/warren/bin/warren-export";

/// How long an import or export may run.
pub const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How long the end of a compressed export (the encoder's last output and
/// its trailer) may take to reach the client.
const TRAILER_TIMEOUT: Duration = Duration::from_secs(60);

/// A tool whose stdout is streamed to a client ([`Manager::pump`]).
pub(super) struct Pumped {
    pub stdout: Output,
    pub stderr: Option<tokio::process::ChildStderr>,
    pub process: Box<dyn crate::backend::TerminalProcess>,
    pub lease: Option<crate::sessions::Lease>,
}

/// What a pumped tool's stdout becomes for the client.
pub(super) enum Output {
    /// Sent as it is.
    Raw(tokio::process::ChildStdout),
    /// A plain tar, gzip'd by the server on a thread of its own while the
    /// tenant's export slot is held.
    Gzip {
        gz: Compressor,
        /// Held until the export ends.
        _slot: ExportSlot,
    },
}

impl Output {
    /// The next chunk for the client; None at the end.
    async fn next(&mut self, buf: &mut [u8]) -> std::io::Result<Option<bytes::Bytes>> {
        use tokio::io::AsyncReadExt;
        match self {
            Output::Raw(out) => match out.read(buf).await? {
                0 => Ok(None),
                n => Ok(Some(bytes::Bytes::copy_from_slice(&buf[..n]))),
            },
            Output::Gzip { gz, .. } => gz.next().await,
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Imported {
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    /// Bytes of the upload (compressed).
    pub upload_bytes: u64,
}

impl Manager {
    /// Streams the user's home as tar.gz. `warren-export --format tar`
    /// walks it inside their sandbox as the user (host-side code never
    /// walks a home), and the server compresses the tar on a thread of its
    /// own, outside the user's CPU limit: one export at a time per tenant
    /// (a second gets [`ManageError::Conflict`]), see
    /// `compressor`. A failure after the first byte ends the stream with
    /// an error and no gzip trailer (the client sees a cut transfer, never
    /// a complete-looking archive).
    pub async fn export(
        self: &Arc<Self>,
        actor: &str,
        id: &str,
    ) -> Result<impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>>, ManageError>
    {
        self.need_namespaces_tier()?;
        let slot = self.exports.take(id).ok_or_else(|| {
            ManageError::Conflict(format!(
                "an export of {id} is running; one at a time per user, try again when it ends"
            ))
        })?;
        let cmd = ExecCommand {
            argv: vec![EXPORT_COMMAND.into(), "--format".into(), "tar".into()],
            ..Default::default()
        };
        let stdio = ExecStdio {
            stdin: Stream::Null,
            stdout: Stream::Piped,
            stderr: Stream::Piped,
        };
        let running = self.start(id, cmd, stdio).await?;
        let Running { child, _lease } = running;
        let ExecChild {
            stdout,
            stderr,
            mut process,
            ..
        } = child;
        let compressor = match stdout.map(Compressor::start) {
            Some(Ok(c)) => c,
            failed => {
                process.kill();
                process.wait().await;
                return Err(match failed {
                    Some(Err(e)) => ManageError::io("starting the export's compression")(e),
                    _ => ManageError::Internal("export: no stdout".into()),
                });
            }
        };
        let stderr = stderr.and_then(|s| tokio::process::ChildStderr::from_std(s).ok());
        Ok(self.pump(
            Pumped {
                stdout: Output::Gzip {
                    gz: compressor,
                    _slot: slot,
                },
                stderr,
                process,
                lease: _lease,
            },
            actor,
            id,
            "export",
            serde_json::Value::Null,
        ))
    }

    /// Streams a tool's stdout to the client, then audits `action` with
    /// `detail` (an object, or null) and the bytes sent. A failure after
    /// the first byte ends the stream with an error (the client sees a cut
    /// transfer, never a complete-looking one).
    pub(super) fn pump(
        self: &Arc<Self>,
        tool: Pumped,
        actor: &str,
        id: &str,
        action: &'static str,
        detail: serde_json::Value,
    ) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
        let Pumped {
            stdout,
            stderr,
            mut process,
            lease: _lease,
        } = tool;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(8);
        let me = Arc::clone(self);
        let (actor, id) = (actor.to_string(), id.to_string());
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let errors = tokio::spawn(async move {
                let mut text = String::new();
                if let Some(mut e) = stderr {
                    let mut buf = Vec::new();
                    let _ = (&mut e).take(64 << 10).read_to_end(&mut buf).await;
                    text = String::from_utf8_lossy(&buf).into_owned();
                }
                text
            });
            let mut out = stdout;
            let mut sent = 0u64;
            let mut buf = vec![0u8; 64 << 10];
            let copy = async {
                loop {
                    match out.next(&mut buf).await {
                        Ok(None) => return true,
                        Ok(Some(chunk)) => {
                            sent += chunk.len() as u64;
                            if tx.send(Ok(chunk)).await.is_err() {
                                return false; // the client went away
                            }
                        }
                        Err(_) => return false,
                    }
                }
            };
            let completed = tokio::time::timeout(ARCHIVE_TIMEOUT, copy)
                .await
                .unwrap_or(false);
            if !completed {
                process.kill();
            }
            let exit = process.wait().await;
            let stderr = errors.await.unwrap_or_default();
            let mut ok = completed && exit.code == Some(0);
            if let Output::Gzip { gz: c, .. } = &mut out {
                // The trailer only for an export that succeeded.
                c.trailer(ok);
                if ok {
                    let rest = async {
                        while let Some(chunk) = c.next().await? {
                            sent += chunk.len() as u64;
                            if tx.send(Ok(chunk)).await.is_err() {
                                return Err(std::io::ErrorKind::BrokenPipe.into());
                            }
                        }
                        Ok::<_, std::io::Error>(())
                    };
                    ok = matches!(
                        tokio::time::timeout(TRAILER_TIMEOUT, rest).await,
                        Ok(Ok(()))
                    );
                }
            }
            if !ok {
                let why = format!(
                    "{action} failed (exit {:?}, signal {:?}): {}",
                    exit.code,
                    exit.signal,
                    stderr.trim()
                );
                tracing::warn!(user = %id, "{why}");
                let _ = tx.send(Err(std::io::Error::other(why))).await;
            }
            drop(_lease);
            let mut detail = match detail {
                serde_json::Value::Object(m) => m,
                _ => serde_json::Map::new(),
            };
            detail.insert("bytes".into(), sent.into());
            detail.insert("exit_code".into(), exit.code.into());
            detail.insert("signal".into(), exit.signal.into());
            me.audit(
                &actor,
                action,
                Some(&id),
                if ok { "ok" } else { "failed" },
                serde_json::Value::Object(detail),
            );
        });
        futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
    }

    /// Unpacks a tar.gz into the user's home. The upload is spooled to an
    /// unnamed temporary file (bounded), checked whole by
    /// `archive::validate` — a refused archive writes nothing into the
    /// home — and only then unpacked by `warren-import` inside the user's
    /// sandbox, as the user, so the host never writes into a home a tenant
    /// controls. Imports (and deletes) of one tenant run one at a time.
    pub async fn import<S>(&self, actor: &str, id: &str, upload: S) -> Result<Imported, ManageError>
    where
        S: futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Unpin,
    {
        self.record(id)?;
        let lock = self.tenant_lock(id);
        let _one_at_a_time = lock.lock().await;
        let result = self.import_locked(id, upload).await;
        match &result {
            Ok(s) => self.audit(
                actor,
                "import",
                Some(id),
                "ok",
                serde_json::to_value(s).unwrap_or_default(),
            ),
            Err(e) => self.audit(
                actor,
                "import",
                Some(id),
                match e {
                    e if e.is_internal() => "failed",
                    _ => "refused",
                },
                serde_json::json!({"error": e.to_string()}),
            ),
        }
        result
    }

    async fn import_locked<S>(&self, id: &str, mut upload: S) -> Result<Imported, ManageError>
    where
        S: futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Unpin,
    {
        self.need_namespaces_tier()?;
        let limits = self.import_limits;
        let (file, size) = self.spool(&mut upload, limits.max_archive_bytes()).await?;
        if size == 0 {
            return Err(ManageError::BadRequest(
                "empty upload: send a tar.gz as the request body".into(),
            ));
        }
        let file = check_archive(file, limits).await?;
        let cmd = ExecCommand {
            argv: vec![
                IMPORT_COMMAND.into(),
                "--max-bytes".into(),
                limits.max_bytes.to_string(),
                "--max-entries".into(),
                limits.max_entries.to_string(),
                "--max-entry-bytes".into(),
                limits.max_entry_bytes.to_string(),
            ],
            ..Default::default()
        };
        let stdio = ExecStdio {
            stdin: Stream::Fd(file.into()),
            stdout: Stream::Piped,
            stderr: Stream::Piped,
        };
        let running = self.start(id, cmd, stdio).await.map_err(|e| match e {
            // As when the unpacker is killed for memory once it runs.
            ManageError::OutOfMemory(_) => ManageError::TooLarge(
                "unpacking this archive needs more memory than the user's memory limit allows \
                 (the unpacker could not even start); nothing was imported"
                    .into(),
            ),
            e => e,
        })?;
        let r = exec::collect(running.child, Vec::new(), ARCHIVE_TIMEOUT, 64 << 10).await;
        if r.reason != EndReason::Exit || r.exit_code != Some(0) {
            if r.reason != EndReason::Exit {
                // Killed while unpacking: its staging directory is left.
                self.clean_import_leftovers(id).await;
            }
            return Err(import_failure(&r));
        }
        let s: warren_runtime::archive::Summary =
            serde_json::from_str(r.stdout.trim()).map_err(|e| ManageError::Decode {
                what: format!("warren-import said {:?}", r.stdout),
                source: e,
            })?;
        Ok(Imported {
            entries: s.entries,
            files: s.files,
            dirs: s.dirs,
            symlinks: s.symlinks,
            bytes: s.bytes,
            upload_bytes: size,
        })
    }
}

impl Manager {
    /// Spools an upload into an unnamed temporary file in the upload
    /// directory, refusing it (413) past `max` bytes; rewound, with its size.
    pub(super) async fn spool<S>(
        &self,
        upload: &mut S,
        max: u64,
    ) -> Result<(std::fs::File, u64), ManageError>
    where
        S: futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Unpin,
    {
        use futures_util::StreamExt;
        use std::io::{Seek, Write};
        let dir = self.upload_dir();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(ManageError::io(dir.display().to_string()))?;
        let mut file = tempfile::tempfile_in(&dir)
            .map_err(|e| ManageError::io(format!("temporary file in {}", dir.display()))(e))?;
        let mut size = 0u64;
        while let Some(chunk) = upload.next().await {
            let chunk =
                chunk.map_err(|e| ManageError::BadRequest(format!("reading the upload: {e}")))?;
            size += chunk.len() as u64;
            if size > max {
                return Err(ManageError::TooLarge(format!(
                    "the upload is larger than {} MiB",
                    max >> 20
                )));
            }
            file.write_all(&chunk)
                .map_err(ManageError::io("spooling the upload"))?;
        }
        file.rewind()
            .map_err(ManageError::io("rewinding the upload"))?;
        Ok((file, size))
    }

    /// Removes what an import killed while unpacking left in the home
    /// (`warren-import --clean`, inside the sandbox as the user: host-side
    /// code never walks a home). Best effort: the next import sweeps too.
    async fn clean_import_leftovers(&self, id: &str) {
        let cmd = ExecCommand {
            argv: vec![IMPORT_COMMAND.into(), "--clean".into()],
            ..Default::default()
        };
        let stdio = ExecStdio {
            stdin: Stream::Null,
            stdout: Stream::Piped,
            stderr: Stream::Piped,
        };
        let r = match self.start(id, cmd, stdio).await {
            Ok(running) => {
                exec::collect(running.child, Vec::new(), Duration::from_secs(60), 64 << 10).await
            }
            Err(e) => {
                tracing::warn!(user = id, "cleaning after a killed import: {e}");
                return;
            }
        };
        if r.reason != EndReason::Exit || r.exit_code != Some(0) {
            tracing::warn!(
                user = id,
                "cleaning after a killed import: {:?} {:?}: {}",
                r.reason,
                r.exit_code,
                r.stderr.trim()
            );
        }
    }
}

/// Checks a spooled tar.gz whole (`archive::validate`) before anything
/// reaches a home; the file comes back rewound.
pub(super) async fn check_archive(
    file: std::fs::File,
    limits: warren_runtime::archive::ArchiveLimits,
) -> Result<std::fs::File, ManageError> {
    use std::io::Seek;
    let check = file
        .try_clone()
        .map_err(ManageError::io("reopening the upload"))?;
    tokio::task::spawn_blocking(move || warren_runtime::archive::validate(check, &limits))
        .await?
        .map_err(|e| {
            use warren_runtime::archive::ArchiveError as A;
            match e {
                e @ A::Io { .. } => ManageError::Archive {
                    what: "checking the upload",
                    source: e,
                },
                A::EntryTooBig { .. }
                | A::TooManyBytes { .. }
                | A::TooLarge { .. }
                | A::TooManyEntries { .. }
                | A::TooMuchMetadata { .. } => {
                    ManageError::TooLarge(format!("archive refused: {e}"))
                }
                e => ManageError::BadRequest(format!("archive refused: {e}")),
            }
        })?;
    let mut file = file;
    file.rewind()
        .map_err(ManageError::io("rewinding the upload"))?;
    Ok(file)
}

/// What a failed `warren-import` means for the caller. Imports are
/// all-or-nothing, so each of these changed nothing in the home. The
/// user's own limits and processes are not a server fault (found by the
/// API fuzzer: an OOM kill answered 500, then a SIGKILL not recognised as
/// one did).
fn import_failure(r: &ExecResult) -> ManageError {
    const NOTHING: &str = "nothing was imported";
    match r.reason {
        EndReason::MemoryLimit => ManageError::TooLarge(format!(
            "unpacking this archive needs more memory than the user's memory limit allows; {NOTHING}"
        )),
        EndReason::Signal => ManageError::Conflict(format!(
            "warren-import was killed by signal {} inside the user's sandbox (the user's limits or own processes); {NOTHING}",
            r.signal.unwrap_or(0)
        )),
        // ENOSPC, EDQUOT: the home's disk or quota, the user's to free.
        _ if r.stderr.contains("(os error 28)") || r.stderr.contains("(os error 122)") => {
            ManageError::TooLarge(format!(
                "the user's home has no room for this archive ({}); {NOTHING}",
                r.stderr.trim()
            ))
        }
        // Exit 1: refused against this home (it has a directory where the
        // archive has a file, a directory it cannot write...), checked
        // before anything is written.
        EndReason::Exit if r.exit_code == Some(1) => ManageError::Conflict(format!(
            "the archive does not fit the user's home: {}; {NOTHING}",
            r.stderr.trim().trim_start_matches("warren-import: ")
        )),
        _ => ManageError::Internal(format!(
            "warren-import ended with {:?} {:?}/{:?}: {}",
            r.reason,
            r.exit_code,
            r.signal,
            r.stderr.trim()
        )),
    }
}
