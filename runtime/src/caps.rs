//! Credentials of the sandbox's processes: become the sandbox user and keep
//! no capability in any set.
//!
//! After `clone(CLONE_NEWUSER)` the child holds every capability inside the
//! new namespace, and because uid 0 is not mapped there, switching to uid
//! 1000 does *not* clear them by itself (the kernel only does that when
//! leaving the namespace's root uid). So every set is cleared explicitly.

use caps::CapSet;
pub use caps::Capability;
use nix::unistd::{setresgid, setresuid, Gid, Uid};

use crate::report::SetupError;
use crate::sys;

fn caps_fail(step: &str, e: caps::errors::CapsError) -> SetupError {
    SetupError::new(step, e.to_string())
}

/// Switches to the sandbox user while keeping the capabilities held in the
/// new user namespace: the kernel only clears them when a uid change leaves
/// the namespace's uid 0, and uid 0 is never mapped in a sandbox. Checked
/// rather than assumed, since the mounts that follow need CAP_SYS_ADMIN.
pub fn become_user_keeping_caps(uid: u32, gid: u32) -> Result<(), SetupError> {
    set_ids(uid, gid)?;
    match caps::has_cap(None, CapSet::Effective, caps::Capability::CAP_SYS_ADMIN) {
        Ok(true) => Ok(()),
        Ok(false) => Err(SetupError::new(
            "switch to sandbox user",
            "lost CAP_SYS_ADMIN in the sandbox's user namespace (is uid 0 mapped?)",
        )),
        Err(e) => Err(caps_fail("read capabilities", e)),
    }
}

fn set_ids(uid: u32, gid: u32) -> Result<(), SetupError> {
    drop_supplementary_groups()?;
    setresgid(Gid::from_raw(gid), Gid::from_raw(gid), Gid::from_raw(gid))
        .map_err(|e| SetupError::errno(format!("setresgid {gid}"), e))?;
    setresuid(Uid::from_raw(uid), Uid::from_raw(uid), Uid::from_raw(uid))
        .map_err(|e| SetupError::errno(format!("setresuid {uid}"), e))?;
    Ok(())
}

/// Runs `f` (which starts a program) with `cap` raised in the ambient
/// set, so the program keeps it across its execve although our uid is not
/// root in the namespace; cleared again before returning. The shim's
/// helper that joined a sandbox's namespaces uses it to let `nft` load the
/// egress filter (CAP_NET_ADMIN in the sandbox's user namespace, which owns
/// its network namespace) before any tenant code runs.
pub fn with_ambient<R>(cap: caps::Capability, f: impl FnOnce() -> R) -> Result<R, SetupError> {
    caps::raise(None, CapSet::Inheritable, cap)
        .map_err(|e| caps_fail("raise inheritable capability", e))?;
    caps::raise(None, CapSet::Ambient, cap)
        .map_err(|e| caps_fail("raise ambient capability", e))?;
    let r = f();
    sys::ambient_clear_all().map_err(|e| SetupError::errno("clear ambient capabilities", e))?;
    caps::clear(None, CapSet::Inheritable)
        .map_err(|e| caps_fail("clear inheritable capabilities", e))?;
    Ok(r)
}

/// Drops every capability this process holds (in whatever user namespace
/// it is): ambient, inheritable, effective and permitted. For a helper
/// that needed them only to join namespaces.
pub fn drop_all() -> Result<(), SetupError> {
    sys::ambient_clear_all().map_err(|e| SetupError::errno("clear ambient capabilities", e))?;
    for set in [CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        caps::clear(None, set).map_err(|e| caps_fail("clear capabilities", e))?;
    }
    Ok(())
}

/// Switches to the sandbox user and drops every capability: bounding (up to
/// the kernel's cap_last_cap, not only the ones the caps crate knows),
/// ambient, inheritable, then effective and permitted.
pub fn become_user_without_caps(uid: u32, gid: u32) -> Result<(), SetupError> {
    // Bounding first: dropping from it needs CAP_SETPCAP, which goes with
    // the effective set at the end.
    caps::clear(None, CapSet::Bounding).map_err(|e| caps_fail("clear bounding capabilities", e))?;
    for cap in 0..=last_cap() {
        match sys::capbset_drop(cap) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
            Err(e) => return Err(SetupError::errno("drop bounding capability", e)),
        }
    }
    sys::ambient_clear_all().map_err(|e| SetupError::errno("clear ambient capabilities", e))?;
    caps::clear(None, CapSet::Inheritable)
        .map_err(|e| caps_fail("clear inheritable capabilities", e))?;

    set_ids(uid, gid)?;

    // Effective before permitted: each capset must be valid on its own.
    caps::clear(None, CapSet::Effective)
        .map_err(|e| caps_fail("clear effective capabilities", e))?;
    caps::clear(None, CapSet::Permitted)
        .map_err(|e| caps_fail("clear permitted capabilities", e))?;
    Ok(())
}

/// The tiers without namespaces: become the tenant's host ids and keep no
/// capability. With CAP_SETPCAP (root, or root of a user namespace warren
/// runs in) that is [`become_user_without_caps`]. Without it the process
/// holds no capability to begin with and can drop nothing from the bounding
/// set; it may only "switch" to its own ids, and no_new_privs (set before)
/// keeps execve from granting any.
pub fn become_tenant_without_caps(uid: u32, gid: u32) -> Result<(), SetupError> {
    let privileged = caps::has_cap(None, CapSet::Effective, caps::Capability::CAP_SETPCAP)
        .map_err(|e| caps_fail("read capabilities", e))?;
    if privileged {
        return become_user_without_caps(uid, gid);
    }
    sys::ambient_clear_all().map_err(|e| SetupError::errno("clear ambient capabilities", e))?;
    set_ids(uid, gid)?;
    for set in [CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        caps::clear(None, set).map_err(|e| caps_fail("clear capabilities", e))?;
    }
    Ok(())
}

/// The highest capability number this kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

/// Drops every supplementary group before the tenant's ids are taken,
/// wherever the kernel lets us: with CAP_SETGID in our user namespace and
/// setgroups allowed there (root; root of a namespace mapped by newgidmap
/// with subordinate ids or by `unshare --map-auto`). Otherwise an operator's
/// group, mapped to root inside, would be the tenant's too. An unprivileged
/// operator's own single-id namespace must deny setgroups (the kernel's rule
/// for an unprivileged gid_map; newgidmap's for a self-map, CVE-2018-7169:
/// dropping a group can bypass a negative group ACL), so there the
/// operator's own groups stay, which the tenant's gid already is.
fn drop_supplementary_groups() -> Result<(), SetupError> {
    match sys::clear_supplementary_groups() {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EPERM) if !may_set_groups() => Ok(()),
        Err(e) => Err(SetupError::errno("drop supplementary groups", e)),
    }
}

/// Whether setgroups(2) is ours to call: allowed in this user namespace,
/// and CAP_SETGID in the effective set.
fn may_set_groups() -> bool {
    let allowed = std::fs::read_to_string("/proc/self/setgroups")
        .map(|s| s.trim() != "deny")
        .unwrap_or(true);
    allowed && caps::has_cap(None, CapSet::Effective, caps::Capability::CAP_SETGID).unwrap_or(false)
}
