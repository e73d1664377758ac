//! Commands in a tenant's sandbox: one-shot, streamed, or on the caller's stdio.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::backend::{ExecChild, ExecCommand, ExecStdio, Stream};
use crate::exec::{self, EndReason, ExecEnd, ExecResult};
use crate::sessions::Lease;
use crate::user::UserId;

use super::{start_failure, ManageError, Manager, Runner, MAX_CWD_CHARS, MIN_TIMEOUT_SECS};

/// A running command plus whatever keeps its sandbox alive.
pub struct Running {
    pub child: ExecChild,
    pub(super) _lease: Option<Lease>,
}

/// The body of an `exec` request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    /// Relative to the user's home.
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Given to the command on stdin (UTF-8 text).
    #[serde(default)]
    pub stdin: Option<String>,
    /// Seconds; default 60, at most 3600.
    #[serde(default)]
    pub timeout_secs: Option<f64>,
}

impl Manager {
    /// Starts `cmd` in the user's sandbox.
    pub async fn start(
        &self,
        id: &str,
        cmd: ExecCommand,
        stdio: ExecStdio,
    ) -> Result<Running, ManageError> {
        self.record(id)?;
        let user = UserId::parse(id).map_err(|e| ManageError::BadRequest(e.to_string()))?;
        match &self.runner {
            Runner::Registry(reg) => {
                let lease = reg.lease(&user).await?;
                let child = lease
                    .sandbox()
                    .exec(cmd, stdio)
                    .await
                    .map_err(start_failure)?;
                Ok(Running {
                    child,
                    _lease: Some(lease),
                })
            }
            Runner::OneShot(backend) => Ok(Running {
                child: backend
                    .exec_once(&user, cmd, stdio)
                    .await
                    .map_err(start_failure)?,
                _lease: None,
            }),
        }
    }

    fn exec_command(req: &ExecRequest) -> Result<(ExecCommand, Duration), ManageError> {
        if req.argv.is_empty() || req.argv[0].is_empty() {
            return Err(ManageError::BadRequest("argv must name a command".into()));
        }
        if let Some(n) = req.cwd.as_ref().map(|c| c.chars().count()) {
            if n > MAX_CWD_CHARS {
                return Err(ManageError::BadRequest(format!(
                    "cwd is {n} characters long; the limit is {MAX_CWD_CHARS}"
                )));
            }
        }
        let cwd = exec::resolve_cwd(req.cwd.as_deref())
            .map_err(|e| ManageError::BadRequest(e.to_string()))?;
        for (k, v) in &req.env {
            let ok = !k.is_empty() && !k.contains('=') && !k.contains('\0') && !v.contains('\0');
            if !ok {
                return Err(ManageError::BadRequest(format!(
                    "invalid environment variable {k:?}"
                )));
            }
        }
        if req.argv.iter().any(|a| a.contains('\0')) {
            return Err(ManageError::BadRequest("argv contains a NUL byte".into()));
        }
        let timeout = match req.timeout_secs {
            None => exec::DEFAULT_TIMEOUT,
            Some(t)
                if t.is_finite()
                    && (MIN_TIMEOUT_SECS..=exec::MAX_TIMEOUT.as_secs_f64()).contains(&t) =>
            {
                Duration::from_secs_f64(t)
            }
            Some(t) => {
                return Err(ManageError::BadRequest(format!(
                    "timeout_secs {t} is outside {MIN_TIMEOUT_SECS} to {}",
                    exec::MAX_TIMEOUT.as_secs()
                )))
            }
        };
        Ok((
            ExecCommand {
                argv: req.argv.clone(),
                env: req
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                cwd,
            },
            timeout,
        ))
    }

    /// Checks the request and starts the command; a failed start is
    /// audited here.
    async fn start_exec(
        &self,
        actor: &str,
        id: &str,
        req: &ExecRequest,
        stdio: ExecStdio,
    ) -> Result<(Running, Duration), ManageError> {
        let (cmd, timeout) = Self::exec_command(req)?;
        match self.start(id, cmd, stdio).await {
            Ok(r) => Ok((r, timeout)),
            // Audited by the caller, as the command's end.
            Err(e @ ManageError::NotStarted { .. }) => Err(e),
            Err(e) => {
                self.audit(
                    actor,
                    "exec",
                    Some(id),
                    "failed",
                    serde_json::json!({"argv": req.argv, "error": e.to_string()}),
                );
                Err(e)
            }
        }
    }

    /// Counts and audits a command that ran.
    fn exec_ended(&self, actor: &str, id: &str, argv: &[String], end: &ExecEnd, stream: bool) {
        self.count_exec(end.reason);
        self.audit(
            actor,
            "exec",
            Some(id),
            "ok",
            serde_json::json!({
                "argv": argv,
                "stream": stream,
                "exit_code": end.exit_code,
                "signal": end.signal,
                "reason": end.reason,
                "duration_ms": end.duration_ms,
            }),
        );
    }

    /// The end of a command that could not be exec'd, counted and audited
    /// like any other; its message is what it "printed" on stderr.
    fn not_started_end(
        &self,
        actor: &str,
        id: &str,
        argv: &[String],
        exit_code: i32,
        began: Instant,
        stream: bool,
    ) -> ExecEnd {
        let end = ExecEnd {
            exit_code: Some(exit_code),
            signal: None,
            reason: EndReason::Exit,
            duration_ms: began.elapsed().as_millis() as u64,
        };
        self.exec_ended(actor, id, argv, &end, stream);
        end
    }

    /// Runs a command and returns everything it did.
    pub async fn exec(
        &self,
        actor: &str,
        id: &str,
        req: ExecRequest,
    ) -> Result<ExecResult, ManageError> {
        let began = Instant::now();
        let (running, timeout) = match self.start_exec(actor, id, &req, ExecStdio::piped()).await {
            Err(ManageError::NotStarted { exit_code, message }) => {
                let end = self.not_started_end(actor, id, &req.argv, exit_code, began, false);
                return Ok(ExecResult {
                    exit_code: end.exit_code,
                    signal: None,
                    reason: end.reason,
                    stdout: String::new(),
                    stderr: message,
                    stdout_truncated: false,
                    stderr_truncated: false,
                    duration_ms: end.duration_ms,
                });
            }
            other => other?,
        };
        let stdin = req.stdin.clone().unwrap_or_default().into_bytes();
        let result = exec::collect(running.child, stdin, timeout, exec::MAX_OUTPUT).await;
        drop(running._lease);
        self.exec_ended(actor, id, &req.argv, &result.end(), false);
        Ok(result)
    }

    /// Runs a command and streams its output (NDJSON, see
    /// [`exec::stream`]).
    pub async fn exec_stream(
        self: &Arc<Self>,
        actor: &str,
        id: &str,
        req: ExecRequest,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>, ManageError>
    {
        let began = Instant::now();
        let (running, timeout) = match self.start_exec(actor, id, &req, ExecStdio::piped()).await {
            Err(ManageError::NotStarted { exit_code, message }) => {
                let end = self.not_started_end(actor, id, &req.argv, exit_code, began, true);
                return Ok(not_started_stream(&message, &end));
            }
            other => other?,
        };
        let Running { child, _lease } = running;
        let me = Arc::clone(self);
        let (actor, id2, argv) = (actor.to_string(), id.to_string(), req.argv.clone());
        let stdin = req.stdin.unwrap_or_default().into_bytes();
        Ok(exec::stream(child, stdin, timeout, move |end: &ExecEnd| {
            drop(_lease);
            me.exec_ended(&actor, &id2, &argv, end, true);
        }))
    }

    /// Runs a command with the caller's own stdio (the command line's
    /// `warren exec`): nothing is captured, the end is returned.
    pub async fn exec_inherit(
        &self,
        actor: &str,
        id: &str,
        req: ExecRequest,
    ) -> Result<ExecEnd, ManageError> {
        let stdio = ExecStdio {
            stdin: Stream::Inherit,
            stdout: Stream::Inherit,
            stderr: Stream::Inherit,
        };
        let began = Instant::now();
        let (mut running, timeout) = match self.start_exec(actor, id, &req, stdio).await {
            Err(ManageError::NotStarted { exit_code, message }) => {
                // The caller's stderr is the command's.
                eprint!("{message}");
                return Ok(self.not_started_end(actor, id, &req.argv, exit_code, began, false));
            }
            other => other?,
        };
        let (exit, timed_out) = exec::wait_with_timeout(&mut running.child.process, timeout).await;
        let end = ExecEnd {
            exit_code: exit.code,
            signal: exit.signal,
            reason: exec::reason_of(&exit, timed_out),
            duration_ms: began.elapsed().as_millis() as u64,
        };
        self.exec_ended(actor, id, &req.argv, &end, false);
        Ok(end)
    }
}

/// The NDJSON of `exec/stream` for a command that could not be exec'd:
/// its message on stderr, then its end.
fn not_started_stream(
    message: &str,
    end: &ExecEnd,
) -> tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    for value in [
        serde_json::json!({"stream": "stderr", "data": message}),
        serde_json::to_value(end).unwrap_or_default(),
    ] {
        let mut line = value.to_string().into_bytes();
        line.push(b'\n');
        let _ = tx.try_send(Ok(bytes::Bytes::from(line)));
    }
    rx
}
