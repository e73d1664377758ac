//! Hostile user ids get a clear error and change nothing on disk; odd but
//! harmless ids get a deterministic safe slug.

use warren_tests::Env;

fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn hostile_ids_are_refused_without_side_effects() {
    let env = Env::new();
    let long = "a".repeat(300);
    for id in [
        "../x",
        "a/b",
        "",
        &long,
        "..",
        "/etc",
        "root",
        "nobody",
        "x\ny",
        "eve-0123abcd",
    ] {
        let out = env.run(id, &["true"]);
        assert_eq!(out.status.code(), Some(125), "id {id:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("invalid user id"), "id {id:?}: {err}");
        assert!(
            entries(&env.workspace_root()).is_empty(),
            "id {id:?} created a home"
        );
    }
    // Nothing appeared next to the workspace root either (e.g. "x" from "../x").
    let top = entries(env.dir.path());
    assert!(top.iter().all(|e| e == "state"), "{top:?}");
}

#[test]
fn a_nul_byte_cannot_even_be_passed() {
    // argv cannot carry NUL; the library-level check is a unit test in
    // runtime::tenant. Here: the CLI refuses a control character instead.
    let env = Env::new();
    let out = env.run("a\tb", &["true"]);
    assert_eq!(out.status.code(), Some(125));
}

#[test]
fn unusual_ids_get_a_stable_safe_slug() {
    let env = Env::new();
    let out = env.run("Alice@Example.com", &["sh", "-c", "whoami; pwd"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let slug = text.lines().next().unwrap().to_string();
    assert!(
        slug.starts_with("alice-example-com-") && slug.len() == "alice-example-com-".len() + 8,
        "{slug}"
    );
    assert_eq!(text.lines().nth(1).unwrap(), format!("/workspace/{slug}"));
    let again = env.run("Alice@Example.com", &["whoami"]);
    assert_eq!(String::from_utf8_lossy(&again.stdout).trim(), slug);
    assert_eq!(entries(&env.workspace_root()), vec![slug]);
}
