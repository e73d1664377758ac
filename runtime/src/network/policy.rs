//! The network policy of a sandbox, in pure code: the mode (`none`,
//! `public`), the operator's `--network-allow` / `--network-deny` entries
//! (`CIDR[:PORTS]`) and the ranges refused whatever the policy says
//! (docs/network.md, "The policy").

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a sandbox may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// Only the sandbox's own loopback.
    #[default]
    None,
    /// Outbound TCP and UDP to public addresses, through a user-mode
    /// network stack; nothing of the host, private ranges or other tenants.
    Public,
}

impl NetworkMode {
    pub fn name(self) -> &'static str {
        match self {
            NetworkMode::None => "none",
            NetworkMode::Public => "public",
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NetworkMode {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<NetworkMode, PolicyError> {
        match s {
            "none" => Ok(NetworkMode::None),
            "public" => Ok(NetworkMode::Public),
            _ => Err(PolicyError::Mode(s.to_string())),
        }
    }
}

/// Why a policy entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("unknown network mode {0:?}: use none or public")]
    Mode(String),
    #[error("{entry:?}: {why} (expected CIDR[:PORTS], e.g. 10.0.0.2/32:80,443 or [fd00::/8]:443)")]
    Entry { entry: String, why: String },
}

/// A block of addresses: an address and a prefix length, host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// `addr/prefix`, host bits cleared; `None` for a prefix too long.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let addr = match addr {
            IpAddr::V4(a) if prefix <= 32 => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) if prefix <= 128 => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
            _ => return None,
        };
        Some(Cidr { addr, prefix })
    }

    /// The single address `addr` (/32 or /128).
    pub fn host(addr: IpAddr) -> Cidr {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        Cidr { addr, prefix }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        Cidr::new(ip, self.prefix).is_some_and(|c| c.addr == self.addr)
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let prefix = match prefix {
            None => Cidr::host(addr).prefix,
            Some(p) => p
                .parse::<u8>()
                .map_err(|_| format!("{p:?} is not a prefix length"))?,
        };
        Cidr::new(addr, prefix).ok_or_else(|| format!("prefix /{prefix} is too long for {addr}"))
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// An inclusive range of ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ports {
    pub first: u16,
    pub last: u16,
}

/// One `--network-allow` / `--network-deny` entry: a block of addresses,
/// and the ports it covers (all when empty), TCP and UDP alike.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    pub net: Cidr,
    pub ports: Vec<Ports>,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.net.is_ipv4(), self.ports.is_empty()) {
            (_, true) => write!(f, "{}", self.net)?,
            (true, false) => write!(f, "{}:", self.net)?,
            (false, false) => write!(f, "[{}]:", self.net)?,
        }
        let ports: Vec<String> = self
            .ports
            .iter()
            .map(|p| match p.first == p.last {
                true => p.first.to_string(),
                false => format!("{}-{}", p.first, p.last),
            })
            .collect();
        f.write_str(&ports.join(","))
    }
}

impl FromStr for Rule {
    type Err = PolicyError;
    /// `10.0.0.0/8`, `10.0.0.2:80`, `10.0.0.2/32:80,443,8000-8100`,
    /// `2001:db8::/32`, `[2001:db8::1]:443`.
    fn from_str(s: &str) -> Result<Rule, PolicyError> {
        let bad = |why: String| PolicyError::Entry {
            entry: s.to_string(),
            why,
        };
        let (net, ports) = if let Some(rest) = s.strip_prefix('[') {
            let (net, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("no closing ']'".into()))?;
            match after {
                "" => (net, None),
                _ => match after.strip_prefix(':') {
                    Some(p) => (net, Some(p)),
                    None => return Err(bad("expected ':' after ']'".into())),
                },
            }
        } else if s.matches(':').count() == 1 {
            let (net, p) = s.split_once(':').expect("one ':'");
            (net, Some(p))
        } else {
            (s, None)
        };
        let net: Cidr = net.parse().map_err(bad)?;
        let ports = match ports {
            None => Vec::new(),
            Some(p) => p
                .split(',')
                .map(|one| {
                    parse_ports(one).ok_or_else(|| bad(format!("{one:?} is not a port or range")))
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(Rule { net, ports })
    }
}

fn parse_ports(s: &str) -> Option<Ports> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let (first, last) = (a.parse::<u16>().ok()?, b.parse::<u16>().ok()?);
    (first >= 1 && first <= last).then_some(Ports { first, last })
}

impl Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Rule, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The policy a sandbox is started with.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetworkPolicy {
    pub mode: NetworkMode,
    /// Opened even inside the always-refused ranges (checked first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<Rule>,
    /// Closed in addition to the always-refused ranges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<Rule>,
    /// Refuse to start when `public` cannot be given (`--require-network`;
    /// `--require-limits` implies it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
}

impl NetworkPolicy {
    pub fn none() -> NetworkPolicy {
        NetworkPolicy::default()
    }

    pub fn public() -> NetworkPolicy {
        NetworkPolicy {
            mode: NetworkMode::Public,
            ..NetworkPolicy::default()
        }
    }
}

/// Parses a list of `CIDR[:PORTS]` entries, the first bad one an error.
pub fn parse_rules<S: AsRef<str>>(entries: &[S]) -> Result<Vec<Rule>, PolicyError> {
    entries.iter().map(|e| e.as_ref().parse()).collect()
}

/// IPv4 ranges no sandbox reaches whatever the policy (short of an
/// explicit allow entry): this host, private networks (RFC 1918), CGNAT,
/// link-local with the cloud metadata address 169.254.169.254, "this
/// network", multicast and reserved.
pub const REFUSED_V4: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

/// The IPv6 counterparts: unspecified and loopback, IPv4-mapped (the IPv4
/// list through an IPv6 socket), unique local (with AWS's metadata address
/// fd00:ec2::254), link-local and multicast.
pub const REFUSED_V6: &[&str] = &[
    "::/128",
    "::1/128",
    "::ffff:0:0/96",
    "fc00::/7",
    "fd00:ec2::254/128",
    "fe80::/10",
    "ff00::/8",
];

/// [`REFUSED_V4`] and [`REFUSED_V6`], parsed.
pub fn always_refused() -> Vec<Cidr> {
    REFUSED_V4
        .iter()
        .chain(REFUSED_V6)
        .map(|c| c.parse().expect("the built-in ranges parse"))
        .collect()
}

/// True when `ip` lies in one of the always-refused ranges.
pub fn is_always_refused(ip: IpAddr) -> bool {
    always_refused().iter().any(|c| c.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> Rule {
        s.parse().unwrap()
    }

    #[test]
    fn entries_parse_with_and_without_ports() {
        let r = rule("10.0.0.2:80");
        assert_eq!(r.net.to_string(), "10.0.0.2/32");
        assert_eq!(
            r.ports,
            [Ports {
                first: 80,
                last: 80
            }]
        );
        let r = rule("10.1.2.3/16:80,443,8000-8100");
        assert_eq!(r.net.to_string(), "10.1.0.0/16", "host bits are cleared");
        assert_eq!(r.ports.len(), 3);
        assert_eq!(r.to_string(), "10.1.0.0/16:80,443,8000-8100");
        assert_eq!(rule("192.168.0.0/16").ports, []);
        let r = rule("2001:db8::/32");
        assert_eq!((r.net.prefix, r.ports.len()), (32, 0));
        let r = rule("[2001:db8::1]:443");
        assert_eq!(r.net.to_string(), "2001:db8::1/128");
        assert_eq!(r.to_string(), "[2001:db8::1/128]:443");
        assert_eq!(rule(&r.to_string()), r, "the display form parses back");
        assert_eq!(rule("[fd00::/8]").ports, []);
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        for bad in [
            "",
            "example.com",
            "10.0.0.0/33",
            "10.0.0.1:0",
            "10.0.0.1:99999",
            "10.0.0.1:90-80",
            "10.0.0.1:http",
            "[::1",
            "[::1]80",
            "::1/129",
            "10.0.0.1/x",
        ] {
            let err = bad.parse::<Rule>().unwrap_err().to_string();
            assert!(err.contains("expected CIDR[:PORTS]"), "{bad}: {err}");
        }
        assert!("open".parse::<NetworkMode>().is_err());
        assert_eq!("public".parse::<NetworkMode>(), Ok(NetworkMode::Public));
    }

    #[test]
    fn the_refused_ranges_cover_private_metadata_and_loopback() {
        for ip in [
            "10.0.0.2",
            "192.168.1.2",
            "172.31.255.255",
            "169.254.169.254",
            "127.0.0.1",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "::ffff:10.0.0.2",
            "ff02::1",
        ] {
            assert!(is_always_refused(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.215.14",
            "1.1.1.1",
            "172.32.0.1",
            "2606:2800:21f:cb07::1",
        ] {
            assert!(!is_always_refused(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn the_policy_json_is_plain_strings() {
        let p = NetworkPolicy {
            mode: NetworkMode::Public,
            allow: vec![rule("10.0.0.2:80")],
            deny: vec![],
            required: false,
        };
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, r#"{"mode":"public","allow":["10.0.0.2/32:80"]}"#);
        assert_eq!(serde_json::from_str::<NetworkPolicy>(&json).unwrap(), p);
        assert!(
            serde_json::from_str::<NetworkPolicy>(r#"{"mode":"public","allow":["x"]}"#).is_err()
        );
    }
}
