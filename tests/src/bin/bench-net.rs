//! Network benchmark (docs/network.md, docs/benchmarks.md), as root, on
//! the fake internet of the tests (tests/fakenet/fakenet.sh; no packet
//! leaves the machine):
//!
//!     cargo build --release --workspace && sudo target/release/bench-net [RUNS]
//!
//! 1. A 1 GiB download from the fake upstream with curl inside a `public`
//!    sandbox, against the same download on the host (curl's own rate, so
//!    the sandbox's start-up is not counted); 3 rounds, interleaved, medians.
//! 2. Start-up of `warren run -- /bin/true` with `--network public` against
//!    `--network none`, RUNS each (default 100, at least 20), interleaved.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FAKENET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fakenet/fakenet.sh");
const URL: &str = "http://93.184.215.14/bytes/1073741824";

fn median<T: PartialOrd + Copy>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn in_world(name: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &format!("{name}-w"), program]);
    c
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
    let warren_run = |network: &str| {
        let mut c = in_world(&name, warren.to_str().unwrap());
        c.args(["run", "--user", "bench", "--state-dir"])
            .arg(tmp.path().join("state"))
            .arg("--workspace-root")
            .arg(tmp.path().join("ws"))
            .args(["--network", network, "--"])
            .stdin(Stdio::null())
            .stderr(Stdio::null());
        c
    };

    let (mut host, mut sandbox) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        host.push(rate(in_world(&name, "curl")));
        let mut c = warren_run("public");
        c.arg("curl");
        sandbox.push(rate(c));
    }
    let (h, s) = (median(host), median(sandbox));
    println!("1 GiB download from the fake upstream (median of 3, curl's rate):");
    println!("  host (anchor)        {:>8.1} MiB/s", h / 1048576.0);
    println!("  public sandbox       {:>8.1} MiB/s", s / 1048576.0);
    println!("  ratio sandbox/host   {:>8.2}", s / h);

    let (mut none, mut public) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        for (network, into) in [("none", &mut none), ("public", &mut public)] {
            let mut c = warren_run(network);
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
    println!("start-up of warren run -- /bin/true ({runs} runs each, interleaved, median):");
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
    let _ = Command::new(FAKENET).args(["down", &name]).status();
}
