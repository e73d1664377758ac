//! A tenant's limit overrides.

use crate::state::LimitOverrides;

use super::{ManageError, Manager, UserView};

impl Manager {
    pub fn set_limits(
        &self,
        actor: &str,
        id: &str,
        limits: &LimitOverrides,
    ) -> Result<UserView, ManageError> {
        self.record(id)?;
        limits.validate().map_err(ManageError::BadRequest)?;
        if !self.state().set_limits(id, limits)? {
            return Err(ManageError::NoSuchUser(id.to_string()));
        }
        self.audit(
            actor,
            "limits",
            Some(id),
            "ok",
            serde_json::to_value(limits).unwrap_or_default(),
        );
        self.show(id)
    }
}
