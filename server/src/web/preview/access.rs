//! Who may see a preview: its owner, and visitors holding a share link.
//!
//! The preview host never accepts the terminal's session cookie (a
//! host-only cookie of the terminal's origin, which the browser does not
//! send here anyway). A visit without a preview cookie is sent once
//! through the terminal's origin, `GET /preview/auth?host=H&next=P`
//! ([`grant`]), which uses the normal login: anonymous visitors get the
//! login redirect, other users 403, the owner a one-time grant (a token
//! signed with the preview key, bound to that host, valid a minute) on
//! the way back to `H` as `?warren_grant=`. The preview host trades it for
//! a cookie scoped to itself only (host-only, HttpOnly, SameSite=Lax,
//! Secure over https) and redirects to `P`. Scripts may also send the
//! user's own token as `Authorization: Bearer`. Preview tokens are signed
//! with a key derived for them alone, so none is ever a session and no
//! session is one of them.

use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::super::auth::{AuthMode, Credentials};
use super::super::jwt;
use super::super::state::AppState;
use super::cookies::{cookie, over_https, preview_cookie, see_other, warren_bearer, with_cookie};
use super::settings::{classify, HostKind, Previews, Target};
use super::{page, proxy};

/// The query parameter carrying a one-time grant back to the preview host.
pub const GRANT_PARAM: &str = "warren_grant";
/// The query parameter carrying a share link's token.
pub const SHARE_PARAM: &str = "warren_share";
/// How long a grant may take to come back.
const GRANT_TTL: Duration = Duration::from_secs(60);
/// How long a preview cookie lives.
const COOKIE_TTL: Duration = Duration::from_secs(12 * 3600);

/// Why a visitor does not get the preview.
enum Denied {
    /// No credential: send them through the terminal's origin.
    Anonymous,
    /// A credential of another user.
    OtherUser,
    /// A preview cookie or share that no longer holds.
    Invalid(&'static str),
}

/// A request to a preview host: trade a grant or share token for a cookie,
/// or check the visitor, then proxy.
pub async fn visit(app: &AppState, target: &Target, req: Request) -> Response {
    let previews = app.previews();
    if let Some((param, token, rest)) = take_param(req.uri()) {
        let https = over_https(req.headers());
        return match param {
            GRANT_PARAM => match previews.redeem_grant(&token, &target.name) {
                Ok(()) => with_cookie(&rest, previews.owner_cookie(&target.name, https)),
                Err(why) => page::forbidden(why),
            },
            _ => super::shares::redeem(app, target, &token, &rest, https).await,
        };
    }
    match check(app, target, req.headers()).await {
        Ok(()) => proxy::forward(app, target, req).await,
        Err(Denied::Anonymous) => {
            let next = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let location = format!(
                "{}/preview/auth?host={}&next={}",
                previews.main_origin(&target.authority),
                encode(&target.authority),
                encode(next)
            );
            see_other(&location, None)
        }
        Err(Denied::OtherUser) => page::forbidden(&format!(
            "this preview belongs to {}; ask them for a share link",
            target.user
        )),
        Err(Denied::Invalid(why)) => page::forbidden(why),
    }
}

/// The visitor's credential on the preview host: a preview cookie for
/// this host (the owner's, or a share's that still holds), or a Bearer
/// token of the owner. A Bearer that is not warren's is the app's own.
async fn check(app: &AppState, target: &Target, headers: &HeaderMap) -> Result<(), Denied> {
    if app.auth().mode() == AuthMode::None {
        return Ok(()); // no login at all (loopback only): nothing to check
    }
    let cookie = match preview_cookie(headers) {
        Some(c) => app.previews().read_cookie(c, &target.name),
        None => None,
    };
    match cookie {
        Some(CookieFor::Owner) => return Ok(()),
        Some(CookieFor::Share(id)) => {
            return match super::shares::still_valid(app, target, &id).await {
                true => Ok(()),
                false => Err(Denied::Invalid(
                    "this share link has expired or was revoked",
                )),
            }
        }
        // None, expired, or another host's or server's: ask again.
        None => {}
    }
    match warren_bearer(app.auth(), headers) {
        Some(user) if user == target.user => Ok(()),
        Some(_) => Err(Denied::OtherUser),
        None => Err(Denied::Anonymous),
    }
}

/// Whom a valid preview cookie was given to.
pub enum CookieFor {
    Owner,
    Share(String),
}

impl Previews {
    /// A one-time grant for `name` (the owner passed the login).
    pub fn mint_grant(&self, name: &str) -> String {
        let nonce: String = warren_domain::random::random_token();
        jwt::mint(&self.key, &format!("grant|{name}|{nonce}"), GRANT_TTL)
    }

    /// Checks a grant for `name` and uses it up.
    fn redeem_grant(&self, token: &str, name: &str) -> Result<(), &'static str> {
        const BAD: &str = "this preview link is invalid or has expired; open it again";
        let now = jwt::now_secs();
        let claims = jwt::verify(&self.key, token, now).map_err(|_| BAD)?;
        let nonce = claims
            .sub
            .strip_prefix(&format!("grant|{name}|"))
            .ok_or(BAD)?;
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        used.retain(|_, exp| *exp + jwt::LEEWAY_SECS >= now);
        match used.insert(nonce.to_string(), claims.exp) {
            None => Ok(()),
            Some(_) => Err("this preview link was used already; open it again"),
        }
    }

    fn owner_cookie(&self, name: &str, https: bool) -> String {
        let token = jwt::mint(&self.key, &format!("owner|{name}"), COOKIE_TTL);
        cookie(&token, COOKIE_TTL.as_secs(), https)
    }

    /// The preview cookie of a share `id` for `name`, living `ttl`.
    pub fn share_cookie(&self, name: &str, id: &str, ttl: Duration, https: bool) -> String {
        let ttl = ttl.min(COOKIE_TTL);
        let token = jwt::mint(&self.key, &format!("share|{name}|{id}"), ttl);
        cookie(&token, ttl.as_secs(), https)
    }

    fn read_cookie(&self, value: &str, name: &str) -> Option<CookieFor> {
        let claims = jwt::verify(&self.key, value, jwt::now_secs()).ok()?;
        let (kind, rest) = claims.sub.split_once('|')?;
        match kind {
            "owner" if rest == name => Some(CookieFor::Owner),
            "share" => {
                let (host, id) = rest.rsplit_once('|')?;
                (host == name).then(|| CookieFor::Share(id.to_string()))
            }
            _ => None,
        }
    }

    /// The key share links are signed with, when there is one.
    pub fn share_key(&self) -> Option<&[u8; 32]> {
        self.share_key.as_ref()
    }
}

/// The grant or share parameter of `uri`, its value, and the path and
/// query without it.
fn take_param(uri: &axum::http::Uri) -> Option<(&'static str, String, String)> {
    let query = uri.query()?;
    let mut found = None;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            GRANT_PARAM if found.is_none() => found = Some((GRANT_PARAM, v.to_string())),
            SHARE_PARAM if found.is_none() => found = Some((SHARE_PARAM, v.to_string())),
            _ => kept.push(pair),
        }
    }
    let (param, token) = found?;
    let rest = match kept.is_empty() {
        true => uri.path().to_string(),
        false => format!("{}?{}", uri.path(), kept.join("&")),
    };
    Some((param, token, rest))
}

/// Percent-encodes everything but unreserved characters.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Deserialize)]
pub struct GrantParams {
    host: String,
    next: Option<String>,
}

/// `GET /preview/auth?host=H&next=P` on the terminal's origin: the normal
/// login decides; the owner goes back to `H` with a one-time grant.
pub async fn grant(
    State(app): State<AppState>,
    Query(p): Query<GrantParams>,
    headers: HeaderMap,
) -> Response {
    let previews = app.previews();
    let target = match classify(&previews.settings.domain, &p.host) {
        HostKind::Preview(t) => t,
        _ => {
            return super::super::error::HttpError::BadRequest(format!(
                "{:?} is not a preview host of this server",
                p.host
            ))
            .into_response()
        }
    };
    // Only a path of that host: never a way to send a grant elsewhere.
    let next = p
        .next
        .filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.starts_with("/\\"))
        .unwrap_or_else(|| "/".into());
    let creds = Credentials::from_request(&headers, None, None);
    let user = match app.auth().mode() {
        AuthMode::None => target.user.clone(),
        _ => match app.auth().authenticate(&creds) {
            Ok(u) => u,
            Err(_) => return see_other("/login", None),
        },
    };
    if user != target.user {
        app.audit_preview(&user, "preview.denied", &target, "denied");
        return page::forbidden(&format!(
            "this preview belongs to {}; ask them for a share link",
            target.user
        ));
    }
    app.audit_preview(&user, "preview.grant", &target, "ok");
    let scheme = match over_https(&headers)
        || previews
            .main_origin(&target.authority)
            .starts_with("https:")
    {
        true => "https",
        false => "http",
    };
    let sep = if next.contains('?') { '&' } else { '?' };
    let location = format!(
        "{scheme}://{}{next}{sep}{GRANT_PARAM}={}",
        target.authority,
        previews.mint_grant(&target.name)
    );
    see_other(&location, None)
}
