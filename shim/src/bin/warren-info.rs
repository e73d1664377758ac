//! `warren-info` as a binary of its own, installed next to `warren-shim`:
//! the tiers without namespaces have no mount namespace to bind the shim
//! into the sandbox under that name, so the shim puts this file's directory
//! on the command's PATH and lets Landlock execute it.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(warren_runtime::info::tool_main().clamp(0, 255) as u8)
}
