//! The management service on the echo backend (a plain shell, no
//! isolation): the service's behaviour and its error variants, without a
//! web server and without root.

use std::sync::Arc;

use warren_runtime::cgroups::Limits;

use super::*;
use crate::echo::EchoBackend;
use crate::sandbox::Settings;
use crate::sessions::{self, Registry};
use crate::state::{LimitOverrides, LimitValue};
use crate::user::UserId;
use crate::WinSize;

struct Service {
    manager: Manager,
    registry: Arc<Registry>,
    _dir: tempfile::TempDir,
}

fn service() -> Service {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        state_dir: dir.path().join("state"),
        workspace_root: dir.path().join("workspaces"),
        uid_base: 1_900_000_000,
    };
    let registry = Registry::new(
        Arc::new(EchoBackend::new()),
        sessions::SessionLimits::default(),
    );
    let manager = Manager::new(
        settings,
        Limits::default(),
        Runner::Registry(Arc::clone(&registry)),
    )
    .unwrap();
    Service {
        manager,
        registry,
        _dir: dir,
    }
}

fn exec(argv: &[&str]) -> ExecRequest {
    ExecRequest {
        argv: argv.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_tenant_from_creation_to_deletion() {
    let s = service();
    let m = &s.manager;

    let (view, created) = m.get_or_create("admin", "alice").unwrap();
    assert!(created);
    assert_eq!(view.id, "alice");
    assert!(!m.get_or_create("admin", "alice").unwrap().1, "once");
    assert_eq!(m.list().unwrap().len(), 1);

    let limits = LimitOverrides {
        memory_bytes: LimitValue::Value(256 << 20),
        ..Default::default()
    };
    let view = m.set_limits("admin", "alice", &limits).unwrap();
    assert_eq!(view.limits, limits);

    let r = m
        .exec("admin", "alice", exec(&["sh", "-c", "echo hi; exit 3"]))
        .await
        .unwrap();
    assert_eq!((r.stdout.as_str(), r.exit_code), ("hi\n", Some(3)));

    let user = UserId::parse("alice").unwrap();
    let viewer = s.registry.open(&user, WinSize::default()).await.unwrap();
    let terminals = m.terminals("alice").unwrap();
    assert_eq!(terminals.len(), 1);
    assert_eq!(terminals[0].id, viewer.terminal().id());
    m.close_terminal("admin", "alice", &terminals[0].id)
        .unwrap();

    let deleted = m.delete("admin", "alice", false).await.unwrap();
    assert_eq!(deleted.id, "alice");
    assert!(matches!(m.show("alice"), Err(ManageError::NoSuchUser(_))));

    let actions: Vec<String> = m
        .audit_log(None, None, 0, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    for action in ["user.create", "limits", "exec", "terminal.close", "delete"] {
        assert!(actions.iter().any(|a| a == action), "{action}: {actions:?}");
    }
    s.registry.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn each_refusal_has_its_variant() {
    let s = service();
    let m = &s.manager;
    assert!(matches!(m.show("bob"), Err(ManageError::NoSuchUser(_))));
    assert!(matches!(
        m.get_or_create("admin", "../etc"),
        Err(ManageError::BadRequest(_))
    ));
    m.get_or_create("admin", "alice").unwrap();
    let too_small = LimitOverrides {
        memory_bytes: LimitValue::Value(1),
        ..Default::default()
    };
    assert!(matches!(
        m.set_limits("admin", "alice", &too_small),
        Err(ManageError::BadRequest(_))
    ));
    assert!(matches!(
        m.close_terminal("admin", "alice", "nope"),
        Err(ManageError::NoSuchTerminal)
    ));
    assert!(matches!(
        m.exec("admin", "alice", exec(&[])).await,
        Err(ManageError::BadRequest(_))
    ));
    for e in [
        ManageError::NoSuchUser("bob".into()),
        ManageError::BadRequest("x".into()),
        ManageError::NoSuchTerminal,
    ] {
        assert!(!e.is_internal(), "{e:?}");
    }
    s.registry.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_server_failure_keeps_its_source() {
    let s = service();
    let m = &s.manager;
    m.get_or_create("admin", "alice").unwrap();
    // The echo backend cannot spawn a missing program: the backend's error,
    // kept whole.
    let e = m
        .exec("admin", "alice", exec(&["/nonexistent/warren-test"]))
        .await
        .unwrap_err();
    assert!(matches!(e, ManageError::Backend(_)), "{e:?}");
    assert!(e.is_internal());
    let source = std::error::Error::source(&e).expect("the backend error is the source");
    assert!(source.to_string().contains("exec"), "{source}");

    let io = ManageError::io("spooling the upload")(std::io::Error::other("disk full"));
    assert_eq!(io.to_string(), "spooling the upload: disk full");
    assert!(std::error::Error::source(&io).is_some());
    s.registry.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_refused_credential_is_audited_once() {
    let s = service();
    s.manager.auth_failed("/ws", "bad token");
    let entries = s
        .manager
        .audit_log(None, Some("auth.failed"), 0, 100)
        .unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].actor, "anonymous");
    assert_eq!(entries[0].outcome, "refused");
    assert_eq!(entries[0].detail["path"], "/ws");
}

/// A command that cannot start because of the tenant's own state (a
/// sandbox that ended meanwhile, its memory or pids limit) is a conflict
/// with its reason; anything else stays the server's failure, with its
/// source.
#[test]
fn start_failures_are_classified_by_their_cause() {
    use nix::errno::Errno;
    use warren_runtime::report::SetupError;
    let setup = |step: &str, errno: Errno| {
        start_failure(BackendError::new("exec", SetupError::errno(step, errno)))
    };
    for (step, errno) in [
        ("open sandbox PID 1 (42)", Errno::ESRCH),
        ("join namespaces (user,mount)", Errno::ESRCH),
        ("open sandbox cgroup", Errno::ENOENT),
        ("join cgroup", Errno::ENOENT),
    ] {
        let e = setup(step, errno);
        assert!(
            matches!(&e, ManageError::Conflict(m) if m.contains("ended")),
            "{step}: {e:?}"
        );
    }
    assert!(matches!(
        setup("fork command", Errno::ENOMEM),
        ManageError::OutOfMemory(_)
    ));
    assert!(matches!(
        setup("fork command", Errno::EAGAIN),
        ManageError::Conflict(m) if m.contains("pids")
    ));
    for ended in [
        StarterEnded::OutOfMemory,
        StarterEnded::Killed,
        StarterEnded::SandboxEnded("join namespaces: EPERM".into()),
    ] {
        let e = start_failure(BackendError::new("exec", ended));
        assert!(!e.is_internal(), "{e:?}");
    }
    // The cgroup refusing us for another reason is the server's problem.
    let e = setup("join cgroup", Errno::EACCES);
    assert!(
        matches!(e, ManageError::Start { .. }) && e.is_internal(),
        "{e:?}"
    );
}
