//! Each tier's plan, and the edge cases the shim used to decide itself.

use super::*;
use crate::mounts::HostEntry;
use crate::rlimits::Kind;
use crate::spec::tests::sample;
use crate::spec::Bind;

/// A host with everything: cgroup namespaces, Landlock ABI 9, warren-info
/// installed next to the shim, /usr and a /bin -> usr/bin symlink.
fn host() -> HostFacts {
    let mut files = HostFiles::default();
    files.0.insert("/usr".into(), HostEntry::Dir);
    let bin = HostEntry::Symlink {
        points_to: "usr/bin".into(),
        resolves_to_dir: Some(true),
    };
    files.0.insert("/bin".into(), bin);
    HostFacts {
        cgroup_namespace: true,
        landlock_abi: 9,
        hostname: "host1".into(),
        caller_uid: 0,
        shim_exe: "/usr/lib/warren/warren-shim".into(),
        info_tool: Some("/usr/lib/warren/warren-info".into()),
        files,
        network: NetworkFacts {
            pasta: Some("/usr/bin/pasta".into()),
            nft: Some("/usr/sbin/nft".into()),
            host_addrs: vec!["192.0.2.2".parse().unwrap()],
            default_route: true,
        },
    }
}

fn spec(tier: Isolation) -> SandboxSpec {
    let mut s = sample();
    s.isolation = tier;
    s.workspace = "/srv/warren/alice".into();
    s
}

fn memory_missing() -> LimitsInForce {
    let applied = crate::cgroups::Limits {
        memory_bytes: None,
        ..crate::cgroups::Limits::default()
    };
    LimitsInForce::cgroup(applied, vec!["memory".into()])
}

/// Nothing limited, nothing missing.
fn no_limits() -> LimitsInForce {
    LimitsInForce::cgroup(crate::cgroups::Limits::NONE, Vec::new())
}

fn kinds(plan: &Plan) -> Vec<Kind> {
    plan.confinement.rlimits.iter().map(|r| r.kind).collect()
}

fn env<'a>(plan: &'a Plan, key: &str) -> Option<&'a str> {
    plan.confinement
        .env
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[test]
fn namespaces_tier_builds_a_root_and_records_it_in_etc() {
    let plan = build(&spec(Isolation::Namespaces), &host(), memory_missing()).unwrap();
    assert_eq!(plan.clone_flags, namespaces::sandbox_flags());
    assert!(plan.cgroup_namespace);
    assert!(plan.join_flags().contains(CloneFlags::CLONE_NEWCGROUP));
    assert!(
        plan.confinement.rlimits.is_empty(),
        "cgroup and namespaces bound it"
    );
    assert_eq!(
        plan.confinement.seccomp,
        SeccompPlan::Profile(Profile::Default)
    );
    assert_eq!(
        plan.confinement.env,
        sample().env,
        "the spec's environment, untouched"
    );
    // The root: the profile's mounts, the record, the shim as warren-info.
    assert!(plan.mounts.contains(&MountOp::Symlink {
        points_to: "usr/bin".into(),
        target: "/bin".into()
    }));
    let record = plan.mounts.iter().find_map(|o| match o {
        MountOp::WriteFile { target, contents } if target == Path::new(INFO_PATH) => Some(contents),
        _ => None,
    });
    let record: SandboxInfo = serde_json::from_str(record.unwrap()).unwrap();
    assert_eq!(record, plan.info);
    assert!(plan.mounts.contains(&MountOp::Bind {
        source: "/usr/lib/warren/warren-shim".into(),
        target: INFO_BIN.into(),
        readonly: true,
        is_dir: false,
        nofollow: false
    }));
    for applet in APPLETS {
        assert!(plan.mounts.contains(&MountOp::Symlink {
            points_to: "warren-info".into(),
            target: Path::new(INFO_DIR).join(applet)
        }));
    }
    // A login shell finds warren-info: /etc/profile is warren's, which runs
    // the host's and puts INFO_DIR back on PATH (issue 16).
    let profile: Vec<&MountOp> = plan
        .mounts
        .iter()
        .filter(|o| match o {
            MountOp::WriteFile { target, .. }
            | MountOp::CopyFile { target, .. }
            | MountOp::Bind { target, .. }
            | MountOp::TreeBind { target, .. }
            | MountOp::Symlink { target, .. } => target == Path::new("/etc/profile"),
            _ => false,
        })
        .collect();
    assert_eq!(
        profile,
        [&MountOp::WriteFile {
            target: "/etc/profile".into(),
            contents: profile_text()
        }]
    );
    assert!(profile_text().contains(&format!("PATH=\"$PATH:{INFO_DIR}\"")));
    assert!(profile_text().contains(&format!(". {HOST_PROFILE}")));
    // Landlock is the second wall: writes to the home, /tmp, /dev/shm.
    let landlock = plan.confinement.landlock.as_ref().unwrap();
    assert_eq!(
        landlock.paths,
        LandlockPaths::for_sandbox("/workspace/alice")
    );
    assert!(
        !landlock.terminal,
        "the sandbox's own devpts is allowed whole"
    );
    let info = &plan.info;
    assert_eq!((info.sandbox.tier.name(), info.uid), ("namespaces", 1000));
    assert_eq!(info.hostname, "alice-sandbox");
    assert_eq!(
        info.namespaces,
        ["user", "mount", "pid", "net", "ipc", "uts", "cgroup"]
    );
    assert_eq!(info.sandbox.limits.missing, ["memory"]);
    assert_eq!(info.sandbox.seccomp.as_deref(), Some("default-v2"));
    assert!(info.sandbox.limits.per_process.is_empty());
}

#[test]
fn namespaces_tier_without_cgroup_namespaces() {
    let host = HostFacts {
        cgroup_namespace: false,
        ..host()
    };
    let plan = build(&spec(Isolation::Namespaces), &host, no_limits()).unwrap();
    assert!(!plan.cgroup_namespace);
    assert_eq!(plan.join_flags(), namespaces::sandbox_flags());
    assert!(!plan.info.namespaces.contains(&"cgroup".to_string()));
}

#[test]
fn landlock_tier_has_no_root_and_carries_the_record_in_the_environment() {
    let plan = build(&spec(Isolation::Landlock), &host(), memory_missing()).unwrap();
    assert!(plan.clone_flags.is_empty());
    assert!(!plan.cgroup_namespace && plan.join_flags().is_empty());
    assert!(plan.mounts.is_empty());
    assert_eq!(
        plan.confinement.seccomp,
        SeccompPlan::WithSharedHost {
            profile: Profile::Default,
            unix_confined: true
        }
    );
    assert_eq!(plan.confinement.seccomp.name(), "default-v2+shared-host-v1");
    // The only wall: the home, system dirs, warren-info, the terminal.
    let landlock = plan.confinement.landlock.as_ref().unwrap();
    assert!(landlock.terminal);
    let mut expected = LandlockPaths::for_shared_host("/srv/warren/alice");
    expected
        .read_only
        .push("/usr/lib/warren/warren-info".into());
    assert_eq!(landlock.paths, expected);
    let with_tty = landlock.rules_for(Some(Path::new("/dev/pts/7")));
    assert_eq!(with_tty.devices.last().unwrap(), Path::new("/dev/pts/7"));
    assert_eq!(landlock.rules_for(None), expected);
    // The record, in the environment; warren-info's directory on PATH.
    let record: SandboxInfo = serde_json::from_str(env(&plan, INFO_ENV).unwrap()).unwrap();
    assert_eq!(record, plan.info);
    assert_eq!(env(&plan, "PATH"), Some("/usr/bin:/bin:/usr/lib/warren"));
    let info = &plan.info;
    assert_eq!(
        (info.sandbox.tier.name(), info.uid),
        ("landlock", 1_500_000_000)
    );
    assert_eq!(info.hostname, "host1", "no uts namespace of its own");
    assert!(info.namespaces.is_empty());
    assert_eq!(
        info.sandbox.seccomp.as_deref(),
        Some("default-v2+shared-host-v1")
    );
    assert_eq!(
        info.sandbox.limits.per_process.len(),
        plan.confinement.rlimits.len()
    );
}

#[test]
fn none_tier_confines_nothing_but_still_sets_rlimits() {
    let plan = build(&spec(Isolation::None), &host(), memory_missing()).unwrap();
    assert!(plan.clone_flags.is_empty() && plan.mounts.is_empty());
    assert_eq!(plan.confinement.landlock, None);
    assert_eq!(plan.confinement.seccomp, SeccompPlan::Off);
    assert!(plan.confinement.seccomp.filters().unwrap().is_empty());
    assert_eq!(plan.info.sandbox.seccomp, None);
    assert_eq!(kinds(&plan), [Kind::Core, Kind::Nofile, Kind::Data]);
    assert!(env(&plan, INFO_ENV).is_some());
}

#[test]
fn unconfined_profile_installs_no_profile_filter() {
    let mut s = spec(Isolation::Namespaces);
    s.seccomp = Profile::Unconfined;
    let plan = build(&s, &host(), no_limits()).unwrap();
    assert_eq!(plan.info.sandbox.seccomp.as_deref(), Some("unconfined"));
    assert!(plan.confinement.seccomp.filters().unwrap().is_empty());
    // The landlock tier keeps its own filter even then.
    s.isolation = Isolation::Landlock;
    let plan = build(&s, &host(), no_limits()).unwrap();
    assert_eq!(
        plan.info.sandbox.seccomp.as_deref(),
        Some("unconfined+shared-host-v1")
    );
    assert_eq!(plan.confinement.seccomp.filters().unwrap().len(), 1);
}

#[test]
fn without_landlock_abi_9_the_landlock_tier_refuses_unix_sockets_too() {
    for abi in [0, 8] {
        let host = HostFacts {
            landlock_abi: abi,
            ..host()
        };
        let plan = build(&spec(Isolation::Landlock), &host, no_limits()).unwrap();
        assert_eq!(
            plan.confinement.seccomp,
            SeccompPlan::WithSharedHost {
                profile: Profile::Default,
                unix_confined: false
            }
        );
        // Landlock is still asked for: best effort, its level reported.
        assert!(plan.confinement.landlock.is_some());
        assert_eq!(plan.confinement.landlock_abi, abi);
    }
}

#[test]
fn rlimits_substitute_only_for_missing_cgroup_limits() {
    let plan = build(&spec(Isolation::Landlock), &host(), no_limits()).unwrap();
    assert_eq!(kinds(&plan), [Kind::Core, Kind::Nofile]);
    // nproc counts a uid host-wide: not when the tenant shares ours.
    let shared_uid = HostFacts {
        caller_uid: 1_500_000_000,
        ..host()
    };
    let all = LimitsInForce::cgroup(
        crate::cgroups::Limits::NONE,
        vec!["memory".into(), "cpu".into(), "pids".into()],
    );
    let plan = build(&spec(Isolation::Landlock), &shared_uid, all).unwrap();
    assert_eq!(kinds(&plan), [Kind::Core, Kind::Nofile, Kind::Data]);
    assert_eq!(
        plan.info.sandbox.limits.per_process[2],
        "memory 512 MiB per process (RLIMIT_DATA)"
    );
}

#[test]
fn read_only_binds_stay_read_only_in_every_wall() {
    let mut s = spec(Isolation::Namespaces);
    s.binds = vec![
        Bind {
            source: "/srv/data".into(),
            target: "/data".into(),
            readonly: true,
        },
        Bind {
            source: "/srv/out".into(),
            target: "/out".into(),
            readonly: false,
        },
    ];
    let plan = build(&s, &host(), no_limits()).unwrap();
    let rw = &plan.confinement.landlock.as_ref().unwrap().paths.read_write;
    assert!(rw.contains(&"/out".into()) && !rw.contains(&"/data".into()));
    assert!(plan.mounts.iter().any(|o| matches!(o,
        MountOp::Bind { target, readonly: true, .. } if target == Path::new("/data"))));
    // Without a mount namespace, binds are shared at their own place.
    s.isolation = Isolation::Landlock;
    for b in &mut s.binds {
        b.target = b.source.clone();
    }
    let plan = build(&s, &host(), no_limits()).unwrap();
    let paths = &plan.confinement.landlock.as_ref().unwrap().paths;
    assert!(paths.read_only.contains(&"/srv/data".into()));
    assert!(!paths.read_write.contains(&"/srv/data".into()));
    assert!(paths.read_write.contains(&"/srv/out".into()));
}

#[test]
fn path_gets_the_tool_once_or_is_made() {
    let mut s = spec(Isolation::None);
    s.env = vec![("PATH".into(), "/usr/lib/warren:/usr/bin".into())];
    let plan = build(&s, &host(), no_limits()).unwrap();
    assert_eq!(env(&plan, "PATH"), Some("/usr/lib/warren:/usr/bin"));
    s.env = vec![(INFO_ENV.into(), "forged".into())];
    let plan = build(&s, &host(), no_limits()).unwrap();
    assert_eq!(env(&plan, "PATH"), Some("/usr/lib/warren"));
    assert_eq!(
        plan.confinement
            .env
            .iter()
            .filter(|(k, _)| k == INFO_ENV)
            .count(),
        1
    );
    assert_ne!(env(&plan, INFO_ENV), Some("forged"));
    // Without the tool installed: nothing to add or allow.
    let bare = HostFacts {
        info_tool: None,
        ..host()
    };
    let plan = build(&spec(Isolation::Landlock), &bare, no_limits()).unwrap();
    assert_eq!(env(&plan, "PATH"), Some("/usr/bin:/bin"));
    assert_eq!(
        plan.confinement.landlock.unwrap().paths,
        LandlockPaths::for_shared_host("/srv/warren/alice")
    );
}

#[test]
fn confinement_survives_the_reexec_handover() {
    // PID 1 of the namespace tier receives it as JSON across its re-exec.
    for tier in Isolation::ALL {
        let plan = build(&spec(tier), &host(), memory_missing()).unwrap();
        let json = serde_json::to_string(&plan.confinement).unwrap();
        let back: Confinement = serde_json::from_str(&json).unwrap();
        assert_eq!(back, plan.confinement);
    }
}

#[test]
fn public_network_plans_pasta_the_filter_and_a_synthesized_resolv_conf() {
    let mut s = spec(Isolation::Namespaces);
    s.network = crate::network::NetworkPolicy::public();
    let plan = build(
        &s,
        &host(),
        LimitsInForce::cgroup(crate::cgroups::Limits::default(), vec![]),
    )
    .unwrap();
    assert!(plan.network.pasta.is_some());
    assert!(plan.network.filter.is_some());
    let net = plan.info.sandbox.network.clone().unwrap();
    assert_eq!(net.mode, crate::network::NetworkMode::Public);
    let resolv: Vec<_> = plan
        .mounts
        .iter()
        .filter(|o| format!("{o:?}").contains("/etc/resolv.conf"))
        .collect();
    assert_eq!(resolv.len(), 1, "{resolv:?}");
    assert!(
        format!("{resolv:?}").contains("nameserver 169.254.1.1"),
        "never the host's file"
    );
    assert!(plan.info.sandbox.limits.missing.is_empty());
}

#[test]
fn public_network_in_the_landlock_tier_is_missing_with_its_reason() {
    let mut s = spec(Isolation::Landlock);
    s.network = crate::network::NetworkPolicy::public();
    let plan = build(
        &s,
        &host(),
        LimitsInForce::cgroup(crate::cgroups::Limits::default(), vec![]),
    )
    .unwrap();
    let limits = &plan.info.sandbox.limits;
    assert!(
        limits.missing.contains(&"network".to_string()),
        "{limits:?}"
    );
    assert!(limits.reasons["network"].contains("no network namespace"));
    assert_eq!(plan.network.pasta, None, "never the host's network");
    assert_eq!(
        plan.info.sandbox.network.as_ref().unwrap().mode,
        crate::network::NetworkMode::None
    );
}
