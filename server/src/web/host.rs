//! The `Host` check against DNS rebinding, on every request in every auth
//! mode (Jupyter's local-host check is the model).
//!
//! A page at `http://attacker.example:8080/` whose name the attacker's DNS
//! later points at 127.0.0.1 is, to the browser, same-origin with itself:
//! it may read this server's pages and open its WebSocket with a matching
//! `Origin`. What gives it away is the `Host` header, which names the
//! attacker's domain. So a request is served only when its host is:
//!
//! * `localhost` or a name under `.localhost` (RFC 6761 reserves it for
//!   loopback; no public DNS answers for it, so it cannot be rebound);
//! * an IP literal that is loopback or the listen address, or, when listening
//!   on a wildcard address (0.0.0.0, `::`), any IP literal: rebinding needs
//!   a name, and the machine's own addresses are not known in advance;
//! * the host of a `--public-url` (the name users type, behind a proxy).
//!
//! The port is not compared: a port cannot make a name point here, and
//! `ssh -L 9000:localhost:8080` or a port mapping changes it legitimately.
//! Anything else gets 421 Misdirected Request and nothing else happens.
//! `/healthz` is exempt: it says only `ok`, and load balancers' probes send
//! whatever `Host` they like (or none).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, HOST};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("--public-url {0:?} is not http(s)://host[:port] (no path, no trailing slash)")]
    BadPublicUrl(String),
    #[error("no Host header")]
    Missing,
    #[error("Host {0:?} is not this server's name")]
    Foreign(String),
}

/// Which `Host` values name this server.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    listen: IpAddr,
    /// Lower-case host names (or IP literals) of the public URLs.
    public: Vec<String>,
}

impl HostPolicy {
    /// `listen`: the address the server is bound to; `public_urls`:
    /// `http(s)://host[:port]` as users reach it.
    pub fn new(listen: SocketAddr, public_urls: &[String]) -> Result<HostPolicy, HostError> {
        let public = public_urls
            .iter()
            .map(|u| public_host(u).ok_or_else(|| HostError::BadPublicUrl(u.clone())))
            .collect::<Result<_, _>>()?;
        Ok(HostPolicy {
            listen: listen.ip(),
            public,
        })
    }

    /// A server on loopback with no public URL.
    pub fn loopback() -> HostPolicy {
        HostPolicy {
            listen: IpAddr::from([127, 0, 0, 1]),
            public: Vec::new(),
        }
    }

    /// Checks the value of a request's `Host` header (or its authority).
    pub fn check(&self, host: Option<&str>) -> Result<(), HostError> {
        let raw = host.ok_or(HostError::Missing)?;
        let name = host_name(raw).ok_or_else(|| HostError::Foreign(raw.to_string()))?;
        if self.allows(&name) {
            Ok(())
        } else {
            Err(HostError::Foreign(raw.to_string()))
        }
    }

    fn allows(&self, name: &str) -> bool {
        if let Ok(ip) = name.parse::<IpAddr>() {
            return ip.is_loopback()
                || ip == self.listen
                || self.listen.is_unspecified()
                || self.public.iter().any(|p| p == name);
        }
        name == "localhost" || name.ends_with(".localhost") || self.public.iter().any(|p| p == name)
    }
}

/// The host part of a `Host` value, lower case, brackets and a trailing dot
/// removed; `None` when it is not `host[:port]`.
fn host_name(raw: &str) -> Option<String> {
    let raw = raw.trim().to_ascii_lowercase();
    if let Some(rest) = raw.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        if !(after.is_empty() || port_ok(after.strip_prefix(':')?)) {
            return None;
        }
        ip.parse::<std::net::Ipv6Addr>().ok()?;
        return Some(ip.to_string());
    }
    let (host, port) = match raw.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (raw.as_str(), None),
    };
    if port.is_some_and(|p| !port_ok(p)) {
        return None;
    }
    let host = host.strip_suffix('.').unwrap_or(host).to_string();
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    valid.then_some(host)
}

/// The host part of a `Host` value (see `host_name`) for other checks (the preview hosts, `super::preview`).
pub fn name_of(raw: &str) -> Option<String> {
    host_name(raw)
}

fn port_ok(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// The host of `http(s)://host[:port]`.
fn public_host(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
        return None;
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    host_name(rest)
}

/// The middleware: refuses a request whose `Host` is not this server's
/// with 421 before any handler runs.
pub async fn check_host(State(hosts): State<HostPolicy>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let host = req.headers().get(HOST).and_then(|h| h.to_str().ok());
    // An absolute-form target (`GET http://name/ HTTP/1.1`) names a host
    // too, and RFC 9112 §3.2.2 says it wins over Host: check both.
    let checked = hosts
        .check(host)
        .and_then(|()| match req.uri().authority() {
            Some(a) => hosts.check(Some(a.as_str())),
            None => Ok(()),
        });
    match checked {
        Ok(()) => next.run(req).await,
        Err(e) => {
            tracing::debug!("request refused: {e}");
            (
                StatusCode::MISDIRECTED_REQUEST,
                [
                    (CONTENT_TYPE, "text/plain; charset=utf-8"),
                    (CACHE_CONTROL, "no-store"),
                ],
                format!(
                    "{e}: this server answers to localhost, its IP addresses and its \
                     --public-url (possible DNS rebinding; see docs/serve.md)\n"
                ),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(listen: &str, public: &[&str]) -> HostPolicy {
        let public: Vec<String> = public.iter().map(|s| s.to_string()).collect();
        HostPolicy::new(listen.parse().unwrap(), &public).unwrap()
    }

    #[test]
    fn loopback_names_and_addresses() {
        let p = policy("127.0.0.1:8080", &[]);
        for h in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "localhost:8080",
            "LOCALHOST",
            "localhost.:9000",
            "alice.localhost:8080",
            "[::1]:8080",
            "127.0.0.2:8080",
        ] {
            assert_eq!(p.check(Some(h)), Ok(()), "{h}");
        }
    }

    #[test]
    fn foreign_names_are_refused() {
        let p = policy("127.0.0.1:8080", &[]);
        for h in [
            "attacker.example:8080",
            "attacker.example",
            "localhost.attacker.example",
            "127.0.0.1.nip.io:8080",
            "10.0.0.5:8080",
            "localhost:80x",
            "[::1",
            "a b",
            "",
        ] {
            assert!(p.check(Some(h)).is_err(), "{h}");
        }
        assert_eq!(p.check(None), Err(HostError::Missing));
    }

    #[test]
    fn wildcard_listen_takes_any_ip_but_no_name() {
        let p = policy("0.0.0.0:8080", &[]);
        assert!(p.check(Some("10.0.0.5:8080")).is_ok());
        assert!(p.check(Some("[2001:db8::1]:8080")).is_ok());
        assert!(p.check(Some("myhost:8080")).is_err());
        let p = policy("10.0.0.5:8080", &[]);
        assert!(p.check(Some("10.0.0.5:8080")).is_ok());
        assert!(p.check(Some("10.0.0.6:8080")).is_err());
    }

    #[test]
    fn public_urls() {
        let p = policy("127.0.0.1:8080", &["https://Term.Example.com"]);
        assert!(p.check(Some("term.example.com")).is_ok());
        assert!(p.check(Some("term.example.com:443")).is_ok());
        assert!(p.check(Some("other.example.com")).is_err());
        for bad in [
            "term.example.com",
            "https://x.com/",
            "ftp://x.com",
            "https://",
        ] {
            assert!(
                HostPolicy::new("127.0.0.1:1".parse().unwrap(), &[bad.into()]).is_err(),
                "{bad}"
            );
        }
    }
}
