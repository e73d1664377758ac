//! Raw syscalls for the seccomp and landlock modules.
//!
//! The main export is the probe table: one raw syscall per entry of the
//! default seccomp profile, with arguments chosen so the *kernel* refuses
//! the call with an errno of its own (EBADF, EFAULT, EINVAL, ...) and never
//! performs it. Under the filter the same call answers EPERM (or ENOSYS), so
//! a probe tells "refused by our filter" apart from "refused by the kernel",
//! the way bubblewrap's tests/try-syscall.c does.
//!
//! Every argument is an integer: a bad fd (-1), the address 1 (never mapped,
//! so the kernel answers EFAULT without touching our memory), NULL, or a
//! flags word with bits the kernel rejects. That is what makes
//! [`Probe::run`] safe to call: no probe hands the kernel a pointer into
//! this process, and the fields that decide the call are private, so code
//! outside this module cannot build a probe that does.

use nix::errno::Errno;

/// What a syscall answered: success, or the errno.
pub type Answer = Result<(), Errno>;

/// An address the kernel can never read or write (below `mmap_min_addr`):
/// any syscall that dereferences it fails with EFAULT.
const BAD_PTR: u64 = 1;
/// fd -1 (the kernel truncates `int fd` arguments to 32 bits).
const BAD_FD: u64 = u64::MAX;
/// An fd number far above any open file (and not the special -1).
const UNOPENED_FD: u64 = 0x7fff_ffff;
/// Flag bits that no syscall in the table accepts.
const BAD_FLAGS: u64 = 0xdead_0000;
/// `__X32_SYSCALL_BIT`: x32 syscalls are x86_64 syscalls with bit 30 set.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const PTRACE_ATTACH: u64 = 16;
const PER_LINUX32: u64 = 0x0008;
const CLONE_NEWUSER: u64 = libc::CLONE_NEWUSER as u64;
const CLONE_NEWNS: u64 = libc::CLONE_NEWNS as u64;
const CLONE_FS: u64 = libc::CLONE_FS as u64;
// libc::Ioctl is c_ulong on glibc and c_int on musl.
#[allow(clippy::unnecessary_cast)]
const TIOCSTI: u64 = libc::TIOCSTI as u64;
#[allow(clippy::unnecessary_cast)]
const TIOCLINUX: u64 = libc::TIOCLINUX as u64;
#[allow(clippy::unnecessary_cast)]
const TIOCGWINSZ: u64 = libc::TIOCGWINSZ as u64;
/// The size of `struct clone_args` (CLONE_ARGS_SIZE_VER2).
const CLONE_ARGS_SIZE: u64 = 88;
/// The size of `struct open_how` (OPEN_HOW_SIZE_VER0).
const OPEN_HOW_SIZE: u64 = 24;
const S_ISUID: u64 = libc::S_ISUID as u64;
const S_ISGID: u64 = libc::S_ISGID as u64;
const S_IFREG: u64 = libc::S_IFREG as u64;
const O_CREAT_WRONLY: u64 = (libc::O_CREAT | libc::O_WRONLY) as u64;
const O_TMPFILE_RDWR: u64 = (libc::O_TMPFILE | libc::O_RDWR) as u64;

/// One raw syscall whose answer tells whether the seccomp filter caught it.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// What is probed, e.g. `"ioctl(TIOCSTI|1<<32)"`.
    pub name: &'static str,
    nr: libc::c_long,
    args: [u64; 6],
    /// The kernel's own answers to uid 0 with every capability in the
    /// initial user namespace (the first is the one measured on the CI
    /// kernel; others occur on other kernel configurations).
    pub kernel_root: &'static [Answer],
    /// The kernel's own answers to a process without capabilities, as in a
    /// sandbox. When this includes the filter's answer, the probe cannot
    /// tell the two apart from inside a sandbox.
    pub kernel_unprivileged: &'static [Answer],
    /// The default profile's answer.
    pub filtered: Answer,
}

impl Probe {
    /// The syscall number (of the architecture this crate was built for,
    /// plus [`X32_SYSCALL_BIT`] for the x32 probe).
    pub fn nr(&self) -> libc::c_long {
        self.nr
    }

    /// The six raw argument registers.
    pub fn args(&self) -> [u64; 6] {
        self.args
    }

    /// Makes the call and reports its answer. A personality change (the
    /// only probe the kernel accepts) is undone at once.
    pub fn run(&self) -> Answer {
        let a = self.args.map(|a| a as libc::c_long);
        // SAFETY: every probe in this module passes only integers: bad fds,
        // NULL, the never-mapped address 1 and invalid flag bits, so the
        // kernel either refuses the call before doing anything or (for
        // personality) changes a flag word of this process that is restored
        // below. No Rust-visible memory is read or written by the kernel, and
        // `nr`/`args` cannot be set outside this module.
        let ret = unsafe { libc::syscall(self.nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
        if ret < 0 {
            return Err(Errno::last());
        }
        if self.nr == libc::SYS_personality && self.args[0] != 0xffff_ffff {
            // SAFETY: personality takes an integer; `ret` is the previous
            // persona, so this restores it.
            unsafe { libc::syscall(libc::SYS_personality, ret) };
        }
        Ok(())
    }
}

const fn probe(
    name: &'static str,
    nr: libc::c_long,
    args: [u64; 6],
    kernel_root: &'static [Answer],
    kernel_unprivileged: &'static [Answer],
    filtered: Answer,
) -> Probe {
    Probe {
        name,
        nr,
        args,
        kernel_root,
        kernel_unprivileged,
        filtered,
    }
}

const EPERM: Answer = Err(Errno::EPERM);
const ENOSYS: Answer = Err(Errno::ENOSYS);
const EINVAL: &[Answer] = &[Err(Errno::EINVAL)];
const EFAULT: &[Answer] = &[Err(Errno::EFAULT)];
const EBADF: &[Answer] = &[Err(Errno::EBADF)];
const ONLY_EPERM: &[Answer] = &[Err(Errno::EPERM)];
const ENOSYS_OR_EINVAL: &[Answer] = &[Err(Errno::ENOSYS), Err(Errno::EINVAL)];
const ENOSYS_OR_EPERM: &[Answer] = &[Err(Errno::ENOSYS), Err(Errno::EPERM)];
const EBADF_OR_EINVAL: &[Answer] = &[Err(Errno::EBADF), Err(Errno::EINVAL)];
const EFAULT_OR_EBADF: &[Answer] = &[Err(Errno::EFAULT), Err(Errno::EBADF)];
const EINVAL_OR_ENOSYS: &[Answer] = &[Err(Errno::EINVAL), Err(Errno::ENOSYS)];

/// One probe per entry of the default profile (`seccomp::Profile::Default`).
/// Each is refused by the kernel with its own errno and by the filter with
/// `filtered` (EPERM, or ENOSYS for clone3 and x32).
#[rustfmt::skip]
pub const DENIED_PROBES: &[Probe] = &[
    // An unknown keyctl operation.
    probe("keyctl", libc::SYS_keyctl, [0xdead, 0, 0, 0, 0, 0], &[Err(Errno::EOPNOTSUPP)], &[Err(Errno::EOPNOTSUPP)], EPERM),
    // The key type string is read first.
    probe("add_key", libc::SYS_add_key, [BAD_PTR, 0, 0, 0, 0, 0], EFAULT, EFAULT, EPERM),
    probe("request_key", libc::SYS_request_key, [BAD_PTR, 0, 0, 0, 0, 0], EFAULT, EFAULT, EPERM),
    // An unknown command, attr NULL, size 0.
    probe("bpf", libc::SYS_bpf, [0x7fff_ffff, 0, 0, 0, 0, 0], EINVAL, &[Err(Errno::EINVAL), Err(Errno::EPERM)], EPERM),
    // The attr struct is copied before any permission check.
    probe("perf_event_open", libc::SYS_perf_event_open, [BAD_PTR, 0, u64::MAX, u64::MAX, 0, 0], EFAULT, EFAULT, EPERM),
    // UFFD_USER_MODE_ONLY (always permitted) plus an unknown flag bit.
    probe("userfaultfd", libc::SYS_userfaultfd, [0x1 | 0x2, 0, 0, 0, 0, 0], EINVAL, EINVAL, EPERM),
    probe("io_uring_setup", libc::SYS_io_uring_setup, [1, BAD_PTR, 0, 0, 0, 0], &[Err(Errno::EFAULT), Err(Errno::EPERM)], &[Err(Errno::EFAULT), Err(Errno::EPERM)], EPERM),
    probe("io_uring_enter", libc::SYS_io_uring_enter, [BAD_FD, 0, 0, 0, 0, 0], EBADF, EBADF, EPERM),
    // Not -1: since 6.x that fd means "blind" registration (EINVAL here).
    probe("io_uring_register", libc::SYS_io_uring_register, [UNOPENED_FD, 0, 0, 0, 0, 0], EBADF, EBADF, EPERM),
    // ENOSYS without CONFIG_KEXEC (the CI kernel); otherwise CAP_SYS_BOOT
    // is checked before the flags.
    probe("kexec_load", libc::SYS_kexec_load, [0, 0, 0, BAD_FLAGS, 0, 0], ENOSYS_OR_EINVAL, ENOSYS_OR_EPERM, EPERM),
    probe("kexec_file_load", libc::SYS_kexec_file_load, [BAD_FD, BAD_FD, 0, 0, BAD_FLAGS, 0], ENOSYS_OR_EINVAL, ENOSYS_OR_EPERM, EPERM),
    // Without CONFIG_MODULES (the CI kernel) these are ENOSYS; otherwise
    // CAP_SYS_MODULE is checked first, then the (empty) image or the flags.
    probe("init_module", libc::SYS_init_module, [0, 0, BAD_PTR, 0, 0, 0], &[Err(Errno::ENOSYS), Err(Errno::ENOEXEC)], ENOSYS_OR_EPERM, EPERM),
    probe("finit_module", libc::SYS_finit_module, [BAD_FD, 0, BAD_FLAGS, 0, 0, 0], ENOSYS_OR_EINVAL, ENOSYS_OR_EPERM, EPERM),
    probe("delete_module", libc::SYS_delete_module, [BAD_PTR, 0, 0, 0, 0, 0], &[Err(Errno::ENOSYS), Err(Errno::EFAULT)], ENOSYS_OR_EPERM, EPERM),
    // The target path is copied before the permission check.
    probe("mount", libc::SYS_mount, [0, BAD_PTR, 0, 0, 0, 0], EFAULT, EFAULT, EPERM),
    // Flags are checked first.
    probe("umount2", libc::SYS_umount2, [BAD_PTR, BAD_FLAGS, 0, 0, 0, 0], EINVAL, EINVAL, EPERM),
    probe("pivot_root", libc::SYS_pivot_root, [BAD_PTR, BAD_PTR, 0, 0, 0, 0], EFAULT, ONLY_EPERM, EPERM),
    probe("fsopen", libc::SYS_fsopen, [BAD_PTR, BAD_FLAGS, 0, 0, 0, 0], EINVAL, ONLY_EPERM, EPERM),
    probe("fsconfig", libc::SYS_fsconfig, [BAD_FD, 0xdead, 0, 0, 0, 0], EINVAL, EINVAL, EPERM),
    probe("fsmount", libc::SYS_fsmount, [BAD_FD, 0, 0, 0, 0, 0], EBADF, ONLY_EPERM, EPERM),
    probe("fspick", libc::SYS_fspick, [BAD_FD, BAD_PTR, BAD_FLAGS, 0, 0, 0], EINVAL, ONLY_EPERM, EPERM),
    probe("open_tree", libc::SYS_open_tree, [BAD_FD, BAD_PTR, BAD_FLAGS, 0, 0, 0], EINVAL, EINVAL, EPERM),
    probe("move_mount", libc::SYS_move_mount, [BAD_FD, BAD_PTR, BAD_FD, BAD_PTR, BAD_FLAGS, 0], EINVAL, ONLY_EPERM, EPERM),
    probe("mount_setattr", libc::SYS_mount_setattr, [BAD_FD, BAD_PTR, BAD_FLAGS, 0, 0, 0], EINVAL, EINVAL, EPERM),
    // CLONE_NEWUSER plus an unknown flag bit (bit 40).
    probe("unshare(CLONE_NEWUSER)", libc::SYS_unshare, [CLONE_NEWUSER | 1 << 40, 0, 0, 0, 0, 0], EINVAL, EINVAL, EPERM),
    // CLONE_NEWUSER with CLONE_FS is always invalid, so no process is made.
    probe("clone(CLONE_NEWUSER)", libc::SYS_clone, [CLONE_NEWUSER | CLONE_FS, 0, 0, 0, 0, 0], EINVAL, EINVAL, EPERM),
    probe("setns", libc::SYS_setns, [BAD_FD, 0, 0, 0, 0, 0], EBADF, EBADF, EPERM),
    // Non-zero flags are refused first.
    probe("process_vm_readv", libc::SYS_process_vm_readv, [0, 0, 0, 0, 0, 1], EINVAL, EINVAL, EPERM),
    probe("process_vm_writev", libc::SYS_process_vm_writev, [0, 0, 0, 0, 0, 1], EINVAL, EINVAL, EPERM),
    // A pid above PID_MAX_LIMIT never exists.
    probe("ptrace", libc::SYS_ptrace, [PTRACE_ATTACH, 0x7fff_ffff, 0, 0, 0, 0], &[Err(Errno::ESRCH)], &[Err(Errno::ESRCH)], EPERM),
    // Wrong magic: EINVAL after the CAP_SYS_BOOT check (never reboots).
    probe("reboot", libc::SYS_reboot, [0, 0, 0, 0, 0, 0], EINVAL, ONLY_EPERM, EPERM),
    probe("swapon", libc::SYS_swapon, [BAD_PTR, BAD_FLAGS, 0, 0, 0, 0], EINVAL, EINVAL, EPERM),
    probe("swapoff", libc::SYS_swapoff, [BAD_PTR, 0, 0, 0, 0, 0], EFAULT, ONLY_EPERM, EPERM),
    probe("acct", libc::SYS_acct, [BAD_PTR, 0, 0, 0, 0, 0], EFAULT, ONLY_EPERM, EPERM),
    // Quota type 0xff >= MAXQUOTAS.
    probe("quotactl", libc::SYS_quotactl, [0xff, 0, 0, 0, 0, 0], EINVAL, EINVAL, EPERM),
    // The fd is looked up first (EBADF here); older kernels check the type.
    probe("quotactl_fd", libc::SYS_quotactl_fd, [BAD_FD, 0xff, 0, 0, 0, 0], EBADF_OR_EINVAL, EBADF_OR_EINVAL, EPERM),
    probe("name_to_handle_at", libc::SYS_name_to_handle_at, [BAD_FD, BAD_PTR, BAD_PTR, BAD_PTR, BAD_FLAGS, 0], EINVAL, EINVAL, EPERM),
    // Recent kernels (the CI kernel, 6.18) copy the handle before any
    // permission check (EFAULT); older ones check CAP_DAC_READ_SEARCH first.
    probe("open_by_handle_at", libc::SYS_open_by_handle_at, [BAD_FD, BAD_PTR, 0, 0, 0, 0], &[Err(Errno::EFAULT), Err(Errno::EBADF)], &[Err(Errno::EFAULT), Err(Errno::EPERM)], EPERM),
    // Level 4 does not exist; ENOSYS without CONFIG_X86_IOPL_IOPERM (CI).
    #[cfg(target_arch = "x86_64")]
    probe("iopl", libc::SYS_iopl, [4, 0, 0, 0, 0, 0], ENOSYS_OR_EINVAL, ENOSYS_OR_EINVAL, EPERM),
    // A port range beyond IO_BITMAP_BITS.
    #[cfg(target_arch = "x86_64")]
    probe("ioperm", libc::SYS_ioperm, [0x10000, 1, 1, 0, 0, 0], ENOSYS_OR_EINVAL, ENOSYS_OR_EINVAL, EPERM),
    // The kernel accepts every persona; the filter allows only 0 and the
    // 0xffffffff query.
    probe("personality(PER_LINUX32)", libc::SYS_personality, [PER_LINUX32, 0, 0, 0, 0, 0], &[Ok(())], &[Ok(())], EPERM),
    // Socket type 15 >= SOCK_MAX, checked before the family.
    probe("socket(AF_VSOCK)", libc::SYS_socket, [libc::AF_VSOCK as u64, 15, 0, 0, 0, 0], EINVAL, EINVAL, EPERM),
    // fd -1: EBADF from the kernel; CVE-2017-5226.
    probe("ioctl(TIOCSTI)", libc::SYS_ioctl, [BAD_FD, TIOCSTI, BAD_PTR, 0, 0, 0], EBADF, EBADF, EPERM),
    // The kernel truncates cmd to 32 bits; CVE-2019-10063.
    probe("ioctl(TIOCSTI|1<<32)", libc::SYS_ioctl, [BAD_FD, 1 << 32 | TIOCSTI, BAD_PTR, 0, 0, 0], EBADF, EBADF, EPERM),
    probe("ioctl(TIOCLINUX)", libc::SYS_ioctl, [BAD_FD, TIOCLINUX, BAD_PTR, 0, 0, 0], EBADF, EBADF, EPERM),
    // Setuid and setgid modes: the path (the address 1) or the fd (-1) is
    // refused by the kernel before anything is created or changed.
    #[cfg(target_arch = "x86_64")]
    probe("chmod(04755)", libc::SYS_chmod, [BAD_PTR, 0o4755, 0, 0, 0, 0], EFAULT, EFAULT, EPERM),
    #[cfg(target_arch = "x86_64")]
    probe("chmod(02755)", libc::SYS_chmod, [BAD_PTR, 0o2755, 0, 0, 0, 0], EFAULT, EFAULT, EPERM),
    probe("fchmod(04755)", libc::SYS_fchmod, [BAD_FD, 0o4755, 0, 0, 0, 0], EBADF, EBADF, EPERM),
    probe("fchmod(02755)", libc::SYS_fchmod, [BAD_FD, 0o2755, 0, 0, 0, 0], EBADF, EBADF, EPERM),
    probe("fchmodat(04755)", libc::SYS_fchmodat, [BAD_FD, BAD_PTR, 0o4755, 0, 0, 0], EFAULT_OR_EBADF, EFAULT_OR_EBADF, EPERM),
    // Unknown flags are refused first (ENOSYS before Linux 6.6).
    probe("fchmodat2(02755)", libc::SYS_fchmodat2, [BAD_FD, BAD_PTR, 0o2755, BAD_FLAGS, 0, 0], EINVAL_OR_ENOSYS, EINVAL_OR_ENOSYS, EPERM),
    #[cfg(target_arch = "x86_64")]
    probe("mkdir(02755)", libc::SYS_mkdir, [BAD_PTR, 0o2755, 0, 0, 0, 0], EFAULT, EFAULT, EPERM),
    probe("mkdirat(04755)", libc::SYS_mkdirat, [BAD_FD, BAD_PTR, 0o4755, 0, 0, 0], EFAULT_OR_EBADF, EFAULT_OR_EBADF, EPERM),
    #[cfg(target_arch = "x86_64")]
    probe("mknod(S_IFREG|04755)", libc::SYS_mknod, [BAD_PTR, S_IFREG | S_ISUID | 0o755, 0, 0, 0, 0], EFAULT, EFAULT, EPERM),
    probe("mknodat(S_IFREG|02755)", libc::SYS_mknodat, [BAD_FD, BAD_PTR, S_IFREG | S_ISGID | 0o755, 0, 0, 0], EFAULT_OR_EBADF, EFAULT_OR_EBADF, EPERM),
    #[cfg(target_arch = "x86_64")]
    probe("creat(04755)", libc::SYS_creat, [BAD_PTR, 0o4755, 0, 0, 0, 0], EFAULT, EFAULT, EPERM),
    #[cfg(target_arch = "x86_64")]
    probe("open(O_CREAT, 04755)", libc::SYS_open, [BAD_PTR, O_CREAT_WRONLY, 0o4755, 0, 0, 0], EFAULT, EFAULT, EPERM),
    #[cfg(target_arch = "x86_64")]
    probe("open(O_TMPFILE, 02755)", libc::SYS_open, [BAD_PTR, O_TMPFILE_RDWR, 0o2755, 0, 0, 0], EFAULT, EFAULT, EPERM),
    probe("openat(O_CREAT, 02755)", libc::SYS_openat, [BAD_FD, BAD_PTR, O_CREAT_WRONLY, 0o2755, 0, 0], EFAULT_OR_EBADF, EFAULT_OR_EBADF, EPERM),
    probe("openat(O_TMPFILE, 04755)", libc::SYS_openat, [BAD_FD, BAD_PTR, O_TMPFILE_RDWR, 0o4755, 0, 0], EFAULT_OR_EBADF, EFAULT_OR_EBADF, EPERM),
    // The open_how struct is copied first.
    probe("openat2", libc::SYS_openat2, [BAD_FD, BAD_PTR, BAD_PTR, OPEN_HOW_SIZE, 0, 0], EFAULT, EFAULT, ENOSYS),
    // The clone_args struct is copied first.
    probe("clone3", libc::SYS_clone3, [BAD_PTR, CLONE_ARGS_SIZE, 0, 0, 0, 0], EFAULT, EFAULT, ENOSYS),
    // x32 getpid: ENOSYS from kernels without x32 (so not distinguishable
    // there), the pid on kernels that run x32.
    #[cfg(target_arch = "x86_64")]
    probe("x32 getpid", X32_SYSCALL_BIT as libc::c_long | libc::SYS_getpid, [0; 6], &[Err(Errno::ENOSYS), Ok(())], &[Err(Errno::ENOSYS), Ok(())], ENOSYS),
];

/// Neighbours of the denied calls that the filter must let through
/// unchanged: the filter matches arguments, not whole syscalls.
#[rustfmt::skip]
pub const ALLOWED_PROBES: &[Probe] = &[
    probe("personality(0xffffffff)", libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0, 0], &[Ok(())], &[Ok(())], Ok(())),
    probe("personality(PER_LINUX)", libc::SYS_personality, [0, 0, 0, 0, 0, 0], &[Ok(())], &[Ok(())], Ok(())),
    // The high word is ignored by the kernel and by the filter alike.
    probe("personality(1<<32)", libc::SYS_personality, [1 << 32, 0, 0, 0, 0, 0], &[Ok(())], &[Ok(())], Ok(())),
    probe("ioctl(TIOCGWINSZ)", libc::SYS_ioctl, [BAD_FD, TIOCGWINSZ, BAD_PTR, 0, 0, 0], EBADF, EBADF, Err(Errno::EBADF)),
    probe("socket(AF_UNIX)", libc::SYS_socket, [libc::AF_UNIX as u64, 15, 0, 0, 0, 0], EINVAL, EINVAL, Err(Errno::EINVAL)),
    probe("unshare(CLONE_NEWNS)", libc::SYS_unshare, [CLONE_NEWNS | 1 << 40, 0, 0, 0, 0, 0], EINVAL, EINVAL, Err(Errno::EINVAL)),
    probe("clone(CLONE_NEWNS)", libc::SYS_clone, [CLONE_NEWNS | CLONE_FS, 0, 0, 0, 0, 0], EINVAL, EINVAL, Err(Errno::EINVAL)),
    // Ordinary modes, and a setuid mode where the kernel ignores it.
    probe("fchmod(0755)", libc::SYS_fchmod, [BAD_FD, 0o755, 0, 0, 0, 0], EBADF, EBADF, Err(Errno::EBADF)),
    probe("fchmodat(01777)", libc::SYS_fchmodat, [BAD_FD, BAD_PTR, 0o1777, 0, 0, 0], EFAULT_OR_EBADF, EFAULT_OR_EBADF, Err(Errno::EFAULT)),
    probe("mkdirat(0755)", libc::SYS_mkdirat, [BAD_FD, BAD_PTR, 0o755, 0, 0, 0], EFAULT_OR_EBADF, EFAULT_OR_EBADF, Err(Errno::EFAULT)),
    probe("openat(O_CREAT, 0600)", libc::SYS_openat, [BAD_FD, BAD_PTR, O_CREAT_WRONLY, 0o600, 0, 0], EFAULT_OR_EBADF, EFAULT_OR_EBADF, Err(Errno::EFAULT)),
    probe("openat(O_RDONLY, 04755)", libc::SYS_openat, [BAD_FD, BAD_PTR, 0, 0o4755, 0, 0], EFAULT_OR_EBADF, EFAULT_OR_EBADF, Err(Errno::EFAULT)),
];

/// Calls i386 `getpid` (number 20) through `int 0x80` from this 64-bit
/// process: the kernel runs it as a 32-bit syscall with AUDIT_ARCH_I386, a
/// foreign architecture for a filter written for x86_64.
#[cfg(target_arch = "x86_64")]
pub fn i386_getpid() -> i64 {
    let mut ret: i64 = 20;
    // SAFETY: i386 getpid takes no arguments and touches no memory. The
    // 64-bit kernel entry for int 0x80 may clobber r8-r11, declared below.
    unsafe {
        std::arch::asm!(
            "int 0x80",
            inout("rax") ret,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            options(nostack),
        );
    }
    ret
}

/// `ioctl(fd, TIOCGPTN)`: the number of the pty whose master `fd` is.
#[cfg(test)]
pub(crate) fn pty_number(fd: std::os::fd::BorrowedFd<'_>) -> Result<u32, Errno> {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one unsigned int into `n`, which outlives the
    // call.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGPTN, &mut n) };
    Errno::result(ret).map(|_| n)
}

/// `ioctl(fd, RNDGETENTCNT)` on /dev/random or /dev/urandom: a device ioctl
/// that Landlock's IOCTL_DEV right governs.
#[cfg(test)]
pub(crate) fn entropy_count(fd: std::os::fd::BorrowedFd<'_>) -> Result<i32, Errno> {
    use std::os::fd::AsRawFd;
    // _IOR('R', 0x00, int)
    const RNDGETENTCNT: libc::Ioctl = 0x8004_5200u32 as libc::Ioctl;
    let mut n: libc::c_int = 0;
    // SAFETY: RNDGETENTCNT writes one int into `n`, which outlives the call.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), RNDGETENTCNT, &mut n) };
    Errno::result(ret).map(|_| n)
}
