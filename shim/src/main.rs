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
//! namespace set-up needs a single-threaded caller. The runtime plans the
//! sandbox (`warren_runtime::plan`); `namespaced` and `shared_host` hold
//! one table of contents per side and tier that executes that plan, step
//! by step, in the order that is the security argument.
#![forbid(unsafe_code)]

mod applets;
mod command;
mod connector;
mod disk;
mod file_tools;
mod inside;
mod join;
mod limits;
mod namespaced;
mod network;
mod outside;
mod process;
mod reexec;
mod shared_host;
mod terminals;

use std::io::Read;
use std::os::fd::{OwnedFd, RawFd};
use std::process::ExitCode;

use nix::unistd::Pid;
use warren_runtime::plan::Confinement;
use warren_runtime::report::{self, Event, SetupError};
use warren_runtime::spec::SandboxSpec;
use warren_runtime::sys;

const USAGE: &str = "usage: warren-shim create --spec-fd N --report-fd N [--pty-socket-fd N] [--connector-fd N] [--control-fd N]
       warren-shim join --init-pid PID --parent-pid PID [--cgroup ID] --spec-fd N --report-fd N [--pty-socket-fd N]
       warren-shim init --spec-fd N --plan-fd N --report-fd N [--pty-socket-fd N] [--control-fd N]   (PID 1 re-executing itself)";

/// What the command line asks for.
struct Args {
    join: Option<join::Target>,
    /// `init`: the sandbox's PID 1 after it re-executed itself inside,
    /// handed the confinement planned outside on this fd.
    init: Option<RawFd>,
    spec_fd: RawFd,
    report_fd: RawFd,
    pty_fd: Option<RawFd>,
    /// `create`: the socket the sandbox's connector serves.
    connector_fd: Option<RawFd>,
    /// A held sandbox: PID 1's end of the server's control channel.
    control_fd: Option<RawFd>,
}

fn main() -> ExitCode {
    // Bound into every sandbox of the namespace tier as
    // /opt/warren/bin/warren-info and linked there under the applets'
    // names (the other tiers run the `warren-info` binary installed next
    // to this one, and have no applets).
    let name = std::env::args().next().unwrap_or_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match name.rsplit('/').next() {
        Some("warren-info" | "container-info") => return warren_info(),
        Some("warren-import") => return applets::import(&args),
        Some("warren-export") => return applets::export(&args),
        Some("warren-get") => return file_tools::get(&args),
        Some("warren-put") => return file_tools::put(&args),
        Some("warren-download") => return file_tools::download(&args),
        _ => {}
    }
    let args = match parse_args(&args) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("warren-shim: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut report = match sys::adopt_inherited_fd(args.report_fd) {
        Ok(fd) => std::fs::File::from(fd),
        Err(e) => {
            eprintln!("warren-shim: report fd {}: {e}", args.report_fd);
            return ExitCode::from(2);
        }
    };
    let pty_socket = match args.pty_fd.map(sys::adopt_inherited_fd).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("warren-shim: pty socket fd: {e}");
            return ExitCode::from(2);
        }
    };
    let connector = match args.connector_fd.map(sys::adopt_inherited_fd).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("warren-shim: connector fd: {e}");
            return ExitCode::from(2);
        }
    };
    let control = match args.control_fd.map(sys::adopt_inherited_fd).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("warren-shim: control fd: {e}");
            return ExitCode::from(2);
        }
    };
    // The only choice of tier: each table of contents is for one.
    let result = read_spec(args.spec_fd).and_then(|spec| {
        match (args.join, args.init, spec.isolation.shares_host()) {
            (_, Some(plan_fd), _) => {
                let plan = read_plan(plan_fd)?;
                namespaced::init_after_exec(spec, plan, pty_socket, control, &mut report)
            }
            (None, None, false) => {
                namespaced::create(spec, pty_socket, connector, control, &mut report)
            }
            // No network namespace of its own to reach into: the server
            // sees the socket close and reports previews unavailable.
            (None, None, true) => {
                drop(connector);
                shared_host::create(spec, pty_socket, &mut report)
            }
            (Some(target), None, false) => namespaced::join(spec, target, pty_socket, &mut report),
            (Some(target), None, true) => shared_host::join(spec, target, pty_socket, &mut report),
        }
    });
    let code = match result {
        Ok(exit) => exit.shell_code(),
        Err(err) => {
            let code = err.exit_code();
            let _ = report::send(&mut report, &Event::Failed(err));
            code
        }
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// Reads what the caller sent on an inherited fd (at most 1 MiB).
fn read_fd(fd: RawFd, step: &str) -> Result<Vec<u8>, SetupError> {
    let fd: OwnedFd = sys::adopt_inherited_fd(fd).map_err(|e| SetupError::errno(step, e))?;
    let mut buf = Vec::new();
    std::fs::File::from(fd)
        .take(1 << 20)
        .read_to_end(&mut buf)
        .map_err(|e| SetupError::new(step, e.to_string()))?;
    Ok(buf)
}

/// The confinement PID 1 planned before its re-exec.
fn read_plan(fd: RawFd) -> Result<Confinement, SetupError> {
    let step = "read plan";
    serde_json::from_slice(&read_fd(fd, step)?)
        .map_err(|e| SetupError::new(step, format!("invalid plan: {e}")))
}

/// `warren-info`, inside a sandbox: who, what isolation, limits, usage.
fn warren_info() -> ExitCode {
    ExitCode::from(warren_runtime::info::tool_main().clamp(0, 255) as u8)
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut it = args.iter();
    let command = it.next().map(String::as_str);
    let joining = match command {
        Some("create" | "init") => false,
        Some("join") => true,
        Some(other) => return Err(format!("unknown command {other:?}")),
        None => return Err("missing command".into()),
    };
    let reexec = command == Some("init");
    let (mut spec, mut report, mut pty, mut init, mut parent, mut cgroup) =
        (None, None, None, None, None, None);
    let (mut plan, mut record, mut connector, mut control) = (None, None, None, None);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || -> Result<i32, String> {
            value
                .parse()
                .map_err(|_| format!("{flag}: not a number: {value:?}"))
        };
        match flag.as_str() {
            "--spec-fd" => spec = Some(number()?),
            "--report-fd" => report = Some(number()?),
            "--pty-socket-fd" => pty = Some(number()?),
            "--plan-fd" if reexec => plan = Some(number()?),
            "--control-fd" if !joining => control = Some(number()?),
            "--init-pid" if joining => init = Some(Pid::from_raw(number()?)),
            "--parent-pid" if joining => parent = Some(Pid::from_raw(number()?)),
            "--cgroup" if joining => cgroup = Some(value.clone()),
            "--record-fd" if joining => record = Some(number()?),
            "--connector-fd" if command == Some("create") => connector = Some(number()?),
            _ => return Err(format!("unknown option {flag:?}")),
        }
    }
    let (Some(s), Some(r)) = (spec, report) else {
        return Err("--spec-fd and --report-fd are required".into());
    };
    if reexec && plan.is_none() {
        return Err("init needs --plan-fd".into());
    }
    let fds: Vec<RawFd> = [Some(s), Some(r), pty, plan, record, connector, control]
        .into_iter()
        .flatten()
        .collect();
    let distinct = fds.iter().enumerate().all(|(i, f)| !fds[..i].contains(f));
    if fds.iter().any(|&f| f <= 2) || !distinct {
        return Err(
            "--spec-fd, --report-fd, --pty-socket-fd, --plan-fd, --record-fd, --connector-fd and --control-fd \
             must be distinct fds above 2"
                .into(),
        );
    }
    let join = match (joining, init, parent) {
        (false, _, _) => None,
        (true, Some(init_pid), Some(parent_pid))
            if init_pid.as_raw() > 1 && parent_pid.as_raw() > 1 =>
        {
            Some(join::Target {
                init_pid,
                parent_pid,
                cgroup,
                record_fd: record,
            })
        }
        (true, _, _) => return Err("join needs --init-pid and --parent-pid".into()),
    };
    Ok(Args {
        join,
        init: plan,
        spec_fd: s,
        report_fd: r,
        pty_fd: pty,
        connector_fd: connector,
        control_fd: control,
    })
}

fn read_spec(fd: RawFd) -> Result<SandboxSpec, SetupError> {
    let step = "read spec";
    let spec: SandboxSpec = serde_json::from_slice(&read_fd(fd, step)?)
        .map_err(|e| SetupError::new(step, format!("invalid spec: {e}")))?;
    spec.validate()
        .map_err(|e| SetupError::new("validate spec", e.to_string()))?;
    Ok(spec)
}
