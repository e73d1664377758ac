//! The embedded state database (SQLite): tenants, their host uid
//! allocations and limit overrides, and the audit log. An allocation never
//! changes once made, and concurrent callers (two `warren run` at once) can
//! never get the same uid: the allocation runs in an IMMEDIATE transaction
//! and the column is UNIQUE. A deleted tenant's uid is never handed out
//! to another id (allocation continues above the highest uid ever given,
//! kept in `meta`), so a new tenant cannot inherit files an old one left
//! behind. A tenant deleted with its home kept leaves its uid in `retired`,
//! and re-creating the same id reinstates it: the kept home is still owned
//! by that uid, so the tenant gets it back as it was (issue 10, item 10).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use warren_runtime::cgroups::Limits;
use warren_runtime::disk::DiskLimits;
use warren_runtime::network::{NetworkMode, NetworkPolicy, Rule};
use warren_runtime::tenant::Tenant;

mod services;
pub use services::ServiceRow;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create state directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make {path} private (mode 0600/0700): {source}")]
    Private {
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

/// One per-tenant limit: the server's default, no limit, or a value.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum LimitValue<T> {
    #[default]
    Default,
    Unlimited,
    Value(T),
}

impl<T> LimitValue<T> {
    pub fn is_default(&self) -> bool {
        matches!(self, LimitValue::Default)
    }
}

impl<T: Copy> LimitValue<T> {
    /// The limit in force given the server's default.
    pub fn resolve(self, default: Option<T>) -> Option<T> {
        match self {
            LimitValue::Default => default,
            LimitValue::Unlimited => None,
            LimitValue::Value(v) => Some(v),
        }
    }
}

// JSON: a number, "none" (no limit) or "default" (the server's).
impl<T: Serialize> Serialize for LimitValue<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            LimitValue::Default => s.serialize_str("default"),
            LimitValue::Unlimited => s.serialize_str("none"),
            LimitValue::Value(v) => v.serialize(s),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for LimitValue<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw<T> {
            Word(String),
            Value(T),
            // JSON Schema's "integer" includes 414.0: an integral float is
            // taken where an integer is asked for.
            Float(f64),
        }
        match Raw::<T>::deserialize(d)? {
            Raw::Value(v) => Ok(LimitValue::Value(v)),
            // `u64::MAX as f64` is 2^64, itself out of range (and what
            // 18446744073709551616 parses to).
            Raw::Float(f) if f.fract() == 0.0 && (0.0..u64::MAX as f64).contains(&f) => {
                T::deserialize(serde::de::value::U64Deserializer::<D::Error>::new(f as u64))
                    .map(LimitValue::Value)
            }
            Raw::Float(f) => Err(serde::de::Error::custom(format!(
                "expected a whole number, \"none\" or \"default\", got {f}"
            ))),
            Raw::Word(w) if w == "default" => Ok(LimitValue::Default),
            Raw::Word(w) if w == "none" => Ok(LimitValue::Unlimited),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "expected a number, \"none\" or \"default\", got {w:?}"
            ))),
        }
    }
}

/// Per-tenant overrides of the server's cgroup limits and network policy.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    #[serde(default)]
    pub memory_bytes: LimitValue<u64>,
    #[serde(default)]
    pub cpus: LimitValue<f64>,
    #[serde(default)]
    pub pids: LimitValue<u64>,
    /// The home's size limit (docs/disk.md); left out while `default`,
    /// like the network's, so the first shape of this JSON still reads.
    #[serde(default, skip_serializing_if = "LimitValue::is_default")]
    pub disk_bytes: LimitValue<u64>,
    #[serde(default, skip_serializing_if = "LimitValue::is_default")]
    pub disk_inodes: LimitValue<u64>,
    /// The network mode (docs/network.md); `"default"`: the server's.
    #[serde(default, skip_serializing_if = "NetworkOverride::is_default")]
    pub network: NetworkOverride,
    /// Replaces the server's `--network-allow` entries; absent: the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_allow: Option<Vec<Rule>>,
    /// Replaces the server's `--network-deny` entries; absent: the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_deny: Option<Vec<Rule>>,
}

/// A tenant's network mode: the server's, or one of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkOverride {
    #[default]
    Default,
    None,
    Public,
}

impl NetworkOverride {
    pub fn is_default(&self) -> bool {
        *self == NetworkOverride::Default
    }

    fn to_sql(self) -> Option<&'static str> {
        match self {
            NetworkOverride::Default => None,
            NetworkOverride::None => Some("none"),
            NetworkOverride::Public => Some("public"),
        }
    }

    fn from_sql(v: Option<String>) -> NetworkOverride {
        match v.as_deref() {
            Some("none") => NetworkOverride::None,
            Some("public") => NetworkOverride::Public,
            _ => NetworkOverride::Default,
        }
    }
}

impl LimitOverrides {
    /// The limits in force for this tenant.
    pub fn apply(&self, defaults: Limits) -> Limits {
        Limits {
            memory_bytes: self.memory_bytes.resolve(defaults.memory_bytes),
            cpu: self.cpus.resolve(defaults.cpu),
            pids: self.pids.resolve(defaults.pids),
        }
    }

    /// The network policy for this tenant, from the server's.
    pub fn network_policy(&self, server: &NetworkPolicy) -> NetworkPolicy {
        NetworkPolicy {
            mode: match self.network {
                NetworkOverride::Default => server.mode,
                NetworkOverride::None => NetworkMode::None,
                NetworkOverride::Public => NetworkMode::Public,
            },
            allow: self
                .network_allow
                .clone()
                .unwrap_or_else(|| server.allow.clone()),
            deny: self
                .network_deny
                .clone()
                .unwrap_or_else(|| server.deny.clone()),
            required: server.required,
        }
    }

    /// Checks the values the way the cgroup driver will.
    pub fn validate(&self) -> Result<(), String> {
        self.apply(Limits::default())
            .validate()
            .map_err(|e| e.to_string())?;
        self.apply_disk(DiskLimits::DEFAULT).validate()
    }

    /// The home's disk limits for this tenant.
    pub fn apply_disk(&self, defaults: DiskLimits) -> DiskLimits {
        DiskLimits {
            bytes: self.disk_bytes.resolve(defaults.bytes),
            inodes: self.disk_inodes.resolve(defaults.inodes),
        }
    }
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Increasing; page with `?after=`.
    pub seq: i64,
    /// Unix time in milliseconds.
    pub at_ms: i64,
    /// Who: `admin`, `cli:<unix user>`, a user id, or `anonymous`.
    pub actor: String,
    /// What: `session.start`, `session.end`, `exec`, `export`, `import`,
    /// `delete`, `limits`, `terminal.close`, `auth.failed`, ...
    pub action: String,
    /// The tenant acted on, if any.
    pub tenant: Option<String>,
    /// `ok`, `refused` or `failed`.
    pub outcome: String,
    /// Action-specific details (command, sizes, exit, reason).
    pub detail: serde_json::Value,
}

/// An audit entry on its way to the log, stamped when it happened (it may
/// be written later: see `crate::audit`).
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEntry {
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub tenant: Option<String>,
    pub outcome: String,
    pub detail: serde_json::Value,
}

impl NewAuditEntry {
    pub fn now(
        actor: &str,
        action: &str,
        tenant: Option<&str>,
        outcome: &str,
        detail: serde_json::Value,
    ) -> NewAuditEntry {
        NewAuditEntry {
            at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            actor: actor.to_string(),
            action: action.to_string(),
            tenant: tenant.map(str::to_string),
            outcome: outcome.to_string(),
            detail,
        }
    }
}

/// Most audit entries kept; older ones are pruned.
pub const AUDIT_KEPT: i64 = 100_000;

/// A tenant as the database knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantRecord {
    pub id: String,
    pub slug: String,
    pub host_uid: u32,
    pub created_at: i64,
    pub last_seen: i64,
    pub limits: LimitOverrides,
    /// The tenant's terminal command line (`PUT .../limits` `"shell"`);
    /// None: the server's (`--shell`).
    pub shell: Option<String>,
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
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms   INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    tenant  TEXT,
    outcome TEXT NOT NULL,
    detail  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_tenant ON audit (tenant, seq);
CREATE TABLE IF NOT EXISTS retired (
    id         TEXT PRIMARY KEY,
    slug       TEXT NOT NULL,
    host_uid   INTEGER NOT NULL UNIQUE,
    deleted_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS preview_shares (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    port       INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX IF NOT EXISTS preview_shares_by_tenant ON preview_shares (tenant, port);
";

/// Columns added after the first release: (name, SQL type). NULL means the
/// server's default; -1 means no limit.
const LIMIT_COLUMNS: &[(&str, &str)] = &[
    ("memory_bytes", "INTEGER"),
    ("cpus", "REAL"),
    ("pids", "INTEGER"),
    ("shell", "TEXT"),
    // NULL: the server's; "none" or "public".
    ("network", "TEXT"),
    // NULL: the server's; a JSON array of CIDR[:PORTS] strings.
    ("network_allow", "TEXT"),
    ("network_deny", "TEXT"),
    ("disk_bytes", "INTEGER"),
    ("disk_inodes", "INTEGER"),
];

const SELECT_TENANT: &str =
    "SELECT id, slug, host_uid, created_at, last_seen, memory_bytes, cpus, pids, shell, network, network_allow, network_deny, disk_bytes, disk_inodes FROM tenants";

/// `last_seen` is kept to this many seconds.
const LAST_SEEN_GRANULARITY: i64 = 60;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl State {
    /// Opens (creating if needed) `<dir>/warren.db`. The directory is kept
    /// 0700 and the database, its WAL and SHM files 0600 (see
    /// [`crate::private`]): the audit log holds exec argv.
    pub fn open(dir: &Path) -> Result<State, StateError> {
        crate::private::create_dir(dir).map_err(|source| StateError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("warren.db");
        let private = |p: &Path| {
            crate::private::create_file(p).map_err(|source| StateError::Private {
                path: p.to_path_buf(),
                source,
            })
        };
        // Made 0600 before SQLite opens it: SQLite gives the WAL and SHM
        // files the database's mode.
        private(&path)?;
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
        migrate(&conn).map_err(db)?;
        services::create_table(&conn).map_err(db)?;
        // Left looser by an older warren (or another tool): tighten them.
        for suffix in ["-wal", "-shm"] {
            let side = dir.join(format!("warren.db{suffix}"));
            crate::private::tighten(&side, crate::private::FILE_MODE).map_err(|source| {
                StateError::Private {
                    path: side.clone(),
                    source,
                }
            })?;
        }
        Ok(State { conn, path })
    }

    /// The file behind this state.
    pub fn path(&self) -> &Path {
        &self.path
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
                let next = match reinstate(&tx, tenant).map_err(db)? {
                    Some(uid) => uid,
                    None => next_uid(&tx, uid_base)
                        .map_err(db)?
                        .ok_or(StateError::UidsExhausted { base: uid_base })?,
                };
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
                    limits: LimitOverrides::default(),
                    shell: None,
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
            .prepare(&format!("{SELECT_TENANT} ORDER BY id"))
            .map_err(self.db())?;
        let rows = stmt.query_map([], row_to_record).map_err(self.db())?;
        rows.collect::<Result<_, _>>().map_err(self.db())
    }

    /// The tenant with this id, without creating it.
    pub fn find(&self, id: &str) -> Result<Option<TenantRecord>, StateError> {
        find(&self.conn, id).map_err(self.db())
    }

    /// Removes the tenant; false when there was none. Its uid is never
    /// given to another id; with `home_kept` it is remembered for this id,
    /// which gets it back if it is created again (see the module comment).
    pub fn delete(&mut self, id: &str, home_kept: bool) -> Result<bool, StateError> {
        let path = self.path.clone();
        let db = |source| StateError::Db {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let Some(record) = find(&tx, id).map_err(db)? else {
            return Ok(false);
        };
        tx.execute("DELETE FROM tenants WHERE id = ?1", params![id])
            .map_err(db)?;
        tx.execute("DELETE FROM services WHERE tenant = ?1", params![id])
            .map_err(db)?;
        // A recreated tenant does not inherit its predecessor's links.
        tx.execute("DELETE FROM preview_shares WHERE tenant = ?1", params![id])
            .map_err(db)?;
        if home_kept {
            tx.execute(
                "INSERT INTO retired (id, slug, host_uid, deleted_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (id) DO UPDATE SET slug = excluded.slug, \
                 host_uid = excluded.host_uid, deleted_at = excluded.deleted_at",
                params![id, record.slug, record.host_uid, now()],
            )
            .map_err(db)?;
        } else {
            tx.execute("DELETE FROM retired WHERE id = ?1", params![id])
                .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(true)
    }

    /// Replaces the tenant's limit overrides; false when there is no such
    /// tenant.
    pub fn set_limits(&mut self, id: &str, limits: &LimitOverrides) -> Result<bool, StateError> {
        let n = self
            .conn
            .execute(
                "UPDATE tenants SET memory_bytes = ?2, cpus = ?3, pids = ?4, network = ?5, \
                 network_allow = ?6, network_deny = ?7 WHERE id = ?1",
                params![
                    id,
                    to_sql_int(limits.memory_bytes),
                    match limits.cpus {
                        LimitValue::Default => None,
                        LimitValue::Unlimited => Some(-1.0),
                        LimitValue::Value(v) => Some(v),
                    },
                    to_sql_int(limits.pids),
                    limits.network.to_sql(),
                    rules_to_sql(&limits.network_allow),
                    rules_to_sql(&limits.network_deny),
                ],
            )
            .map_err(self.db())?;
        self.conn
            .execute(
                "UPDATE tenants SET disk_bytes = ?2, disk_inodes = ?3 WHERE id = ?1",
                params![
                    id,
                    to_sql_int(limits.disk_bytes),
                    to_sql_int(limits.disk_inodes)
                ],
            )
            .map_err(self.db())?;
        Ok(n > 0)
    }

    /// Sets the tenant's terminal command line (None: the server's); false
    /// when there is no such tenant.
    pub fn set_shell(&mut self, id: &str, shell: Option<&str>) -> Result<bool, StateError> {
        let n = self
            .conn
            .execute(
                "UPDATE tenants SET shell = ?2 WHERE id = ?1",
                params![id, shell],
            )
            .map_err(self.db())?;
        Ok(n > 0)
    }

    /// Appends to the audit log, now, and returns the entry's sequence
    /// number.
    pub fn audit(
        &mut self,
        actor: &str,
        action: &str,
        tenant: Option<&str>,
        outcome: &str,
        detail: &serde_json::Value,
    ) -> Result<i64, StateError> {
        let entry = NewAuditEntry::now(actor, action, tenant, outcome, detail.clone());
        self.append_audit(std::slice::from_ref(&entry))
    }

    /// Appends entries, in order, in one transaction: all of them or, on
    /// an error (a full disk), none, so a retry never writes one twice.
    /// Returns the last sequence number. Every thousandth entry prunes the
    /// log to [`AUDIT_KEPT`] entries.
    pub fn append_audit(&mut self, entries: &[NewAuditEntry]) -> Result<i64, StateError> {
        let path = self.path.clone();
        let db = |source| StateError::Db {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(db)?;
        let mut seq = 0;
        let mut prune = false;
        for e in entries {
            tx.execute(
                "INSERT INTO audit (at_ms, actor, action, tenant, outcome, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![e.at_ms, e.actor, e.action, e.tenant, e.outcome, e.detail.to_string()],
            )
            .map_err(db)?;
            seq = tx.last_insert_rowid();
            prune |= seq % 1000 == 0;
        }
        if prune {
            tx.execute(
                "DELETE FROM audit WHERE seq <= ?1",
                params![seq - AUDIT_KEPT],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(seq)
    }

    /// Audit entries after `after` (oldest first), at most `limit`,
    /// optionally of one tenant and/or one action.
    pub fn audit_log(
        &self,
        tenant: Option<&str>,
        action: Option<&str>,
        after: i64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, at_ms, actor, action, tenant, outcome, detail FROM audit \
                 WHERE seq > ?1 AND (?2 IS NULL OR tenant = ?2) AND (?3 IS NULL OR action = ?3) \
                 ORDER BY seq LIMIT ?4",
            )
            .map_err(self.db())?;
        let rows = stmt
            .query_map(params![after, tenant, action, limit], |r| {
                let detail: String = r.get(6)?;
                Ok(AuditEntry {
                    seq: r.get(0)?,
                    at_ms: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    tenant: r.get(4)?,
                    outcome: r.get(5)?,
                    detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                })
            })
            .map_err(self.db())?;
        rows.collect::<Result<_, _>>().map_err(self.db())
    }
}

/// The uid this id had when it was deleted with its home kept, taken out
/// of `retired`. Only for the same slug: the home is `<root>/<slug>`.
fn reinstate(tx: &Connection, tenant: &Tenant) -> rusqlite::Result<Option<i64>> {
    let uid = tx
        .query_row(
            "SELECT host_uid FROM retired WHERE id = ?1 AND slug = ?2",
            params![tenant.id, tenant.slug],
            |r| r.get::<_, i64>(0),
        )
        .optional()?;
    if uid.is_some() {
        tx.execute("DELETE FROM retired WHERE id = ?1", params![tenant.id])?;
    }
    Ok(uid)
}

/// A uid never handed out before (`base`, or above the highest ever
/// given), recorded as given; `None` when uid_t has no room left.
fn next_uid(tx: &Connection, uid_base: u32) -> rusqlite::Result<Option<i64>> {
    let max: Option<i64> = tx.query_row(
        "SELECT MAX(m) FROM (SELECT MAX(host_uid) AS m FROM tenants \
         UNION ALL SELECT value FROM meta WHERE key = 'max_uid')",
        [],
        |r| r.get(0),
    )?;
    let next = match max {
        Some(m) if m >= uid_base as i64 => m + 1,
        _ => uid_base as i64,
    };
    // uid_t's top value (u32::MAX) means "no uid" to the kernel.
    if next >= u32::MAX as i64 {
        return Ok(None);
    }
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('max_uid', ?1) \
         ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
        params![next],
    )?;
    Ok(Some(next))
}

/// A share link for one preview port (docs/previews.md): who may visit is
/// whoever holds its signed token, until it expires or is revoked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PreviewShare {
    pub id: String,
    pub user: String,
    pub port: u16,
    pub created_by: String,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

impl PreviewShare {
    /// Neither revoked nor expired at `now` (Unix seconds).
    pub fn is_valid_at(&self, now: i64) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

const SELECT_SHARE: &str =
    "SELECT id, tenant, port, created_by, created_at, expires_at, revoked_at FROM preview_shares";

fn share_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PreviewShare> {
    Ok(PreviewShare {
        id: r.get(0)?,
        user: r.get(1)?,
        port: r.get::<_, i64>(2)?.clamp(0, u16::MAX as i64) as u16,
        created_by: r.get(3)?,
        created_at: r.get(4)?,
        expires_at: r.get(5)?,
        revoked_at: r.get(6)?,
    })
}

impl State {
    /// Stores a new share link.
    pub fn add_share(&mut self, s: &PreviewShare) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO preview_shares (id, tenant, port, created_by, created_at, expires_at, \
                 revoked_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    s.id,
                    s.user,
                    s.port as i64,
                    s.created_by,
                    s.created_at,
                    s.expires_at,
                    s.revoked_at
                ],
            )
            .map_err(self.db())?;
        Ok(())
    }

    /// The share links of `user`'s `port`, oldest first.
    pub fn shares_of(&self, user: &str, port: u16) -> Result<Vec<PreviewShare>, StateError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "{SELECT_SHARE} WHERE tenant = ?1 AND port = ?2 ORDER BY created_at, id"
            ))
            .map_err(self.db())?;
        let rows = stmt
            .query_map(params![user, port as i64], share_from_row)
            .map_err(self.db())?;
        rows.collect::<Result<_, _>>().map_err(self.db())
    }

    /// The share link `id`, if there is one.
    pub fn find_share(&self, id: &str) -> Result<Option<PreviewShare>, StateError> {
        self.conn
            .query_row(
                &format!("{SELECT_SHARE} WHERE id = ?1"),
                params![id],
                share_from_row,
            )
            .optional()
            .map_err(self.db())
    }

    /// Revokes `user`'s share `id` of `port` at `now`; false when there is
    /// no such link (revoking twice keeps the first time).
    pub fn revoke_share(
        &mut self,
        user: &str,
        port: u16,
        id: &str,
        now: i64,
    ) -> Result<bool, StateError> {
        let n = self
            .conn
            .execute(
                "UPDATE preview_shares SET revoked_at = COALESCE(revoked_at, ?4) \
                 WHERE tenant = ?1 AND port = ?2 AND id = ?3",
                params![user, port as i64, id, now],
            )
            .map_err(self.db())?;
        Ok(n > 0)
    }
}

/// Adds the columns newer releases use to a database made by an older one.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('tenants')")?;
    let have: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for (name, ty) in LIMIT_COLUMNS {
        if !have.iter().any(|h| h == name) {
            // Two processes may race here; the loser's ALTER fails with
            // "duplicate column", which is the state it wanted.
            if let Err(e) =
                conn.execute_batch(&format!("ALTER TABLE tenants ADD COLUMN {name} {ty}"))
            {
                if !e.to_string().contains("duplicate column") {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

fn rules_to_sql(rules: &Option<Vec<Rule>>) -> Option<String> {
    rules
        .as_ref()
        .map(|r| serde_json::to_string(r).unwrap_or_else(|_| "[]".into()))
}

/// A column written by [`rules_to_sql`]; unreadable as the server's.
fn rules_from_sql(v: Option<String>) -> Option<Vec<Rule>> {
    serde_json::from_str(&v?).ok()
}

fn to_sql_int(v: LimitValue<u64>) -> Option<i64> {
    match v {
        LimitValue::Default => None,
        LimitValue::Unlimited => Some(-1),
        LimitValue::Value(v) => Some(v.min(i64::MAX as u64) as i64),
    }
}

fn from_sql_int(v: Option<i64>) -> LimitValue<u64> {
    match v {
        None => LimitValue::Default,
        Some(v) if v < 0 => LimitValue::Unlimited,
        Some(v) => LimitValue::Value(v as u64),
    }
}

/// The tenant with this id, if any (in or out of a transaction).
fn find(conn: &Connection, id: &str) -> rusqlite::Result<Option<TenantRecord>> {
    conn.query_row(
        &format!("{SELECT_TENANT} WHERE id = ?1"),
        params![id],
        row_to_record,
    )
    .optional()
}

fn row_to_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<TenantRecord> {
    let cpus: Option<f64> = r.get(6)?;
    Ok(TenantRecord {
        id: r.get(0)?,
        slug: r.get(1)?,
        host_uid: r.get::<_, i64>(2)? as u32,
        created_at: r.get(3)?,
        last_seen: r.get(4)?,
        limits: LimitOverrides {
            memory_bytes: from_sql_int(r.get(5)?),
            cpus: match cpus {
                None => LimitValue::Default,
                Some(c) if c < 0.0 => LimitValue::Unlimited,
                Some(c) => LimitValue::Value(c),
            },
            pids: from_sql_int(r.get(7)?),
            disk_bytes: from_sql_int(r.get("disk_bytes")?),
            disk_inodes: from_sql_int(r.get("disk_inodes")?),
            network: NetworkOverride::from_sql(r.get("network")?),
            network_allow: rules_from_sql(r.get("network_allow")?),
            network_deny: rules_from_sql(r.get("network_deny")?),
        },
        shell: r.get(8)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    /// Issue 10, item 5: the state was 0755 and warren.db 0644, so any
    /// local user could read the audit log.
    #[test]
    fn state_is_private_when_created() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("state");
        let mut s = State::open(&dir).unwrap();
        s.get_or_create(&Tenant::parse("alice").unwrap(), 5000)
            .unwrap();
        assert_eq!(mode(&dir), 0o700);
        for f in ["warren.db", "warren.db-wal", "warren.db-shm"] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
    }

    #[test]
    fn loose_state_is_tightened_on_open() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("state");
        drop(State::open(&dir).unwrap());
        let set = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
        set(&dir, 0o755).unwrap();
        for f in ["warren.db", "warren.db-wal", "warren.db-shm"] {
            if dir.join(f).exists() {
                set(&dir.join(f), 0o644).unwrap();
            }
        }
        let s = State::open(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        for f in ["warren.db", "warren.db-wal", "warren.db-shm"] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
        assert!(s.list().unwrap().is_empty());
    }

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
    fn disk_overrides_survive_reopening_and_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let alice = Tenant::parse("alice").unwrap();
        {
            let mut s = State::open(d.path()).unwrap();
            s.get_or_create(&alice, 10).unwrap();
            let o: LimitOverrides =
                serde_json::from_str(r#"{"disk_bytes": 2147483648, "disk_inodes": "none"}"#)
                    .unwrap();
            assert!(s.set_limits("alice", &o).unwrap());
        }
        let s = State::open(d.path()).unwrap();
        let r = s.find("alice").unwrap().unwrap();
        assert_eq!(r.limits.disk_bytes, LimitValue::Value(2 << 30));
        assert_eq!(r.limits.disk_inodes, LimitValue::Unlimited);
        assert_eq!(r.limits.memory_bytes, LimitValue::Default);
        let applied = r.limits.apply_disk(DiskLimits::DEFAULT);
        assert_eq!((applied.bytes, applied.inodes), (Some(2 << 30), None));
        // Too small for an image: refused before anything is stored.
        let tiny: LimitOverrides = serde_json::from_str(r#"{"disk_bytes": 4096}"#).unwrap();
        assert!(tiny.validate().unwrap_err().contains("smallest"));
        let few: LimitOverrides = serde_json::from_str(r#"{"disk_inodes": 3}"#).unwrap();
        assert!(few.validate().is_err());
    }

    #[test]
    fn overrides_audit_and_delete_survive_reopening() {
        let d = tempfile::tempdir().unwrap();
        let alice = Tenant::parse("alice").unwrap();
        {
            let mut s = State::open(d.path()).unwrap();
            s.get_or_create(&alice, 10).unwrap();
            let o: LimitOverrides = serde_json::from_str(
                r#"{"memory_bytes": 1048576, "cpus": "none", "network": "public", "network_allow": ["10.0.0.2:80"]}"#,
            )
            .unwrap();
            assert!(s.set_limits("alice", &o).unwrap());
            assert!(!s.set_limits("nobody", &o).unwrap());
            s.audit(
                "admin",
                "exec",
                Some("alice"),
                "ok",
                &serde_json::json!({"argv": ["id"]}),
            )
            .unwrap();
        }
        let mut s = State::open(d.path()).unwrap();
        let r = s.find("alice").unwrap().unwrap();
        assert_eq!(r.limits.memory_bytes, LimitValue::Value(1048576));
        assert_eq!(r.limits.cpus, LimitValue::Unlimited);
        assert_eq!(r.limits.pids, LimitValue::Default);
        assert_eq!(r.limits.network, NetworkOverride::Public);
        assert_eq!(
            r.limits.network_allow,
            Some(vec!["10.0.0.2:80".parse().unwrap()])
        );
        assert_eq!(r.limits.network_deny, None, "the server's");
        let policy = r.limits.network_policy(&NetworkPolicy::none());
        assert_eq!(policy.mode, NetworkMode::Public);
        assert_eq!(policy.allow.len(), 1);
        let applied = r.limits.apply(Limits::default());
        assert_eq!(applied.memory_bytes, Some(1048576));
        assert_eq!(applied.cpu, None);
        assert_eq!(applied.pids, Limits::default().pids);
        let log = s.audit_log(Some("alice"), None, 0, 10).unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].detail["argv"][0], "id");
        assert!(s.audit_log(Some("bob"), None, 0, 10).unwrap().is_empty());
        // A deleted tenant's uid is never given to anyone else.
        assert!(s.delete("alice", false).unwrap());
        assert!(!s.delete("alice", false).unwrap());
        let bob = s.get_or_create(&Tenant::parse("bob").unwrap(), 10).unwrap();
        assert_eq!(bob.host_uid, 11);
        let again = s.get_or_create(&alice, 10).unwrap();
        assert_eq!(again.host_uid, 12);
        assert_eq!(again.limits, LimitOverrides::default());
    }

    /// Issue 10, item 10: delete (home kept) then re-create gave the id a
    /// new uid that did not own its home.
    #[test]
    fn a_kept_home_gets_its_uid_back_and_nobody_else_does() {
        let d = tempfile::tempdir().unwrap();
        let alice = Tenant::parse("alice").unwrap();
        let mut s = State::open(d.path()).unwrap();
        let first = s.get_or_create(&alice, 10).unwrap().host_uid;
        assert!(s.delete("alice", true).unwrap());
        let bob = s.get_or_create(&Tenant::parse("bob").unwrap(), 10).unwrap();
        assert_ne!(bob.host_uid, first);
        drop(s);
        let mut s = State::open(d.path()).unwrap();
        assert_eq!(s.get_or_create(&alice, 10).unwrap().host_uid, first);
        // Deleted with the home: the uid stays retired for good.
        assert!(s.delete("alice", false).unwrap());
        let again = s.get_or_create(&alice, 10).unwrap().host_uid;
        assert!(again > bob.host_uid, "{again}");
        // Kept twice: the latest uid is the one remembered.
        assert!(s.delete("alice", true).unwrap());
        assert_eq!(s.get_or_create(&alice, 10).unwrap().host_uid, again);
    }

    #[test]
    fn limit_values_parse_strictly() {
        assert!(serde_json::from_str::<LimitOverrides>(r#"{"memory_bytes": "lots"}"#).is_err());
        assert!(serde_json::from_str::<LimitOverrides>(r#"{"disk": 1}"#).is_err());
        assert!(serde_json::from_str::<LimitOverrides>(r#"{"network": "open"}"#).is_err());
        assert!(
            serde_json::from_str::<LimitOverrides>(r#"{"network_allow": ["10.0.0.0/33"]}"#)
                .is_err()
        );
        let o: LimitOverrides = serde_json::from_str(r#"{"pids": "default"}"#).unwrap();
        assert_eq!(o, LimitOverrides::default());
        let whole: LimitOverrides =
            serde_json::from_str(r#"{"memory_bytes": 1048576.0, "pids": 414.0}"#).unwrap();
        assert_eq!(whole.memory_bytes, LimitValue::Value(1048576));
        assert_eq!(whole.pids, LimitValue::Value(414));
        assert!(serde_json::from_str::<LimitOverrides>(r#"{"pids": 4.5}"#).is_err());
        assert!(serde_json::from_str::<LimitOverrides>(r#"{"pids": -1}"#).is_err());
        assert!(
            serde_json::from_str::<LimitOverrides>(r#"{"pids": 18446744073709551616}"#).is_err()
        );
        let max: LimitOverrides =
            serde_json::from_str(r#"{"pids": 18446744073709551615}"#).unwrap();
        assert_eq!(max.pids, LimitValue::Value(u64::MAX));
        let bad: LimitOverrides = serde_json::from_str(r#"{"cpus": 0}"#).unwrap();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn an_integral_number_written_with_a_fraction_is_that_integer() {
        let o: LimitOverrides =
            serde_json::from_str(r#"{"memory_bytes": 1073741824.0, "pids": 1e3, "cpus": 2.0}"#)
                .unwrap();
        assert_eq!(o.memory_bytes, LimitValue::Value(1 << 30));
        assert_eq!(o.pids, LimitValue::Value(1000));
        assert_eq!(o.cpus, LimitValue::Value(2.0));
        for bad in [
            r#"{"pids": 1.5}"#,
            r#"{"pids": -1.0}"#,
            r#"{"memory_bytes": 1e30}"#,
        ] {
            assert!(
                serde_json::from_str::<LimitOverrides>(bad).is_err(),
                "{bad}"
            );
        }
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
