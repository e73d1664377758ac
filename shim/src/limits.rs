//! The sandbox's cgroup, from the shim's side: create it with the spec's
//! limits before the sandbox runs anything, report what applied or what is
//! missing, read the kernel's counters at the end, remove it.

use std::fs::File;

use nix::unistd::Pid;
use warren_runtime::cgroups::{Cgroups, Limits, Roots, SandboxCgroup};
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
/// host allows. Missing limits are reported, or refused with
/// `require_limits`. `None` when nothing could be limited.
pub fn create(spec: &SandboxSpec, report: &mut File) -> Result<Created, SetupError> {
    if spec.limits == Limits::NONE {
        return Ok(Created::default());
    }
    let (cgroups, missing, reasons) = probe(spec);
    if !missing.is_empty() {
        if spec.require_limits {
            return Err(SetupError::new(
                "apply limits",
                format!("cannot apply the {} limit(s): {}", missing.join(", "), reasons.join("; ")),
            )
            .with_hint("run as root, or give warren a delegated cgroup (systemd Delegate=yes); see docs/cgroups.md"));
        }
        let _ = report::send(
            report,
            &Event::Unlimited {
                missing: missing.clone(),
                reasons,
            },
        );
    }
    let Some(cgroups) = cgroups else {
        return Ok(Created {
            missing,
            ..Default::default()
        });
    };
    let limits = spec.limits.only_available(&cgroups.availability());
    if limits == Limits::NONE {
        return Ok(Created {
            missing,
            ..Default::default()
        });
    }
    cgroups
        .prepare()
        .map_err(|e| cgroup_error("prepare cgroups", e))?;
    let id = warren_runtime::cgroups::owned_id(&spec.tenant.slug.replace('_', "-"));
    let (cg, applied) = cgroups
        .create(&id, &limits)
        .map_err(|e| cgroup_error("create cgroup", e))?;
    let _ = report::send(
        report,
        &Event::Limited {
            cgroup: id,
            limits,
            notes: applied.notes,
        },
    );
    Ok(Created {
        cgroup: Some(cg),
        applied: limits,
        missing,
    })
}

/// The host's cgroups and the limits of `spec` they cannot apply, with
/// the reasons.
fn probe(spec: &SandboxSpec) -> (Option<Cgroups>, Vec<String>, Vec<String>) {
    let wanted: Vec<&str> = [
        ("memory", spec.limits.memory_bytes.is_some()),
        ("cpu", spec.limits.cpu.is_some()),
        ("pids", spec.limits.pids.is_some()),
    ]
    .into_iter()
    .filter_map(|(n, w)| w.then_some(n))
    .collect();
    match Cgroups::probe(&Roots::default()) {
        Ok(c) => {
            let a = c.availability();
            let missing: Vec<String> = a
                .missing
                .iter()
                .filter(|m| wanted.contains(m))
                .map(|m| m.to_string())
                .collect();
            (Some(c), missing, a.reasons)
        }
        Err(e) => (
            None,
            wanted.iter().map(|m| m.to_string()).collect(),
            vec![e.to_string()],
        ),
    }
}

/// What [`create`] made for a sandbox with this spec, worked out again by a
/// process joining it (`has_cgroup`: the sandbox has one): the limits in
/// force and the missing ones.
pub fn expected(spec: &SandboxSpec, has_cgroup: bool) -> (Limits, Vec<String>) {
    if spec.limits == Limits::NONE {
        return (Limits::NONE, Vec::new());
    }
    let (cgroups, missing, _) = probe(spec);
    let applied = match (cgroups, has_cgroup) {
        (Some(c), true) => spec.limits.only_available(&c.availability()),
        _ => Limits::NONE,
    };
    (applied, missing)
}

/// What [`create`] made: the cgroup (if any), the limits in force and the
/// ones this host could not apply.
pub struct Created {
    pub cgroup: Option<SandboxCgroup>,
    pub applied: Limits,
    pub missing: Vec<String>,
}

impl Default for Created {
    fn default() -> Self {
        Created {
            cgroup: None,
            applied: Limits::NONE,
            missing: Vec::new(),
        }
    }
}

/// Puts the sandbox's PID 1 in the cgroup; it waits for our go-ahead, so it
/// has not run anything yet.
pub fn enter(cg: &SandboxCgroup, pid: Pid) -> Result<(), SetupError> {
    cg.add_process(pid)
        .map_err(|e| cgroup_error("join cgroup", e))
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
    cg.add_process(nix::unistd::getpid())
        .map_err(|e| cgroup_error("join cgroup", e))
}
