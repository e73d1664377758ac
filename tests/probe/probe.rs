//! warren-probe: a small static binary run inside sandboxes that reports
//! what it sees, one `question<TAB>answer` line per question on its command
//! line (questions may contain `=`, answers never contain a tab).
//! std only (no crates), built by tests/build.rs with `+crt-static` so it runs
//! in any rootfs. Integration tests are rows of (spec, question, expected).

use std::ffi::CString;
use std::fs;
use std::io::Write;

extern "C" {
    fn getuid() -> u32;
    fn getgid() -> u32;
    fn geteuid() -> u32;
    fn getgroups(size: i32, list: *mut u32) -> i32;
    fn fork() -> i32;
    fn setsid() -> i32;
    fn getpid() -> i32;
    fn kill(pid: i32, sig: i32) -> i32;
    fn open(path: *const i8, flags: i32, mode: u32) -> i32;
    fn close(fd: i32) -> i32;
    fn _exit(code: i32) -> !;
    fn socket(domain: i32, ty: i32, proto: i32) -> i32;
    fn ioctl(fd: i32, req: u64, ...) -> i32;
    fn syscall(nr: i64, ...) -> i64;
    fn wait(status: *mut i32) -> i32;
    fn getrlimit(resource: i32, rlim: *mut [u64; 2]) -> i32;
    fn fcntl(fd: i32, cmd: i32, ...) -> i32;
}

// x86_64 syscall probes, from runtime/src/sys/seccomp.rs: arguments the
// kernel itself refuses with some other errno, so an EPERM can only come
// from the filter (bubblewrap's try-syscall.c does the same).
const BAD_PTR: u64 = 1;
const BAD_FD: u64 = u64::MAX;
const UNOPENED_FD: u64 = 0x7fff_ffff;
const BAD_FLAGS: u64 = 0xdead_0000;
const CLONE_NEWUSER: u64 = 0x1000_0000;
const CLONE_NEWNS: u64 = 0x0002_0000;
const CLONE_FS: u64 = 0x200;
const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541C;
const TIOCGWINSZ: u64 = 0x5413;

const SYSCALLS: &[(&str, i64, [u64; 6])] = &[
    ("keyctl", 250, [0xdead, 0, 0, 0, 0, 0]),
    ("add_key", 248, [BAD_PTR, 0, 0, 0, 0, 0]),
    ("request_key", 249, [BAD_PTR, 0, 0, 0, 0, 0]),
    ("bpf", 321, [0x7fff_ffff, 0, 0, 0, 0, 0]),
    ("perf_event_open", 298, [BAD_PTR, 0, u64::MAX, u64::MAX, 0, 0]),
    ("userfaultfd", 323, [0x3, 0, 0, 0, 0, 0]),
    ("io_uring_setup", 425, [1, BAD_PTR, 0, 0, 0, 0]),
    ("io_uring_enter", 426, [BAD_FD, 0, 0, 0, 0, 0]),
    ("io_uring_register", 427, [UNOPENED_FD, 0, 0, 0, 0, 0]),
    ("kexec_load", 246, [0, 0, 0, BAD_FLAGS, 0, 0]),
    ("kexec_file_load", 320, [BAD_FD, BAD_FD, 0, 0, BAD_FLAGS, 0]),
    ("init_module", 175, [0, 0, BAD_PTR, 0, 0, 0]),
    ("finit_module", 313, [BAD_FD, 0, BAD_FLAGS, 0, 0, 0]),
    ("delete_module", 176, [BAD_PTR, 0, 0, 0, 0, 0]),
    ("mount", 165, [0, BAD_PTR, 0, 0, 0, 0]),
    ("umount2", 166, [BAD_PTR, BAD_FLAGS, 0, 0, 0, 0]),
    ("pivot_root", 155, [BAD_PTR, BAD_PTR, 0, 0, 0, 0]),
    ("fsopen", 430, [BAD_PTR, BAD_FLAGS, 0, 0, 0, 0]),
    ("fsconfig", 431, [BAD_FD, 0xdead, 0, 0, 0, 0]),
    ("fsmount", 432, [BAD_FD, 0, 0, 0, 0, 0]),
    ("fspick", 433, [BAD_FD, BAD_PTR, BAD_FLAGS, 0, 0, 0]),
    ("open_tree", 428, [BAD_FD, BAD_PTR, BAD_FLAGS, 0, 0, 0]),
    ("move_mount", 429, [BAD_FD, BAD_PTR, BAD_FD, BAD_PTR, BAD_FLAGS, 0]),
    ("mount_setattr", 442, [BAD_FD, BAD_PTR, BAD_FLAGS, 0, 0, 0]),
    ("unshare_newuser", 272, [CLONE_NEWUSER | 1 << 40, 0, 0, 0, 0, 0]),
    ("clone_newuser", 56, [CLONE_NEWUSER | CLONE_FS, 0, 0, 0, 0, 0]),
    ("setns", 308, [BAD_FD, 0, 0, 0, 0, 0]),
    ("process_vm_readv", 310, [0, 0, 0, 0, 0, 1]),
    ("process_vm_writev", 311, [0, 0, 0, 0, 0, 1]),
    ("ptrace", 101, [16, 0x7fff_ffff, 0, 0, 0, 0]),
    ("reboot", 169, [0, 0, 0, 0, 0, 0]),
    ("swapon", 167, [BAD_PTR, BAD_FLAGS, 0, 0, 0, 0]),
    ("swapoff", 168, [BAD_PTR, 0, 0, 0, 0, 0]),
    ("acct", 163, [BAD_PTR, 0, 0, 0, 0, 0]),
    ("quotactl", 179, [0xff, 0, 0, 0, 0, 0]),
    ("quotactl_fd", 443, [BAD_FD, 0xff, 0, 0, 0, 0]),
    ("name_to_handle_at", 303, [BAD_FD, BAD_PTR, BAD_PTR, BAD_PTR, BAD_FLAGS, 0]),
    ("open_by_handle_at", 304, [BAD_FD, BAD_PTR, 0, 0, 0, 0]),
    ("iopl", 172, [4, 0, 0, 0, 0, 0]),
    ("ioperm", 173, [0x10000, 1, 1, 0, 0, 0]),
    ("personality_linux32", 135, [0x0008, 0, 0, 0, 0, 0]),
    ("socket_vsock", 41, [40, 15, 0, 0, 0, 0]),
    ("ioctl_tiocsti", 16, [BAD_FD, TIOCSTI, BAD_PTR, 0, 0, 0]),
    ("ioctl_tiocsti_high", 16, [BAD_FD, 1 << 32 | TIOCSTI, BAD_PTR, 0, 0, 0]),
    ("ioctl_tioclinux", 16, [BAD_FD, TIOCLINUX, BAD_PTR, 0, 0, 0]),
    ("clone3", 435, [BAD_PTR, 88, 0, 0, 0, 0]),
    ("x32_getpid", 0x4000_0000 | 39, [0; 6]),
    // Neighbours the filter must let through unchanged.
    ("personality_query", 135, [0xffff_ffff, 0, 0, 0, 0, 0]),
    ("ioctl_tiocgwinsz", 16, [BAD_FD, TIOCGWINSZ, BAD_PTR, 0, 0, 0]),
    ("socket_unix", 41, [1, 15, 0, 0, 0, 0]),
    ("unshare_newns", 272, [CLONE_NEWNS | 1 << 40, 0, 0, 0, 0, 0]),
    ("clone_newns", 56, [CLONE_NEWNS | CLONE_FS, 0, 0, 0, 0, 0]),
];

/// Issues one probe syscall: "ok" or the errno's name.
fn try_syscall(name: &str) -> String {
    let Some((_, nr, a)) = SYSCALLS.iter().find(|(n, _, _)| *n == name) else {
        return format!("unknown syscall probe {name}");
    };
    // SAFETY: every argument set is one the kernel rejects before touching
    // memory (bad pointers are 1, fds are -1), except personality, whose
    // old value is restored right away.
    let r = unsafe { syscall(*nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    let answer = if r < 0 { errno_name(std::io::Error::last_os_error()) } else { "ok".to_string() };
    if *nr == 135 && r >= 0 {
        unsafe { syscall(135, r as u64, 0, 0, 0, 0, 0) };
    }
    answer
}

/// Allocates and touches memory 16 MiB at a time up to `mib`, printing the
/// running total so the caller sees where it was killed.
fn hog(mib: usize) -> String {
    let mut keep: Vec<Vec<u8>> = Vec::new();
    let mut out = std::io::stdout();
    for step in 1..=mib / 16 {
        keep.push(vec![1u8; 16 << 20]);
        let _ = writeln!(out, "hog-mib\t{}", step * 16);
        let _ = out.flush();
    }
    format!("survived {mib} MiB")
}

/// Forks sleeping children until the kernel refuses, then kills and reaps
/// them: answers "<children> <errno of the refused fork>".
fn forkbomb() -> String {
    let mut kids = Vec::new();
    let err = loop {
        let pid = unsafe { fork() };
        if pid == 0 {
            std::thread::sleep(std::time::Duration::from_secs(120));
            unsafe { _exit(0) };
        }
        if pid < 0 {
            break errno_name(std::io::Error::last_os_error());
        }
        kids.push(pid);
        if kids.len() > 100_000 {
            break "no limit".to_string();
        }
    };
    for k in &kids {
        unsafe { kill(*k, 9) };
    }
    for _ in &kids {
        let mut status = 0;
        unsafe { wait(&mut status) };
    }
    format!("{} {err}", kids.len())
}

/// Spins `threads` busy threads for `ms` of wall time and answers the CPU
/// time used as a percentage of one core.
fn spin(threads: usize, ms: u64) -> String {
    let start = std::time::Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let mut x = 0u64;
                while start.elapsed().as_millis() < ms as u128 {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    std::hint::black_box(x);
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    let wall = start.elapsed().as_secs_f64();
    let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = &stat[stat.rfind(')').unwrap_or(0) + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // utime and stime (fields 14 and 15) in clock ticks (100 per second).
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    format!("{:.0}", ticks / 100.0 / wall * 100.0)
}

/// Flags of `lo` from SIOCGIFFLAGS (independent of whether /sys exists).
fn lo_up() -> String {
    const SIOCGIFFLAGS: u64 = 0x8913;
    // struct ifreq: 16 bytes of name, then a 24-byte union (flags: i16).
    let mut req = [0u8; 40];
    req[..2].copy_from_slice(b"lo");
    // SAFETY: plain libc calls; `req` is large enough for struct ifreq.
    let fd = unsafe { socket(2, 2, 0) };
    if fd < 0 {
        return errno_name(std::io::Error::last_os_error());
    }
    let r = unsafe { ioctl(fd, SIOCGIFFLAGS, req.as_mut_ptr()) };
    unsafe { close(fd) };
    if r < 0 {
        return errno_name(std::io::Error::last_os_error());
    }
    let flags = i16::from_ne_bytes([req[16], req[17]]);
    if flags & 1 == 1 { "yes" } else { "no" }.to_string()
}

fn errno_name(e: std::io::Error) -> String {
    let n = e.raw_os_error().unwrap_or(0);
    let name = match n {
        1 => "EPERM",
        2 => "ENOENT",
        9 => "EBADF",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        17 => "EEXIST",
        20 => "ENOTDIR",
        21 => "EISDIR",
        22 => "EINVAL",
        28 => "ENOSPC",
        30 => "EROFS",
        3 => "ESRCH",
        11 => "EAGAIN",
        25 => "ENOTTY",
        8 => "ENOEXEC",
        38 => "ENOSYS",
        40 => "ELOOP",
        95 => "EOPNOTSUPP",
        97 => "EAFNOSUPPORT",
        101 => "ENETUNREACH",
        111 => "ECONNREFUSED",
        _ => return format!("errno{n}"),
    };
    name.to_string()
}

fn passwd_name(file: &str, id: u32) -> String {
    fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == id.to_string()).then(|| f[0].to_string())
        })
        .unwrap_or_else(|| format!("?{id}"))
}

/// The options of the mount whose mount point is exactly `path`
/// (the last one, i.e. the one on top), from /proc/self/mountinfo.
fn mount_options(path: &str) -> String {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found = "none".to_string();
    for l in info.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        if f.len() > 5 && f[4] == path {
            let mut opts: Vec<&str> = f[5]
                .split(',')
                .filter(|o| matches!(*o, "ro" | "rw" | "nosuid" | "nodev" | "noexec"))
                .collect();
            opts.sort();
            found = opts.join(",");
        }
    }
    found
}

fn status_field(name: &str) -> String {
    fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .map(|v| v.trim_start_matches(':').trim().to_string())
        })
        .unwrap_or_default()
}

fn sorted_dir(path: &str) -> String {
    match fs::read_dir(path) {
        Ok(rd) => {
            let mut names: Vec<String> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names.join(",")
        }
        Err(e) => errno_name(e),
    }
}

fn answer(q: &str) -> String {
    let (name, arg) = q.split_once(':').unwrap_or((q, ""));
    // SAFETY (all unsafe below): plain libc calls with valid arguments.
    match name {
        "uid" => unsafe { getuid() }.to_string(),
        "gid" => unsafe { getgid() }.to_string(),
        "euid" => unsafe { geteuid() }.to_string(),
        "groups" => {
            let mut buf = [0u32; 64];
            let n = unsafe { getgroups(64, buf.as_mut_ptr()) };
            let mut g: Vec<String> = buf[..n.max(0) as usize]
                .iter()
                .map(|g| g.to_string())
                .collect();
            g.sort();
            g.join(",")
        }
        "user" => passwd_name("/etc/passwd", unsafe { getuid() }),
        "group" => passwd_name("/etc/group", unsafe { getgid() }),
        "env" => std::env::var(arg).unwrap_or_else(|_| "<unset>".into()),
        "cwd" => std::env::current_dir()
            .map(|p| p.display().to_string())
            .unwrap_or_else(errno_name),
        "hostname" => fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(errno_name),
        "pid" => unsafe { getpid() }.to_string(),
        "pids" => {
            let mut p: Vec<u32> = fs::read_dir("/proc")
                .map(|rd| {
                    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            p.sort();
            p.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(",")
        }
        "pid1" => fs::read_to_string("/proc/1/comm")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(errno_name),
        "netifs" => {
            let dev = fs::read_to_string("/proc/net/dev").unwrap_or_default();
            let mut n: Vec<&str> = dev
                .lines()
                .skip(2)
                .filter_map(|l| l.split(':').next())
                .map(str::trim)
                .collect();
            n.sort();
            n.join(",")
        }
        "lo_up" => lo_up(),
        // signal:PID:SIG (0 only asks whether we may).
        "signal" => {
            let (pid, sig) = arg.split_once(':').unwrap_or((arg, "0"));
            let (Ok(pid), Ok(sig)) = (pid.parse::<i32>(), sig.parse::<i32>()) else {
                return "bad signal question".into();
            };
            if unsafe { kill(pid, sig) } < 0 {
                errno_name(std::io::Error::last_os_error())
            } else {
                "ok".into()
            }
        }
        // connect:HOST:PORT over TCP.
        "connect" => std::net::TcpStream::connect(arg)
            .map(|_| "ok".to_string())
            .unwrap_or_else(errno_name),
        // udp:HOST:PORT: send one datagram.
        "udp" => std::net::UdpSocket::bind("0.0.0.0:0")
            .and_then(|s| s.send_to(b"x", arg))
            .map(|_| "ok".to_string())
            .unwrap_or_else(errno_name),
        // A unix socket of our own (socket(AF_UNIX, SOCK_STREAM)).
        "unix_socket" => {
            let fd = unsafe { socket(1, 1, 0) };
            if fd < 0 {
                errno_name(std::io::Error::last_os_error())
            } else {
                unsafe { close(fd) };
                "ok".into()
            }
        }
        // rlimit:NAME: "soft hard" (u64::MAX is "unlimited").
        "rlimit" => {
            let resource = match arg {
                "data" => 2,
                "core" => 4,
                "nproc" => 6,
                "nofile" => 7,
                _ => return format!("unknown rlimit {arg}"),
            };
            let mut r = [0u64; 2];
            if unsafe { getrlimit(resource, &mut r) } < 0 {
                return errno_name(std::io::Error::last_os_error());
            }
            let show = |v: u64| if v == u64::MAX { "unlimited".to_string() } else { v.to_string() };
            format!("{} {}", show(r[0]), show(r[1]))
        }
        "ppid" => fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| s[s.rfind(')')? + 2..].split(' ').nth(1).map(String::from))
            .unwrap_or_else(|| "?".into()),
        "syscall" => try_syscall(arg),
        "hog" => hog(arg.parse().unwrap_or(1024)),
        "forkbomb" => forkbomb(),
        "spin" => {
            let (threads, ms) = arg.split_once('x').unwrap_or(("2", "3000"));
            spin(threads.parse().unwrap_or(2), ms.parse().unwrap_or(3000))
        }
        "tiocsti" => {
            // Push a character into our own terminal's input (fd 0).
            let c: u8 = b'x';
            let high = arg == "high";
            let req = if high { 1u64 << 32 | TIOCSTI } else { TIOCSTI };
            let r = unsafe { syscall(16, 0u64, req, &c as *const u8 as u64, 0u64, 0u64, 0u64) };
            if r < 0 { errno_name(std::io::Error::last_os_error()) } else { "ok".into() }
        }
        "syscalls" => SYSCALLS.iter().map(|(n, _, _)| *n).collect::<Vec<_>>().join(","),
        "exists" => if fs::symlink_metadata(arg).is_ok() {
            "yes"
        } else {
            "no"
        }
        .to_string(),
        "ls" => sorted_dir(arg),
        "read" => fs::read_to_string(arg)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(errno_name),
        "write" => {
            let (path, content) = arg.split_once('=').unwrap_or((arg, "x"));
            fs::write(path, content)
                .map(|_| "ok".to_string())
                .unwrap_or_else(errno_name)
        }
        "mkdir" => fs::create_dir(arg)
            .map(|_| "ok".to_string())
            .unwrap_or_else(errno_name),
        "open_rw" => {
            let c = CString::new(arg).unwrap();
            let fd = unsafe { open(c.as_ptr(), 2, 0) };
            if fd < 0 {
                errno_name(std::io::Error::last_os_error())
            } else {
                unsafe { close(fd) };
                "ok".into()
            }
        }
        "mountopts" => mount_options(arg),
        "setid" => setid_routes(arg),
        "status" => status_field(arg),
        // The fds this process holds (probed with fcntl, so listing opens
        // none), comma-separated.
        "fds" => (0..4096)
            .filter(|&fd| unsafe { fcntl(fd, 1 /* F_GETFD */) } >= 0)
            .map(|fd| fd.to_string())
            .collect::<Vec<_>>()
            .join(","),
        "orphan" => {
            // Double fork: the grandchild is re-parented to the sandbox's
            // init and should die with the sandbox.
            let child = unsafe { fork() };
            if child == 0 {
                unsafe { setsid() };
                let gc = unsafe { fork() };
                if gc == 0 {
                    std::thread::sleep(std::time::Duration::from_secs(600));
                    unsafe { _exit(0) };
                }
                unsafe { _exit(0) };
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            "spawned".into()
        }
        "sleep" => {
            std::thread::sleep(std::time::Duration::from_millis(arg.parse().unwrap_or(0)));
            "done".into()
        }
        "exit" => {
            std::io::stdout().flush().ok();
            std::process::exit(arg.parse().unwrap_or(0))
        }
        "kill_self" => {
            std::io::stdout().flush().ok();
            unsafe { kill(getpid(), arg.parse().unwrap_or(9)) };
            std::thread::sleep(std::time::Duration::from_secs(5));
            "survived".into()
        }
        _ => hardening(name, arg).unwrap_or_else(|| format!("unknown question {name}")),
    }
}

extern "C" {
    fn chmod(path: *const i8, mode: u32) -> i32;
    fn chown(path: *const i8, uid: u32, gid: u32) -> i32;
    fn utimensat(dirfd: i32, path: *const i8, times: *const u8, flags: i32) -> i32;
}

/// "ok" for a libc call that returned 0 or more, else the errno's name.
fn errno_of(r: i32) -> String {
    if r < 0 { errno_name(std::io::Error::last_os_error()) } else { "ok".into() }
}

/// Metadata and reads that must fail on the host's things (devices, the
/// sandbox's PID 1): `open_ro:PATH`, `chmod:PATH=OCTAL`, `chown:PATH`
/// (to its own owner: only the permission and read-only checks run),
/// `touch:PATH` (utimensat to now).
fn hardening(name: &str, arg: &str) -> Option<String> {
    let (path, rest) = arg.split_once('=').unwrap_or((arg, ""));
    let c = CString::new(path).ok()?;
    // SAFETY (all unsafe below): plain libc calls with a valid C string.
    Some(match name {
        "open_ro" => {
            let fd = unsafe { open(c.as_ptr(), 0o2000000, 0) };
            if fd >= 0 {
                unsafe { close(fd) };
            }
            errno_of(fd)
        }
        "chmod" => errno_of(unsafe { chmod(c.as_ptr(), u32::from_str_radix(rest, 8).unwrap_or(0o666)) }),
        "chown" => errno_of(unsafe { chown(c.as_ptr(), u32::MAX, u32::MAX) }),
        "touch" => errno_of(unsafe { utimensat(-100, c.as_ptr(), std::ptr::null(), 0) }),
        _ => return None,
    })
}

fn main() {
    let mut out = std::io::stdout();
    for q in std::env::args().skip(1) {
        // Print the question before answering: `exit:N` never returns.
        let _ = write!(out, "{q}\t");
        let _ = out.flush();
        let a = answer(&q);
        let _ = writeln!(out, "{a}");
    }
}

/// `setid:DIR` (DIR defaults to $HOME): tries every way to give a file
/// S_ISUID or S_ISGID in DIR/setid, by raw x86_64 syscall, then ordinary
/// modes that must keep working. Answers space-separated `route=answer`
/// pairs, then `setid_files=` the names (comma-separated) of files that
/// ended up with either bit, or `none`.
fn setid_routes(dir: &str) -> String {
    let home = std::env::var("HOME").unwrap_or_default();
    let base = format!("{}/setid", if dir.is_empty() { &home } else { dir });
    let _ = fs::remove_dir_all(&base);
    if let Err(e) = fs::create_dir(&base) {
        return format!("mkdir {base}: {}", errno_name(e));
    }
    let target = format!("{base}/target");
    if let Err(e) = fs::write(&target, "#!/bin/sh\n") {
        return format!("create {target}: {}", errno_name(e));
    }
    const AT_FDCWD: i64 = -100;
    const O_WRONLY: i64 = 0o1;
    const O_RDWR: i64 = 0o2;
    const O_CREAT: i64 = 0o100;
    const O_TMPFILE: i64 = 0o20_200_000;
    const S_IFREG: i64 = 0o100_000;
    let c = |name: &str| CString::new(format!("{base}/{name}")).unwrap();
    let t = c("target");
    let dir_c = CString::new(base.as_str()).unwrap();
    // struct open_how { u64 flags; u64 mode; u64 resolve; }
    let how: [u64; 3] = [(O_CREAT | O_WRONLY) as u64, 0o4755, 0];
    let (p_open, p_openat, p_creat, p_mkdir, p_mkdirat, p_mknod, p_mknodat, p_openat2, p_ok_open, p_ok_dir) = (
        c("open"), c("openat"), c("creat"), c("mkdir"), c("mkdirat"), c("mknod"), c("mknodat"),
        c("openat2"), c("plain"), c("plaindir"),
    );
    let fd = unsafe { open(t.as_ptr(), 0, 0) } as i64;
    // SAFETY (each call): raw syscalls on NUL-terminated paths that outlive
    // the call, an fd of ours, and `how`, which outlives openat2.
    let mut out: Vec<String> = Vec::new();
    // The errno is read right after each call, before the next one.
    let mut record = |name: &str, r: i64| {
        let answer = if r < 0 { errno_name(std::io::Error::last_os_error()) } else { "ok".into() };
        // Successful opens return fds; the O_TMPFILE file dies with its fd.
        if r >= 0 && (name.starts_with("open") || name.starts_with("creat")) {
            unsafe { close(r as i32) };
        }
        out.push(format!("{name}={answer}"));
    };
    let routes: [(&str, &dyn Fn() -> i64); 21] = [
        ("chmod_4755", &|| unsafe { syscall(90, t.as_ptr(), 0o4755i64) }),
        ("chmod_2755", &|| unsafe { syscall(90, t.as_ptr(), 0o2755i64) }),
        ("fchmod_4755", &|| unsafe { syscall(91, fd, 0o4755i64) }),
        ("fchmod_2755", &|| unsafe { syscall(91, fd, 0o2755i64) }),
        ("fchmodat_6755", &|| unsafe { syscall(268, AT_FDCWD, t.as_ptr(), 0o6755i64) }),
        ("fchmodat2_4755", &|| unsafe { syscall(452, AT_FDCWD, t.as_ptr(), 0o4755i64, 0i64) }),
        ("open_creat_4755", &|| unsafe { syscall(2, p_open.as_ptr(), O_CREAT | O_WRONLY, 0o4755i64) }),
        ("openat_creat_2755", &|| unsafe { syscall(257, AT_FDCWD, p_openat.as_ptr(), O_CREAT | O_WRONLY, 0o2755i64) }),
        ("openat_tmpfile_4755", &|| unsafe { syscall(257, AT_FDCWD, dir_c.as_ptr(), O_TMPFILE | O_RDWR, 0o4755i64) }),
        ("creat_4755", &|| unsafe { syscall(85, p_creat.as_ptr(), 0o4755i64) }),
        ("mkdir_2755", &|| unsafe { syscall(83, p_mkdir.as_ptr(), 0o2755i64) }),
        ("mkdirat_4755", &|| unsafe { syscall(258, AT_FDCWD, p_mkdirat.as_ptr(), 0o4755i64) }),
        ("mknod_reg_4755", &|| unsafe { syscall(133, p_mknod.as_ptr(), S_IFREG | 0o4755, 0i64) }),
        ("mknodat_reg_2755", &|| unsafe { syscall(259, AT_FDCWD, p_mknodat.as_ptr(), S_IFREG | 0o2755, 0i64) }),
        ("openat2_creat_4755", &|| unsafe { syscall(437, AT_FDCWD, p_openat2.as_ptr(), how.as_ptr(), 24i64) }),
        // Ordinary modes keep working.
        ("chmod_0755", &|| unsafe { syscall(90, t.as_ptr(), 0o755i64) }),
        ("chmod_0600", &|| unsafe { syscall(90, t.as_ptr(), 0o600i64) }),
        ("fchmod_1777", &|| unsafe { syscall(91, fd, 0o1777i64) }),
        ("fchmodat_0644", &|| unsafe { syscall(268, AT_FDCWD, t.as_ptr(), 0o644i64) }),
        ("open_creat_0600", &|| unsafe { syscall(257, AT_FDCWD, p_ok_open.as_ptr(), O_CREAT | O_WRONLY, 0o600i64) }),
        ("mkdir_0755", &|| unsafe { syscall(83, p_ok_dir.as_ptr(), 0o755i64) }),
    ];
    for (name, call) in routes {
        record(name, call());
    }
    if fd >= 0 {
        unsafe { close(fd as i32) };
    }
    out.push(format!("setid_files={}", setid_files(&base)));
    out.join(" ")
}

/// Names (relative to `dir`) of entries below `dir` with S_ISUID or S_ISGID.
fn setid_files(dir: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let mut found = Vec::new();
    let mut stack = vec![std::path::PathBuf::from(dir)];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = fs::symlink_metadata(e.path()) else { continue };
            if m.permissions().mode() & 0o6000 != 0 {
                found.push(e.path().strip_prefix(dir).unwrap().display().to_string());
            }
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    found.sort();
    if found.is_empty() { "none".into() } else { found.join(",") }
}
