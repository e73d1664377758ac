//! Tenants: create, list, show, delete (with their home).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use warren_runtime::disk;
use warren_runtime::idmap::IdRange;
use warren_runtime::tenant::Tenant;

use crate::backend::{ExecCommand, ExecStdio};
use crate::exec::{self, EndReason};
use crate::sandbox::{host_ids, provision, tenant_id_range};
use crate::state::TenantRecord;
use crate::user::UserId;

use super::{sandbox_state, ManageError, Manager, Runner, UserView};

/// What delete did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deleted {
    pub id: String,
    pub home_removed: bool,
    pub terminals_closed: usize,
}

impl Manager {
    pub(super) fn record(&self, id: &str) -> Result<TenantRecord, ManageError> {
        UserId::parse(id).map_err(|e| ManageError::BadRequest(format!("invalid user id: {e}")))?;
        self.state()
            .find(id)?
            .ok_or_else(|| ManageError::NoSuchUser(id.to_string()))
    }

    pub(super) fn view(&self, r: TenantRecord) -> UserView {
        self.view_in(r, tenant_id_range(self.isolation()))
    }

    /// The view, with the tenants' id range read once for a whole list.
    fn view_in(&self, r: TenantRecord, range: IdRange) -> UserView {
        let host_gid = host_ids(range, r.host_uid, self.settings.uid_base)
            .ok()
            .map(|m| m.host_gid);
        // The slug is already the home's name (runtime::tenant made it).
        let home_dir = self.settings.workspace_root.join(&r.slug);
        let (sandbox, terminals) = match &self.runner {
            Runner::Registry(reg) => match UserId::parse(&r.id) {
                Ok(u) => {
                    let s = reg.sessions_of(&u);
                    (
                        sandbox_state(s.sandbox.is_some(), s.busy),
                        s.terminals.len(),
                    )
                }
                Err(_) => ("stopped".into(), 0),
            },
            Runner::OneShot(_) => ("stopped".into(), 0),
        };
        UserView {
            id: r.id,
            slug: r.slug,
            host_uid: r.host_uid,
            host_gid,
            home_dir,
            created_at: r.created_at,
            last_seen: r.last_seen,
            limits: r.limits,
            shell: r.shell,
            sandbox,
            terminals,
        }
    }

    pub fn list(&self) -> Result<Vec<UserView>, ManageError> {
        let records = self.state().list()?;
        let range = tenant_id_range(self.isolation());
        Ok(records
            .into_iter()
            .map(|r| self.view_in(r, range))
            .collect())
    }

    pub fn show(&self, id: &str) -> Result<UserView, ManageError> {
        let r = self.record(id)?;
        Ok(self.view(r))
    }

    /// Creates the tenant (uid allocation, home) unless it exists; true
    /// when it was created now.
    pub fn get_or_create(&self, actor: &str, id: &str) -> Result<(UserView, bool), ManageError> {
        UserId::parse(id).map_err(|e| ManageError::BadRequest(format!("invalid user id: {e}")))?;
        let existed = self.state().find(id)?.is_some();
        let p = provision(&self.settings, id, self.isolation())?;
        if !existed {
            self.audit(
                actor,
                "user.create",
                Some(id),
                "ok",
                serde_json::json!({"host_uid": p.record.host_uid}),
            );
        }
        Ok((self.view(p.record), !existed))
    }

    /// Stops the user's sandbox, removes the tenant and, if asked, its
    /// home. The uid is never given to another id; a kept home's id gets
    /// it back when re-created (see `state`).
    pub async fn delete(
        &self,
        actor: &str,
        id: &str,
        remove_home: bool,
    ) -> Result<Deleted, ManageError> {
        let record = self.record(id)?;
        let lock = self.tenant_lock(id);
        let _one_at_a_time = lock.lock().await;
        let user = UserId::parse(id).map_err(|e| ManageError::BadRequest(e.to_string()))?;
        self.remove_services_of(id).await;
        let (terminals_closed, _start_lock) = match &self.runner {
            Runner::Registry(reg) => {
                let n = reg.sessions_of(&user).terminals.len();
                (n, Some(reg.stop_user(&user, Duration::from_secs(10)).await))
            }
            Runner::OneShot(_) => (0, None),
        };
        let tenant = Tenant::parse(id).map_err(|e| ManageError::BadRequest(e.to_string()))?;
        let mut home_removed = false;
        if remove_home {
            if let Err(e) = self.remove_home(&user, &tenant).await {
                self.audit(
                    actor,
                    "delete",
                    Some(id),
                    "failed",
                    serde_json::json!({"error": e.to_string()}),
                );
                return Err(e);
            }
            home_removed = true;
        }
        self.state().delete(id, !home_removed)?;
        self.audit(
            actor,
            "delete",
            Some(id),
            "ok",
            serde_json::json!({"home_removed": home_removed, "host_uid": record.host_uid, "terminals_closed": terminals_closed}),
        );
        Ok(Deleted {
            id: id.to_string(),
            home_removed,
            terminals_closed,
        })
    }

    /// Removes the home without following any symlink in it: moved aside
    /// first (so nothing starts in a half-removed home), then removed with
    /// `remove_dir_all`, which never follows symlinks. A home the server
    /// cannot read (subordinate ids) is emptied from inside a sandbox, as
    /// its owner, first.
    async fn remove_home(&self, user: &UserId, tenant: &Tenant) -> Result<(), ManageError> {
        let root = self.settings.workspace_root.clone();
        let home = tenant.workspace_in(&root);
        // A disk image goes with its home, once the stopped sandbox's shim
        // has unmounted it (docs/disk.md).
        let (images, slug) = (disk::images_dir(&root), tenant.slug.clone());
        let image = tokio::task::spawn_blocking(move || remove_image_when_free(&images, &slug));
        image
            .await?
            .map_err(|e| ManageError::Conflict(e.to_string()))?;
        match std::fs::symlink_metadata(&home) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ManageError::io(home.display().to_string())(e)),
            Ok(m) if !m.is_dir() => {
                return Err(ManageError::Conflict(format!(
                    "{} is not a directory; remove it by hand",
                    home.display()
                )))
            }
            Ok(_) => {}
        }
        // With subordinate ids the home belongs to an id we cannot read.
        let emptied_inside = std::fs::read_dir(&home).is_err();
        if emptied_inside {
            self.empty_from_inside(user).await?;
        }
        let aside = root.join(format!(
            ".deleted-{}-{}",
            tenant.slug,
            crate::random::random_token()
                .chars()
                .take(8)
                .collect::<String>()
        ));
        std::fs::rename(&home, &aside)
            .map_err(ManageError::io(format!("move {} aside", home.display())))?;
        tokio::task::spawn_blocking(move || {
            // An emptied home cannot be listed by us, only removed.
            let r = if emptied_inside {
                std::fs::remove_dir(&aside)
            } else {
                std::fs::remove_dir_all(&aside)
            };
            r.map_err(|e| (aside, e))
        })
        .await?
        .map_err(|(p, e)| ManageError::io(format!("remove {}", p.display()))(e))
    }

    async fn empty_from_inside(&self, user: &UserId) -> Result<(), ManageError> {
        let backend = match &self.runner {
            Runner::Registry(reg) => reg.backend(),
            Runner::OneShot(b) => Arc::clone(b),
        };
        let cmd = ExecCommand {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                "chmod -R u+rwX . 2>/dev/null; find . -mindepth 1 -delete".into(),
            ],
            ..Default::default()
        };
        let child = backend.exec_once(user, cmd, ExecStdio::piped()).await?;
        let r = exec::collect(child, Vec::new(), Duration::from_secs(300), 64 << 10).await;
        if r.reason != EndReason::Exit || r.exit_code != Some(0) {
            return Err(ManageError::Internal(format!(
                "emptying the home from inside its sandbox failed: {}",
                r.stderr.trim()
            )));
        }
        Ok(())
    }
}

/// Removes a tenant's disk image, waiting a little for the shim of its
/// stopped sandbox to unmount it.
fn remove_image_when_free(images: &std::path::Path, slug: &str) -> Result<(), disk::DiskError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match disk::remove_image(images, slug) {
            Err(disk::DiskError::InUse { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            r => return r,
        }
    }
}
