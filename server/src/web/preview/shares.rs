//! Share links for one preview (owner or admin API): not built yet, so a
//! share token is refused rather than half-checked.

use axum::response::Response;

use super::super::state::AppState;
use super::page;
use super::settings::Target;

pub async fn redeem(
    _app: &AppState,
    _target: &Target,
    _token: &str,
    _rest: &str,
    _https: bool,
) -> Response {
    page::forbidden("share links are not available on this server")
}

pub async fn still_valid(_app: &AppState, _target: &Target, _id: &str) -> bool {
    false
}
