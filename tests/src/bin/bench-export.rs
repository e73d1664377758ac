//! Home-export benchmark (docs/archives.md): `warren users export` of a
//! 210 MB home under the default limits (half a CPU), with the host's
//! `tar -C HOME -cf - . | gzip -3` as the anchor, measured in the same run.
//!
//!     cargo build --release -p warren -p warren-shim -p warren-tests
//!     sudo target/release/bench-export [RUNS]
//!
//! As root (a distinct host uid per tenant). The home is made once: 1,200
//! text files (source-like lines, 4–180 KiB, 110 MB in all, in nested
//! directories) and 25 files of random bytes (100 MB), then RUNS runs
//! (default 5, at least 3) of each, interleaved so the machine's drift
//! hits both alike. Prints the median wall time and CPU time (the
//! process tree's, from getrusage of reaped children), the archive's size,
//! and the load average before and after.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::resource::{getrusage, UsageWho};

const TEXT_FILES: usize = 1200;
const TEXT_BYTES: usize = 110_000_000;
const RANDOM_FILES: usize = 25;
const RANDOM_BYTES: usize = 100_000_000;

/// xorshift64*: the same home on every run and machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const WORDS: &[&str] = &[
    "fn", "let", "mut", "self", "return", "match", "if", "else", "for", "in", "while", "struct",
    "impl", "pub", "use", "crate", "Result", "Option", "Some", "None", "Ok", "Err", "String",
    "Vec", "u64", "usize", "bool", "true", "false", "config", "buffer", "len", "path", "error",
    "value", "index", "count", "request", "response", "user", "session", "limit", "write", "read",
    "open", "close", "the", "a", "of", "to", "and", "is", "that", "when", "with", "=", "==", "+",
    "->", "=>", "{", "}", "(", ")", ";", ",", ".", "&", "0", "1", "42", "4096",
];

/// About `size` bytes of source-like text.
fn text(rng: &mut Rng, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 200);
    while out.len() < size {
        out.extend(std::iter::repeat_n(b' ', rng.below(8) * 4));
        for i in 0..1 + rng.below(12) {
            if i > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(WORDS[rng.below(WORDS.len())].as_bytes());
            if rng.below(9) == 0 {
                out.extend_from_slice(format!("_{}", rng.below(1000)).as_bytes());
            }
        }
        out.push(b'\n');
    }
    out
}

/// Writes the home's files under `home`; returns their total size.
fn make_home(home: &Path) -> u64 {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut total = 0u64;
    let mean = TEXT_BYTES / TEXT_FILES;
    let mut left = TEXT_BYTES;
    for i in 0..TEXT_FILES {
        let dir = home.join(format!("src/m{}/d{}", i % 12, i % 40));
        std::fs::create_dir_all(&dir).unwrap();
        let size = match i + 1 == TEXT_FILES {
            true => left,
            false => (mean / 24 + rng.below(mean * 2 - mean / 12)).min(left),
        };
        left -= size;
        let body = text(&mut rng, size);
        total += body.len() as u64;
        std::fs::write(dir.join(format!("f{i}.rs")), body).unwrap();
    }
    let dir = home.join("data");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..RANDOM_FILES {
        let mut body = vec![0u8; RANDOM_BYTES / RANDOM_FILES];
        for chunk in body.chunks_mut(8) {
            let v = rng.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        total += body.len() as u64;
        std::fs::write(dir.join(format!("blob{i}.bin")), body).unwrap();
    }
    total
}

/// CPU (user + system) of the reaped children so far.
fn children_cpu() -> Duration {
    let r = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap();
    let t =
        |tv: nix::sys::time::TimeVal| Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000);
    t(r.user_time()) + t(r.system_time())
}

/// Runs `c`, counting its stdout: (wall, CPU, bytes).
fn measure(mut c: Command) -> (Duration, Duration, u64) {
    let cpu = children_cpu();
    let t = Instant::now();
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        match out.read(&mut buf).unwrap() {
            0 => break,
            n => bytes += n as u64,
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{c:?}: {status}");
    (t.elapsed(), children_cpu() - cpu, bytes)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("bench-export: run it as root (a host uid per tenant)");
        std::process::exit(2);
    }
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5)
        .max(3);
    let bin = std::env::current_exe().unwrap();
    let warren_bin = bin.parent().unwrap().join("warren");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let warren = |args: &[&str]| {
        let mut c = Command::new(&warren_bin);
        c.args(["users"])
            .args(args)
            .arg("--state-dir")
            .arg(t.join("state"))
            .arg("--workspace-root")
            .arg(t.join("ws"))
            // A plain home, as the anchor reads: no image to mount.
            .args(["--disk", "none", "--disk-inodes", "none"]);
        c
    };
    let out = warren(&["create", "bench"]).output().unwrap();
    assert!(out.status.success(), "users create: {out:?}");
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let home = std::path::PathBuf::from(view["home_dir"].as_str().unwrap());
    let bytes = make_home(&home);
    // The tenant's own files, as if it had written them.
    let (uid, gid) = (
        view["host_uid"].as_u64().unwrap() as u32,
        view["host_gid"].as_u64().map(|g| g as u32),
    );
    let status = Command::new("chown")
        .arg("-R")
        .arg(match gid {
            Some(g) => format!("{uid}:{g}"),
            None => uid.to_string(),
        })
        .arg(&home)
        .status()
        .unwrap();
    assert!(status.success());
    println!(
        "bench-export: a home of {:.0} MB ({TEXT_FILES} text files, {RANDOM_FILES} random), {runs} runs each, medians; load average before: {}",
        bytes as f64 / 1e6,
        load()
    );
    let anchor = || {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg("tar -C \"$1\" -cf - . | gzip -3")
            .arg("sh")
            .arg(&home);
        c
    };
    let export = || {
        let mut c = warren(&["export", "bench"]);
        c.stderr(Stdio::null());
        c
    };
    let (mut wall_a, mut cpu_a, mut wall_w, mut cpu_w) = (vec![], vec![], vec![], vec![]);
    let (mut size_a, mut size_w) = (0, 0);
    for i in 0..runs {
        for ours in [i % 2 == 0, i % 2 == 1] {
            let (wall, cpu, size) = measure(if ours { export() } else { anchor() });
            eprintln!(
                "  run {i}: {:<8} {:6.2} s wall {:6.2} s CPU {size} bytes",
                if ours { "warren" } else { "anchor" },
                wall.as_secs_f64(),
                cpu.as_secs_f64()
            );
            if ours {
                wall_w.push(wall);
                cpu_w.push(cpu);
                size_w = size;
            } else {
                wall_a.push(wall);
                cpu_a.push(cpu);
                size_a = size;
            }
        }
    }
    let (ww, wa) = (median(wall_w), median(wall_a));
    let row = |what: &str, wall: Duration, cpu: Duration, size: u64| {
        println!(
            "{what:<34} {:6.2} s wall  {:6.2} s CPU  {:5.1} MB ({:.1}% of the data)",
            wall.as_secs_f64(),
            cpu.as_secs_f64(),
            size as f64 / 1e6,
            size as f64 * 100.0 / bytes as f64
        );
    };
    row("warren users export (0.5 CPU)", ww, median(cpu_w), size_w);
    row(
        "tar | gzip -3 on the host (anchor)",
        wa,
        median(cpu_a),
        size_a,
    );
    println!(
        "ratio (wall, warren / anchor): {:.2}; load average after: {}",
        ww.as_secs_f64() / wa.as_secs_f64(),
        load()
    );
    std::io::stdout().flush().unwrap();
}
