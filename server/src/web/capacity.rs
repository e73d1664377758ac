//! How many terminals and connections this process can hold: open files
//! (RLIMIT_NOFILE) and PTYs (/proc/sys/kernel/pty).
//!
//! A systemd service starts with a soft fd limit of 1,024 whatever its
//! hard limit; with ~6 fds per terminal a server broke at 162 terminals
//! (issue 10 §4). The soft limit is only a default for programs that use
//! select(2), which warren does not, so the server raises it to the hard
//! limit at start.

use std::path::Path;

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Roughly how many fds one terminal costs the server (PTY master, pidfd,
/// its WebSocket, the control socket to the sandbox's PID 1 shared among
/// terminals, and slack).
pub const FDS_PER_TERMINAL: u64 = 6;

/// What a sandbox costs the server in fds besides its terminals (its
/// shim's report pipe and the sandbox's record). Measured: 10 sandboxes
/// of one terminal each held 80 fds, a second terminal in each 59 more
/// (the test's own client socket counted in both).
pub const FDS_PER_SANDBOX: u64 = 2;

/// How to raise the open-file limit.
pub const RAISE_NOFILE: &str = "LimitNOFILE= in the systemd unit (deploy/ sets 65536), or \
     `ulimit -Hn N` as root before starting warren";

/// How to raise the host's PTYs.
pub const RAISE_PTYS: &str = "sysctl -w kernel.pty.max=N, and persist it in /etc/sysctl.d/";

/// The open-file limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    pub soft: u64,
    pub hard: u64,
}

impl FdLimit {
    pub fn current() -> std::io::Result<FdLimit> {
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
        Ok(FdLimit { soft, hard })
    }

    /// How many terminals the soft limit allows.
    pub fn terminals(&self) -> u64 {
        self.soft / FDS_PER_TERMINAL
    }

    /// How many sandboxes of one terminal each the hard limit allows (the
    /// limit `warren serve` runs with: it raises the soft one to it).
    pub fn sandboxes_at_hard(&self) -> u64 {
        self.hard / (FDS_PER_TERMINAL + FDS_PER_SANDBOX)
    }
}

/// Raises the soft open-file limit to the hard limit; returns the limit in
/// force afterwards.
pub fn raise_nofile() -> std::io::Result<FdLimit> {
    let now = FdLimit::current()?;
    if now.soft < now.hard {
        setrlimit(Resource::RLIMIT_NOFILE, now.hard, now.hard).map_err(std::io::Error::from)?;
    }
    FdLimit::current()
}

/// The host's PTYs: in use (`nr`, every devpts instance counted), the
/// most there may be (`max`), and how many of those only the host's own
/// /dev/pts may take (`reserve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtyCapacity {
    pub nr: u64,
    pub max: u64,
    /// 0 on kernels without `kernel.pty.reserve`.
    pub reserve: u64,
}

impl PtyCapacity {
    /// Reads `<proc>/sys/kernel/pty/{nr,max,reserve}`.
    pub fn read(proc: &Path) -> std::io::Result<PtyCapacity> {
        let read = |name: &str| -> std::io::Result<u64> {
            let text = std::fs::read_to_string(proc.join("sys/kernel/pty").join(name))?;
            text.trim()
                .parse()
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        };
        let reserve = match read("reserve") {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            other => other?,
        };
        Ok(PtyCapacity {
            nr: read("nr")?,
            max: read("max")?,
            reserve,
        })
    }

    /// PTYs not in use, the reserve included.
    pub fn free(&self) -> u64 {
        self.max.saturating_sub(self.nr)
    }

    /// PTYs a sandbox's devpts may still take: every instance but the
    /// host's first stops at `max - reserve`, counted over the host. One
    /// per terminal.
    pub fn for_sandboxes(&self) -> u64 {
        self.max
            .saturating_sub(self.reserve)
            .saturating_sub(self.nr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_reaches_the_hard_limit() {
        let after = raise_nofile().unwrap();
        assert_eq!(after.soft, after.hard);
        assert_eq!(
            FdLimit {
                soft: 1024,
                hard: 1024
            }
            .terminals(),
            170
        );
        assert_eq!(
            FdLimit {
                soft: 1024,
                hard: 65536
            }
            .sandboxes_at_hard(),
            8192
        );
    }

    #[test]
    fn pty_capacity_from_proc() {
        let dir = tempfile::tempdir().unwrap();
        let pty = dir.path().join("sys/kernel/pty");
        std::fs::create_dir_all(&pty).unwrap();
        std::fs::write(pty.join("nr"), "3\n").unwrap();
        std::fs::write(pty.join("max"), "4096\n").unwrap();
        // A kernel without kernel.pty.reserve: every PTY is anyone's.
        let c = PtyCapacity::read(dir.path()).unwrap();
        assert_eq!(
            c,
            PtyCapacity {
                nr: 3,
                max: 4096,
                reserve: 0
            }
        );
        assert_eq!((c.free(), c.for_sandboxes()), (4093, 4093));
        // The kernel's default reserve is the host's own.
        std::fs::write(pty.join("reserve"), "1024\n").unwrap();
        let c = PtyCapacity::read(dir.path()).unwrap();
        assert_eq!((c.free(), c.for_sandboxes()), (4093, 3069));
        std::fs::write(pty.join("nr"), "3500\n").unwrap();
        let c = PtyCapacity::read(dir.path()).unwrap();
        assert_eq!((c.free(), c.for_sandboxes()), (596, 0));
    }
}
