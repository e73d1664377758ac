//! Disk limits on homes (docs/disk.md), from the inside. As root each home
//! is its own ext4 image: writing stops at the byte limit and file
//! creation at the inode limit, another tenant still writes, a raised
//! limit applies to the running sandbox, an import that does not fit is
//! refused with the home unchanged, export and delete work, the content
//! persists from one sandbox to the next, the landlock tier's `.tmp`
//! counts, and no loop device or mount is left. Without root the disk
//! limit is reported missing with its reason, and `--require-limits`
//! refuses. A forced `--disk-backend quota` without project quotas is
//! refused with the reason (the quota backend itself is tested in the VM:
//! tests/vm/quota-v2.sh).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use warren_tests::{skip, warren_command, Env, Mode};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

fn show(o: &Output) -> String {
    format!(
        "{:?}\nstdout: {}\nstderr: {}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    )
}

/// The disk flags of every command in these tests: 32 MiB, 2000 inodes.
const DISK: [&str; 4] = ["--disk", "32M", "--disk-inodes", "2000"];

/// `warren run` for `user` with [`DISK`], in `tier`; append the command.
fn run(env: &Env, user: &str, tier: &str, cmd: &str) -> Output {
    let mut c = warren_command();
    c.args(env.run_args(user, tier))
        .args(DISK)
        .args(["--", "sh", "-c", cmd])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `warren <args[0]>` with this env's store and [`DISK`].
fn warren(env: &Env, args: &[&str]) -> Output {
    warren_command()
        .arg(args[0])
        .arg("--state-dir")
        .arg(env.state_dir())
        .arg("--workspace-root")
        .arg(env.workspace_root())
        .args(DISK)
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Whether this host can give homes images; skips (fails in CI) when root
/// cannot.
fn images_here() -> bool {
    if Mode::current() != Mode::Root {
        return false;
    }
    match warren_runtime::disk::image_backend_unavailable(Path::new("/proc")) {
        None => true,
        Some(why) => {
            skip(&format!("per-home disk images unavailable as root: {why}"));
            false
        }
    }
}

/// Nothing of `env`'s images is left attached or mounted.
fn assert_nothing_left(env: &Env) {
    let dir = env.dir.path().display().to_string();
    let loops = Command::new("losetup").arg("-a").output().unwrap();
    assert!(
        !text(&loops.stdout).contains(&dir),
        "loop devices left: {}",
        text(&loops.stdout)
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let left: Vec<&str> = mounts.lines().filter(|l| l.contains(&dir)).collect();
    assert!(left.is_empty(), "mounts left: {left:?}");
}

/// A child killed when dropped.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The children of `pid` (the shim of a `warren run`).
fn shims_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn writing_stops_at_the_byte_and_inode_limits_and_others_still_write() {
    if !images_here() {
        return;
    }
    let env = Env::new();
    // Bytes: 64 MiB into a 32 MiB home stops with ENOSPC.
    let o = run(
        &env,
        "alice",
        "namespaces",
        "head -c 67108864 /dev/zero > big; echo rc=$?; warren-info",
    );
    let out = text(&o.stdout);
    assert!(out.contains("rc=1"), "{}", show(&o));
    assert!(text(&o.stderr).contains("No space left"), "{}", show(&o));
    assert!(out.contains("disk quota reached (32.0 MiB)"), "{out}");
    assert!(out.contains("disk 32.0 MiB and"), "{out}");
    let size: u64 = text(&run(&env, "alice", "namespaces", "stat -c %s big; rm big").stdout)
        .trim()
        .parse()
        .unwrap();
    assert!((16 << 20..=32 << 20).contains(&size), "wrote {size} bytes");
    // Inodes: file creation stops near 2000 (mkfs rounds per group).
    let o = run(
        &env,
        "alice",
        "namespaces",
        "i=0; while true 2>/dev/null > f$i; do i=$((i+1)); done; echo files=$i",
    );
    let files: u64 = text(&o.stdout)
        .trim()
        .strip_prefix("files=")
        .unwrap()
        .parse()
        .unwrap();
    assert!((1800..=2100).contains(&files), "{}", show(&o));
    // Another tenant's home is its own filesystem.
    let o = run(
        &env,
        "bob",
        "namespaces",
        "head -c 8388608 /dev/zero > f && echo bob-ok",
    );
    assert!(text(&o.stdout).contains("bob-ok"), "{}", show(&o));
    // Stats read the image's superblock (no sandbox runs).
    let s: serde_json::Value =
        serde_json::from_slice(&warren(&env, &["users", "stats", "alice"]).stdout).unwrap();
    assert!(s["disk"]["inodes_used"].as_u64().unwrap() >= files, "{s}");
    assert_eq!(s["disk"]["mounted"], false, "{s}");
    assert_eq!(s["disk_limits"]["bytes"], 32u64 << 20, "{s}");
    assert_nothing_left(&env);
}

#[test]
fn a_raised_limit_applies_to_the_running_sandbox_and_a_lower_one_must_fit() {
    if !images_here() {
        return;
    }
    let env = Env::new();
    let home = env.workspace_root().join("alice");
    // 24 MiB first, then (after the raise to 56 MiB, within the image's
    // headroom of twice the limit) 24 MiB more: 48 MiB in all.
    let mut c = warren_command();
    c.args(env.run_args("alice", "namespaces"))
        .args(DISK)
        .args([
            "--",
            "sh",
            "-c",
            "head -c 25165824 /dev/zero > a && : > ready && \
         while [ ! -e go ]; do sleep 0.05; done; \
         head -c 25165824 /dev/zero > b && echo grew-ok",
        ]);
    let child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Killed if the test fails before it ends (its shim and sandbox die
    // with it).
    let mut child = KillOnDrop(Some(child));
    // The image is mounted where only the sandbox's shim sees it.
    let shim_home =
        |shim: u32| Path::new(&format!("/proc/{shim}/root")).join(home.strip_prefix("/").unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
        if let Some(h) = shims_of(child.0.as_ref().unwrap().id())
            .into_iter()
            .map(shim_home)
            .find(|h| h.join("ready").exists())
        {
            break h;
        }
        assert!(Instant::now() < deadline, "the sandbox never got ready");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        !home.join("ready").exists(),
        "the host's own view of the home shows no image"
    );
    let o = warren(
        &env,
        &["users", "limits", "alice", r#"{"disk_bytes": 58720256}"#],
    );
    assert!(o.status.success(), "{}", show(&o));
    // Through the shim's view: the sandbox may go on.
    std::fs::write(seen.join("go"), "").unwrap();
    let o = child.0.take().unwrap().wait_with_output().unwrap();
    assert!(text(&o.stdout).contains("grew-ok"), "{}", show(&o));
    // Lower than what the home holds: refused, nothing changed.
    let o = warren(
        &env,
        &["users", "limits", "alice", r#"{"disk_bytes": 33554432}"#],
    );
    assert!(!o.status.success(), "{}", show(&o));
    assert!(
        text(&o.stderr).contains("more than the new limit"),
        "{}",
        show(&o)
    );
    let s: serde_json::Value =
        serde_json::from_slice(&warren(&env, &["users", "show", "alice"]).stdout).unwrap();
    assert_eq!(s["limits"]["disk_bytes"], 58720256u64, "{s}");
    // The next sandbox starts with the raised limit and the content.
    let o = run(&env, "alice", "namespaces", "ls; warren-info");
    assert!(text(&o.stdout).contains("disk 56.0 MiB"), "{}", show(&o));
    assert!(text(&o.stdout).contains("b\n"), "{}", show(&o));
    assert_nothing_left(&env);
}

#[test]
fn an_import_that_does_not_fit_is_refused_and_export_and_delete_work() {
    if !images_here() {
        return;
    }
    let env = Env::new();
    let o = run(
        &env,
        "alice",
        "namespaces",
        "mkdir d && echo kept > d/note && echo ok",
    );
    assert!(text(&o.stdout).contains("ok"), "{}", show(&o));
    // 40 MiB that does not compress, into 32 MiB.
    let src = env.dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let mut noise = vec![0u8; 40 << 20];
    let mut x = 0x9e3779b97f4a7c15u64;
    for chunk in noise.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(src.join("big"), &noise).unwrap();
    drop(noise);
    let tgz = env.dir.path().join("big.tgz");
    let tar = Command::new("tar")
        .arg("czf")
        .arg(&tgz)
        .arg("-C")
        .arg(&src)
        .arg("big")
        .status()
        .unwrap();
    assert!(tar.success());
    let o = warren(&env, &["users", "import", "alice", tgz.to_str().unwrap()]);
    assert!(!o.status.success(), "{}", show(&o));
    assert!(text(&o.stderr).contains("no room"), "{}", show(&o));
    let o = run(&env, "alice", "namespaces", "find . | sort");
    assert_eq!(text(&o.stdout), ".\n./d\n./d/note\n", "{}", show(&o));
    // Export reads the image's content.
    let out = env.dir.path().join("alice.tgz");
    let o = warren(
        &env,
        &["users", "export", "alice", "-o", out.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", show(&o));
    let list = Command::new("tar").arg("tzf").arg(&out).output().unwrap();
    assert!(text(&list.stdout).contains("d/note"), "{}", show(&list));
    // Delete takes the image with the home.
    let image = warren_runtime::disk::image_path(
        &warren_runtime::disk::images_dir(&env.workspace_root()),
        "alice",
    );
    assert!(image.exists());
    let o = warren(&env, &["users", "delete", "alice", "--remove-home"]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(!image.exists(), "the image is removed with the home");
    assert_nothing_left(&env);
}

#[test]
fn the_landlock_tiers_tmp_counts_against_the_limit() {
    if !images_here() {
        return;
    }
    if warren_runtime::sys::landlock_abi() == 0 {
        skip("this kernel has no Landlock: the landlock tier cannot run");
        return;
    }
    let env = Env::new();
    let o = run(
        &env,
        "alice",
        "landlock",
        "case \"$TMPDIR\" in \"$HOME\"/*) ;; *) echo tmp-elsewhere;; esac; \
         head -c 67108864 /dev/zero > \"$TMPDIR/big\"; echo rc=$?",
    );
    let out = text(&o.stdout);
    assert!(!out.contains("tmp-elsewhere"), "{}", show(&o));
    assert!(out.contains("rc=1"), "{}", show(&o));
    assert!(text(&o.stderr).contains("No space left"), "{}", show(&o));
    assert_nothing_left(&env);
}

#[test]
fn existing_content_moves_into_the_image_and_stays() {
    if !images_here() {
        return;
    }
    let env = Env::new();
    // A home from before disk limits: made without one.
    let mut c = warren_command();
    let o = c
        .args(env.run_args("alice", "namespaces"))
        .args([
            "--",
            "sh",
            "-c",
            "echo before > old && ln -s /etc/passwd link",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let o = run(
        &env,
        "alice",
        "namespaces",
        "cat old; readlink link; df -P .",
    );
    let out = text(&o.stdout);
    assert!(out.contains("before\n/etc/passwd\n"), "{}", show(&o));
    assert!(out.contains("/dev/loop"), "the home is its image: {out}");
    // The host's directory under the image holds nothing any more.
    let home = env.workspace_root().join("alice");
    assert_eq!(std::fs::read_dir(&home).unwrap().count(), 0);
    // And the next sandbox (a new process, as after a restart) finds it.
    let o = run(&env, "alice", "namespaces", "cat old");
    assert_eq!(text(&o.stdout), "before\n", "{}", show(&o));
    assert_nothing_left(&env);
}

/// A new tenant's empty home gets its image without the copy-in mount
/// (issue 15: a new user's start no longer mounts twice): its root still
/// takes the home's mode, holds no lost+found, and has the limit.
#[test]
fn a_new_empty_home_gets_its_image_with_the_homes_mode() {
    if !images_here() {
        return;
    }
    let env = Env::new();
    let o = run(&env, "carol", "namespaces", "stat -c %a .; ls -A; df -P .");
    assert!(o.status.success(), "{}", show(&o));
    let out = text(&o.stdout);
    let mut lines = out.lines();
    let inside = lines.next().unwrap_or_default().to_string();
    // The host's directory under the image keeps the mode it was made with.
    let host = {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(env.workspace_root().join("carol")).unwrap();
        format!("{:o}", m.permissions().mode() & 0o7777)
    };
    assert_eq!(inside, host, "the image's root has the home's mode: {out}");
    assert_eq!(
        lines.next().map(|l| l.starts_with("Filesystem")),
        Some(true),
        "the new home is empty (no lost+found): {out}"
    );
    assert!(out.contains("/dev/loop"), "the home is its image: {out}");
    // Writing stops at the limit: 64 MiB into 32 MiB.
    let o = run(
        &env,
        "carol",
        "namespaces",
        "dd if=/dev/zero of=big bs=1M count=64 2>&1; echo rc=$?",
    );
    assert!(text(&o.stdout).contains("No space left"), "{}", show(&o));
    assert_nothing_left(&env);
}

#[test]
fn without_root_the_disk_limit_is_reported_missing() {
    if Mode::current() == Mode::Root {
        return;
    }
    let env = Env::new();
    let o = run(&env, "alice", "auto", "warren-info");
    assert!(o.status.success(), "{}", show(&o));
    let err = text(&o.stderr);
    assert!(err.contains("disk"), "{err}");
    assert!(
        err.contains("per-home disk images need root"),
        "the reason and the fix: {err}"
    );
    let info = text(&o.stdout);
    let line = info
        .lines()
        .find(|l| l.contains("not enforced on this host:"))
        .unwrap_or_else(|| panic!("no missing limits in {info}"));
    assert!(line.contains("disk"), "{line}");
    let mut c = warren_command();
    let o = c
        .args(env.run_args("alice", "auto"))
        .args(DISK)
        .args(["--require-limits", "--", "true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125), "{}", show(&o));
    assert!(text(&o.stderr).contains("apply limits"), "{}", show(&o));
}

#[test]
fn a_forced_quota_backend_without_project_quotas_is_refused_with_the_reason() {
    let env = Env::new();
    let why = warren_runtime::disk::quota::quota_backend_unavailable(
        &env.workspace_root(),
        Path::new("/proc"),
    );
    let Some(why) = why else {
        // Project quotas here: the refusal cannot be shown (the VM test,
        // tests/vm/quota-v2.sh, covers the backend itself).
        eprintln!("the workspace root's filesystem has project quotas: nothing to refuse");
        return;
    };
    let mut c = warren_command();
    let o = c
        .args(env.run_args("alice", "auto"))
        .args(DISK)
        .args(["--disk-backend", "quota", "--", "true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125), "{}", show(&o));
    let err = text(&o.stderr);
    assert!(err.contains("--disk-backend quota"), "{}", show(&o));
    assert!(err.contains(&why), "the reason ({why}): {}", show(&o));
}
