//! How warren drives pasta (Debian `passt`), the user-mode network stack
//! that gives a `public` sandbox its outbound network: the command line,
//! in pure code (docs/network.md, "Why pasta").

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::Path;

/// pasta's address inside the sandbox that forwards DNS queries to the
/// host's first resolver (`--dns-forward`); the sandbox's resolv.conf names
/// it. Link-local, so it is never a real host anywhere.
pub const DNS_FORWARD_V4: &str = "169.254.1.1";

/// The resolver the sandbox's /etc/resolv.conf names.
pub fn resolver() -> IpAddr {
    DNS_FORWARD_V4.parse().expect("a valid address")
}

/// The synthesized /etc/resolv.conf of a sandbox with a network (the
/// host's may name a private resolver the policy refuses).
pub fn resolv_conf() -> String {
    format!("nameserver {DNS_FORWARD_V4}\noptions edns0\n")
}

/// The fds pasta inherits the sandbox's user and network namespaces on:
/// opened by the shim while PID 1 waits, so pasta never has to open them
/// through PID 1's /proc entry (which races with PID 1's credential
/// changes making it non-dumpable).
pub const USERNS_FD: i32 = 3;
pub const NETNS_FD: i32 = 4;

/// pasta's arguments to attach to the namespaces on [`USERNS_FD`] and
/// [`NETNS_FD`]:
///
/// - `--config-net`: addresses and routes copied from the host, `eth0` up;
/// - `-t none -u none`: nothing forwarded in from the host;
/// - `-T none -U none`: none of the host's loopback ports forwarded out
///   (pasta's default would forward every bound one);
/// - `--no-map-gw`: the gateway address is not mapped to the host;
/// - `-f`: it stays our child, so it dies with the shim (PDEATHSIG) and is
///   killed and reaped when the sandbox ends;
/// - `--runas 0:0` as root: pasta would switch to `nobody`, who cannot
///   open the namespaces of root's sandbox; it then has no more privilege
///   than warren, and pasta drops its capabilities and isolates itself.
pub fn args(as_root: bool, log: &Path) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    if as_root {
        a.extend(["--runas".into(), "0:0".into()]);
    }
    for s in [
        "-f",
        "-q",
        "--config-net",
        "-t",
        "none",
        "-u",
        "none",
        "-T",
        "none",
        "-U",
        "none",
        "--no-map-gw",
        "--dns-forward",
        DNS_FORWARD_V4,
    ] {
        a.push(s.into());
    }
    a.extend(["--log-file".into(), log.as_os_str().to_owned()]);
    a.extend([
        "--userns".into(),
        format!("/proc/self/fd/{USERNS_FD}").into(),
    ]);
    a.extend(["--netns".into(), format!("/proc/self/fd/{NETNS_FD}").into()]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_forwarded_and_the_gateway_is_not_the_host() {
        let a: Vec<String> = args(true, Path::new("/dev/null"))
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        let line = a.join(" ");
        for want in [
            "-t none",
            "-u none",
            "-T none",
            "-U none",
            "--no-map-gw",
            "-f",
            "--runas 0:0",
        ] {
            assert!(line.contains(want), "{want} in {line}");
        }
        assert!(
            line.ends_with("--userns /proc/self/fd/3 --netns /proc/self/fd/4"),
            "{line}"
        );
        assert!(!args(false, Path::new("/dev/null")).contains(&"--runas".into()));
        assert_eq!(resolv_conf().lines().next(), Some("nameserver 169.254.1.1"));
    }
}
