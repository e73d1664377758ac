//! The audit log's backlog: entries the state database could not take yet
//! (a full disk, a locked or read-only file). An action that already
//! happened must not lose its record because the disk filled, so each
//! entry is held here, in order, and written with a later one (at most
//! every few seconds while writes keep failing), every
//! few seconds by the server (`Manager::retry_audit_periodically`) and
//! before the log is read. The backlog is bounded: past
//! [`AUDIT_BACKLOG_MAX`] entries or [`AUDIT_BACKLOG_MAX_BYTES`] the oldest
//! are dropped and counted
//! (`warren_audit_dropped_total`), so a disk that stays full costs a
//! bounded amount of memory and the loss is never silent.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::state::{NewAuditEntry, State, StateError};

/// Most entries held while the database refuses writes.
pub const AUDIT_BACKLOG_MAX: usize = 10_000;
/// Most bytes they may hold together: one exec's argv may be megabytes, so
/// a count alone would not bound the memory (found in review).
pub const AUDIT_BACKLOG_MAX_BYTES: usize = 16 << 20;

/// About how much memory an entry holds.
fn entry_size(e: &NewAuditEntry) -> usize {
    64 + e.actor.len()
        + e.action.len()
        + e.outcome.len()
        + e.tenant.as_ref().map_or(0, String::len)
        + e.detail.to_string().len()
}

/// What one attempt to write the backlog did.
#[derive(Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Nothing was waiting.
    Nothing,
    /// This many entries were written.
    Wrote(usize),
    /// The database refused again (after an error already returned and
    /// logged); everything stays held.
    Held { pending: usize },
}

/// Entries waiting for the database, oldest first.
#[derive(Debug)]
pub struct AuditBacklog {
    pending: VecDeque<NewAuditEntry>,
    max: usize,
    /// The held entries' size, as [`entry_size`] counts it.
    bytes: usize,
    /// Entries dropped since the start (the metric counts the same).
    dropped: u64,
    /// When the last write failed, if it did.
    failing: Option<Instant>,
}

impl AuditBacklog {
    pub fn new(max: usize) -> AuditBacklog {
        AuditBacklog {
            pending: VecDeque::new(),
            max: max.max(1),
            bytes: 0,
            dropped: 0,
            failing: None,
        }
    }

    /// Queues an entry; returns how many old ones were dropped to make room
    /// (0 or 1).
    pub fn push(&mut self, entry: NewAuditEntry) -> u64 {
        let mut dropped = 0;
        let size = entry_size(&entry);
        while !self.pending.is_empty()
            && (self.pending.len() >= self.max || self.bytes + size > AUDIT_BACKLOG_MAX_BYTES)
        {
            if let Some(old) = self.pending.pop_front() {
                self.bytes -= entry_size(&old);
            }
            dropped += 1;
        }
        self.bytes += size;
        self.pending.push_back(entry);
        self.dropped += dropped;
        dropped
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Whether a write is worth trying now: always while writes succeed;
    /// after a failure, once `every` has passed, so a disk that stays full
    /// does not cost every audited action a doomed transaction.
    pub fn due(&self, every: Duration) -> bool {
        self.failing.is_none_or(|at| at.elapsed() >= every)
    }

    /// Writes every held entry in one transaction (all or none). The first
    /// failure after a success is an error (to be logged once); later ones
    /// are `Held`.
    pub fn flush(&mut self, state: &mut State) -> Result<Flushed, StateError> {
        if self.pending.is_empty() {
            return Ok(Flushed::Nothing);
        }
        match state.append_audit(self.pending.make_contiguous()) {
            Ok(_) => {
                let n = self.pending.len();
                self.pending.clear();
                self.bytes = 0;
                self.failing = None;
                Ok(Flushed::Wrote(n))
            }
            Err(e) => {
                let first = self.failing.is_none();
                self.failing = Some(Instant::now());
                if first {
                    Err(e)
                } else {
                    Ok(Flushed::Held {
                        pending: self.pending.len(),
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u32) -> NewAuditEntry {
        NewAuditEntry::now("admin", "exec", None, "ok", serde_json::json!({ "n": n }))
    }

    #[test]
    fn holds_in_order_and_drops_the_oldest_past_the_bound() {
        let mut b = AuditBacklog::new(3);
        for n in 0..5 {
            b.push(entry(n));
        }
        assert_eq!((b.len(), b.dropped()), (3, 2));
        let kept: Vec<_> = b.pending.iter().map(|e| e.detail["n"].clone()).collect();
        assert_eq!(kept, [2, 3, 4]);
    }

    #[test]
    fn huge_entries_are_bounded_by_bytes_not_only_by_count() {
        let mut b = AuditBacklog::new(AUDIT_BACKLOG_MAX);
        let argv = "a".repeat(4 << 20);
        for _ in 0..10 {
            b.push(NewAuditEntry::now(
                "admin",
                "exec",
                None,
                "ok",
                serde_json::json!({ "argv": [argv] }),
            ));
        }
        assert!(b.bytes <= AUDIT_BACKLOG_MAX_BYTES, "{}", b.bytes);
        assert_eq!((b.len(), b.dropped()), (3, 7));
    }

    #[test]
    fn after_a_failure_writes_wait_for_the_retry_interval() {
        let d = tempfile::tempdir().unwrap();
        let mut state = State::open(d.path()).unwrap();
        let mut b = AuditBacklog::new(10);
        assert!(b.due(Duration::from_secs(3600)));
        b.failing = Some(Instant::now());
        assert!(!b.due(Duration::from_secs(3600)));
        assert!(b.due(Duration::ZERO));
        b.push(entry(0));
        assert_eq!(b.flush(&mut state).unwrap(), Flushed::Wrote(1));
        assert!(b.due(Duration::from_secs(3600)));
    }

    #[test]
    fn a_flush_writes_everything_in_order_once() {
        let d = tempfile::tempdir().unwrap();
        let mut state = State::open(d.path()).unwrap();
        let mut b = AuditBacklog::new(10);
        assert_eq!(b.flush(&mut state).unwrap(), Flushed::Nothing);
        for n in 0..4 {
            b.push(entry(n));
        }
        assert_eq!(b.flush(&mut state).unwrap(), Flushed::Wrote(4));
        assert!(b.is_empty());
        assert_eq!(b.flush(&mut state).unwrap(), Flushed::Nothing);
        let log = state.audit_log(None, None, 0, 100).unwrap();
        let ns: Vec<_> = log.iter().map(|e| e.detail["n"].clone()).collect();
        assert_eq!(ns, [0, 1, 2, 3]);
    }
}
