//! The workspace lints reach every crate: each member's Cargo.toml opts in
//! with `[lints] workspace = true` (a new crate that forgets would build
//! with `unsafe` allowed), and the crates that must never hold `unsafe`
//! forbid it in their roots (docs/architecture.md).

use std::fs;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `members = [...]` of the root Cargo.toml.
fn members(root_manifest: &str) -> Vec<String> {
    let start = root_manifest.find("members").expect("workspace members");
    let list = &root_manifest[start..];
    let list = &list[list.find('[').unwrap() + 1..list.find(']').unwrap()];
    list.split(',')
        .map(|m| m.trim().trim_matches('"').to_string())
        .filter(|m| !m.is_empty())
        .collect()
}

/// Whether a manifest has `workspace = true` under its `[lints]` table.
fn inherits_lints(manifest: &str) -> bool {
    let mut in_lints = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_lints = line == "[lints]";
        } else if in_lints && line.replace(' ', "") == "workspace=true" {
            return true;
        }
    }
    false
}

#[test]
fn every_member_inherits_the_workspace_lints() {
    let ws = workspace();
    let root = fs::read_to_string(ws.join("Cargo.toml")).unwrap();
    assert!(root.contains("[workspace.lints.rust]") && root.contains("unsafe_code = \"deny\""));
    assert!(root.contains("undocumented_unsafe_blocks = \"deny\""));
    let members = members(&root);
    assert!(members.len() >= 4, "{members:?}");
    let missing: Vec<&String> = members
        .iter()
        .filter(|m| !inherits_lints(&fs::read_to_string(ws.join(m).join("Cargo.toml")).unwrap()))
        .collect();
    assert!(
        missing.is_empty(),
        "members without `[lints] workspace = true`: {missing:?}"
    );
}

#[test]
fn the_shim_and_the_server_forbid_unsafe_code() {
    let ws = workspace();
    for root in [
        "shim/src/main.rs",
        "shim/src/bin/warren-info.rs",
        "server/src/lib.rs",
        "server/src/main.rs",
    ] {
        let src = fs::read_to_string(ws.join(root)).unwrap();
        assert!(
            src.contains("#![forbid(unsafe_code)]"),
            "{root} does not forbid unsafe_code"
        );
    }
}

#[test]
fn the_lints_table_is_read_as_toml_would() {
    assert!(inherits_lints(
        "[package]\nname = \"x\"\n\n[lints]\nworkspace = true\n"
    ));
    assert!(!inherits_lints("[package]\nworkspace = true\n[lints]\n"));
    assert!(!inherits_lints("[lints.rust]\nunsafe_code = \"allow\"\n"));
    assert_eq!(
        members("[workspace]\nmembers = [\"a\", \"b\",\n \"c\"]\n"),
        ["a", "b", "c"]
    );
}
