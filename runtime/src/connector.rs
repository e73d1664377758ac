//! Reaching a TCP port inside a sandbox's network namespace from the
//! server, whatever its privileges (docs/previews.md).
//!
//! The creating shim forks one small *connector* per sandbox that joins
//! the sandbox's user and network namespaces and then serves this
//! protocol on a unix `SOCK_SEQPACKET` pair whose other end the server
//! holds: the server sends a port (2 bytes, big endian), the connector
//! connects to 127.0.0.1 (then ::1) on that port and answers with a
//! 4-byte status (0, or the errno of the failed connect) carrying the
//! connected socket as SCM_RIGHTS when it is 0. An unprivileged server
//! cannot `setns` into the sandbox itself, and a process per request
//! would cost milliseconds; this costs one round trip on a socket.

use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    connect, recvmsg, sendmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessage,
    ControlMessageOwned, MsgFlags, SockFlag, SockType, SockaddrIn, SockaddrIn6,
};
use nix::sys::time::TimeVal;

use crate::sys;

/// How long one connect may take inside the sandbox (a full listen
/// backlog drops SYNs instead of refusing).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a port could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing listens on that port (ECONNREFUSED on both loopbacks).
    #[error("nothing is listening on port {0}")]
    NotListening(u16),
    /// The connector is gone: the sandbox ended (or is ending).
    #[error("the sandbox's connector is gone (the sandbox ended)")]
    Gone,
    /// Port 0 is not a port one can connect to.
    #[error("port 0 cannot be reached")]
    BadPort,
    /// The connect or the exchange with the connector failed otherwise.
    #[error("reaching port {port} in the sandbox: {source}")]
    Failed {
        port: u16,
        #[source]
        source: Errno,
    },
}

/// The server's side: asks the connector on `sock` for a connection to
/// `port` and returns the connected (blocking) socket. The caller keeps
/// one request at a time on a socket, each with a new `seq`; answers to
/// earlier ones (given up on after the answer timeout) are dropped.
pub fn request(sock: &impl AsFd, port: u16, seq: u32) -> Result<OwnedFd, ConnectError> {
    if port == 0 {
        return Err(ConnectError::BadPort);
    }
    let fd = sock.as_fd().as_raw_fd();
    let failed = |source| ConnectError::Failed { port, source };
    let mut ask = [0u8; 6];
    ask[..2].copy_from_slice(&port.to_be_bytes());
    ask[2..].copy_from_slice(&seq.to_be_bytes());
    match sendmsg::<()>(fd, &[IoSlice::new(&ask)], &[], MsgFlags::MSG_NOSIGNAL, None) {
        Ok(_) => {}
        Err(Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN) => return Err(ConnectError::Gone),
        Err(e) => return Err(failed(e)),
    }
    loop {
        let mut answer = [0u8; 8];
        let mut iov = [IoSliceMut::new(&mut answer)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = match recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(Errno::EINTR) => continue,
            Err(Errno::ECONNRESET) => return Err(ConnectError::Gone),
            Err(e) => return Err(failed(e)),
            Ok(m) => m,
        };
        let mut got = None;
        for c in msg.cmsgs().map_err(failed)? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for &f in &fds {
                    // The kernel just installed these fds for us alone.
                    let owned = sys::own_fd(f);
                    got = got.or(Some(owned));
                }
            }
        }
        if msg.bytes == 0 {
            return Err(ConnectError::Gone);
        }
        let status = i32::from_be_bytes(answer[..4].try_into().expect("4 bytes"));
        if u32::from_be_bytes(answer[4..].try_into().expect("4 bytes")) != seq {
            continue; // a late answer to a request given up on: its socket closes here
        }
        return answer_of(port, status, got);
    }
}

/// The connected socket, or why there is none.
fn answer_of(port: u16, status: i32, got: Option<OwnedFd>) -> Result<OwnedFd, ConnectError> {
    let failed = |source| ConnectError::Failed { port, source };
    match (status, got) {
        (0, Some(stream)) => Ok(stream),
        (0, None) => Err(failed(Errno::EBADMSG)),
        (code, _) if code == Errno::ECONNREFUSED as i32 => Err(ConnectError::NotListening(port)),
        (code, _) => Err(failed(Errno::from_raw(code))),
    }
}

/// Makes the receiving end the server holds wait at most `timeout` for
/// an answer (a stuck connector must not hang a request).
pub fn set_answer_timeout(sock: &impl AsFd, timeout: Duration) -> Result<(), Errno> {
    setsockopt(sock, sockopt::ReceiveTimeout, &timeval(timeout))
}

fn timeval(d: Duration) -> TimeVal {
    TimeVal::new(d.as_secs() as _, d.subsec_micros() as _)
}

/// The connector's side, after it joined the sandbox's namespaces: answers
/// requests on `sock` until the server closes it (or the sandbox ends and
/// takes the connector along).
pub fn serve(sock: &impl AsFd) -> Result<(), Errno> {
    let fd = sock.as_fd().as_raw_fd();
    loop {
        let mut ask = [0u8; 6];
        let mut iov = [IoSliceMut::new(&mut ask)];
        let n = match recvmsg::<()>(fd, &mut iov, None, MsgFlags::empty()) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
            Ok(m) => m.bytes,
        };
        if n == 0 {
            return Ok(()); // the server let go of the sandbox
        }
        let result = match n {
            6 => connect_loopback(u16::from_be_bytes([ask[0], ask[1]])),
            _ => Err(Errno::EINVAL),
        };
        let mut answer = [0u8; 8];
        answer[4..].copy_from_slice(&ask[2..]);
        let sent = match &result {
            Ok(stream) => {
                let fds = [stream.as_raw_fd()];
                let cmsg = [ControlMessage::ScmRights(&fds)];
                let iov = [IoSlice::new(&answer)];
                sendmsg::<()>(fd, &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None)
            }
            Err(e) => {
                answer[..4].copy_from_slice(&(*e as i32).to_be_bytes());
                let iov = [IoSlice::new(&answer)];
                sendmsg::<()>(fd, &iov, &[], MsgFlags::MSG_NOSIGNAL, None)
            }
        };
        match sent {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Connects to 127.0.0.1:`port`, then `[::1]:port` when IPv4 is refused
/// (a server bound to ::1 only).
fn connect_loopback(port: u16) -> Result<OwnedFd, Errno> {
    if port == 0 {
        return Err(Errno::EINVAL);
    }
    let v4 = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    match connect_one(AddressFamily::Inet, &v4) {
        Err(Errno::ECONNREFUSED) => {
            let v6 = SockaddrIn6::from(SocketAddrV6::new(Ipv6Addr::LOCALHOST, port, 0, 0));
            match connect_one(AddressFamily::Inet6, &v6) {
                // No IPv6 here: IPv4's answer stands.
                Err(Errno::EAFNOSUPPORT | Errno::EADDRNOTAVAIL | Errno::ENETUNREACH) => {
                    Err(Errno::ECONNREFUSED)
                }
                other => other,
            }
        }
        other => other,
    }
}

fn connect_one(
    family: AddressFamily,
    addr: &dyn nix::sys::socket::SockaddrLike,
) -> Result<OwnedFd, Errno> {
    let s = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    // connect(2) honours the send timeout.
    setsockopt(&s, sockopt::SendTimeout, &timeval(CONNECT_TIMEOUT))?;
    let _ = setsockopt(&s, sockopt::TcpNoDelay, &true);
    loop {
        match connect(s.as_raw_fd(), addr) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
            Ok(()) => return Ok(s),
        }
    }
}

/// TCP ports listened on in the network namespace whose `net` directory
/// of /proc is `proc_net` (`/proc/<pid>/net`): `tcp` and `tcp6`, sockets
/// in state LISTEN, sorted, each once. Unreadable files count as none.
pub fn listening_ports(proc_net: &std::path::Path) -> Vec<u16> {
    let mut ports: Vec<u16> = ["tcp", "tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(proc_net.join(f)).ok())
        .flat_map(|text| parse_listening(&text))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The LISTEN (`0A`) sockets' local ports of a /proc/net/tcp{,6} table.
fn parse_listening(table: &str) -> Vec<u16> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            let port = local.rsplit_once(':')?.1;
            (state == "0A")
                .then(|| u16::from_str_radix(port, 16).ok())
                .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_are_read_from_proc_tables() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("tcp"),
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F41 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1 0 100 0 0 10 0\n\
   1: 0100007F:1F41 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 2 1 0 20 4 30 10 -1\n\
   2: 00000000:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 3 1 0 100 0 0 10 0\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("tcp6"),
            "  sl  local_address remote_address st\n\
   0: 00000000000000000000000001000000:1F41 00000000000000000000000000000000:0000 0A 0\n",
        )
        .unwrap();
        assert_eq!(listening_ports(dir.path()), vec![3000, 8001]);
        assert!(listening_ports(&dir.path().join("none")).is_empty());
    }
    use nix::sys::socket::socketpair;

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }

    #[test]
    fn connects_refuses_and_notices_the_end() {
        let (server, connector) = pair();
        let worker = std::thread::spawn(move || serve(&connector));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stream = request(&server, port, 1).unwrap();
        let (_, peer) = listener.accept().unwrap();
        let local = std::net::TcpStream::from(stream).local_addr().unwrap();
        assert_eq!(local, peer);
        // A port bound but not listening: refused, and (unlike a port just
        // freed) no other test can take it and no connect can land on it.
        let idle = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        let any = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));
        nix::sys::socket::bind(idle.as_raw_fd(), &any).unwrap();
        let idle_port = nix::sys::socket::getsockname::<SockaddrIn>(idle.as_raw_fd())
            .unwrap()
            .port();
        assert!(matches!(
            request(&server, idle_port, 2),
            Err(ConnectError::NotListening(p)) if p == idle_port
        ));
        drop(listener);
        assert!(matches!(request(&server, 0, 3), Err(ConnectError::BadPort)));
        drop(server);
        worker.join().unwrap().unwrap();
    }

    #[test]
    fn a_late_answer_is_dropped() {
        let (server, connector) = pair();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // An answer to request 7, which the server gave up on, waits first.
        let stale = [0, 0, 0, 0, 0, 0, 0, 7];
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let fds = [s.as_raw_fd()];
        sendmsg::<()>(
            connector.as_raw_fd(),
            &[IoSlice::new(&stale)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        let worker = std::thread::spawn(move || serve(&connector));
        let (_, first) = listener.accept().unwrap();
        let got = std::net::TcpStream::from(request(&server, port, 8).unwrap());
        let (_, second) = listener.accept().unwrap();
        assert_eq!(got.local_addr().unwrap(), second);
        assert_ne!(second, first);
        drop(server);
        worker.join().unwrap().unwrap();
    }

    #[test]
    fn a_gone_connector_is_gone() {
        let (server, connector) = pair();
        drop(connector);
        assert!(matches!(request(&server, 80, 1), Err(ConnectError::Gone)));
    }
}
