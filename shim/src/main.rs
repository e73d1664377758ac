//! warren-shim: builds one sandbox and is its PID 1.
//!
//! The server (or `warren run`) starts this small, single-threaded binary
//! with an ordinary exec, hands it a `SandboxSpec` as JSON on one inherited
//! fd and a report channel on another:
//!
//! ```text
//! warren-shim create --spec-fd 3 --report-fd 4
//! ```
//!
//! It never runs an async runtime and never forks from a threaded process:
//! namespace set-up needs a single-threaded caller. See `create` for the
//! order of the steps, which is the security argument.

mod create;
mod limits;

use std::io::Read;
use std::os::fd::{OwnedFd, RawFd};
use std::process::ExitCode;

use warren_runtime::report::{self, Event, SetupError};
use warren_runtime::spec::SandboxSpec;
use warren_runtime::sys;

const USAGE: &str = "usage: warren-shim create --spec-fd N --report-fd N [--pty-socket-fd N]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (spec_fd, report_fd, pty_fd) = match parse_args(&args) {
        Ok(fds) => fds,
        Err(msg) => {
            eprintln!("warren-shim: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut report = match sys::adopt_inherited_fd(report_fd) {
        Ok(fd) => std::fs::File::from(fd),
        Err(e) => {
            eprintln!("warren-shim: report fd {report_fd}: {e}");
            return ExitCode::from(2);
        }
    };
    let pty_socket = match pty_fd.map(sys::adopt_inherited_fd).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("warren-shim: pty socket fd: {e}");
            return ExitCode::from(2);
        }
    };
    let code = match read_spec(spec_fd).and_then(|spec| create::run(spec, pty_socket, &mut report))
    {
        Ok(exit) => exit.shell_code(),
        Err(err) => {
            let code = err.exit_code();
            let _ = report::send(&mut report, &Event::Failed(err));
            code
        }
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn parse_args(args: &[String]) -> Result<(RawFd, RawFd, Option<RawFd>), String> {
    let mut spec = None;
    let mut report = None;
    let mut pty = None;
    let mut it = args.iter();
    match it.next().map(String::as_str) {
        Some("create") => {}
        Some(other) => return Err(format!("unknown command {other:?}")),
        None => return Err("missing command".into()),
    }
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let fd: RawFd = value
            .parse()
            .map_err(|_| format!("{flag}: not an fd number: {value:?}"))?;
        match flag.as_str() {
            "--spec-fd" => spec = Some(fd),
            "--report-fd" => report = Some(fd),
            "--pty-socket-fd" => pty = Some(fd),
            _ => return Err(format!("unknown option {flag:?}")),
        }
    }
    match (spec, report) {
        (Some(s), Some(r))
            if s > 2 && r > 2 && s != r && pty.is_none_or(|p| p > 2 && p != s && p != r) =>
        {
            Ok((s, r, pty))
        }
        _ => Err("--spec-fd, --report-fd and --pty-socket-fd must be distinct fds above 2".into()),
    }
}

fn read_spec(fd: RawFd) -> Result<SandboxSpec, SetupError> {
    let step = "read spec";
    let fd: OwnedFd = sys::adopt_inherited_fd(fd).map_err(|e| SetupError::errno(step, e))?;
    let mut buf = Vec::new();
    std::fs::File::from(fd)
        .take(1 << 20)
        .read_to_end(&mut buf)
        .map_err(|e| SetupError::new(step, e.to_string()))?;
    let spec: SandboxSpec = serde_json::from_slice(&buf)
        .map_err(|e| SetupError::new(step, format!("invalid spec: {e}")))?;
    spec.validate()
        .map_err(|e| SetupError::new("validate spec", e.to_string()))?;
    Ok(spec)
}
