//! `/metrics` in the Prometheus text format (prometheus-client): sandboxes
//! and terminals now, how long spawning took, bytes relayed, OOM kills and
//! each running tenant's memory. Gauges that describe the present are read
//! from the registry when scraped; counters and histograms are fed by the
//! relay and by the session observer.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use warren_domain::counters::ServiceCounters;
use warren_domain::sessions::Registry as Sessions;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    /// `to_client` (terminal output) or `from_client` (keystrokes).
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabel {
    pub user: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceStateLabel {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantServiceLabel {
    pub user: String,
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantDirectionLabel {
    pub user: String,
    /// `sent` or `received`
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WhatLabel {
    /// `sandbox` (a sandbox start) or `terminal` (a terminal, including its
    /// sandbox's start when it had none).
    pub what: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// The HTTP status answered.
    pub status: u16,
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Mutex<Registry>,
    sandboxes: Gauge,
    terminals: Gauge,
    /// Named services by state, and each one's restarts.
    services: Family<ServiceStateLabel, Gauge>,
    service_restarts: Family<TenantServiceLabel, Gauge>,
    spawn_seconds: Family<WhatLabel, Histogram>,
    relayed_bytes: Family<DirectionLabel, Counter>,
    oom_kills: Counter,
    tenant_memory: Family<TenantLabel, Gauge>,
    tenant_disk: TenantDisk,
    tenant_network: Family<TenantDirectionLabel, Gauge>,
    exec_total: Counter,
    audit: AuditMetrics,
    preview_requests: Family<StatusLabel, Counter>,
    preview_bytes: Family<DirectionLabel, Counter>,
}

/// Each running tenant's home: used and limit, bytes and inodes, from its
/// filesystem (docs/disk.md).
#[derive(Default)]
struct TenantDisk {
    bytes: Family<TenantLabel, Gauge>,
    bytes_limit: Family<TenantLabel, Gauge>,
    inodes: Family<TenantLabel, Gauge>,
    inodes_limit: Family<TenantLabel, Gauge>,
}

impl TenantDisk {
    fn clear(&self) {
        for f in [
            &self.bytes,
            &self.bytes_limit,
            &self.inodes,
            &self.inodes_limit,
        ] {
            f.clear();
        }
    }

    fn set(&self, user: &str, u: &warren_runtime::disk::DiskUsage) {
        let label = TenantLabel {
            user: user.to_string(),
        };
        let as_i64 = |v: u64| v.min(i64::MAX as u64) as i64;
        self.bytes.get_or_create(&label).set(as_i64(u.bytes_used));
        self.bytes_limit
            .get_or_create(&label)
            .set(as_i64(u.bytes_total));
        self.inodes.get_or_create(&label).set(as_i64(u.inodes_used));
        self.inodes_limit
            .get_or_create(&label)
            .set(as_i64(u.inodes_total));
    }
}

/// The audit log's backlog (see `warren_domain::audit`).
#[derive(Default)]
struct AuditMetrics {
    pending: Gauge,
    dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn spawn_histogram() -> Histogram {
    // 5 ms .. ~10 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.005, 2.0, 12,
    ))
}

impl Metrics {
    /// One request to a preview host, answered with `status`.
    pub fn preview_request(&self, status: u16) {
        self.preview_requests
            .get_or_create(&StatusLabel { status })
            .inc();
    }

    /// `n` body bytes proxied (`to_client` or `from_client`).
    pub fn preview_bytes(&self, direction: &'static str, n: usize) {
        self.preview_bytes
            .get_or_create(&DirectionLabel { direction })
            .inc_by(n as u64);
    }

    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("warren")),
            sandboxes: Gauge::default(),
            terminals: Gauge::default(),
            services: Family::default(),
            service_restarts: Family::default(),
            spawn_seconds: Family::new_with_constructor(spawn_histogram as fn() -> Histogram),
            relayed_bytes: Family::default(),
            oom_kills: Counter::default(),
            tenant_memory: Family::default(),
            tenant_disk: TenantDisk::default(),
            tenant_network: Family::default(),
            exec_total: Counter::default(),
            audit: AuditMetrics::default(),
            preview_requests: Family::default(),
            preview_bytes: Family::default(),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|e| e.into_inner());
            r.register(
                "sandboxes",
                "Sandboxes running or starting",
                m.sandboxes.clone(),
            );
            r.register("terminals", "Terminals open", m.terminals.clone());
            r.register("services", "Named services, by state", m.services.clone());
            r.register(
                "service_restarts",
                "Restarts each named service's policy made since the server started it",
                m.service_restarts.clone(),
            );
            r.register(
                "spawn_seconds",
                "Time to start a sandbox or open a terminal",
                m.spawn_seconds.clone(),
            );
            r.register(
                "relayed_bytes",
                "Bytes relayed between terminals and browsers",
                m.relayed_bytes.clone(),
            );
            r.register(
                "oom_kills",
                "Terminals and commands ended by their sandbox's memory limit",
                m.oom_kills.clone(),
            );
            r.register(
                "tenant_memory_bytes",
                "Memory in use by each running sandbox (its cgroup)",
                m.tenant_memory.clone(),
            );
            let d = &m.tenant_disk;
            r.register(
                "tenant_disk_bytes",
                "Bytes used in each running sandbox's home (its filesystem)",
                d.bytes.clone(),
            );
            r.register(
                "tenant_disk_limit_bytes",
                "What each running sandbox's home may hold, in bytes",
                d.bytes_limit.clone(),
            );
            r.register(
                "tenant_disk_inodes",
                "Inodes used in each running sandbox's home",
                d.inodes.clone(),
            );
            r.register(
                "tenant_disk_limit_inodes",
                "Inodes each running sandbox's home may hold",
                d.inodes_limit.clone(),
            );
            r.register(
                "tenant_network_bytes",
                "Bytes each running sandbox sent and received over its network",
                m.tenant_network.clone(),
            );
            r.register(
                "preview_requests",
                "Requests to preview hosts, by the status answered",
                m.preview_requests.clone(),
            );
            r.register(
                "preview_bytes",
                "Body bytes proxied to and from apps in sandboxes (previews)",
                m.preview_bytes.clone(),
            );
            r.register(
                "exec",
                "Commands run through the management API or CLI",
                m.exec_total.clone(),
            );
            r.register(
                "audit_pending",
                "Audit entries held in memory because the state database refused writes",
                m.audit.pending.clone(),
            );
            r.register(
                "audit_dropped",
                "Audit entries lost because the state database refused writes for too long",
                m.audit.dropped.clone(),
            );
        }
        m
    }

    pub fn observe_spawn(&self, what: &'static str, took: Duration) {
        self.spawn_seconds
            .get_or_create(&WhatLabel { what })
            .observe(took.as_secs_f64());
    }

    pub fn relayed(&self, direction: &'static str, bytes: usize) {
        self.relayed_bytes
            .get_or_create(&DirectionLabel { direction })
            .inc_by(bytes as u64);
    }

    pub fn oom_kill(&self) {
        self.oom_kills.inc();
    }
}

/// What the management service counts.
impl ServiceCounters for Metrics {
    fn exec(&self) {
        self.exec_total.inc();
    }

    fn oom_kill(&self) {
        Metrics::oom_kill(self);
    }

    fn audit_pending(&self, n: usize) {
        self.audit.pending.set(n as i64);
    }

    fn audit_dropped(&self, n: u64) {
        self.audit.dropped.inc_by(n);
    }
}

impl Metrics {
    /// Reads the named services' states and restarts (before `encode`).
    pub fn set_services(&self, services: &[warren_domain::manage::ServiceView]) {
        self.services.clear();
        self.service_restarts.clear();
        for state in ["starting", "running", "backing-off", "stopped", "failed"] {
            self.services
                .get_or_create(&ServiceStateLabel { state })
                .set(0);
        }
        for s in services {
            let state = match s.status.state {
                warren_domain::manage::ServiceState::Starting => "starting",
                warren_domain::manage::ServiceState::Running => "running",
                warren_domain::manage::ServiceState::BackingOff => "backing-off",
                warren_domain::manage::ServiceState::Stopped => "stopped",
                warren_domain::manage::ServiceState::Failed => "failed",
            };
            self.services
                .get_or_create(&ServiceStateLabel { state })
                .inc();
            self.service_restarts
                .get_or_create(&TenantServiceLabel {
                    user: s.user.clone(),
                    service: s.spec.name.clone(),
                })
                .set(s.status.restarts.min(i64::MAX as u64) as i64);
        }
    }

    /// The text exposition, with the present read from `registry`.
    pub fn encode(&self, registry: &Sessions) -> String {
        let users = registry.users();
        self.sandboxes.set(registry.sandbox_count() as i64);
        self.tenant_memory.clear();
        self.tenant_disk.clear();
        self.tenant_network.clear();
        let mut terminals = 0;
        for user in users {
            let s = registry.sessions_of(&user);
            terminals += s.terminals.len();
            if let Some(d) = s.sandbox.as_ref().and_then(|sb| sb.disk_usage()) {
                self.tenant_disk.set(user.as_str(), &d);
            }
            if let Some(net) = s.sandbox.as_ref().and_then(|sb| sb.network_usage()) {
                for (direction, bytes) in
                    [("sent", net.sent_bytes), ("received", net.received_bytes)]
                {
                    self.tenant_network
                        .get_or_create(&TenantDirectionLabel {
                            user: user.as_str().to_string(),
                            direction,
                        })
                        .set(bytes.min(i64::MAX as u64) as i64);
                }
            }
            if let Some(mem) = s
                .sandbox
                .and_then(|sb| sb.usage())
                .and_then(|u| u.memory_bytes)
            {
                self.tenant_memory
                    .get_or_create(&TenantLabel {
                        user: user.as_str().to_string(),
                    })
                    .set(mem as i64);
            }
        }
        self.terminals.set(terminals as i64);
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if prometheus_client::encoding::text::encode(&mut out, &r).is_err() {
            out.clear();
        }
        out
    }
}
