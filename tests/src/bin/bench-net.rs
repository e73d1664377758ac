//! Network benchmark (docs/network.md, docs/benchmarks.md), as root, on
//! the fake internet of the tests (tests/fakenet/fakenet.sh; no packet
//! leaves the machine):
//!
//!     cargo build --release --workspace && sudo target/release/bench-net [RUNS]
//!
//! 1. A 1 GiB download from the fake upstream with curl inside a `public`
//!    sandbox, against the same download on the host (curl's own rate, so
//!    the sandbox's start-up is not counted); 5 rounds, interleaved, medians.
//!    It also prints the share of a core the upstream's server used during
//!    the anchor's downloads: well under one, the anchor is not the
//!    server's limit.
//! 2. Start-up of `warren run -- /bin/true` with `--network public` against
//!    `--network none`, RUNS each (default 100, at least 20), interleaved,
//!    twice: under `ip netns exec` (which remounts /sys, so warren sees no
//!    cgroup hierarchy and sets no limits), and under `nsenter --net` (the
//!    host's cgroups visible: the default limits, as on a host).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FAKENET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fakenet/fakenet.sh");
const URL: &str = "http://93.184.215.14/bytes/1073741824";

/// The fake internet NAME, removed (namespaces and servers) when dropped.
struct Fakenet(String);

impl Drop for Fakenet {
    fn drop(&mut self) {
        let _ = Command::new(FAKENET).args(["down", &self.0]).status();
    }
}

fn median<T: PartialOrd + Copy>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn in_world(name: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &format!("{name}-w"), program]);
    c
}

/// `program` in the world's network namespace only: /sys and the host's
/// cgroups stay as they are.
fn in_world_net(name: &str, program: &str) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{name}-w")).arg(program);
    c
}

/// CPU time (user + system) of `pid` so far, in clock ticks.
fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after ") ".
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    tick(11) + tick(12)
}

/// curl's download rate in bytes per second.
fn rate(mut c: Command) -> f64 {
    let out = c
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{speed_download} %{size_download}",
            URL,
        ])
        .stderr(Stdio::null())
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut f = text.split_whitespace();
    let speed: f64 = f.next().and_then(|s| s.parse().ok()).unwrap_or(0.0);
    let size: f64 = f.next().and_then(|s| s.parse().ok()).unwrap_or(0.0);
    assert!(
        out.status.success() && size == (1u64 << 30) as f64,
        "download failed: {text}"
    );
    speed
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100)
        .max(20);
    if !nix::unistd::geteuid().is_root() {
        eprintln!("bench-net: run as root (it builds the fake internet in network namespaces)");
        std::process::exit(2);
    }
    let warren = std::env::current_exe().unwrap().with_file_name("warren");
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("bn{}", std::process::id() % 100_000);
    let up = Command::new(FAKENET).args(["up", &name]).status().unwrap();
    assert!(up.success(), "fakenet.sh up failed");
    let _down = Fakenet(name.clone()); // torn down even when a step panics
    let run_in = |world: fn(&str, &str) -> Command, network: &str| {
        let mut c = world(&name, warren.to_str().unwrap());
        c.args(["run", "--user", "bench", "--state-dir"])
            .arg(tmp.path().join("state"))
            .arg("--workspace-root")
            .arg(tmp.path().join("ws"))
            .args(["--network", network, "--"])
            .stdin(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let warren_run = |network: &str| run_in(in_world, network);

    // The upstream's web server (fakenet.sh: `ip netns exec` execs it).
    let server = std::fs::read_to_string(format!("/run/warren-fakenet/{name}/web.pid"))
        .unwrap_or_default()
        .trim()
        .to_string();
    let (mut host, mut sandbox) = (Vec::new(), Vec::new());
    let (mut server_ticks, mut host_secs) = (0u64, 0f64);
    for _ in 0..5 {
        let before = cpu_ticks(&server);
        let t = Instant::now();
        host.push(rate(in_world(&name, "curl")));
        host_secs += t.elapsed().as_secs_f64();
        server_ticks += cpu_ticks(&server) - before;
        let mut c = warren_run("public");
        c.arg("curl");
        sandbox.push(rate(c));
    }
    let (h, s) = (median(host), median(sandbox));
    // /proc's ticks are USER_HZ, 100 on Linux.
    let server_share = server_ticks as f64 / 100.0 / host_secs;
    println!("1 GiB download from the fake upstream (median of 5, curl's rate):");
    println!("  host (anchor)        {:>8.1} MiB/s", h / 1048576.0);
    println!("  public sandbox       {:>8.1} MiB/s", s / 1048576.0);
    println!("  ratio sandbox/host   {:>8.2}", s / h);
    println!("  upstream server's CPU during the anchor: {server_share:.2} of a core");

    for (label, world) in [
        (
            "ip netns exec: no cgroup hierarchy visible, no limits",
            in_world as fn(&str, &str) -> Command,
        ),
        (
            "nsenter --net: the host's cgroups, default limits",
            in_world_net,
        ),
    ] {
        let (mut none, mut public) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            for (network, into) in [("none", &mut none), ("public", &mut public)] {
                let mut c = run_in(world, network);
                c.arg("/bin/true").stdout(Stdio::null());
                let t = Instant::now();
                assert!(
                    c.status().unwrap().success(),
                    "warren run --network {network} failed"
                );
                into.push(t.elapsed());
            }
        }
        let (n, p): (Duration, Duration) = (median(none), median(public));
        println!(
            "start-up of warren run -- /bin/true ({runs} runs each, interleaved, median), {label}:"
        );
        println!(
            "  --network none (anchor)  {:>7.2} ms",
            n.as_secs_f64() * 1e3
        );
        println!(
            "  --network public         {:>7.2} ms",
            p.as_secs_f64() * 1e3
        );
        println!(
            "  added by public          {:>7.2} ms (ratio {:.2})",
            (p.as_secs_f64() - n.as_secs_f64()) * 1e3,
            p.as_secs_f64() / n.as_secs_f64()
        );
    }
}
