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

mod services {
    use std::time::Duration;

    use super::*;
    use crate::manage::{RestartPolicy, ServiceSpec, ServiceState};

    /// A working directory in the echo backend's home ($HOME), removed
    /// on drop.
    struct Cwd(std::path::PathBuf, String);

    impl Cwd {
        fn new() -> Cwd {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
            let dir = tempfile::Builder::new()
                .prefix(".warren-services-test-")
                .tempdir_in(&home)
                .unwrap()
                .keep();
            let rel = dir.file_name().unwrap().to_string_lossy().into_owned();
            Cwd(dir, rel)
        }
    }

    impl Drop for Cwd {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn spec(name: &str, script: &str, cwd: &Cwd) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            argv: vec!["sh".into(), "-c".into(), script.into()],
            cwd: Some(format!("{}/{name}", cwd.1)),
            env: Default::default(),
            port: None,
            restart: RestartPolicy::OnFailure,
            enabled: true,
        }
    }

    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn logs(m: &Manager, name: &str) -> String {
        String::from_utf8_lossy(&m.service_logs("alice", name, None).unwrap()).into_owned()
    }

    #[tokio::test]
    async fn a_crashing_service_is_restarted_with_backoff_and_its_logs_show_both_runs() {
        let s = service();
        let m = &s.manager;
        let cwd = Cwd::new();
        m.get_or_create("admin", "alice").unwrap();
        let mut web = spec("web", "echo run port=$PORT in=$(pwd); exit 3", &cwd);
        web.port = Some(8001);
        let view = m
            .create_service("admin", "alice", web.clone())
            .await
            .unwrap();
        assert_eq!(view.spec, web);
        let err = m.create_service("admin", "alice", web).await.unwrap_err();
        assert!(matches!(err, ManageError::Conflict(_)), "{err}");
        until("two runs", || {
            logs(m, "web").matches("run port=8001").count() >= 2
        })
        .await;
        let log = logs(m, "web");
        assert!(
            log.contains(&format!("in={}/web", cwd.0.display())),
            "{log}"
        );
        assert!(log.contains("exited with code 3"), "{log}");
        assert!(log.contains("restarting in 1s"), "{log}");
        let shown = m.show_service("alice", "web").unwrap();
        assert!(shown.status.restarts >= 1);
        assert_eq!(shown.status.last_exit.unwrap().exit_code, Some(3));

        m.stop_service("admin", "alice", "web").await.unwrap();
        let shown = m.show_service("alice", "web").unwrap();
        assert_eq!(shown.status.state, ServiceState::Stopped);
        assert!(!shown.spec.enabled, "a stop disables");
        m.delete_service("admin", "alice", "web").await.unwrap();
        assert!(m.list_services("alice").unwrap().is_empty());
        let err = m.show_service("alice", "web").unwrap_err();
        assert!(matches!(err, ManageError::NotFound(_)), "{err}");
    }

    #[tokio::test]
    async fn a_service_that_exits_cleanly_under_on_failure_stays_stopped() {
        let s = service();
        let m = &s.manager;
        let cwd = Cwd::new();
        m.get_or_create("admin", "alice").unwrap();
        m.create_service("admin", "alice", spec("once", "echo done", &cwd))
            .await
            .unwrap();
        until("stopped", || {
            m.show_service("alice", "once").unwrap().status.state == ServiceState::Stopped
                && logs(m, "once").contains("exited with code 0")
        })
        .await;
        let mut never = spec("never", "exit 1", &cwd);
        never.restart = RestartPolicy::Never;
        m.create_service("admin", "alice", never).await.unwrap();
        until("failed", || {
            m.show_service("alice", "never").unwrap().status.state == ServiceState::Failed
        })
        .await;
        assert_eq!(m.show_service("alice", "never").unwrap().status.restarts, 0);
    }

    #[tokio::test]
    async fn bad_services_are_refused_and_change_nothing() {
        let s = service();
        let m = &s.manager;
        let cwd = Cwd::new();
        m.get_or_create("admin", "alice").unwrap();
        let good = spec("web", "true", &cwd);
        let mut bad = Vec::new();
        for name in ["", "../x", "a/b", ".hidden", "-x", &"n".repeat(65), "a b"] {
            bad.push(ServiceSpec {
                name: name.into(),
                ..good.clone()
            });
        }
        for cwd in ["../elsewhere", "/etc", "a/../../b", "a\0b"] {
            bad.push(ServiceSpec {
                cwd: Some(cwd.into()),
                ..good.clone()
            });
        }
        bad.push(ServiceSpec {
            argv: vec![],
            ..good.clone()
        });
        bad.push(ServiceSpec {
            argv: vec!["x".repeat(70_000)],
            ..good.clone()
        });
        bad.push(ServiceSpec {
            argv: vec!["a".into(); 300],
            ..good.clone()
        });
        bad.push(ServiceSpec {
            env: [("A=B".to_string(), "x".to_string())].into(),
            ..good.clone()
        });
        bad.push(ServiceSpec {
            env: [("BIG".to_string(), "x".repeat(70_000))].into(),
            ..good.clone()
        });
        bad.push(ServiceSpec {
            port: Some(0),
            ..good.clone()
        });
        for b in bad {
            let err = m
                .create_service("admin", "alice", b.clone())
                .await
                .unwrap_err();
            assert!(matches!(err, ManageError::BadRequest(_)), "{b:?}: {err}");
        }
        assert!(m.list_services("alice").unwrap().is_empty());
        let err = m.create_service("admin", "carol", good).await.unwrap_err();
        assert!(matches!(err, ManageError::NoSuchUser(_)), "{err}");
    }

    #[tokio::test]
    async fn a_running_service_keeps_its_sandbox_past_the_idle_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            state_dir: dir.path().join("state"),
            workspace_root: dir.path().join("workspaces"),
            uid_base: 1_900_000_000,
        };
        let registry = Registry::new(
            Arc::new(EchoBackend::new()),
            sessions::SessionLimits {
                idle_timeout: Duration::from_millis(100),
                ..Default::default()
            },
        );
        let m = Manager::new(
            settings.clone(),
            Limits::default(),
            Runner::Registry(Arc::clone(&registry)),
        )
        .unwrap();
        let cwd = Cwd::new();
        m.get_or_create("admin", "alice").unwrap();
        m.create_service("admin", "alice", spec("sleeper", "echo up; sleep 30", &cwd))
            .await
            .unwrap();
        until("running", || logs(&m, "sleeper").contains("up")).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(registry.sandbox_count(), 1, "kept past the idle timeout");
        let shown = m.show_service("alice", "sleeper").unwrap();
        assert_eq!(shown.status.state, ServiceState::Running);

        // Stored: another manager on the same state finds it, enabled.
        let again = Manager::new(settings, Limits::default(), Runner::Registry(registry)).unwrap();
        let listed = again.list_services("alice").unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].spec.enabled);
        assert_eq!(
            listed[0].status.state,
            ServiceState::Stopped,
            "not started yet"
        );

        // Deleting the user stops and forgets its services.
        m.delete("admin", "alice", false).await.unwrap();
        assert!(m.all_services().is_empty());
    }
}
