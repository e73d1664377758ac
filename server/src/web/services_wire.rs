//! The wire types of the services API (`/api/users/{user}/services`,
//! docs/services.md), converted from the domain's
//! (`warren_domain::manage::ServiceView`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use warren_domain::manage;

use super::api_wire::{ServiceState, UserIdString};

/// When a service's command is started again after it ended: after a failure (non-zero exit or a signal), after every end, or never. Restarts wait 1 s, doubling to at most 60 s; a run of 30 s resets the wait.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    OnFailure,
    Always,
    Never,
}

impl From<RestartPolicy> for manage::RestartPolicy {
    fn from(p: RestartPolicy) -> Self {
        match p {
            RestartPolicy::OnFailure => manage::RestartPolicy::OnFailure,
            RestartPolicy::Always => manage::RestartPolicy::Always,
            RestartPolicy::Never => manage::RestartPolicy::Never,
        }
    }
}

impl From<manage::RestartPolicy> for RestartPolicy {
    fn from(p: manage::RestartPolicy) -> Self {
        match p {
            manage::RestartPolicy::OnFailure => RestartPolicy::OnFailure,
            manage::RestartPolicy::Always => RestartPolicy::Always,
            manage::RestartPolicy::Never => RestartPolicy::Never,
        }
    }
}

/// The body of `POST /api/users/{user}/services`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceCreate {
    /// 1 to 64 of `a-z A-Z 0-9 . _ -`, starting with a letter or digit; unique per user
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
    )]
    pub name: String,
    /// At most 256 arguments and 64 KiB in all
    #[schema(schema_with = super::api_wire::argv_schema)]
    pub argv: Vec<String>,
    /// Working directory relative to the home (not absolute, no `..`; `.` is the home itself); default `sandboxes/<name>`. Created, as the user inside the sandbox, before each start.
    #[serde(default)]
    #[schema(
        max_length = 1024,
        pattern = r"^(?!/)(?![\s\S]*(?:^|/)\.\.(?:/|$))[^\u0000]*$"
    )]
    pub cwd: Option<String>,
    /// At most 256 variables and 64 KiB in all
    #[serde(default)]
    #[schema(schema_with = super::api_wire::env_schema)]
    pub env: BTreeMap<String, String>,
    /// Exported to the command as `PORT`
    #[serde(default)]
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<u16>,
    /// Default `on-failure`
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Started now, with the server and with the sandbox (default true)
    #[serde(default)]
    pub enabled: Option<bool>,
}

impl From<ServiceCreate> for manage::ServiceSpec {
    fn from(c: ServiceCreate) -> Self {
        manage::ServiceSpec {
            name: c.name,
            argv: c.argv,
            cwd: c.cwd,
            env: c.env,
            port: c.port,
            restart: c.restart.into(),
            enabled: c.enabled.unwrap_or(true),
        }
    }
}

/// How a service's last run ended
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceExit {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Unix seconds
    pub at: i64,
    /// `exit`, `signal`, `memory_limit`, `stopped` (asked), `sandbox_stopped`, or `not_started` (the log says why)
    pub reason: String,
}

/// A service: its definition and its live status
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub user: String,
    pub name: String,
    pub argv: Vec<String>,
    /// The working directory used, relative to the home
    pub cwd: String,
    pub env: BTreeMap<String, String>,
    pub port: Option<u16>,
    pub restart: RestartPolicy,
    pub enabled: bool,
    pub state: ServiceState,
    /// Restarts made by the policy since the server started it
    pub restarts: u64,
    pub last_exit: Option<ServiceExit>,
    /// Unix seconds of the current run's start
    pub started_at: Option<i64>,
}

impl From<manage::ServiceView> for Service {
    fn from(v: manage::ServiceView) -> Self {
        Service {
            user: v.user,
            name: v.spec.name,
            argv: v.spec.argv,
            cwd: v.cwd_in_home,
            env: v.spec.env,
            port: v.spec.port,
            restart: v.spec.restart.into(),
            enabled: v.spec.enabled,
            state: v.status.state.into(),
            restarts: v.status.restarts,
            last_exit: v.status.last_exit.map(|e| ServiceExit {
                exit_code: e.exit_code,
                signal: e.signal,
                at: e.at,
                reason: e.reason,
            }),
            started_at: v.status.started_at,
        }
    }
}

/// A user's services, by name
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceList {
    pub services: Vec<Service>,
}

/// A tenant's service in a path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ServicePath {
    /// A tenant id, percent-encoded (see `UserIdString` and docs/tenants.md). An invalid id gets 400.
    pub user: UserIdString,
    /// The service's name
    #[param(min_length = 1, max_length = 64)]
    pub name: String,
}

/// One of your own services in a path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MyServicePath {
    /// The service's name
    #[param(min_length = 1, max_length = 64)]
    pub name: String,
}

/// `?bytes=&follow=` of a service's logs.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogsParams {
    /// The last this many bytes of what is kept (default: all of it, the last 64 KiB unless the server says otherwise)
    #[param(minimum = 0)]
    pub bytes: Option<usize>,
    /// `1`: after the tail, keep the response open and stream the output as it comes (chunked), until the service is deleted or the client goes
    #[param(minimum = 0, maximum = 1)]
    pub follow: Option<u8>,
    /// With `--auth none` only, on `/api/me/...`: the user
    #[serde(default)]
    #[param(ignore)]
    pub user: Option<String>,
}
