//! Who is asking: login, session cookies and the credentials a WebSocket
//! carries. docs/serve.md explains the modes for operators.
//!
//! Every mode ends in the same place: a request is authenticated by an HS256
//! token whose `sub` is the user id (see [`super::jwt`]), found in, by
//! precedence, an `Authorization: Bearer` header, a `?token=` query parameter
//! (browsers cannot set headers on a WebSocket) or the `warren_session`
//! cookie.
//!
//! * `token` (default): the server makes a random login token at start and
//!   prints `http://HOST/login?token=T`. Whoever has T picks a user name
//!   (`&user=alice`, or the form the login page shows) and gets a session
//!   cookie: a token signed with a key that exists only in this process's
//!   memory, so a restart logs everybody out, as it changes T. Several people
//!   share one server, each with their own user.
//! * `jwt`: tokens are minted elsewhere (`warren token --user alice`, or any
//!   HS256 issuer sharing the secret file); `/login?token=JWT` turns one into a
//!   cookie for the browser.
//! * `none`: no credentials, the user comes from `?user=` (default `local`).
//!   Refused unless the server listens on a loopback address.
//!
//! The login token is compared in constant time; no token ever reaches a log.

use std::time::Duration;

use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::HeaderMap;
use subtle::ConstantTimeEq;
use warren_runtime::tenant::TenantError;

use warren_domain::random::{random_bytes, random_token};

use super::jwt::{self, JwtError};
use warren_domain::user::UserId;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "warren_session";
/// The user of `--auth none` when the URL names none.
pub const DEFAULT_LOCAL_USER: &str = "local";

/// How `warren serve` authenticates (`--auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// A random login token printed at start; each person picks a user name.
    Token,
    /// HS256 tokens signed with --jwt-secret-file; `sub` is the user id.
    Jwt,
    /// No authentication; only on a loopback address.
    None,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("not logged in")]
    Missing,
    #[error(transparent)]
    Token(#[from] JwtError),
    #[error("wrong login token")]
    WrongLoginToken,
    #[error("invalid user id: {0}")]
    User(#[from] TenantError),
    #[error("a user name is needed")]
    NeedUser,
}

/// What a successful login gives the browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: UserId,
    /// The cookie's value: a token (never log it).
    pub token: String,
    /// Seconds the cookie lives.
    pub max_age: u64,
}

impl Session {
    /// The `Set-Cookie` header value. HttpOnly: page scripts never see it;
    /// SameSite=Strict: other sites cannot make the browser send it.
    pub fn set_cookie(&self) -> String {
        format!(
            "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
            self.token, self.max_age
        )
    }
}

/// The `Set-Cookie` value that logs a browser out.
pub fn clear_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The credentials one request carries.
#[derive(Debug, Default, Clone, Copy)]
pub struct Credentials<'a> {
    pub bearer: Option<&'a str>,
    pub query_token: Option<&'a str>,
    pub cookie: Option<&'a str>,
    /// `?user=`, used only by `--auth none`.
    pub query_user: Option<&'a str>,
}

impl<'a> Credentials<'a> {
    pub fn from_request(
        headers: &'a HeaderMap,
        query_token: Option<&'a str>,
        query_user: Option<&'a str>,
    ) -> Credentials<'a> {
        let bearer = headers
            .get_all(AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            });
        let cookie = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (name, value) = pair.trim().split_once('=')?;
                (name == SESSION_COOKIE && !value.is_empty()).then_some(value)
            });
        Credentials {
            bearer,
            query_token: query_token.filter(|t| !t.is_empty()),
            cookie,
            query_user,
        }
    }

    fn token(&self) -> Option<&'a str> {
        self.bearer.or(self.query_token).or(self.cookie)
    }
}

enum Mode {
    Token {
        login_token: String,
        session_key: [u8; 32],
        session_ttl: Duration,
    },
    Jwt {
        secret: Vec<u8>,
    },
    None,
}

/// The server's authenticator (one per server).
pub struct Auth {
    mode: Mode,
}

impl std::fmt::Debug for Auth {
    // Hand-written so that no secret can reach a log through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("mode", &self.mode())
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// `--auth token`: `login_token` (or a random one) opens `/login`;
    /// sessions last `session_ttl`.
    pub fn token(login_token: Option<String>, session_ttl: Duration) -> Auth {
        Auth {
            mode: Mode::Token {
                login_token: login_token.unwrap_or_else(random_token),
                session_key: random_bytes(),
                session_ttl,
            },
        }
    }

    /// `--auth jwt` with the shared HS256 secret.
    pub fn jwt(secret: Vec<u8>) -> Auth {
        Auth {
            mode: Mode::Jwt { secret },
        }
    }

    /// `--auth none` (the caller checks for a loopback address).
    pub fn none() -> Auth {
        Auth { mode: Mode::None }
    }

    pub fn mode(&self) -> AuthMode {
        match self.mode {
            Mode::Token { .. } => AuthMode::Token,
            Mode::Jwt { .. } => AuthMode::Jwt,
            Mode::None => AuthMode::None,
        }
    }

    /// A key for `purpose` derived from this server's signing key
    /// (HMAC-SHA-256 of the purpose), so tokens made with it are never
    /// sessions and sessions are never they. `--auth none` has no key: a
    /// random one, for this process only.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        use hmac::Mac;
        let base: Vec<u8> = match &self.mode {
            Mode::Token { session_key, .. } => session_key.to_vec(),
            Mode::Jwt { secret } => secret.clone(),
            Mode::None => random_bytes::<32>().to_vec(),
        };
        let mut m = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&base)
            .expect("HMAC accepts any key length");
        m.update(purpose.as_bytes());
        m.finalize().into_bytes().into()
    }

    /// The login token of `--auth token` (for the printed login URL).
    pub fn login_token(&self) -> Option<&str> {
        match &self.mode {
            Mode::Token { login_token, .. } => Some(login_token),
            _ => None,
        }
    }

    /// The user a request acts as.
    pub fn authenticate(&self, creds: &Credentials<'_>) -> Result<UserId, AuthError> {
        let key = match &self.mode {
            Mode::None => {
                return Ok(UserId::parse(
                    creds.query_user.unwrap_or(DEFAULT_LOCAL_USER),
                )?)
            }
            Mode::Token { session_key, .. } => &session_key[..],
            Mode::Jwt { secret } => &secret[..],
        };
        let token = creds.token().ok_or(AuthError::Missing)?;
        let claims = jwt::verify(key, token, jwt::now_secs())?;
        Ok(UserId::parse(&claims.sub)?)
    }

    /// `/login`: checks `token` and returns the session to set as a cookie.
    /// In token mode `user` picks the user ([`AuthError::NeedUser`] when
    /// absent: show the form); in jwt mode the token's `sub` is the user.
    pub fn login(&self, token: &str, user: Option<&str>) -> Result<Session, AuthError> {
        match &self.mode {
            Mode::Token {
                login_token,
                session_key,
                session_ttl,
            } => {
                if !bool::from(login_token.as_bytes().ct_eq(token.as_bytes())) {
                    return Err(AuthError::WrongLoginToken);
                }
                let user = user
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .ok_or(AuthError::NeedUser)?;
                let user = UserId::parse(user)?;
                Ok(Session {
                    token: jwt::mint(session_key, user.as_str(), *session_ttl),
                    user,
                    max_age: session_ttl.as_secs(),
                })
            }
            Mode::Jwt { secret } => {
                let now = jwt::now_secs();
                let claims = jwt::verify(secret, token, now)?;
                Ok(Session {
                    user: UserId::parse(&claims.sub)?,
                    token: token.to_string(),
                    max_age: claims.exp.saturating_sub(now),
                })
            }
            Mode::None => Err(AuthError::Missing),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn token_mode_login_then_cookie() {
        let auth = Auth::token(Some("T".repeat(43)), Duration::from_secs(3600));
        assert!(matches!(
            auth.login("wrong", Some("alice")),
            Err(AuthError::WrongLoginToken)
        ));
        assert!(matches!(
            auth.login(&"T".repeat(43), None),
            Err(AuthError::NeedUser)
        ));
        assert!(matches!(
            auth.login(&"T".repeat(43), Some("../x")),
            Err(AuthError::User(_))
        ));
        let s = auth.login(&"T".repeat(43), Some("alice")).unwrap();
        assert_eq!(s.user.as_str(), "alice");
        let cookie = s.set_cookie();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));

        let h = headers(&[("cookie", &format!("a=b; {SESSION_COOKIE}={}", s.token))]);
        let user = auth
            .authenticate(&Credentials::from_request(&h, None, None))
            .unwrap();
        assert_eq!(user.as_str(), "alice");
        // The login token itself is not a session.
        let h = headers(&[("authorization", &format!("Bearer {}", "T".repeat(43)))]);
        assert!(auth
            .authenticate(&Credentials::from_request(&h, None, None))
            .is_err());
        // Nothing at all.
        assert!(matches!(
            auth.authenticate(&Credentials::default()),
            Err(AuthError::Missing)
        ));
    }

    #[test]
    fn jwt_mode_accepts_bearer_query_and_cookie() {
        let secret = b"0123456789abcdef0123456789abcdef".to_vec();
        let auth = Auth::jwt(secret.clone());
        let t = jwt::mint(&secret, "bob", Duration::from_secs(60));
        for creds in [
            headers(&[("authorization", &format!("bearer {t}"))]),
            headers(&[("cookie", &format!("{SESSION_COOKIE}={t}"))]),
        ] {
            let c = Credentials::from_request(&creds, None, None);
            assert_eq!(auth.authenticate(&c).unwrap().as_str(), "bob");
        }
        let empty = HeaderMap::new();
        let c = Credentials::from_request(&empty, Some(&t), None);
        assert_eq!(auth.authenticate(&c).unwrap().as_str(), "bob");
        let s = auth.login(&t, Some("ignored")).unwrap();
        assert_eq!(s.user.as_str(), "bob");
        assert!(s.max_age <= 60);
        // A token whose sub is not a valid user id.
        let bad = jwt::mint(&secret, "root", Duration::from_secs(60));
        let c = Credentials::from_request(&empty, Some(&bad), None);
        assert!(matches!(auth.authenticate(&c), Err(AuthError::User(_))));
    }

    #[test]
    fn none_mode_takes_the_user_from_the_url() {
        let auth = Auth::none();
        let c = Credentials {
            query_user: Some("carol"),
            ..Default::default()
        };
        assert_eq!(auth.authenticate(&c).unwrap().as_str(), "carol");
        assert_eq!(
            auth.authenticate(&Credentials::default()).unwrap().as_str(),
            DEFAULT_LOCAL_USER
        );
    }

    #[test]
    fn debug_output_has_no_secret() {
        let auth = Auth::token(Some("supersecret".into()), Duration::from_secs(1));
        assert!(!format!("{auth:?}").contains("supersecret"));
    }
}
