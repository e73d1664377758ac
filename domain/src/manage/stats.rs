//! `stats`: what a tenant uses now (cgroup counters, home size).

use std::time::Instant;

use serde::{Deserialize, Serialize};
use warren_runtime::cgroups::{Limits, Usage};
use warren_runtime::disk::{self, DiskLimits, DiskUsage};
use warren_runtime::record::SandboxRecord;
use warren_runtime::tenant::Tenant;
use warren_runtime::workspace::{self, HomeUsage, WalkBounds};

use crate::backend::{ExecChild, ExecCommand, ExecStdio};
use crate::exec::{self, EndReason};
use crate::user::UserId;

use super::{ManageError, Manager, Runner, UserView, STATS_WALK_ENTRIES, STATS_WALK_TIME};

/// `stats`: what a tenant uses now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stats {
    pub user: UserView,
    /// `running`, `starting` or `stopped`.
    pub sandbox: String,
    /// The sandbox's isolation tier (when running).
    pub tier: Option<String>,
    /// The limits in force (when running: as applied; else what the next
    /// sandbox will ask for).
    pub limits: Limits,
    /// Limits that could not be applied on this host, and why.
    pub limits_missing: Vec<String>,
    pub limits_reasons: Vec<String>,
    /// What the running sandbox got, as its shim recorded it: the record
    /// the `hello` frame and `warren-info --json` carry too. The fields
    /// above are read from it while the sandbox runs.
    pub record: Option<SandboxRecord>,
    /// From the sandbox's cgroup (when running and it has one).
    pub memory_bytes: Option<u64>,
    pub cpu_usec: Option<u64>,
    pub pids: Option<u64>,
    /// Bytes the running sandbox sent and received over its network (when
    /// it has one: `public`).
    pub network: Option<warren_runtime::network::NetUsage>,
    pub terminals: usize,
    /// The tenant's named services: name, state, restarts.
    pub services: Vec<super::ServiceBrief>,
    pub running_commands: usize,
    pub workspace: Option<HomeUsage>,
    /// Why `workspace` is missing.
    pub workspace_error: Option<String>,
    /// The home's disk limits (running: as its sandbox asked them; else
    /// what the next sandbox will ask for).
    pub disk_limits: DiskLimits,
    /// The home's disk usage from its filesystem (the mounted image, or
    /// its superblock); `None` without a disk image.
    pub disk: Option<DiskUsage>,
}

impl Manager {
    pub async fn stats(&self, id: &str) -> Result<Stats, ManageError> {
        let r = self.record(id)?;
        let user = self.view(r.clone());
        let (sandbox, running_commands) = match &self.runner {
            Runner::Registry(reg) => {
                let s = reg.sessions_of(
                    &UserId::parse(id).map_err(|e| ManageError::BadRequest(e.to_string()))?,
                );
                (s.sandbox, s.running_commands)
            }
            Runner::OneShot(_) => (None, 0),
        };
        let record = sandbox.as_ref().map(|s| s.record().clone());
        let usage = sandbox
            .as_ref()
            .and_then(|s| s.usage())
            .unwrap_or(Usage::default());
        let network = sandbox.as_ref().and_then(|s| s.network_usage());
        let tenant = Tenant::parse(id).map_err(|e| ManageError::BadRequest(e.to_string()))?;
        let bounds = WalkBounds {
            deadline: Instant::now() + STATS_WALK_TIME,
            max_entries: STATS_WALK_ENTRIES,
            max_depth: 256,
        };
        let root = self.settings.workspace_root.clone();
        let images = disk::images_dir(&root);
        let (home, slug) = (tenant.workspace_in(&root), tenant.slug.clone());
        let disk = match sandbox.as_ref().and_then(|s| s.disk_usage()) {
            Some(u) => Some(u),
            None => {
                tokio::task::spawn_blocking(move || disk::usage(&images, &home, &slug, None))
                    .await?
            }
        };
        // Not mounted, the home's content is in its image: the directory
        // under it is empty, and `disk` tells what it holds.
        let in_image = disk.is_some_and(|d| !d.mounted);
        let measured = match in_image {
            true => Err("the home is in its disk image, which no sandbox has mounted".to_string()),
            false => {
                tokio::task::spawn_blocking(move || workspace::measure(&root, &tenant, bounds))
                    .await?
                    .map_err(|e| e.to_string())
            }
        };
        let (workspace, workspace_error) = match measured {
            Ok(u) => (Some(u), None),
            // With subordinate ids the home belongs to an id the server
            // cannot read, and a disk image is not mounted on the host
            // between sandboxes: count from inside, as its owner, when the
            // user's sandbox is running (stats never start one).
            Err(e) => {
                let child = match (&sandbox, &self.runner) {
                    (Some(sb), _) => Some(sb.exec(find_command(), ExecStdio::piped()).await),
                    // The command line may start a one-shot sandbox for it.
                    (None, Runner::OneShot(b)) => {
                        let user = UserId::parse(id)
                            .map_err(|e| ManageError::BadRequest(e.to_string()))?;
                        Some(b.exec_once(&user, find_command(), ExecStdio::piped()).await)
                    }
                    (None, Runner::Registry(_)) => None,
                };
                match child {
                    Some(Ok(child)) => (Some(measure_inside(child).await), None),
                    Some(Err(inner)) => (None, Some(format!("{e}; from inside: {inner}"))),
                    None => (
                        None,
                        Some(format!(
                            "{e} (start the user's sandbox to count from inside)"
                        )),
                    ),
                }
            }
        };
        Ok(self.stats_of(
            r,
            user,
            record,
            usage,
            network,
            running_commands,
            workspace,
            workspace_error,
            disk,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn stats_of(
        &self,
        r: crate::state::TenantRecord,
        user: UserView,
        record: Option<SandboxRecord>,
        usage: Usage,
        network: Option<warren_runtime::network::NetUsage>,
        running_commands: usize,
        workspace: Option<HomeUsage>,
        workspace_error: Option<String>,
        disk: Option<DiskUsage>,
    ) -> Stats {
        Stats {
            disk_limits: r.limits.apply_disk(self.disk),
            disk,
            sandbox: user.sandbox.clone(),
            terminals: user.terminals,
            services: self.service_briefs(&user.id),
            user,
            tier: record.as_ref().map(|r| r.tier.name().to_string()),
            limits: record
                .as_ref()
                .map_or(r.limits.apply(self.defaults), |r| r.limits.in_force()),
            limits_missing: record
                .as_ref()
                .map_or(Vec::new(), |r| r.limits.missing.clone()),
            limits_reasons: record
                .as_ref()
                .map_or(Vec::new(), |r| r.limits.reasons.values().cloned().collect()),
            record,
            memory_bytes: usage.memory_bytes,
            cpu_usec: usage.cpu_usec,
            pids: usage.pids,
            network,
            running_commands,
            workspace,
            workspace_error,
        }
    }
}

/// Counts a home from inside its sandbox with `find -P` (never follows a
/// symlink), bounded like the host-side walk.
fn find_command() -> ExecCommand {
    ExecCommand {
        argv: ["find", ".", "-mindepth", "1", "-printf", "%y %s\n"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    }
}

async fn measure_inside(child: ExecChild) -> HomeUsage {
    let r = exec::collect(child, Vec::new(), STATS_WALK_TIME, 64 << 20).await;
    let mut u = HomeUsage {
        complete: r.reason == EndReason::Exit && r.exit_code == Some(0) && !r.stdout_truncated,
        ..Default::default()
    };
    for line in r.stdout.lines() {
        let (kind, size) = line.split_once(' ').unwrap_or((line, "0"));
        match kind {
            "f" => {
                u.files += 1;
                u.bytes += size.parse::<u64>().unwrap_or(0);
            }
            "d" => u.dirs += 1,
            "l" => u.symlinks += 1,
            _ => u.other += 1,
        }
    }
    u
}
