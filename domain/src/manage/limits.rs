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
