//! A sandbox's network: the policy ([`policy`]), what this host can give
//! ([`NetworkFacts`], probed by [`probe`]), and the plan the shim executes
//! ([`NetworkPlan`]): pasta attached to the sandbox's network namespace
//! ([`pasta`]) and an nftables egress filter loaded there ([`nftables`]).
//! Everything but [`probe`] is pure. docs/network.md has the design.

pub mod nftables;
pub mod pasta;
pub mod policy;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use policy::{NetworkMode, NetworkPolicy, PolicyError, Rule};

use crate::spec::Isolation;

/// The name of the capability-like limit in a record's `missing` list.
pub const MISSING: &str = "network";

/// What this host offers for a `public` sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkFacts {
    /// The pasta binary (Debian `passt`), if installed.
    pub pasta: Option<PathBuf>,
    /// The nft binary (Debian `nftables`), if installed.
    pub nft: Option<PathBuf>,
    /// The host's own addresses, refused to every sandbox.
    pub host_addrs: Vec<IpAddr>,
    /// The host has a default route (IPv4 or IPv6): pasta copies it, and
    /// refuses to start without one.
    pub default_route: bool,
}

/// Where pasta and nft are looked for (not the caller's PATH: the shim
/// runs them with its privileges).
const BIN_DIRS: &[&str] = &["/usr/bin", "/usr/sbin", "/bin", "/sbin"];

fn find_bin(name: &str) -> Option<PathBuf> {
    BIN_DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// pasta, as the build for this CPU. Debian's `pasta` only re-executes
/// `pasta.avx2` (shipped beside it) when the CPU has AVX2: naming that one
/// directly saves an exec per sandbox (docs/benchmarks.md, bench-net).
fn find_pasta() -> Option<PathBuf> {
    let plain = find_bin("pasta")?;
    let avx2 = plain.with_file_name("pasta.avx2");
    Some(match cpu_has_avx2() && avx2.is_file() {
        true => avx2,
        false => plain,
    })
}

#[cfg(target_arch = "x86_64")]
fn cpu_has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has_avx2() -> bool {
    false
}

/// Looks for pasta and nft and reads the host's addresses (every
/// interface's, in the caller's network namespace).
pub fn probe() -> NetworkFacts {
    let host_addrs = nix::ifaddrs::getifaddrs()
        .map(|addrs| {
            let mut v: Vec<IpAddr> = addrs
                .filter_map(|a| a.address)
                .filter_map(|s| {
                    s.as_sockaddr_in()
                        .map(|v4| IpAddr::V4(v4.ip()))
                        .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
                })
                .collect();
            v.sort();
            v.dedup();
            v
        })
        .unwrap_or_default();
    NetworkFacts {
        pasta: find_pasta(),
        nft: find_bin("nft"),
        host_addrs,
        default_route: has_default_route(Path::new("/proc/self/net")),
    }
}

/// A default route in `/proc/<pid>/net` (IPv4 or IPv6, not through lo).
pub fn has_default_route(net: &Path) -> bool {
    let read = |name: &str| std::fs::read_to_string(net.join(name)).unwrap_or_default();
    let v4 = read("route")
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some("00000000"));
    let v6 = read("ipv6_route").lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 9 && f[0].bytes().all(|b| b == b'0') && f[1] == "00" && f[9] != "lo"
    });
    v4 || v6
}

/// What the shim does for the sandbox's network.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkPlan {
    /// Start pasta, attached to PID 1's namespaces.
    pub pasta: Option<PathBuf>,
    /// Load this ruleset with `nft -f -` (nft's path, the ruleset) in the
    /// sandbox's network namespace before anything of the tenant runs.
    pub filter: Option<(PathBuf, String)>,
    /// The sandbox's /etc/resolv.conf (namespace tier only).
    pub resolv_conf: Option<String>,
}

/// Bytes a sandbox sent and received over its network (every interface
/// but its loopback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetUsage {
    pub sent_bytes: u64,
    pub received_bytes: u64,
}

/// Sums `/proc/<pid>/net/dev` (the text of it) over every interface but lo.
pub fn usage_from_dev(text: &str) -> NetUsage {
    let mut u = NetUsage::default();
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        if f.len() >= 9 {
            u.received_bytes += f[0];
            u.sent_bytes += f[8];
        }
    }
    u
}

/// The network usage of the sandbox whose PID 1 is `pid` (read in its
/// network namespace through /proc).
pub fn usage_of(pid: i32) -> Option<NetUsage> {
    std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
        .ok()
        .map(|t| usage_from_dev(&t))
}

/// What a sandbox's network is, as its record shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// The mode in force (`none` when `public` was asked for and is
    /// missing: then the record's limits list `network` with the reason).
    pub mode: NetworkMode,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<Rule>,
    /// The resolver the sandbox's resolv.conf names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolver: Option<IpAddr>,
}

/// Why `public` cannot be given, or nothing when it can.
pub fn why_missing(tier: Isolation, facts: &NetworkFacts) -> Option<String> {
    match tier {
        Isolation::Landlock => Some(
            "the landlock tier has no network namespace (its seccomp filter refuses \
             network sockets); public network needs the namespaces tier"
                .into(),
        ),
        Isolation::None => {
            Some("the none tier has no network namespace to attach a network to".into())
        }
        Isolation::Namespaces if facts.pasta.is_none() => Some(
            "pasta, the user-mode network stack, is not installed: apt-get install passt".into(),
        ),
        Isolation::Namespaces if !facts.default_route => Some(
            "this host has no default route, so there is no network to give \
             (check `ip route`)"
                .into(),
        ),
        Isolation::Namespaces if facts.nft.is_none() => Some(
            "nft, which loads the sandbox's egress filter, is not installed: \
             apt-get install nftables"
                .into(),
        ),
        Isolation::Namespaces => None,
    }
}

/// The plan and the record for `policy` in `tier` on a host with `facts`,
/// and the reason `public` is missing, if it is.
pub fn plan(
    policy: &NetworkPolicy,
    tier: Isolation,
    facts: &NetworkFacts,
) -> (NetworkPlan, NetworkRecord, Option<String>) {
    let mut none = NetworkRecord {
        mode: NetworkMode::None,
        allow: Vec::new(),
        deny: Vec::new(),
        resolver: None,
    };
    // Without a network the host's resolv.conf would only name a resolver
    // the sandbox cannot reach.
    let empty = NetworkPlan {
        resolv_conf: Some(String::new()),
        ..NetworkPlan::default()
    };
    if policy.mode == NetworkMode::None {
        return (empty, none, None);
    }
    if let Some(why) = why_missing(tier, facts) {
        none.allow.clone_from(&policy.allow);
        none.deny.clone_from(&policy.deny);
        return (empty, none, Some(why));
    }
    let (Some(pasta_bin), Some(nft)) = (facts.pasta.clone(), facts.nft.clone()) else {
        unreachable!("why_missing checked both");
    };
    let resolver = pasta::resolver();
    let rules = nftables::ruleset(policy, resolver, &facts.host_addrs);
    (
        NetworkPlan {
            pasta: Some(pasta_bin),
            filter: Some((nft, rules)),
            resolv_conf: Some(pasta::resolv_conf()),
        },
        NetworkRecord {
            mode: NetworkMode::Public,
            allow: policy.allow.clone(),
            deny: policy.deny.clone(),
            resolver: Some(resolver),
        },
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> NetworkFacts {
        NetworkFacts {
            pasta: Some("/usr/bin/pasta".into()),
            nft: Some("/usr/sbin/nft".into()),
            host_addrs: vec!["192.0.2.2".parse().unwrap()],
            default_route: true,
        }
    }

    #[test]
    fn public_in_the_namespace_tier_gets_pasta_a_filter_and_a_resolver() {
        let (plan, record, missing) =
            plan(&NetworkPolicy::public(), Isolation::Namespaces, &facts());
        assert_eq!(missing, None);
        assert!(plan.pasta.is_some());
        assert!(plan.filter.unwrap().1.contains("192.0.2.2/32"));
        assert_eq!(record.mode, NetworkMode::Public);
        assert_eq!(record.resolver, Some("169.254.1.1".parse().unwrap()));
        assert!(plan.resolv_conf.unwrap().contains("169.254.1.1"));
    }

    #[test]
    fn usage_sums_every_interface_but_loopback() {
        let dev = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
  eth0: 5000000    4000    0    0    0     0          0         0   120000     900    0    0    0     0       0          0
";
        let u = usage_from_dev(dev);
        assert_eq!((u.received_bytes, u.sent_bytes), (5_000_000, 120_000));
    }

    #[test]
    fn none_gets_nothing_and_an_empty_resolv_conf() {
        let (plan, record, missing) = plan(&NetworkPolicy::none(), Isolation::Namespaces, &facts());
        assert_eq!((plan.pasta, plan.filter, missing), (None, None, None));
        assert_eq!(plan.resolv_conf.as_deref(), Some(""));
        assert_eq!(record.mode, NetworkMode::None);
    }

    #[test]
    fn public_is_missing_with_the_reason_where_the_host_cannot_give_it() {
        let (_, record, why) = plan(&NetworkPolicy::public(), Isolation::Landlock, &facts());
        assert_eq!(record.mode, NetworkMode::None, "never the host's network");
        assert!(why.unwrap().contains("no network namespace"));
        let no_pasta = NetworkFacts {
            pasta: None,
            ..facts()
        };
        let (planned, _, why) = plan(&NetworkPolicy::public(), Isolation::Namespaces, &no_pasta);
        assert!(why.unwrap().contains("apt-get install passt"));
        assert_eq!(planned.pasta, None);
        let offline = NetworkFacts {
            default_route: false,
            ..facts()
        };
        let (_, _, why) = plan(&NetworkPolicy::public(), Isolation::Namespaces, &offline);
        assert!(why.unwrap().contains("no default route"));
    }
}
