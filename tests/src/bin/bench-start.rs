//! Sandbox start-up benchmark: median wall time of `warren run -- /bin/true`
//! beside bwrap and unshare doing comparable work, measured in the same run.
//!
//!     cargo build --release --workspace && target/release/bench-start [RUNS]
//!
//! Each command runs RUNS times (default 100, at least 50), interleaved so
//! that drift in the machine's load hits all three alike.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100)
        .max(50);
    let bin_dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let warren = bin_dir.join("warren");
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let ws = tmp.path().join("ws");
    let ws_bwrap = tmp.path().join("bwrap-home");
    std::fs::create_dir_all(&ws_bwrap).unwrap();

    let mut cases: Vec<(&str, Command)> = Vec::new();
    let mut w = Command::new(&warren);
    w.args(["run", "--user", "bench", "--state-dir"])
        .arg(&state)
        .arg("--workspace-root")
        .arg(&ws)
        .args(["--", "/bin/true"]);
    cases.push(("warren run -- /bin/true", w));

    if let Some(mut b) = warren_tests::bwrap_base("bench-sandbox") {
        // The same shape of sandbox: all namespaces, read-only /usr and
        // /etc, fresh /proc, /dev and /tmp, a bound home, uid 1000.
        b.args([
            "--symlink",
            "usr/sbin",
            "/sbin",
            "--ro-bind",
            "/etc",
            "/etc",
            "--bind",
        ])
        .arg(&ws_bwrap)
        .args([
            "/workspace/bench",
            "--chdir",
            "/workspace/bench",
            "/bin/true",
        ]);
        cases.push(("bwrap --unshare-all ... /bin/true", b));
    } else {
        eprintln!("bwrap not installed: apt-get install bubblewrap to compare");
    }
    let mut u = Command::new("unshare");
    u.args([
        "--user",
        "--map-root-user",
        "--mount",
        "--pid",
        "--net",
        "--ipc",
        "--uts",
        "--fork",
        "/bin/true",
    ]);
    cases.push(("unshare -U -r -m -p -n -i -u --fork /bin/true", u));

    // One warm-up each, which also creates warren's state and home.
    for (name, c) in cases.iter_mut() {
        let st = c
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .unwrap();
        assert!(st.success(), "{name} failed: {st}");
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(runs); cases.len()];
    for _ in 0..runs {
        for (i, (_, c)) in cases.iter_mut().enumerate() {
            let t = Instant::now();
            let st = c.status().unwrap();
            times[i].push(t.elapsed());
            assert!(st.success());
        }
    }
    println!(
        "sandbox start-up, {runs} runs each, wall time per run ({} cores, load average {})",
        num_cpus(),
        load_average()
    );
    println!(
        "{:<48} {:>10} {:>10} {:>10} {:>10}",
        "command", "median", "p90", "min", "x bwrap"
    );
    for t in times.iter_mut() {
        t.sort();
    }
    // The anchor: bwrap's median in this same run (absent without bwrap).
    let anchor = cases
        .iter()
        .position(|(name, _)| name.starts_with("bwrap"))
        .map(|i| percentile(&times[i], 0.5));
    for ((name, _), t) in cases.iter().zip(times.iter()) {
        let median = percentile(t, 0.5);
        let ratio = anchor.map_or("-".to_string(), |a| {
            format!("{:.2}x", median.as_secs_f64() / a.as_secs_f64())
        });
        println!(
            "{:<48} {:>10} {:>10} {:>10} {:>10}",
            name,
            ms(median),
            ms(percentile(t, 0.9)),
            ms(t[0]),
            ratio
        );
    }
}

/// The first three fields of /proc/loadavg: others' work shares the cores.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
