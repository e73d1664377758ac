//! Landlock, best effort, as a second wall around the filesystem.
//!
//! The sandbox's mounts already decide what it can see; Landlock decides,
//! independently, what it may change: writes only to the workspace, /tmp,
//! /dev/shm and the terminal and null devices, reads and executes of the
//! rest. It is the wall that still stands if a mount is wrong, and in the
//! `landlock` isolation tier (no user namespaces) it is the main one.
//!
//! Rules are bound to files opened when the ruleset is built, so
//! [`restrict`] runs inside the sandbox after pivot_root, with paths as the
//! sandbox sees them, and before seccomp and execve. It confines the calling
//! thread and everything it starts.
//!
//! Best effort: rights the running kernel does not know are dropped, and the
//! level actually reached is returned ([`LandlockStatus`]) so it can be
//! reported, never assumed.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use ::landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd,
    PathFdError, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use serde::{Deserialize, Serialize};

use crate::setup_error::SetupError;

/// The newest ABI whose access rights we ask for. Landlock only ever adds
/// rights, so asking for more than the kernel knows is safe: BestEffort
/// drops the unknown ones and the status says "partially enforced".
const TARGET_ABI: ABI = ABI::V9;

/// System directories readable (and executable) in the shared-host tier,
/// where "/" also holds other tenants' files. Not /dev: the host's /dev/shm
/// and terminals are shared (see [`SHARED_HOST_DEVICES`]).
pub const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/proc", "/sys",
];

/// Devices only read in the shared-host tier.
pub const SHARED_HOST_READ_DEVICES: &[&str] = &["/dev/random", "/dev/urandom"];

/// [`DEVICES`] in the shared-host tier: not `/dev/pts`, which holds every
/// terminal of the host, the operator's among them. The session's own
/// terminal is added by path ([`LandlockPaths::with_terminal`]); programs
/// that make terminals (`script`, `tmux`) get theirs from /dev/ptmx with
/// TIOCGPTPEER, which opens no path.
pub const SHARED_HOST_DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/tty",
    "/dev/ptmx",
];

/// Whether `path` lies where every sandbox of the shared-host tier may read
/// (a workspace, the state or a secret there would be open to all tenants).
pub fn readable_in_shared_host(path: &Path) -> bool {
    SYSTEM_DIRS
        .iter()
        .chain(SHARED_HOST_READ_DEVICES)
        .any(|d| path.starts_with(d))
}

/// The devices a terminal session needs to write to and send ioctls to.
pub const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/tty",
    "/dev/pts",
    "/dev/ptmx",
];

/// What the sandbox may touch, as paths inside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockPaths {
    /// Read, write, create, remove, execute. Must exist.
    pub workspace: PathBuf,
    /// Like the workspace, skipped when absent (e.g. /tmp, /dev/shm).
    pub read_write: Vec<PathBuf>,
    /// Read and execute, skipped when absent.
    pub read_only: Vec<PathBuf>,
    /// Read, write and device ioctls (IOCTL_DEV, ABI 5), skipped when
    /// absent. Without IOCTL_DEV a terminal opened after restriction (say
    /// `less` opening /dev/tty) could not even read its window size.
    pub devices: Vec<PathBuf>,
    /// Also scope signals and abstract unix sockets (ABI 6) to the
    /// sandbox's own Landlock domain. Useful where there is no pid or net
    /// namespace; off in the namespace tier, where those namespaces already
    /// do it and where a shell in one terminal must still be able to `kill`
    /// a process started from another (each exec is its own domain).
    pub scope_ipc: bool,
    /// Also refuse every TCP bind and connect (ABI 4). Where there is no
    /// network namespace; seccomp refuses the sockets themselves as well.
    #[serde(default)]
    pub no_tcp: bool,
}

impl LandlockPaths {
    /// The namespace tier, after pivot_root: everything visible is meant to
    /// be readable (the mounts decide what is visible), writes go only to
    /// the workspace, /tmp (a private tmpfs there), /dev/shm and [`DEVICES`].
    pub fn for_sandbox(workspace: impl Into<PathBuf>) -> LandlockPaths {
        LandlockPaths {
            workspace: workspace.into(),
            read_write: vec!["/tmp".into(), "/dev/shm".into()],
            read_only: vec!["/".into()],
            devices: DEVICES.iter().map(PathBuf::from).collect(),
            scope_ipc: false,
            no_tcp: false,
        }
    }

    /// The `landlock` tier, on the host's own filesystem: only
    /// [`SYSTEM_DIRS`] are readable, since "/" would include other tenants'
    /// workspaces, and only the workspace is writable, since the host's /tmp
    /// and /dev/shm are shared (point TMPDIR into the workspace). Signals,
    /// abstract sockets and TCP are scoped too: no namespace does it here.
    pub fn for_shared_host(workspace: impl Into<PathBuf>) -> LandlockPaths {
        LandlockPaths {
            workspace: workspace.into(),
            read_write: Vec::new(),
            read_only: SYSTEM_DIRS
                .iter()
                .chain(SHARED_HOST_READ_DEVICES)
                .map(PathBuf::from)
                .collect(),
            devices: SHARED_HOST_DEVICES.iter().map(PathBuf::from).collect(),
            scope_ipc: true,
            no_tcp: true,
        }
    }

    /// Adds the session's own terminal (a `/dev/pts/N` path).
    pub fn with_terminal(mut self, slave: impl Into<PathBuf>) -> LandlockPaths {
        self.devices.push(slave.into());
        self
    }
}

/// How much of the requested ruleset the kernel enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Every requested right is enforced.
    FullyEnforced,
    /// Landlock is on, but the kernel lacks some requested rights (see the
    /// ABI table in docs/security.md).
    PartiallyEnforced,
    /// Landlock is absent or disabled: no second wall.
    NotEnforced,
}

/// What [`restrict`] achieved, to report to the user and the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockStatus {
    /// The Landlock ABI in use: the kernel's, capped at the newest this
    /// build knows; 0 when Landlock is unavailable.
    pub abi: u32,
    pub level: Level,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::FullyEnforced => "fully enforced",
            Level::PartiallyEnforced => "partially enforced",
            Level::NotEnforced => "not enforced",
        })
    }
}

impl fmt::Display for LandlockStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.abi {
            0 => write!(f, "{} (Landlock unavailable)", self.level),
            abi => write!(f, "{} (Landlock ABI {abi})", self.level),
        }
    }
}

/// Why the ruleset could not be built or applied.
#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("open {} for a Landlock rule: {source}", path.display())]
    OpenPath {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("Landlock ruleset: {0}")]
    Ruleset(#[from] ::landlock::RulesetError),
}

impl From<LandlockError> for SetupError {
    fn from(err: LandlockError) -> SetupError {
        let message = err.to_string();
        let errno = match &err {
            LandlockError::OpenPath { source, .. } => source.raw_os_error(),
            LandlockError::Ruleset(_) => None,
        };
        let e = match errno {
            Some(n) => SetupError::errno("apply Landlock", nix::errno::Errno::from_raw(n)),
            None => SetupError::new("apply Landlock", ""),
        };
        e.with_message(message)
    }
}

/// The status [`restrict`] reaches on a kernel with Landlock ABI `abi` (0:
/// none), known before anything is restricted so the sandbox's record
/// (`runtime::record`) can carry it: fully enforced from `TARGET_ABI` on,
/// in part below it.
pub fn expected(kernel_abi: u32) -> LandlockStatus {
    let target = TARGET_ABI as u32;
    let level = match kernel_abi {
        0 => Level::NotEnforced,
        n if n >= target => Level::FullyEnforced,
        _ => Level::PartiallyEnforced,
    };
    // As `restrict` reports it: the kernel's ABI, capped at the newest we
    // know.
    LandlockStatus {
        abi: kernel_abi.min(target),
        level,
    }
}

/// Restricts the calling thread (and what it starts) to `paths`, handling
/// every filesystem right up to Landlock ABI 9. Sets no_new_privs. Returns
/// the level the kernel actually enforces.
pub fn restrict(paths: &LandlockPaths) -> Result<LandlockStatus, LandlockError> {
    let all = AccessFs::from_all(TARGET_ABI);
    let read = AccessFs::from_read(TARGET_ABI);
    let device = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev;

    // Open every path first: a missing workspace fails before anything is
    // created, let alone enforced.
    let mut rules = vec![
        rule(&paths.workspace, all)?.ok_or_else(|| LandlockError::OpenPath {
            path: paths.workspace.clone(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        })?,
    ];
    let groups = [
        (&paths.read_write, all),
        (&paths.read_only, read),
        (&paths.devices, device),
    ];
    for (list, access) in groups {
        for path in list {
            rules.extend(rule(path, access)?);
        }
    }

    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)?;
    if paths.scope_ipc {
        ruleset = ruleset.scope(Scope::AbstractUnixSocket | Scope::Signal)?;
    }
    if paths.no_tcp {
        // Handled with no rule allowing any port: every bind and connect.
        ruleset = ruleset.handle_access(AccessNet::from_all(TARGET_ABI))?;
    }
    let status = ruleset
        .create()?
        .add_rules(rules.into_iter().map(Ok::<_, ::landlock::RulesetError>))?
        .restrict_self()?;

    let abi = match status.landlock {
        ::landlock::LandlockStatus::Available { effective_abi, .. } => effective_abi as u32,
        _ => 0,
    };
    let level = match status.ruleset {
        RulesetStatus::FullyEnforced => Level::FullyEnforced,
        RulesetStatus::PartiallyEnforced => Level::PartiallyEnforced,
        RulesetStatus::NotEnforced => Level::NotEnforced,
    };
    Ok(LandlockStatus { abi, level })
}

/// A rule granting `access` beneath `path`, or None when the path does not
/// exist. Rights that only make sense on directories are dropped for a file
/// (the kernel would refuse them, and the crate would count that as
/// "partially enforced").
fn rule(
    path: &Path,
    access: BitFlags<AccessFs>,
) -> Result<Option<PathBeneath<PathFd>>, LandlockError> {
    let fd = match PathFd::new(path) {
        Ok(fd) => fd,
        Err(PathFdError::OpenCall { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(None)
        }
        Err(PathFdError::OpenCall { source, .. }) => {
            return Err(LandlockError::OpenPath {
                path: path.to_path_buf(),
                source,
            })
        }
        Err(e) => {
            return Err(LandlockError::OpenPath {
                path: path.to_path_buf(),
                source: io::Error::other(e.to_string()),
            })
        }
    };
    let stat = nix::sys::stat::fstat(&fd).map_err(|e| LandlockError::OpenPath {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    let is_dir = stat.st_mode & libc::S_IFMT == libc::S_IFDIR;
    let access = if is_dir {
        access
    } else {
        access & AccessFs::from_file(TARGET_ABI)
    };
    Ok(Some(PathBeneath::new(fd, access)))
}

#[cfg(test)]
mod tests {
    use std::fs::{self, OpenOptions};
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::process::Command;

    use nix::errno::Errno;

    use super::*;
    use crate::seccomp::child;

    #[test]
    fn expected_level_follows_the_kernel_abi() {
        assert_eq!(expected(0).level, Level::NotEnforced);
        assert_eq!(expected(4).level, Level::PartiallyEnforced);
        assert_eq!(expected(9).level, Level::FullyEnforced);
        assert_eq!(expected(12).level, Level::FullyEnforced);
        assert_eq!(expected(12).abi, TARGET_ABI as u32);
    }

    #[test]
    fn sandbox_paths_allow_writes_only_where_documented() {
        let p = LandlockPaths::for_sandbox("/workspace/alice");
        assert_eq!(p.workspace, Path::new("/workspace/alice"));
        assert_eq!(p.read_write, [Path::new("/tmp"), Path::new("/dev/shm")]);
        assert_eq!(p.read_only, [Path::new("/")]);
        assert!(p.devices.iter().any(|d| d == Path::new("/dev/tty")));
        assert!(p.devices.iter().any(|d| d == Path::new("/dev/pts")));
        assert!(!p.scope_ipc);
        let h = LandlockPaths::for_shared_host("/srv/warren/alice");
        assert!(h.read_write.is_empty());
        assert!(!h.read_only.iter().any(|d| d == Path::new("/")));
        assert!(!h.read_only.iter().any(|d| d == Path::new("/dev")));
        assert!(h.read_only.iter().any(|d| d == Path::new("/dev/urandom")));
        assert!(!h.devices.iter().any(|d| d == Path::new("/dev/pts")));
        assert!(h.scope_ipc && h.no_tcp && !p.no_tcp);
        let t = h.with_terminal("/dev/pts/7");
        assert!(t.devices.iter().any(|d| d == Path::new("/dev/pts/7")));
        assert!(readable_in_shared_host(Path::new("/opt/warren/ws")));
        assert!(readable_in_shared_host(Path::new("/etc/warren/secret")));
        assert!(!readable_in_shared_host(Path::new("/var/lib/warren")));
        assert!(!readable_in_shared_host(Path::new("/optional/ws")));
    }

    #[test]
    fn status_reports_level_and_abi() {
        let s = LandlockStatus {
            abi: 7,
            level: Level::PartiallyEnforced,
        };
        assert_eq!(s.to_string(), "partially enforced (Landlock ABI 7)");
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"abi":7,"level":"partially_enforced"}"#
        );
        let none = LandlockStatus {
            abi: 0,
            level: Level::NotEnforced,
        };
        assert_eq!(none.to_string(), "not enforced (Landlock unavailable)");
    }

    #[test]
    fn documented_in_security_md() {
        let doc = include_str!("../../docs/security.md");
        for d in DEVICES {
            assert!(doc.contains(d), "docs/security.md lacks {d}");
        }
    }

    fn entry() -> String {
        child::entry(module_path!(), "child_entry")
    }

    fn outcome<T>(r: Result<T, impl Into<Errno>>) -> String {
        match r {
            Ok(_) => "ok".into(),
            Err(e) => format!("{:?}", e.into()),
        }
    }

    fn io_outcome<T>(r: io::Result<T>) -> String {
        outcome(r.map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0))))
    }

    #[test]
    fn restrict_confines_writes_for_real() {
        let allowed = tempfile::tempdir().unwrap();
        let denied = tempfile::tempdir().unwrap();
        fs::write(denied.path().join("old"), "x").unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port().to_string();
        let out = child::run(
            &entry(),
            "restrict",
            &[
                ("WARREN_TEST_ALLOWED", allowed.path().to_str().unwrap()),
                ("WARREN_TEST_DENIED", denied.path().to_str().unwrap()),
                ("WARREN_TEST_PORT", &port),
            ],
        );
        let r = child::results(&out);
        assert!(r.contains_key("done"), "child failed: {out:?}");
        for (k, v) in &r {
            println!("{k:<24} {v}");
        }

        assert!(
            r["missing workspace"].starts_with("error: open /nonexistent"),
            "{r:?}"
        );
        let kernel_abi = crate::sys::landlock_abi();
        let expected = match kernel_abi {
            0 => Level::NotEnforced,
            n if n >= TARGET_ABI as u32 => Level::FullyEnforced,
            _ => Level::PartiallyEnforced,
        };
        assert_eq!(
            r["level"],
            serde_json::to_value(expected).unwrap().as_str().unwrap()
        );
        assert_eq!(r["abi"], kernel_abi.min(TARGET_ABI as u32).to_string());
        // What the sandbox's record says before restricting is what
        // restricting reaches.
        assert_eq!(r["status"], super::expected(kernel_abi).to_string());
        if kernel_abi == 0 {
            println!("skipped the enforcement checks: this kernel has no Landlock");
            return;
        }

        // Allowed everywhere with Landlock ABI 1.
        assert_eq!(r["write workspace"], "ok");
        assert_eq!(r["mkdir workspace"], "ok");
        assert_eq!(r["read /usr"], "ok");
        assert_eq!(r["read /etc/passwd"], "ok");
        assert_eq!(r["read denied dir"], "ok");
        assert_eq!(r["write /dev/null"], "ok");
        assert_eq!(r["exec /bin/true"], "ok");
        // Refused.
        assert_eq!(r["write denied dir"], "EACCES");
        assert_eq!(r["mkdir denied dir"], "EACCES");
        assert_eq!(r["remove denied file"], "EACCES");
        assert_eq!(r["write /etc"], "EACCES");
        // Also in the exec'd child.
        assert_eq!(r["child writes denied dir"], "exit status: 3");
        assert!(fs::read_dir(denied.path()).unwrap().count() == 1);
        assert!(allowed.path().join("file").exists());

        if kernel_abi >= 3 {
            assert_eq!(r["truncate /dev/null"], "ok");
        }
        if kernel_abi >= 4 {
            // no_tcp: a listening port on loopback is out of reach.
            assert_eq!(r["connect tcp loopback"], "EACCES");
        }
        if kernel_abi >= 5 {
            // IOCTL_DEV is handled: a terminal device keeps its ioctls, a
            // device outside DEVICES loses them.
            assert_eq!(r["ioctl /dev/ptmx"], "ok");
            assert_eq!(r["ioctl /dev/urandom"], "EACCES");
        }
        if kernel_abi >= 6 {
            assert_eq!(r["signal parent"], "EPERM");
        }
    }

    /// Entry point of the child process of `restrict_confines_writes_for_real`.
    #[test]
    fn child_entry() {
        let Some(mode) = child::mode() else { return };
        assert_eq!(mode, "restrict");
        let allowed = PathBuf::from(std::env::var("WARREN_TEST_ALLOWED").unwrap());
        let denied = PathBuf::from(std::env::var("WARREN_TEST_DENIED").unwrap());

        let missing = restrict(&LandlockPaths::for_sandbox("/nonexistent/workspace"));
        child::report(
            "missing workspace",
            match missing {
                Ok(s) => format!("restricted: {s}"),
                Err(e) => format!("error: {e}"),
            },
        );

        let paths = LandlockPaths {
            workspace: allowed.clone(),
            read_write: Vec::new(),
            read_only: vec!["/".into()],
            devices: DEVICES.iter().map(PathBuf::from).collect(),
            scope_ipc: true,
            no_tcp: true,
        };
        let status = restrict(&paths).unwrap();
        child::report("abi", status.abi);
        child::report(
            "level",
            serde_json::to_value(status.level)
                .unwrap()
                .as_str()
                .unwrap(),
        );
        child::report("status", status);

        let write = |p: &Path| io_outcome(fs::write(p, "data"));
        child::report("write workspace", write(&allowed.join("file")));
        child::report(
            "mkdir workspace",
            io_outcome(fs::create_dir(allowed.join("dir"))),
        );
        child::report("read /usr", io_outcome(fs::read_dir("/usr")));
        child::report("read /etc/passwd", io_outcome(fs::read("/etc/passwd")));
        child::report("read denied dir", io_outcome(fs::read(denied.join("old"))));
        child::report("write denied dir", write(&denied.join("new")));
        child::report(
            "mkdir denied dir",
            io_outcome(fs::create_dir(denied.join("dir"))),
        );
        child::report(
            "remove denied file",
            io_outcome(fs::remove_file(denied.join("old"))),
        );
        child::report("write /etc", write(Path::new("/etc/warren-landlock-test")));
        let null = OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .and_then(|mut f| f.write_all(b"x"));
        child::report("write /dev/null", io_outcome(null));
        let trunc = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open("/dev/null");
        child::report("truncate /dev/null", io_outcome(trunc));
        let status = Command::new("/bin/true").status();
        child::report(
            "exec /bin/true",
            io_outcome(status.map(|s| assert!(s.success()))),
        );
        let status = Command::new("/bin/sh")
            .arg("-c")
            .arg("(echo x > \"$1\") 2>/dev/null || exit 3")
            .arg("sh")
            .arg(denied.join("from-child"))
            .status();
        child::report(
            "child writes denied dir",
            status.map_or_else(|e| e.to_string(), |s| s.to_string()),
        );

        let ptmx = OpenOptions::new().read(true).write(true).open("/dev/ptmx");
        let ptmx =
            ptmx.and_then(|f| crate::sys::seccomp::pty_number(f.as_fd()).map_err(io::Error::from));
        child::report("ioctl /dev/ptmx", io_outcome(ptmx));
        let rnd = fs::File::open("/dev/urandom");
        let rnd = rnd
            .and_then(|f| crate::sys::seccomp::entropy_count(f.as_fd()).map_err(io::Error::from));
        child::report("ioctl /dev/urandom", io_outcome(rnd));
        let port = std::env::var("WARREN_TEST_PORT").unwrap();
        child::report(
            "connect tcp loopback",
            io_outcome(std::net::TcpStream::connect(format!("127.0.0.1:{port}"))),
        );
        let parent = nix::unistd::getppid();
        child::report(
            "signal parent",
            outcome(nix::sys::signal::kill(parent, None)),
        );
        child::finish();
    }
}
