//! A tenant's terminals: list and close.

use crate::sessions::TerminalInfo;
use crate::user::UserId;

use super::{ManageError, Manager, Runner};

impl Manager {
    pub fn terminals(&self, id: &str) -> Result<Vec<TerminalInfo>, ManageError> {
        self.record(id)?;
        match &self.runner {
            Runner::Registry(reg) => Ok(reg
                .sessions_of(
                    &UserId::parse(id).map_err(|e| ManageError::BadRequest(e.to_string()))?,
                )
                .terminals),
            Runner::OneShot(_) => Ok(Vec::new()),
        }
    }

    pub fn close_terminal(&self, actor: &str, id: &str, terminal: &str) -> Result<(), ManageError> {
        self.record(id)?;
        let Runner::Registry(reg) = &self.runner else {
            return Err(ManageError::NoSuchTerminal);
        };
        let user = UserId::parse(id).map_err(|e| ManageError::BadRequest(e.to_string()))?;
        reg.close_terminal(&user, terminal)?;
        self.audit(
            actor,
            "terminal.close",
            Some(id),
            "ok",
            serde_json::json!({"terminal": terminal}),
        );
        Ok(())
    }
}
