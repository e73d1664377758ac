//! The home's disk limit, from the shim's side: before the sandbox binds
//! the home, its image is mounted over it in a mount namespace of the
//! shim's own (`warren_runtime::disk::attach`), which the sandbox starts
//! from; when the sandbox has ended it is unmounted, and were the shim
//! killed the namespace would take the mount with it. A limit this host cannot enforce is recorded as missing,
//! with its reason, or refused with `require_limits`.

use warren_runtime::disk::{self, Attached, DiskBackend, DiskInForce};
use warren_runtime::record::LimitsInForce;
use warren_runtime::report::SetupError;
use warren_runtime::spec::SandboxSpec;

/// What the home got: its image mounted (unmounted on drop, whatever path
/// the shim leaves by), or the reason it has none.
#[derive(Default)]
pub struct HomeDisk {
    attached: Option<Attached>,
    /// The project quota set on the home (nothing to undo: the limit
    /// stays with the home's project id).
    quota: Option<DiskInForce>,
    missing: Option<String>,
    note: Option<String>,
}

impl HomeDisk {
    /// The limits in force, for the sandbox's record.
    pub fn in_force(&self) -> Option<DiskInForce> {
        self.attached
            .as_ref()
            .map(|a| a.in_force.clone())
            .or_else(|| self.quota.clone())
    }

    /// `limits` with the disk limit added to the missing ones (and its
    /// reason), or the note of a limit applied in part.
    pub fn record_in(&self, mut limits: LimitsInForce) -> LimitsInForce {
        if let Some(why) = &self.missing {
            limits.missing.push("disk".into());
            limits.reasons.insert("disk".into(), why.clone());
        }
        limits.notes.extend(self.note.clone());
        limits
    }
}

impl Drop for HomeDisk {
    fn drop(&mut self) {
        if let Some(a) = self.attached.take() {
            if let Err(e) = disk::detach(a) {
                eprintln!("warren-shim: {e}");
            }
        }
    }
}

/// Mounts the home's image, made or resized first, when the spec asks for
/// a disk limit and this host can enforce it.
pub fn attach(spec: &SandboxSpec) -> Result<HomeDisk, SetupError> {
    let Some(d) = spec.disk.as_ref().filter(|d| !d.limits.is_none()) else {
        return Ok(HomeDisk::default());
    };
    let quota = match d.backend {
        DiskBackend::Auto | DiskBackend::Quota => {
            disk::quota::quota_backend_unavailable(&spec.workspace, "/proc".as_ref())
        }
        DiskBackend::Image => Some("--disk-backend image".into()),
    };
    if quota.is_none() {
        let id = disk::quota::project_id(d.project);
        let in_force = id
            .and_then(|id| disk::quota::attach(&spec.workspace, id, d.limits))
            .map_err(|e| {
                SetupError::new("set the home's project quota", e.to_string())
                    .with_hint("see docs/disk.md")
            })?;
        return Ok(HomeDisk {
            attached: None,
            quota: Some(in_force),
            missing: None,
            note: None,
        });
    }
    if let (DiskBackend::Quota, Some(why)) = (d.backend, &quota) {
        // Asked for by name: refused rather than run without it.
        return Err(
            SetupError::new("apply limits", format!("--disk-backend quota: {why}"))
                .with_hint("use --disk-backend auto, or see docs/disk.md"),
        );
    }
    let unavailable = match d.backend {
        // An image needs a size: an inode limit alone has none.
        _ if d.limits.bytes.is_none() => Some(
            "an inode limit needs a byte limit (the home's image has the size of the byte \
             limit): set --disk, or --disk-inodes none"
                .to_string(),
        ),
        _ => disk::image_backend_unavailable("/proc".as_ref()),
    };
    if let Some(why) = unavailable {
        if spec.require_limits {
            return Err(SetupError::new(
                "apply limits",
                format!("cannot apply the disk limit: {why}"),
            )
            .with_hint("run warren as root; see docs/disk.md"));
        }
        return Ok(HomeDisk {
            attached: None,
            quota: None,
            missing: Some(why),
            note: None,
        });
    }
    // Mounted where only this shim and its sandbox see it.
    disk::private_mount_namespace().map_err(|e| {
        SetupError::new("mount the home's disk image", e.to_string()).with_hint("see docs/disk.md")
    })?;
    let (attached, note) = disk::attach(d, &spec.tenant.slug, &spec.workspace).map_err(|e| {
        SetupError::new("mount the home's disk image", e.to_string()).with_hint("see docs/disk.md")
    })?;
    Ok(HomeDisk {
        attached: Some(attached),
        quota: None,
        missing: None,
        note,
    })
}
