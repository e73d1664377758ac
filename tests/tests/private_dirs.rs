//! Other local host users reach nothing under the workspace root or the
//! state directory (issue 10, items 1 and 5): the root is 0700 (0711 only
//! in the tiers without namespaces as root, where tenants' own host uids
//! walk to their homes), the state directory 0700 and `warren.db` 0600,
//! and looser ones left by an older warren are tightened. As root the test
//! also tries, as an unrelated user (`nobody`), to list, read and run what
//! a tenant deliberately opened up in its home.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use warren_tests::{Env, Mode};

const NOBODY: u32 = 65534;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Runs `sh -c script` as `nobody`, with no supplementary groups.
fn as_nobody(script: &str) -> std::process::Output {
    Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "/bin/sh",
            "-c",
            script,
        ])
        .output()
        .expect("setpriv (util-linux)")
}

/// A tenant opens its home and a file in it to everyone, as a careless (or
/// hostile) tenant may.
fn open_up(env: &Env, tier: &str, home: &str) {
    let script = format!(
        "printf 'echo ran' > {home}/prog && chmod 755 {home} {home}/prog && \
         printf secret > {home}/f && chmod 644 {home}/f"
    );
    let out = env
        .warren_run_tier("alice", tier)
        .args(["--", "/bin/sh", "-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// As root: nothing under `dirs` can be listed, read or run by `nobody`.
fn nobody_reaches_nothing(env: &Env, home_open: bool) {
    let (ws, state) = (env.workspace_root(), env.state_dir());
    let tries = [
        format!("ls {}", ws.display()),
        format!("ls {}", state.display()),
        format!("cat {}/warren.db", state.display()),
        format!("cat {}/alice/f", ws.display()),
        format!("sh {}/alice/prog", ws.display()),
        format!("ls {}/alice", ws.display()),
    ];
    for t in &tries {
        let out = as_nobody(t);
        let reached = out.status.success();
        let exception = home_open && t.contains("/alice");
        assert!(
            !reached || exception,
            "nobody could `{t}`: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn namespaces_tier_keeps_workspace_root_and_state_private() {
    let env = Env::new();
    // Left by an older warren: 0755 root, 0755 state, 0644 database.
    let (ws, state) = (env.workspace_root(), env.state_dir());
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::set_permissions(&ws, std::fs::Permissions::from_mode(0o755)).unwrap();
    open_up(&env, "namespaces", "/workspace/alice");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        state.join("warren.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    open_up(&env, "namespaces", "/workspace/alice");
    assert_eq!(mode(&ws), 0o700, "workspace root");
    assert_eq!(mode(&state), 0o700, "state directory");
    assert_eq!(mode(&state.join("warren.db")), 0o600, "warren.db");
    if Mode::current() == Mode::Root {
        nobody_reaches_nothing(&env, false);
    }
}

#[test]
fn shared_host_tiers_keep_the_state_private() {
    if warren_runtime::sys::landlock_abi() == 0 {
        warren_tests::skip("this kernel has no Landlock: the landlock tier cannot run");
        return;
    }
    let env = Env::new();
    let home = env.workspace_root().join("alice");
    open_up(&env, "landlock", &home.display().to_string());
    assert_eq!(mode(&env.state_dir()), 0o700, "state directory");
    assert_eq!(mode(&env.state_dir().join("warren.db")), 0o600);
    if Mode::current() == Mode::Root {
        // Each tenant's own host uid walks to its home: others may pass
        // the root but not list it (docs/security.md).
        assert_eq!(mode(&env.workspace_root()), 0o711);
        nobody_reaches_nothing(&env, true);
    } else if Mode::current() == Mode::UserNs {
        // Root with delegated ids (`unshare --map-auto`): the same, each
        // tenant one of the delegated ids.
        assert_eq!(mode(&env.workspace_root()), 0o711);
    } else {
        // One uid for the server and every tenant: nobody else passes.
        assert_eq!(mode(&env.workspace_root()), 0o700);
    }
}
