//! no-userns: runs a command on a host that forbids user namespaces, the
//! way Docker's default seccomp profile (and most PaaS containers) does:
//! `unshare` and `clone` with CLONE_NEWUSER get EPERM, and `clone3`, whose
//! flags a filter cannot read, gets ENOSYS so that libc falls back to
//! `clone`. The capability is really gone for the command and everything
//! it starts; tests/tests/tiers.rs runs `warren` under it to watch
//! `--isolation auto` fall back to the landlock tier.
//!
//!     no-userns CMD [ARGS...]

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use seccompiler::{
    apply_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

fn filter(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    errno: i32,
) -> Result<BpfProgram, Box<dyn std::error::Error>> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)?;
    let f = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch,
    )?;
    Ok(f.try_into()?)
}

fn install() -> Result<(), Box<dyn std::error::Error>> {
    let newuser = libc::CLONE_NEWUSER as u64;
    // Flags in argument 0 of both, compared on the low 32 bits.
    let with_newuser = || -> Result<Vec<SeccompRule>, Box<dyn std::error::Error>> {
        Ok(vec![SeccompRule::new(vec![SeccompCondition::new(
            0,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::MaskedEq(newuser),
            newuser,
        )?])?])
    };
    let eperm = BTreeMap::from([
        (libc::SYS_unshare, with_newuser()?),
        (libc::SYS_clone, with_newuser()?),
    ]);
    let enosys = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
    // apply_filter sets no_new_privs first, as an unprivileged caller must.
    apply_filter(&filter(eperm, libc::EPERM)?)?;
    apply_filter(&filter(enosys, libc::ENOSYS)?)?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("usage: no-userns CMD [ARGS...]");
        return ExitCode::from(2);
    };
    if let Err(e) = install() {
        eprintln!("no-userns: cannot install the seccomp filter: {e}");
        return ExitCode::from(125);
    }
    let err = Command::new(cmd).args(rest).exec();
    eprintln!("no-userns: exec {cmd}: {err}");
    ExitCode::from(127)
}
