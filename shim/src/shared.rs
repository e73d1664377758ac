//! The tiers without namespaces (`landlock`, `none`), for hosts that forbid
//! user namespaces. The sandbox runs on the host's own filesystem, pid,
//! network and IPC namespaces, as a host uid, so the order differs from the
//! namespace tier's (`create`):
//!
//! - the shim forks the sandbox's leader (no clone flags) and puts it in
//!   the cgroup before releasing it, exactly as in the namespace tier;
//! - the leader stays outside the tenant's confinement, like the shim: its
//!   own session, a child subreaper (nothing the command starts can leave
//!   its process tree), not dumpable; it holds the sandbox open for joins or
//!   forks the command, reaps, and when the command ends kills whatever is
//!   left, since no pid namespace does;
//! - the command, and every joined one ([`command_steps`]): no_new_privs,
//!   rlimits, the tenant's host ids with no capability, its private TMPDIR,
//!   then the terminal (from the host's /dev/ptmx), Landlock and seccomp
//!   (`landlock` tier only), execve.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::unistd::setsid;
use warren_runtime::info::{SandboxInfo, INFO_ENV, INFO_TOOL};
use warren_runtime::init::{self, SignalTarget};
use warren_runtime::record::SandboxRecord;
use warren_runtime::report::{self, Event, SetupError};
use warren_runtime::rlimits::{self, Rlimit};
use warren_runtime::spec::{Bind, SandboxSpec};
use warren_runtime::sys::{self, Forked};

use crate::spawn;

/// The static description a command of this sandbox gets (`warren-info`),
/// and the per-process limits that go with it.
pub struct Described {
    pub info: SandboxInfo,
    pub rlimits: Vec<Rlimit>,
    /// `warren-info` next to this shim, found while we may still see it.
    pub tool: Option<PathBuf>,
}

/// Describes a sandbox of a shared-host tier from its record, and the
/// rlimits the record lists, to set.
pub fn describe(spec: &SandboxSpec, record: SandboxRecord) -> Described {
    let (uid, _) = spec.process_ids();
    let rlimits = rlimits::for_spec(spec, &record.limits.missing);
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    Described {
        info: SandboxInfo {
            user: spec.tenant.slug.clone(),
            uid,
            hostname,
            namespaces: Vec::new(),
            sandbox: record,
        },
        rlimits,
        tool: info_tool(),
    }
}

/// The sandbox's leader, forked by the shim. Never returns: exits with the
/// command's status (0 when only held open).
pub fn leader(
    spec: &SandboxSpec,
    described: &Described,
    ready: OwnedFd,
    pty_socket: Option<OwnedFd>,
    report: &mut File,
) -> ! {
    let started = (|| {
        spawn::die_with_parent()?;
        crate::create::wait_for_parent(ready)?;
        // Our own session: no controlling terminal shared with the caller.
        setsid().map_err(|e| SetupError::errno("setsid", e))?;
        // Orphans of the command become ours, not the host init's.
        init::become_subreaper().map_err(|e| SetupError::errno("become child subreaper", e))?;
        // Tenants may share our uid: keep their processes out of our memory
        // (Landlock already refuses them ptrace-like access to us).
        sys::set_non_dumpable().map_err(|e| SetupError::errno("set non-dumpable", e))?;
        if spec.hold {
            return Ok(None);
        }
        match sys::fork_process().map_err(|e| SetupError::errno("fork command", e))? {
            Forked::Child => {
                let err = command_steps(spec, described, pty_socket, report).unwrap_err();
                spawn::fail_and_exit(report, err)
            }
            Forked::Parent(pid) => Ok(Some(pid)),
        }
    })();
    match started {
        Ok(cmd) => {
            let _ = report::send(report, &Event::Ready);
            let exit = match cmd {
                Some(cmd) => init::supervise(cmd, SignalTarget::Group(cmd), true),
                None => init::hold(),
            };
            // What a pid namespace would end with its PID 1.
            init::kill_all_children(Path::new("/proc"));
            let _ = report::send(report, &Event::Exited { exit });
            sys::exit_immediately(exit.shell_code())
        }
        Err(err) => spawn::fail_and_exit(report, err),
    }
}

/// A command of the sandbox (its first, or a joined one), in order. Only
/// returns on failure.
pub fn command_steps(
    spec: &SandboxSpec,
    described: &Described,
    pty_socket: Option<OwnedFd>,
    report: &mut File,
) -> Result<std::convert::Infallible, SetupError> {
    spawn::die_with_parent()?;
    // Early: from here on no execve can gain privileges (setuid, file caps).
    sys::set_no_new_privs().map_err(|e| SetupError::errno("set no_new_privs", e))?;
    // Lowering needs no privilege; done while we may still be root.
    rlimits::apply(&described.rlimits)?;
    let (uid, gid) = spec.process_ids();
    warren_runtime::caps::become_tenant_without_caps(uid, gid)?;
    // Credential changes clear the parent-death signal: set it again.
    spawn::die_with_parent()?;
    make_private_tmp(spec)?;
    let spec = with_info(spec, described)?;
    let ready = spawn::confine(&spec, pty_socket, report)?;
    ready.exec(&spec, report)
}

/// Creates the home's private TMPDIR, as the tenant (so a symlink the
/// tenant put there is the tenant's own business, never followed by us
/// with privileges).
fn make_private_tmp(spec: &SandboxSpec) -> Result<(), SetupError> {
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

/// The spec with the description in the environment and `warren-info`
/// reachable: its directory at the end of PATH, the file itself shared
/// read-only (a bind at its own place, which Landlock lets the command read
/// and execute). There is no /etc or /opt of the sandbox's own for them.
fn with_info(spec: &SandboxSpec, described: &Described) -> Result<SandboxSpec, SetupError> {
    let mut spec = spec.clone();
    let json = serde_json::to_string(&described.info)
        .map_err(|e| SetupError::new("describe sandbox", e.to_string()))?;
    spec.env.retain(|(k, _)| k != INFO_ENV);
    spec.env.push((INFO_ENV.into(), json));
    if let Some(tool) = &described.tool {
        spec.binds.push(Bind {
            source: tool.clone(),
            target: tool.clone(),
            readonly: true,
        });
    }
    if let Some(dir) = described.tool.as_deref().and_then(Path::parent) {
        let dir = dir.display().to_string();
        match spec.env.iter_mut().find(|(k, _)| k == "PATH") {
            Some((_, path)) if !path.split(':').any(|p| p == dir) => {
                path.push(':');
                path.push_str(&dir);
            }
            Some(_) => {}
            None => spec.env.push(("PATH".into(), dir)),
        }
    }
    Ok(spec)
}

/// The `warren-info` binary installed next to this shim, if it is there.
fn info_tool() -> Option<PathBuf> {
    let tool = std::env::current_exe().ok()?.with_file_name(INFO_TOOL);
    tool.is_file().then_some(tool)
}
