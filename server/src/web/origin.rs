//! The WebSocket `Origin` check, on by default.
//!
//! A browser sends cookies with a WebSocket handshake whatever page opened
//! it, so without this check any web site a logged-in user visits could open
//! a shell as them (cross-site WebSocket hijacking). The rule:
//!
//! * no `Origin` header: allowed. Browsers always send one on a WebSocket;
//!   its absence means a non-browser client, which still has to
//!   authenticate.
//! * `Origin` whose host and port equal the `Host` header: allowed (the page
//!   this server served).
//! * `Origin` listed with `--allowed-origin` (`scheme://host[:port]`):
//!   allowed. Use it behind a reverse proxy that rewrites `Host`.
//! * anything else, `Origin: null` included: refused with HTTP 403, before
//!   the upgrade.

use axum::http::header::{HOST, ORIGIN};
use axum::http::HeaderMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error("--allowed-origin {0:?} is not scheme://host[:port] (no path, no trailing slash)")]
    BadAllowed(String),
    #[error("cross-origin WebSocket refused")]
    Refused,
}

/// The origins allowed besides the server's own.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    allowed: Vec<Origin>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    /// host[:port], lower case, default port removed.
    authority: String,
}

fn parse_origin(s: &str) -> Option<Origin> {
    let (scheme, rest) = s.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "http" | "https") {
        return None;
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let authority = normalize_authority(rest, &scheme);
    Some(Origin { scheme, authority })
}

fn normalize_authority(authority: &str, scheme: &str) -> String {
    let a = authority.to_ascii_lowercase();
    let default = if scheme == "https" { ":443" } else { ":80" };
    match a.strip_suffix(default) {
        Some(stripped) => stripped.to_string(),
        None => a,
    }
}

impl OriginPolicy {
    pub fn new(allowed: &[String]) -> Result<OriginPolicy, OriginError> {
        let allowed = allowed
            .iter()
            .map(|a| parse_origin(a).ok_or_else(|| OriginError::BadAllowed(a.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(OriginPolicy { allowed })
    }

    /// Checks a WebSocket handshake's headers.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), OriginError> {
        let Some(origin) = headers.get(ORIGIN) else {
            return Ok(());
        };
        let origin = origin
            .to_str()
            .ok()
            .and_then(parse_origin)
            .ok_or(OriginError::Refused)?;
        if self.allowed.contains(&origin) {
            return Ok(());
        }
        let host = headers.get(HOST).and_then(|h| h.to_str().ok());
        match host {
            Some(host) if normalize_authority(host, &origin.scheme) == origin.authority => Ok(()),
            _ => Err(OriginError::Refused),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn h(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(HOST, HeaderValue::from_str(host).unwrap());
        if let Some(o) = origin {
            m.insert(ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        m
    }

    #[test]
    fn same_host_is_allowed() {
        let p = OriginPolicy::default();
        assert!(p.check(&h(None, "127.0.0.1:8080")).is_ok());
        assert!(p
            .check(&h(Some("http://127.0.0.1:8080"), "127.0.0.1:8080"))
            .is_ok());
        assert!(p
            .check(&h(Some("https://Example.com"), "example.com:443"))
            .is_ok());
        assert!(p
            .check(&h(Some("http://example.com:80"), "example.com"))
            .is_ok());
    }

    #[test]
    fn other_origins_are_refused() {
        let p = OriginPolicy::default();
        for o in [
            "http://evil.example",
            "http://127.0.0.1:8081",
            "null",
            "file://",
            "http://127.0.0.1:8080/path",
        ] {
            assert_eq!(
                p.check(&h(Some(o), "127.0.0.1:8080")),
                Err(OriginError::Refused),
                "{o}"
            );
        }
    }

    #[test]
    fn allowed_list() {
        let p = OriginPolicy::new(&["https://term.example.com".into()]).unwrap();
        assert!(p
            .check(&h(Some("https://term.example.com"), "10.0.0.5:8080"))
            .is_ok());
        assert!(p
            .check(&h(Some("http://term.example.com"), "10.0.0.5:8080"))
            .is_err());
        assert!(OriginPolicy::new(&["term.example.com".into()]).is_err());
        assert!(OriginPolicy::new(&["https://x.com/".into()]).is_err());
    }
}
