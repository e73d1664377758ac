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
//! * Refused with an error: the empty id, ids over 64 characters, control
//!   characters, invisible characters ([`INVISIBLE`]: format characters
//!   such as the bidi overrides, separators other than the space, fillers,
//!   variation selectors and tags), a leading or trailing space, anything
//!   path-like (`/`, `\`, a leading `.`, `..`), reserved names (`root`,
//!   `nobody`, …) and plain ids that end like a hashed slug (`-` and 8 hex
//!   digits), so a chosen id can never collide with a derived one.
//!
//! docs/openapi.json states the same rule as a pattern; server/tests/openapi.rs
//! checks the two agree.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest accepted user id, in characters (Unicode scalar values, what
/// JSON Schema's `maxLength` counts; at most 256 bytes).
pub const MAX_ID_CHARS: usize = 64;
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
    #[error("user id is {0} characters long; the limit is {MAX_ID_CHARS}")]
    TooLong(usize),
    #[error("user id contains a NUL or control character")]
    ControlCharacter,
    #[error(
        "user id contains the invisible or format character U+{0:04X} \
         (bidi controls, zero-width characters and separators other than the space are refused)"
    )]
    Invisible(u32),
    #[error("user id starts or ends with a space")]
    EdgeSpace,
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
        let chars = id.chars().count();
        if chars > MAX_ID_CHARS {
            return Err(TenantError::TooLong(chars));
        }
        if id.chars().any(char::is_control) {
            return Err(TenantError::ControlCharacter);
        }
        if let Some(c) = id.chars().find(|c| is_invisible(*c)) {
            return Err(TenantError::Invisible(c as u32));
        }
        if id.starts_with(' ') || id.ends_with(' ') {
            return Err(TenantError::EdgeSpace);
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

/// Characters an id may not hold although they are not controls: they
/// render as nothing or reorder what is shown (CVE-2021-42574, "Trojan
/// Source"), so two ids that look alike in a log, the audit trail or a
/// terminal title could differ. Inclusive ranges: Unicode's format
/// characters (Cf), the separators other than U+0020 (Zs, Zl, Zp),
/// fillers, variation selectors and the noncharacters U+FFFE/U+FFFF.
pub const INVISIBLE: &[(char, char)] = &[
    ('\u{00A0}', '\u{00A0}'),
    ('\u{00AD}', '\u{00AD}'),
    ('\u{034F}', '\u{034F}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{06DD}', '\u{06DD}'),
    ('\u{070F}', '\u{070F}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08E2}', '\u{08E2}'),
    ('\u{115F}', '\u{1160}'),
    ('\u{1680}', '\u{1680}'),
    ('\u{17B4}', '\u{17B5}'),
    ('\u{180B}', '\u{180F}'),
    ('\u{2000}', '\u{200F}'),
    ('\u{2028}', '\u{202F}'),
    ('\u{205F}', '\u{206F}'),
    ('\u{3000}', '\u{3000}'),
    ('\u{3164}', '\u{3164}'),
    ('\u{FE00}', '\u{FE0F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFA0}', '\u{FFA0}'),
    ('\u{FFF0}', '\u{FFFB}'),
    ('\u{FFFE}', '\u{FFFF}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0000}', '\u{E0FFF}'),
];

fn is_invisible(c: char) -> bool {
    INVISIBLE.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c))
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
        let wide = "名".repeat(65);
        let cases: &[(&str, TenantError)] = &[
            ("", TenantError::Empty),
            (&long, TenantError::TooLong(300)),
            (&wide, TenantError::TooLong(65)),
            ("a\0b", TenantError::ControlCharacter),
            ("a\nb", TenantError::ControlCharacter),
            (" ", TenantError::EdgeSpace),
            (" alice", TenantError::EdgeSpace),
            ("alice ", TenantError::EdgeSpace),
            ("al\u{202E}ice", TenantError::Invisible(0x202E)),
            ("a\u{200B}b", TenantError::Invisible(0x200B)),
            ("a\u{00A0}b", TenantError::Invisible(0xA0)),
            ("\u{FEFF}bob", TenantError::Invisible(0xFEFF)),
            ("a\u{E0041}", TenantError::Invisible(0xE0041)),
            ("a\u{2066}b", TenantError::Invisible(0x2066)),
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
            "名".repeat(64).as_str(),
            "a  b",
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
