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
        pasta: find_bin("pasta"),
        nft: find_bin("nft"),
        host_addrs,
    }
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
        let (plan, _, why) = plan(&NetworkPolicy::public(), Isolation::Namespaces, &no_pasta);
        assert!(why.unwrap().contains("apt-get install passt"));
        assert_eq!(plan.pasta, None);
    }
}
