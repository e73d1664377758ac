//! A named service's definition (docs/services.md): what `create` takes
//! and the state database keeps, and the checks it passes first.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::backend::ExecCommand;

use super::{ManageError, MAX_CWD_CHARS};

/// The longest service name.
pub const MAX_NAME_CHARS: usize = 64;
/// Most arguments, and most bytes of them all.
pub const MAX_ARGS: usize = 256;
pub const MAX_ARGV_BYTES: usize = 64 << 10;
/// Most environment variables, and most bytes of them all.
pub const MAX_ENV: usize = 256;
pub const MAX_ENV_BYTES: usize = 64 << 10;
/// Most services per tenant.
pub const MAX_SERVICES_PER_USER: usize = 32;

/// When a service's command is started again after it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// After a failure (non-zero exit, signal), with backoff.
    #[default]
    OnFailure,
    /// After every end, with backoff.
    Always,
    Never,
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
            RestartPolicy::Never => "never",
        })
    }
}

/// A service's definition (what `create` takes and the database keeps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    pub argv: Vec<String>,
    /// Relative to the home (`.`: the home itself); default
    /// `sandboxes/<name>`, created as the user inside the sandbox.
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Exported to the command as `PORT`.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Started with the server and with the sandbox; `stop` clears it,
    /// `start` sets it.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

impl ServiceSpec {
    /// The working directory, relative to the home.
    pub fn cwd_in_home(&self) -> String {
        self.cwd
            .clone()
            .unwrap_or_else(|| format!("sandboxes/{}", self.name))
    }

    /// The command as the sandbox runs it.
    pub fn command(&self) -> ExecCommand {
        let mut env: Vec<(String, String)> = self
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(p) = self.port {
            env.push(("PORT".into(), p.to_string()));
        }
        ExecCommand {
            argv: self.argv.clone(),
            env,
            // Checked by `validate`: `.` or `""` is the home itself.
            cwd: crate::exec::resolve_cwd(Some(&self.cwd_in_home())).unwrap_or(None),
        }
    }

    /// Refuses what cannot be a service, saying why.
    pub fn validate(&self) -> Result<(), ManageError> {
        let bad = |m: String| Err(ManageError::BadRequest(m));
        validate_name(&self.name)?;
        if self.argv.is_empty() || self.argv[0].is_empty() {
            return bad("argv must name a command".into());
        }
        if self.argv.len() > MAX_ARGS {
            return bad(format!(
                "argv has {} arguments; the limit is {MAX_ARGS}",
                self.argv.len()
            ));
        }
        let argv_bytes: usize = self.argv.iter().map(|a| a.len() + 1).sum();
        if argv_bytes > MAX_ARGV_BYTES {
            return bad(format!(
                "argv is {argv_bytes} bytes; the limit is {MAX_ARGV_BYTES}"
            ));
        }
        if self.argv.iter().any(|a| a.contains('\0')) {
            return bad("argv contains a NUL byte".into());
        }
        if let Some(cwd) = &self.cwd {
            let n = cwd.chars().count();
            if n > MAX_CWD_CHARS {
                return bad(format!(
                    "cwd is {n} characters long; the limit is {MAX_CWD_CHARS}"
                ));
            }
            crate::exec::resolve_cwd(Some(cwd))
                .map_err(|e| ManageError::BadRequest(e.to_string()))?;
        }
        if self.env.len() > MAX_ENV {
            return bad(format!(
                "env has {} variables; the limit is {MAX_ENV}",
                self.env.len()
            ));
        }
        let env_bytes: usize = self.env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
        if env_bytes > MAX_ENV_BYTES {
            return bad(format!(
                "env is {env_bytes} bytes; the limit is {MAX_ENV_BYTES}"
            ));
        }
        for (k, v) in &self.env {
            let ok = !k.is_empty() && !k.contains('=') && !k.contains('\0') && !v.contains('\0');
            if !ok {
                return bad(format!("invalid environment variable {k:?}"));
            }
        }
        if self.port == Some(0) {
            return bad("port must be 1 to 65535".into());
        }
        Ok(())
    }
}

/// A service name: 1 to 64 of `a-z A-Z 0-9 . _ -`, starting with a letter
/// or digit (it names a directory, `sandboxes/<name>`).
pub fn validate_name(name: &str) -> Result<(), ManageError> {
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ManageError::BadRequest(format!(
            "invalid service name {:?}: 1 to {MAX_NAME_CHARS} of a-z, A-Z, 0-9, '.', '_', '-', \
             starting with a letter or digit",
            name.chars().take(80).collect::<String>()
        )))
    }
}
