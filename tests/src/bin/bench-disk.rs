//! Disk-limit benchmark (docs/disk.md): what a per-home image costs, with
//! a plain home (no disk limit) as the anchor, measured in the same run.
//!
//!     cargo build --release --workspace && target/release/bench-disk [RUNS]
//!
//! As root (the image backend needs it). Prints, for RUNS runs each
//! (default 20, at least 10), interleaved so the machine's drift hits both
//! alike, the median of:
//! * first start: `warren run -- /bin/true` for a new user (state row, home
//!   created; with `--disk 1G`: image made with mkfs.ext4 and mounted);
//! * later start: the same for a user seen before (image mounted);
//! * write throughput: 256 MiB written and fsync'd into the home from
//!   inside the sandbox (`dd conv=fsync`), timed inside.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// `warren run` for `user` with `disk` (`1G` or `none`).
fn warren(warren: &Path, tmp: &Path, user: &str, disk: &str, cmd: &[&str]) -> Command {
    let mut c = Command::new(warren);
    c.args(["run", "--user", user, "--state-dir"])
        .arg(tmp.join("state"))
        .arg("--workspace-root")
        .arg(tmp.join("ws"))
        .args(["--disk", disk])
        // The anchor has no disk limit at all (no inode limit either).
        .args([
            "--disk-inodes",
            if disk == "none" { "none" } else { "100000" },
            "--",
        ])
        .args(cmd)
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    c
}

fn timed(mut c: Command) -> Duration {
    let t = Instant::now();
    let s = c.stdout(Stdio::null()).status().unwrap();
    assert!(s.success(), "{c:?}: {s}");
    t.elapsed()
}

/// Nanoseconds to write and fsync 256 MiB in the home, timed inside.
fn write_time(mut c: Command) -> Duration {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{c:?}: {out:?}");
    let ns: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    Duration::from_nanos(ns)
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("bench-disk: per-home images need root; run it as root");
        std::process::exit(2);
    }
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20)
        .max(10);
    let bin = std::env::current_exe().unwrap();
    let warren_bin = bin.parent().unwrap().join("warren");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (mut first_img, mut first_plain) = (Vec::new(), Vec::new());
    let (mut again_img, mut again_plain) = (Vec::new(), Vec::new());
    let (mut write_img, mut write_plain) = (Vec::new(), Vec::new());
    let write = "s=$(date +%s%N); dd if=/dev/zero of=f bs=1M count=256 conv=fsync 2>/dev/null; \
                 e=$(date +%s%N); rm f; echo $((e-s))";
    for i in 0..runs {
        let (img, plain) = (format!("img{i}"), format!("plain{i}"));
        // Which goes first alternates: a sandbox's teardown (cgroup
        // removal, loop device release) must not slow only the other.
        let order: [bool; 2] = if i % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for image in order {
            let (user, disk) = match image {
                true => (img.as_str(), "1G"),
                false => (plain.as_str(), "none"),
            };
            let again = if image { "img0" } else { "plain0" };
            let t1 = timed(warren(&warren_bin, t, user, disk, &["/bin/true"]));
            let t2 = timed(warren(&warren_bin, t, again, disk, &["/bin/true"]));
            let t3 = write_time(warren(&warren_bin, t, again, disk, &["sh", "-c", write]));
            let (first, later, writes) = match image {
                true => (&mut first_img, &mut again_img, &mut write_img),
                false => (&mut first_plain, &mut again_plain, &mut write_plain),
            };
            first.push(t1);
            later.push(t2);
            writes.push(t3);
        }
    }
    let row = |what: &str, img: Vec<Duration>, plain: Vec<Duration>| {
        let (i, p) = (median(img), median(plain));
        println!(
            "{what:<44} image {:>10}  plain (anchor) {:>10}  ratio {:.2}",
            ms(i),
            ms(p),
            i.as_secs_f64() / p.as_secs_f64()
        );
    };
    println!("bench-disk: {runs} runs each, medians");
    row(
        "first start (new user: mkfs.ext4, mount)",
        first_img,
        first_plain,
    );
    row("later start (image mounted)", again_img, again_plain);
    let mibs = |d: Duration| 256.0 / d.as_secs_f64();
    let (wi, wp) = (median(write_img), median(write_plain));
    println!(
        "{:<44} image {:>7.0} MiB/s  plain (anchor) {:>7.0} MiB/s  ratio {:.2}",
        "write 256 MiB + fsync, inside",
        mibs(wi),
        mibs(wp),
        mibs(wi) / mibs(wp)
    );
}
