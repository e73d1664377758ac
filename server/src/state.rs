//! The embedded state database (SQLite): tenants and their host uid
//! allocations. An allocation never changes once made, and concurrent
//! callers (two `warren run` at once) can never get the same uid: the
//! allocation runs in an IMMEDIATE transaction and the column is UNIQUE.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use warren_runtime::tenant::Tenant;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create state directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state database {path}: {source}")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("slug {slug:?} already belongs to user id {owner:?}; user id {id:?} cannot have it")]
    SlugTaken {
        slug: String,
        owner: String,
        id: String,
    },
    #[error("no host uids left above the base {base}")]
    UidsExhausted { base: u32 },
}

/// A tenant as the database knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRecord {
    pub id: String,
    pub slug: String,
    pub host_uid: u32,
    pub created_at: i64,
    pub last_seen: i64,
}

pub struct State {
    conn: Connection,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tenants (
    id         TEXT PRIMARY KEY,
    slug       TEXT NOT NULL UNIQUE,
    host_uid   INTEGER NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
);
";

/// `last_seen` is kept to this many seconds.
const LAST_SEEN_GRANULARITY: i64 = 60;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl State {
    /// Opens (creating if needed) `<dir>/warren.db`.
    pub fn open(dir: &Path) -> Result<State, StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("warren.db");
        let db = |source| StateError::Db {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(db)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        Ok(State { conn, path })
    }

    fn db(&self) -> impl Fn(rusqlite::Error) -> StateError + '_ {
        |source| StateError::Db {
            path: self.path.clone(),
            source,
        }
    }

    /// Returns the tenant's record, allocating a host uid (`base + n`) on
    /// first sight. Also bumps `last_seen`.
    pub fn get_or_create(
        &mut self,
        tenant: &Tenant,
        uid_base: u32,
    ) -> Result<TenantRecord, StateError> {
        let path = self.path.clone();
        let db = |source| StateError::Db {
            path: path.clone(),
            source,
        };
        // Fast path, no write: a known tenant seen within the last minute
        // (every `warren run` and terminal comes here; a write per start
        // would cost more than the rest of the lookup).
        let known = find(&self.conn, &tenant.id).map_err(db)?;
        if let Some(r) = known.filter(|r| now() - r.last_seen < LAST_SEEN_GRANULARITY) {
            return Ok(r);
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let t = now();
        let existing = find(&tx, &tenant.id).map_err(db)?;
        let record = match existing {
            Some(mut r) => {
                tx.execute(
                    "UPDATE tenants SET last_seen = ?1 WHERE id = ?2",
                    params![t, tenant.id],
                )
                .map_err(db)?;
                r.last_seen = t;
                r
            }
            None => {
                if let Some(owner) = tx
                    .query_row(
                        "SELECT id FROM tenants WHERE slug = ?1",
                        params![tenant.slug],
                        |r| r.get::<_, String>(0),
                    )
                    .optional()
                    .map_err(db)?
                {
                    return Err(StateError::SlugTaken {
                        slug: tenant.slug.clone(),
                        owner,
                        id: tenant.id.clone(),
                    });
                }
                let max: Option<i64> = tx
                    .query_row("SELECT MAX(host_uid) FROM tenants", [], |r| r.get(0))
                    .map_err(db)?;
                let next = match max {
                    Some(m) if m >= uid_base as i64 => m + 1,
                    _ => uid_base as i64,
                };
                // uid_t's top value (u32::MAX) means "no uid" to the kernel.
                if next >= u32::MAX as i64 {
                    return Err(StateError::UidsExhausted { base: uid_base });
                }
                tx.execute(
                    "INSERT INTO tenants (id, slug, host_uid, created_at, last_seen) VALUES (?1, ?2, ?3, ?4, ?4)",
                    params![tenant.id, tenant.slug, next, t],
                )
                .map_err(db)?;
                TenantRecord {
                    id: tenant.id.clone(),
                    slug: tenant.slug.clone(),
                    host_uid: next as u32,
                    created_at: t,
                    last_seen: t,
                }
            }
        };
        tx.commit().map_err(db)?;
        Ok(record)
    }

    /// Every tenant, by id.
    pub fn list(&self) -> Result<Vec<TenantRecord>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, slug, host_uid, created_at, last_seen FROM tenants ORDER BY id")
            .map_err(self.db())?;
        let rows = stmt.query_map([], row_to_record).map_err(self.db())?;
        rows.collect::<Result<_, _>>().map_err(self.db())
    }
}

/// The tenant with this id, if any (in or out of a transaction).
fn find(conn: &Connection, id: &str) -> rusqlite::Result<Option<TenantRecord>> {
    conn.query_row(
        "SELECT id, slug, host_uid, created_at, last_seen FROM tenants WHERE id = ?1",
        params![id],
        row_to_record,
    )
    .optional()
}

fn row_to_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<TenantRecord> {
    Ok(TenantRecord {
        id: r.get(0)?,
        slug: r.get(1)?,
        host_uid: r.get::<_, i64>(2)? as u32,
        created_at: r.get(3)?,
        last_seen: r.get(4)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_distinct_and_survive_reopening() {
        let d = tempfile::tempdir().unwrap();
        let alice = Tenant::parse("alice").unwrap();
        let bob = Tenant::parse("bob").unwrap();
        let (a, b) = {
            let mut s = State::open(d.path()).unwrap();
            (
                s.get_or_create(&alice, 5000).unwrap(),
                s.get_or_create(&bob, 5000).unwrap(),
            )
        };
        assert_eq!((a.host_uid, b.host_uid), (5000, 5001));
        let mut s = State::open(d.path()).unwrap();
        assert_eq!(s.get_or_create(&alice, 9999).unwrap().host_uid, 5000);
        assert_eq!(s.list().unwrap().len(), 2);
    }

    #[test]
    fn concurrent_allocations_never_collide() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_path_buf();
        State::open(&dir).unwrap();
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    let mut s = State::open(&dir).unwrap();
                    (0..10)
                        .map(|j| {
                            s.get_or_create(&Tenant::parse(&format!("u{i}x{j}")).unwrap(), 100)
                                .unwrap()
                                .host_uid
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<u32> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 80);
    }

    #[test]
    fn a_slug_cannot_change_hands() {
        let d = tempfile::tempdir().unwrap();
        let mut s = State::open(d.path()).unwrap();
        s.get_or_create(&Tenant::parse("alice").unwrap(), 10)
            .unwrap();
        let mut impostor = Tenant::parse("Alice@x").unwrap();
        impostor.slug = "alice".into();
        assert!(matches!(
            s.get_or_create(&impostor, 10),
            Err(StateError::SlugTaken { .. })
        ));
    }
}
