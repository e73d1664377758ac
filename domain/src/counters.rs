//! What the management service counts, for whoever exports metrics (the
//! web layer's `/metrics` implements this trait). A trait, so the domain
//! knows nothing of Prometheus or HTTP.

/// Counters and gauges the [`crate::manage::Manager`] feeds.
pub trait ServiceCounters: Send + Sync {
    /// A command ran (exec).
    fn exec(&self);
    /// A command was killed by its sandbox's memory limit.
    fn oom_kill(&self);
    /// Audit entries waiting for the state database now.
    fn audit_pending(&self, n: usize);
    /// Audit entries dropped because the backlog was full.
    fn audit_dropped(&self, n: u64);
}
