//! Raw syscalls for the disk module's project quotas: the `fsxattr` of a
//! directory (its project id and inherit flag) and `quotactl_fd(2)`.
//!
//! `quotactl_fd` (Linux 5.14) takes any fd on the filesystem, so no block
//! device node is needed (`/proc/self/mountinfo` may name `/dev/root`,
//! which exists nowhere).

use std::os::fd::{AsFd, AsRawFd};

use nix::errno::Errno;

/// `struct fsxattr` (linux/fs.h).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FsXattr {
    pub xflags: u32,
    pub extsize: u32,
    pub nextents: u32,
    pub projid: u32,
    pub cowextsize: u32,
    pub pad: [u8; 8],
}

/// New files and directories under a directory with this flag get its
/// project id.
pub const FS_XFLAG_PROJINHERIT: u32 = 0x0000_0200;

mod ioctls {
    use super::FsXattr;
    nix::ioctl_read!(fs_ioc_fsgetxattr, b'X', 31, FsXattr);
    nix::ioctl_write_ptr!(fs_ioc_fssetxattr, b'X', 32, FsXattr);
}
use ioctls::{fs_ioc_fsgetxattr, fs_ioc_fssetxattr};

/// `FS_IOC_FSGETXATTR` on an open file or directory.
pub fn get_fsxattr(fd: &impl AsFd) -> Result<FsXattr, Errno> {
    let mut x = FsXattr::default();
    // SAFETY: the kernel writes one `struct fsxattr` (28 bytes, the layout
    // of `FsXattr`, repr(C)) into `x`, which lives for the call.
    unsafe { fs_ioc_fsgetxattr(fd.as_fd().as_raw_fd(), &mut x) }?;
    Ok(x)
}

/// `FS_IOC_FSSETXATTR` on an open file or directory.
pub fn set_fsxattr(fd: &impl AsFd, x: &FsXattr) -> Result<(), Errno> {
    // SAFETY: the kernel reads one `struct fsxattr` from `x`, borrowed for
    // the call.
    unsafe { fs_ioc_fssetxattr(fd.as_fd().as_raw_fd(), x) }?;
    Ok(())
}

/// The project quota type (linux/quota.h `PRJQUOTA`).
const PRJQUOTA: u32 = 2;
const Q_GETINFO: u32 = 0x80_0005;
const Q_GETQUOTA: u32 = 0x80_0007;
const Q_SETQUOTA: u32 = 0x80_0008;

/// `QCMD(cmd, PRJQUOTA)`.
fn qcmd(cmd: u32) -> u32 {
    (cmd << 8) | (PRJQUOTA & 0xff)
}

/// `struct if_dqinfo` (linux/quota.h).
#[repr(C)]
#[derive(Default)]
struct DqInfo {
    bgrace: u64,
    igrace: u64,
    flags: u32,
    valid: u32,
}

fn quotactl_fd(fd: &impl AsFd, cmd: u32, id: u32, addr: *mut libc::c_void) -> Result<(), Errno> {
    // SAFETY: `addr` points at the structure `cmd` reads or writes
    // (callers below pass the matching repr(C) type, alive for the call).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_quotactl_fd,
            fd.as_fd().as_raw_fd() as libc::c_uint,
            cmd as libc::c_uint,
            id as libc::c_int,
            addr,
        )
    };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// `Q_GETINFO` for project quotas: `Ok` when the filesystem `fd` is on
/// has them turned on (ESRCH: off; ENOSYS: a kernel before 5.14).
pub fn project_quota_info(fd: &impl AsFd) -> Result<(), Errno> {
    let mut info = DqInfo::default();
    quotactl_fd(fd, qcmd(Q_GETINFO), 0, (&mut info as *mut DqInfo).cast())
}

/// `Q_GETQUOTA` of project `id`.
pub fn get_project_quota(fd: &impl AsFd, id: u32) -> Result<libc::dqblk, Errno> {
    // SAFETY: dqblk is plain integers; all zero is a valid value.
    let mut q: libc::dqblk = unsafe { std::mem::zeroed() };
    quotactl_fd(
        fd,
        qcmd(Q_GETQUOTA),
        id,
        (&mut q as *mut libc::dqblk).cast(),
    )?;
    Ok(q)
}

/// `Q_SETQUOTA` of project `id` (the fields `q.dqb_valid` names).
pub fn set_project_quota(fd: &impl AsFd, id: u32, q: &libc::dqblk) -> Result<(), Errno> {
    let mut q = *q;
    quotactl_fd(
        fd,
        qcmd(Q_SETQUOTA),
        id,
        (&mut q as *mut libc::dqblk).cast(),
    )
}
