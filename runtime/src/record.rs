//! The one record of what a sandbox got: its tier, the limits in force (as
//! read back from the kernel), those asked for but missing and why, the
//! per-process rlimits, the seccomp profile and the Landlock level.
//!
//! The shim makes it once, after the cgroup's limits are read back, and
//! sends it in one report event (`report::Event::Sandbox`). Everything that
//! shows what a sandbox got carries this value unchanged: the WebSocket
//! `hello` frame, the stats API and `warren-info` inside the sandbox.
//!
//! The JSON is the wire shape (docs/protocol.md, docs/api.md): fields that
//! may be absent (no seccomp filter, no Landlock, nothing missing) are left
//! out rather than sent as null, so clients of the first shape still read it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cgroups::Limits;
use crate::landlock::LandlockStatus;
use crate::network::NetworkRecord;
use crate::spec::Isolation;

/// What a sandbox got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// The isolation tier built (`namespaces`, `landlock`, `none`).
    pub tier: Isolation,
    pub limits: LimitsInForce,
    /// The seccomp profile in force (`default-v2`,
    /// `default-v2+shared-host-v1`); absent when there is no filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<String>,
    /// How much of the Landlock ruleset this kernel enforces; absent when
    /// the tier uses no Landlock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landlock: Option<LandlockStatus>,
    /// The home's disk limits in force; absent when none is (a missing
    /// one is in `limits.missing` as `disk`, with its reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<crate::disk::DiskInForce>,
    /// The network the sandbox got: mode, allow and deny entries, the
    /// resolver; absent where nothing was planned (the echo backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkRecord>,
}

/// The limits a sandbox runs under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitsInForce {
    /// Enforced by the sandbox's cgroup, as read back from the kernel;
    /// `None` where nothing enforces that resource.
    pub memory_bytes: Option<u64>,
    pub cpu: Option<f64>,
    pub pids: Option<u64>,
    /// Asked for but not enforced on this host (`memory`, `cpu`, `pids`).
    pub missing: Vec<String>,
    /// Per-process limits set instead, in words (tiers without namespaces).
    pub per_process: Vec<String>,
    /// For each missing limit, why this host cannot enforce it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reasons: BTreeMap<String, String>,
    /// Limits that applied only in part (e.g. swap accounting off).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl LimitsInForce {
    /// What the cgroup enforces, `missing` (with `reasons`) what it could
    /// not; no per-process limits yet (the plan adds them: `crate::plan`).
    pub fn cgroup(in_force: Limits, missing: Vec<String>) -> LimitsInForce {
        LimitsInForce {
            memory_bytes: in_force.memory_bytes,
            cpu: in_force.cpu,
            pids: in_force.pids,
            missing,
            per_process: Vec::new(),
            reasons: BTreeMap::new(),
            notes: Vec::new(),
        }
    }

    /// With `reasons` for the missing limits.
    pub fn with_reasons(mut self, reasons: BTreeMap<String, String>) -> LimitsInForce {
        self.reasons = reasons;
        self
    }

    /// The limits the sandbox's cgroup enforces.
    pub fn in_force(&self) -> Limits {
        Limits {
            memory_bytes: self.memory_bytes,
            cpu: self.cpu,
            pids: self.pids,
        }
    }
}

/// The names of the limits `wanted` asks for (`memory`, `cpu`, `pids`).
pub fn asked_for(wanted: &Limits) -> Vec<String> {
    [
        ("memory", wanted.memory_bytes.is_some()),
        ("cpu", wanted.cpu.is_some()),
        ("pids", wanted.pids.is_some()),
    ]
    .into_iter()
    .filter(|(_, w)| *w)
    .map(|(n, _)| n.to_string())
    .collect()
}

impl SandboxRecord {
    /// Nothing enforced at all (e.g. the echo backend): every limit of
    /// `wanted` is missing.
    pub fn unlimited(tier: Isolation, wanted: &Limits) -> SandboxRecord {
        SandboxRecord {
            tier,
            limits: LimitsInForce::cgroup(Limits::NONE, asked_for(wanted)),
            seccomp: None,
            landlock: None,
            disk: None,
            network: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_without_limits_lists_what_was_wanted() {
        let a = SandboxRecord::unlimited(Isolation::None, &Limits::default());
        assert_eq!(a.limits.missing, ["memory", "cpu", "pids"]);
        assert_eq!(a.limits.in_force(), Limits::NONE);
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["tier"], "none");
    }

    #[test]
    fn the_json_round_trips_and_leaves_out_what_is_absent() {
        let r = SandboxRecord::unlimited(Isolation::None, &Limits::default());
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"tier":"none","limits":{"memory_bytes":null,"cpu":null,"pids":null,"missing":["memory","cpu","pids"],"per_process":[]}}"#
        );
        let full = SandboxRecord {
            tier: Isolation::Landlock,
            limits: LimitsInForce {
                per_process: vec!["core dumps off".into()],
                notes: vec!["swap not accounted".into()],
                ..LimitsInForce::cgroup(Limits::default(), vec!["cpu".into()])
                    .with_reasons([("cpu".into(), "no cpu controller".into())].into())
            },
            seccomp: Some("default-v2+shared-host-v1".into()),
            landlock: Some(crate::landlock::expected(4)),
            disk: Some(crate::disk::DiskInForce {
                backend: "image".into(),
                bytes: 1 << 30,
                inodes: 100_000,
            }),
            network: Some(NetworkRecord {
                mode: crate::network::NetworkMode::Public,
                allow: vec!["10.0.0.2:80".parse().unwrap()],
                deny: Vec::new(),
                resolver: Some("169.254.1.1".parse().unwrap()),
            }),
        };
        let back: SandboxRecord =
            serde_json::from_str(&serde_json::to_string(&full).unwrap()).unwrap();
        assert_eq!(back, full);
    }
}
