//! HS256 JSON Web Tokens, the ~100 lines warren needs, written out.
//!
//! Why not the `jsonwebtoken` crate: version 11 needs a crypto backend, and
//! the two it offers cost more than this file does. `rust_crypto` pulls the
//! `rsa` crate, which carries RUSTSEC-2023-0071 (the Marvin timing attack) and
//! makes `cargo audit` fail even though warren only uses HS256; `aws_lc_rs`
//! builds a C library (docs/dependencies.md#q11-jwt). HS256 is HMAC-SHA-256
//! over `header.payload`, with `hmac` + `sha2` (RustCrypto) doing the
//! cryptography and `Mac::verify_slice` comparing in constant time.
//!
//! What is checked, in this order: three base64url parts; the header says
//! `"alg":"HS256"` (anything else, `none` included, is refused); the
//! signature; then the claims: `sub` a non-empty string, `exp` present and in
//! the future, `nbf` (if present) in the past, with [`LEEWAY_SECS`] of clock
//! skew allowed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;
/// Longest token looked at; anything longer is refused before decoding.
pub const MAX_TOKEN_LEN: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("token is not three base64url parts")]
    Malformed,
    #[error("token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    #[error("token algorithm must be HS256")]
    Algorithm,
    #[error("token signature does not match")]
    Signature,
    #[error("token claims are invalid: {0}")]
    Claims(&'static str),
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
}

/// The claims warren reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Deserialize)]
struct RawClaims {
    sub: Option<serde_json::Value>,
    exp: Option<serde_json::Value>,
    nbf: Option<serde_json::Value>,
}

/// Seconds since the epoch, now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC accepts any key length")
}

/// Signs a token for `user`, valid from now for `ttl`.
pub fn mint(secret: &[u8], user: &str, ttl: Duration) -> String {
    mint_at(secret, user, now_secs(), ttl)
}

/// Like [`mint`], with the issue time given (for tests).
pub fn mint_at(secret: &[u8], user: &str, iat: u64, ttl: Duration) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "sub": user,
        "iat": iat,
        "exp": iat.saturating_add(ttl.as_secs()),
    });
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let mut m = mac(secret);
    m.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

/// Checks a token against `secret` at time `now` (seconds since the epoch).
pub fn verify(secret: &[u8], token: &str, now: u64) -> Result<Claims, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header_json = URL_SAFE_NO_PAD.decode(h).map_err(|_| JwtError::Malformed)?;
    let header: Header = serde_json::from_slice(&header_json).map_err(|_| JwtError::Malformed)?;
    if header.alg != "HS256" {
        return Err(JwtError::Algorithm);
    }
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed)?;
    let mut m = mac(secret);
    m.update(h.as_bytes());
    m.update(b".");
    m.update(p.as_bytes());
    // Constant-time comparison.
    m.verify_slice(&sig).map_err(|_| JwtError::Signature)?;

    let payload = URL_SAFE_NO_PAD.decode(p).map_err(|_| JwtError::Malformed)?;
    let raw: RawClaims =
        serde_json::from_slice(&payload).map_err(|_| JwtError::Claims("not a JSON object"))?;
    let sub = match raw.sub {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s,
        _ => return Err(JwtError::Claims("\"sub\" must be a non-empty string")),
    };
    let exp = match raw.exp.as_ref().and_then(numeric_date) {
        Some(exp) => exp,
        None => return Err(JwtError::Claims("\"exp\" must be a number")),
    };
    if now > exp.saturating_add(LEEWAY_SECS) {
        return Err(JwtError::Expired);
    }
    if let Some(nbf) = raw.nbf {
        let nbf = numeric_date(&nbf).ok_or(JwtError::Claims("\"nbf\" must be a number"))?;
        if nbf > now.saturating_add(LEEWAY_SECS) {
            return Err(JwtError::NotYetValid);
        }
    }
    Ok(Claims { sub, exp })
}

/// A JWT NumericDate: seconds since the epoch, possibly with a fraction.
fn numeric_date(v: &serde_json::Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let f = v.as_f64()?;
    (f.is_finite() && f >= 0.0).then_some(f as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn forge(header: &str, claims: &str, secret: &[u8]) -> String {
        let h = URL_SAFE_NO_PAD.encode(header);
        let p = URL_SAFE_NO_PAD.encode(claims);
        let mut m = mac(secret);
        m.update(format!("{h}.{p}").as_bytes());
        let s = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
        format!("{h}.{p}.{s}")
    }

    #[test]
    fn round_trip() {
        let t = mint_at(SECRET, "alice", 1000, Duration::from_secs(60));
        assert_eq!(
            verify(SECRET, &t, 1010),
            Ok(Claims {
                sub: "alice".into(),
                exp: 1060
            })
        );
    }

    #[test]
    fn refuses_expired_and_early_tokens() {
        let t = mint_at(SECRET, "alice", 1000, Duration::from_secs(60));
        assert_eq!(
            verify(SECRET, &t, 1060 + LEEWAY_SECS + 1),
            Err(JwtError::Expired)
        );
        let early = forge(
            r#"{"alg":"HS256"}"#,
            r#"{"sub":"a","exp":5000,"nbf":4000}"#,
            SECRET,
        );
        assert_eq!(verify(SECRET, &early, 1000), Err(JwtError::NotYetValid));
        assert!(verify(SECRET, &early, 4000).is_ok());
    }

    #[test]
    fn refuses_wrong_secret_and_tampering() {
        let t = mint_at(SECRET, "alice", 1000, Duration::from_secs(60));
        assert_eq!(
            verify(b"another secret of enough length!", &t, 1010),
            Err(JwtError::Signature)
        );
        // Swap the payload for bob's, keep alice's signature.
        let bob = mint_at(SECRET, "bob", 1000, Duration::from_secs(60));
        let parts: Vec<&str> = t.split('.').collect();
        let bob_parts: Vec<&str> = bob.split('.').collect();
        let spliced = format!("{}.{}.{}", parts[0], bob_parts[1], parts[2]);
        assert_eq!(verify(SECRET, &spliced, 1010), Err(JwtError::Signature));
    }

    #[test]
    fn refuses_other_algorithms() {
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"sub":"alice","exp":99999999999}"#)
        );
        assert_eq!(verify(SECRET, &none, 1000), Err(JwtError::Algorithm));
        let hs512 = forge(r#"{"alg":"HS512"}"#, r#"{"sub":"a","exp":5000}"#, SECRET);
        assert_eq!(verify(SECRET, &hs512, 1000), Err(JwtError::Algorithm));
    }

    #[test]
    fn refuses_malformed_tokens_and_claims() {
        assert_eq!(verify(SECRET, "", 0), Err(JwtError::Malformed));
        assert_eq!(verify(SECRET, "a.b", 0), Err(JwtError::Malformed));
        assert_eq!(verify(SECRET, "a.b.c.d", 0), Err(JwtError::Malformed));
        assert_eq!(verify(SECRET, "!!.b.c", 0), Err(JwtError::Malformed));
        assert_eq!(
            verify(SECRET, &"a".repeat(MAX_TOKEN_LEN + 1), 0),
            Err(JwtError::TooLong)
        );
        let no_exp = forge(r#"{"alg":"HS256"}"#, r#"{"sub":"a"}"#, SECRET);
        assert!(matches!(
            verify(SECRET, &no_exp, 0),
            Err(JwtError::Claims(_))
        ));
        let no_sub = forge(r#"{"alg":"HS256"}"#, r#"{"exp":5000}"#, SECRET);
        assert!(matches!(
            verify(SECRET, &no_sub, 0),
            Err(JwtError::Claims(_))
        ));
        let num_sub = forge(r#"{"alg":"HS256"}"#, r#"{"sub":7,"exp":5000}"#, SECRET);
        assert!(matches!(
            verify(SECRET, &num_sub, 0),
            Err(JwtError::Claims(_))
        ));
        let float_exp = forge(r#"{"alg":"HS256"}"#, r#"{"sub":"a","exp":5000.5}"#, SECRET);
        assert!(verify(SECRET, &float_exp, 1000).is_ok());
    }
}
