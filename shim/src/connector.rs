//! The sandbox's connector (`warren_runtime::connector`, docs/previews.md):
//! a child of the creating shim that joins the sandbox's user and network
//! namespaces and connects to ports there for the server.
//!
//! It is forked on the host side, so the tenant cannot see it (it is not
//! in the sandbox's pid namespace), signal it or read its memory (not
//! dumpable); it keeps no capability once it has joined, holds no fd but
//! its socket, and dies with the shim (parent-death signal) or when the
//! server closes the socket.

use std::fs::File;
use std::os::fd::OwnedFd;

use nix::sched::CloneFlags;
use nix::unistd::Pid;
use warren_runtime::report::SetupError;
use warren_runtime::{caps, connector, sys};

use crate::process::{die_with_parent, set_title};

const STEP: &str = "start the connector";

/// The sandbox's user and network namespaces, for the connector to join.
pub struct Namespaces {
    user: OwnedFd,
    net: OwnedFd,
}

/// Opens the namespaces of `pid` (PID 1, not yet released: still
/// dumpable) when the server asked for a connector.
pub fn open_namespaces_from_parent(
    socket: Option<&OwnedFd>,
    pid: Pid,
) -> Result<Option<Namespaces>, SetupError> {
    if socket.is_none() {
        return Ok(None);
    }
    let open = |ns: &str| {
        File::open(format!("/proc/{pid}/ns/{ns}"))
            .map(OwnedFd::from)
            .map_err(|e| SetupError::new(STEP, format!("open the sandbox's {ns} namespace: {e}")))
    };
    Ok(Some(Namespaces {
        user: open("user")?,
        net: open("net")?,
    }))
}

/// Forks the connector serving `socket` in the namespaces `ns`. Our copy
/// of the socket is closed, so the server sees the sandbox's end as the
/// connector's.
pub fn start_from_parent(
    socket: Option<OwnedFd>,
    ns: Option<Namespaces>,
    tenant: &str,
) -> Result<(), SetupError> {
    let (Some(socket), Some(ns)) = (socket, ns) else {
        return Ok(());
    };
    match sys::fork_process().map_err(|e| SetupError::errno(STEP, e))? {
        sys::Forked::Child => {
            let code = match serve_in_child(socket, ns, tenant) {
                Ok(()) => 0,
                Err(_) => 1,
            };
            sys::exit_immediately(code)
        }
        sys::Forked::Parent(_) => Ok(()),
    }
}

/// The connector: join, drop what it does not need, serve.
fn serve_in_child(socket: OwnedFd, ns: Namespaces, tenant: &str) -> Result<(), SetupError> {
    die_with_parent()?; // the sandbox's shim, whose end is the sandbox's
    set_title("connector", tenant);
    nix::sched::setns(&ns.user, CloneFlags::CLONE_NEWUSER)
        .and_then(|()| nix::sched::setns(&ns.net, CloneFlags::CLONE_NEWNET))
        .map_err(|e| SetupError::errno("join the sandbox's namespaces", e))?;
    caps::drop_all()?; // connect(2) to loopback needs none
    die_with_parent()?; // joining a user namespace may clear it
    sys::set_non_dumpable().map_err(|e| SetupError::errno("set non-dumpable", e))?;
    // Nothing of the shim's (the report pipe, the namespaces) stays open here.
    sys::dup_onto(&socket, 3).map_err(|e| SetupError::errno(STEP, e))?;
    sys::close_from(4).map_err(|e| SetupError::errno(STEP, e))?;
    std::mem::forget((socket, ns)); // closed above
    let socket = sys::own_fd(3);
    connector::serve(&socket).map_err(|e| SetupError::errno("serve the connector", e))
}
