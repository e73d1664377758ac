//! The integration-test harness: find the built binaries, know which
//! privilege mode we are in, run `warren run` with the probe bound in, and
//! turn a skip into a failure when CI requires every test to run.
//!
//! Modes (set by tests/matrix.sh in WARREN_TEST_MODE, detected otherwise):
//! - `root`: real root in the initial user namespace;
//! - `user`: an unprivileged user;
//! - `subuid`: an unprivileged user with /etc/subuid and /etc/subgid ranges;
//! - `userns`: root inside `unshare --user --map-auto --map-root-user`
//!   (root's /etc/subuid ranges mapped: each tenant its own non-root id);
//! - `userns-user`: an unprivileged user inside `unshare --user
//!   --map-root-user` (one id, the user's own).
//!
//! Root inside plain `unshare --user --map-root-user` is no mode: warren
//! refuses to start sandboxes there (tests/tests/hardening.rs).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The probe as seen inside sandboxes.
pub const PROBE_IN_SANDBOX: &str = "/opt/warren-probe";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Root,
    User,
    /// An unprivileged user with /etc/subuid and /etc/subgid ranges.
    SubUid,
    /// Root in a user namespace with more ids than its own (`--map-auto`).
    UserNs,
    /// Root in a user namespace mapping one unprivileged id (`unshare -Ur`
    /// as a normal user).
    UserNsUser,
}

impl Mode {
    /// What this process is, from its uid and uid_map.
    pub fn detect() -> Mode {
        let uid = nix::unistd::geteuid().as_raw();
        let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
        let initial = map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"];
        match (uid, initial) {
            (0, true) => Mode::Root,
            (0, false) => {
                match warren_runtime::idmap::IdRange::of_current_process(Path::new("/proc")) {
                    warren_runtime::idmap::IdRange::Delegated { .. } => Mode::UserNs,
                    _ => Mode::UserNsUser,
                }
            }
            _ => match warren_runtime::idmap::IdRange::of_current_process(Path::new("/proc")) {
                warren_runtime::idmap::IdRange::Subordinate { .. } => Mode::SubUid,
                _ => Mode::User,
            },
        }
    }

    /// The mode the matrix runner says we are in; it must match reality, or
    /// the matrix itself is broken.
    pub fn current() -> Mode {
        let detected = Mode::detect();
        if let Ok(expected) = std::env::var("WARREN_TEST_MODE") {
            let want = match expected.as_str() {
                "root" => Mode::Root,
                "user" => Mode::User,
                "userns" => Mode::UserNs,
                "userns-user" => Mode::UserNsUser,
                "subuid" => Mode::SubUid,
                other => panic!("unknown WARREN_TEST_MODE {other:?}"),
            };
            assert_eq!(
                detected, want,
                "WARREN_TEST_MODE={expected} but this process is {detected:?}"
            );
        }
        detected
    }
}

/// True when a skipped test must fail instead (CI=true or WARREN_MUST_RUN=1),
/// like bubblewrap's BWRAP_MUST_WORK.
pub fn must_run() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var("WARREN_MUST_RUN").is_ok_and(|v| v == "1")
}

/// Skips the calling test with a printed reason, or fails it under CI.
pub fn skip(reason: &str) {
    if must_run() {
        panic!("test cannot run here and CI requires it to: {reason}");
    }
    eprintln!("SKIP: {reason}");
}

/// `target/<profile>/` holding warren and warren-shim: the test executable
/// lives in `target/<profile>/deps/`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

pub fn warren_bin() -> PathBuf {
    bin_dir().join("warren")
}

/// `warren`, or `$WARREN_TEST_WRAPPER warren`: the cgroup-v2 VM starts each
/// `warren run` alone in a cgroup of its own, as `systemd-run --scope -p
/// Delegate=yes` would (tests/vm/own-cgroup.sh).
///
/// Without a disk limit unless a test asks for one (`--disk`): the tests
/// that look at homes from the host see them on the host's filesystem;
/// tests/tests/disk.rs covers the per-home images.
pub fn warren_command() -> Command {
    let mut c = match std::env::var_os("WARREN_TEST_WRAPPER") {
        Some(w) => {
            let mut c = Command::new(w);
            c.arg(warren_bin());
            c
        }
        None => Command::new(warren_bin()),
    };
    c.env("WARREN_DISK", "none")
        .env("WARREN_DISK_INODES", "none");
    c
}

pub fn probe_bin() -> PathBuf {
    PathBuf::from(env!("WARREN_PROBE"))
}

/// A private state directory and workspace root for one test.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("warren-test-")
            .tempdir()
            .expect("tempdir");
        // The workspace root must be reachable by tenants' host uids as root.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        Env { dir }
    }

    pub fn workspace_root(&self) -> PathBuf {
        self.dir.path().join("ws")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `warren run` with this env's state, the probe bound in, and `args`
    /// (options, then `--`, then the command) appended.
    pub fn warren_run(&self, user: &str) -> Command {
        let mut c = warren_command();
        c.arg("run")
            .arg("--user")
            .arg(user)
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--workspace-root")
            .arg(self.workspace_root())
            .arg("--ro-bind")
            .arg(format!("{}:{PROBE_IN_SANDBOX}", probe_bin().display()))
            .stdin(Stdio::null());
        c
    }

    /// The arguments of `warren` (from `run` to `--`) for `user` in tier
    /// `isolation` (`auto`, `namespaces`, `landlock`, `none`), with the
    /// probe shared at its own host path: the tiers without namespaces
    /// mount nothing, so a bind can only share a path where it is.
    pub fn run_args(&self, user: &str, isolation: &str) -> Vec<std::ffi::OsString> {
        let probe = probe_bin();
        let mut a: Vec<std::ffi::OsString> = vec!["run".into(), "--user".into(), user.into()];
        a.extend(["--state-dir".into(), self.state_dir().into_os_string()]);
        a.extend([
            "--workspace-root".into(),
            self.workspace_root().into_os_string(),
        ]);
        a.extend(["--isolation".into(), isolation.into()]);
        a.extend([
            "--ro-bind".into(),
            format!("{}:{}", probe.display(), probe.display()).into(),
        ]);
        a
    }

    /// `warren run` in tier `isolation` (see [`Env::run_args`]); append
    /// `--` and the command. The probe is at [`probe_bin`] inside.
    pub fn warren_run_tier(&self, user: &str, isolation: &str) -> Command {
        let mut c = warren_command();
        c.args(self.run_args(user, isolation)).stdin(Stdio::null());
        c
    }

    /// Asks the probe `questions` inside `user`'s sandbox of tier `isolation`.
    pub fn probe_tier(&self, user: &str, isolation: &str, questions: &[&str]) -> Answers {
        let out = self
            .warren_run_tier(user, isolation)
            .arg("--")
            .arg(probe_bin())
            .args(questions)
            .output()
            .expect("spawn warren");
        assert!(
            out.status.success(),
            "probe failed: {:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Answers::parse(&String::from_utf8_lossy(&out.stdout))
    }

    /// Runs `cmd` for `user` and returns its output.
    pub fn run(&self, user: &str, cmd: &[&str]) -> Output {
        self.warren_run(user)
            .arg("--")
            .args(cmd)
            .output()
            .expect("spawn warren")
    }

    /// Asks the probe `questions` inside `user`'s sandbox.
    pub fn probe(&self, user: &str, questions: &[&str]) -> Answers {
        let mut cmd = vec![PROBE_IN_SANDBOX];
        cmd.extend_from_slice(questions);
        let out = self.run(user, &cmd);
        assert!(
            out.status.success(),
            "probe failed: {:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Answers::parse(&String::from_utf8_lossy(&out.stdout))
    }
}

/// The probe's `question<TAB>answer` lines.
#[derive(Debug, Clone, Default)]
pub struct Answers(pub HashMap<String, String>);

impl Answers {
    pub fn parse(s: &str) -> Answers {
        Answers(
            s.lines()
                .filter_map(|l| l.split_once('\t'))
                .map(|(q, a)| (q.to_string(), a.to_string()))
                .collect(),
        )
    }

    pub fn get(&self, q: &str) -> &str {
        self.0
            .get(q)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("probe gave no answer to {q:?}: {:?}", self.0))
    }
}

/// Whether a process with this pid exists on the host.
pub fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Host pids of every process whose cmdline contains `needle`.
pub fn host_pids_matching(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// bwrap with the flags both the reference rows and the benchmark use: all
/// namespaces, uid/gid 1000, `hostname`, read-only /usr with the merged-/usr
/// symlinks, fresh /proc, /dev and /tmp. `None` when bwrap is not installed.
pub fn bwrap_base(hostname: &str) -> Option<Command> {
    let bwrap = ["/usr/bin/bwrap", "/bin/bwrap"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let mut c = Command::new(bwrap);
    c.args([
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--uid",
        "1000",
        "--gid",
        "1000",
    ])
    .args(["--hostname", hostname, "--ro-bind", "/usr", "/usr"])
    .args([
        "--symlink",
        "usr/bin",
        "/bin",
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/lib64",
        "/lib64",
    ])
    .args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]);
    Some(c)
}
