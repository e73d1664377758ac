//! Share links on the preview host: `?warren_share=<token>` (signed with
//! the share key, naming the link's record) becomes a preview cookie for
//! that host while the link holds; every later request checks the record
//! again, so a revocation takes effect at once.

use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;

use super::super::jwt;
use super::super::state::AppState;
use super::cookies::with_cookie;
use super::page;
use super::settings::{Previews, Target};

impl Previews {
    /// The token of share `id` of `user`'s `port`, valid until `expires_at`.
    pub fn share_token(&self, user: &str, port: u16, id: &str, expires_at: i64) -> Option<String> {
        let key = self.share_key.as_ref()?;
        let ttl = (expires_at - jwt::now_secs() as i64).max(0) as u64;
        Some(jwt::mint(
            key,
            &format!("share|{user}|{port}|{id}"),
            Duration::from_secs(ttl),
        ))
    }

    /// The share id a token names for `target`, if it is one for it.
    fn share_id(&self, token: &str, target: &Target) -> Option<String> {
        let key = self.share_key.as_ref()?;
        let claims = jwt::verify(key, token, jwt::now_secs()).ok()?;
        let rest =
            claims
                .sub
                .strip_prefix(&format!("share|{}|{}|", target.user.as_str(), target.port))?;
        Some(rest.to_string())
    }
}

const GONE: &str = "this share link has expired or was revoked";

/// `?warren_share=<token>` on the preview host.
pub async fn redeem(
    app: &AppState,
    target: &Target,
    token: &str,
    rest: &str,
    https: bool,
) -> Response {
    let previews = app.previews();
    let Some(id) = previews.share_id(token, target) else {
        return page::forbidden(GONE);
    };
    let Some(share) = lookup(app, target, &id).await else {
        return page::forbidden(GONE);
    };
    let ttl = (share.expires_at - jwt::now_secs() as i64).max(1) as u64;
    let cookie = previews.share_cookie(&target.name, &id, Duration::from_secs(ttl), https);
    with_cookie(rest, cookie)
}

/// Whether share `id` of the target still holds.
pub async fn still_valid(app: &AppState, target: &Target, id: &str) -> bool {
    lookup(app, target, id).await.is_some()
}

async fn lookup(
    app: &AppState,
    target: &Target,
    id: &str,
) -> Option<warren_domain::state::PreviewShare> {
    let m = Arc::clone(app.manager()?);
    let (user, port, id) = (
        target.user.as_str().to_string(),
        target.port,
        id.to_string(),
    );
    tokio::task::spawn_blocking(move || m.valid_share(&user, port, &id))
        .await
        .ok()?
        .ok()
        .flatten()
}
