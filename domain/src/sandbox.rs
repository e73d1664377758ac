//! From "user X wants to run Y" to a validated `SandboxSpec`: tenant slug,
//! host uid (allocated once, in the state database), workspace on disk.
//! `warren run`, `warren doctor` and the server all come through here.

use std::path::PathBuf;

use warren_runtime::cgroups::Limits;
use warren_runtime::disk::{self, DiskBackend, DiskLimits, DiskSpec};
use warren_runtime::idmap::IdRange;
use warren_runtime::pty::WinSize;
use warren_runtime::spec::{
    Bind, HostProfile, IdMap, Isolation, Rootfs, SandboxSpec, SANDBOX_GID, SANDBOX_UID,
};
use warren_runtime::tenant::{Tenant, TenantError};
use warren_runtime::workspace::{self, WorkspaceError};

use crate::state::{State, StateError, TenantRecord};
use warren_runtime::network::NetworkPolicy;

/// Where state and homes live, and how host uids are handed out.
#[derive(Debug, Clone)]
pub struct Settings {
    pub state_dir: PathBuf,
    pub workspace_root: PathBuf,
    pub uid_base: u32,
}

/// What the caller asks for.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub user: String,
    pub argv: Vec<String>,
    pub binds: Vec<Bind>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub tmp_size_mib: u64,
    pub term: Option<String>,
    /// A terminal of this size for the command (see `runtime::pty`).
    pub tty: Option<WinSize>,
    /// The server's limits; the tenant's overrides (state database) win.
    pub limits: Limits,
    /// Refuse to run without every limit in `limits`.
    pub require_limits: bool,
    /// Start no command; keep the sandbox for commands to join.
    pub hold: bool,
    /// The tier, chosen once per host (`host::choose_tier`).
    pub isolation: Isolation,
    /// The server's disk limits for homes; the tenant's overrides win.
    pub disk: DiskLimits,
    pub disk_backend: DiskBackend,
    /// The server's network policy; the tenant's overrides win.
    pub network: NetworkPolicy,
}

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("invalid user id: {0}")]
    Tenant(#[from] TenantError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("workspace: {0}")]
    Workspace(#[from] WorkspaceError),
    #[error("{0}")]
    Spec(#[from] warren_runtime::spec::SpecError),
    #[error("tenant number {0} is beyond this user's /etc/subuid or /etc/subgid range; widen the ranges")]
    SubidsExhausted(u32),
    #[error(transparent)]
    Ids(#[from] warren_runtime::idmap::IdError),
    #[error(
        "{what} {path:?} lies under a directory every sandbox of the landlock tier may read, \
         and the tenants share this server's uid; move it (e.g. under /var/lib or /srv)"
    )]
    ReadableInLandlockTier { what: &'static str, path: PathBuf },
    #[error(
        "the workspace root {root:?} lies inside the state directory {state:?}, which only \
         warren's own uid may enter; without namespaces, as root, each tenant's host uid walks \
         to its home by path, so put the workspace root elsewhere \
         (e.g. --workspace-root /var/lib/warren-workspaces)"
    )]
    WorkspaceInsideState { root: PathBuf, state: PathBuf },
}

/// The tiers without namespaces share the host's filesystem: with one uid
/// for the server and every tenant, only Landlock keeps them out of the
/// state and the workspace root, and it lets every sandbox read the system
/// directories. So those must not hold either.
pub fn check_shared_host_paths(
    isolation: Isolation,
    range: IdRange,
    paths: &[(&'static str, &std::path::Path)],
) -> Result<(), PrepareError> {
    if isolation != Isolation::Landlock || range.distinct_per_tenant() {
        return Ok(());
    }
    for (what, path) in paths {
        if warren_runtime::landlock::readable_in_shared_host(path) {
            return Err(PrepareError::ReadableInLandlockTier {
                what,
                path: path.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// Creates the workspace root, or brings an existing one to its mode, and
/// logs a change. Where the tenants' own host uids reach their homes by
/// path (no mount namespace, as root or as root with delegated ids under
/// `unshare --map-auto`) others may pass the root (0711);
/// everywhere else nobody but warren's own uid may (0700).
pub fn ensure_workspace_root(
    settings: &Settings,
    isolation: Isolation,
) -> Result<(), PrepareError> {
    let tenants_walk_in = isolation.shares_host()
        && matches!(
            IdRange::of_current_process("/proc".as_ref()),
            IdRange::Any | IdRange::Delegated { .. }
        );
    let root = &settings.workspace_root;
    let mode = if tenants_walk_in {
        if root.starts_with(&settings.state_dir) {
            return Err(PrepareError::WorkspaceInsideState {
                root: root.clone(),
                state: settings.state_dir.clone(),
            });
        }
        workspace::ROOT_MODE_TRAVERSABLE
    } else {
        workspace::ROOT_MODE_PRIVATE
    };
    if let Some(c) = workspace::ensure_root(root, mode)? {
        tracing::warn!(
            path = %root.display(),
            "workspace root was mode {:04o}; changed to {:04o}",
            c.was,
            c.now
        );
    }
    Ok(())
}

/// The host ids a tenant's sandbox user maps to, given what we may map.
/// `allocated_uid` is the tenant's allocation (`uid_base + n`); with
/// subordinate ranges the tenant gets the n-th id of each range.
pub fn host_ids(range: IdRange, allocated_uid: u32, uid_base: u32) -> Result<IdMap, PrepareError> {
    Ok(match range {
        IdRange::Any => IdMap {
            host_uid: allocated_uid,
            host_gid: allocated_uid,
            ns_root: None,
        },
        IdRange::Single { uid, gid } => IdMap {
            host_uid: uid,
            host_gid: gid,
            ns_root: None,
        },
        IdRange::ParentRootOnly => return Err(warren_runtime::idmap::IdError::OnlyHostRoot.into()),
        // Ours to hand out: the n-th id of the range, mapped by the shim.
        IdRange::Delegated { uids, gids } => {
            let n = allocated_uid.saturating_sub(uid_base);
            if n >= uids.count.min(gids.count) {
                return Err(PrepareError::SubidsExhausted(n));
            }
            IdMap {
                host_uid: uids.start + n,
                host_gid: gids.start + n,
                ns_root: None,
            }
        }
        IdRange::Subordinate {
            uid,
            gid,
            uids,
            gids,
        } => {
            let n = allocated_uid.saturating_sub(uid_base);
            if n >= uids.count.min(gids.count) {
                return Err(PrepareError::SubidsExhausted(n));
            }
            IdMap {
                host_uid: uids.start + n,
                host_gid: gids.start + n,
                ns_root: Some((uid, gid)),
            }
        }
    })
}

/// The ids this process may give tenants in this tier.
pub fn tenant_id_range(isolation: Isolation) -> IdRange {
    match (isolation, IdRange::of_current_process("/proc".as_ref())) {
        // Subordinate ids are mapped into a user namespace; without one the
        // tenant runs as our own ids.
        (i, IdRange::Subordinate { uid, gid, .. }) if i.shares_host() => {
            IdRange::Single { uid, gid }
        }
        (_, r) => r,
    }
}

/// A tenant ready for a sandbox: in the state database, with a home.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub tenant: Tenant,
    pub record: TenantRecord,
    pub id_map: IdMap,
    /// The home on the host.
    pub workspace: PathBuf,
}

/// Validates the user id, allocates (or finds) the host uid and creates
/// the home if needed: a tenant's get-or-create. The tier decides which
/// ids the tenant gets.
pub fn provision(
    settings: &Settings,
    user: &str,
    isolation: Isolation,
) -> Result<Provisioned, PrepareError> {
    let tenant = Tenant::parse(user)?;
    let range = tenant_id_range(isolation);
    // Before anything is written: no tenant may become host root.
    if let Some(refused) = range.refusal() {
        return Err(refused.into());
    }
    check_shared_host_paths(
        isolation,
        range,
        &[
            ("the state directory", &settings.state_dir),
            ("the workspace root", &settings.workspace_root),
        ],
    )?;
    // Before the state: a refusal here must not have allocated anything.
    ensure_workspace_root(settings, isolation)?;
    let record = State::open(&settings.state_dir)?.get_or_create(&tenant, settings.uid_base)?;
    let id_map = host_ids(range, record.host_uid, settings.uid_base)?;
    // With subordinate ids we create the home as ourselves (root inside);
    // the sandbox hands it to the tenant's id on first use.
    let (create_as, final_owner) = match id_map.ns_root {
        Some(root) => (root, id_map.host_uid),
        None => ((id_map.host_uid, id_map.host_gid), id_map.host_uid),
    };
    let workspace =
        workspace::ensure_home(&settings.workspace_root, &tenant, create_as, final_owner)?;
    Ok(Provisioned {
        tenant,
        record,
        id_map,
        workspace,
    })
}

/// Builds the spec: validates the user id, allocates (or finds) the host
/// uid, creates the home if needed and fills in the environment.
pub fn prepare(settings: &Settings, req: &Request) -> Result<SandboxSpec, PrepareError> {
    let Provisioned {
        tenant,
        record,
        id_map,
        workspace,
    } = provision(settings, &req.user, req.isolation)?;
    let shares_host = req.isolation.shares_host();
    // Without a mount namespace the home is where it is on the host.
    let home = if shares_host {
        workspace.clone()
    } else {
        tenant.home_in_sandbox()
    };
    let hostname = tenant.hostname();
    let system_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let mut env: Vec<(String, String)> = vec![
        ("HOME".into(), home.display().to_string()),
        ("USER".into(), tenant.slug.clone()),
        ("LOGNAME".into(), tenant.slug.clone()),
        ("SHELL".into(), "/bin/bash".into()),
        (
            "PATH".into(),
            if shares_host {
                // The shim adds warren-info's directory (see runtime::info).
                system_path.to_string()
            } else {
                format!("{system_path}:{}", warren_runtime::info::INFO_DIR)
            },
        ),
        (
            "TERM".into(),
            req.term.clone().unwrap_or_else(|| "xterm-256color".into()),
        ),
        ("LANG".into(), "C.UTF-8".into()),
    ];
    if shares_host {
        // The host's /tmp is shared by every tenant (and not writable in
        // the landlock tier): a private one in the home, made by the shim
        // (`SandboxSpec::private_tmp`).
        env.push(("TMPDIR".into(), home.join(".tmp").display().to_string()));
    } else {
        // Only true where the sandbox has a uts namespace of its own.
        env.push(("HOSTNAME".into(), hostname.clone()));
    }
    for (k, v) in &req.env {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    let spec = SandboxSpec {
        cwd: req.cwd.clone().unwrap_or_else(|| home.clone()),
        tenant,
        uid: SANDBOX_UID,
        gid: SANDBOX_GID,
        id_map,
        hostname,
        rootfs: Rootfs::Host(HostProfile::builtin()),
        workspace,
        binds: req.binds.clone(),
        tmp_size_mib: req.tmp_size_mib,
        env,
        argv: req.argv.clone(),
        tty: req.tty,
        seccomp: Default::default(),
        limits: record.limits.apply(req.limits),
        require_limits: req.require_limits,
        hold: req.hold,
        isolation: req.isolation,
        disk: disk_spec(settings, &record, req),
        network: record.limits.network_policy(&req.network),
    };
    spec.validate()?;
    Ok(spec)
}

/// The home's disk limits for this tenant, or `None` when none applies.
fn disk_spec(settings: &Settings, record: &TenantRecord, req: &Request) -> Option<DiskSpec> {
    let limits = record.limits.apply_disk(req.disk);
    (!limits.is_none()).then(|| DiskSpec {
        limits,
        backend: req.disk_backend,
        images: disk::images_dir(&settings.workspace_root),
        project: record.host_uid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_maps_allocation_others_map_themselves() {
        assert_eq!(host_ids(IdRange::Any, 7, 0).unwrap().host_uid, 7);
        let m = host_ids(
            IdRange::Single {
                uid: 1000,
                gid: 1001,
            },
            7,
            0,
        )
        .unwrap();
        assert_eq!((m.host_uid, m.host_gid, m.ns_root), (1000, 1001, None));
        use warren_runtime::idmap::SubRange;
        let sub = IdRange::Subordinate {
            uid: 1000,
            gid: 1001,
            uids: SubRange {
                start: 200_000,
                count: 10,
            },
            gids: SubRange {
                start: 300_000,
                count: 8,
            },
        };
        let m = host_ids(sub, 107, 100).unwrap();
        assert_eq!(
            (m.host_uid, m.host_gid, m.ns_root),
            (200_007, 300_007, Some((1000, 1001)))
        );
        assert!(matches!(
            host_ids(sub, 108, 100),
            Err(PrepareError::SubidsExhausted(8))
        ));
        // `unshare --map-auto --map-root-user`: our namespace's other ids.
        let ids = SubRange {
            start: 1,
            count: 65535,
        };
        let delegated = IdRange::Delegated {
            uids: ids,
            gids: ids,
        };
        let m = host_ids(delegated, 102, 100).unwrap();
        assert_eq!((m.host_uid, m.host_gid, m.ns_root), (3, 3, None));
        assert!(matches!(
            host_ids(IdRange::ParentRootOnly, 102, 100),
            Err(PrepareError::Ids(_))
        ));
    }

    #[test]
    fn prepare_builds_a_valid_spec_and_home() {
        let d = tempfile::tempdir().unwrap();
        let settings = Settings {
            state_dir: d.path().join("state"),
            workspace_root: d.path().join("ws"),
            uid_base: 4_000_000_000,
        };
        let req = Request {
            user: "alice".into(),
            argv: vec!["id".into()],
            env: vec![("LANG".into(), "fr_FR.UTF-8".into())],
            tmp_size_mib: 64,
            ..Default::default()
        };
        // Not root in the initial namespace: the home is ours. As root the
        // allocated uid (4e9) would own it; both are valid here.
        let spec = prepare(&settings, &req).unwrap();
        assert_eq!(spec.cwd, PathBuf::from("/workspace/alice"));
        assert!(spec.workspace.is_dir());
        assert_eq!(spec.env.iter().filter(|(k, _)| k == "LANG").count(), 1);
        assert!(spec.env.contains(&("LANG".into(), "fr_FR.UTF-8".into())));
        let bad = Request {
            user: "../etc".into(),
            ..req
        };
        assert!(matches!(
            prepare(&settings, &bad),
            Err(PrepareError::Tenant(_))
        ));
        assert!(!d.path().join("etc").exists());
    }

    #[test]
    fn shared_host_tiers_use_host_paths() {
        let d = tempfile::tempdir().unwrap();
        let settings = Settings {
            state_dir: d.path().join("state"),
            workspace_root: d.path().join("ws"),
            uid_base: 4_000_000_000,
        };
        let req = Request {
            user: "alice".into(),
            argv: vec!["id".into()],
            tmp_size_mib: 64,
            isolation: Isolation::Landlock,
            ..Default::default()
        };
        let spec = prepare(&settings, &req).unwrap();
        let home = settings.workspace_root.join("alice");
        assert_eq!(spec.cwd, home);
        assert_eq!(spec.home(), home);
        let env = |k: &str| {
            spec.env
                .iter()
                .find(|(ek, _)| ek == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(env("HOME"), Some(home.display().to_string()));
        assert_eq!(
            env("TMPDIR"),
            Some(spec.private_tmp().display().to_string())
        );
        assert_eq!(env("HOSTNAME"), None);
        assert!(!env("PATH").unwrap().contains("/opt/warren"));
    }

    #[test]
    fn landlock_tier_refuses_state_where_tenants_can_read() {
        let shared = IdRange::Single {
            uid: 1000,
            gid: 1000,
        };
        let bad = [(
            "the state directory",
            std::path::Path::new("/opt/warren/state"),
        )];
        assert!(matches!(
            check_shared_host_paths(Isolation::Landlock, shared, &bad),
            Err(PrepareError::ReadableInLandlockTier { .. })
        ));
        // Root gives each tenant its own uid: file modes keep them out.
        check_shared_host_paths(Isolation::Landlock, IdRange::Any, &bad).unwrap();
        check_shared_host_paths(Isolation::Namespaces, shared, &bad).unwrap();
    }
}
