//! The last steps shared by a new sandbox's PID 1 and a process joining a
//! live sandbox: once the sandbox user is in place and holds no capability,
//! open the terminal, raise Landlock, apply seccomp, start the command.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::errno::Errno;
use nix::unistd::{chdir, setpgid, Pid};
use warren_runtime::init;
use warren_runtime::landlock::{self, LandlockPaths};
use warren_runtime::report::{self, Event, SetupError, STEP_EXEC};
use warren_runtime::seccomp::BpfProgram;
use warren_runtime::spec::{Isolation, SandboxSpec};
use warren_runtime::sys::{self, Forked};
use warren_runtime::{pty, seccomp};

/// Confines the calling process and, unless the spec only holds the
/// sandbox open, forks the command. Returns the command's pid.
pub fn confine_and_spawn(
    spec: &SandboxSpec,
    pty_socket: Option<OwnedFd>,
    report: &mut File,
) -> Result<Option<Pid>, SetupError> {
    let ready = confine(spec, pty_socket, report)?;
    if spec.hold {
        return Ok(None);
    }
    match sys::fork_process().map_err(|e| SetupError::errno("fork command", e))? {
        Forked::Child => ready.exec(spec, report),
        Forked::Parent(pid) => Ok(Some(pid)),
    }
}

/// A confined process, ready to become the command.
pub struct Ready {
    tty: Option<std::path::PathBuf>,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

impl Ready {
    /// Becomes the command (see [`exec_command`]).
    pub fn exec(&self, spec: &SandboxSpec, report: &mut File) -> ! {
        exec_command(spec, self.tty.as_deref(), &self.argv, &self.envp, report)
    }
}

/// The confinement steps, in order: the terminal (opened from the
/// sandbox's devpts and sent out), Landlock, then seccomp, last. Which
/// Landlock rules and filters depends on the tier ([`walls`]).
pub fn confine(
    spec: &SandboxSpec,
    pty_socket: Option<OwnedFd>,
    report: &mut File,
) -> Result<Ready, SetupError> {
    // Compiled now, while allocation is still harmless; applied last.
    let (filters, seccomp_name) = seccomp_filters(spec)?;
    // The terminal comes from the sandbox's own devpts; its master leaves
    // the sandbox over the socket and PID 1 keeps no copy.
    let tty = match (spec.tty, pty_socket) {
        (Some(size), Some(sock)) => {
            let (master, slave) = pty::open(size)?;
            pty::send_fd(&sock, &master)
                .map_err(|e| SetupError::errno("send terminal to caller", e))?;
            Some(slave)
        }
        (Some(_), None) => {
            return Err(SetupError::new(
                "open terminal",
                "a terminal was asked for without a socket to send it on",
            ))
        }
        (None, _) => None,
    };
    let (argv, envp) = command_strings(spec)?;
    let landlock = match landlock_paths(spec, tty.as_deref()) {
        Some(paths) => landlock::restrict(&paths)?,
        None => landlock::LandlockStatus {
            abi: sys::landlock_abi(),
            level: landlock::Level::NotEnforced,
        },
    };
    // Last: from here on PID 1 and the command run under the filter.
    seccomp::apply(&filters)?;
    let _ = report::send(
        report,
        &Event::Confined {
            seccomp: seccomp_name,
            landlock,
        },
    );
    Ok(Ready { tty, argv, envp })
}

/// What Landlock allows, by tier. `None`: no Landlock (`none` tier).
fn landlock_paths(spec: &SandboxSpec, tty: Option<&Path>) -> Option<LandlockPaths> {
    match spec.isolation {
        // Second wall: writes only to the home, /tmp, /dev/shm and terminals.
        Isolation::Namespaces => {
            let mut paths = LandlockPaths::for_sandbox(spec.home());
            paths.read_write.extend(
                spec.binds
                    .iter()
                    .filter(|b| !b.readonly)
                    .map(|b| b.target.clone()),
            );
            Some(paths)
        }
        // The only wall around the filesystem: the home, read-only system
        // directories, the binds (shared at their own place; warren-info is
        // one) and this terminal.
        Isolation::Landlock => {
            let mut paths = LandlockPaths::for_shared_host(spec.home());
            for b in &spec.binds {
                let list = if b.readonly {
                    &mut paths.read_only
                } else {
                    &mut paths.read_write
                };
                list.push(b.target.clone());
            }
            Some(match tty {
                Some(slave) => paths.with_terminal(slave),
                None => paths,
            })
        }
        Isolation::None => None,
    }
}

/// The seccomp filters of the tier and the name to report for them. The
/// `landlock` tier adds the shared-host filter (no sockets but unix ones
/// Landlock can confine, no SysV IPC); `none` installs nothing.
fn seccomp_filters(spec: &SandboxSpec) -> Result<(Vec<BpfProgram>, String), SetupError> {
    let profile = spec.seccomp;
    // Named as the sandbox's record names it.
    let name = warren_runtime::record::seccomp_profile(spec).unwrap_or_else(|| "off".into());
    Ok(match spec.isolation {
        Isolation::Namespaces => (profile.filters()?, name),
        Isolation::Landlock => {
            let mut filters = profile.filters()?;
            let unix_confined = sys::landlock_abi() >= LANDLOCK_RESOLVE_UNIX_ABI;
            filters.push(seccomp::shared_host_filter(unix_confined)?);
            (filters, name)
        }
        Isolation::None => (Vec::new(), name),
    })
}

/// The Landlock ABI that decides which named unix sockets may be connected
/// to (LANDLOCK_ACCESS_FS_RESOLVE_UNIX).
const LANDLOCK_RESOLVE_UNIX_ABI: u32 = 9;

pub fn command_strings(spec: &SandboxSpec) -> Result<(Vec<CString>, Vec<CString>), SetupError> {
    let bad = |_| SetupError::new("prepare command", "NUL byte in command or environment");
    let argv = spec
        .argv
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<_, _>>()
        .map_err(bad)?;
    let envp = spec
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

/// Reports a failure and leaves a forked process at once, with the exit
/// code the failure calls for.
pub fn fail_and_exit(report: &mut File, err: SetupError) -> ! {
    let code = err.exit_code();
    let _ = report::send(report, &Event::Failed(err));
    sys::exit_immediately(code)
}

/// Asks for SIGKILL when our parent dies: nothing in a sandbox outlives
/// whoever started it. Credential changes clear it, so it is set again
/// after each.
pub fn die_with_parent() -> Result<(), SetupError> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| SetupError::errno("set parent-death signal", e))
}
