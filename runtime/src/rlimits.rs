//! Per-process resource limits (setrlimit) of the tiers without namespaces.
//!
//! They are not the cgroup limits and never stand in for them silently:
//! a limit the cgroup could not apply stays reported as missing, and the
//! rlimit that bounds part of the same risk is reported next to it.
//!
//! - `core 0`: no core dumps (a dump of a tenant's process could be piped to
//!   a host-wide handler, and nobody reads them here).
//! - `nofile`: at most [`NOFILE_MAX`] open files per process.
//! - `data`, only when the cgroup memory limit is missing: each process's
//!   writable private memory (heap, anonymous mappings) up to the memory
//!   limit. Per process, not a total. RLIMIT_DATA rather than RLIMIT_AS:
//!   runtimes such as V8, Go and the JVM reserve far more address space
//!   than they use, and RLIMIT_AS would stop them from starting.
//! - `nproc`, only when the cgroup pids limit is missing and the tenant has
//!   a host uid of its own (warren runs as root): the kernel counts the
//!   processes of a real uid host-wide, so with one uid shared by the
//!   server and every tenant it would count all of them together.
//!
//! CPU time has no rlimit equivalent (RLIMIT_CPU ends a process after so
//! many seconds, which would kill a long-lived shell), so a missing cpu
//! limit stays missing.

use std::fmt;

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use serde::{Deserialize, Serialize};

use crate::cgroups::Limits;
use crate::report::SetupError;

/// The most open files per process in the tiers without namespaces.
pub const NOFILE_MAX: u64 = 4096;

/// Which per-process limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Core,
    Nofile,
    Data,
    Nproc,
}

/// One per-process limit (soft = hard).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    pub kind: Kind,
    pub value: u64,
}

impl Rlimit {
    fn resource(self) -> Resource {
        match self.kind {
            Kind::Core => Resource::RLIMIT_CORE,
            Kind::Nofile => Resource::RLIMIT_NOFILE,
            Kind::Data => Resource::RLIMIT_DATA,
            Kind::Nproc => Resource::RLIMIT_NPROC,
        }
    }
}

impl fmt::Display for Rlimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Core => write!(f, "core dumps off"),
            Kind::Nofile => write!(f, "{} open files per process", self.value),
            Kind::Data => write!(
                f,
                "memory {} MiB per process (RLIMIT_DATA)",
                self.value >> 20
            ),
            Kind::Nproc => write!(
                f,
                "{} processes of the tenant's uid (RLIMIT_NPROC)",
                self.value
            ),
        }
    }
}

/// The rlimits of a sandbox without namespaces, given its limits and the
/// ones its cgroup could not apply (`missing`: "memory", "cpu", "pids").
/// `own_uid`: the tenant runs as a host uid nobody else uses.
pub fn for_shared_host(limits: &Limits, missing: &[String], own_uid: bool) -> Vec<Rlimit> {
    let missing = |name: &str| missing.iter().any(|m| m == name);
    let mut out = vec![
        Rlimit {
            kind: Kind::Core,
            value: 0,
        },
        Rlimit {
            kind: Kind::Nofile,
            value: NOFILE_MAX,
        },
    ];
    if let (Some(bytes), true) = (limits.memory_bytes, missing("memory")) {
        out.push(Rlimit {
            kind: Kind::Data,
            value: bytes,
        });
    }
    if let (Some(pids), true, true) = (limits.pids, missing("pids"), own_uid) {
        out.push(Rlimit {
            kind: Kind::Nproc,
            value: pids,
        });
    }
    out
}

/// Sets each limit, soft and hard, never above the hard limit the process
/// already has (lowering needs no privilege; raising would).
pub fn apply(limits: &[Rlimit]) -> Result<(), SetupError> {
    for l in limits {
        let step = || format!("set rlimit {:?}", l.kind);
        let (_, hard) = getrlimit(l.resource()).map_err(|e| SetupError::errno(step(), e))?;
        let value = l.value.min(hard);
        setrlimit(l.resource(), value, value).map_err(|e| SetupError::errno(step(), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::child;

    fn kinds(l: &[Rlimit]) -> Vec<Kind> {
        l.iter().map(|r| r.kind).collect()
    }

    #[test]
    fn substitutes_only_for_missing_limits() {
        let limits = Limits::default();
        let all = ["memory".to_string(), "cpu".into(), "pids".into()];
        assert_eq!(
            kinds(&for_shared_host(&limits, &[], true)),
            [Kind::Core, Kind::Nofile]
        );
        let l = for_shared_host(&limits, &all, false);
        assert_eq!(kinds(&l), [Kind::Core, Kind::Nofile, Kind::Data]);
        assert_eq!(l[2].value, 512 << 20);
        assert_eq!(l[2].to_string(), "memory 512 MiB per process (RLIMIT_DATA)");
        // nproc counts a uid host-wide: only where the tenant has its own.
        assert_eq!(
            kinds(&for_shared_host(&limits, &all, true)),
            [Kind::Core, Kind::Nofile, Kind::Data, Kind::Nproc]
        );
        assert_eq!(
            kinds(&for_shared_host(&Limits::NONE, &all, true)),
            [Kind::Core, Kind::Nofile]
        );
    }

    #[test]
    fn apply_lowers_for_real() {
        // In a child process: limits stick to the process that sets them.
        let out = child::run(&child::entry(module_path!(), "child_entry"), "apply", &[]);
        let r = child::results(&out);
        assert_eq!(
            r.get("nofile").map(String::as_str),
            Some("64 64"),
            "{out:?}"
        );
        assert_eq!(r.get("core").map(String::as_str), Some("0 0"), "{out:?}");
    }

    /// Entry point of the child process of `apply_lowers_for_real`.
    #[test]
    fn child_entry() {
        let Some(mode) = child::mode() else { return };
        assert_eq!(mode, "apply");
        apply(&[
            Rlimit {
                kind: Kind::Core,
                value: 0,
            },
            Rlimit {
                kind: Kind::Nofile,
                value: 64,
            },
        ])
        .unwrap();
        for (name, r) in [
            ("nofile", Resource::RLIMIT_NOFILE),
            ("core", Resource::RLIMIT_CORE),
        ] {
            let (soft, hard) = getrlimit(r).unwrap();
            child::report(name, format!("{soft} {hard}"));
        }
        child::finish();
    }
}
