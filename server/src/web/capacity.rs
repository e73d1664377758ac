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

/// The host's PTYs: in use (`nr`) and the most there may be (`max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtyCapacity {
    pub nr: u64,
    pub max: u64,
}

impl PtyCapacity {
    /// Reads `<proc>/sys/kernel/pty/{nr,max}`.
    pub fn read(proc: &Path) -> std::io::Result<PtyCapacity> {
        let read = |name: &str| -> std::io::Result<u64> {
            let text = std::fs::read_to_string(proc.join("sys/kernel/pty").join(name))?;
            text.trim()
                .parse()
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        };
        Ok(PtyCapacity {
            nr: read("nr")?,
            max: read("max")?,
        })
    }

    pub fn free(&self) -> u64 {
        self.max.saturating_sub(self.nr)
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
    }

    #[test]
    fn pty_capacity_from_proc() {
        let dir = tempfile::tempdir().unwrap();
        let pty = dir.path().join("sys/kernel/pty");
        std::fs::create_dir_all(&pty).unwrap();
        std::fs::write(pty.join("nr"), "3\n").unwrap();
        std::fs::write(pty.join("max"), "4096\n").unwrap();
        let c = PtyCapacity::read(dir.path()).unwrap();
        assert_eq!(c, PtyCapacity { nr: 3, max: 4096 });
        assert_eq!(c.free(), 4093);
    }
}
