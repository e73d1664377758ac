//! Terminals that belong to the sandbox.
//!
//! The PTY is opened by the sandbox's PID 1 from the sandbox's own devpts
//! instance, so `tty` inside answers `/dev/pts/0` and no host terminal is
//! ever visible. PID 1 sends the master side out over a unix socket
//! (SCM_RIGHTS, like runc's console socket) to whoever relays it: `warren
//! run -t` or the web server.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};

use crate::setup_error::SetupError;
use crate::sys;

/// A terminal's size in character cells: from the page's `resize` frame
/// (the server's protocol checks its bounds) to the PTY's ioctl.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WinSize {
    pub cols: u16,
    pub rows: u16,
}

impl Default for WinSize {
    fn default() -> Self {
        WinSize { rows: 24, cols: 80 }
    }
}

/// Opens a new PTY from /dev/ptmx (inside the sandbox: its own devpts) and
/// returns the master and the slave's path.
pub fn open(size: WinSize) -> Result<(OwnedFd, PathBuf), SetupError> {
    let step = crate::setup_error::STEP_OPEN_TERMINAL;
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).map_err(|e| {
        SetupError::errno(step, e).with_hint(match e {
            // A devpts instance of a sandbox may use kernel.pty.max less
            // kernel.pty.reserve, counted over the whole host.
            nix::errno::Errno::ENOSPC => {
                "the host's PTYs are all in use: raise kernel.pty.max (`warren doctor` shows \
                 the capacity)"
            }
            _ => "is /dev/pts a devpts instance with ptmxmode=0666?",
        })
    })?;
    grantpt(&master).map_err(|e| SetupError::errno(step, e))?;
    unlockpt(&master).map_err(|e| SetupError::errno(step, e))?;
    let slave = ptsname_r(&master).map_err(|e| SetupError::errno(step, e))?;
    sys::set_winsize(&master, size.rows, size.cols)
        .map_err(|e| SetupError::errno("set terminal size", e))?;
    Ok((OwnedFd::from(master), PathBuf::from(slave)))
}

/// In the command's process: become a session leader and make the slave at
/// `path` the controlling terminal and stdin/stdout/stderr.
pub fn attach_as_controlling_terminal(path: &std::path::Path) -> Result<(), SetupError> {
    nix::unistd::setsid().map_err(|e| SetupError::errno("setsid", e))?;
    let slave = nix::fcntl::open(
        path,
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| SetupError::errno(format!("open {}", path.display()), e))?;
    sys::set_controlling_terminal(&slave)
        .map_err(|e| SetupError::errno("set controlling terminal", e))?;
    for target in 0..=2 {
        sys::dup_onto(&slave, target)
            .map_err(|e| SetupError::errno("attach terminal to stdio", e))?;
    }
    Ok(())
}

/// Sends `fd` over the unix socket `sock` (SCM_RIGHTS).
pub fn send_fd(sock: &impl AsRawFd, fd: &impl AsRawFd) -> Result<(), Errno> {
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(b"T")];
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)?;
    Ok(())
}

/// Receives one fd sent by [`send_fd`]. `Ok(None)` means the other side
/// closed the socket without sending (the sandbox failed to start).
pub fn recv_fd(sock: &impl AsFd) -> Result<Option<OwnedFd>, Errno> {
    let mut buf = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_fd().as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // The kernel just installed this fd for us alone.
                return Ok(Some(sys::own_fd(fd)));
            }
        }
    }
    Ok(None)
}

/// Puts a terminal in raw mode and restores it when dropped: `warren run -t`
/// passes every key, Ctrl-C included, to the sandbox's own terminal.
pub struct RawMode {
    fd: OwnedFd,
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    pub fn enable(fd: &impl AsFd) -> Result<RawMode, Errno> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let fd = fd.as_fd().try_clone_to_owned().map_err(|_| Errno::EBADF)?;
        let saved = tcgetattr(&fd)?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&fd, SetArg::TCSADRAIN, &raw)?;
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            &self.fd,
            nix::sys::termios::SetArg::TCSADRAIN,
            &self.saved,
        );
    }
}

/// The size of the terminal on `fd`, if it is one.
pub fn size_of(fd: &impl AsRawFd) -> Option<WinSize> {
    let ws = sys::get_winsize(fd).ok()?;
    (ws.ws_row > 0 && ws.ws_col > 0).then_some(WinSize {
        rows: ws.ws_row,
        cols: ws.ws_col,
    })
}

/// Resizes the terminal whose master is `fd`.
pub fn resize(fd: &impl AsRawFd, size: WinSize) -> Result<(), Errno> {
    sys::set_winsize(fd, size.rows, size.cols)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fds_travel_over_a_socket() {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let (master, slave) = open(WinSize {
            rows: 30,
            cols: 100,
        })
        .unwrap();
        assert!(slave.starts_with("/dev/pts/"));
        send_fd(&a, &master).unwrap();
        let got = recv_fd(&b).unwrap().unwrap();
        assert_eq!(
            size_of(&got),
            Some(WinSize {
                rows: 30,
                cols: 100
            })
        );
        resize(
            &got,
            WinSize {
                rows: 40,
                cols: 120,
            },
        )
        .unwrap();
        assert_eq!(
            size_of(&master),
            Some(WinSize {
                rows: 40,
                cols: 120
            })
        );
        drop(a);
        assert!(recv_fd(&b).unwrap().is_none());
    }
}
