//! `warren doctor`: what this host allows, and a real sandbox to prove it.

use std::process::Stdio;
use std::time::Instant;

use nix::unistd::Pid;
use warren_runtime::host::{self, Check, HostReport};
use warren_runtime::init::{self, SignalTarget};
use warren_runtime::launch::{self, Outcome};
use warren_runtime::report;

use warren_domain::sandbox::{self, Request, Settings};

/// Prints the report (text or JSON) and returns the exit code: 0 when the
/// default isolation is available and a trial sandbox ran, 1 otherwise.
pub fn doctor(json: bool) -> i32 {
    let report = host::probe();
    let trial = trial_sandbox();
    let tier = match report.namespaces_available() {
        true => warren_runtime::spec::Isolation::Namespaces,
        false => warren_runtime::spec::Isolation::Landlock,
    };
    let network = host::network_check(tier, &warren_runtime::network::probe());
    if json {
        let v = serde_json::json!({
            "disk": disk_check(),
            "host": report,
            "trial": trial_json(&trial),
            "capacity": capacity_json(),
            "network": network,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print_text(&report, &trial);
        line("network", &network);
    }
    if report.namespaces_available() && trial.is_ok() {
        0
    } else {
        1
    }
}

fn line(name: &str, c: &Check) {
    let mark = if c.ok { "ok  " } else { "FAIL" };
    println!("[{mark}] {name:<16} {}", c.detail);
    if let Some(fix) = &c.fix {
        // A fix may carry a file to install (the AppArmor profile): keep its
        // lines, indented under the fix.
        let mut lines = fix.lines();
        println!(
            "       {:<16} fix: {}",
            "",
            lines.next().unwrap_or_default()
        );
        for l in lines {
            println!("       {:<16}      {l}", "");
        }
    }
}

fn print_text(r: &HostReport, trial: &Result<u128, String>) {
    println!("kernel {}", r.kernel);
    line("user namespaces", &r.user_namespaces);
    line("id mapping", &r.id_mapping);
    line("cgroups", &r.cgroups);
    line("seccomp", &r.seccomp);
    line("landlock", &r.landlock);
    line("newuidmap", &r.newuidmap);
    line("disk", &disk_check());
    print_capacity();
    match trial {
        Ok(ms) => println!(
            "[ok  ] {:<16} ran /bin/true in a full sandbox in {ms} ms",
            "trial sandbox"
        ),
        Err(e) => println!("[FAIL] {:<16} {e}", "trial sandbox"),
    }
    let tier = if r.namespaces_available() {
        "namespaces"
    } else {
        "none available (see fixes above)"
    };
    println!("default isolation: {tier}");
}

/// The disk line, for the default state and workspace locations: which
/// case this host is in (per-home images, or no disk limit and why), and a
/// warning when the state directory shares the homes' filesystem while no
/// limit holds them.
fn disk_check() -> Check {
    use warren_runtime::disk;
    let (ws, state) = (
        crate::cli::config::default_workspace_root(),
        crate::cli::config::default_state_dir(),
    );
    if disk::quota::quota_backend_unavailable(&ws, "/proc".as_ref()).is_none() {
        return Check {
            ok: true,
            detail: format!(
                "project quotas on the filesystem of {} (a project id per home)",
                ws.display()
            ),
            fix: None,
        };
    }
    match disk::image_backend_unavailable("/proc".as_ref()) {
        None => Check {
            ok: true,
            detail: format!(
                "per-home ext4 images, loop-mounted (beside the workspaces: {})",
                disk::images_dir(&ws).display()
            ),
            fix: None,
        },
        Some(why) => Check {
            ok: false,
            detail: match disk::same_filesystem(&ws, &state) {
                true => format!(
                    "no disk limit on homes ({why}); the state directory {} shares their \
                     filesystem, so a tenant can fill it",
                    state.display()
                ),
                false => format!("no disk limit on homes ({why})"),
            },
            fix: Some(
                "run warren as root for per-home disk images; else keep the state directory \
                 on another filesystem (docs/hosts.md)"
                    .into(),
            ),
        },
    }
}

fn trial_json(t: &Result<u128, String>) -> serde_json::Value {
    match t {
        Ok(ms) => serde_json::json!({"ok": true, "millis": ms}),
        Err(e) => serde_json::json!({"ok": false, "error": e}),
    }
}

/// Runs `/bin/true` in a real sandbox for a throw-away tenant, with state
/// and home in a temporary directory.
fn trial_sandbox() -> Result<u128, String> {
    let dir = std::env::temp_dir().join(format!("warren-doctor-{}", std::process::id()));
    let settings = Settings {
        state_dir: dir.join("state"),
        workspace_root: dir.join("ws"),
        uid_base: crate::cli::config::DEFAULT_UID_BASE,
    };
    let req = Request {
        user: "doctor".into(),
        argv: vec!["/bin/true".into()],
        tmp_size_mib: 16,
        ..Default::default()
    };
    let result = (|| {
        let spec = sandbox::prepare(&settings, &req).map_err(|e| e.to_string())?;
        init::block_signals().map_err(|e| e.to_string())?;
        let start = Instant::now();
        let l = launch::start(
            &launch::shim_path(),
            &spec,
            Stdio::null(),
            Stdio::null(),
            Stdio::piped(),
        )
        .map_err(|e| e.to_string())?;
        let pid = Pid::from_raw(l.child.id() as i32);
        let exit = init::supervise(pid, SignalTarget::Process(pid), false);
        let events = report::read_all(l.report);
        match Outcome::from_events(&events, exit) {
            Outcome::Exited(e) if e.shell_code() == 0 => Ok(start.elapsed().as_millis()),
            Outcome::Failed(err) => Err(match &err.hint {
                Some(h) => format!("{err} (hint: {h})"),
                None => err.to_string(),
            }),
            other => Err(format!("unexpected end: {other:?}")),
        }
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

// --- Capacity: open files and PTYs (issues 10 §4 and 15) ---

use crate::web::capacity::{
    FdLimit, PtyCapacity, FDS_PER_SANDBOX, FDS_PER_TERMINAL, RAISE_NOFILE, RAISE_PTYS,
};

/// Terminals below which a capacity line says `warn`: the defaults'
/// 32 sandboxes x 8 terminals.
const TERMINALS_WANTED: u64 = 256;

fn mark(enough: bool) -> &'static str {
    if enough {
        "ok  "
    } else {
        "warn"
    }
}

fn print_capacity() {
    match FdLimit::current() {
        Ok(fds) => {
            // `warren serve` raises the soft limit to the hard one.
            let terminals = fds.hard / FDS_PER_TERMINAL;
            let enough = terminals >= TERMINALS_WANTED;
            println!(
                "[{}] {:<16} soft {}, hard {}; `warren serve` raises the soft limit to the \
                 hard one: about {terminals} terminals at {FDS_PER_TERMINAL} fds each, or {} \
                 sandboxes of one terminal ({} fds)",
                mark(enough),
                "open files",
                fds.soft,
                fds.hard,
                fds.sandboxes_at_hard(),
                FDS_PER_TERMINAL + FDS_PER_SANDBOX
            );
            let how = if enough { "to raise" } else { "fix" };
            println!("       {:<16} {how}: {RAISE_NOFILE}", "");
        }
        Err(e) => println!("[warn] {:<16} cannot read RLIMIT_NOFILE: {e}", "open files"),
    }
    match PtyCapacity::read("/proc".as_ref()) {
        Ok(p) => {
            let room = p.for_sandboxes();
            let enough = room >= TERMINALS_WANTED;
            println!(
                "[{}] {:<16} {} in use of kernel.pty.max {}, of which kernel.pty.reserve {} \
                 only for the host's own /dev/pts: room for {room} more terminals in sandboxes \
                 (one PTY each)",
                mark(enough),
                "ptys",
                p.nr,
                p.max,
                p.reserve
            );
            let how = if enough { "to raise" } else { "fix" };
            println!("       {:<16} {how}: {RAISE_PTYS}", "");
        }
        Err(e) => println!(
            "[warn] {:<16} cannot read /proc/sys/kernel/pty: {e}",
            "ptys"
        ),
    }
}

fn capacity_json() -> serde_json::Value {
    let fds = FdLimit::current().ok().map(|f| {
        serde_json::json!({
            "soft": f.soft,
            "hard": f.hard,
            "terminals": f.hard / FDS_PER_TERMINAL,
            "sandboxes": f.sandboxes_at_hard(),
            "raise": RAISE_NOFILE,
        })
    });
    let ptys = PtyCapacity::read("/proc".as_ref()).ok().map(|p| {
        serde_json::json!({
            "nr": p.nr,
            "max": p.max,
            "reserve": p.reserve,
            "free": p.free(),
            "terminals": p.for_sandboxes(),
            "raise": RAISE_PTYS,
        })
    });
    serde_json::json!({
        "open_files": fds,
        "ptys": ptys,
        "fds_per_terminal": FDS_PER_TERMINAL,
        "fds_per_sandbox": FDS_PER_SANDBOX,
    })
}
