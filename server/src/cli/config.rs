//! Where warren keeps things when nobody says otherwise. Root gets
//! /var/lib/warren; anyone else gets $XDG_DATA_HOME/warren (or
//! ~/.local/share/warren), so every default works without root.

use std::path::PathBuf;

/// First host uid handed to a tenant when running as root; tenant n gets
/// `base + n`: above login users, the usual subuid ranges (100000+) and
/// systemd-nspawn's container range (524288–1879048191).
pub const DEFAULT_UID_BASE: u32 = 1_900_000_000;

fn data_home() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/warren");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("warren");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".local/share/warren")
}

/// Directory of the state database.
pub fn default_state_dir() -> PathBuf {
    data_home()
}

/// Directory holding one home per tenant.
pub fn default_workspace_root() -> PathBuf {
    data_home().join("workspaces")
}
