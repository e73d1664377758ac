//! `warren-info`: what a tenant can learn about their own sandbox from the
//! inside: who they are, the isolation in force, the limits and the usage.
//!
//! In the namespace tier the shim writes the static part to [`INFO_PATH`]
//! (read-only /etc) when it builds the sandbox, and binds itself at
//! [`INFO_BIN`]; run under that name it prints this report, measuring usage
//! from the sandbox's own /proc (which shows only the sandbox's processes).
//!
//! The tiers without namespaces have no /etc of their own: the shim puts
//! the same description in the command's environment ([`INFO_ENV`]), and
//! `warren-info` is the binary of that name installed next to `warren-shim`
//! (the shim adds its directory to PATH and lets Landlock execute that one
//! file). There /proc shows the whole host, so usage counts only the
//! processes of the tenant's uid in the sandbox's cgroup.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::disk::DiskUsage;
use crate::record::SandboxRecord;

/// Where the shim leaves the sandbox's description.
pub const INFO_PATH: &str = "/etc/warren-info.json";
/// Where `warren-info` is inside the sandbox (on the sandbox's PATH).
pub const INFO_DIR: &str = "/opt/warren/bin";
pub const INFO_BIN: &str = "/opt/warren/bin/warren-info";
/// The shim's other in-sandbox tools: symlinks to [`INFO_BIN`] in
/// [`INFO_DIR`], told apart by the name they are run under
/// (docs/archives.md).
/// `container-info` is `warren-info` under the name the system warren
/// replaces documented.
pub const APPLETS: &[&str] = &[
    "warren-import",
    "warren-export",
    "warren-get",
    "warren-put",
    "warren-download",
    "container-info",
];
/// The environment variable holding the description where there is no
/// mount namespace to put [`INFO_PATH`] in.
pub const INFO_ENV: &str = "WARREN_INFO";
/// The tool's file name, next to `warren-shim`.
pub const INFO_TOOL: &str = "warren-info";

/// The static part, fixed when the sandbox is built: who and where, and
/// the sandbox's record exactly as the server got it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxInfo {
    pub user: String,
    pub uid: u32,
    pub hostname: String,
    pub namespaces: Vec<String>,
    /// What the sandbox got (the `hello` frame and the stats API carry
    /// the same record).
    pub sandbox: SandboxRecord,
}

/// Usage measured from the sandbox's /proc (the cgroup's own counters are
/// `cgroups::Usage`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcUsage {
    pub processes: u64,
    pub threads: u64,
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
}

impl ProcUsage {
    /// Sums over every process visible in `proc_root`.
    pub fn measure(proc_root: &Path) -> ProcUsage {
        ProcUsage::measure_where(proc_root, |_| true)
    }

    /// Sums over the processes of `proc_root` that share our uid and our
    /// cgroup: the sandbox, where /proc shows the whole host.
    pub fn measure_shared_host(proc_root: &Path) -> ProcUsage {
        let me = proc_root.join("self");
        let (uid, cgroup) = (owner_uid(&me), fs::read_to_string(me.join("cgroup")).ok());
        ProcUsage::measure_where(proc_root, |dir| {
            uid.is_some()
                && owner_uid(dir) == uid
                && fs::read_to_string(dir.join("cgroup")).ok() == cgroup
        })
    }

    fn measure_where(proc_root: &Path, keep: impl Fn(&Path) -> bool) -> ProcUsage {
        let mut u = ProcUsage::default();
        let Ok(rd) = fs::read_dir(proc_root) else {
            return u;
        };
        for e in rd.flatten() {
            if !e
                .file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
                || !keep(&e.path())
            {
                continue;
            }
            let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            let Some(close) = stat.rfind(')') else {
                continue;
            };
            let f: Vec<&str> = stat[close + 2..].split(' ').collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            u.processes += 1;
            // Fields 14, 15 (utime, stime), 20 (threads), 24 (rss pages).
            u.cpu_seconds += (num(11) + num(12)) as f64 / 100.0;
            u.threads += num(17);
            u.rss_bytes += num(21) * 4096;
        }
        u
    }
}

/// The real uid of a /proc/PID directory (from its status).
fn owner_uid(dir: &Path) -> Option<u32> {
    let status = fs::read_to_string(dir.join("status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

/// The report `warren-info` prints.
pub fn render(info: &SandboxInfo, usage: &ProcUsage, status: &str) -> String {
    render_with_disk(info, usage, status, None)
}

/// The report, with the home's disk usage (`statvfs` of the home) where
/// the sandbox has a disk limit.
pub fn render_with_disk(
    info: &SandboxInfo,
    usage: &ProcUsage,
    status: &str,
    disk: Option<&DiskUsage>,
) -> String {
    let record = &info.sandbox;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .map(|v| v.trim_start_matches(':').trim().to_string())
            })
            .unwrap_or_default()
    };
    let mut s = String::new();
    let _ = writeln!(s, "user         {} (uid {})", info.user, info.uid);
    let _ = writeln!(s, "sandbox      {}", info.hostname);
    if info.namespaces.is_empty() {
        let _ = writeln!(
            s,
            "isolation    {} (no namespaces: the host's processes, network and IPC are shared)",
            record.tier
        );
    } else {
        let _ = writeln!(
            s,
            "isolation    {} ({} namespaces)",
            record.tier,
            info.namespaces.join(", ")
        );
    }
    let caps = if field("CapEff") == "0000000000000000" {
        "none"
    } else {
        "SOME (unexpected)"
    };
    let seccomp = match &record.seccomp {
        Some(profile) if field("Seccomp") == "2" => profile.as_str(),
        _ => "off",
    };
    let landlock = match record.landlock {
        Some(l) if l.abi > 0 => format!("Landlock ABI {}", l.abi),
        _ => "no Landlock".into(),
    };
    let _ = writeln!(
        s,
        "confinement  seccomp {seccomp}, capabilities {caps}, no_new_privs {}, {landlock}",
        if field("NoNewPrivs") == "1" {
            "on"
        } else {
            "off"
        }
    );
    let mut limits = Vec::new();
    let in_force = record.limits.in_force();
    if let Some(m) = in_force.memory_bytes {
        limits.push(format!("memory {} (no swap)", human(m)));
    }
    if let Some(c) = in_force.cpu {
        limits.push(format!("cpu {c} core(s)"));
    }
    if let Some(p) = in_force.pids {
        limits.push(format!("{p} tasks"));
    }
    if let Some(d) = &record.disk {
        // A project quota may limit one resource alone (0: none).
        let or_any = |n: u64, s: String| if n == 0 { "any".to_string() } else { s };
        limits.push(format!(
            "disk {} and {} inodes ({})",
            or_any(d.bytes, crate::disk::human(d.bytes)),
            or_any(d.inodes, d.inodes.to_string()),
            d.backend
        ));
    }
    if limits.is_empty() {
        limits.push("none".into());
    }
    let _ = writeln!(s, "limits       {}", limits.join(", "));
    if !record.limits.missing.is_empty() {
        let _ = writeln!(
            s,
            "             not enforced on this host: {}",
            record.limits.missing.join(", ")
        );
    }
    if !record.limits.per_process.is_empty() {
        let _ = writeln!(s, "per process  {}", record.limits.per_process.join(", "));
    }
    for note in &record.limits.notes {
        let _ = writeln!(s, "             note: {note}");
    }
    if let Some(net) = &record.network {
        let _ = writeln!(s, "network      {}", network_line(net));
    }
    let _ = writeln!(
        s,
        "usage        memory {} resident in {} processes, {} tasks, cpu {:.1} s used",
        human(usage.rss_bytes),
        usage.processes,
        usage.threads,
        usage.cpu_seconds
    );
    if let (Some(d), Some(limit)) = (disk, &record.disk) {
        let _ = writeln!(s, "{}", disk_line(d, limit.bytes));
    }
    s
}

/// The home's usage the way `df` shows it, and whether the quota is
/// reached.
pub fn disk_line(d: &DiskUsage, limit: u64) -> String {
    use crate::disk::human;
    let pct = |used: u64, total: u64| (used * 100).checked_div(total).unwrap_or(0);
    let line = format!(
        "disk         {} used of {}, {} available ({}%), {} of {} inodes ({}%)",
        human(d.bytes_used),
        human(d.bytes_total),
        human(d.bytes_available),
        pct(d.bytes_used, d.bytes_total),
        d.inodes_used,
        d.inodes_total,
        pct(d.inodes_used, d.inodes_total)
    );
    match d.full() {
        true => format!("{line}\n             disk quota reached ({})", human(limit)),
        false => line,
    }
}

/// The network in words: the mode, the allow and deny entries, the
/// resolver.
fn network_line(net: &crate::network::NetworkRecord) -> String {
    let mut parts = vec![net.mode.to_string()];
    let list = |rules: &[crate::network::Rule]| {
        rules
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };
    if !net.allow.is_empty() {
        parts.push(format!("allow {}", list(&net.allow)));
    }
    if !net.deny.is_empty() {
        parts.push(format!("deny {}", list(&net.deny)));
    }
    if let Some(r) = net.resolver {
        parts.push(format!("resolver {r}"));
    }
    parts.join(", ")
}

/// `warren-info` itself: reads the description ([`INFO_ENV`], else
/// [`INFO_PATH`]), measures usage and prints the report; with `--json`,
/// prints the description instead (its `sandbox` is the record the server
/// shows). Returns the exit code.
pub fn tool_main() -> i32 {
    let json = std::env::args().skip(1).any(|a| a == "--json");
    let parsed = match std::env::var(INFO_ENV) {
        Ok(json) => {
            serde_json::from_str::<SandboxInfo>(&json).map_err(|e| format!("${INFO_ENV}: {e}"))
        }
        Err(_) => fs::read_to_string(INFO_PATH)
            .map_err(|e| e.to_string())
            .and_then(|s| serde_json::from_str::<SandboxInfo>(&s).map_err(|e| e.to_string()))
            .map_err(|e| format!("{INFO_PATH}: {e}")),
    };
    let info = match parsed {
        Ok(i) => i,
        Err(e) => {
            eprintln!("warren-info: not inside a warren sandbox ({e})");
            return 1;
        }
    };
    if json {
        return match serde_json::to_string_pretty(&info) {
            Ok(text) => {
                println!("{text}");
                0
            }
            Err(e) => {
                eprintln!("warren-info: {e}");
                1
            }
        };
    }
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let usage = if info.namespaces.is_empty() {
        ProcUsage::measure_shared_host(Path::new("/proc"))
    } else {
        ProcUsage::measure(Path::new("/proc"))
    };
    let disk = info.sandbox.disk.as_ref().and_then(|_| {
        let home = std::env::var_os("HOME")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| Path::new("/workspace").join(&info.user));
        crate::disk::home_usage(&home)
    });
    print!(
        "{}",
        render_with_disk(&info, &usage, &status, disk.as_ref())
    );
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::Limits;
    use crate::record::LimitsInForce;
    use crate::spec::Isolation;

    #[test]
    fn report_names_everything() {
        let info = SandboxInfo {
            user: "alice".into(),
            uid: 1000,
            hostname: "alice-sandbox".into(),
            namespaces: vec!["user".into(), "pid".into()],
            sandbox: SandboxRecord {
                tier: Isolation::Namespaces,
                limits: LimitsInForce::cgroup(Limits::default(), vec![]),
                seccomp: Some("default-v2".into()),
                landlock: Some(crate::landlock::expected(7)),
                disk: None,
                network: Some(crate::network::NetworkRecord {
                    mode: crate::network::NetworkMode::Public,
                    allow: vec!["10.0.0.2:80".parse().unwrap()],
                    deny: Vec::new(),
                    resolver: Some("169.254.1.1".parse().unwrap()),
                }),
            },
        };
        let status = "CapEff:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\n";
        let usage = ProcUsage {
            processes: 3,
            threads: 3,
            rss_bytes: 10 << 20,
            cpu_seconds: 0.5,
        };
        let r = render(&info, &usage, status);
        assert!(r.contains("user         alice (uid 1000)"), "{r}");
        assert!(
            r.contains("isolation    namespaces (user, pid namespaces)"),
            "{r}"
        );
        assert!(
            r.contains("seccomp default-v2, capabilities none, no_new_privs on, Landlock ABI 7"),
            "{r}"
        );
        assert!(
            r.contains("memory 512.0 MiB (no swap), cpu 0.5 core(s), 512 tasks"),
            "{r}"
        );
        assert!(r.contains("memory 10.0 MiB resident in 3 processes"), "{r}");
        assert!(!r.contains("per process"), "{r}");
        assert!(
            r.contains("network      public, allow 10.0.0.2/32:80, resolver 169.254.1.1"),
            "{r}"
        );

        let mut limits = LimitsInForce::cgroup(Limits::NONE, vec!["memory".into(), "cpu".into()]);
        limits.per_process = vec!["core dumps off".into()];
        let shared = SandboxInfo {
            namespaces: vec![],
            sandbox: SandboxRecord {
                tier: Isolation::Landlock,
                limits,
                ..info.sandbox.clone()
            },
            ..info
        };
        let r = render(&shared, &usage, status);
        assert!(r.contains("isolation    landlock (no namespaces"), "{r}");
        assert!(r.contains("limits       none"), "{r}");
        assert!(r.contains("not enforced on this host: memory, cpu"), "{r}");
        assert!(r.contains("per process  core dumps off"), "{r}");
    }

    #[test]
    fn shared_host_usage_counts_only_our_uid_and_cgroup() {
        let d = tempfile::tempdir().unwrap();
        let proc_dir = |name: &str, uid: u32, cgroup: &str, rss: u64| {
            let dir = d.path().join(name);
            fs::create_dir(&dir).unwrap();
            fs::write(
                dir.join("status"),
                format!("Name:\tx\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n"),
            )
            .unwrap();
            fs::write(dir.join("cgroup"), cgroup).unwrap();
            let fields = format!("1 (x) S 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 1 0 0 0 {rss}");
            fs::write(dir.join("stat"), fields).unwrap();
        };
        proc_dir("self", 1000, "0::/sbx-alice\n", 0);
        proc_dir("10", 1000, "0::/sbx-alice\n", 1);
        proc_dir("11", 1000, "0::/sbx-alice\n", 2);
        proc_dir("12", 1000, "0::/sbx-bob\n", 100);
        proc_dir("13", 0, "0::/sbx-alice\n", 100);
        let u = ProcUsage::measure_shared_host(d.path());
        assert_eq!((u.processes, u.rss_bytes), (2, 3 * 4096));
    }

    #[test]
    fn usage_sums_proc() {
        let d = tempfile::tempdir().unwrap();
        for (pid, rss) in [(1, 100), (2, 50)] {
            let dir = d.path().join(pid.to_string());
            fs::create_dir(&dir).unwrap();
            let fields = format!("{pid} (x y) S 0 0 0 0 0 0 0 0 0 0 150 50 0 0 0 0 1 0 0 0 {rss}");
            fs::write(dir.join("stat"), fields).unwrap();
        }
        fs::create_dir(d.path().join("self")).unwrap();
        let u = ProcUsage::measure(d.path());
        assert_eq!((u.processes, u.threads, u.rss_bytes), (2, 2, 150 * 4096));
        assert!((u.cpu_seconds - 4.0).abs() < 1e-9);
    }
}
