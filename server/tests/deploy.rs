//! The deployment files in deploy/, checked as far as this host allows
//! (it has systemd installed but does not boot with it, and no Render):
//!
//! * both systemd units pass `systemd-analyze verify`, as shipped and with
//!   their commented-out jwt lines enabled;
//! * their command lines, with every `Environment=` turned into the flag
//!   that owns the variable, parse with the real CLI and give a valid
//!   server configuration: a renamed flag or variable fails here;
//! * the directives that would break sandboxes stay out, with the reason;
//! * as root, a sandbox runs in a mount namespace set up the way the root
//!   unit's directives set one up (and, as a control, does not once
//!   ProtectKernelTunables= is added);
//! * render.yaml has the Blueprint keys a native web service needs, its
//!   variables are real, and its start command, run by a shell with a built
//!   binary, serves /healthz.
//!
//! Where a tool or privilege is missing the test skips with a printed reason;
//! under CI=true (or WARREN_MUST_RUN=1) a skip fails.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::CommandFactory;
use clap::Parser;
use warren::cli::{Cli, Command as Sub};
use warren::web::auth::AuthMode;
use yaml_rust2::{Yaml, YamlLoader};

/// Variables warren reads that are not a flag's (`tracing` filter).
const NOT_FLAGS: &[&str] = &["WARREN_LOG"];
/// A JWT secret as Render's `generateValue` makes one (base64 of 256 bits).
const SAMPLE_SECRET: &str = "q2hVt9kQm0bYx3cJ8sWfL1rN6pZ4uE7aG5dH2iK0oM8=";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn warren_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_warren"))
}

fn must_run() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var("WARREN_MUST_RUN").is_ok_and(|v| v == "1")
}

/// Skips the calling test with a printed reason, or fails it under CI.
fn skip(reason: &str) {
    assert!(
        !must_run(),
        "test cannot run here and CI requires it to: {reason}"
    );
    eprintln!("SKIP: {reason}");
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

// ---------------------------------------------------------------- units

/// One `Key=Value` line of a unit file; `commented` for `#Key=Value`, the
/// form the units use for optional lines.
#[derive(Debug, Clone)]
struct Entry {
    section: String,
    key: String,
    value: String,
    commented: bool,
}

fn parse_unit(text: &str) -> Vec<Entry> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        assert!(
            !line.ends_with('\\'),
            "continuation lines are not handled here: {line}"
        );
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        let (body, commented) = match line.strip_prefix('#') {
            Some(rest) => (rest, true),
            None => (line, false),
        };
        let Some((key, value)) = body.split_once('=') else {
            continue;
        };
        // A directive starts with its name right away; prose comments
        // ("# Hardening. ...", "#   Delegate=...") do not.
        if key.is_empty()
            || !key.starts_with(|c: char| c.is_ascii_uppercase())
            || !key.chars().all(|c| c.is_ascii_alphanumeric())
        {
            continue;
        }
        out.push(Entry {
            section: section.clone(),
            key: key.to_string(),
            value: value.to_string(),
            commented,
        });
    }
    out
}

/// The unit's text with its optional (`#Key=`) lines enabled.
fn enable_optional(text: &str) -> String {
    let optional: Vec<String> = parse_unit(text)
        .into_iter()
        .filter(|e| e.commented)
        .map(|e| format!("#{}={}", e.key, e.value))
        .collect();
    text.lines()
        .map(|l| {
            if optional.iter().any(|o| o == l) {
                &l[1..]
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn active<'a>(unit: &'a [Entry], key: &str) -> Vec<&'a str> {
    unit.iter()
        .filter(|e| !e.commented && e.key == key)
        .map(|e| e.value.as_str())
        .collect()
}

struct UnitFile {
    file: &'static str,
    user: bool,
}

const UNITS: [UnitFile; 2] = [
    UnitFile {
        file: "deploy/warren.service",
        user: false,
    },
    UnitFile {
        file: "deploy/warren-user.service",
        user: true,
    },
];

#[test]
fn units_pass_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        return skip("systemd-analyze is not installed (Debian package `systemd`)");
    }
    for u in &UNITS {
        let shipped = read(u.file);
        for (variant, text) in [
            ("as shipped", shipped.clone()),
            ("optional lines enabled", enable_optional(&shipped)),
        ] {
            // verify wants ExecStart= to exist: point it at the built binary.
            let text = text.replace("/usr/local/bin/warren", warren_bin().to_str().unwrap());
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("warren.service");
            std::fs::write(&path, text).unwrap();
            let mut cmd = Command::new("systemd-analyze");
            if u.user {
                // A user manager needs a runtime directory, even to verify.
                let xdg = dir.path().join("xdg");
                std::fs::create_dir(&xdg).unwrap();
                std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o700)).unwrap();
                cmd.arg("--user").env("XDG_RUNTIME_DIR", &xdg);
            }
            let out = cmd
                .args(["--man=no", "verify"])
                .arg(&path)
                .output()
                .unwrap();
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            // verify exits 0 on unknown keys and bad values, but says so.
            assert!(
                out.status.success() && said.trim().is_empty(),
                "{} ({variant}): systemd-analyze verify: {}\n{said}",
                u.file,
                out.status
            );
        }
    }
}

/// Turns a unit's ExecStart= and Environment= into the argv the CLI would
/// see: each variable becomes the flag that reads it (so the name must be
/// one `warren serve` knows), specifiers replaced from `specifiers`.
fn unit_argv(unit: &[Entry], specifiers: &[(&str, &Path)]) -> Vec<String> {
    let expand = |s: &str| {
        let mut s = s.to_string();
        for (spec, path) in specifiers {
            s = s.replace(spec, path.to_str().unwrap());
        }
        assert!(!s.contains('%'), "unknown specifier in {s:?}");
        s
    };
    let exec = active(unit, "ExecStart");
    assert_eq!(exec.len(), 1, "one ExecStart=");
    assert!(!exec[0].contains(['"', '\'', '$']), "plain ExecStart=");
    let mut argv: Vec<String> = exec[0].split_whitespace().map(String::from).collect();
    assert_eq!(argv[0], "/usr/local/bin/warren", "the installed binary");
    let env: Vec<(String, String)> = active(unit, "Environment")
        .into_iter()
        .map(|kv| {
            assert!(
                !kv.contains(['"', '\'', ' ']),
                "one plain K=V per line: {kv}"
            );
            let (k, v) = kv.split_once('=').expect("K=V");
            (k.to_string(), expand(v))
        })
        .collect();
    argv.extend(env_as_flags(&env, "serve"));
    argv
}

/// `--flag=value` for each WARREN_* variable, through the flag whose
/// `env` it is in `subcommand`; panics on a variable no flag reads.
fn env_as_flags(env: &[(String, String)], subcommand: &str) -> Vec<String> {
    let cli = Cli::command();
    let sub = cli
        .find_subcommand(subcommand)
        .unwrap_or_else(|| panic!("no subcommand {subcommand}"));
    let mut flags = Vec::new();
    for (k, v) in env {
        if !k.starts_with("WARREN_") || NOT_FLAGS.contains(&k.as_str()) {
            continue;
        }
        let arg = sub
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == k.as_str()))
            .unwrap_or_else(|| panic!("{k} is no variable of `warren {subcommand}`"));
        let long = arg.get_long().expect("env flags are long flags");
        if matches!(arg.get_action(), clap::ArgAction::SetTrue) {
            if v == "true" || v == "1" {
                flags.push(format!("--{long}"));
            }
        } else {
            flags.push(format!("--{long}={v}"));
        }
    }
    flags
}

fn parse_serve(argv: &[String]) -> warren::cli::args::ServeArgs {
    match Cli::try_parse_from(argv) {
        Ok(Cli {
            command: Sub::Serve(args),
        }) => *args,
        Ok(other) => panic!("{argv:?} is not `warren serve`: {other:?}"),
        Err(e) => panic!("{argv:?} does not parse: {e}"),
    }
}

#[test]
fn unit_command_lines_parse_with_the_real_cli() {
    let dir = tempfile::tempdir().unwrap();
    // %d (credentials) and %h (home) hold the secret the jwt lines name.
    let creds = dir.path().join("credentials");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::create_dir_all(home.join(".config/warren")).unwrap();
    for f in [
        creds.join("jwt-secret"),
        home.join(".config/warren/jwt-secret"),
    ] {
        std::fs::write(&f, SAMPLE_SECRET).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o400)).unwrap();
    }
    for u in &UNITS {
        let shipped = read(u.file);
        for (text, auth) in [
            (shipped.clone(), AuthMode::Token),
            (enable_optional(&shipped), AuthMode::Jwt),
        ] {
            let unit = parse_unit(&text);
            let argv = unit_argv(&unit, &[("%d", &creds), ("%h", &home)]);
            let args = parse_serve(&argv);
            let config = args
                .to_config()
                .unwrap_or_else(|e| panic!("{}: {argv:?}: {e}", u.file));
            assert_eq!(config.auth.mode(), auth, "{}: {argv:?}", u.file);
            assert_eq!(
                config.listen,
                "127.0.0.1:8080".parse().unwrap(),
                "{}",
                u.file
            );
            if !u.user {
                assert_eq!(
                    args.store.settings().workspace_root,
                    Path::new("/var/lib/warren/workspaces")
                );
            }
        }
    }
}

#[test]
fn unit_directives_keep_sandboxes_working() {
    let root = parse_unit(&read("deploy/warren.service"));
    let user = parse_unit(&read("deploy/warren-user.service"));
    for (unit, name) in [(&root, "warren.service"), (&user, "warren-user.service")] {
        assert!(
            unit.iter()
                .all(|e| e.section == "Unit" || e.section == "Service" || e.section == "Install"),
            "{name}: unknown section"
        );
        assert_eq!(active(unit, "Delegate"), ["yes"], "{name}: Delegate=yes");
        assert_eq!(active(unit, "KillMode"), ["mixed"], "{name}");
        assert!(active(unit, "User").is_empty(), "{name}: no User=");
        for key in ["ExecStartPost", "ExecReload", "ExecStop", "ExecStopPost"] {
            assert!(
                active(unit, key).is_empty(),
                "{name}: {key}= runs inside the delegated subtree"
            );
        }
        // Each would break sandboxes (the unit's comments say how).
        for key in [
            "ProtectControlGroups",
            "ProtectKernelTunables",
            "ProtectKernelLogs",
            "ProtectHostname",
            "RestrictNamespaces",
            "PrivateUsers",
            "PrivateDevices",
            "DevicePolicy",
            "DeviceAllow",
            "ProtectClock",
            "MemoryDenyWriteExecute",
            "DynamicUser",
        ] {
            assert!(
                active(unit, key).is_empty() || active(unit, key) == ["no"],
                "{name}: {key}= breaks sandboxes"
            );
        }
    }
    for (key, value) in [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("UMask", "0077"),
        ("StateDirectoryMode", "0700"),
    ] {
        assert_eq!(active(&root, key), [value], "warren.service: {key}");
    }
    // The state and the workspace root are 0700 (issue 10): systemd resets
    // the mode at every start, so it must be the one warren keeps.
    let state = active(&root, "StateDirectory");
    assert!(
        state.len() == 1
            && state[0]
                .split_whitespace()
                .any(|d| d == "warren/workspaces"),
        "{state:?}"
    );
    // The rootless unit: namespacing directives would hide subordinate ids
    // and seccomp ones imply no_new_privs, which disables newuidmap.
    for key in [
        "NoNewPrivileges",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "ProtectKernelModules",
        "LockPersonality",
        "RestrictRealtime",
        "SystemCallArchitectures",
        "SystemCallFilter",
        "RestrictSUIDSGID",
        "UMask",
    ] {
        assert!(
            active(&user, key).is_empty(),
            "warren-user.service: {key}= breaks the rootless modes"
        );
    }
}

/// Both units raise the open-file limit (issue 10 §4: a unit's default
/// soft limit of 1,024 broke a server at 162 terminals).
#[test]
fn units_raise_the_open_file_limit() {
    for file in ["deploy/warren.service", "deploy/warren-user.service"] {
        let unit = parse_unit(&read(file));
        let value = active(&unit, "LimitNOFILE");
        assert_eq!(value.len(), 1, "{file}: LimitNOFILE= once");
        let n: u64 = value[0].parse().unwrap_or(0);
        assert!(n >= 16384, "{file}: LimitNOFILE={}", value[0]);
    }
}

/// True for real root in the initial user namespace.
fn real_root() -> bool {
    nix::unistd::geteuid().is_root()
        && std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|m| m.contains("4294967295"))
}

/// A shell script that sets up, in a fresh mount namespace, what the root
/// unit's directives set up (those that are mounts, the umask and
/// no_new_privs; the seccomp ones are not emulated), with the state
/// directory moved under `base`, then runs `warren run` with the unit's
/// environment. `extra` mounts go in last.
fn emulate_unit(unit: &[Entry], base: &Path, bin: &Path, extra: &str) -> String {
    let base = base.to_str().unwrap();
    let relocate = |s: &str| s.replace("/var/lib/", &format!("{base}/var/lib/"));
    let mode = active(unit, "StateDirectoryMode")[0];
    let mut sh = String::from("set -eu\nmount --make-rprivate /\n");
    let states: Vec<String> = active(unit, "StateDirectory")[0]
        .split_whitespace()
        .map(|d| format!("{base}/var/lib/{d}"))
        .collect();
    for d in &states {
        sh.push_str(&format!("mkdir -p {d} && chmod {mode} {d}\n"));
    }
    // ReadWritePaths-like: the state directory stays writable.
    sh.push_str(&format!("mount --bind {0} {0}\n", states[0]));
    if active(unit, "ProtectSystem") == ["strict"] {
        sh.push_str(&format!(
            "findmnt -rn -o TARGET | while read -r m; do\n  case \"$m\" in \
             /proc|/proc/*|/sys|/sys/*|/dev|/dev/*|{0}) continue;; esac\n  \
             mount -o remount,bind,ro \"$m\" || echo \"not read-only: $m\" >&2\ndone\n",
            states[0]
        ));
    }
    let inaccessible = |p: &str| format!("[ -d {p} ] && mount -t tmpfs -o ro,mode=000 none {p}\n");
    if active(unit, "ProtectHome") == ["yes"] {
        for p in ["/home", "/root", "/run/user"] {
            sh.push_str(&inaccessible(p));
        }
    }
    if active(unit, "ProtectKernelModules") == ["yes"] {
        sh.push_str(&inaccessible("/usr/lib/modules"));
    }
    if active(unit, "PrivateTmp") == ["yes"] {
        sh.push_str("mount -t tmpfs -o mode=1777 none /tmp\n");
        sh.push_str("mount -t tmpfs -o mode=1777 none /var/tmp\n");
    }
    sh.push_str(extra);
    sh.push_str(&format!("umask {}\n", active(unit, "UMask")[0]));
    let nnp = if active(unit, "NoNewPrivileges") == ["yes"] {
        "setpriv --no-new-privs "
    } else {
        ""
    };
    let env: Vec<String> = active(unit, "Environment")
        .into_iter()
        .map(relocate)
        .collect();
    sh.push_str(&format!(
        "exec {nnp}env {} {} run --user alice -- sh -c 'echo note > ~/f && cat ~/f && echo sandbox-ran'\n",
        env.join(" "),
        bin.display()
    ));
    sh
}

#[test]
fn a_sandbox_runs_under_the_root_units_directives() {
    if !real_root() {
        return skip("needs real root (the root unit's mount namespace)");
    }
    if !warren_bin().with_file_name("warren-shim").exists() {
        return skip("warren-shim is not built (cargo build --workspace)");
    }
    let unit = parse_unit(&read("deploy/warren.service"));
    // Not under /tmp, /var/tmp or /home (the unit hides them; a checkout
    // may live there): a directory under /var/lib with copies of both
    // binaries, as installed.
    let base = tempfile::Builder::new()
        .prefix("warren-deploy-test-")
        .tempdir_in("/var/lib")
        .unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let bin_dir = base.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    std::fs::set_permissions(&bin_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for name in ["warren", "warren-shim"] {
        std::fs::copy(warren_bin().with_file_name(name), bin_dir.join(name)).unwrap();
    }
    let bin = bin_dir.join("warren");
    let run = |extra: &str| {
        let script = emulate_unit(&unit, base.path(), &bin, extra);
        let out = Command::new("unshare")
            .args(["-m", "sh", "-c", &script])
            .stdin(Stdio::null())
            .output()
            .expect("unshare");
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (status, stdout, stderr) = run("");
    assert!(
        status.success() && stdout == "note\nsandbox-ran\n",
        "{status}: {stdout:?}\n{stderr}"
    );
    assert!(!stderr.contains("not read-only"), "{stderr}");
    // Closed to every other local user, and the sandbox still ran (issue 10).
    for dir in ["var/lib/warren", "var/lib/warren/workspaces"] {
        let path = base.path().join(dir);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", path.display());
    }

    // The control: ProtectKernelTunables= (a read-only mount over /proc/sys)
    // and the kernel refuses the sandbox its /proc, as the unit says.
    let (status, stdout, stderr) = run("mount --bind -o ro /proc/sys /proc/sys\n");
    assert!(
        !status.success() && stderr.contains("mount /proc"),
        "{status}: {stdout:?}\n{stderr}"
    );
}

// ---------------------------------------------------------------- render

fn blueprint() -> Yaml {
    let text = read("deploy/render.yaml");
    let mut docs = YamlLoader::load_from_str(&text).expect("render.yaml is YAML");
    assert_eq!(docs.len(), 1, "one document");
    docs.remove(0)
}

fn string<'a>(y: &'a Yaml, key: &str) -> &'a str {
    y[key]
        .as_str()
        .unwrap_or_else(|| panic!("render.yaml: {key} must be a string, is {:?}", y[key]))
}

/// The service's variables: key -> Some(value), or None for a generated one.
fn env_vars(service: &Yaml) -> BTreeMap<String, Option<String>> {
    let mut out = BTreeMap::new();
    for v in service["envVars"].as_vec().expect("envVars is a list") {
        let h = v.as_hash().expect("an envVars entry is a map");
        let key = string(v, "key").to_string();
        let kinds = ["value", "generateValue", "sync"]
            .iter()
            .filter(|k| h.contains_key(&Yaml::String(k.to_string())))
            .count();
        assert_eq!(kinds, 1, "{key}: exactly one of value, generateValue, sync");
        let value = match &v["value"] {
            Yaml::String(s) => Some(s.clone()),
            Yaml::BadValue => None,
            other => panic!("{key}: quote the value, {other:?} is not a string"),
        };
        if value.is_none() {
            assert!(
                v["generateValue"].as_bool() == Some(true) || v["sync"].as_bool() == Some(false),
                "{key}: generateValue: true or sync: false"
            );
        }
        assert!(out.insert(key.clone(), value).is_none(), "{key} twice");
    }
    out
}

#[test]
fn render_blueprint_has_what_a_native_web_service_needs() {
    let doc = blueprint();
    let services = doc["services"].as_vec().expect("services is a list");
    assert_eq!(services.len(), 1);
    let s = &services[0];
    assert_eq!(string(s, "type"), "web");
    assert_eq!(string(s, "runtime"), "rust", "native, not docker");
    assert!(!string(s, "name").is_empty());
    // Disks need a paid instance type.
    assert_ne!(string(s, "plan"), "free");
    assert!(string(s, "buildCommand").starts_with("cargo build --release"));
    assert_eq!(string(s, "healthCheckPath"), "/healthz");
    let disk = &s["disk"];
    assert!(!string(disk, "name").is_empty());
    let mount = string(disk, "mountPath");
    assert!(mount.starts_with('/'));
    assert!(disk["sizeGB"].as_i64().is_some_and(|n| n >= 1), "sizeGB");
    let env = env_vars(s);
    // State and homes on the disk.
    for key in ["WARREN_STATE_DIR", "WARREN_WORKSPACE_ROOT"] {
        let v = env[key].as_deref().unwrap_or_else(|| panic!("{key} set"));
        assert!(v.starts_with(&format!("{mount}/")), "{key}={v} on the disk");
    }
    // Every WARREN_* name is a flag's variable.
    let literal: Vec<(String, String)> = env
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
        .collect();
    let flags = env_as_flags(&literal, "serve");
    // The start command, as the CLI would see it with those variables.
    let start = string(s, "startCommand");
    let at = start
        .find("./target/release/warren ")
        .expect("startCommand runs the built binary");
    let mut argv: Vec<String> = start[at..]
        .split_whitespace()
        .map(|w| w.trim_matches('"').replace("$PORT", "10000"))
        .collect();
    assert!(!argv.iter().any(|a| a.contains('$')), "{argv:?}");
    argv.extend(flags);
    let args = parse_serve(&argv);
    assert_eq!(args.auth, AuthMode::Jwt, "off loopback: per-user tokens");
    assert_eq!(args.listen, "0.0.0.0:10000".parse().unwrap());
    // The secret the start command writes is the one warren reads.
    let secret_file = env["WARREN_JWT_SECRET_FILE"].as_deref().unwrap();
    assert!(start.contains(&format!("> {secret_file}")), "{start}");
    let generated = start
        .split("\"$")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("startCommand writes a \"$VAR\"");
    assert_eq!(env.get(generated), Some(&None), "{generated} is generated");
}

/// Reads the server's stderr until the banner names its address.
fn wait_for_banner(stderr: impl Read + Send + 'static) -> Result<String, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            seen.push_str(&line);
            seen.push('\n');
            if let Some(url) = line.split("listening on ").nth(1) {
                let url = url.split_whitespace().next().unwrap_or_default();
                // Keep draining afterwards so the server never blocks on
                // stderr.
                let _ = tx.send(Ok(url.trim_start_matches("http://").to_string()));
            }
        }
        let _ = tx.send(Err(seen));
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(r) => r,
        Err(_) => Err("no banner within 30 s".into()),
    }
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn render_start_command_serves_healthz() {
    let doc = blueprint();
    let s = &doc["services"][0];
    let mount = string(&s["disk"], "mountPath");
    let dir = tempfile::tempdir().unwrap();
    // Render's paths, moved into a temp dir: the disk, /tmp, the checkout.
    let disk = dir.path().join("disk");
    let tmp = dir.path().join("tmp");
    let checkout = dir.path().join("checkout");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::create_dir_all(checkout.join("target/release")).unwrap();
    std::os::unix::fs::symlink(warren_bin(), checkout.join("target/release/warren")).unwrap();
    let relocate = |v: &str| {
        v.replace(mount, disk.to_str().unwrap())
            .replace("/tmp/", &format!("{}/", tmp.display()))
    };
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(relocate(string(s, "startCommand")))
        .current_dir(&checkout)
        .env("PORT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env_vars(s) {
        let v = v.map_or_else(|| SAMPLE_SECRET.to_string(), |v| relocate(&v));
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let banner = wait_for_banner(child.stderr.take().unwrap());
    let result = banner.map(|addr| http_get(&addr, "/healthz"));
    // `exec` made the shell warren: stop it the way Render does.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("warren did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let response = result.unwrap_or_else(|stderr| panic!("server did not start:\n{stderr}"));
    assert!(
        response.starts_with("HTTP/1.1 200") && response.trim_end().ends_with("\r\n\r\nok"),
        "{response}"
    );
    assert!(status.success(), "{status}");
    let secret = tmp.join("warren-jwt-secret");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), SAMPLE_SECRET);
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "umask 077 before the secret is written");
}
