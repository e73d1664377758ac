//! The management API's wire types: what `/api` reads and writes, each
//! with its OpenAPI schema (the document is generated from them:
//! [`super::api_doc`]). The domain keeps its own types; responses are
//! converted here by destructuring `From`s, so a field added to a domain
//! type fails to compile until its wire type (and so the document) says it
//! too. Where the derive cannot say a rule (a number or a word, a first
//! item unlike the rest, rules on map keys), the schema is built by hand
//! next to the type it describes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{
    AnyOfBuilder, ArrayBuilder, ObjectBuilder, OneOfBuilder, SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr, Schema};
use utoipa::{Number, PartialSchema, ToSchema};
use warren_runtime::landlock::Level;
use warren_runtime::spec::Isolation;
use warren_runtime::{cgroups, record, workspace};

use warren_domain::sessions;
use warren_domain::state::LimitValue;
use warren_domain::{exec, manage, state};

/// A type whose schema is built by hand, as a named component.
macro_rules! hand_built_schema {
    ($ty:ty, $name:expr, $schema:expr) => {
        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                $schema
            }
        }
        impl ToSchema for $ty {
            fn name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }
        }
    };
}

/// A schema of one type, to build on.
fn of_type(t: impl Into<SchemaType>) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(t)
}

/// A string without NUL (`^[^\u0000]*$`, as JSON Schema's regex reads it).
fn no_nul() -> ObjectBuilder {
    of_type(Type::String).pattern(Some(r"^[^\u0000]*$"))
}

/// A limit override: a number within bounds, `"none"` or `"default"`.
fn limit_value(
    description: &str,
    number: Type,
    minimum: impl Into<Number>,
    maximum: impl Into<Number>,
) -> RefOr<Schema> {
    AnyOfBuilder::new()
        .description(Some(description))
        .item(
            of_type(number)
                .minimum(Some(minimum))
                .maximum(Some(maximum)),
        )
        .item(of_type(SchemaType::AnyValue).enum_values(Some(["none", "default"])))
        .into()
}

/// Every error response.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// What went wrong, for a person
    pub error: String,
}

/// A tenant id as sent (runtime::tenant decides; the pattern says the same
/// rule, and server/tests/openapi.rs keeps the two in step).
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct UserIdString(pub String);

/// The rule of `runtime::tenant` as an ECMA-262 / Python `re` pattern.
const USER_ID_PATTERN: &str = "^(?! )(?!.* $)(?!\\.)(?!.*\\.\\.)(?!(?:root|daemon|bin|sys|sync|games|man|lp|mail|news|uucp|proxy|www-data|backup|list|irc|gnats|nobody|nogroup|systemd|messagebus|sshd|admin|adm|wheel|sudo|staff|users|tty|disk|kmem|shadow|utmp|warren|workspace)$)(?![a-z_][a-z0-9_-]{0,22}-[0-9a-f]{8}$)[^/\\\\\\u0000-\\u001f\\u007f-\\u009f\\u00a0\\u00ad\\u034f\\u0600-\\u0605\\u061c\\u06dd\\u070f\\u0890-\\u0891\\u08e2\\u115f-\\u1160\\u1680\\u17b4-\\u17b5\\u180b-\\u180f\\u2000-\\u200f\\u2028-\\u202f\\u205f-\\u206f\\u3000\\u3164\\ufe00-\\ufe0f\\ufeff\\uffa0\\ufff0-\\ufffb\\ufffe-\\uffff\u{110BD}\u{110CD}\u{13430}-\u{1343F}\u{1BCA0}-\u{1BCA3}\u{1D173}-\u{1D17A}\u{E0000}-\u{E0FFF}]{1,64}(?![\\s\\S])";

hand_built_schema!(
    UserIdString,
    "UserIdString",
    of_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(64))
        .pattern(Some(USER_ID_PATTERN))
        .description(Some("A tenant id (docs/tenants.md): 1 to 64 characters; no control characters (U+0000-U+001F, U+007F-U+009F), no invisible or format characters (bidi controls such as U+202E, zero-width characters, separators other than the space, fillers, variation selectors, tags: `INVISIBLE` in runtime/src/tenant.rs), no `/` or `\\`, no space at either end, no leading `.`, no `..`; not a reserved system name (`root`, `nobody`, ...) and not a lower-case id ending like a derived slug (`-` and 8 hex digits). Anything else is accepted: a safe slug is used as is, other ids get a derived slug. The pattern uses look-aheads and, for characters beyond U+FFFF, the characters themselves (ECMA-262 with the `u` flag, Python `re`)."))
        .into()
);

/// The body of `POST /api/users`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub id: UserIdString,
}

/// One limit override as JSON: a number, `"none"` or `"default"`.
macro_rules! limit_value {
    ($name:ident, $t:ty, $schema:expr) => {
        #[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub LimitValue<$t>);
        hand_built_schema!($name, stringify!($name), $schema);
    };
}

limit_value!(
    LimitValueBytes,
    u64,
    limit_value(
        "Bytes; `\"none\"`: no limit; `\"default\"`: the server's",
        Type::Integer,
        1u64 << 20,
        u64::MAX
    )
);
limit_value!(
    LimitValueCpus,
    f64,
    limit_value(
        "CPU time in cores (0.5 is half a CPU); `\"none\"`: no limit; `\"default\"`: the server's",
        Type::Number,
        0.01,
        65536
    )
);
limit_value!(
    LimitValuePids,
    u64,
    limit_value(
        "Processes and threads; `\"none\"`: no limit; `\"default\"`: the server's. 3 to 4194304 (the kernel's most): the sandbox's PID 1 and the shim that joins it count too",
        Type::Integer,
        cgroups::MIN_PIDS,
        cgroups::MAX_PIDS
    )
);

limit_value!(
    LimitValueDiskBytes,
    u64,
    limit_value(
        "The home's size in bytes; `\"none\"`: no limit; `\"default\"`: the server's",
        Type::Integer,
        warren_runtime::disk::MIN_BYTES,
        u64::MAX
    )
);
limit_value!(
    LimitValueInodes,
    u64,
    limit_value(
        "Files, directories and links in the home; `\"none\"`: no limit; `\"default\"`: the server's",
        Type::Integer,
        warren_runtime::disk::MIN_INODES,
        u64::MAX
    )
);

impl LimitValueDiskBytes {
    fn is_default(&self) -> bool {
        self.0 == LimitValue::Default
    }
}

impl LimitValueInodes {
    fn is_default(&self) -> bool {
        self.0 == LimitValue::Default
    }
}

/// A tenant's overrides of the server's limits
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    pub memory_bytes: LimitValueBytes,
    pub cpus: LimitValueCpus,
    pub pids: LimitValuePids,
    /// Absent: `"default"` (the shape clients of the first version read)
    #[serde(skip_serializing_if = "LimitValueDiskBytes::is_default")]
    pub disk_bytes: LimitValueDiskBytes,
    /// Absent: `"default"`
    #[serde(skip_serializing_if = "LimitValueInodes::is_default")]
    pub disk_inodes: LimitValueInodes,
    /// Absent: `"default"`
    #[serde(skip_serializing_if = "NetworkOverride::is_default")]
    pub network: NetworkOverride,
    /// Destinations opened for this tenant; absent: the server's `--network-allow`
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub network_allow: Option<Vec<NetworkRule>>,
    /// Destinations closed for this tenant; absent: the server's `--network-deny`
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub network_deny: Option<Vec<NetworkRule>>,
}

/// A tenant's network mode: `"default"` (the server's), `"none"` or `"public"` (docs/network.md)
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkOverride {
    #[default]
    Default,
    None,
    Public,
}

/// A destination, `CIDR[:PORTS]` (runtime::network::policy)
#[derive(Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NetworkRule(pub warren_runtime::network::Rule);
hand_built_schema!(
    NetworkRule,
    "NetworkRule",
    no_nul()
        .description(Some(
            "A destination, `CIDR[:PORTS]`: an address with an optional prefix, then optional \
             ports and ranges (IPv6 with ports in brackets), e.g. `10.0.0.2:80`, \
             `10.1.0.0/16:443,8000-8100`, `[fd00::1]:443`"
        ))
        .examples(["10.0.0.2:80"])
        .into()
);

impl NetworkOverride {
    fn is_default(&self) -> bool {
        matches!(self, NetworkOverride::Default)
    }
}

impl From<state::NetworkOverride> for NetworkOverride {
    fn from(n: state::NetworkOverride) -> Self {
        match n {
            state::NetworkOverride::Default => NetworkOverride::Default,
            state::NetworkOverride::None => NetworkOverride::None,
            state::NetworkOverride::Public => NetworkOverride::Public,
        }
    }
}

impl From<NetworkOverride> for state::NetworkOverride {
    fn from(n: NetworkOverride) -> Self {
        match n {
            NetworkOverride::Default => state::NetworkOverride::Default,
            NetworkOverride::None => state::NetworkOverride::None,
            NetworkOverride::Public => state::NetworkOverride::Public,
        }
    }
}

fn rules_to_wire(r: Option<Vec<warren_runtime::network::Rule>>) -> Option<Vec<NetworkRule>> {
    r.map(|v| v.into_iter().map(NetworkRule).collect())
}

fn rules_from_wire(r: Option<Vec<NetworkRule>>) -> Option<Vec<warren_runtime::network::Rule>> {
    r.map(|v| v.into_iter().map(|n| n.0).collect())
}

impl From<state::LimitOverrides> for LimitOverrides {
    fn from(l: state::LimitOverrides) -> Self {
        let state::LimitOverrides {
            memory_bytes,
            cpus,
            pids,
            disk_bytes,
            disk_inodes,
            network,
            network_allow,
            network_deny,
        } = l;
        LimitOverrides {
            memory_bytes: LimitValueBytes(memory_bytes),
            cpus: LimitValueCpus(cpus),
            pids: LimitValuePids(pids),
            disk_bytes: LimitValueDiskBytes(disk_bytes),
            disk_inodes: LimitValueInodes(disk_inodes),
            network: network.into(),
            network_allow: rules_to_wire(network_allow),
            network_deny: rules_to_wire(network_deny),
        }
    }
}

/// New overrides; a field left out is `"default"`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitOverridesUpdate {
    #[serde(default)]
    pub memory_bytes: LimitValueBytes,
    #[serde(default)]
    pub cpus: LimitValueCpus,
    #[serde(default)]
    pub pids: LimitValuePids,
    #[serde(default)]
    pub disk_bytes: LimitValueDiskBytes,
    #[serde(default)]
    pub disk_inodes: LimitValueInodes,
    #[serde(default)]
    pub network: NetworkOverride,
    /// Replaces the server's `--network-allow` for this tenant; left out or null: the server's
    #[serde(default)]
    pub network_allow: Option<Vec<NetworkRule>>,
    /// Replaces the server's `--network-deny` for this tenant; left out or null: the server's
    #[serde(default)]
    pub network_deny: Option<Vec<NetworkRule>>,
}

/// A tenant's own terminal command line
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShellUpdate {
    /// Split on whitespace (`zsh -l`, `bash --norc`), used from the tenant's next sandbox on; `"default"`: the server's `--shell`
    #[schema(min_length = 1, max_length = 1024, examples("zsh -l", "default"))]
    pub shell: String,
}

impl ShellUpdate {
    /// The tenant's own shell; None: the server's.
    pub fn shell(&self) -> Option<&str> {
        Some(self.shell.as_str()).filter(|s| *s != "default")
    }
}

impl From<LimitOverridesUpdate> for state::LimitOverrides {
    fn from(l: LimitOverridesUpdate) -> Self {
        state::LimitOverrides {
            memory_bytes: l.memory_bytes.0,
            cpus: l.cpus.0,
            pids: l.pids.0,
            disk_bytes: l.disk_bytes.0,
            disk_inodes: l.disk_inodes.0,
            network: l.network.into(),
            network_allow: rules_from_wire(l.network_allow),
            network_deny: rules_from_wire(l.network_deny),
        }
    }
}

/// Limits in force; null: unlimited
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[schema(required = true)]
    pub memory_bytes: Option<u64>,
    /// Cores
    #[schema(required = true, minimum = 0)]
    pub cpu: Option<f64>,
    #[schema(required = true)]
    pub pids: Option<u64>,
}

impl From<cgroups::Limits> for Limits {
    fn from(l: cgroups::Limits) -> Self {
        let cgroups::Limits {
            memory_bytes,
            cpu,
            pids,
        } = l;
        Limits {
            memory_bytes,
            cpu,
            pids,
        }
    }
}

/// `starting` also while it is being stopped
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    Running,
    Starting,
    Stopped,
}

/// A tenant
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserView {
    /// The id as given
    pub id: String,
    /// The derived name: home directory, Linux user name inside
    pub slug: String,
    /// The tenant's uid on the host (never reused)
    #[schema(maximum = 4294967295_u64, format = Int64)]
    pub host_uid: u32,
    /// The host gid the tenant's files get (with subordinate ids, the tenant's id of the range); null when this server cannot map the tenant's ids
    #[schema(required = true, maximum = 4294967295_u64, format = Int64)]
    pub host_gid: Option<u32>,
    /// The home's path on the host (inside the sandbox it is `/workspace/<slug>` in the namespaces tier)
    #[schema(value_type = String)]
    pub home_dir: std::path::PathBuf,
    /// Unix seconds
    pub created_at: i64,
    /// Unix seconds (updated at most once a minute)
    pub last_seen: i64,
    pub limits: LimitOverrides,
    /// The terminals' command line for this tenant; null: the server's `--shell`
    #[schema(required = true)]
    pub shell: Option<String>,
    // The domain's word for a `SandboxState` (the conformance test checks
    // real answers against the enum).
    #[schema(value_type = SandboxState)]
    pub sandbox: String,
    /// Terminals open now
    pub terminals: usize,
}

impl From<manage::UserView> for UserView {
    fn from(u: manage::UserView) -> Self {
        let manage::UserView {
            id,
            slug,
            host_uid,
            host_gid,
            home_dir,
            created_at,
            last_seen,
            limits,
            shell,
            sandbox,
            terminals,
        } = u;
        UserView {
            id,
            slug,
            host_uid,
            host_gid,
            home_dir,
            created_at,
            last_seen,
            limits: limits.into(),
            shell,
            sandbox,
            terminals,
        }
    }
}

/// Every tenant.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserList {
    pub users: Vec<UserView>,
}

/// What the home holds, counted without following symlinks
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HomeUsage {
    /// Sum of regular files' apparent sizes
    pub bytes: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Sockets, fifos, devices
    pub other: u64,
    /// False when the walk stopped at a bound (time, entries, depth) or skipped a directory: the counts are a lower bound
    pub complete: bool,
}

impl From<workspace::HomeUsage> for HomeUsage {
    fn from(h: workspace::HomeUsage) -> Self {
        let workspace::HomeUsage {
            bytes,
            files,
            dirs,
            symlinks,
            other,
            complete,
        } = h;
        HomeUsage {
            bytes,
            files,
            dirs,
            symlinks,
            other,
            complete,
        }
    }
}

/// What a sandbox got, recorded once by its shim (runtime::record)
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxRecord {
    pub tier: Tier,
    pub limits: LimitsInForce,
    /// The seccomp profile in force; absent when there is no filter
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub seccomp: Option<String>,
    /// Absent when the tier uses no Landlock
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub landlock: Option<LandlockStatus>,
    /// The home's disk limits in force; absent when none is (a missing
    /// one is `disk` in `limits.missing`)
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub disk: Option<DiskInForce>,
    /// The sandbox's network (docs/network.md); absent when none was planned
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub network: Option<NetworkRecord>,
}

/// The home's disk limits in force
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskInForce {
    /// `image`: a loop-mounted ext4 image per home; `quota`: the kernel's
    /// project quota on the workspace root's filesystem
    pub backend: String,
    /// The home's size (its filesystem's own metadata takes a little);
    /// with `quota`, the project's hard limit (0: none, also for `inodes`)
    pub bytes: u64,
    pub inodes: u64,
}

impl From<warren_runtime::disk::DiskInForce> for DiskInForce {
    fn from(d: warren_runtime::disk::DiskInForce) -> Self {
        let warren_runtime::disk::DiskInForce {
            backend,
            bytes,
            inodes,
        } = d;
        DiskInForce {
            backend,
            bytes,
            inodes,
        }
    }
}

/// A home's disk usage, from its filesystem
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskUsage {
    pub bytes_used: u64,
    /// What the home's filesystem holds at most
    pub bytes_total: u64,
    /// What the tenant can still write
    pub bytes_available: u64,
    pub inodes_used: u64,
    pub inodes_total: u64,
    /// Read from the running sandbox's mount (else the image's superblock)
    pub mounted: bool,
}

impl From<warren_runtime::disk::DiskUsage> for DiskUsage {
    fn from(d: warren_runtime::disk::DiskUsage) -> Self {
        let warren_runtime::disk::DiskUsage {
            bytes_used,
            bytes_total,
            bytes_available,
            inodes_used,
            inodes_total,
            mounted,
        } = d;
        DiskUsage {
            bytes_used,
            bytes_total,
            bytes_available,
            inodes_used,
            inodes_total,
            mounted,
        }
    }
}

/// A sandbox's network: the mode in force, the operator's entries, the resolver
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkRecord {
    pub mode: NetworkMode,
    /// Opened destinations, `CIDR[:PORTS]`; absent when none
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Closed destinations, `CIDR[:PORTS]`; absent when none
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// The address the sandbox's resolv.conf names; absent without a network
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub resolver: Option<String>,
}

/// Bytes over a sandbox's network (every interface but its loopback)
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetUsage {
    pub sent_bytes: u64,
    pub received_bytes: u64,
}

/// A network mode: none (only loopback) or public
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    None,
    Public,
}

impl From<warren_runtime::network::NetworkRecord> for NetworkRecord {
    fn from(n: warren_runtime::network::NetworkRecord) -> Self {
        let warren_runtime::network::NetworkRecord {
            mode,
            allow,
            deny,
            resolver,
        } = n;
        let words = |rules: Vec<warren_runtime::network::Rule>| {
            rules.iter().map(ToString::to_string).collect()
        };
        NetworkRecord {
            mode: match mode {
                warren_runtime::network::NetworkMode::None => NetworkMode::None,
                warren_runtime::network::NetworkMode::Public => NetworkMode::Public,
            },
            allow: words(allow),
            deny: words(deny),
            resolver: resolver.map(|r| r.to_string()),
        }
    }
}

/// An isolation tier
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Namespaces,
    Landlock,
    None,
}

/// The limits a sandbox runs under; null: not enforced by its cgroup
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsInForce {
    #[schema(required = true)]
    pub memory_bytes: Option<u64>,
    /// Cores
    #[schema(required = true, minimum = 0)]
    pub cpu: Option<f64>,
    #[schema(required = true)]
    pub pids: Option<u64>,
    /// Asked for but not enforced on this host: `memory`, `cpu`, `pids`
    pub missing: Vec<String>,
    /// Per-process limits (rlimits) of the tiers without namespaces, in words
    pub per_process: Vec<String>,
    /// For each missing limit, why; absent when none is missing
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub reasons: BTreeMap<String, String>,
    /// Limits that applied only in part; absent when none
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// How much of the Landlock ruleset the kernel enforces
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LandlockStatus {
    /// The Landlock ABI in use; 0 when the kernel has none
    pub abi: u32,
    pub level: LandlockLevel,
}

/// Landlock's enforcement level
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LandlockLevel {
    FullyEnforced,
    PartiallyEnforced,
    NotEnforced,
}

impl From<record::SandboxRecord> for SandboxRecord {
    fn from(r: record::SandboxRecord) -> Self {
        let record::SandboxRecord {
            tier,
            limits,
            seccomp,
            landlock,
            disk,
            network,
        } = r;
        let record::LimitsInForce {
            memory_bytes,
            cpu,
            pids,
            missing,
            per_process,
            reasons,
            notes,
        } = limits;
        SandboxRecord {
            tier: match tier {
                Isolation::Namespaces => Tier::Namespaces,
                Isolation::Landlock => Tier::Landlock,
                Isolation::None => Tier::None,
            },
            limits: LimitsInForce {
                memory_bytes,
                cpu,
                pids,
                missing,
                per_process,
                reasons,
                notes,
            },
            seccomp,
            landlock: landlock.map(|l| LandlockStatus {
                abi: l.abi,
                level: match l.level {
                    Level::FullyEnforced => LandlockLevel::FullyEnforced,
                    Level::PartiallyEnforced => LandlockLevel::PartiallyEnforced,
                    Level::NotEnforced => LandlockLevel::NotEnforced,
                },
            }),
            disk: disk.map(DiskInForce::from),
            network: network.map(NetworkRecord::from),
        }
    }
}

/// What a tenant uses now
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    pub user: UserView,
    #[schema(value_type = SandboxState)]
    pub sandbox: String,
    /// The running sandbox's isolation tier
    #[schema(required = true)]
    pub tier: Option<String>,
    /// Running: as applied; otherwise what the next sandbox will ask for
    pub limits: Limits,
    /// Limits this host could not apply
    pub limits_missing: Vec<String>,
    /// Why they could not be applied
    pub limits_reasons: Vec<String>,
    /// What the running sandbox got, as its shim recorded it: the same record as the terminal's hello frame and `warren-info --json`; null when no sandbox runs
    #[schema(required = true)]
    pub record: Option<SandboxRecord>,
    /// From the sandbox's cgroup, when it has one
    #[schema(required = true)]
    pub memory_bytes: Option<u64>,
    #[schema(required = true)]
    pub cpu_usec: Option<u64>,
    #[schema(required = true)]
    pub pids: Option<u64>,
    /// Bytes the running sandbox sent and received over its network; null without one
    #[schema(required = true)]
    pub network: Option<NetUsage>,
    pub terminals: usize,
    /// The tenant's named services (docs/services.md), by name
    pub services: Vec<ServiceBrief>,
    /// exec, import and export commands running now
    pub running_commands: usize,
    #[schema(required = true)]
    pub workspace: Option<HomeUsage>,
    /// Why `workspace` is null
    #[schema(required = true)]
    pub workspace_error: Option<String>,
    /// The home's disk limits (running: as its sandbox asked them; else what the next sandbox will ask for)
    pub disk_limits: DiskLimits,
    /// The home's disk usage from its filesystem (never from walking the tree); null without a disk image
    #[schema(required = true)]
    pub disk: Option<DiskUsage>,
}

/// A home's disk limits; null: unlimited
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskLimits {
    #[schema(required = true)]
    pub bytes: Option<u64>,
    #[schema(required = true)]
    pub inodes: Option<u64>,
}

impl From<manage::Stats> for Stats {
    fn from(s: manage::Stats) -> Self {
        let manage::Stats {
            user,
            sandbox,
            tier,
            limits,
            limits_missing,
            limits_reasons,
            record,
            memory_bytes,
            cpu_usec,
            pids,
            network,
            terminals,
            services,
            running_commands,
            workspace,
            workspace_error,
            disk_limits,
            disk,
        } = s;
        Stats {
            user: user.into(),
            sandbox,
            tier,
            limits: limits.into(),
            limits_missing,
            limits_reasons,
            record: record.map(Into::into),
            memory_bytes,
            cpu_usec,
            pids,
            network: network.map(|n| NetUsage {
                sent_bytes: n.sent_bytes,
                received_bytes: n.received_bytes,
            }),
            terminals,
            services: services.into_iter().map(Into::into).collect(),
            running_commands,
            workspace: workspace.map(Into::into),
            workspace_error,
            disk_limits: DiskLimits {
                bytes: disk_limits.bytes,
                inodes: disk_limits.inodes,
            },
            disk: disk.map(Into::into),
        }
    }
}

/// The body of an `exec` request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// The command and its arguments (no shell: use `["sh", "-c", ...]` for one); the command is not empty, and no argument holds a NUL
    #[schema(schema_with = argv_schema)]
    pub argv: Vec<String>,
    /// Working directory relative to the tenant's home: not absolute, no `..` component, no NUL (default, and for `""` or `.`: the home). A directory that does not exist makes the command end with exit code 125 (a 200).
    #[serde(default)]
    #[schema(
        max_length = 1024,
        pattern = r"^(?!/)(?![\s\S]*(?:^|/)\.\.(?:/|$))[^\u0000]*$"
    )]
    pub cwd: Option<String>,
    /// Extra environment variables: names not empty and without `=`, no NUL in names or values
    #[serde(default)]
    #[schema(schema_with = env_schema)]
    pub env: BTreeMap<String, String>,
    /// Given to the command on stdin (UTF-8 text); default: empty
    #[serde(default)]
    pub stdin: Option<String>,
    /// Killed after this many seconds: 0.001 (1 ms) to 3600, default 60
    #[serde(default)]
    #[schema(minimum = 0.001, maximum = 3600)]
    pub timeout_secs: Option<f64>,
}

/// The command is not empty; no argument holds a NUL.
pub(super) fn argv_schema() -> RefOr<Schema> {
    ArrayBuilder::new()
        .min_items(Some(1))
        .description(Some("The command and its arguments (no shell: use `[\"sh\", \"-c\", ...]` for one); the command is not empty, and no argument holds a NUL"))
        .prefix_items([no_nul().min_length(Some(1)).build()])
        .items(no_nul())
        .into()
}

/// Names not empty and without `=`; no NUL anywhere.
pub(super) fn env_schema() -> RefOr<Schema> {
    of_type(Type::Object)
        .description(Some("Extra environment variables: names not empty and without `=`, no NUL in names or values"))
        .property_names(Some(
            of_type(SchemaType::AnyValue)
                .min_length(Some(1))
                .pattern(Some(r"^[^=\u0000]*$"))
                .build(),
        ))
        .additional_properties(Some(no_nul()))
        .into()
}

impl From<ExecRequest> for manage::ExecRequest {
    fn from(r: ExecRequest) -> Self {
        let ExecRequest {
            argv,
            cwd,
            env,
            stdin,
            timeout_secs,
        } = r;
        manage::ExecRequest {
            argv,
            cwd,
            env,
            stdin,
            timeout_secs,
        }
    }
}

/// Why the command ended: it exited (`exit_code`), a signal ended it (`signal`), it ran past its timeout, or its sandbox hit the memory limit
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    Exit,
    Signal,
    Timeout,
    MemoryLimit,
}

impl From<exec::EndReason> for EndReason {
    fn from(r: exec::EndReason) -> Self {
        match r {
            exec::EndReason::Exit => EndReason::Exit,
            exec::EndReason::Signal => EndReason::Signal,
            exec::EndReason::Timeout => EndReason::Timeout,
            exec::EndReason::MemoryLimit => EndReason::MemoryLimit,
        }
    }
}

/// What `exec` returns.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecResult {
    #[schema(required = true)]
    pub exit_code: Option<i32>,
    #[schema(required = true)]
    pub signal: Option<i32>,
    pub reason: EndReason,
    /// UTF-8, invalid sequences replaced; at most 1 MiB
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub duration_ms: u64,
}

impl From<exec::ExecResult> for ExecResult {
    fn from(r: exec::ExecResult) -> Self {
        let exec::ExecResult {
            exit_code,
            signal,
            reason,
            stdout,
            stderr,
            stdout_truncated,
            stderr_truncated,
            duration_ms,
        } = r;
        ExecResult {
            exit_code,
            signal,
            reason: reason.into(),
            stdout,
            stderr,
            stdout_truncated,
            stderr_truncated,
            duration_ms,
        }
    }
}

/// Which output a chunk is from.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

// The domain writes these lines itself as output arrives (`exec::stream`);
// server/tests/openapi.rs checks its lines against this schema, and a test
// below the end line's fields.
/// A piece of a streamed command's output
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecChunk {
    #[schema(inline)]
    pub stream: OutputStream,
    pub data: String,
}

/// The last line of a streamed command
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecEnd {
    #[schema(required = true)]
    pub exit_code: Option<i32>,
    #[schema(required = true)]
    pub signal: Option<i32>,
    pub reason: EndReason,
    pub duration_ms: u64,
}

/// One line of `exec/stream`'s NDJSON body.
pub struct ExecLine;

impl PartialSchema for ExecLine {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(Ref::from_schema_name(ExecChunk::name()))
            .item(Ref::from_schema_name(ExecEnd::name()))
            .into()
    }
}

impl ToSchema for ExecLine {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        for (name, schema) in [
            (ExecChunk::name(), ExecChunk::schema()),
            (ExecEnd::name(), ExecEnd::schema()),
        ] {
            schemas.push((name.into_owned(), schema));
        }
        ExecChunk::schemas(schemas);
        ExecEnd::schemas(schemas);
    }
}

/// What delete did.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Deleted {
    pub id: String,
    pub home_removed: bool,
    pub terminals_closed: usize,
}

impl From<manage::Deleted> for Deleted {
    fn from(d: manage::Deleted) -> Self {
        let manage::Deleted {
            id,
            home_removed,
            terminals_closed,
        } = d;
        Deleted {
            id,
            home_removed,
            terminals_closed,
        }
    }
}

/// What a put of a file wrote.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Uploaded {
    /// The path, as given
    pub path: String,
    /// Bytes written (for an archive: of the files unpacked)
    pub bytes: u64,
}

impl From<manage::Uploaded> for Uploaded {
    fn from(u: manage::Uploaded) -> Self {
        Uploaded {
            path: u.path,
            bytes: u.bytes,
        }
    }
}

/// What an import did.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Imported {
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Bytes of file content written
    pub bytes: u64,
    /// Bytes of the upload (compressed)
    #[schema(minimum = 1)]
    pub upload_bytes: u64,
}

impl From<manage::Imported> for Imported {
    fn from(i: manage::Imported) -> Self {
        let manage::Imported {
            entries,
            files,
            dirs,
            symlinks,
            bytes,
            upload_bytes,
        } = i;
        Imported {
            entries,
            files,
            dirs,
            symlinks,
            bytes,
            upload_bytes,
        }
    }
}

/// One open terminal.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TerminalInfo {
    pub id: String,
    /// Unix seconds
    pub created_at: u64,
    /// Browsers attached now
    pub viewers: usize,
    #[schema(maximum = 65535)]
    pub cols: u16,
    #[schema(maximum = 65535)]
    pub rows: u16,
}

impl From<sessions::TerminalInfo> for TerminalInfo {
    fn from(t: sessions::TerminalInfo) -> Self {
        let sessions::TerminalInfo {
            id,
            created_at,
            viewers,
            cols,
            rows,
        } = t;
        TerminalInfo {
            id,
            created_at,
            viewers,
            cols,
            rows,
        }
    }
}

/// A tenant's open terminals.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TerminalList {
    pub terminals: Vec<TerminalInfo>,
}

/// One line of the audit log.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Increasing; page with `?after=`
    pub seq: i64,
    /// Unix time in milliseconds
    pub at_ms: i64,
    /// Who: `admin`, `cli:<unix user>`, a user id, or `anonymous`
    pub actor: String,
    /// What: `user.create`, `delete`, `limits`, `exec`, `export`, `import`, `terminal.close`, `session.start`, `session.end`, `auth.failed`, ...
    pub action: String,
    /// The tenant acted on, if any
    #[schema(required = true)]
    pub tenant: Option<String>,
    #[schema(schema_with = outcome_schema)]
    pub outcome: String,
    /// Action-specific details (command, sizes, exit, reason): any JSON value
    #[schema(schema_with = any_value_schema)]
    pub detail: serde_json::Value,
}

fn outcome_schema() -> RefOr<Schema> {
    of_type(SchemaType::AnyValue)
        .enum_values(Some(["ok", "refused", "failed"]))
        .into()
}

fn any_value_schema() -> RefOr<Schema> {
    of_type(SchemaType::AnyValue)
        .description(Some(
            "Action-specific details (command, sizes, exit, reason): any JSON value",
        ))
        .into()
}

impl From<state::AuditEntry> for AuditEntry {
    fn from(e: state::AuditEntry) -> Self {
        let state::AuditEntry {
            seq,
            at_ms,
            actor,
            action,
            tenant,
            outcome,
            detail,
        } = e;
        AuditEntry {
            seq,
            at_ms,
            actor,
            action,
            tenant,
            outcome,
            detail,
        }
    }
}

/// A page of the audit log.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditLog {
    pub entries: Vec<AuditEntry>,
}

// Named services in a tenant's stats (docs/services.md); the services
// API's own types are in `services_wire`.

/// Where a service is: `starting`, `running`, `backing-off` (waiting to restart), `stopped` (by request, a clean end, or its sandbox stopped) or `failed` (an end its policy does not restart, or a start that failed)
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceState {
    Starting,
    Running,
    BackingOff,
    Stopped,
    Failed,
}

impl From<manage::ServiceState> for ServiceState {
    fn from(s: manage::ServiceState) -> Self {
        match s {
            manage::ServiceState::Starting => ServiceState::Starting,
            manage::ServiceState::Running => ServiceState::Running,
            manage::ServiceState::BackingOff => ServiceState::BackingOff,
            manage::ServiceState::Stopped => ServiceState::Stopped,
            manage::ServiceState::Failed => ServiceState::Failed,
        }
    }
}

/// A service in a tenant's stats
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceBrief {
    pub name: String,
    pub state: ServiceState,
    /// Restarts made by the policy since the server started it
    pub restarts: u64,
}

impl From<manage::ServiceBrief> for ServiceBrief {
    fn from(b: manage::ServiceBrief) -> Self {
        ServiceBrief {
            name: b.name,
            state: b.state.into(),
            restarts: b.restarts,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;
    use serde_json::{json, Value};

    use super::*;

    /// What a body reads as, or the error it gets, as text.
    fn read<T: DeserializeOwned + std::fmt::Debug>(body: &Value) -> String {
        match serde_json::from_value::<T>(body.clone()) {
            Ok(v) => format!("{v:?}"),
            Err(e) => format!("error: {e}"),
        }
    }

    /// The wire request types read every body as the domain's types did
    /// (the same values, the same refusals).
    #[test]
    fn requests_read_as_the_domains_types() {
        for body in [
            json!({}),
            json!({"memory_bytes": 1048576, "cpus": 0.5, "pids": "none"}),
            json!({"memory_bytes": "default", "cpus": "none"}),
            json!({"memory_bytes": 414.0}),
            json!({"memory_bytes": 1.5}),
            json!({"memory_bytes": -1}),
            json!({"cpus": "lots"}),
            json!({"pids": 7, "extra": 1}),
            json!({"network": "public", "network_allow": ["10.0.0.2:80"], "network_deny": []}),
            json!({"network": "default", "network_allow": null}),
            json!({"network": "open"}),
            json!({"network_allow": ["10.0.0.0/33"]}),
            json!({"network_deny": "10.0.0.0/8"}),
        ] {
            let wire = read::<LimitOverridesUpdate>(&body);
            let domain = read::<state::LimitOverrides>(&body);
            if domain.starts_with("error") {
                assert_eq!(wire, domain, "{body}");
            } else {
                let wire: state::LimitOverrides =
                    serde_json::from_value::<LimitOverridesUpdate>(body.clone())
                        .unwrap()
                        .into();
                assert_eq!(format!("{wire:?}"), domain, "{body}");
            }
        }
        for body in [
            json!({"argv": ["ls", "-l"]}),
            json!({"argv": ["sh"], "cwd": "a/b", "env": {"A": "1"}, "stdin": "x", "timeout_secs": 2.5}),
            json!({"argv": ["ls"], "cwd": null, "stdin": null, "timeout_secs": null}),
            json!({"argv": "ls"}),
            json!({"cwd": "x"}),
            json!({"argv": ["ls"], "shell": true}),
            json!({"argv": ["ls"], "env": {"A": 1}}),
        ] {
            let wire = read::<ExecRequest>(&body);
            let domain = read::<manage::ExecRequest>(&body);
            if domain.starts_with("error") {
                assert_eq!(wire, domain, "{body}");
            } else {
                let wire: manage::ExecRequest = serde_json::from_value::<ExecRequest>(body.clone())
                    .unwrap()
                    .into();
                assert_eq!(format!("{wire:?}"), domain, "{body}");
            }
        }
    }

    /// The last line of a streamed exec, as the domain writes it, is an
    /// `ExecEnd` (which refuses unknown fields).
    #[test]
    fn the_domains_stream_end_is_an_exec_end() {
        for reason in [
            exec::EndReason::Exit,
            exec::EndReason::Signal,
            exec::EndReason::Timeout,
            exec::EndReason::MemoryLimit,
        ] {
            let end = exec::ExecEnd {
                exit_code: Some(3),
                signal: None,
                reason,
                duration_ms: 12,
            };
            let line = serde_json::to_value(&end).unwrap();
            let wire: ExecEnd = serde_json::from_value(line.clone()).unwrap();
            assert_eq!(serde_json::to_value(&wire).unwrap(), line);
        }
    }

    /// A response converted to its wire type serializes as the domain's
    /// type did, so clients see the same JSON.
    #[test]
    fn responses_serialize_as_the_domains_types() {
        let user = manage::UserView {
            id: "Alice Smith".into(),
            slug: "alice-smith-0123abcd".into(),
            host_uid: 4_000_000_000,
            host_gid: Some(4_000_000_001),
            home_dir: "/var/lib/warren/workspace/alice-smith-0123abcd".into(),
            created_at: 1,
            last_seen: 2,
            limits: state::LimitOverrides {
                memory_bytes: LimitValue::Value(1 << 30),
                cpus: LimitValue::Unlimited,
                pids: LimitValue::Default,
                network: state::NetworkOverride::Public,
                network_allow: Some(vec!["10.0.0.2:80".parse().unwrap()]),
                network_deny: None,
                ..Default::default()
            },
            shell: Some("zsh -l".into()),
            sandbox: "running".into(),
            terminals: 2,
        };
        let stats = manage::Stats {
            disk_limits: Default::default(),
            disk: None,
            user: user.clone(),
            sandbox: "running".into(),
            tier: Some("namespaces".into()),
            limits: cgroups::Limits {
                memory_bytes: Some(1 << 29),
                cpu: None,
                pids: Some(512),
            },
            limits_missing: vec!["cpu".into()],
            limits_reasons: vec!["no cpu controller".into()],
            record: Some(record::SandboxRecord {
                tier: Isolation::Landlock,
                limits: record::LimitsInForce {
                    per_process: vec!["core dumps off".into()],
                    notes: vec!["swap not accounted".into()],
                    ..record::LimitsInForce::cgroup(cgroups::Limits::NONE, vec!["cpu".into()])
                        .with_reasons([("cpu".into(), "no cpu controller".into())].into())
                },
                seccomp: Some("default-v2+shared-host-v1".into()),
                landlock: Some(warren_runtime::landlock::LandlockStatus {
                    abi: 6,
                    level: Level::PartiallyEnforced,
                }),
                disk: None,
                network: None,
            }),
            memory_bytes: Some(4096),
            cpu_usec: None,
            pids: Some(3),
            network: Some(warren_runtime::network::NetUsage {
                sent_bytes: 5,
                received_bytes: 6,
            }),
            terminals: 2,
            services: Vec::new(),
            running_commands: 1,
            workspace: Some(workspace::HomeUsage {
                bytes: 10,
                files: 1,
                dirs: 2,
                symlinks: 3,
                other: 4,
                complete: false,
            }),
            workspace_error: None,
        };
        let result = exec::ExecResult {
            exit_code: None,
            signal: Some(9),
            reason: exec::EndReason::MemoryLimit,
            stdout: "out".into(),
            stderr: "err".into(),
            stdout_truncated: true,
            stderr_truncated: false,
            duration_ms: 5,
        };
        let entry = state::AuditEntry {
            seq: 7,
            at_ms: 8,
            actor: "admin".into(),
            action: "exec".into(),
            tenant: None,
            outcome: "ok".into(),
            detail: json!({"argv": ["ls"]}),
        };
        let imported = manage::Imported {
            entries: 1,
            files: 2,
            dirs: 3,
            symlinks: 4,
            bytes: 5,
            upload_bytes: 6,
        };
        let deleted = manage::Deleted {
            id: "bob".into(),
            home_removed: true,
            terminals_closed: 1,
        };
        let terminal = sessions::TerminalInfo {
            id: "t1".into(),
            created_at: 9,
            viewers: 1,
            cols: 80,
            rows: 24,
        };
        let same = |domain: Value, wire: Value| assert_eq!(wire, domain);
        same(json!(user), json!(UserView::from(user.clone())));
        same(json!(stats), json!(Stats::from(stats.clone())));
        same(json!(result), json!(ExecResult::from(result.clone())));
        same(json!(entry), json!(AuditEntry::from(entry.clone())));
        same(json!(imported), json!(Imported::from(imported.clone())));
        same(json!(deleted), json!(Deleted::from(deleted.clone())));
        same(json!(terminal), json!(TerminalInfo::from(terminal.clone())));
    }
}
