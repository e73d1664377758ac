//! Per-home ext4 images: made, resized, mounted over the home in the
//! shim's own mount namespace, given their byte limit, removed.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::loops::{loop_device_mounted_at, loop_device_of, mounter_of};
use super::programs::{os, run};
use super::superblock::geometry;
use super::{
    home_usage, human, image_path, io, DiskError, DiskInForce, DiskLimits, DiskSpec, MIN_BYTES,
};

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
/// most half a filesystem); never more than 16 TiB (ext4's largest file
/// with 4 KiB blocks), where the limit applies in part and the record's
/// notes say so. A home without a byte limit gets no image (the shim
/// reports an inode limit alone as missing).
pub fn image_size(bytes: u64) -> u64 {
    bytes.saturating_mul(2).min(MAX_IMAGE)
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
    let mut root_mode = None;
    if !image.exists() {
        root_mode = create(&spec.images, slug, &image, home, spec.limits)?;
    } else if !attached_before {
        resize_offline(&image, spec.limits.bytes)?;
        move_in(&spec.images, slug, &image, home)?;
    }
    // mount -o loop reuses the loop device the image is already on (a
    // second sandbox of the tenant): one filesystem, mounted twice.
    // `discard` gives freed blocks back to the host (holes in the file).
    mount(&image, home, "loop,nodev,nosuid,noatime,discard")?;
    let dev = loop_device_mounted_at(home, &image).ok_or_else(|| DiskError::Program {
        program: "mount".into(),
        output: format!("{} is on no loop device after mounting", image.display()),
    });
    // A new image made for an empty home: its root takes the home's mode
    // here (`fill`, which would have, was skipped).
    let moded = match root_mode {
        Some(mode) => fs::set_permissions(home, fs::Permissions::from_mode(mode & 0o7777))
            .map_err(io("chmod", home)),
        None => Ok(()),
    };
    let set = moded
        .and(dev)
        .and_then(|dev| set_byte_limit(&dev, spec.limits.bytes));
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
    if set.is_some() && set != spec.limits.bytes {
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
            // tune2fs refuses a reserve over half the blocks: a limit that
            // low holds at the image's next start, when it shrinks.
            let reserve = usable.saturating_sub(want + internal).min(g.blocks / 2);
            let got = usable.saturating_sub(reserve + internal) * g.block;
            (reserve, Some(got))
        }
    };
    let r = reserve.to_string();
    run("tune2fs", &[os("-r"), os(&r), dev.as_os_str()])?;
    Ok(got)
}

/// Sets a running home's byte limit at once; `Ok(false)` when no sandbox
/// has it mounted, or its image cannot hold that limit as it is (too
/// small, or over twice as big: the next start resizes it and applies it).
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
/// then the old content removed. An empty home (a new tenant's) is not
/// copied: no mount, limit and unmount for nothing; the mode its root
/// still needs is returned, for [`attach`] to set once mounted. A home too big for the limit is left as
/// it was and refused.
fn create(
    images: &Path,
    slug: &str,
    image: &Path,
    home: &Path,
    limits: DiskLimits,
) -> Result<Option<u32>, DiskError> {
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
        f.set_len(image_size(limits.bytes.unwrap_or(MIN_BYTES)))
            .map_err(io("size", &new))?;
        drop(f);
        let extended = format!(
            "root_owner={}:{},lazy_itable_init=1,lazy_journal_init=1,nodiscard",
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
        let empty = fs::read_dir(home)
            .map_err(io("read", home))?
            .next()
            .is_none();
        if empty {
            return Ok(Some(meta.mode()));
        }
        fill(images, slug, &new, home, meta.mode(), limits).map(|()| None)
    })();
    let root_mode = match made {
        Ok(m) => m,
        Err(e) => {
            let _ = fs::remove_file(&new);
            return Err(e);
        }
    };
    fs::rename(&new, image).map_err(io("rename", &new))?;
    empty_dir(home);
    Ok(root_mode)
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
                let dev =
                    loop_device_mounted_at(&staging, image).ok_or_else(|| DiskError::Program {
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
    let Some(limit) = bytes else {
        return Ok(());
    };
    let want = image_size(limit);
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
