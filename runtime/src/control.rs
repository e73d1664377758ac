//! The control channel between the server and a held sandbox's PID 1: a
//! unix socketpair the server creates before the shim starts, one end
//! passed down to PID 1 (close-on-exec, never at a path), the other kept.
//!
//! It carries requests one way only, server to PID 1: start a terminal or
//! a command, kill one. Everything about them comes back on fds sent along
//! with the request (SCM_RIGHTS): for a terminal a socket for its PTY
//! master, for a command its stdin, stdout and stderr; then the write end
//! of a report pipe, as a `warren-shim join` gets. Nothing in a request
//! decides confinement: PID 1 applies the plan it started with; a command
//! brings only what the tenant could type in a terminal (its argv, its
//! environment, a directory to start in).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};

use crate::pty::WinSize;
use crate::sys;

/// Largest request accepted; a terminal's argv is bounded well below it.
pub const MAX_REQUEST: usize = 64 * 1024;

/// What the server asks of PID 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Start `argv` on a new PTY of `size` in the sandbox's devpts. Sent
    /// with two fds: the socket for the PTY master, then the report pipe.
    Terminal {
        id: u64,
        argv: Vec<String>,
        size: WinSize,
    },
    /// Run `argv` with `env` added to the sandbox's environment, in `cwd`
    /// (relative to the home, plain names only) if given, on the stdin,
    /// stdout and stderr sent with it, then the report pipe: what `exec`
    /// and services run. PID 1 reports `Started` once it has forked it.
    Command {
        id: u64,
        argv: Vec<String>,
        env: Vec<(String, String)>,
        cwd: Option<PathBuf>,
    },
    /// SIGKILL terminal or command `id`'s process group.
    Kill { id: u64 },
}

/// Most fds a request carries (a command's three streams and its report).
const MAX_FDS: usize = 4;

/// Sends `req` with `fds` as one message.
pub fn send(sock: &impl AsRawFd, req: &Request, fds: &[RawFd]) -> Result<(), Errno> {
    let json = serde_json::to_vec(req).map_err(|_| Errno::EINVAL)?;
    let iov = [IoSlice::new(&json)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)?;
    Ok(())
}

/// One request and its fds (close-on-exec). `Ok(None)`: the server closed
/// the channel. A message that does not parse is `EBADMSG`, its fds closed.
pub fn recv(sock: &impl AsFd) -> Result<Option<(Request, Vec<OwnedFd>)>, Errno> {
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (len, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            sock.as_fd().as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut fds = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(received) = c {
                // The kernel just installed these fds for us alone.
                fds.extend(received.into_iter().map(sys::own_fd));
            }
        }
        (msg.bytes, fds)
    };
    if len == 0 && fds.is_empty() {
        return Ok(None);
    }
    let req = serde_json::from_slice(&buf[..len]).map_err(|_| Errno::EBADMSG)?;
    Ok(Some((req, fds)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

    #[test]
    fn a_request_and_its_fds_arrive_together() {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        let req = Request::Terminal {
            id: 7,
            argv: vec!["/bin/sh".into()],
            size: WinSize { rows: 24, cols: 80 },
        };
        send(&a, &req, &[r.as_raw_fd(), w.as_raw_fd()]).unwrap();
        let (got, fds) = recv(&b).unwrap().unwrap();
        assert_eq!(got, req);
        assert_eq!(fds.len(), 2);
        let cmd = Request::Command {
            id: 8,
            argv: vec!["true".into()],
            env: vec![("A".into(), "b".into())],
            cwd: Some("src".into()),
        };
        let fds4 = [r.as_raw_fd(), w.as_raw_fd(), r.as_raw_fd(), w.as_raw_fd()];
        send(&a, &cmd, &fds4).unwrap();
        let (got, fds) = recv(&b).unwrap().unwrap();
        assert_eq!(got, cmd);
        assert_eq!(fds.len(), 4, "a command's four fds all arrive");
        send(&a, &Request::Kill { id: 7 }, &[]).unwrap();
        assert_eq!(recv(&b).unwrap().unwrap().0, Request::Kill { id: 7 });
        drop(a);
        assert!(recv(&b).unwrap().is_none());
    }
}
