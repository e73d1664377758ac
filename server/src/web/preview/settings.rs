//! What previews are and where: the settings, the preview host names
//! ([`classify`]) and the keys ([`Previews`]); nothing here serves.

use std::collections::HashMap;
use std::sync::Mutex;

use warren_domain::user::UserId;

/// Where previews live (`--preview-domain`).
#[derive(Debug, Clone)]
pub struct PreviewSettings {
    /// Preview hosts are `<port>-<user>.<domain>`; `localhost` by default
    /// (browsers resolve `*.localhost` to loopback).
    pub domain: String,
}

impl Default for PreviewSettings {
    fn default() -> Self {
        PreviewSettings {
            domain: "localhost".into(),
        }
    }
}

/// One preview host: which port of whose sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host name, lower case, without a port: what tokens are bound to.
    pub name: String,
    /// `name[:port]` as the browser reaches it (for redirects).
    pub authority: String,
    pub port: u16,
    pub user: UserId,
}

/// What a `Host` value is to the preview layer.
#[derive(Debug, PartialEq, Eq)]
pub enum HostKind {
    /// Not under the preview domain in the `<port>-<user>` form: the normal
    /// routes (and their Host check) take it.
    Other,
    Preview(Target),
    /// A preview host with a port that is not one (0, > 65535).
    BadPort(String),
    /// A preview host whose user part is no valid user id.
    BadUser(String),
}

/// Reads `raw` (a `Host` value) against the preview `domain`.
pub fn classify(domain: &str, raw: &str) -> HostKind {
    let Some(name) = super::super::host::name_of(raw) else {
        return HostKind::Other;
    };
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let Some(label) = name.strip_suffix(&format!(".{domain}")) else {
        return HostKind::Other;
    };
    let Some((port, user)) = label.split_once('-') else {
        return HostKind::Other;
    };
    if label.contains('.') || port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return HostKind::Other;
    }
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => return HostKind::BadPort(port.to_string()),
    };
    let Ok(user) = UserId::parse(user) else {
        return HostKind::BadUser(user.to_string());
    };
    HostKind::Preview(Target {
        authority: raw.trim().to_ascii_lowercase(),
        name,
        port,
        user,
    })
}

/// The preview layer's state: its settings, its signing key and the
/// one-time grants already used.
pub struct Previews {
    pub settings: PreviewSettings,
    /// Signs preview cookies and grants (derived from the server's key:
    /// never valid as a session, see `Auth::derive_key`).
    pub(super) key: [u8; 32],
    /// Signs share links: derived from the admin token, which persists,
    /// so links outlive a restart; `None` without the management API.
    pub(super) share_key: Option<[u8; 32]>,
    /// Grant nonces used, with their expiry (seconds): each works once.
    pub(super) used: Mutex<HashMap<String, u64>>,
    /// The terminal's origin (`--public-url`, first), for the redirect
    /// through the main origin; otherwise `http://<domain>:<port>`.
    main_origin: Option<String>,
}

impl Previews {
    pub fn new(
        settings: PreviewSettings,
        auth: &super::super::Auth,
        admin_token: Option<&str>,
        public_urls: &[String],
    ) -> Previews {
        let share_key = admin_token.map(|t| {
            use hmac::Mac;
            let mut m = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(t.as_bytes())
                .expect("HMAC accepts any key length");
            m.update(b"warren preview share v1");
            m.finalize().into_bytes().into()
        });
        Previews {
            settings,
            key: auth.derive_key("warren preview v1"),
            share_key,
            used: Mutex::new(HashMap::new()),
            main_origin: public_urls.first().cloned(),
        }
    }

    /// `scheme://<port>-<user>.<domain>[:port]/`: where `user`'s `port` is
    /// previewed, as seen from a request to the terminal's origin at
    /// `authority` (behind a public URL: its scheme, the standard port).
    pub fn preview_origin(&self, user: &str, port: u16, authority: &str) -> String {
        let domain = &self.settings.domain;
        match &self.main_origin {
            Some(o) => {
                let scheme = o.split("://").next().unwrap_or("https");
                format!("{scheme}://{port}-{user}.{domain}")
            }
            None => {
                let server_port = port_of(authority);
                format!("http://{port}-{user}.{domain}{server_port}")
            }
        }
    }

    /// The terminal's origin as seen from a request to `authority`.
    pub fn main_origin(&self, authority: &str) -> String {
        if let Some(o) = &self.main_origin {
            return o.trim_end_matches('/').to_string();
        }
        format!("http://{}{}", self.settings.domain, port_of(authority))
    }
}

/// `:port` of a `host[:port]` value, or nothing.
fn port_of(authority: &str) -> String {
    authority
        .rsplit_once(':')
        .filter(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .map(|(_, p)| format!(":{p}"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_hosts_are_told_apart() {
        let t = |raw| classify("localhost", raw);
        match t("8001-bob.localhost:8080") {
            HostKind::Preview(p) => {
                assert_eq!((p.port, p.user.as_str()), (8001, "bob"));
                assert_eq!(p.name, "8001-bob.localhost");
                assert_eq!(p.authority, "8001-bob.localhost:8080");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(t("8001-Alice-x.LOCALHOST"), HostKind::Preview(p) if p.user.as_str() == "alice-x")
        );
        for other in [
            "localhost:8080",
            "127.0.0.1:8080",
            "alice.localhost",
            "x-bob.localhost",
            "8001-bob.example.com",
            "a.8001-bob.localhost",
            "8001bob.localhost",
        ] {
            assert_eq!(t(other), HostKind::Other, "{other}");
        }
        assert_eq!(t("0-bob.localhost"), HostKind::BadPort("0".into()));
        assert_eq!(t("70000-bob.localhost"), HostKind::BadPort("70000".into()));
        assert!(matches!(t("8001-root.localhost"), HostKind::BadUser(_)));
        let c = classify("preview.example.com", "3000-carol.preview.example.com");
        assert!(matches!(c, HostKind::Preview(p) if p.port == 3000));
    }
}
