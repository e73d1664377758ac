//! The kernel's project quotas: where the workspace root's filesystem
//! enforces them (ext4 with the `project` and `quota` features mounted
//! `prjquota`, XFS mounted `prjquota`), a home gets a project id of its
//! own, inherited by everything made in it (`FS_IOC_FSSETXATTR` with
//! `FS_XFLAG_PROJINHERIT`), and the limits and usage of that project are
//! set and read with `quotactl_fd`: no image, no mount, no quota tools.
//!
//! The project id is the tenant's host uid, which the state database
//! keeps unique and stable for the tenant's life (never 0, the project
//! of every file not in a home).

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::{DiskError, DiskInForce, DiskLimits, DiskUsage};
use crate::sys::quota as sys;

/// `dqb_valid` bits (linux/quota.h): the hard and soft limits of blocks
/// and of inodes.
const QIF_BLIMITS: u32 = 1;
const QIF_ILIMITS: u32 = 4;
/// Quota blocks are 1 KiB (`QIF_DQBLKSIZE`).
const QUOTA_BLOCK: u64 = 1024;

/// One line of `/proc/self/mountinfo`, the fields used here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub dev: (u32, u32),
    pub mount_point: PathBuf,
    pub fstype: String,
    pub super_options: Vec<String>,
}

/// The mount that holds `path` (on device `dev`): among the lines of
/// `mountinfo` with that device, the deepest mount point above `path`.
pub fn mount_of(mountinfo: &str, dev: (u32, u32), path: &Path) -> Option<MountEntry> {
    mountinfo
        .lines()
        .filter_map(parse_mountinfo_line)
        .filter(|m| m.dev == dev && path.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.components().count())
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let (left, right) = line.split_once(" - ")?;
    let f: Vec<&str> = left.split(' ').collect();
    let (major, minor) = f.get(2)?.split_once(':')?;
    let r: Vec<&str> = right.split(' ').collect();
    Some(MountEntry {
        dev: (major.parse().ok()?, minor.parse().ok()?),
        mount_point: PathBuf::from(unescape(f.get(4)?)),
        fstype: r.first()?.to_string(),
        super_options: r.get(2)?.split(',').map(str::to_string).collect(),
    })
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|o| o.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(o)) => {
                out.push(o.iter().fold(0u8, |v, c| v.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why the mount does not enforce project quotas; `None` when its type
/// and options say it does.
pub fn mount_lacks_project_quota(m: &MountEntry) -> Option<String> {
    let has = |o: &str| m.super_options.iter().any(|x| x == o);
    match m.fstype.as_str() {
        "ext4" | "xfs" if has("prjquota") => None,
        "ext4" => Some(format!(
            "{} (ext4) is not mounted with prjquota (it needs the project and quota \
             features: tune2fs -O project,quota, then mount -o prjquota)",
            m.mount_point.display()
        )),
        "xfs" => Some(format!(
            "{} (xfs) is not mounted with prjquota",
            m.mount_point.display()
        )),
        other => Some(format!(
            "{} is {other}: project quotas need ext4 or xfs mounted prjquota",
            m.mount_point.display()
        )),
    }
}

/// Why project quotas cannot limit homes under `root` (the workspace root
/// or a home in it); `None` when they can: the filesystem enforces them
/// and this process is root in the host's user namespace (setting a
/// project id and limits needs it).
pub fn quota_backend_unavailable(root: &Path, proc_root: &Path) -> Option<String> {
    let Some((path, meta)) = root
        .ancestors()
        .find_map(|a| std::fs::metadata(a).ok().map(|m| (a, m)))
    else {
        return Some(format!("{} does not exist", root.display()));
    };
    let mountinfo = std::fs::read_to_string(proc_root.join("self/mountinfo")).unwrap_or_default();
    let dev = (libc_major(meta.dev()), libc_minor(meta.dev()));
    let Some(m) = mount_of(&mountinfo, dev, path) else {
        return Some(format!("no mount of {} in mountinfo", path.display()));
    };
    if let Some(why) = mount_lacks_project_quota(&m) {
        return Some(why);
    }
    let checked = File::open(path)
        .map_err(|e| e.to_string())
        .and_then(|f| sys::project_quota_info(&f).map_err(|e| e.to_string()));
    if let Err(e) = checked {
        return Some(format!(
            "the kernel refused to report project quotas on {} ({e}; quotactl_fd needs \
             Linux 5.14)",
            m.mount_point.display()
        ));
    }
    if !super::host_root(proc_root) {
        return Some(
            "project quotas need root in the host's user namespace (a home's project id \
             and limits are set with FS_IOC_FSSETXATTR and quotactl); run warren as root"
                .into(),
        );
    }
    None
}

fn libc_major(dev: u64) -> u32 {
    nix::sys::stat::major(dev) as u32
}

fn libc_minor(dev: u64) -> u32 {
    nix::sys::stat::minor(dev) as u32
}

/// A home's project id: the tenant's host uid, unique among tenants.
pub fn project_id(host_uid: u32) -> Result<u32, DiskError> {
    match host_uid {
        0 => Err(DiskError::Quota {
            op: "derive the project id",
            path: PathBuf::new(),
            source: Errno::EINVAL,
        }),
        id => Ok(id),
    }
}

/// The quota record setting `limits` (0: no limit), bytes rounded up to
/// whole 1 KiB quota blocks.
pub fn dqblk_for(limits: DiskLimits) -> libc::dqblk {
    let mut q = zeroed_dqblk();
    q.dqb_bhardlimit = limits.bytes.map_or(0, |b| b.div_ceil(QUOTA_BLOCK));
    q.dqb_ihardlimit = limits.inodes.unwrap_or(0);
    q.dqb_valid = QIF_BLIMITS | QIF_ILIMITS;
    q
}

fn zeroed_dqblk() -> libc::dqblk {
    libc::dqblk {
        dqb_bhardlimit: 0,
        dqb_bsoftlimit: 0,
        dqb_curspace: 0,
        dqb_ihardlimit: 0,
        dqb_isoftlimit: 0,
        dqb_curinodes: 0,
        dqb_btime: 0,
        dqb_itime: 0,
        dqb_valid: 0,
    }
}

/// The home directory itself, never a symlink in its place.
fn open_home(home: &Path) -> Result<File, DiskError> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(home)
        .map_err(super::io("open", home))
}

fn quota_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> DiskError + 'a {
    move |source| DiskError::Quota {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Gives `home` the project `id` with inheritance, and sets the project's
/// limits; returns what is in force, read back from the quota.
pub fn attach(home: &Path, id: u32, limits: DiskLimits) -> Result<DiskInForce, DiskError> {
    let dir = open_home(home)?;
    let mut x = sys::get_fsxattr(&dir).map_err(quota_err("FS_IOC_FSGETXATTR", home))?;
    if x.projid != id || x.xflags & sys::FS_XFLAG_PROJINHERIT == 0 {
        x.projid = id;
        x.xflags |= sys::FS_XFLAG_PROJINHERIT;
        sys::set_fsxattr(&dir, &x).map_err(quota_err("FS_IOC_FSSETXATTR", home))?;
    }
    set(&dir, home, id, limits)?;
    let q = sys::get_project_quota(&dir, id).map_err(quota_err("Q_GETQUOTA", home))?;
    Ok(in_force(&q))
}

/// What a quota record enforces (0: no limit).
pub fn in_force(q: &libc::dqblk) -> DiskInForce {
    DiskInForce {
        backend: "quota".into(),
        bytes: q.dqb_bhardlimit * QUOTA_BLOCK,
        inodes: q.dqb_ihardlimit,
    }
}

fn set(dir: &impl AsFd, home: &Path, id: u32, limits: DiskLimits) -> Result<(), DiskError> {
    sys::set_project_quota(dir, id, &dqblk_for(limits)).map_err(quota_err("Q_SETQUOTA", home))
}

/// The project of `home` when it has one of its own and its filesystem
/// has project quotas on.
fn project_of(home: &Path) -> Option<(File, u32)> {
    let dir = open_home(home).ok()?;
    let x = sys::get_fsxattr(&dir).ok()?;
    (x.projid != 0 && sys::project_quota_info(&dir).is_ok()).then_some((dir, x.projid))
}

/// Sets the limits of a home with a project of its own at once (the
/// kernel checks them at every allocation); `Ok(false)` when the home has
/// none (another backend's, or not started yet).
pub fn set_live(home: &Path, limits: DiskLimits) -> Result<bool, DiskError> {
    let Some((dir, id)) = project_of(home) else {
        return Ok(false);
    };
    set(&dir, home, id, limits)?;
    Ok(true)
}

/// A home's usage from its project's quota; `None` when it has none.
pub fn usage(home: &Path) -> Option<DiskUsage> {
    let (dir, id) = project_of(home)?;
    let q = sys::get_project_quota(&dir, id).ok()?;
    let fs = super::home_usage(home);
    Some(usage_from(&q, fs))
}

/// Usage from a quota record; where a resource has no limit, its total is
/// what the filesystem has (`fs`, from statvfs).
pub fn usage_from(q: &libc::dqblk, fs: Option<DiskUsage>) -> DiskUsage {
    let used = q.dqb_curspace;
    let fs_room = fs.map_or(u64::MAX, |f| f.bytes_available);
    let bytes_total = match q.dqb_bhardlimit {
        0 => used.saturating_add(fs_room),
        b => b * QUOTA_BLOCK,
    };
    let inodes_total = match q.dqb_ihardlimit {
        0 => fs.map_or(u64::MAX, |f| f.inodes_total),
        i => i,
    };
    DiskUsage {
        bytes_used: used,
        bytes_total,
        bytes_available: bytes_total.saturating_sub(used).min(fs_room),
        inodes_used: q.dqb_curinodes,
        inodes_total,
        mounted: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
30 22 254:16 / /srv/ws rw,relatime shared:9 - ext4 /dev/vdb rw,prjquota
31 22 254:16 /sub /srv/my\\040ws rw,relatime - ext4 /dev/vdb rw,prjquota
32 22 0:40 / /tmp rw - tmpfs tmpfs rw,size=100k
";

    #[test]
    fn the_deepest_mount_of_the_device_holds_the_path() {
        let m = mount_of(MOUNTINFO, (254, 16), Path::new("/srv/ws/alice")).unwrap();
        assert_eq!(m.mount_point, Path::new("/srv/ws"));
        assert_eq!(m.fstype, "ext4");
        assert!(mount_lacks_project_quota(&m).is_none());
        let m = mount_of(MOUNTINFO, (254, 16), Path::new("/srv/my ws/bob")).unwrap();
        assert_eq!(m.mount_point, Path::new("/srv/my ws"));
        let root = mount_of(MOUNTINFO, (254, 1), Path::new("/var/lib/warren")).unwrap();
        assert!(mount_lacks_project_quota(&root)
            .unwrap()
            .contains("not mounted with prjquota"));
        let tmp = mount_of(MOUNTINFO, (0, 40), Path::new("/tmp/x")).unwrap();
        assert!(mount_lacks_project_quota(&tmp).unwrap().contains("tmpfs"));
        assert!(mount_of(MOUNTINFO, (9, 9), Path::new("/")).is_none());
    }

    #[test]
    fn the_project_id_is_the_tenants_host_uid() {
        assert_eq!(project_id(1_500_000_007).unwrap(), 1_500_000_007);
        assert!(project_id(0).is_err());
    }

    #[test]
    fn limits_become_quota_blocks_and_back() {
        let q = dqblk_for(DiskLimits {
            bytes: Some((32 << 20) + 1),
            inodes: Some(500),
        });
        assert_eq!(q.dqb_bhardlimit, (32 << 10) + 1);
        assert_eq!(q.dqb_ihardlimit, 500);
        assert_eq!(q.dqb_valid, QIF_BLIMITS | QIF_ILIMITS);
        let none = dqblk_for(DiskLimits::NONE);
        assert_eq!((none.dqb_bhardlimit, none.dqb_ihardlimit), (0, 0));
        let f = in_force(&q);
        assert_eq!((f.backend.as_str(), f.inodes), ("quota", 500));
        assert_eq!(f.bytes, ((32 << 10) + 1) * 1024);
    }

    #[test]
    fn usage_comes_from_the_quota() {
        let mut q = dqblk_for(DiskLimits {
            bytes: Some(1 << 20),
            inodes: Some(10),
        });
        q.dqb_curspace = 4096;
        q.dqb_curinodes = 3;
        let u = usage_from(&q, None);
        assert_eq!(
            (u.bytes_used, u.bytes_total, u.bytes_available),
            (4096, 1 << 20, (1 << 20) - 4096)
        );
        assert_eq!((u.inodes_used, u.inodes_total), (3, 10));
        q.dqb_curspace = 2 << 20;
        assert_eq!(usage_from(&q, None).bytes_available, 0);
        assert!(usage_from(&q, None).full());
    }
}
