//! The WebSocket protocol between a terminal client and `warren serve`,
//! version 1. docs/protocol.md is the contract; this module is its code.
//!
//! * Binary frames carry terminal bytes, both ways, unchanged.
//! * Text frames carry one JSON object with a `type`, for control.
//! * Close codes mirror HTTP statuses: 4401, 4403, 4404, 4429, 4500, …
//!
//! A malformed control frame gets an `error` frame back and changes nothing
//! else: the connection and the terminal go on.

use serde::{Deserialize, Serialize};

use warren_domain::backend::SandboxEnd;
use warren_domain::exit::{ExitCause, TerminalExit};
use warren_domain::sessions::SessionError;
pub use warren_domain::WinSize;
use warren_runtime::record::SandboxRecord;

/// The WebSocket subprotocol a client offers (`Sec-WebSocket-Protocol`).
/// A later, incompatible protocol gets a new name (`warren.v2`).
pub const SUBPROTOCOL: &str = "warren.v1";

/// Largest terminal the server keeps a screen for (columns × rows).
pub const MAX_COLS: u16 = 500;
pub const MAX_ROWS: u16 = 200;

/// WebSocket close codes. 1000/1001 are the standard ones; 4xxx mirror the
/// HTTP status of the same meaning.
pub mod close {
    /// The terminal ended (an `exit` frame came first).
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down (an `exit` frame came first when a
    /// terminal was attached).
    pub const GOING_AWAY: u16 = 1001;
    /// A frame broke the WebSocket protocol (RFC 6455 §7.4.1).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame was not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A message over the size limit (1 MiB).
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const BAD_REQUEST: u16 = 4400;
    pub const UNAUTHENTICATED: u16 = 4401;
    pub const FORBIDDEN: u16 = 4403;
    pub const NOT_FOUND: u16 = 4404;
    pub const CAPACITY: u16 = 4429;
    pub const INTERNAL: u16 = 4500;
    pub const UNAVAILABLE: u16 = 4503;
}

/// A size within 1..=MAX_COLS × 1..=MAX_ROWS, or why not.
pub fn win_size(cols: u16, rows: u16) -> Result<WinSize, ProtocolError> {
    if cols == 0 || rows == 0 || cols > MAX_COLS || rows > MAX_ROWS {
        return Err(ProtocolError::BadSize { cols, rows });
    }
    Ok(WinSize { cols, rows })
}

/// The WebSocket close code for a session error.
pub fn session_close_code(e: &SessionError) -> u16 {
    match e {
        SessionError::NotFound => close::NOT_FOUND,
        SessionError::Capacity(_) | SessionError::Limit { .. } => close::CAPACITY,
        SessionError::ShuttingDown => close::UNAVAILABLE,
        SessionError::Backend(_) | SessionError::Io(_) => close::INTERNAL,
    }
}

/// Why a terminal ended, as the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// The shell exited by itself (`code` or `signal` says how).
    Exit,
    /// Nobody watched the terminal for the grace period, or the sandbox was
    /// idle past the idle timeout.
    IdleTimeout,
    /// The sandbox hit its memory limit and the kernel killed the shell.
    MemoryLimit,
    /// The server is shutting down.
    ServerShutdown,
    /// The terminal was closed on the server's side (its sandbox was
    /// stopped, or it was closed through the API).
    Closed,
    /// The sandbox itself ended (its PID 1 died, or was killed); the next
    /// terminal starts a fresh one. The `sandbox` field says why.
    SandboxEnded,
}

impl ExitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Exit => "exit",
            ExitReason::IdleTimeout => "idle_timeout",
            ExitReason::MemoryLimit => "memory_limit",
            ExitReason::ServerShutdown => "server_shutdown",
            ExitReason::Closed => "closed",
            ExitReason::SandboxEnded => "sandbox_ended",
        }
    }
}

/// How a terminal ended: what the `exit` frame says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: ExitReason,
    /// With `sandbox_ended`: why the sandbox ended, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxEnd>,
}

impl From<ExitCause> for ExitReason {
    fn from(cause: ExitCause) -> ExitReason {
        match cause {
            ExitCause::Exit => ExitReason::Exit,
            ExitCause::IdleTimeout => ExitReason::IdleTimeout,
            ExitCause::MemoryLimit => ExitReason::MemoryLimit,
            ExitCause::ServerShutdown => ExitReason::ServerShutdown,
            ExitCause::Closed => ExitReason::Closed,
            ExitCause::SandboxEnded => ExitReason::SandboxEnded,
        }
    }
}

impl From<TerminalExit> for ExitInfo {
    fn from(exit: TerminalExit) -> ExitInfo {
        ExitInfo {
            code: exit.code,
            signal: exit.signal,
            reason: exit.reason.into(),
            sandbox: exit.sandbox,
        }
    }
}

/// Frames a client sends (text frames).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    Resize(WinSize),
    Ping,
}

/// Frames the server sends (text frames).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    Hello {
        protocol: &'static str,
        terminal: &'a str,
        user: &'a str,
        /// The sandbox's record as the shim made it: `tier`, `limits`,
        /// `seccomp`, `landlock` at the frame's top level.
        #[serde(flatten)]
        sandbox: &'a SandboxRecord,
        cols: u16,
        rows: u16,
    },
    Exit(ExitInfo),
    Pong,
    Error {
        message: &'a str,
    },
}

impl ServerMessage<'_> {
    pub fn to_json(&self) -> String {
        // Serializing these plain structs cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{\"type\":\"error\"}"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("control frame is not valid JSON: {0}")]
    Json(String),
    #[error("control frame has no \"type\" string")]
    NoType,
    #[error("unknown control frame type {0:?}")]
    UnknownType(String),
    #[error("bad {kind} frame: {detail}")]
    BadFields { kind: &'static str, detail: String },
    #[error(
        "terminal size {cols}x{rows} is out of range (1..={MAX_COLS} columns, 1..={MAX_ROWS} rows)"
    )]
    BadSize { cols: u16, rows: u16 },
}

#[derive(Deserialize)]
struct Typed {
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct ResizeFields {
    cols: u16,
    rows: u16,
}

/// Parses one client text frame. Unknown fields are ignored (a newer client
/// may send more); an unknown `type` is an error.
pub fn parse_client(text: &str) -> Result<ClientMessage, ProtocolError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ProtocolError::Json(e.to_string()))?;
    let typed: Typed = serde_json::from_value(value.clone()).map_err(|_| ProtocolError::NoType)?;
    match typed.kind.as_deref() {
        Some("resize") => {
            let f: ResizeFields =
                serde_json::from_value(value).map_err(|e| ProtocolError::BadFields {
                    kind: "resize",
                    detail: e.to_string(),
                })?;
            Ok(ClientMessage::Resize(win_size(f.cols, f.rows)?))
        }
        Some("ping") => Ok(ClientMessage::Ping),
        Some(other) => Err(ProtocolError::UnknownType(truncate(other, 40))),
        None => Err(ProtocolError::NoType),
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resize_and_ping() {
        assert_eq!(
            parse_client(r#"{"type":"resize","cols":100,"rows":40}"#),
            Ok(ClientMessage::Resize(WinSize {
                cols: 100,
                rows: 40
            }))
        );
        assert_eq!(parse_client(r#"{"type":"ping"}"#), Ok(ClientMessage::Ping));
        // Unknown extra fields are fine.
        assert_eq!(
            parse_client(r#"{"type":"ping","id":7}"#),
            Ok(ClientMessage::Ping)
        );
    }

    #[test]
    fn rejects_malformed_frames() {
        assert!(matches!(parse_client("{"), Err(ProtocolError::Json(_))));
        assert!(matches!(parse_client("[]"), Err(ProtocolError::NoType)));
        assert!(matches!(parse_client("{}"), Err(ProtocolError::NoType)));
        assert!(matches!(
            parse_client(r#"{"type":5}"#),
            Err(ProtocolError::NoType)
        ));
        assert!(matches!(
            parse_client(r#"{"type":"launch"}"#),
            Err(ProtocolError::UnknownType(_))
        ));
        assert!(matches!(
            parse_client(r#"{"type":"resize","cols":"80","rows":24}"#),
            Err(ProtocolError::BadFields { .. })
        ));
        assert!(matches!(
            parse_client(r#"{"type":"resize","cols":-1,"rows":24}"#),
            Err(ProtocolError::BadFields { .. })
        ));
        assert_eq!(
            parse_client(r#"{"type":"resize","cols":0,"rows":24}"#),
            Err(ProtocolError::BadSize { cols: 0, rows: 24 })
        );
        assert_eq!(
            parse_client(r#"{"type":"resize","cols":80,"rows":60000}"#),
            Err(ProtocolError::BadSize {
                cols: 80,
                rows: 60000
            })
        );
    }

    #[test]
    fn server_frames_serialize_as_documented() {
        let exit = ServerMessage::Exit(ExitInfo {
            code: Some(3),
            signal: None,
            reason: ExitReason::Exit,
            sandbox: None,
        });
        assert_eq!(
            exit.to_json(),
            r#"{"type":"exit","code":3,"signal":null,"reason":"exit"}"#
        );
        let ended = ServerMessage::Exit(ExitInfo {
            code: None,
            signal: Some(9),
            reason: ExitReason::SandboxEnded,
            sandbox: Some(SandboxEnd {
                cause: warren_domain::backend::EndCause::Killed,
                signal: Some(9),
                code: None,
            }),
        });
        assert_eq!(
            ended.to_json(),
            r#"{"type":"exit","code":null,"signal":9,"reason":"sandbox_ended","sandbox":{"cause":"killed","signal":9,"code":null}}"#
        );
        assert_eq!(ServerMessage::Pong.to_json(), r#"{"type":"pong"}"#);
        let mut limits = warren_runtime::record::LimitsInForce::cgroup(
            warren_runtime::cgroups::Limits {
                memory_bytes: Some(512 << 20),
                cpu: None,
                pids: Some(512),
            },
            vec!["cpu".into()],
        );
        limits.per_process = vec!["core dumps off".into()];
        // What a client of the first shape saw: the record's optional parts
        // (seccomp, Landlock, reasons) are left out when absent.
        let record = SandboxRecord {
            tier: warren_runtime::spec::Isolation::Landlock,
            limits,
            seccomp: None,
            landlock: None,
            disk: None,
            network: None,
        };
        let hello = ServerMessage::Hello {
            protocol: SUBPROTOCOL,
            terminal: "t1",
            user: "alice",
            sandbox: &record,
            cols: 80,
            rows: 24,
        };
        assert_eq!(
            hello.to_json(),
            r#"{"type":"hello","protocol":"warren.v1","terminal":"t1","user":"alice","tier":"landlock","limits":{"memory_bytes":536870912,"cpu":null,"pids":512,"missing":["cpu"],"per_process":["core dumps off"]},"cols":80,"rows":24}"#
        );
        assert_eq!(
            ServerMessage::Error { message: "no" }.to_json(),
            r#"{"type":"error","message":"no"}"#
        );
    }

    #[test]
    fn hello_carries_the_whole_record() {
        let mut limits = warren_runtime::record::LimitsInForce::cgroup(
            warren_runtime::cgroups::Limits::NONE,
            vec!["memory".into()],
        );
        limits
            .reasons
            .insert("memory".into(), "no delegated cgroup".into());
        let record = SandboxRecord {
            tier: warren_runtime::spec::Isolation::Namespaces,
            limits,
            seccomp: Some("default-v2".into()),
            landlock: Some(warren_runtime::landlock::expected(4)),
            disk: None,
            network: None,
        };
        let hello = ServerMessage::Hello {
            protocol: SUBPROTOCOL,
            terminal: "t1",
            user: "alice",
            sandbox: &record,
            cols: 80,
            rows: 24,
        };
        let v: serde_json::Value = serde_json::from_str(&hello.to_json()).unwrap();
        assert_eq!(v["seccomp"], "default-v2");
        assert_eq!(v["landlock"]["level"], "partially_enforced");
        assert_eq!(v["limits"]["reasons"]["memory"], "no delegated cgroup");
        // The frame minus its own fields is the record, unchanged.
        let mut rest = v.as_object().unwrap().clone();
        for own in ["type", "protocol", "terminal", "user", "cols", "rows"] {
            rest.remove(own);
        }
        let back: SandboxRecord = serde_json::from_value(rest.into()).unwrap();
        assert_eq!(back, record);
    }
}
