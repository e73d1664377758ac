//! Raw syscalls for the cgroups module.

use std::os::fd::{AsFd, AsRawFd};

use nix::errno::Errno;
use nix::sys::signal::Signal;

/// `pidfd_send_signal(2)`: signals the process the pidfd refers to, which,
/// unlike a pid, can never be a later process that reused the number. Used
/// to kill the pids listed in a sandbox's cgroup.procs (kernel 5.1+).
pub fn pidfd_send_signal(pidfd: &impl AsFd, sig: Signal) -> Result<(), Errno> {
    // SAFETY: integer arguments and a NULL siginfo pointer, which the kernel
    // accepts (it then fills in the info as kill(2) would); no memory of ours
    // is read or written. The fd is borrowed for the duration of the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_fd().as_raw_fd(),
            sig as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}
