//! The tenants' named services (docs/services.md): one row per service, its
//! definition as JSON, so a server restart finds them and starts the
//! enabled ones again. A table of its own, created when missing: a
//! database made by an older warren gains it on open.

use rusqlite::{params, Connection, OptionalExtension};

use super::{State, StateError};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS services (
    tenant     TEXT NOT NULL,
    name       TEXT NOT NULL,
    definition TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
);
";

/// One stored service: its tenant, its name and its definition (JSON, the
/// domain's `ServiceSpec`; the state does not read it).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRow {
    pub tenant: String,
    pub name: String,
    pub definition: String,
    pub created_at: i64,
}

pub(super) fn create_table(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ServiceRow> {
    Ok(ServiceRow {
        tenant: r.get(0)?,
        name: r.get(1)?,
        definition: r.get(2)?,
        created_at: r.get(3)?,
    })
}

impl State {
    /// Adds a service; false when the tenant already has one of that name.
    pub fn insert_service(&mut self, s: &ServiceRow) -> Result<bool, StateError> {
        let n = self
            .conn
            .execute(
                "INSERT INTO services (tenant, name, definition, created_at) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                params![s.tenant, s.name, s.definition, s.created_at],
            )
            .map_err(self.db())?;
        Ok(n > 0)
    }

    /// Replaces a service's definition; false when there is none.
    pub fn update_service(
        &mut self,
        tenant: &str,
        name: &str,
        definition: &str,
    ) -> Result<bool, StateError> {
        let n = self
            .conn
            .execute(
                "UPDATE services SET definition = ?3 WHERE tenant = ?1 AND name = ?2",
                params![tenant, name, definition],
            )
            .map_err(self.db())?;
        Ok(n > 0)
    }

    pub fn find_service(&self, tenant: &str, name: &str) -> Result<Option<ServiceRow>, StateError> {
        self.conn
            .query_row(
                "SELECT tenant, name, definition, created_at FROM services \
                 WHERE tenant = ?1 AND name = ?2",
                params![tenant, name],
                row,
            )
            .optional()
            .map_err(self.db())
    }

    /// Every tenant's services, by tenant and name.
    pub fn all_services(&self) -> Result<Vec<ServiceRow>, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT tenant, name, definition, created_at FROM services \
                 ORDER BY tenant, name",
            )
            .map_err(self.db())?;
        let rows = stmt
            .query_map([], row)
            .and_then(|r| r.collect::<Result<Vec<_>, _>>())
            .map_err(self.db());
        rows
    }

    /// Removes one service; false when there was none.
    pub fn delete_service(&mut self, tenant: &str, name: &str) -> Result<bool, StateError> {
        let n = self
            .conn
            .execute(
                "DELETE FROM services WHERE tenant = ?1 AND name = ?2",
                params![tenant, name],
            )
            .map_err(self.db())?;
        Ok(n > 0)
    }

    /// Removes all of a tenant's services (the tenant is being deleted).
    pub fn delete_services_of(&mut self, tenant: &str) -> Result<usize, StateError> {
        self.conn
            .execute("DELETE FROM services WHERE tenant = ?1", params![tenant])
            .map_err(self.db())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_kept_per_tenant_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let web = |t: &str| ServiceRow {
            tenant: t.into(),
            name: "web".into(),
            definition: "{}".into(),
            created_at: 1,
        };
        {
            let mut s = State::open(dir.path()).unwrap();
            assert!(s.insert_service(&web("alice")).unwrap());
            assert!(!s.insert_service(&web("alice")).unwrap(), "a name once");
            assert!(s.insert_service(&web("bob")).unwrap());
            assert!(s.update_service("alice", "web", "{\"x\":1}").unwrap());
        }
        let mut s = State::open(dir.path()).unwrap();
        let all = s.all_services().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].definition, "{\"x\":1}");
        assert_eq!(s.delete_services_of("alice").unwrap(), 1);
        assert!(s.find_service("alice", "web").unwrap().is_none());
        assert!(!s.delete_service("alice", "web").unwrap());
        assert!(s.delete_service("bob", "web").unwrap());
    }
}
