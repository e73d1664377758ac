//! The programs the image backend runs (e2fsprogs', util-linux's), from
//! the system's directories with a clean environment.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::DiskError;

/// A program from the system's directories (the shim's PATH is not ours to
/// trust).
pub(super) fn program(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

pub(super) fn run(name: &str, args: &[&std::ffi::OsStr]) -> Result<String, DiskError> {
    let path = program(name).ok_or_else(|| DiskError::Program {
        program: name.into(),
        output: "not found".into(),
    })?;
    let out = Command::new(&path)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| DiskError::Program {
            program: name.into(),
            output: e.to_string(),
        })?;
    if !out.status.success() {
        let mut text = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if text.is_empty() {
            text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        return Err(DiskError::Program {
            program: name.into(),
            output: format!("{} ({})", text, out.status),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(super) fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}
