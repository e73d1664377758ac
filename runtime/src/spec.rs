//! `SandboxSpec`: the whole, validated description of one sandbox. The
//! server builds it, the shim receives it as JSON over an inherited fd and
//! never trusts anything inside the sandbox instead.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cgroups::Limits;
use crate::network::NetworkPolicy;
use crate::pty::WinSize;
use crate::seccomp::Profile;
use crate::tenant::Tenant;

/// The in-sandbox uid and gid every tenant gets: the first ordinary user on
/// a Debian system, so programs that care see a normal account.
pub const SANDBOX_UID: u32 = 1000;
pub const SANDBOX_GID: u32 = 1000;

/// How strongly a sandbox is isolated (docs/sandbox.md, "Isolation tiers").
/// The server picks one per host (`host::choose_tier`); the spec carries it
/// so the shim builds exactly that and reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// User, mount, pid, net, ipc, uts (and cgroup) namespaces, seccomp,
    /// Landlock, no capabilities, cgroup limits.
    #[default]
    Namespaces,
    /// For hosts that forbid user namespaces: no namespaces; Landlock
    /// confines the filesystem to the home plus read-only system paths,
    /// seccomp also refuses sockets and SysV IPC, cgroup limits and rlimits.
    Landlock,
    /// Only a working directory and an environment: development only.
    None,
}

impl Isolation {
    pub const ALL: [Isolation; 3] = [Isolation::Namespaces, Isolation::Landlock, Isolation::None];

    /// The name users see and type (`--isolation landlock`).
    pub fn name(self) -> &'static str {
        match self {
            Isolation::Namespaces => "namespaces",
            Isolation::Landlock => "landlock",
            Isolation::None => "none",
        }
    }

    /// True for the tiers without namespaces: the sandbox runs on the host's
    /// own filesystem, pid and network namespaces, as a host uid.
    pub fn shares_host(self) -> bool {
        self != Isolation::Namespaces
    }
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Isolation {
    type Err = String;
    fn from_str(s: &str) -> Result<Isolation, String> {
        Isolation::ALL
            .into_iter()
            .find(|i| i.name() == s)
            .ok_or_else(|| format!("unknown isolation {s:?}: use namespaces, landlock or none"))
    }
}

/// The sandbox's view of `/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Rootfs {
    /// The host's system directories, read-only, and a curated /etc.
    Host(HostProfile),
}

/// The `host` profile (rootfs/host.toml).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostProfile {
    /// Absolute host directories bound read-only at the same place.
    pub system: Vec<PathBuf>,
    /// Names under the host's /etc to bind read-only into the sandbox's /etc.
    pub etc: Vec<String>,
}

impl HostProfile {
    /// The profile shipped in rootfs/host.toml.
    pub fn builtin() -> HostProfile {
        toml::from_str(include_str!("../../rootfs/host.toml"))
            .expect("rootfs/host.toml is valid (checked by a unit test)")
    }
}

/// Which host ids the sandbox's user maps to (one uid, one gid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub host_uid: u32,
    pub host_gid: u32,
    /// With subordinate ids: the host uid/gid that is root inside (the
    /// caller's own), mapped with newuidmap/newgidmap.
    #[serde(default)]
    pub ns_root: Option<(u32, u32)>,
}

/// An extra bind mount (`warren run --ro-bind/--bind SRC:DST`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    pub source: PathBuf,
    pub target: PathBuf,
    pub readonly: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxSpec {
    pub tenant: Tenant,
    /// In-sandbox uid/gid of the user.
    pub uid: u32,
    pub gid: u32,
    pub id_map: IdMap,
    pub hostname: String,
    pub rootfs: Rootfs,
    /// The tenant's home on the host; bound read-write at `/workspace/<slug>`.
    pub workspace: PathBuf,
    pub binds: Vec<Bind>,
    /// Size of the sandbox's /tmp tmpfs, in MiB.
    pub tmp_size_mib: u64,
    /// The command's whole environment (nothing is inherited from the host).
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox.
    pub cwd: PathBuf,
    pub argv: Vec<String>,
    /// Give the command a terminal of this size, opened inside the sandbox
    /// and handed to the caller (see `pty`); `None`: plain stdio.
    #[serde(default)]
    pub tty: Option<WinSize>,
    /// The seccomp profile applied last before the command runs.
    #[serde(default)]
    pub seccomp: Profile,
    /// cgroup limits; those the host cannot apply are reported as missing.
    #[serde(default)]
    pub limits: Limits,
    /// Refuse to start when any limit in `limits` cannot be applied.
    #[serde(default)]
    pub require_limits: bool,
    /// Start no command: PID 1 holds the sandbox open until told to stop,
    /// and commands join it (`warren-shim join`). `argv` is then unused.
    #[serde(default)]
    pub hold: bool,
    /// The isolation tier to build.
    #[serde(default)]
    pub isolation: Isolation,
    /// The home's disk limits; `None`: none asked (docs/disk.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<crate::disk::DiskSpec>,
    /// What the sandbox may reach over the network (docs/network.md).
    #[serde(default)]
    pub network: NetworkPolicy,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("no command given")]
    NoCommand,
    #[error("{what} contains a NUL byte")]
    Nul { what: &'static str },
    #[error("{what} must be an absolute path without '..': {path:?}")]
    BadPath { what: &'static str, path: PathBuf },
    #[error("bind target {0:?} is managed by warren and cannot be replaced")]
    ReservedTarget(PathBuf),
    #[error("hostname {0:?} is not a valid host name")]
    BadHostname(String),
    #[error("environment variable name {0:?} is invalid")]
    BadEnvName(String),
    #[error("/tmp size must be between 1 and 65536 MiB")]
    BadTmpSize,
    #[error("{0}")]
    Limits(String),
    #[error(
        "bind {from:?} -> {target:?}: the {tier} isolation tier has no mount namespace, \
         so a path can only be shared at its own place (SRC:SRC)"
    )]
    BindElsewhere {
        tier: Isolation,
        from: PathBuf,
        target: PathBuf,
    },
    #[error("subordinate ids need a user namespace, which the {0} isolation tier does not have")]
    SubordinateIds(Isolation),
    #[error(
        "workspace {0:?} lies under a directory every sandbox of the landlock tier may read; \
         put the workspace root elsewhere (e.g. under /var/lib or /srv)"
    )]
    WorkspaceReadable(PathBuf),
}

/// Targets the runtime builds itself; a bind over them would undo isolation.
const RESERVED_TARGETS: &[&str] = &["/", "/proc", "/sys", "/dev", "/etc", "/workspace"];

impl SandboxSpec {
    /// The tenant's home as the sandbox sees it: `/workspace/<slug>` in the
    /// namespace tier, the host path where nothing is mounted.
    pub fn home(&self) -> PathBuf {
        if self.isolation.shares_host() {
            self.workspace.clone()
        } else {
            self.tenant.home_in_sandbox()
        }
    }

    /// TMPDIR of the tiers without namespaces: the host's /tmp is shared by
    /// every tenant, so each gets a private directory in its home.
    pub fn private_tmp(&self) -> PathBuf {
        self.home().join(".tmp")
    }

    /// The uid and gid the sandbox's processes run as, in the namespace
    /// they run in: the sandbox user inside a user namespace, else the
    /// tenant's host ids.
    pub fn process_ids(&self) -> (u32, u32) {
        if self.isolation.shares_host() {
            (self.id_map.host_uid, self.id_map.host_gid)
        } else {
            (self.uid, self.gid)
        }
    }

    /// Checks everything the shim relies on. Called by the server before
    /// sending and by the shim after receiving.
    pub fn validate(&self) -> Result<(), SpecError> {
        if !self.hold && (self.argv.is_empty() || self.argv[0].is_empty()) {
            return Err(SpecError::NoCommand);
        }
        if self.argv.iter().any(|a| a.contains('\0')) {
            return Err(SpecError::Nul { what: "command" });
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(SpecError::BadEnvName(k.clone()));
            }
            if v.contains('\0') {
                return Err(SpecError::Nul {
                    what: "environment",
                });
            }
        }
        check_abs("workspace", &self.workspace)?;
        check_abs("cwd", &self.cwd)?;
        for b in &self.binds {
            check_abs("bind source", &b.source)?;
            check_abs("bind target", &b.target)?;
            if RESERVED_TARGETS
                .iter()
                .any(|r| b.target == Path::new(r) || (*r != "/" && b.target.starts_with(r)))
            {
                return Err(SpecError::ReservedTarget(b.target.clone()));
            }
        }
        let Rootfs::Host(profile) = &self.rootfs;
        for p in &profile.system {
            check_abs("system path", p)?;
        }
        for name in &profile.etc {
            if name.is_empty() || name.contains('/') || name.starts_with('.') {
                return Err(SpecError::BadPath {
                    what: "etc entry",
                    path: name.into(),
                });
            }
        }
        if !valid_hostname(&self.hostname) {
            return Err(SpecError::BadHostname(self.hostname.clone()));
        }
        if !(1..=65536).contains(&self.tmp_size_mib) {
            return Err(SpecError::BadTmpSize);
        }
        self.limits
            .validate()
            .map_err(|e| SpecError::Limits(e.to_string()))?;
        if let Some(d) = &self.disk {
            d.limits.validate().map_err(SpecError::Limits)?;
        }
        if self.isolation.shares_host() {
            self.validate_shared_host()?;
        }
        Ok(())
    }

    /// Without namespaces nothing is mounted and nobody is mapped.
    fn validate_shared_host(&self) -> Result<(), SpecError> {
        if let Some(b) = self.binds.iter().find(|b| b.source != b.target) {
            return Err(SpecError::BindElsewhere {
                tier: self.isolation,
                from: b.source.clone(),
                target: b.target.clone(),
            });
        }
        if self.id_map.ns_root.is_some() {
            return Err(SpecError::SubordinateIds(self.isolation));
        }
        if self.isolation == Isolation::Landlock
            && crate::landlock::readable_in_shared_host(&self.workspace)
        {
            return Err(SpecError::WorkspaceReadable(self.workspace.clone()));
        }
        Ok(())
    }
}

fn check_abs(what: &'static str, p: &Path) -> Result<(), SpecError> {
    let ok = p.is_absolute()
        && p.components()
            .all(|c| !matches!(c, Component::ParentDir | Component::CurDir))
        && !p.as_os_str().as_encoded_bytes().contains(&0);
    if ok {
        Ok(())
    } else {
        Err(SpecError::BadPath {
            what,
            path: p.to_path_buf(),
        })
    }
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 63
        && h.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        && !h.starts_with('-')
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample() -> SandboxSpec {
        let tenant = Tenant::parse("alice").unwrap();
        SandboxSpec {
            hostname: tenant.hostname(),
            cwd: tenant.home_in_sandbox(),
            tenant,
            uid: SANDBOX_UID,
            gid: SANDBOX_GID,
            id_map: IdMap {
                host_uid: 1_500_000_000,
                host_gid: 1_500_000_000,
                ns_root: None,
            },
            rootfs: Rootfs::Host(HostProfile::builtin()),
            workspace: "/var/lib/warren/workspaces/alice".into(),
            binds: vec![],
            tmp_size_mib: 256,
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            argv: vec!["/bin/true".into()],
            tty: None,
            seccomp: Profile::Default,
            limits: Limits::default(),
            require_limits: false,
            hold: false,
            isolation: Isolation::Namespaces,
            disk: None,
            network: NetworkPolicy::none(),
        }
    }

    #[test]
    fn builtin_profile_parses_and_sample_is_valid() {
        let p = HostProfile::builtin();
        assert!(p.system.contains(&PathBuf::from("/usr")));
        assert!(p.etc.iter().any(|e| e == "ld.so.cache"));
        sample().validate().unwrap();
    }

    #[test]
    fn spec_survives_json() {
        let s = sample();
        let back: SandboxSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(s, back);
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut s = sample();
        s.argv.clear();
        assert_eq!(s.validate(), Err(SpecError::NoCommand));

        let mut s = sample();
        s.binds.push(Bind {
            source: "/opt".into(),
            target: "/proc/sys".into(),
            readonly: true,
        });
        assert!(matches!(s.validate(), Err(SpecError::ReservedTarget(_))));

        let mut s = sample();
        s.binds.push(Bind {
            source: "/opt/../etc".into(),
            target: "/opt".into(),
            readonly: true,
        });
        assert!(matches!(s.validate(), Err(SpecError::BadPath { .. })));

        let mut s = sample();
        s.hostname = "a.b/c".into();
        assert!(matches!(s.validate(), Err(SpecError::BadHostname(_))));

        let mut s = sample();
        s.env.push(("A=B".into(), "x".into()));
        assert!(matches!(s.validate(), Err(SpecError::BadEnvName(_))));

        let mut s = sample();
        s.cwd = "relative".into();
        assert!(matches!(s.validate(), Err(SpecError::BadPath { .. })));
    }

    #[test]
    fn shared_host_tiers_have_no_mounts_and_no_maps() {
        let mut s = sample();
        s.isolation = Isolation::Landlock;
        s.validate().unwrap();
        assert_eq!(s.home(), s.workspace);
        assert_eq!(s.process_ids(), (1_500_000_000, 1_500_000_000));

        // A bind can only share a path at its own place.
        s.binds.push(Bind {
            source: "/srv/data".into(),
            target: "/data".into(),
            readonly: true,
        });
        assert!(matches!(s.validate(), Err(SpecError::BindElsewhere { .. })));
        s.binds[0].target = "/srv/data".into();
        s.validate().unwrap();

        let mut s = sample();
        s.isolation = Isolation::None;
        s.id_map.ns_root = Some((1000, 1000));
        assert_eq!(
            s.validate(),
            Err(SpecError::SubordinateIds(Isolation::None))
        );

        // Other homes would be readable under a system directory.
        let mut s = sample();
        s.isolation = Isolation::Landlock;
        s.workspace = "/opt/warren/ws/alice".into();
        assert!(matches!(s.validate(), Err(SpecError::WorkspaceReadable(_))));
        s.isolation = Isolation::Namespaces;
        s.validate().unwrap();
    }

    #[test]
    fn isolation_names_round_trip() {
        for i in Isolation::ALL {
            assert_eq!(i.name().parse::<Isolation>().unwrap(), i);
            assert_eq!(
                serde_json::to_string(&i).unwrap(),
                format!("\"{}\"", i.name())
            );
        }
        assert!("auto".parse::<Isolation>().is_err());
        // Specs from before the field existed are the namespace tier.
        let mut v = serde_json::to_value(sample()).unwrap();
        v.as_object_mut().unwrap().remove("isolation");
        let back: SandboxSpec = serde_json::from_value(v).unwrap();
        assert_eq!(back.isolation, Isolation::Namespaces);
    }
}
