//! What the sandbox sees as `/`: a plan of mount operations built in pure
//! code from the spec ([`plan`]), and its execution inside the new mount
//! namespace ([`open_sources_in_child`], [`apply_in_child`]), ending in
//! `pivot_root`.
//!
//! The new root is a small tmpfs that is made read-only once everything is
//! in place. Bind sources are opened (O_PATH) before anything is mounted and
//! bound through `/proc/self/fd/N`, so a staging tmpfs can never hide them
//! and the tenant's workspace is opened with O_NOFOLLOW.

use std::collections::HashMap;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{symlink, DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;
use nix::sys::statvfs::{statvfs, FsFlags};
use nix::unistd::{chdir, pivot_root};

use crate::report::SetupError;
use crate::spec::{Rootfs, SandboxSpec};

/// Where the new root is assembled, inside the sandbox's own mount
/// namespace (the host's /tmp is untouched: the tmpfs exists only there).
const STAGING: &str = "/tmp";

/// Device nodes bound from the host into the sandbox's /dev.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Kernel knobs under /proc made read-only in the sandbox: runc's default
/// `readonlyPaths` (bubblewrap's `--proc` does the same for most). A write
/// to `/proc/sys/kernel/core_pattern` gets EROFS without relying on Landlock.
pub const PROC_READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Paths hidden in the sandbox: runc's default `maskedPaths` (kernel memory,
/// the keyring list, timer and scheduler internals, hardware tables). Files
/// get an empty read-only file, directories an empty read-only tmpfs.
pub const MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// One step of building the root. Paths are as the sandbox will see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOp {
    Tmpfs {
        target: PathBuf,
        mode: u32,
        size_bytes: u64,
        noexec: bool,
    },
    Bind {
        source: PathBuf,
        target: PathBuf,
        readonly: bool,
        is_dir: bool,
        /// Refuse to follow a symlink at `source` (tenant-controlled paths).
        nofollow: bool,
    },
    Symlink {
        points_to: PathBuf,
        target: PathBuf,
    },
    Mkdir {
        target: PathBuf,
        mode: u32,
    },
    WriteFile {
        target: PathBuf,
        contents: String,
    },
    /// A small host file copied into a tmpfs: much cheaper than a bind
    /// mount plus a read-only remount, and a snapshot is all /etc needs.
    CopyFile {
        source: PathBuf,
        target: PathBuf,
    },
    Proc {
        target: PathBuf,
    },
    Sysfs {
        target: PathBuf,
    },
    Devpts {
        target: PathBuf,
    },
    RemountReadonly {
        target: PathBuf,
    },
    /// A host directory or file bound as it is; the [`MountOp::ReadonlyTree`]
    /// over it that follows makes it read-only, nosuid and nodev together
    /// with its neighbours, in one call instead of a remount per bind.
    TreeBind {
        source: PathBuf,
        target: PathBuf,
        is_dir: bool,
    },
    /// `target` and every mount below it made read-only and nosuid (and
    /// nodev unless device nodes live there) at once: `mount_setattr(2)`
    /// with AT_RECURSIVE, or a remount of each on kernels before 5.12.
    ReadonlyTree {
        target: PathBuf,
        nodev: bool,
    },
    /// A host device node, bound so that its metadata cannot change (chmod,
    /// chown, utimes get EROFS) once the [`MountOp::ReadonlyTree`] over
    /// /dev that follows makes it read-only, while reading and writing the
    /// device still work: that tree keeps device access (no nodev).
    Device {
        path: PathBuf,
    },
    /// An already mounted path bound over itself read-only.
    ReadonlySelf {
        target: PathBuf,
    },
    /// A path hidden under an empty read-only file or tmpfs.
    Mask {
        target: PathBuf,
        is_dir: bool,
    },
}

/// What the mount plan needs to know of one host path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostEntry {
    Dir,
    File {
        len: u64,
    },
    Symlink {
        points_to: PathBuf,
        /// What the link resolves to: `Some(true)` a directory, `None`
        /// nothing (dangling).
        resolves_to_dir: Option<bool>,
    },
    /// A device, socket or fifo.
    Other,
}

impl HostEntry {
    /// Whether the path exists once symlinks are followed.
    fn resolves(&self) -> bool {
        !matches!(
            self,
            HostEntry::Symlink {
                resolves_to_dir: None,
                ..
            }
        )
    }

    /// Whether the path is a directory once symlinks are followed.
    fn resolves_to_dir(&self) -> bool {
        matches!(
            self,
            HostEntry::Dir
                | HostEntry::Symlink {
                    resolves_to_dir: Some(true),
                    ..
                }
        )
    }
}

/// The host paths a mount plan looks at, keyed by their absolute path on
/// the host; a path absent from the map does not exist. Read once by
/// [`HostFiles::probe`], so planning itself ([`plan_from`]) reads nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFiles(pub std::collections::BTreeMap<PathBuf, HostEntry>);

impl HostFiles {
    /// Looks up, below `host_root` (`/` in production; a fixture directory
    /// in tests), every host path the plan of `spec` asks about.
    pub fn probe(spec: &SandboxSpec, host_root: &Path) -> HostFiles {
        let Rootfs::Host(profile) = &spec.rootfs;
        let etc = profile.etc.iter().map(|n| Path::new("/etc").join(n));
        let fixed = PROC_READONLY.iter().chain(MASKED).chain(&[SHELL]);
        let paths = (profile.system.iter().cloned())
            .chain(etc)
            .chain(fixed.map(PathBuf::from))
            .chain(spec.binds.iter().map(|b| b.source.clone()));
        let entries = paths
            .filter_map(|p| {
                let entry = host_entry(&host_root.join(p.strip_prefix("/").unwrap_or(&p)))?;
                Some((p, entry))
            })
            .collect();
        HostFiles(entries)
    }

    fn get(&self, path: &Path) -> Option<&HostEntry> {
        self.0.get(path)
    }
}

/// The shell of the sandbox's user, when the host has it; `/bin/sh` if not.
const SHELL: &str = "/bin/bash";

/// One host path as the plan sees it; `None` when it does not exist.
fn host_entry(path: &Path) -> Option<HostEntry> {
    let meta = fs::symlink_metadata(path).ok()?;
    let kind = meta.file_type();
    Some(if kind.is_symlink() {
        HostEntry::Symlink {
            points_to: fs::read_link(path).ok()?,
            resolves_to_dir: fs::metadata(path).ok().map(|m| m.is_dir()),
        }
    } else if kind.is_dir() {
        HostEntry::Dir
    } else if kind.is_file() {
        HostEntry::File { len: meta.len() }
    } else {
        HostEntry::Other
    })
}

/// Builds the mount plan for `spec`, inspecting the host below `host_root`
/// (see [`HostFiles::probe`]).
pub fn plan(spec: &SandboxSpec, host_root: &Path) -> Vec<MountOp> {
    plan_from(spec, &HostFiles::probe(spec, host_root))
}

/// Builds the mount plan for `spec` from what the host has (`files`), in
/// pure code: which system paths exist and which are symlinks.
pub fn plan_from(spec: &SandboxSpec, files: &HostFiles) -> Vec<MountOp> {
    let Rootfs::Host(profile) = &spec.rootfs;
    let mut ops = vec![MountOp::Tmpfs {
        target: "/".into(),
        mode: 0o755,
        size_bytes: 1 << 20,
        noexec: false,
    }];

    for dir in &profile.system {
        ops.extend(mirror(files.get(dir), dir, true));
    }

    ops.push(MountOp::Tmpfs {
        target: "/etc".into(),
        mode: 0o755,
        size_bytes: 1 << 20,
        noexec: true,
    });
    for name in &profile.etc {
        let path = Path::new("/etc").join(name);
        ops.extend(etc_entry(files.get(&path), &path));
    }
    let shell = if files.get(Path::new(SHELL)).is_some_and(HostEntry::resolves) {
        SHELL
    } else {
        "/bin/sh"
    };
    for (name, contents) in synthesized_etc(spec, shell) {
        ops.push(MountOp::WriteFile {
            target: Path::new("/etc").join(name),
            contents,
        });
    }
    // One call makes /etc and every bind in it read-only.
    ops.push(MountOp::ReadonlyTree {
        target: "/etc".into(),
        nodev: true,
    });

    ops.push(MountOp::Proc {
        target: "/proc".into(),
    });
    ops.push(MountOp::Sysfs {
        target: "/sys".into(),
    });

    ops.push(MountOp::Tmpfs {
        target: "/dev".into(),
        mode: 0o755,
        size_bytes: 64 << 10,
        noexec: true,
    });
    for dev in DEVICES {
        ops.push(MountOp::Device {
            path: Path::new("/dev").join(dev),
        });
    }
    // The mount points of /dev's writable mounts, made before /dev turns
    // read-only.
    for (dir, mode) in [("pts", 0o755), ("shm", 0o1777)] {
        ops.push(MountOp::Mkdir {
            target: Path::new("/dev").join(dir),
            mode,
        });
    }
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        ops.push(MountOp::Symlink {
            points_to: to.into(),
            target: Path::new("/dev").join(link),
        });
    }
    // /dev and its device binds read-only in one call, keeping device
    // access; its own tmpfs is nodev. Then the writable mounts on top.
    ops.push(MountOp::ReadonlyTree {
        target: "/dev".into(),
        nodev: false,
    });
    ops.push(MountOp::Devpts {
        target: "/dev/pts".into(),
    });
    ops.push(MountOp::Tmpfs {
        target: "/dev/shm".into(),
        mode: 0o1777,
        size_bytes: 64 << 20,
        noexec: true,
    });
    ops.extend(kernel_knobs(files));

    ops.push(MountOp::Tmpfs {
        target: "/tmp".into(),
        mode: 0o1777,
        size_bytes: spec.tmp_size_mib << 20,
        noexec: false,
    });

    ops.push(MountOp::Tmpfs {
        target: "/workspace".into(),
        mode: 0o755,
        size_bytes: 64 << 10,
        noexec: true,
    });
    ops.push(MountOp::Bind {
        source: spec.workspace.clone(),
        target: spec.home(),
        readonly: false,
        is_dir: true,
        nofollow: true,
    });
    ops.push(MountOp::RemountReadonly {
        target: "/workspace".into(),
    });

    for b in &spec.binds {
        ops.push(MountOp::Bind {
            source: b.source.clone(),
            target: b.target.clone(),
            readonly: b.readonly,
            is_dir: files.get(&b.source).is_some_and(HostEntry::resolves_to_dir),
            nofollow: false,
        });
    }

    ops.push(MountOp::RemountReadonly { target: "/".into() });
    ops
}

/// /proc and /sys paths made read-only or masked, those the running kernel
/// has (asked of the host's /proc and /sys: same kernel). After /dev,
/// whose null the masks are bound from.
fn kernel_knobs(files: &HostFiles) -> Vec<MountOp> {
    let resolved = |p: &str| files.get(Path::new(p)).filter(|e| e.resolves());
    let readonly = PROC_READONLY
        .iter()
        .filter(|p| resolved(p).is_some())
        .map(|p| MountOp::ReadonlySelf { target: p.into() });
    let masked = MASKED.iter().filter_map(|p| {
        Some(MountOp::Mask {
            target: p.into(),
            is_dir: resolved(p)?.resolves_to_dir(),
        })
    });
    readonly.chain(masked).collect()
}

/// Adds a synthesized file to the sandbox's /etc (before /etc turns
/// read-only).
pub fn add_etc_file(ops: &mut Vec<MountOp>, name: &str, contents: String) {
    let at = ops
        .iter()
        .position(
            |o| matches!(o, MountOp::ReadonlyTree { target, .. } if target == Path::new("/etc")),
        )
        .unwrap_or(ops.len());
    ops.insert(
        at,
        MountOp::WriteFile {
            target: Path::new("/etc").join(name),
            contents,
        },
    );
}

/// Like [`add_etc_file`], dropping whatever else would put `name` in /etc
/// (the profile's bind of the host's file).
pub fn replace_etc_file(ops: &mut Vec<MountOp>, name: &str, contents: String) {
    let target = Path::new("/etc").join(name);
    ops.retain(|o| match o {
        MountOp::Bind { target: t, .. }
        | MountOp::TreeBind { target: t, .. }
        | MountOp::WriteFile { target: t, .. }
        | MountOp::CopyFile { target: t, .. } => *t != target,
        _ => true,
    });
    add_etc_file(ops, name, contents);
}

/// Binds a host file read-only into the sandbox (before `/` turns
/// read-only, so the mount point can still be made).
pub fn add_readonly_file(ops: &mut Vec<MountOp>, source: PathBuf, target: PathBuf) {
    let at = ops
        .iter()
        .rposition(|o| matches!(o, MountOp::RemountReadonly { target } if target == Path::new("/")))
        .unwrap_or(ops.len());
    ops.insert(
        at,
        MountOp::Bind {
            source,
            target,
            readonly: true,
            is_dir: false,
            nofollow: false,
        },
    );
}

/// Adds a symlink to the sandbox's root (before `/` turns read-only).
pub fn add_symlink(ops: &mut Vec<MountOp>, points_to: PathBuf, target: PathBuf) {
    let at = ops
        .iter()
        .rposition(|o| matches!(o, MountOp::RemountReadonly { target } if target == Path::new("/")))
        .unwrap_or(ops.len());
    ops.insert(at, MountOp::Symlink { points_to, target });
}

/// The host entry at `host_path` reproduced at `target`: a read-only bind
/// for a directory or file, the same symlink for a symlink, nothing if
/// missing.
fn mirror(entry: Option<&HostEntry>, target: &Path, only_dirs: bool) -> Option<MountOp> {
    let entry = entry?;
    if let HostEntry::Symlink { points_to, .. } = entry {
        return Some(MountOp::Symlink {
            points_to: points_to.clone(),
            target: target.to_path_buf(),
        });
    }
    let is_dir = *entry == HostEntry::Dir;
    if only_dirs && !is_dir {
        return None;
    }
    Some(MountOp::Bind {
        source: target.to_path_buf(),
        target: target.to_path_buf(),
        readonly: true,
        is_dir,
        nofollow: false,
    })
}

/// Largest /etc file copied rather than bound.
const COPY_LIMIT: u64 = 256 << 10;

/// An /etc entry: small regular files are copied, directories and larger
/// files bound (read-only with /etc, by its [`MountOp::ReadonlyTree`]),
/// symlinks reproduced.
fn etc_entry(entry: Option<&HostEntry>, target: &Path) -> Option<MountOp> {
    match entry? {
        HostEntry::File { len } if *len <= COPY_LIMIT => Some(MountOp::CopyFile {
            source: target.to_path_buf(),
            target: target.to_path_buf(),
        }),
        HostEntry::Symlink { .. } => mirror(entry, target, false),
        other => Some(MountOp::TreeBind {
            source: target.to_path_buf(),
            target: target.to_path_buf(),
            is_dir: *other == HostEntry::Dir,
        }),
    }
}

/// /etc/passwd, group, hostname and hosts for the sandbox: `whoami` answers
/// the tenant's name and the home is the workspace.
fn synthesized_etc(spec: &SandboxSpec, shell: &str) -> Vec<(&'static str, String)> {
    let user = &spec.tenant.slug;
    let home = spec.home();
    let (uid, gid) = (spec.uid, spec.gid);
    vec![
        (
            "passwd",
            format!(
                "root:x:0:0:root:/root:/usr/sbin/nologin\n\
                 {user}:x:{uid}:{gid}:{user}:{home}:{shell}\n\
                 nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
                home = home.display()
            ),
        ),
        (
            "group",
            format!("root:x:0:\ntty:x:5:\n{user}:x:{gid}:\nnogroup:x:65534:\n"),
        ),
        ("hostname", format!("{}\n", spec.hostname)),
        (
            "hosts",
            format!(
                "127.0.0.1\tlocalhost\n127.0.1.1\t{h}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
                h = spec.hostname
            ),
        ),
    ]
}

fn fail(step: String) -> impl FnOnce(Errno) -> SetupError {
    move |e| SetupError::errno(step, e)
}

/// The bind sources of a plan, opened (O_PATH) by [`open_sources_in_child`].
pub struct BindSources(HashMap<PathBuf, OwnedFd>);

/// Opens every bind source of `ops` (O_PATH, O_NOFOLLOW where asked). Runs
/// in the sandbox's PID 1 while it still has the shim's own host uid, before
/// it becomes the sandbox user: as root the workspace root (and the state
/// directory above the default one) are 0700 and root's, which the
/// tenant's host uid cannot pass (issue 10: other local users must not
/// reach them either). The fds are bound later through /proc/self/fd/N,
/// so no path is looked up again.
pub fn open_sources_in_child(ops: &[MountOp]) -> Result<BindSources, SetupError> {
    let mut sources = HashMap::new();
    for op in ops {
        let (source, nofollow) = match op {
            MountOp::Bind {
                source, nofollow, ..
            } => (source, *nofollow),
            MountOp::TreeBind { source, .. } => (source, false),
            MountOp::Device { path } => (path, true),
            _ => continue,
        };
        {
            let mut flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
            if nofollow {
                flags |= OFlag::O_NOFOLLOW;
            }
            let fd = open(source.as_path(), flags, Mode::empty()).map_err(|e| {
                let err = SetupError::errno(format!("open {}", source.display()), e);
                match e {
                    Errno::ENOENT => err.with_hint("the bind source does not exist on the host"),
                    Errno::ELOOP => {
                        err.with_hint("the path is a symlink; warren never follows symlinks there")
                    }
                    Errno::EACCES => err.with_hint(
                        "warren's own uid cannot reach this path: every directory above it needs \
                         search permission for that uid",
                    ),
                    _ => err,
                }
            })?;
            sources.insert(source.clone(), fd);
        }
    }
    Ok(BindSources(sources))
}

/// Executes `ops` inside a fresh mount namespace and pivots into the result.
/// Runs in the sandbox's PID 1 after the id maps were written; `sources`
/// come from [`open_sources_in_child`], opened before the staging tmpfs
/// could hide them.
pub fn apply_in_child(ops: &[MountOp], sources: &BindSources) -> Result<(), SetupError> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(fail("make mounts private".into()))?;

    let root = Path::new(STAGING);
    for op in ops {
        apply_one(root, op, &sources.0)?;
    }

    chdir(root).map_err(fail("chdir to new root".into()))?;
    pivot_root(".", ".").map_err(fail("pivot_root".into()))?;
    // The old root is now stacked on "."; detaching it leaves only ours.
    umount2(".", MntFlags::MNT_DETACH).map_err(fail("detach old root".into()))?;
    chdir("/").map_err(fail("chdir /".into()))?;
    Ok(())
}

fn inside(root: &Path, target: &Path) -> PathBuf {
    root.join(target.strip_prefix("/").unwrap_or(target))
}

fn apply_one(
    root: &Path,
    op: &MountOp,
    sources: &HashMap<PathBuf, OwnedFd>,
) -> Result<(), SetupError> {
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    match op {
        MountOp::Tmpfs {
            target,
            mode,
            size_bytes,
            noexec,
        } => {
            let at = inside(root, target);
            make_dir(&at, 0o755)?;
            let mut flags = nosuid_nodev;
            if *noexec {
                flags |= MsFlags::MS_NOEXEC;
            }
            let data = format!("mode={mode:o},size={size_bytes}");
            mount(
                Some("tmpfs"),
                &at,
                Some("tmpfs"),
                flags,
                Some(data.as_str()),
            )
            .map_err(fail(format!("mount tmpfs {}", target.display())))
        }
        MountOp::Bind {
            source,
            target,
            readonly,
            is_dir,
            ..
        } => {
            let at = inside(root, target);
            bind_recursive(&sources[source], (source, target), &at, *is_dir)?;
            if *readonly {
                remount_readonly(&at, target)?;
            }
            Ok(())
        }
        MountOp::TreeBind {
            source,
            target,
            is_dir,
        } => bind_recursive(
            &sources[source],
            (source, target),
            &inside(root, target),
            *is_dir,
        ),
        MountOp::ReadonlyTree { target, nodev } => {
            readonly_tree(&inside(root, target), target, *nodev)
        }
        MountOp::Symlink { points_to, target } => {
            let at = inside(root, target);
            ensure_parent(&at)?;
            symlink(points_to, &at).map_err(|e| io_fail(format!("symlink {}", target.display()), e))
        }
        MountOp::Mkdir { target, mode } => make_dir(&inside(root, target), *mode),
        MountOp::WriteFile { target, contents } => {
            let at = inside(root, target);
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&at)
                .and_then(|mut f| std::io::Write::write_all(&mut f, contents.as_bytes()))
                .map_err(|e| io_fail(format!("write {}", target.display()), e))
        }
        MountOp::CopyFile { source, target } => copy_small_file(source, &inside(root, target))
            .map_err(|e| io_fail(format!("copy {}", source.display()), e)),
        MountOp::Proc { target } => {
            let at = inside(root, target);
            make_dir(&at, 0o555)?;
            mount(
                Some("proc"),
                &at,
                Some("proc"),
                nosuid_nodev | MsFlags::MS_NOEXEC,
                None::<&str>,
            )
            .map_err(|e| {
                SetupError::errno("mount /proc", e).with_hint(
                    "the kernel refuses a new procfs when /proc is partly hidden (e.g. inside \
                     another container); run warren where /proc is fully visible",
                )
            })
        }
        MountOp::Sysfs { target } => {
            let at = inside(root, target);
            make_dir(&at, 0o555)?;
            mount(
                Some("sysfs"),
                &at,
                Some("sysfs"),
                nosuid_nodev | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(fail("mount /sys".into()))
        }
        MountOp::Devpts { target } => {
            let at = inside(root, target);
            make_dir(&at, 0o755)?;
            mount(
                Some("devpts"),
                &at,
                Some("devpts"),
                MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
                Some("newinstance,ptmxmode=0666,mode=620"),
            )
            .map_err(fail("mount /dev/pts".into()))
        }
        MountOp::RemountReadonly { target } => remount_readonly(&inside(root, target), target),
        MountOp::Device { path } => {
            let at = inside(root, path);
            make_file(&at)?;
            // Read-only with /dev's tree, which keeps device access.
            bind_fd(&sources[path.as_path()], &at, path)
        }
        MountOp::ReadonlySelf { target } => {
            let at = inside(root, target);
            mount(
                Some(&at),
                &at,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(fail(format!("bind {} over itself", target.display())))?;
            remount_readonly(&at, target)
        }
        MountOp::Mask { target, is_dir } => mask(root, target, *is_dir),
    }
}

/// Binds the source opened as `fd`, with the mounts below it, at `at`
/// (made first, a directory or a file); `shown`: the host's and the
/// sandbox's names.
fn bind_recursive(
    fd: &OwnedFd,
    (source, target): (&Path, &Path),
    at: &Path,
    is_dir: bool,
) -> Result<(), SetupError> {
    if is_dir {
        make_dir(at, 0o755)?;
    } else {
        make_file(at)?;
    }
    let via = format!("/proc/self/fd/{}", fd.as_raw_fd());
    mount(
        Some(via.as_str()),
        at,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(fail(format!(
        "bind {} to {}",
        source.display(),
        target.display()
    )))
}

/// A small host file copied with one read and one write (its permission
/// bits kept): `fs::copy` would try copy_file_range, which fails across
/// filesystems, then sendfile, then fchmod, for each of /etc's files.
fn copy_small_file(source: &Path, at: &Path) -> std::io::Result<()> {
    use std::io::{Read, Write};
    use std::os::unix::fs::PermissionsExt;
    let mut from = fs::File::open(source)?;
    let meta = from.metadata()?;
    let mode = meta.permissions().mode() & 0o777;
    let mut contents = Vec::with_capacity(meta.len().min(COPY_LIMIT) as usize + 1);
    from.read_to_end(&mut contents)?;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(at)?
        .write_all(&contents)
}

/// Makes `at` and every mount below it read-only and nosuid (`nodev`: and
/// nodev) in one `mount_setattr`; on a kernel without it (before 5.12),
/// remounts each of those mounts, as [`remount_readonly`] does.
fn readonly_tree(at: &Path, shown: &Path, nodev: bool) -> Result<(), SetupError> {
    match crate::sys::make_tree_readonly(at, nodev) {
        Err(Errno::ENOSYS) => {}
        other => {
            return other.map_err(fail(format!("make {} read-only", shown.display())));
        }
    }
    let extra = if nodev {
        MsFlags::MS_NODEV
    } else {
        MsFlags::empty()
    };
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| io_fail("read /proc/self/mountinfo".into(), e))?;
    for point in mounts_under(&mountinfo, at) {
        remount_flags(&point, shown, extra)?;
    }
    Ok(())
}

/// The mount points at or below `at` in a mountinfo text, in mount order.
fn mounts_under(mountinfo: &str, at: &Path) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(at))
        .collect()
}

/// Binds the source opened as `fd` at `at` (`shown`: the sandbox's name).
fn bind_fd(fd: &OwnedFd, at: &Path, shown: &Path) -> Result<(), SetupError> {
    let via = format!("/proc/self/fd/{}", fd.as_raw_fd());
    mount(
        Some(via.as_str()),
        at,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(fail(format!("bind host {}", shown.display())))
}

/// Hides `target`: an empty read-only tmpfs over a directory, the
/// sandbox's /dev/null bound read-only over a file (reads are empty, as
/// with runc).
fn mask(root: &Path, target: &Path, is_dir: bool) -> Result<(), SetupError> {
    let at = inside(root, target);
    let step = || format!("mask {}", target.display());
    if is_dir {
        mount(
            Some("tmpfs"),
            &at,
            Some("tmpfs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("size=4k,mode=555"),
        )
        .map_err(fail(step()))
    } else {
        mount(
            Some(&inside(root, Path::new("/dev/null"))),
            &at,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(fail(step()))?;
        remount_flags(&at, target, MsFlags::empty())
    }
}

/// Makes a mount read-only (plus nosuid, nodev) while keeping the flags the
/// kernel locked on it: in a user namespace, a remount that tries to clear a
/// locked flag such as noexec fails with EPERM.
fn remount_readonly(at: &Path, shown: &Path) -> Result<(), SetupError> {
    remount_flags(at, shown, MsFlags::MS_NODEV)
}

/// [`remount_readonly`] with `extra` flags besides read-only and nosuid.
fn remount_flags(at: &Path, shown: &Path, extra: MsFlags) -> Result<(), SetupError> {
    let step = format!("remount {} read-only", shown.display());
    let current = statvfs(at).map_err(fail(step.clone()))?.flags();
    let mut flags =
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | extra;
    for (st, ms) in [
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if current.contains(st) {
            flags |= ms;
        }
    }
    mount(None::<&str>, at, None::<&str>, flags, None::<&str>).map_err(fail(step))
}

fn io_fail(step: String, e: std::io::Error) -> SetupError {
    match e.raw_os_error() {
        Some(n) => SetupError::errno(step, Errno::from_raw(n)),
        None => SetupError::new(step, e.to_string()),
    }
}

fn ensure_parent(at: &Path) -> Result<(), SetupError> {
    match at.parent() {
        Some(p) => make_dir(p, 0o755),
        None => Ok(()),
    }
}

fn make_dir(at: &Path, mode: u32) -> Result<(), SetupError> {
    if at.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(at)
        .map_err(|e| io_fail(format!("create mount point {}", at.display()), e))
}

fn make_file(at: &Path) -> Result<(), SetupError> {
    ensure_parent(at)?;
    if at.exists() {
        return Ok(());
    }
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(at)
        .map(drop)
        .map_err(|e| io_fail(format!("create mount point {}", at.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tests::sample;
    use crate::spec::{Bind, HostProfile};

    fn fixture() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        fs::create_dir_all(p.join("usr/bin")).unwrap();
        fs::create_dir_all(p.join("usr/lib")).unwrap();
        symlink("usr/bin", p.join("bin")).unwrap();
        symlink("usr/lib", p.join("lib")).unwrap();
        fs::create_dir_all(p.join("etc/ssl")).unwrap();
        fs::write(p.join("etc/ld.so.cache"), "").unwrap();
        fs::write(p.join("etc/shadow"), "secret").unwrap();
        symlink("/usr/share/zoneinfo/UTC", p.join("etc/localtime")).unwrap();
        fs::write(p.join("usr/bin/bash"), "").unwrap();
        d
    }

    #[test]
    fn system_dirs_are_bound_readonly_and_symlinks_mirrored() {
        let host = fixture();
        let ops = plan(&sample(), host.path());
        assert!(ops.contains(&MountOp::Bind {
            source: "/usr".into(),
            target: "/usr".into(),
            readonly: true,
            is_dir: true,
            nofollow: false
        }));
        assert!(ops.contains(&MountOp::Symlink {
            points_to: "usr/bin".into(),
            target: "/bin".into()
        }));
        // Missing on the host: not mounted at all.
        assert!(!ops
            .iter()
            .any(|o| matches!(o, MountOp::Bind { target, .. } if target == Path::new("/lib32"))));
    }

    #[test]
    fn etc_is_curated_and_synthesized() {
        let host = fixture();
        let ops = plan(&sample(), host.path());
        let etc_binds: Vec<_> = ops
            .iter()
            .filter_map(|o| match o {
                MountOp::Bind { target, .. } | MountOp::TreeBind { target, .. }
                    if target.starts_with("/etc") =>
                {
                    Some(target.clone())
                }
                _ => None,
            })
            .collect();
        assert_eq!(etc_binds, vec![PathBuf::from("/etc/ssl")]);
        assert!(ops.contains(&MountOp::CopyFile {
            source: "/etc/ld.so.cache".into(),
            target: "/etc/ld.so.cache".into()
        }));
        let passwd = ops
            .iter()
            .find_map(|o| match o {
                MountOp::WriteFile { target, contents } if target == Path::new("/etc/passwd") => {
                    Some(contents)
                }
                _ => None,
            })
            .unwrap();
        assert!(
            passwd.contains("alice:x:1000:1000:alice:/workspace/alice:/bin/bash\n"),
            "{passwd}"
        );
        assert!(!ops.iter().any(|o| format!("{o:?}").contains("shadow")));
    }

    #[test]
    fn only_the_tenants_own_home_is_bound_and_root_ends_readonly() {
        let host = fixture();
        let mut spec = sample();
        spec.binds.push(Bind {
            source: host.path().join("usr"),
            target: "/opt/x".into(),
            readonly: true,
        });
        let ops = plan(&spec, host.path());
        let ws: Vec<_> = ops
            .iter()
            .filter(
                |o| matches!(o, MountOp::Bind { target, .. } if target.starts_with("/workspace")),
            )
            .collect();
        assert_eq!(
            ws,
            vec![&MountOp::Bind {
                source: spec.workspace.clone(),
                target: "/workspace/alice".into(),
                readonly: false,
                is_dir: true,
                nofollow: true
            }]
        );
        assert_eq!(
            ops.first(),
            Some(&MountOp::Tmpfs {
                target: "/".into(),
                mode: 0o755,
                size_bytes: 1 << 20,
                noexec: false
            })
        );
        assert_eq!(
            ops.last(),
            Some(&MountOp::RemountReadonly { target: "/".into() })
        );
        let tmp = ops
            .iter()
            .find(|o| matches!(o, MountOp::Tmpfs { target, .. } if target == Path::new("/tmp")))
            .unwrap();
        assert_eq!(
            tmp,
            &MountOp::Tmpfs {
                target: "/tmp".into(),
                mode: 0o1777,
                size_bytes: 256 << 20,
                noexec: false
            }
        );
    }

    #[test]
    fn extra_files_land_before_the_readonly_remounts() {
        let host = fixture();
        let mut ops = plan(&sample(), host.path());
        add_etc_file(&mut ops, "warren-info.json", "{}".into());
        add_readonly_file(&mut ops, "/bin/true".into(), "/opt/warren/bin/x".into());
        let pos = |want: &dyn Fn(&MountOp) -> bool| ops.iter().position(want).unwrap();
        let info = pos(
            &|o| matches!(o, MountOp::WriteFile { target, .. } if target == Path::new("/etc/warren-info.json")),
        );
        let etc_ro = pos(
            &|o| matches!(o, MountOp::ReadonlyTree { target, .. } if target == Path::new("/etc")),
        );
        let bin = pos(
            &|o| matches!(o, MountOp::Bind { target, .. } if target == Path::new("/opt/warren/bin/x")),
        );
        assert!(info < etc_ro);
        assert_eq!(bin, ops.len() - 2, "just before / turns read-only");
        add_symlink(&mut ops, "x".into(), "/opt/warren/bin/y".into());
        assert_eq!(
            ops[ops.len() - 2],
            MountOp::Symlink {
                points_to: "x".into(),
                target: "/opt/warren/bin/y".into()
            },
            "after the bind it points to, before / turns read-only"
        );
        assert_eq!(ops[ops.len() - 3], ops[bin]);
    }

    #[test]
    fn devices_are_bound_readonly_and_kernel_knobs_protected() {
        let host = fixture();
        fs::create_dir_all(host.path().join("proc/sys")).unwrap();
        fs::create_dir_all(host.path().join("proc/acpi")).unwrap();
        fs::write(host.path().join("proc/kcore"), "").unwrap();
        let ops = plan(&sample(), host.path());
        let pos = |op: MountOp| ops.iter().position(|o| *o == op).unwrap();
        let null = pos(MountOp::Device {
            path: "/dev/null".into(),
        });
        let sys = pos(MountOp::ReadonlySelf {
            target: "/proc/sys".into(),
        });
        let kcore = pos(MountOp::Mask {
            target: "/proc/kcore".into(),
            is_dir: false,
        });
        pos(MountOp::Mask {
            target: "/proc/acpi".into(),
            is_dir: true,
        });
        assert!(
            null < kcore,
            "file masks are bound from the sandbox's /dev/null"
        );
        assert!(
            pos(MountOp::Proc {
                target: "/proc".into()
            }) < sys
        );
        // Absent on this (fixture) kernel: nothing to protect.
        assert!(!format!("{ops:?}").contains("sysrq-trigger"));
        assert!(!ops
            .iter()
            .any(|o| matches!(o, MountOp::Bind { target, .. } if target.starts_with("/dev/"))));
    }

    /// Binds left as bound (the /etc entries, the devices) are made
    /// read-only by a tree over them that comes later; the mounts that stay
    /// writable come after that tree, their mount points before it.
    #[test]
    fn tree_binds_and_devices_turn_readonly_with_their_tree() {
        let host = fixture();
        let ops = plan(&sample(), host.path());
        let tree = |at: &str| {
            ops.iter()
                .position(|o| matches!(o, MountOp::ReadonlyTree { target, .. } if target == Path::new(at)))
                .unwrap()
        };
        let (etc, dev) = (tree("/etc"), tree("/dev"));
        assert_eq!(
            ops[etc],
            MountOp::ReadonlyTree {
                target: "/etc".into(),
                nodev: true
            }
        );
        assert_eq!(
            ops[dev],
            MountOp::ReadonlyTree {
                target: "/dev".into(),
                nodev: false
            },
            "device nodes stay usable"
        );
        let mut tree_binds = 0;
        for (i, op) in ops.iter().enumerate() {
            match op {
                MountOp::TreeBind { target, .. } => {
                    tree_binds += 1;
                    assert!(target.starts_with("/etc") && i < etc, "{op:?}");
                }
                MountOp::Device { path } => assert!(path.starts_with("/dev") && i < dev),
                MountOp::Mkdir { target, .. } if target.starts_with("/dev") => assert!(i < dev),
                MountOp::Devpts { .. } => assert!(i > dev),
                MountOp::Tmpfs { target, .. } if target == Path::new("/dev/shm") => {
                    assert!(i > dev)
                }
                _ => {}
            }
        }
        assert_eq!(tree_binds, 1, "the fixture's /etc/ssl");
        assert!(!ops.iter().any(|o| matches!(o, MountOp::RemountReadonly { target } if target == Path::new("/etc") || target == Path::new("/dev"))));
    }

    #[test]
    fn mounts_under_a_path_come_from_mountinfo_in_order() {
        let mountinfo = "\
22 1 0:21 / / rw - tmpfs tmpfs rw
30 22 0:30 / /tmp/dev rw - tmpfs tmpfs rw
31 30 0:5 /null /tmp/dev/null rw - devtmpfs udev rw
32 22 0:31 / /tmp/devices rw - tmpfs tmpfs rw
33 30 0:32 / /tmp/dev/a\\040b rw - tmpfs tmpfs rw
";
        assert_eq!(
            mounts_under(mountinfo, Path::new("/tmp/dev")),
            [
                PathBuf::from("/tmp/dev"),
                "/tmp/dev/null".into(),
                "/tmp/dev/a b".into()
            ]
        );
    }

    #[test]
    fn shell_falls_back_to_sh() {
        let host = fixture();
        fs::remove_file(host.path().join("usr/bin/bash")).unwrap();
        let mut spec = sample();
        spec.rootfs = Rootfs::Host(HostProfile {
            system: vec!["/usr".into()],
            etc: vec![],
        });
        let ops = plan(&spec, host.path());
        assert!(format!("{ops:?}").contains(":/workspace/alice:/bin/sh\\n"));
    }
}
