//! The last steps of every command, the first and each joined one, in any
//! tier: once the user is in place and holds no capability, open the
//! terminal, raise Landlock, apply seccomp, become the command. What each
//! of them does is the plan's ([`Confinement`]).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::unistd::{chdir, setpgid, Pid};
use warren_runtime::landlock::{self, LandlockStatus, Level};
use warren_runtime::plan::Confinement;
use warren_runtime::report::{self, Event, SetupError, STEP_EXEC};
use warren_runtime::spec::SandboxSpec;
use warren_runtime::{init, pty, rlimits, seccomp, sys};

use crate::process::fail_and_exit;

/// A confined process, ready to become the command.
pub struct Ready {
    tty: Option<PathBuf>,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

impl Ready {
    /// Becomes the command (see [`exec_command`]).
    pub fn exec(&self, spec: &SandboxSpec, report: &mut File) -> ! {
        exec_command(spec, self.tty.as_deref(), &self.argv, &self.envp, report)
    }
}

/// The confinement, in order: the terminal (opened from the sandbox's
/// devpts, or the host's, and sent out), Landlock, then seccomp, last.
pub fn confine(
    spec: &SandboxSpec,
    plan: &Confinement,
    pty_socket: Option<OwnedFd>,
    report: &mut File,
) -> Result<Ready, SetupError> {
    // Compiled now, while allocation is still harmless; applied last.
    let filters = plan.seccomp.filters()?;
    // Its master leaves over the socket; we keep no copy.
    let tty = open_terminal(spec, pty_socket)?;
    let (argv, envp) = command_strings(spec, plan)?;
    // After the terminal: the session's own may be one of its rules.
    let landlock = restrict_landlock(plan, tty.as_deref())?;
    // Last: from here on we, and what we start, run under the filter.
    seccomp::apply(&filters)?;
    let seccomp = plan.seccomp.name();
    let _ = report::send(report, &Event::Confined { seccomp, landlock });
    Ok(Ready { tty, argv, envp })
}

/// Sets the plan's per-process limits (tiers without namespaces). Lowering
/// needs no privilege.
pub fn set_rlimits(plan: &Confinement) -> Result<(), SetupError> {
    rlimits::apply(&plan.rlimits)
}

/// Creates the home's private TMPDIR (tiers without namespaces: the host's
/// /tmp is shared), as the tenant, so a symlink the tenant put there is the
/// tenant's own business, never followed by us with privileges.
pub fn make_private_tmp(spec: &SandboxSpec) -> Result<(), SetupError> {
    use std::os::unix::fs::DirBuilderExt;
    let tmp = spec.private_tmp();
    match std::fs::DirBuilder::new().mode(0o700).create(&tmp) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(SetupError::new(
            format!("create {}", tmp.display()),
            e.to_string(),
        )),
    }
}

/// The command's terminal, when the spec asks for one: a new PTY whose
/// master is sent to the caller; returns the slave's path.
fn open_terminal(
    spec: &SandboxSpec,
    pty_socket: Option<OwnedFd>,
) -> Result<Option<PathBuf>, SetupError> {
    match (spec.tty, pty_socket) {
        (Some(size), Some(sock)) => {
            let (master, slave) = pty::open(size)?;
            pty::send_fd(&sock, &master)
                .map_err(|e| SetupError::errno("send terminal to caller", e))?;
            Ok(Some(slave))
        }
        (Some(_), None) => Err(SetupError::new(
            "open terminal",
            "a terminal was asked for without a socket to send it on",
        )),
        (None, _) => Ok(None),
    }
}

/// Raises the plan's Landlock rules, if any; the level reached is reported.
fn restrict_landlock(plan: &Confinement, tty: Option<&Path>) -> Result<LandlockStatus, SetupError> {
    match &plan.landlock {
        Some(rules) => Ok(landlock::restrict(&rules.rules_for(tty))?),
        None => Ok(LandlockStatus {
            abi: plan.landlock_abi,
            level: Level::NotEnforced,
        }),
    }
}

fn command_strings(
    spec: &SandboxSpec,
    plan: &Confinement,
) -> Result<(Vec<CString>, Vec<CString>), SetupError> {
    let bad = |_| SetupError::new("prepare command", "NUL byte in command or environment");
    let argv = spec
        .argv
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<_, _>>()
        .map_err(bad)?;
    let envp = plan
        .env
        .iter()
        .map(|(k, v)| CString::new(format!("{k}={v}")))
        .collect::<Result<_, _>>()
        .map_err(bad)?;
    Ok((argv, envp))
}

/// The command's process: its own process group, default signals, the
/// working directory, then exec. Reports and exits if any of that fails.
fn exec_command(
    spec: &SandboxSpec,
    tty: Option<&Path>,
    argv: &[CString],
    envp: &[CString],
    report: &mut File,
) -> ! {
    let err = (|| {
        match tty {
            // Session leader on its own terminal: job control works.
            Some(path) => pty::attach_as_controlling_terminal(path)?,
            None => setpgid(Pid::from_raw(0), Pid::from_raw(0))
                .map_err(|e| SetupError::errno("setpgid", e))?,
        }
        init::unblock_all_signals().map_err(|e| SetupError::errno("unblock signals", e))?;
        sys::reset_signal_dispositions();
        chdir(&spec.cwd).map_err(|e| {
            SetupError::errno(format!("chdir {}", spec.cwd.display()), e)
                .with_hint("the working directory must exist inside the sandbox")
        })?;
        let errno = sys::exec(argv, envp);
        let err = SetupError::errno(STEP_EXEC, errno).with_message(format!(
            "{:?}: {}",
            spec.argv[0],
            errno.desc()
        ));
        Err::<(), _>(match errno {
            Errno::ENOENT => err.with_hint("the command was not found in the sandbox's PATH"),
            Errno::EACCES => err.with_hint("the file is not executable, or its mount is noexec"),
            _ => err,
        })
    })()
    .unwrap_err();
    // The report fd is still open here: it is close-on-exec and exec failed.
    fail_and_exit(report, err)
}
