//! Disk limits on a tenant's home: bytes and inodes.
//!
//! The backend built here is the per-home image (docs/disk.md): where the
//! kernel has no project quotas for the workspace root's filesystem, each
//! home is a sparse ext4 file the size of the limit, made with the inode
//! limit (`mkfs.ext4 -N`), kept beside the workspace root
//! ([`images_dir`]), loop-mounted over the home while a sandbox runs and
//! unmounted after (`mount -o loop` sets autoclear, so the loop device is
//! released with the last mount). The programs are e2fsprogs' and
//! util-linux's, run as programs: no filesystem code of our own.
//!
//! Every step on one image runs under an exclusive `flock` on
//! `<images>/<slug>.lock`, so two sandboxes of one tenant starting at once,
//! or a live resize during a start, never run `mkfs` or an offline resize
//! on an image in use. Usage always comes from the filesystem itself
//! (`statvfs` of the mounted image, or its superblock via `dumpe2fs -h`),
//! never from walking the tree.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

/// The limits asked for one home; `None`: no limit on that resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskLimits {
    pub bytes: Option<u64>,
    pub inodes: Option<u64>,
}

/// Smallest byte limit: ext4 with a journal needs a few MiB of its own.
pub const MIN_BYTES: u64 = 16 << 20;
/// Smallest inode limit.
pub const MIN_INODES: u64 = 128;

impl DiskLimits {
    pub const NONE: DiskLimits = DiskLimits {
        bytes: None,
        inodes: None,
    };
    /// The server's defaults: 1 GiB and 100 000 inodes.
    pub const DEFAULT: DiskLimits = DiskLimits {
        bytes: Some(1 << 30),
        inodes: Some(100_000),
    };

    pub fn is_none(&self) -> bool {
        *self == DiskLimits::NONE
    }

    /// Refuses limits no image can be made with.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(b) = self.bytes {
            if b < MIN_BYTES {
                return Err(format!(
                    "disk limit {b} bytes is below the smallest, {MIN_BYTES} (16 MiB)"
                ));
            }
        }
        if let Some(i) = self.inodes {
            if i < MIN_INODES {
                return Err(format!(
                    "inode limit {i} is below the smallest, {MIN_INODES}"
                ));
            }
        }
        Ok(())
    }
}

impl Default for DiskLimits {
    fn default() -> Self {
        DiskLimits::NONE
    }
}

/// How a disk limit is enforced (`--disk-backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskBackend {
    /// The best this host has; today the image backend where it works.
    #[default]
    Auto,
    /// A loop-mounted ext4 image per home.
    Image,
}

impl std::str::FromStr for DiskBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DiskBackend::Auto),
            "image" => Ok(DiskBackend::Image),
            "quota" => Err(
                "the kernel project-quota backend is not built yet (docs/disk.md); use auto or image"
                    .into(),
            ),
            other => Err(format!("unknown disk backend {other:?} (auto, image)")),
        }
    }
}

/// The disk part of a sandbox's spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    pub limits: DiskLimits,
    pub backend: DiskBackend,
    /// Where the images live ([`images_dir`] of the workspace root).
    pub images: PathBuf,
}

/// What a sandbox's home got, in its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskInForce {
    /// `image`.
    pub backend: String,
    /// The byte limit: the image's size (the filesystem's own metadata
    /// takes a little of it).
    pub bytes: u64,
    /// The inode limit: the filesystem's inode count.
    pub inodes: u64,
}

/// What a home holds and may hold, from its filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskUsage {
    pub bytes_used: u64,
    /// What the filesystem can hold (the limit less its own metadata).
    pub bytes_total: u64,
    /// What the tenant can still write (ext4 keeps a little back for its
    /// own metadata).
    pub bytes_available: u64,
    pub inodes_used: u64,
    pub inodes_total: u64,
    /// Read from the live mount (true) or from the image's superblock.
    pub mounted: bool,
}

impl DiskUsage {
    /// Nothing more can be written (a block or an inode short).
    pub fn full(&self) -> bool {
        self.bytes_available < 4096 || self.inodes_used >= self.inodes_total
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("disk image {path}: {op}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("disk image: {program} failed: {output}")]
    Program { program: String, output: String },
    #[error(
        "the home holds more than the disk limit ({limit} bytes, {inodes} inodes); \
         raise the tenant's limit (warren users limits) or free space first"
    )]
    HomeTooBig { limit: u64, inodes: u64 },
    #[error(
        "the home uses {used} bytes and {inodes_used} inodes, more than the new limit \
         ({limit} bytes, {inodes} inodes): free space first"
    )]
    WouldNotFit {
        used: u64,
        inodes_used: u64,
        limit: u64,
        inodes: u64,
    },
    #[error("the disk image of {slug} is in use by a running sandbox")]
    InUse { slug: String },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DiskError + 'a {
    move |source| DiskError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Where the images of homes under `workspace_root` live: beside it,
/// `<root>.disk/` (never inside any home, not reachable by tenants).
pub fn images_dir(workspace_root: &Path) -> PathBuf {
    let name = workspace_root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "workspaces".into());
    workspace_root
        .parent()
        .unwrap_or(Path::new("/"))
        .join(format!("{name}.disk"))
}

/// The image of one home.
pub fn image_path(images: &Path, slug: &str) -> PathBuf {
    images.join(format!("{slug}.ext4"))
}

/// Why this process cannot use per-home images, with the fix; `None` when
/// it can (root in the host's user namespace, loop devices, e2fsprogs).
pub fn image_backend_unavailable(proc_root: &Path) -> Option<String> {
    let uid_map = fs::read_to_string(proc_root.join("self/uid_map")).unwrap_or_default();
    let host_root = nix::unistd::geteuid().is_root()
        && uid_map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"];
    if !host_root {
        return Some(
            "per-home disk images need root in the host's user namespace (loop devices, \
             mounting ext4); run warren as root, or keep the workspace root on its own \
             filesystem (docs/disk.md)"
                .into(),
        );
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some(
            "no loop devices (/dev/loop-control missing): load the loop module (modprobe loop)"
                .into(),
        );
    }
    for p in ["mkfs.ext4", "resize2fs", "dumpe2fs", "tune2fs", "e2fsck"] {
        if program(p).is_none() {
            return Some(format!("{p} not found: install e2fsprogs"));
        }
    }
    if program("mount").is_none() || program("losetup").is_none() {
        return Some("mount or losetup not found: install util-linux (mount)".into());
    }
    None
}

/// Whether two paths (or their nearest existing ancestors) lie on one
/// filesystem: `warren doctor` warns when the state directory shares the
/// homes' filesystem with no disk limit in force.
pub fn same_filesystem(a: &Path, b: &Path) -> bool {
    let dev = |p: &Path| {
        p.ancestors()
            .find_map(|a| fs::metadata(a).ok())
            .map(|m| m.dev())
    };
    dev(a).is_some() && dev(a) == dev(b)
}

/// The usage of the filesystem holding `home`, from `statvfs`: what the
/// tenant may still write and may have in all (blocks kept back beyond
/// the limit are not theirs).
pub fn home_usage(home: &Path) -> Option<DiskUsage> {
    let st = nix::sys::statvfs::statvfs(home).ok()?;
    Some(DiskUsage {
        bytes_used: (st.blocks() - st.blocks_free()) * st.fragment_size(),
        bytes_total: (st.blocks() - st.blocks_free() + st.blocks_available()) * st.fragment_size(),
        bytes_available: st.blocks_available() * st.fragment_size(),
        inodes_used: st.files() - st.files_free(),
        inodes_total: st.files(),
        mounted: true,
    })
}

/// A program from the system's directories (the shim's PATH is not ours to
/// trust).
fn program(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

fn run(name: &str, args: &[&std::ffi::OsStr]) -> Result<String, DiskError> {
    let path = program(name).ok_or_else(|| DiskError::Program {
        program: name.into(),
        output: "not found".into(),
    })?;
    let out = Command::new(&path)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| DiskError::Program {
            program: name.into(),
            output: e.to_string(),
        })?;
    if !out.status.success() {
        let mut text = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if text.is_empty() {
            text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        return Err(DiskError::Program {
            program: name.into(),
            output: format!("{} ({})", text, out.status),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

/// An exclusive lock on one tenant's image, held while it lives.
pub struct ImageLock {
    _lock: nix::fcntl::Flock<File>,
    pub image: PathBuf,
}

/// Takes the lock on `slug`'s image, creating the images directory (0700)
/// if needed.
pub fn lock(images: &Path, slug: &str) -> Result<ImageLock, DiskError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(images)
        .map_err(io("create", images))?;
    let path = images.join(format!("{slug}.lock"));
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(io("open", &path))?;
    let lock =
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| {
            DiskError::Io {
                op: "lock",
                path: path.clone(),
                source: e.into(),
            }
        })?;
    Ok(ImageLock {
        _lock: lock,
        image: image_path(images, slug),
    })
}

/// The loop device `image` is attached to, if any
/// (`/sys/block/loop*/loop/backing_file`).
pub fn loop_device_of(image: &Path) -> Option<PathBuf> {
    let want = fs::canonicalize(image).ok()?;
    for e in fs::read_dir("/sys/block").ok()?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = fs::read_to_string(e.path().join("loop/backing_file")) else {
            continue;
        };
        if Path::new(backing.trim()) == want {
            return Some(Path::new("/dev").join(name));
        }
    }
    None
}

/// A home mounted from its image by [`attach`]; [`detach`] unmounts it.
#[derive(Debug)]
pub struct Attached {
    pub home: PathBuf,
    pub images: PathBuf,
    pub slug: String,
    pub in_force: DiskInForce,
}

/// How big an image is made for a byte limit: twice the limit, so a
/// raised limit applies at once up to that (the file is sparse: the
/// headroom costs the host nothing until written; `tune2fs` keeps back at
/// most half a filesystem). Without a byte limit (inodes only), 256 GiB;
/// never more than 16 TiB (ext4's largest file with 4 KiB blocks), where
/// the limit applies in part and the record's notes say so.
pub fn image_size(bytes: Option<u64>) -> u64 {
    bytes
        .map_or(256 << 30, |b| b.saturating_mul(2))
        .min(MAX_IMAGE)
}

/// The largest image: ext4's largest file with 4 KiB blocks, less a block.
const MAX_IMAGE: u64 = (16 << 40) - 4096;

/// Makes (on first use, moving the home's content in), grows (when the
/// limit outgrew it and no sandbox has it) and mounts `slug`'s image over
/// `home`, with the byte limit in force. `home` must exist, with the
/// owner and mode its image's root gets. The note says what applied only
/// in part.
pub fn attach(
    spec: &DiskSpec,
    slug: &str,
    home: &Path,
) -> Result<(Attached, Option<String>), DiskError> {
    let guard = lock(&spec.images, slug)?;
    let image = guard.image.clone();
    settle(&image, home);
    let attached_before = loop_device_of(&image).is_some();
    if !image.exists() {
        create(&spec.images, slug, &image, home, spec.limits)?;
    } else if !attached_before {
        resize_offline(&image, spec.limits.bytes)?;
        move_in(&spec.images, slug, &image, home)?;
    }
    // mount -o loop reuses the loop device the image is already on (a
    // second sandbox of the tenant): one filesystem, mounted twice.
    // `discard` gives freed blocks back to the host (holes in the file).
    mount(&image, home, "loop,nodev,nosuid,noatime,discard")?;
    let dev = loop_device_of(&image).ok_or_else(|| DiskError::Program {
        program: "mount".into(),
        output: format!("{} is on no loop device after mounting", image.display()),
    });
    let set = dev.and_then(|dev| set_byte_limit(&dev, spec.limits.bytes));
    let st = nix::sys::statvfs::statvfs(home).map_err(|e| DiskError::Io {
        op: "statvfs",
        path: home.to_path_buf(),
        source: e.into(),
    });
    let (set, st) = match (set, st) {
        (Ok(set), Ok(st)) => (set, st),
        (Err(e), _) | (_, Err(e)) => {
            let _ = nix::mount::umount2(home, nix::mount::MntFlags::MNT_DETACH);
            return Err(e);
        }
    };
    // e2fsck makes a lost+found when it needs one: not the tenant's.
    remove_lost_found(home);
    let mut notes = Vec::new();
    if set.is_some() && set < spec.limits.bytes {
        notes.push(format!(
            "disk limit {} asked, the home's image holds {} until its next start",
            human(spec.limits.bytes.unwrap_or(0)),
            human(set.unwrap_or(0))
        ));
    }
    if let Some(want) = spec.limits.inodes {
        let have = st.files();
        if have < want * 9 / 10 || have > want * 11 / 10 {
            notes.push(format!(
                "inode limit {want} asked, the home's filesystem has {have} (fixed when it was made)"
            ));
        }
    }
    let bytes = set.unwrap_or(st.blocks() * st.fragment_size());
    Ok((
        Attached {
            home: home.to_path_buf(),
            images: spec.images.clone(),
            slug: slug.to_string(),
            in_force: DiskInForce {
                backend: "image".into(),
                bytes,
                inodes: st.files(),
            },
        },
        (!notes.is_empty()).then(|| notes.join("; ")),
    ))
}

/// Waits (up to 3 s) for a loop device that no process has mounted any
/// more to be released: the mount namespace of a sandbox that just ended
/// is torn down after its last process, and a mount must not reuse the
/// device meanwhile.
fn settle(image: &Path, home: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while let Some(dev) = loop_device_of(image) {
        if mounter_of(&dev, home).is_some() || std::time::Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn mount(image: &Path, target: &Path, options: &str) -> Result<(), DiskError> {
    run(
        "mount",
        &[
            os("-t"),
            os("ext4"),
            os("-o"),
            os(options),
            image.as_os_str(),
            target.as_os_str(),
        ],
    )
    .map(drop)
}

/// Gives the calling process a mount namespace of its own, receiving the
/// host's mounts but sending none back (`MS_SLAVE`), where it mounts the
/// home's image: no other process on the host sees the image, and when
/// the shim and its sandbox are gone, however they ended (a SIGKILL
/// included), the namespace goes with them, the image is unmounted and
/// its loop device released. Single-threaded callers only (unshare).
pub fn private_mount_namespace() -> Result<(), DiskError> {
    use nix::mount::MsFlags;
    let errno = |op| {
        move |e: nix::errno::Errno| DiskError::Io {
            op,
            path: PathBuf::from("/"),
            source: e.into(),
        }
    };
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(errno("unshare a mount namespace"))?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(errno("make mounts receive-only"))
}

/// Unmounts the home (the loop device goes with its last mount).
pub fn detach(attached: Attached) -> Result<(), DiskError> {
    let _guard = lock(&attached.images, &attached.slug)?;
    nix::mount::umount2(&attached.home, nix::mount::MntFlags::MNT_DETACH).map_err(|e| {
        DiskError::Io {
            op: "unmount",
            path: attached.home.clone(),
            source: e.into(),
        }
    })
}

/// The filesystem's geometry, from `dumpe2fs -h` of an image or device.
struct Geometry {
    block: u64,
    blocks: u64,
    overhead: u64,
}

fn geometry(image_or_dev: &Path) -> Result<Geometry, DiskError> {
    let dump = run("dumpe2fs", &[os("-h"), image_or_dev.as_os_str()])?;
    let field = |name: &str| superblock_field(&dump, name);
    match (field("Block size"), field("Block count")) {
        (Some(block), Some(blocks)) => Ok(Geometry {
            block,
            blocks,
            overhead: field("Overhead clusters").unwrap_or(0),
        }),
        _ => Err(DiskError::Program {
            program: "dumpe2fs".into(),
            output: format!("no block size or count for {}", image_or_dev.display()),
        }),
    }
}

/// The byte limit is the blocks kept back from the tenant: the
/// filesystem's reserved blocks (`tune2fs -r`), which only host root may
/// use and the kernel reads at every allocation, so a change applies to
/// a mounted home at once (no resize, no CAP_SYS_RESOURCE, which online
/// `resize2fs` needs and hosts may withhold). ext4 also keeps back 2% or
/// 4096 blocks for itself; the reserve leaves that out, so the tenant gets
/// the limit. Returns the limit now in force (less than asked when the
/// image is too small), `None` without one.
fn set_byte_limit(dev: &Path, bytes: Option<u64>) -> Result<Option<u64>, DiskError> {
    let g = geometry(dev)?;
    let usable = g.blocks.saturating_sub(g.overhead);
    let internal = (g.blocks / 50).min(4096);
    let (reserve, got) = match bytes {
        None => (0, None),
        Some(b) => {
            let want = b / g.block;
            let reserve = usable.saturating_sub(want + internal);
            let got = usable.saturating_sub(reserve + internal) * g.block;
            (reserve, Some(got))
        }
    };
    let r = reserve.to_string();
    run("tune2fs", &[os("-r"), os(&r), dev.as_os_str()])?;
    Ok(got)
}

/// Sets a running home's byte limit at once; `Ok(false)` when no sandbox
/// has it mounted, or its image is too small (the next start applies it).
pub fn set_limit_live(images: &Path, slug: &str, bytes: Option<u64>) -> Result<bool, DiskError> {
    let guard = lock(images, slug)?;
    let Some(dev) = loop_device_of(&guard.image) else {
        return Ok(false);
    };
    let got = set_byte_limit(&dev, bytes)?;
    Ok(got == bytes)
}

/// Makes the image: a sparse file, `mkfs.ext4`, the home's content copied
/// in (as root, `cp -a`: owners, modes, links kept, no symlink followed),
/// then the old content removed. A home too big for the limit is left as
/// it was and refused.
fn create(
    images: &Path,
    slug: &str,
    image: &Path,
    home: &Path,
    limits: DiskLimits,
) -> Result<(), DiskError> {
    let meta = fs::symlink_metadata(home).map_err(io("stat", home))?;
    let new = images.join(format!("{slug}.ext4.new"));
    let _ = fs::remove_file(&new);
    let made = (|| {
        let f = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&new)
            .map_err(io("create", &new))?;
        f.set_len(image_size(limits.bytes))
            .map_err(io("size", &new))?;
        drop(f);
        let extended = format!(
            "root_owner={}:{},lazy_itable_init=1,nodiscard",
            meta.uid(),
            meta.gid()
        );
        let n = limits.inodes.map(|i| i.to_string());
        let mut args = vec![
            os("-q"),
            os("-F"),
            os("-t"),
            os("ext4"),
            os("-m"),
            os("0"),
            os("-E"),
            os(&extended),
        ];
        if let Some(n) = &n {
            args.extend([os("-N"), os(n)]);
        }
        args.push(new.as_os_str());
        run("mkfs.ext4", &args)?;
        fill(images, slug, &new, home, meta.mode(), limits)
    })();
    if let Err(e) = made {
        let _ = fs::remove_file(&new);
        return Err(e);
    }
    fs::rename(&new, image).map_err(io("rename", &new))?;
    empty_dir(home);
    Ok(())
}

/// What lies in the home's directory on the host while no sandbox has the
/// image mounted (a home from before disk limits, or files an operator put
/// there) is moved into the image.
fn move_in(images: &Path, slug: &str, image: &Path, home: &Path) -> Result<(), DiskError> {
    let empty = fs::read_dir(home)
        .map_err(io("read", home))?
        .next()
        .is_none();
    if empty {
        return Ok(());
    }
    let meta = fs::symlink_metadata(home).map_err(io("stat", home))?;
    fill(images, slug, image, home, meta.mode(), DiskLimits::NONE)?;
    empty_dir(home);
    Ok(())
}

/// Mounts `image` at a staging point beside it and copies the home in,
/// with the byte limit in force (so a home too big is refused).
fn fill(
    images: &Path,
    slug: &str,
    image: &Path,
    home: &Path,
    mode: u32,
    limits: DiskLimits,
) -> Result<(), DiskError> {
    let staging = images.join(format!("{slug}.mnt"));
    fs::create_dir_all(&staging).map_err(io("create", &staging))?;
    let r = (|| {
        mount(image, &staging, "loop,nodev,nosuid")?;
        let copied = (|| {
            if limits.bytes.is_some() {
                let dev = loop_device_of(image).ok_or_else(|| DiskError::Program {
                    program: "mount".into(),
                    output: "no loop device".into(),
                })?;
                set_byte_limit(&dev, limits.bytes)?;
            }
            copy_home(&staging, home, mode, limits.bytes)
        })();
        let _ = nix::mount::umount2(&staging, nix::mount::MntFlags::empty());
        copied
    })();
    let _ = fs::remove_dir(&staging);
    r
}

/// The filesystem's root becomes the home: no lost+found (e2fsck makes
/// one when it needs it), the home's mode, its content (`cp -a` as root:
/// owners, modes and links kept, no symlink followed). Root may write
/// into the blocks kept back from the tenant, so the limit is checked
/// after the copy.
fn copy_home(root: &Path, home: &Path, mode: u32, limit: Option<u64>) -> Result<(), DiskError> {
    remove_lost_found(root);
    fs::set_permissions(root, fs::Permissions::from_mode(mode & 0o7777))
        .map_err(io("chmod", root))?;
    let has_content = fs::read_dir(home)
        .map_err(io("read", home))?
        .next()
        .is_some();
    if !has_content {
        return Ok(());
    }
    let mut src = home.as_os_str().to_os_string();
    src.push("/.");
    run(
        "cp",
        &[os("-a"), os("--no-dereference"), &src, root.as_os_str()],
    )
    .map_err(|e| match e {
        DiskError::Program { ref output, .. } if output.contains("No space left") => {
            let st = nix::sys::statvfs::statvfs(root);
            DiskError::HomeTooBig {
                limit: st
                    .as_ref()
                    .map(|s| s.blocks_available() * s.fragment_size())
                    .unwrap_or(0),
                inodes: st.map(|s| s.files()).unwrap_or(0),
            }
        }
        e => e,
    })?;
    if let (Some(limit), Some(u)) = (limit, home_usage(root)) {
        if u.bytes_used > limit {
            return Err(DiskError::HomeTooBig {
                limit,
                inodes: u.inodes_total,
            });
        }
    }
    Ok(())
}

/// Removes an empty lost+found owned by root at the top of a home.
fn remove_lost_found(root: &Path) {
    let lf = root.join("lost+found");
    if fs::symlink_metadata(&lf).is_ok_and(|m| m.is_dir() && m.uid() == 0) {
        let _ = fs::remove_dir(&lf);
    }
}

/// Removes what a home held on the host's filesystem, now copied into its
/// image (`rm -r` never follows a symlink; `--one-file-system` never
/// crosses into a mount).
fn empty_dir(home: &Path) {
    let Ok(entries) = fs::read_dir(home) else {
        return;
    };
    let paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    if paths.is_empty() {
        return;
    }
    let mut args: Vec<&std::ffi::OsStr> = vec![os("-rf"), os("--one-file-system"), os("--")];
    args.extend(paths.iter().map(|p| p.as_os_str()));
    if let Err(e) = run("rm", &args) {
        eprintln!("warren: removing the home's old content after moving it into its image: {e}");
    }
}

/// Brings an image nobody has mounted to the size its byte limit wants:
/// grown when the limit outgrew it, shrunk when the limit is less than
/// half of it (the most `tune2fs` keeps back). `resize2fs` on the file
/// needs no capability; a shrink checks the filesystem first and fails
/// when the content does not fit.
fn resize_offline(image: &Path, bytes: Option<u64>) -> Result<(), DiskError> {
    let size = fs::metadata(image).map_err(io("stat", image))?.len();
    let want = image_size(bytes);
    let Some(limit) = bytes else {
        return Ok(());
    };
    let too_small = want > size;
    let too_big = limit < size / 2;
    if !too_small && !too_big {
        return Ok(());
    }
    let set_len = |len: u64| -> Result<(), DiskError> {
        let f = OpenOptions::new()
            .write(true)
            .open(image)
            .map_err(io("open", image))?;
        f.set_len(len).map_err(io("size", image))
    };
    let k = format!("{}K", want / 1024);
    if too_small {
        set_len(want)?;
        return run("resize2fs", &[os("-f"), image.as_os_str(), os(&k)]).map(drop);
    }
    // e2fsck exits 1 when it repaired something: the check passed.
    if let Err(e) = run("e2fsck", &[os("-f"), os("-p"), image.as_os_str()]) {
        if !matches!(&e, DiskError::Program { output, .. } if output.contains("exit status: 1)")) {
            return Err(e);
        }
    }
    run("resize2fs", &[image.as_os_str(), os(&k)]).map_err(|e| match e {
        DiskError::Program { output, .. } if output.contains("No space left") => {
            DiskError::HomeTooBig { limit, inodes: 0 }
        }
        e => e,
    })?;
    set_len(want)
}

/// Refuses a lower limit the home's current content does not fit in.
pub fn check_lower(
    images: &Path,
    home: &Path,
    slug: &str,
    limits: DiskLimits,
) -> Result<(), DiskError> {
    let Some(u) = usage(images, home, slug, None) else {
        return Ok(());
    };
    let too_many_bytes = limits.bytes.is_some_and(|b| u.bytes_used > b);
    let too_many_inodes = limits.inodes.is_some_and(|i| u.inodes_used > i);
    if too_many_bytes || too_many_inodes {
        return Err(DiskError::WouldNotFit {
            used: u.bytes_used,
            inodes_used: u.inodes_used,
            limit: limits.bytes.unwrap_or(u64::MAX),
            inodes: limits.inodes.unwrap_or(u64::MAX),
        });
    }
    Ok(())
}

/// The home's usage from its filesystem: `statvfs` of the mounted image
/// as `mounter` (the shim holding it, whose mount namespace has it: see
/// [`private_mount_namespace`]) sees it, or the image's superblock
/// (`dumpe2fs -h`) when no sandbox runs. `None` without an image.
pub fn usage(images: &Path, home: &Path, slug: &str, mounter: Option<i32>) -> Option<DiskUsage> {
    let image = image_path(images, slug);
    if !image.exists() {
        return None;
    }
    let dev = loop_device_of(&image);
    // Not told who holds it (the command line, another process's
    // sandbox): the first process whose mount namespace has it there.
    let mounter = mounter.or_else(|| dev.as_deref().and_then(|d| mounter_of(d, home)));
    if let (Some(dev), Some(pid)) = (dev, mounter) {
        let seen = Path::new("/proc")
            .join(pid.to_string())
            .join("root")
            .join(home.strip_prefix("/").unwrap_or(home));
        if is_mounted_from(&seen, &dev) {
            return home_usage(&seen);
        }
    }
    let out = run("dumpe2fs", &[os("-h"), image.as_os_str()]).ok()?;
    superblock_usage(&out)
}

/// A process that has block device `dev` mounted at `home` in its mount
/// namespace (`/proc/<pid>/mountinfo`).
fn mounter_of(dev: &Path, home: &Path) -> Option<i32> {
    use std::os::unix::fs::FileTypeExt as _;
    let meta = fs::metadata(dev).ok()?;
    if !meta.file_type().is_block_device() {
        return None;
    }
    let rdev = meta.rdev();
    let id = format!(
        " {}:{} / {} ",
        libc::major(rdev),
        libc::minor(rdev),
        home.display()
    );
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let info = fs::read_to_string(e.path().join("mountinfo")).ok()?;
        info.lines().any(|l| l.contains(&id)).then_some(pid)
    })
}

/// Whether `home` is a mount of block device `dev`.
fn is_mounted_from(home: &Path, dev: &Path) -> bool {
    let (Ok(h), Ok(d)) = (fs::metadata(home), fs::metadata(dev)) else {
        return false;
    };
    h.dev() == d.rdev()
}

fn superblock_field(dump: &str, name: &str) -> Option<u64> {
    dump.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// Usage from `dumpe2fs -h`'s superblock fields.
pub fn superblock_usage(dump: &str) -> Option<DiskUsage> {
    let field = |name: &str| superblock_field(dump, name);
    let block = field("Block size")?;
    let blocks = field("Block count")?;
    let free = field("Free blocks")?;
    let inodes = field("Inode count")?;
    let free_inodes = field("Free inodes")?;
    // What ext4 keeps back for itself when mounted: 2% or 4096 blocks,
    // whichever is less (ext4_calculate_resv_clusters).
    // Kept back: ext4's own 2% or 4096 blocks, and the reserve that is
    // the byte limit (see `set_byte_limit`).
    let kept = (blocks / 50).min(4096) + field("Reserved block count").unwrap_or(0);
    // As statfs counts: without the filesystem's own metadata.
    let blocks = blocks.saturating_sub(field("Overhead clusters").unwrap_or(0));
    let used = blocks.saturating_sub(free);
    let available = free.saturating_sub(kept);
    Some(DiskUsage {
        bytes_used: used * block,
        bytes_total: (used + available) * block,
        bytes_available: available * block,
        inodes_used: inodes - free_inodes,
        inodes_total: inodes,
        mounted: false,
    })
}

/// Removes `slug`'s image (its home is deleted); refused while mounted.
pub fn remove_image(images: &Path, slug: &str) -> Result<(), DiskError> {
    if !images.exists() {
        return Ok(());
    }
    let guard = lock(images, slug)?;
    if loop_device_of(&guard.image).is_some() {
        return Err(DiskError::InUse { slug: slug.into() });
    }
    match fs::remove_file(&guard.image) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("remove", &guard.image)(e)),
    }
    let _ = fs::remove_file(images.join(format!("{slug}.lock")));
    Ok(())
}

/// Bytes in words, as `df -h` would: `1.0 GiB`.
pub fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    match u {
        0 => format!("{bytes} B"),
        _ => format!("{v:.1} {}", units[u]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_live_beside_the_workspace_root() {
        assert_eq!(
            images_dir(Path::new("/var/lib/warren/workspaces")),
            Path::new("/var/lib/warren/workspaces.disk")
        );
        assert_eq!(
            image_path(Path::new("/x.disk"), "alice"),
            Path::new("/x.disk/alice.ext4")
        );
    }

    #[test]
    fn limits_are_checked_and_backends_named() {
        assert!(DiskLimits::DEFAULT.validate().is_ok());
        assert!(DiskLimits {
            bytes: Some(1 << 20),
            inodes: None
        }
        .validate()
        .is_err());
        assert!(DiskLimits {
            bytes: None,
            inodes: Some(10)
        }
        .validate()
        .is_err());
        assert_eq!("image".parse::<DiskBackend>(), Ok(DiskBackend::Image));
        assert!("quota"
            .parse::<DiskBackend>()
            .unwrap_err()
            .contains("not built"));
        assert!("zfs".parse::<DiskBackend>().is_err());
    }

    #[test]
    fn images_are_twice_the_limit_and_never_too_big_for_a_file() {
        assert_eq!(image_size(Some(1 << 30)), 2 << 30);
        assert_eq!(image_size(None), 256 << 30);
        assert_eq!(image_size(Some(u64::MAX)), MAX_IMAGE);
    }

    #[test]
    fn superblock_fields_give_usage() {
        let dump = "Inode count:              1024\nBlock count:              4096\n\
                    Free blocks:              1000\nFree inodes:              1000\n\
                    Overhead clusters:        96\nBlock size:               4096\n\
                    Reserved block count:     100\n";
        let u = superblock_usage(dump).unwrap();
        // Kept back: ext4's own 4096/50 = 81 blocks and the reserve.
        assert_eq!(u.bytes_used, 3000 * 4096);
        assert_eq!(u.bytes_available, (1000 - 81 - 100) * 4096);
        assert_eq!(u.bytes_total, (3000 + 819) * 4096);
        assert_eq!((u.inodes_used, u.inodes_total), (24, 1024));
        assert!(!u.mounted);
        assert_eq!(human(1 << 30), "1.0 GiB");
        assert_eq!(human(512), "512 B");
    }
}
