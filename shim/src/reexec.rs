//! The namespace tier's PID 1 re-executes itself from the sandbox's
//! read-only copy of the shim ([`INFO_BIN`]), so that the sandbox's user
//! namespace, not the caller's, owns its memory.

use std::ffi::CString;
use std::fs::File;
use std::io::{Seek, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::memfd::{memfd_create, MFdFlags};
use warren_runtime::info::INFO_BIN;
use warren_runtime::plan::Confinement;
use warren_runtime::report::SetupError;
use warren_runtime::spec::SandboxSpec;
use warren_runtime::sys;

const STEP: &str = "re-execute PID 1";

/// Executes [`INFO_BIN`] as `warren-shim init`, handing over the spec and
/// the confinement planned outside (memfds), the report channel, the
/// terminal socket and the control channel; every other fd is
/// close-on-exec. Only returns on failure.
pub fn reexec_as_init(
    spec: &SandboxSpec,
    confinement: &Confinement,
    (pty_socket, control): (Option<OwnedFd>, Option<OwnedFd>),
    report: &File,
) -> Result<std::convert::Infallible, SetupError> {
    let spec_file = memfd_with("warren-spec", serde_json::to_vec(spec))?;
    let plan_file = memfd_with("warren-plan", serde_json::to_vec(confinement))?;
    let mut argv = vec!["warren-shim".to_string(), "init".into()];
    let mut pass = |flag: &str, fd: &dyn AsRawFd| -> Result<(), SetupError> {
        sys::clear_cloexec(&fd.as_raw_fd()).map_err(|e| SetupError::errno(STEP, e))?;
        argv.extend([flag.to_string(), fd.as_raw_fd().to_string()]);
        Ok(())
    };
    pass("--spec-fd", &spec_file)?;
    pass("--plan-fd", &plan_file)?;
    pass("--report-fd", report)?;
    if let Some(sock) = &pty_socket {
        pass("--pty-socket-fd", sock)?;
    }
    if let Some(control) = &control {
        pass("--control-fd", control)?;
    }
    let argv: Vec<CString> = argv
        .into_iter()
        .map(|a| CString::new(a).expect("no NUL in flags and numbers"))
        .collect();
    let bin = CString::new(INFO_BIN).expect("a constant path");
    let err = nix::unistd::execve::<CString, CString>(&bin, &argv, &[]).unwrap_err();
    Err(SetupError::errno(format!("{STEP} ({INFO_BIN})"), err))
}

/// A memfd holding `json`, rewound.
fn memfd_with(name: &str, json: serde_json::Result<Vec<u8>>) -> Result<File, SetupError> {
    let json = json.map_err(|e| SetupError::new(STEP, e.to_string()))?;
    let memfd =
        memfd_create(name, MFdFlags::MFD_CLOEXEC).map_err(|e| SetupError::errno(STEP, e))?;
    let mut file = File::from(memfd);
    file.write_all(&json)
        .and_then(|_| file.rewind())
        .map_err(|e| SetupError::new(STEP, e.to_string()))?;
    Ok(file)
}
