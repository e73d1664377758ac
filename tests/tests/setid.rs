//! No tenant can plant a setuid or setgid file (issue 10, item 1): every
//! route the probe's `setid` question tries (chmod, fchmod, fchmodat,
//! fchmodat2, open/openat with O_CREAT or O_TMPFILE, creat, mkdir, mkdirat,
//! mknod, mknodat; openat2 answers ENOSYS) is refused from inside a real
//! sandbox in each tier that has a filter, no file with either bit is left,
//! and ordinary modes still work. Runs in every privilege mode of the matrix.

use std::collections::BTreeMap;

use warren_tests::{skip, Answers, Env};

/// Refused with EPERM by the filter.
const REFUSED: &[&str] = &[
    "chmod_4755",
    "chmod_2755",
    "fchmod_4755",
    "fchmod_2755",
    "fchmodat_6755",
    "fchmodat2_4755",
    "open_creat_4755",
    "openat_creat_2755",
    "openat_tmpfile_4755",
    "creat_4755",
    "mkdir_2755",
    "mkdirat_4755",
    "mknod_reg_4755",
    "mknodat_reg_2755",
];
/// Ordinary modes: unchanged.
const ALLOWED: &[&str] = &[
    "chmod_0755",
    "chmod_0600",
    "fchmod_1777",
    "fchmodat_0644",
    "open_creat_0600",
    "mkdir_0755",
];

fn routes(a: &Answers, question: &str) -> BTreeMap<String, String> {
    a.get(question)
        .split(' ')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn check(tier: &str, a: &Answers, question: &str) {
    let r = routes(a, question);
    let mut wrong = Vec::new();
    let mut want = |route: &str, answer: &str| {
        let got = r.get(route).map_or("<missing>", String::as_str);
        if got != answer {
            wrong.push(format!("{route}: got {got}, want {answer}"));
        }
    };
    for route in REFUSED {
        want(route, "EPERM");
    }
    // Its mode sits behind a pointer: refused as "not there" so callers
    // fall back to openat.
    want("openat2_creat_4755", "ENOSYS");
    for route in ALLOWED {
        want(route, "ok");
    }
    want("setid_files", "none");
    assert!(
        wrong.is_empty(),
        "{tier} tier: {wrong:#?}\nall answers: {}",
        a.get(question)
    );
}

#[test]
fn namespaces_tier_refuses_every_setid_route() {
    let env = Env::new();
    let a = env.probe("alice", &["setid:/workspace/alice", "status:Seccomp"]);
    assert_eq!(a.get("status:Seccomp"), "2");
    check("namespaces", &a, "setid:/workspace/alice");
}

#[test]
fn landlock_tier_refuses_every_setid_route() {
    if warren_runtime::sys::landlock_abi() == 0 {
        skip("this kernel has no Landlock: the landlock tier cannot run");
        return;
    }
    let env = Env::new();
    let home = env.workspace_root().join("alice");
    let q = format!("setid:{}", home.display());
    let a = env.probe_tier("alice", "landlock", &[&q]);
    check("landlock", &a, &q);
}
