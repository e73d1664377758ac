//! The sandbox's cgroup, from the shim's side: create it with the spec's
//! limits before the sandbox runs anything, report the sandbox's record
//! (what applied, what is missing and why), read the kernel's counters at
//! the end, remove it.

use std::collections::BTreeMap;
use std::fs::File;

use nix::unistd::Pid;
use warren_runtime::cgroups::{Cgroups, Limits, Roots, SandboxCgroup, SelfEntry};
use warren_runtime::record::{asked_for, LimitsInForce};
use warren_runtime::report::{self, Event, SetupError};
use warren_runtime::spec::SandboxSpec;

fn cgroup_error(step: &str, e: warren_runtime::cgroups::CgroupError) -> SetupError {
    let err = match e.errno() {
        Some(errno) => SetupError::errno(step, errno).with_message(e.to_string()),
        None => SetupError::new(step, e.to_string()),
    };
    match e.hint() {
        Some(h) => err.with_hint(h),
        None => err,
    }
}

/// Creates the sandbox's cgroup (nested under ours) with every limit the
/// host allows, read back from the kernel. Missing limits are recorded
/// with their reasons, or refused with `require_limits`.
pub fn create(spec: &SandboxSpec) -> Result<Created, SetupError> {
    if spec.limits == Limits::NONE {
        return Ok(Created::default());
    }
    let (cgroups, limits) = probe(spec);
    if !limits.missing.is_empty() && spec.require_limits {
        let reasons: Vec<&str> = limits.reasons.values().map(String::as_str).collect();
        return Err(SetupError::new(
            "apply limits",
            format!("cannot apply the {} limit(s): {}", limits.missing.join(", "), reasons.join("; ")),
        )
        .with_hint("run as root, or give warren a delegated cgroup (systemd Delegate=yes); see docs/cgroups.md"));
    }
    let Some(cgroups) = cgroups else {
        return Ok(Created {
            limits,
            ..Default::default()
        });
    };
    let wanted = spec.limits.only_available(&cgroups.availability());
    if wanted == Limits::NONE {
        return Ok(Created {
            limits,
            ..Default::default()
        });
    }
    cgroups
        .prepare()
        .map_err(|e| cgroup_error("prepare cgroups", e))?;
    let id = warren_runtime::cgroups::owned_id(&spec.tenant.slug.replace('_', "-"));
    let (cg, applied) = cgroups
        .create(&id, &wanted)
        .map_err(|e| cgroup_error("create cgroup", e))?;
    Ok(Created {
        cgroup: Some(cg),
        id: Some(id),
        limits: LimitsInForce {
            notes: applied.notes,
            ..LimitsInForce::cgroup(wanted, limits.missing)
        }
        .with_reasons(limits.reasons),
    })
}

/// The host's cgroups and the limits of `spec` they cannot apply, each
/// with its reason.
fn probe(spec: &SandboxSpec) -> (Option<Cgroups>, LimitsInForce) {
    let wanted = asked_for(&spec.limits);
    match Cgroups::probe(&Roots::default()) {
        Ok(c) => {
            let a = c.availability();
            let reasons: BTreeMap<String, String> = a
                .missing
                .iter()
                .zip(&a.reasons)
                .filter(|(m, _)| wanted.iter().any(|w| w == *m))
                .map(|(m, r)| (m.to_string(), r.clone()))
                .collect();
            let missing = wanted
                .into_iter()
                .filter(|w| a.missing.contains(&w.as_str()))
                .collect();
            (
                Some(c),
                LimitsInForce::cgroup(Limits::NONE, missing).with_reasons(reasons),
            )
        }
        Err(e) => {
            let reasons = wanted.iter().map(|m| (m.clone(), e.to_string())).collect();
            (
                None,
                LimitsInForce::cgroup(Limits::NONE, wanted).with_reasons(reasons),
            )
        }
    }
}

/// What [`create`] made for a sandbox with this spec, worked out again by a
/// process joining it (`has_cgroup`: the sandbox has one): the limits in
/// force and the missing ones.
pub fn expected(spec: &SandboxSpec, has_cgroup: bool) -> LimitsInForce {
    if spec.limits == Limits::NONE {
        return LimitsInForce::cgroup(Limits::NONE, Vec::new());
    }
    let (cgroups, limits) = probe(spec);
    let in_force = match (cgroups, has_cgroup) {
        (Some(c), true) => spec.limits.only_available(&c.availability()),
        _ => Limits::NONE,
    };
    LimitsInForce {
        memory_bytes: in_force.memory_bytes,
        cpu: in_force.cpu,
        pids: in_force.pids,
        ..limits
    }
}

/// What [`create`] made: the cgroup (if any) and its id, and the limits in
/// force and missing.
pub struct Created {
    pub cgroup: Option<SandboxCgroup>,
    pub id: Option<String>,
    pub limits: LimitsInForce,
}

impl Default for Created {
    fn default() -> Self {
        Created {
            cgroup: None,
            id: None,
            limits: LimitsInForce::cgroup(Limits::NONE, Vec::new()),
        }
    }
}

/// Puts the sandbox's PID 1 in the cgroup; it waits for our go-ahead, so it
/// has not run anything yet.
pub fn enter(cg: &SandboxCgroup, pid: Pid) -> Result<(), SetupError> {
    cg.add_process(pid)
        .map_err(|e| cgroup_error("join cgroup", e))
}

/// Opens, before the clone, the files through which the sandbox's PID 1
/// moves itself into the cgroup ([`enter_in_child`]).
pub fn open_entry(cg: Option<&SandboxCgroup>) -> Result<Option<SelfEntry>, SetupError> {
    cg.map(|cg| {
        cg.open_self_entry()
            .map_err(|e| cgroup_error("open cgroup", e))
    })
    .transpose()
}

/// PID 1 moves itself into its cgroup, first thing after the clone (see
/// [`SandboxCgroup::open_self_entry`] for why not from the parent).
pub fn enter_in_child(entry: Option<SelfEntry>) -> Result<(), SetupError> {
    entry.map_or(Ok(()), |e| {
        e.enter().map_err(|e| cgroup_error("join cgroup", e))
    })
}

/// Reports the limits that were hit and removes the cgroup.
pub fn finish(cg: SandboxCgroup, limits: Limits, report: &mut File) {
    if let Ok(events) = cg.events() {
        if events.oom_killed() || events.pids_limit_hits.unwrap_or(0) > 0 {
            let _ = report::send(report, &Event::LimitsHit { limits, events });
        }
    }
    if let Err(e) = cg.destroy() {
        eprintln!("warren-shim: removing cgroup: {e}");
    }
}

/// Moves the calling process into the cgroup of an existing sandbox (its
/// children, the joined command among them, inherit it).
pub fn join(id: &str) -> Result<(), SetupError> {
    let cgroups = Cgroups::probe(&Roots::default()).map_err(|e| cgroup_error("find cgroups", e))?;
    let cg = cgroups
        .open(id)
        .map_err(|e| cgroup_error("open sandbox cgroup", e))?;
    // The joining shim is single-threaded: it moves itself, the cheap way.
    cg.open_self_entry()
        .and_then(|entry| entry.enter())
        .map_err(|e| cgroup_error("join cgroup", e))
}
