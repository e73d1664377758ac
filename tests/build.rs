//! Builds the in-sandbox probe as a static, std-only binary with the same
//! rustc that builds everything else: `+crt-static` would break proc-macro
//! crates if it were set workspace-wide, so the probe is compiled on its own.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "probe/probe.rs";
    println!("cargo:rerun-if-changed={src}");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("warren-probe");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let status = Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "-O",
            "-C",
            "target-feature=+crt-static",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
            "-o",
        ])
        .arg(&out)
        .arg(src)
        .status()
        .expect("run rustc for the probe");
    assert!(status.success(), "building the probe failed");
    println!("cargo:rustc-env=WARREN_PROBE={}", out.display());
}
