//! The README's test command sets the machine up itself (issue 16): a
//! newcomer who pastes `./tests/matrix.sh` on a fresh Debian machine gets
//! the packages installed by tests/install-deps.sh first, and CI goes
//! through the same command (no package list of its own in .ci/run).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(rel: &str) -> String {
    fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn the_readme_command_installs_before_it_builds() {
    let readme = read("README.md");
    assert!(
        readme.contains("\n`./tests/matrix.sh`\n"),
        "the README's test command moved"
    );
    let matrix = read("tests/matrix.sh");
    let install = matrix
        .find("tests/install-deps.sh\n")
        .expect("tests/matrix.sh does not run tests/install-deps.sh");
    let build = matrix.find("cargo build").expect("tests/matrix.sh builds");
    assert!(install < build, "tests/matrix.sh installs after it builds");
    let ci = read(".ci/run");
    assert!(
        !ci.contains("apt-get install"),
        ".ci/run has a package list of its own again"
    );
    assert!(
        ci.contains("./tests/matrix.sh"),
        ".ci/run does not run the README's test command"
    );
}

#[test]
fn the_packages_are_installed() {
    // After tests/matrix.sh ran it (as root), --check finds nothing missing.
    // The other modes run as other users with another PATH: the packages
    // are root mode's to check.
    if std::env::var("WARREN_TEST_MODE").is_ok_and(|m| m != "root") {
        return;
    }
    let script = repo().join("tests/install-deps.sh");
    if Command::new("dpkg-query")
        .arg("--version")
        .output()
        .is_err()
    {
        warren_tests::skip("not a Debian host: no dpkg-query");
        return;
    }
    let out = Command::new(&script).arg("--check").output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        warren_tests::skip(&format!("tests/install-deps.sh --check: {said}"));
        return;
    }
    assert!(said.contains("everything is installed"), "{said}");
}
