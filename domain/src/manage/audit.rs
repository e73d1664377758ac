//! The audit log: writing entries (held in memory while the state
//! database refuses writes), flushing them, reading them back.

use std::sync::PoisonError;

use crate::audit::{AuditBacklog, Flushed, AUDIT_BACKLOG_MAX};
use crate::state::{AuditEntry, NewAuditEntry, State};

use super::{ManageError, Manager, AUDIT_RETRY_EVERY};

impl Manager {
    /// A refused credential (`auth.failed`), whichever door it came to:
    /// `path` is where, `why` the refusal (never the credential itself).
    pub fn auth_failed(&self, path: &str, why: &str) {
        self.audit(
            "anonymous",
            "auth.failed",
            None,
            "refused",
            serde_json::json!({"path": path, "why": why}),
        );
    }

    /// Appends to the audit log. A failure to write it (a full disk) is
    /// never fatal to the action, which has already happened: the entry is
    /// held with any earlier ones and written with the next (see
    /// `crate::audit`).
    pub fn audit(
        &self,
        actor: &str,
        action: &str,
        tenant: Option<&str>,
        outcome: &str,
        detail: serde_json::Value,
    ) {
        let entry = NewAuditEntry::now(actor, action, tenant, outcome, detail);
        let mut state = self.state();
        let mut backlog = self.audit_backlog();
        let dropped = backlog.push(entry);
        if dropped > 0 {
            if let Some(m) = &self.metrics {
                m.audit_dropped(dropped);
            }
            if backlog.dropped() == dropped {
                tracing::error!(
                    "audit log: more than {AUDIT_BACKLOG_MAX} entries waiting for the state \
                     database; dropping the oldest (counted in warren_audit_dropped_total)"
                );
            }
        }
        if backlog.due(AUDIT_RETRY_EVERY) {
            self.write_audit_backlog(&mut state, &mut backlog);
        } else if let Some(m) = &self.metrics {
            m.audit_pending(backlog.len());
        }
    }

    fn audit_backlog(&self) -> std::sync::MutexGuard<'_, AuditBacklog> {
        self.audit_backlog
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write_audit_backlog(&self, state: &mut State, backlog: &mut AuditBacklog) {
        match backlog.flush(state) {
            Ok(Flushed::Wrote(n)) if n > 1 => {
                tracing::info!(
                    "audit log: wrote {n} entries held while the state database refused writes"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::error!(
                "audit log: {e}; holding entries in memory (at most {AUDIT_BACKLOG_MAX}) \
                 and retrying"
            ),
        }
        if let Some(m) = &self.metrics {
            m.audit_pending(backlog.len());
        }
    }

    /// Writes held audit entries, if any; returns how many still wait.
    pub fn flush_audit(&self) -> usize {
        let mut state = self.state();
        let mut backlog = self.audit_backlog();
        if !backlog.is_empty() {
            self.write_audit_backlog(&mut state, &mut backlog);
        }
        backlog.len()
    }

    /// The server's retry of held audit entries, every
    /// [`AUDIT_RETRY_EVERY`], for as long as the manager lives.
    pub async fn retry_audit_periodically(me: std::sync::Weak<Manager>) {
        loop {
            tokio::time::sleep(AUDIT_RETRY_EVERY).await;
            let Some(m) = me.upgrade() else { return };
            if m.audit_backlog().is_empty() {
                continue;
            }
            let _ = tokio::task::spawn_blocking(move || m.flush_audit()).await;
        }
    }

    pub fn audit_log(
        &self,
        tenant: Option<&str>,
        action: Option<&str>,
        after: i64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, ManageError> {
        // Held entries first, so a page never skips what happened before.
        self.flush_audit();
        Ok(self
            .state()
            .audit_log(tenant, action, after, limit.min(1000))?)
    }
}
