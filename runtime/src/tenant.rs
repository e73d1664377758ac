//! User ids → Linux-safe slugs and workspace paths.
//!
//! This is the only place a user-supplied name turns into something that
//! ends up in a path. The rules (also in docs/tenants.md):
//!
//! * An id that already is a safe slug (`[a-z_][a-z0-9_-]{0,31}`, not a
//!   reserved system name) is used as is: `alice` → `alice`.
//! * Other printable ids (upper case, `@`, `.`, non-ASCII letters) get a
//!   deterministic slug: a cleaned prefix plus 8 hex digits of the id's
//!   SHA-256, e.g. `Alice@Example.com` → `alice-example-com-1f0c7e2a`.
//! * Refused with an error: the empty id, ids over 64 bytes, NUL or other
//!   control characters, anything path-like (`/`, `\`, a leading `.`, `..`),
//!   reserved names (`root`, `nobody`, …) and plain ids that end like a
//!   hashed slug (`-` and 8 hex digits), so a chosen id can never collide
//!   with a derived one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest accepted user id, in bytes.
pub const MAX_ID_BYTES: usize = 64;
/// Longest slug (also the Linux user name length that every tool accepts).
pub const MAX_SLUG: usize = 32;

/// Names that already mean something on a Linux system and must never be a
/// tenant: Debian's base-passwd users and groups, plus our own.
const RESERVED: &[&str] = &[
    "root",
    "daemon",
    "bin",
    "sys",
    "sync",
    "games",
    "man",
    "lp",
    "mail",
    "news",
    "uucp",
    "proxy",
    "www-data",
    "backup",
    "list",
    "irc",
    "gnats",
    "nobody",
    "nogroup",
    "systemd",
    "messagebus",
    "sshd",
    "admin",
    "adm",
    "wheel",
    "sudo",
    "staff",
    "users",
    "tty",
    "disk",
    "kmem",
    "shadow",
    "utmp",
    "warren",
    "workspace",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    #[error("user id is empty")]
    Empty,
    #[error("user id is {0} bytes long; the limit is {MAX_ID_BYTES}")]
    TooLong(usize),
    #[error("user id contains a NUL or control character")]
    ControlCharacter,
    #[error("user id {0:?} looks like a path ('/', '\\', a leading '.' or '..' are not allowed)")]
    PathLike(String),
    #[error("user id {0:?} is a reserved system name")]
    Reserved(String),
    #[error("user id {0:?} ends like a derived slug (-xxxxxxxx); pick another id")]
    LooksDerived(String),
}

/// A validated tenant: the id as given and the slug derived from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: String,
    pub slug: String,
}

impl Tenant {
    /// Validates `id` and derives its slug (see the module docs).
    pub fn parse(id: &str) -> Result<Tenant, TenantError> {
        if id.is_empty() {
            return Err(TenantError::Empty);
        }
        if id.len() > MAX_ID_BYTES {
            return Err(TenantError::TooLong(id.len()));
        }
        if id.chars().any(char::is_control) {
            return Err(TenantError::ControlCharacter);
        }
        if id.contains('/') || id.contains('\\') || id.starts_with('.') || id.contains("..") {
            return Err(TenantError::PathLike(id.to_string()));
        }
        if is_plain_slug(id) {
            if RESERVED.contains(&id) {
                return Err(TenantError::Reserved(id.to_string()));
            }
            if has_derived_suffix(id) {
                return Err(TenantError::LooksDerived(id.to_string()));
            }
            return Ok(Tenant {
                id: id.to_string(),
                slug: id.to_string(),
            });
        }
        Ok(Tenant {
            id: id.to_string(),
            slug: derived_slug(id),
        })
    }

    /// The tenant's home on the host: `<root>/<slug>`. The slug never
    /// contains a separator or a dot-dot, so this stays under `root`.
    pub fn workspace_in(&self, root: &Path) -> PathBuf {
        root.join(&self.slug)
    }

    /// Where the home appears inside the sandbox.
    pub fn home_in_sandbox(&self) -> PathBuf {
        Path::new("/workspace").join(&self.slug)
    }

    /// The sandbox's host name: `<slug>-sandbox`, at most 41 bytes (< 64).
    pub fn hostname(&self) -> String {
        format!("{}-sandbox", self.slug)
    }
}

fn is_plain_slug(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_SLUG
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

fn has_derived_suffix(s: &str) -> bool {
    s.len() > 9 && {
        let (head, tail) = s.split_at(s.len() - 9);
        !head.is_empty()
            && tail.starts_with('-')
            && tail[1..].bytes().all(|c| c.is_ascii_hexdigit())
    }
}

/// `<clean prefix>-<8 hex of sha256(id)>`: deterministic, distinct for
/// distinct ids (to the strength of 32 bits of SHA-256; the state database
/// also refuses a second id for an existing slug).
fn derived_slug(id: &str) -> String {
    let mut prefix = String::new();
    for c in id.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            prefix.push(c);
        } else if !prefix.ends_with('-') && !prefix.is_empty() {
            prefix.push('-');
        }
        if prefix.len() >= MAX_SLUG - 9 - 1 {
            break;
        }
    }
    let prefix = prefix.trim_end_matches('-');
    let prefix = match prefix.as_bytes().first() {
        Some(c) if c.is_ascii_lowercase() => prefix.to_string(),
        Some(_) => format!("u{prefix}"),
        None => "u".to_string(),
    };
    let digest = Sha256::digest(id.as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ids_are_their_own_slug() {
        for id in ["alice", "bob_2", "_svc", "a-b-c", "x"] {
            assert_eq!(Tenant::parse(id).unwrap().slug, id);
        }
    }

    #[test]
    fn hostile_ids_are_refused() {
        let long = "a".repeat(300);
        let cases: &[(&str, TenantError)] = &[
            ("", TenantError::Empty),
            (&long, TenantError::TooLong(300)),
            ("a\0b", TenantError::ControlCharacter),
            ("a\nb", TenantError::ControlCharacter),
            ("../x", TenantError::PathLike("../x".into())),
            ("a/b", TenantError::PathLike("a/b".into())),
            ("..", TenantError::PathLike("..".into())),
            (".", TenantError::PathLike(".".into())),
            (".hidden", TenantError::PathLike(".hidden".into())),
            ("a\\b", TenantError::PathLike("a\\b".into())),
            ("root", TenantError::Reserved("root".into())),
            ("nobody", TenantError::Reserved("nobody".into())),
            (
                "eve-0123abcd",
                TenantError::LooksDerived("eve-0123abcd".into()),
            ),
        ];
        for (id, want) in cases {
            assert_eq!(Tenant::parse(id).unwrap_err(), *want, "id {id:?}");
        }
    }

    #[test]
    fn other_ids_get_a_deterministic_safe_slug() {
        let a = Tenant::parse("Alice@Example.com").unwrap();
        assert_eq!(a, Tenant::parse("Alice@Example.com").unwrap());
        assert!(a.slug.starts_with("alice-example-com-"), "{}", a.slug);
        for id in [
            "Root",
            "ROOT",
            "Zoë",
            "名前",
            "9lives",
            "a b",
            "-x",
            "A".repeat(64).as_str(),
        ] {
            let t = Tenant::parse(id).unwrap();
            assert!(is_plain_slug(&t.slug), "{id:?} -> {:?}", t.slug);
            assert!(!RESERVED.contains(&t.slug.as_str()), "{id:?}");
            assert!(has_derived_suffix(&t.slug), "{id:?} -> {:?}", t.slug);
        }
        assert_ne!(
            Tenant::parse("Root").unwrap().slug,
            Tenant::parse("ROOT").unwrap().slug
        );
    }

    #[test]
    fn workspace_stays_under_root() {
        let root = Path::new("/srv/ws");
        for id in ["alice", "Alice@Example.com", "名前", "a b"] {
            let t = Tenant::parse(id).unwrap();
            let p = t.workspace_in(root);
            assert_eq!(p.parent(), Some(root), "{id:?}");
            assert!(t.hostname().len() < 64);
        }
    }
}
