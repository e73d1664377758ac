//! A tenant's limit overrides. The disk limit applies at once where it
//! can: a home with a project quota gets new limits at once, a running
//! sandbox's image a new byte limit; a lower one is refused when the home
//! does not fit (docs/disk.md).

use warren_runtime::disk::{self, DiskError};
use warren_runtime::tenant::Tenant;

use crate::state::LimitOverrides;

use super::{ManageError, Manager, UserView};

impl Manager {
    pub fn set_limits(
        &self,
        actor: &str,
        id: &str,
        limits: &LimitOverrides,
    ) -> Result<UserView, ManageError> {
        let before = self.record(id)?;
        limits.validate().map_err(ManageError::BadRequest)?;
        let (old, new) = (
            before.limits.apply_disk(self.disk),
            limits.apply_disk(self.disk),
        );
        let tenant = Tenant::parse(id).map_err(|e| ManageError::BadRequest(e.to_string()))?;
        let images = disk::images_dir(&self.settings.workspace_root);
        let home = tenant.workspace_in(&self.settings.workspace_root);
        let lower = |a: Option<u64>, b: Option<u64>| b.is_some_and(|b| a.is_none_or(|a| b < a));
        if lower(old.bytes, new.bytes) || lower(old.inodes, new.inodes) {
            disk::check_lower(&images, &home, &tenant.slug, new).map_err(disk_error)?;
        }
        if !self.state().set_limits(id, limits)? {
            return Err(ManageError::NoSuchUser(id.to_string()));
        }
        let mut detail = serde_json::to_value(limits).unwrap_or_default();
        // A home with a project quota gets both limits now, running or
        // not (the kernel checks them at every allocation).
        let by_quota = new != old && disk::quota::set_live(&home, new).map_err(disk_error)?;
        if by_quota {
            detail["disk_applied"] = "now".into();
        } else if new.bytes != old.bytes {
            // A running sandbox's home gets it now (within its image's
            // headroom); else its next start.
            let live =
                disk::set_limit_live(&images, &tenant.slug, new.bytes).map_err(disk_error)?;
            detail["disk_applied"] = (if live { "now" } else { "next start" }).into();
        }
        self.audit(actor, "limits", Some(id), "ok", detail);
        self.show(id)
    }

    /// Sets the tenant's terminal command line (None: the server's
    /// `--shell`), used from their next sandbox on.
    pub fn set_shell(
        &self,
        actor: &str,
        id: &str,
        shell: Option<&str>,
    ) -> Result<UserView, ManageError> {
        self.record(id)?;
        if let Some(line) = shell {
            crate::sandboxes::parse_shell(line).map_err(ManageError::BadRequest)?;
        }
        if !self.state().set_shell(id, shell)? {
            return Err(ManageError::NoSuchUser(id.to_string()));
        }
        self.audit(
            actor,
            "shell",
            Some(id),
            "ok",
            serde_json::json!({ "shell": shell }),
        );
        self.show(id)
    }
}

/// A lower limit the home does not fit in is the caller's to fix.
fn disk_error(e: DiskError) -> ManageError {
    match e {
        DiskError::WouldNotFit { .. } => ManageError::Conflict(e.to_string()),
        e => ManageError::Internal(e.to_string()),
    }
}
