//! The thin seam over raw syscalls. Every `unsafe` block in the runtime
//! lives here, each with a `// SAFETY:` comment; callers get safe wrappers.
//!
//! The workspace denies `unsafe_code` (Cargo.toml `[workspace.lints]`); this
//! module alone allows it, because raw syscalls that nix and rustix do not
//! wrap (clone with namespace flags, close_range, pidfd_open, ioctls) need
//! it. Clippy's `undocumented_unsafe_blocks` holds every block to a
//! `// SAFETY:` comment.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::unistd::Pid;

/// Result of [`clone_process`]: which side of the clone we are on.
pub enum Forked {
    Parent(Pid),
    Child,
}

/// `clone(2)` with fork semantics (the child runs on a copy of the caller's
/// stack) and the given namespace flags. Refuses with EDEADLK unless the
/// process is single-threaded: the child gets one thread and a copy of the
/// memory, so a lock held by another thread would stay locked forever (and
/// the kernel refuses CLONE_NEWUSER from threaded processes anyway).
pub fn clone_process(flags: CloneFlags) -> Result<Forked, Errno> {
    // Unknown (after joining a sandbox's mount namespace, /proc is its
    // procfs, where we have no entry) is let through; the shim never
    // starts threads, this guards against library callers that do.
    if thread_count().is_some_and(|n| n != 1) {
        return Err(Errno::EDEADLK);
    }
    let raw = flags.bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: with a NULL stack, clone behaves like fork: the child continues
    // on a copy of the parent's stack and address space. No Rust invariant is
    // broken because the shim calling this is single-threaded, so no lock can
    // be held by a thread that does not exist in the child.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            raw,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    match ret {
        -1 => Err(Errno::last()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(Pid::from_raw(pid as i32))),
    }
}

/// Threads in this process, from /proc/self/stat (field 20).
pub fn thread_count() -> Option<usize> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may contain spaces; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(17)?.parse().ok()
}

/// Marks every fd from `first` upwards close-on-exec, so nothing the caller
/// leaked reaches the sandbox (CVE-2024-21626 was a leaked host fd).
pub fn cloexec_from(first: RawFd) -> Result<(), Errno> {
    // SAFETY: close_range only changes fd flags; no memory is involved.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// Closes every fd from `first` up: for a forked helper that serves until
/// it exits and must hold nothing of its parent's but the fds below.
pub fn close_from(first: RawFd) -> Result<(), Errno> {
    // SAFETY: close_range only closes fds; the callers (a forked helper)
    // never return to code that owns the closed fds, they exit.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// The Landlock ABI version the kernel offers (0 when Landlock is absent
/// or disabled).
pub fn landlock_abi() -> u32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a NULL attribute pointer, size 0 and the VERSION flag, the
    // syscall only returns a number.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if ret < 0 {
        0
    } else {
        ret as u32
    }
}

/// Plain `fork(2)` for the single-threaded shim.
pub fn fork_process() -> Result<Forked, Errno> {
    clone_process(CloneFlags::empty())
}

/// `pidfd_open(2)`: a stable handle on a process that cannot be confused with
/// a later process reusing the pid.
pub fn pidfd_open(pid: Pid) -> Result<OwnedFd, Errno> {
    // SAFETY: plain syscall with integer arguments; on success the returned
    // fd is new and owned by nobody else.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if ret < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `ret` is a freshly opened fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// Takes ownership of an fd number inherited from our parent (the server
/// passes the spec and the report channel this way).
pub fn adopt_inherited_fd(fd: RawFd) -> Result<OwnedFd, Errno> {
    // F_GETFD fails with EBADF if the fd is not open, so we never wrap a
    // number that is not ours.
    nix::fcntl::fcntl(
        // SAFETY: borrowed only for the duration of this fcntl call.
        unsafe { BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_GETFD,
    )?;
    // SAFETY: the fd is open (checked above) and was handed to this process
    // for it alone; nothing else in the process refers to it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Marks an fd close-on-exec.
pub fn set_cloexec(fd: &impl AsRawFd) -> Result<(), Errno> {
    // SAFETY: borrowed only for the duration of these fcntl calls.
    let b = unsafe { BorrowedFd::borrow_raw(fd.as_raw_fd()) };
    let flags = nix::fcntl::fcntl(b, nix::fcntl::FcntlArg::F_GETFD)?;
    let mut flags = nix::fcntl::FdFlag::from_bits_retain(flags);
    flags.insert(nix::fcntl::FdFlag::FD_CLOEXEC);
    nix::fcntl::fcntl(b, nix::fcntl::FcntlArg::F_SETFD(flags))?;
    Ok(())
}

/// Clears close-on-exec so that a child we exec inherits the fd.
pub fn clear_cloexec(fd: &impl AsRawFd) -> Result<(), Errno> {
    // SAFETY: borrowed only for the duration of this fcntl call.
    let b = unsafe { BorrowedFd::borrow_raw(fd.as_raw_fd()) };
    nix::fcntl::fcntl(
        b,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )?;
    Ok(())
}

/// Brings the loopback interface of the current network namespace up
/// (SIOCSIFFLAGS with IFF_UP), so `lo` works in a fresh netns.
pub fn loopback_up() -> Result<(), Errno> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is a plain C struct; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq with a NUL-terminated name and the
    // socket is open; SIOCGIFFLAGS writes only into `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(Errno::last());
    }
    // SAFETY: reading and writing the flags member of the union that
    // SIOCGIFFLAGS just filled in.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Resets every catchable signal to its default action. A Rust parent leaves
/// SIGPIPE ignored, and an ignored disposition survives execve: `yes | head`
/// would then see EPIPE instead of dying quietly.
pub fn reset_signal_dispositions() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL cannot violate memory safety; there is no
        // Rust handler whose invariants could be broken.
        let _ = unsafe { sigaction(sig, &dfl) };
    }
}

/// `execvpe`-like exec that searches `PATH` from `envp` (we are already inside
/// the sandbox, so this resolves against the sandbox's own /usr/bin).
pub fn exec(argv: &[CString], envp: &[CString]) -> Errno {
    let path = envp
        .iter()
        .find_map(|e| e.to_bytes().strip_prefix(b"PATH=").map(|p| p.to_vec()))
        .unwrap_or_else(|| b"/usr/local/bin:/usr/bin:/bin".to_vec());
    let prog = argv[0].to_bytes();
    if prog.contains(&b'/') {
        return nix::unistd::execve(&argv[0], argv, envp).unwrap_err();
    }
    let mut last = Errno::ENOENT;
    for dir in path.split(|b| *b == b':') {
        let dir = if dir.is_empty() { &b"."[..] } else { dir };
        let mut full = dir.to_vec();
        full.push(b'/');
        full.extend_from_slice(prog);
        let Ok(full) = CString::new(full) else {
            continue;
        };
        let err = nix::unistd::execve(&full, argv, envp).unwrap_err();
        // Keep EACCES over ENOENT, like execvp: "found but not runnable" is
        // the more useful answer.
        if err != Errno::ENOENT || last != Errno::EACCES {
            last = err;
        }
    }
    last
}

/// `struct mount_attr` of `mount_setattr(2)` (linux/mount.h).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// `mount_setattr(path, AT_RECURSIVE)` setting read-only and nosuid (and
/// nodev when asked) on the mount at `path` and every mount below it, in
/// one call: one syscall where a remount per mount would take two (kernel
/// 5.12+; ENOSYS before). Only sets flags, so flags the kernel locked on a
/// mount are kept, and atime settings are left alone.
pub fn make_tree_readonly(path: &std::path::Path, nodev: bool) -> Result<(), Errno> {
    use std::os::unix::ffi::OsStrExt;
    let path = CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | if nodev { MOUNT_ATTR_NODEV } else { 0 },
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `path` is a NUL-terminated string and `attr` a `struct
    // mount_attr` of the size passed; both outlive the call, and the kernel
    // only reads them.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// `prctl(PR_SET_DUMPABLE, 0)`: makes /proc/PID of this process root-owned
/// and forbids ptrace from processes with the same uid.
pub fn set_non_dumpable() -> Result<(), Errno> {
    nix::sys::prctl::set_dumpable(false)
}

/// `prctl(PR_SET_NO_NEW_PRIVS, 1)`: execve can never grant privileges again
/// (setuid bits and file capabilities are ignored).
pub fn set_no_new_privs() -> Result<(), Errno> {
    nix::sys::prctl::set_no_new_privs()
}

/// Drops one capability from the bounding set by number, for capabilities
/// newer than the `caps` crate knows (up to /proc/sys/kernel/cap_last_cap).
pub fn capbset_drop(cap: u32) -> Result<(), Errno> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// Clears the ambient capability set.
pub fn ambient_clear_all() -> Result<(), Errno> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// `setgroups(2)` with an empty list: drops every supplementary group (see
/// `caps::become_user_without_caps` for where it is permitted).
pub fn clear_supplementary_groups() -> Result<(), Errno> {
    // SAFETY: a zero-length list with a null pointer is valid for setgroups.
    let ret = unsafe { libc::setgroups(0, std::ptr::null()) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// `_exit(2)`: leaves a forked child without running the parent's exit
/// handlers or flushing its copies of the parent's buffers.
pub fn exit_immediately(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

/// Spawns `cmd` with each `(fd, number)` pair installed at exactly that fd
/// number in the child (and nothing else beyond stdio inherited, since
/// everything we open is close-on-exec).
pub fn spawn_with_fds(
    cmd: &mut std::process::Command,
    fds: Vec<(OwnedFd, RawFd)>,
) -> std::io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    // Move the sources above any target number first, so installing one
    // pair can never clobber the source of another.
    let mut moved = Vec::with_capacity(fds.len());
    for (fd, target) in fds {
        let high = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(64))?;
        // SAFETY: F_DUPFD_CLOEXEC returned a new fd that nothing else owns.
        moved.push((unsafe { OwnedFd::from_raw_fd(high) }, target));
    }
    let pairs: Vec<(RawFd, RawFd)> = moved.iter().map(|(fd, t)| (fd.as_raw_fd(), *t)).collect();
    // SAFETY: the closure runs between fork and exec and only calls dup2,
    // which is async-signal-safe; it allocates nothing (the pairs were
    // collected before the fork).
    unsafe {
        cmd.pre_exec(move || {
            for (src, dst) in &pairs {
                if libc::dup2(*src, *dst) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn();
    drop(moved);
    child
}

/// Makes `cmd`, once spawned, get SIGKILL when we die (set between fork
/// and exec): a helper (pasta) never outlives the shim that started it,
/// even when the shim is killed.
pub fn die_with_us(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only calls prctl,
    // which is async-signal-safe and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

// Raw syscalls of one concern live in a submodule of their own.
pub mod cgroups;
pub mod quota;
pub mod seccomp;

/// Window size of a terminal (TIOCGWINSZ).
pub fn get_winsize(fd: &impl AsRawFd) -> Result<libc::winsize, Errno> {
    // SAFETY: all-zero is a valid winsize.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into `ws`, which outlives the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } < 0 {
        return Err(Errno::last());
    }
    Ok(ws)
}

/// Sets a terminal's window size (TIOCSWINSZ); the kernel sends SIGWINCH to
/// the terminal's foreground process group.
pub fn set_winsize(fd: &impl AsRawFd, rows: u16, cols: u16) -> Result<(), Errno> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ only reads the winsize we pass.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Makes `fd` (a terminal) the controlling terminal of the calling session
/// leader (TIOCSCTTY).
pub fn set_controlling_terminal(fd: &impl AsRawFd) -> Result<(), Errno> {
    // SAFETY: TIOCSCTTY takes an integer argument and touches no memory.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Wraps an fd number this process just received from the kernel (a new
/// pty master, an SCM_RIGHTS fd) and owns exclusively.
pub fn own_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: callers pass only fds freshly created for this process that
    // no other object owns (see the call sites in `pty`).
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// `dup2(fd, target)`: installs `fd` at number `target` (stdio set-up).
pub fn dup_onto(fd: &impl AsRawFd, target: RawFd) -> Result<(), Errno> {
    // SAFETY: dup2 only manipulates the fd table; `target` is a stdio slot
    // the caller means to replace.
    if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
        return Err(Errno::last());
    }
    Ok(())
}
