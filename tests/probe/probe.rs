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
        38 => "ENOSYS",
        40 => "ELOOP",
        95 => "EOPNOTSUPP",
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
        "status" => status_field(arg),
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
        _ => format!("unknown question {name}"),
    }
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
