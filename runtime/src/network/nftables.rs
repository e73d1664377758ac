//! The sandbox's egress filter as an nftables ruleset, in pure code. The
//! shim loads it into the sandbox's network namespace from the host side
//! (it owns the sandbox's user namespace) before anything of the tenant
//! runs; the tenant never holds CAP_NET_ADMIN in a namespace owned by the
//! sandbox's user namespace, so it cannot change it (docs/network.md,
//! "Enforcement").

use std::fmt::Write;
use std::net::IpAddr;

use super::policy::{always_refused, Cidr, NetworkPolicy, Rule};

/// The table warren loads (one per sandbox network namespace).
pub const TABLE: &str = "warren";

/// The ruleset for `policy`: the sandbox's own loopback, then DNS to the
/// forwarder at `resolver`, then the allow entries, then the deny entries,
/// the always-refused ranges and the host's own addresses, refused.
pub fn ruleset(policy: &NetworkPolicy, resolver: IpAddr, host_addrs: &[IpAddr]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "table inet {TABLE} {{");
    let _ = writeln!(s, "  chain output {{");
    let _ = writeln!(
        s,
        "    type filter hook output priority filter; policy accept;"
    );
    let _ = writeln!(s, "    oifname \"lo\" accept");
    let family = family_of(resolver);
    let _ = writeln!(s, "    {family} daddr {resolver} udp dport 53 accept");
    let _ = writeln!(s, "    {family} daddr {resolver} tcp dport 53 accept");
    for rule in &policy.allow {
        rule_lines(&mut s, rule, "accept");
    }
    for rule in &policy.deny {
        rule_lines(&mut s, rule, REFUSE);
    }
    let mut refused = always_refused();
    refused.extend(host_addrs.iter().map(|a| Cidr::host(*a)));
    for (family, v4) in [("ip", true), ("ip6", false)] {
        let set: Vec<String> = refused
            .iter()
            .filter(|c| c.is_ipv4() == v4)
            .map(ToString::to_string)
            .collect();
        let _ = writeln!(s, "    {family} daddr {{ {} }} {REFUSE}", set.join(", "));
    }
    let _ = writeln!(s, "  }}");
    let _ = writeln!(s, "}}");
    s
}

/// Refused at once (EHOSTUNREACH / ECONNREFUSED), not left to time out.
const REFUSE: &str = "reject with icmpx admin-prohibited";

fn family_of(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "ip",
        IpAddr::V6(_) => "ip6",
    }
}

fn rule_lines(s: &mut String, rule: &Rule, verdict: &str) {
    let family = family_of(rule.net.addr);
    let net = rule.net;
    if rule.ports.is_empty() {
        let _ = writeln!(s, "    {family} daddr {net} {verdict}");
        return;
    }
    let ports: Vec<String> = rule
        .ports
        .iter()
        .map(|p| match p.first == p.last {
            true => p.first.to_string(),
            false => format!("{}-{}", p.first, p.last),
        })
        .collect();
    let _ = writeln!(
        s,
        "    {family} daddr {net} meta l4proto {{ tcp, udp }} th dport {{ {} }} {verdict}",
        ports.join(", ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::policy::NetworkMode;

    #[test]
    fn allow_comes_before_deny_and_the_refused_ranges() {
        let policy = NetworkPolicy {
            mode: NetworkMode::Public,
            allow: vec!["10.0.0.2:80".parse().unwrap()],
            deny: vec![
                "203.0.113.0/24".parse().unwrap(),
                "[2001:db8::/32]:25".parse().unwrap(),
            ],
            required: false,
        };
        let host = ["192.0.2.2".parse().unwrap(), "2001:db8::2".parse().unwrap()];
        let r = ruleset(&policy, "169.254.1.1".parse().unwrap(), &host);
        let at = |needle: &str| r.find(needle).unwrap_or_else(|| panic!("{needle} in\n{r}"));
        let lo = at("oifname \"lo\" accept");
        let dns = at("ip daddr 169.254.1.1 udp dport 53 accept");
        let allow = at("ip daddr 10.0.0.2/32 meta l4proto { tcp, udp } th dport { 80 } accept");
        let deny = at("ip daddr 203.0.113.0/24 reject");
        at("ip6 daddr 2001:db8::/32 meta l4proto { tcp, udp } th dport { 25 } reject");
        let refused = at("ip daddr { 0.0.0.0/8, 10.0.0.0/8,");
        assert!(
            lo < dns && dns < allow && allow < deny && deny < refused,
            "{r}"
        );
        assert!(r.contains("169.254.0.0/16"), "metadata refused");
        assert!(
            r.contains("192.0.2.2/32 }"),
            "the host's own address refused"
        );
        assert!(r.contains("2001:db8::2/128 }"), "{r}");
        assert!(r.contains("fc00::/7"), "{r}");
    }
}
