//! The sandbox cgroup's counters that tell a command or terminal killed
//! at the memory limit from one that ended otherwise: read before it
//! starts and again when it ends.

use warren_runtime::cgroups::{Cgroups, Roots};

/// The sandbox's OOM kills plus the times it hit its memory limit: a
/// count that rises while memory is short.
pub(crate) fn memory_pressure(cgroup: Option<&str>) -> u64 {
    read_events(cgroup)
        .map(|e| e.oom_kills.unwrap_or(0) + e.memory_limit_hits.unwrap_or(0))
        .unwrap_or(0)
}

/// The sandbox cgroup's counters; `None` when they cannot be read (no
/// cgroup, or it was removed).
fn read_events(cgroup: Option<&str>) -> Option<warren_runtime::cgroups::Events> {
    Cgroups::probe(&Roots::default())
        .ok()?
        .open(cgroup?)
        .ok()?
        .events()
        .ok()
}

/// The sandbox's OOM-kill count; 0 when it cannot be read.
pub(crate) fn oom_kills(cgroup: Option<&str>) -> u64 {
    read_oom_kills(cgroup).unwrap_or(0)
}

/// The sandbox's OOM-kill count; `None` when it cannot be read.
pub(crate) fn read_oom_kills(cgroup: Option<&str>) -> Option<u64> {
    read_events(cgroup)?.oom_kills
}
