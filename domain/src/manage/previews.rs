//! Share links for a tenant's preview ports (docs/previews.md): made by
//! the owner or the admin with a bounded expiry, listed, revoked; every
//! change audited. The link's token is signed by the web layer; this is
//! the record it is checked against (revocation takes effect at once).

use crate::random::random_bytes;
use crate::state::PreviewShare;

use super::{ManageError, Manager};

/// The shortest and longest life of a share link, in seconds.
pub const SHARE_MIN_SECS: u64 = 10;
pub const SHARE_MAX_SECS: u64 = 30 * 24 * 3600;

impl Manager {
    /// A new share link for `user`'s `port`, expiring in `expires_in`
    /// seconds ([`SHARE_MIN_SECS`] to [`SHARE_MAX_SECS`]).
    pub fn create_share(
        &self,
        actor: &str,
        user: &str,
        port: u16,
        expires_in: u64,
    ) -> Result<PreviewShare, ManageError> {
        self.record(user)?;
        check_port(port)?;
        if !(SHARE_MIN_SECS..=SHARE_MAX_SECS).contains(&expires_in) {
            return Err(ManageError::BadRequest(format!(
                "expires_in must be {SHARE_MIN_SECS} to {SHARE_MAX_SECS} seconds (30 days), not {expires_in}"
            )));
        }
        let now = self.now();
        let share = PreviewShare {
            id: random_bytes::<12>()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            user: user.to_string(),
            port,
            created_by: actor.to_string(),
            created_at: now,
            expires_at: now + expires_in as i64,
            revoked_at: None,
        };
        self.state().add_share(&share)?;
        self.audit(
            actor,
            "preview.share.create",
            Some(user),
            "ok",
            serde_json::json!({"port": port, "share": share.id, "expires_at": share.expires_at}),
        );
        Ok(share)
    }

    /// `user`'s share links of `port`, revoked and expired ones included.
    pub fn list_shares(&self, user: &str, port: u16) -> Result<Vec<PreviewShare>, ManageError> {
        self.record(user)?;
        check_port(port)?;
        Ok(self.state().shares_of(user, port)?)
    }

    /// Revokes one of `user`'s share links of `port`.
    pub fn revoke_share(
        &self,
        actor: &str,
        user: &str,
        port: u16,
        id: &str,
    ) -> Result<(), ManageError> {
        self.record(user)?;
        check_port(port)?;
        if !self.state().revoke_share(user, port, id, self.now())? {
            return Err(ManageError::NotFound(format!(
                "no share link {id:?} for port {port}"
            )));
        }
        self.audit(
            actor,
            "preview.share.revoke",
            Some(user),
            "ok",
            serde_json::json!({"port": port, "share": id}),
        );
        Ok(())
    }

    /// The share link `id` of `user`'s `port`, if it holds now.
    pub fn valid_share(
        &self,
        user: &str,
        port: u16,
        id: &str,
    ) -> Result<Option<PreviewShare>, ManageError> {
        let now = self.now();
        Ok(self
            .state()
            .find_share(id)?
            .filter(|s| s.user == user && s.port == port && s.is_valid_at(now)))
    }
}

fn check_port(port: u16) -> Result<(), ManageError> {
    match port {
        0 => Err(ManageError::BadRequest("port must be 1 to 65535".into())),
        _ => Ok(()),
    }
}
