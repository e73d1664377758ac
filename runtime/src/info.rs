//! `warren-info`: what a tenant can learn about their own sandbox from the
//! inside: who they are, the isolation in force, the limits and the usage.
//!
//! The shim writes the static part to [`INFO_PATH`] (read-only /etc) when
//! it builds the sandbox, and binds itself at [`INFO_BIN`]; run under that
//! name it prints this report, measuring usage from the sandbox's own /proc
//! (which shows only the sandbox's processes).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cgroups::Limits;

/// Where the shim leaves the sandbox's description.
pub const INFO_PATH: &str = "/etc/warren-info.json";
/// Where `warren-info` is inside the sandbox (on the sandbox's PATH).
pub const INFO_DIR: &str = "/opt/warren/bin";
pub const INFO_BIN: &str = "/opt/warren/bin/warren-info";
/// The shim's other in-sandbox tools: symlinks to [`INFO_BIN`] in
/// [`INFO_DIR`], told apart by the name they are run under
/// (docs/archives.md).
pub const APPLETS: &[&str] = &["warren-import", "warren-export"];

/// The static part, fixed when the sandbox is built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxInfo {
    pub user: String,
    pub uid: u32,
    pub hostname: String,
    /// The isolation tier (`namespaces`).
    pub tier: String,
    pub namespaces: Vec<String>,
    /// The limits applied (read back from the kernel).
    pub limits: Limits,
    /// Limits that could not be applied on this host.
    pub missing_limits: Vec<String>,
    pub seccomp: String,
}

/// Usage measured from the sandbox's /proc.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub processes: u64,
    pub threads: u64,
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
}

impl Usage {
    /// Sums over every process visible in `proc_root`.
    pub fn measure(proc_root: &Path) -> Usage {
        let mut u = Usage::default();
        let Ok(rd) = fs::read_dir(proc_root) else {
            return u;
        };
        for e in rd.flatten() {
            if !e
                .file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
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

fn human(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

/// The report `warren-info` prints.
pub fn render(info: &SandboxInfo, usage: &Usage, status: &str, landlock_abi: u32) -> String {
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
    let _ = writeln!(
        s,
        "isolation    {} ({} namespaces)",
        info.tier,
        info.namespaces.join(", ")
    );
    let caps = if field("CapEff") == "0000000000000000" {
        "none"
    } else {
        "SOME (unexpected)"
    };
    let seccomp = if field("Seccomp") == "2" {
        info.seccomp.as_str()
    } else {
        "off"
    };
    let landlock = if landlock_abi > 0 {
        format!("Landlock ABI {landlock_abi}")
    } else {
        "no Landlock".into()
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
    if let Some(m) = info.limits.memory_bytes {
        limits.push(format!("memory {} (no swap)", human(m)));
    }
    if let Some(c) = info.limits.cpu {
        limits.push(format!("cpu {c} core(s)"));
    }
    if let Some(p) = info.limits.pids {
        limits.push(format!("{p} tasks"));
    }
    if limits.is_empty() {
        limits.push("none".into());
    }
    let _ = writeln!(s, "limits       {}", limits.join(", "));
    if !info.missing_limits.is_empty() {
        let _ = writeln!(
            s,
            "             not enforced on this host: {}",
            info.missing_limits.join(", ")
        );
    }
    let _ = writeln!(
        s,
        "usage        memory {} resident in {} processes, {} tasks, cpu {:.1} s used",
        human(usage.rss_bytes),
        usage.processes,
        usage.threads,
        usage.cpu_seconds
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_everything() {
        let info = SandboxInfo {
            user: "alice".into(),
            uid: 1000,
            hostname: "alice-sandbox".into(),
            tier: "namespaces".into(),
            namespaces: vec!["user".into(), "pid".into()],
            limits: Limits::default(),
            missing_limits: vec![],
            seccomp: "default-v1".into(),
        };
        let status = "CapEff:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\n";
        let usage = Usage {
            processes: 3,
            threads: 3,
            rss_bytes: 10 << 20,
            cpu_seconds: 0.5,
        };
        let r = render(&info, &usage, status, 7);
        assert!(r.contains("user         alice (uid 1000)"), "{r}");
        assert!(
            r.contains("isolation    namespaces (user, pid namespaces)"),
            "{r}"
        );
        assert!(
            r.contains("seccomp default-v1, capabilities none, no_new_privs on, Landlock ABI 7"),
            "{r}"
        );
        assert!(
            r.contains("memory 512.0 MiB (no swap), cpu 0.5 core(s), 512 tasks"),
            "{r}"
        );
        assert!(r.contains("memory 10.0 MiB resident in 3 processes"), "{r}");
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
        let u = Usage::measure(d.path());
        assert_eq!((u.processes, u.threads, u.rss_bytes), (2, 2, 150 * 4096));
        assert!((u.cpu_seconds - 4.0).abs() < 1e-9);
    }
}
