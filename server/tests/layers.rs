//! The layer rule (docs/architecture.md): cli → web → domain → runtime,
//! each importing only the layers below it. The domain is its own crate
//! (`warren-domain`), so the compiler holds that line once its manifest
//! names no transport crate; inside this crate, `web` must never import
//! `cli`. Import circles in general are another test's business.

use std::path::{Path, PathBuf};

/// Crates that speak HTTP or WebSocket: the domain must depend on none.
const TRANSPORT_CRATES: &[&str] = &[
    "axum",
    "hyper",
    "hyper-util",
    "tungstenite",
    "tokio-tungstenite",
    "yawc",
    "tower",
    "tower-http",
    "http",
];

/// Layers of `server/src`, lowest first: a file in a layer may import only
/// its own layer and those before it.
const LAYERS: &[&str] = &["web", "cli"];

fn server_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The layer a file of `server/src` belongs to (`web/relay.rs` → `web`),
/// `None` for the crate root.
fn layer_of(relative: &Path) -> Option<&'static str> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    LAYERS.iter().copied().find(|l| *l == name)
}

/// The `crate::LAYER` paths `source` names outside comments, that a file
/// of layer `own` must not (a layer above it).
fn upward_imports(own: &str, source: &str) -> Vec<String> {
    let rank = |l: &str| LAYERS.iter().position(|x| *x == l);
    let Some(own_rank) = rank(own) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for (n, line) in source.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for higher in &LAYERS[own_rank + 1..] {
            let needle = format!("crate::{higher}");
            let hit = code.match_indices(&needle).any(|(at, _)| {
                // `crate::cli` but not `crate::client`.
                !code[at + needle.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
            });
            if hit {
                found.push(format!("line {}: {}", n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn web_never_imports_cli() {
    let root = server_src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(files.len() > 10, "no sources found under {root:?}");
    let mut offences = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&root).unwrap();
        let Some(layer) = layer_of(relative) else {
            continue;
        };
        let source = std::fs::read_to_string(&file).unwrap();
        for hit in upward_imports(layer, &source) {
            offences.push(format!("{}: {hit}", relative.display()));
        }
    }
    assert!(
        offences.is_empty(),
        "upward imports (a layer imports only those below it):\n{}",
        offences.join("\n")
    );
}

#[test]
fn the_checker_sees_an_upward_import() {
    assert_eq!(
        upward_imports("web", "use crate::cli::args::ServeArgs;\n"),
        vec!["line 1: use crate::cli::args::ServeArgs;"]
    );
    assert_eq!(
        upward_imports("web", "let a = crate::cli::Cli::parse();"),
        vec!["line 1: let a = crate::cli::Cli::parse();"]
    );
    // Comments, downward imports and longer names are fine.
    assert!(upward_imports("web", "// see crate::cli::args\n").is_empty());
    assert!(upward_imports("cli", "use crate::web::Server;\n").is_empty());
    assert!(upward_imports("web", "use crate::client::X;\n").is_empty());
    assert_eq!(layer_of(Path::new("web/relay.rs")), Some("web"));
    assert_eq!(layer_of(Path::new("cli/mod.rs")), Some("cli"));
    assert_eq!(layer_of(Path::new("lib.rs")), None);
}

/// The dependency names in a manifest's `[dependencies]` table.
fn dependencies(manifest: &str) -> Vec<String> {
    let table: toml::Table = manifest.parse().expect("a valid Cargo.toml");
    table
        .get("dependencies")
        .and_then(|d| d.as_table())
        .map(|d| d.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn the_domain_depends_on_no_transport_crate() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../domain/Cargo.toml");
    let deps = dependencies(&std::fs::read_to_string(&manifest).unwrap());
    assert!(deps.iter().any(|d| d == "warren-runtime"), "{deps:?}");
    let transport: Vec<_> = deps
        .iter()
        .filter(|d| TRANSPORT_CRATES.contains(&d.as_str()))
        .collect();
    assert!(
        transport.is_empty(),
        "domain/Cargo.toml depends on transport crates {transport:?}: the domain \
         speaks its own types; the web layer converts them"
    );
}

#[test]
fn the_manifest_check_sees_a_transport_crate() {
    let bad = "[package]\nname = \"x\"\n[dependencies]\naxum = \"0.8\"\nserde = \"1\"\n";
    let deps = dependencies(bad);
    assert!(deps.iter().any(|d| TRANSPORT_CRATES.contains(&d.as_str())));
}
