//! The proxy: one HTTP/1.1 exchange (or one upgraded connection) relayed
//! to a port inside the sandbox, over a stream from its connector.
//!
//! Bodies stream both ways (nothing is buffered whole); `Upgrade` requests
//! (WebSockets) are upgraded on both sides and then copied both ways.
//! Hop-by-hop headers stop here (RFC 9110 §7.6.1), and the app never sees
//! warren's own credentials: its cookies and a Bearer `Authorization`.
//! Responses may not set cookies for a wider domain (which could reach
//! the terminal's origin).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{
    self, HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONNECTION, COOKIE, SET_COOKIE,
    UPGRADE,
};
use axum::http::{StatusCode, Version};
use axum::response::Response;
use futures_util::StreamExt;
use hyper_util::rt::TokioIo;
use warren_domain::backend::PortError;

use super::super::auth::SESSION_COOKIE;
use super::super::metrics::Metrics;
use super::super::state::AppState;
use super::cookies::PREVIEW_COOKIE;
use super::page;
use super::settings::Target;

/// Proxies `req` to the target's port in its user's running sandbox.
pub async fn forward(app: &AppState, target: &Target, mut req: Request) -> Response {
    let user = target.user.as_str();
    let Some(sandbox) = app.registry().sessions_of(&target.user).sandbox else {
        if let Some(m) = app.manager() {
            let m = Arc::clone(m);
            let id = user.to_string();
            let known = tokio::task::spawn_blocking(move || m.show(&id).is_ok())
                .await
                .unwrap_or(true);
            if !known {
                return page::unknown_user(user);
            }
        }
        return page::not_running(user);
    };
    let stream = match sandbox.connect_port(target.port).await {
        Ok(s) => s,
        Err(PortError::NotListening(p)) => return page::not_listening(p, user),
        Err(PortError::NotRunning) => return page::not_running(user),
        Err(PortError::Unavailable(why)) => return page::unavailable(user, why),
        Err(e) => {
            tracing::warn!(user, port = target.port, "preview: {e}");
            return page::internal();
        }
    };
    let stream = match tokio::net::TcpStream::from_std(stream) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("preview: {e}");
            return page::internal();
        }
    };
    let upgrade = wants_upgrade(req.headers());
    // warren's own token stays here; an app's own Bearer passes.
    let strip_bearer = super::cookies::warren_bearer(app.auth(), req.headers()).is_some();
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!("preview handshake: {e}");
            return page::internal();
        }
    };
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let metrics = Arc::clone(app.metrics());
    let upstream = to_upstream(req, upgrade, strip_bearer, target, Arc::clone(&metrics));
    let mut res = match sender.send_request(upstream).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!("preview upstream: {e}");
            return page::upstream_failed(target.port, user);
        }
    };
    if res.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return page::upstream_failed(target.port, user);
        };
        let upstream_upgrade = hyper::upgrade::on(&mut res);
        tokio::spawn(splice(client_upgrade, upstream_upgrade, metrics));
        let (mut parts, _) = res.into_parts();
        strip_hop_by_hop(&mut parts.headers, true);
        return Response::from_parts(parts, Body::empty());
    }
    let (mut parts, body) = res.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    drop_wide_cookies(&mut parts.headers);
    let counted = Body::new(body).into_data_stream().inspect(move |chunk| {
        if let Ok(b) = chunk {
            metrics.preview_bytes("to_client", b.len());
        }
    });
    Response::from_parts(parts, Body::from_stream(counted))
}

/// Relays an upgraded connection both ways until either side closes.
async fn splice(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    metrics: Arc<Metrics>,
) {
    let (Ok(client), Ok(upstream)) = (client.await, upstream.await) else {
        return;
    };
    let (mut a, mut b) = (TokioIo::new(client), TokioIo::new(upstream));
    if let Ok((up, down)) = tokio::io::copy_bidirectional(&mut a, &mut b).await {
        metrics.preview_bytes("from_client", up as usize);
        metrics.preview_bytes("to_client", down as usize);
    }
}

/// The request as the app gets it: origin-form target, HTTP/1.1, no
/// hop-by-hop headers, none of warren's credentials, a counted body.
fn to_upstream(
    req: Request,
    upgrade: bool,
    strip_bearer: bool,
    target: &Target,
    metrics: Arc<Metrics>,
) -> hyper::Request<Body> {
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    parts.uri = path
        .parse()
        .unwrap_or_else(|_| "/".parse().expect("a valid uri"));
    parts.version = Version::HTTP_11;
    let h = &mut parts.headers;
    strip_hop_by_hop(h, upgrade);
    strip_credentials(h, strip_bearer);
    if !h.contains_key(header::HOST) {
        if let Ok(v) = HeaderValue::from_str(&target.authority) {
            h.insert(header::HOST, v);
        }
    }
    h.insert(
        HeaderName::from_static("x-forwarded-host"),
        HeaderValue::from_str(&target.authority).unwrap_or(HeaderValue::from_static("")),
    );
    let counted = body.into_data_stream().inspect(move |chunk| {
        if let Ok(b) = chunk {
            metrics.preview_bytes("from_client", b.len());
        }
    });
    hyper::Request::from_parts(parts, Body::from_stream(counted))
}

fn wants_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(UPGRADE) && connection_tokens(h).iter().any(|t| t == "upgrade")
}

fn connection_tokens(h: &HeaderMap) -> Vec<String> {
    h.get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1) and those `Connection`
/// names; an upgrade keeps `Connection: upgrade` and `Upgrade`.
fn strip_hop_by_hop(h: &mut HeaderMap, upgrade: bool) {
    for name in connection_tokens(h) {
        if upgrade && name == "upgrade" {
            continue;
        }
        if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
            h.remove(n);
        }
    }
    for name in [
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
    ] {
        h.remove(name);
    }
    if upgrade {
        h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        h.remove(CONNECTION);
        h.remove(UPGRADE);
    }
}

/// Takes out warren's cookies and, when it is warren's, the Bearer
/// `Authorization` (other tokens and schemes are the app's own).
fn strip_credentials(h: &mut HeaderMap, strip_bearer: bool) {
    let kept: Vec<String> = h
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(n, _)| n);
            !pair.is_empty() && name != PREVIEW_COOKIE && name != SESSION_COOKIE
        })
        .map(str::to_string)
        .collect();
    h.remove(COOKIE);
    if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
        if !kept.is_empty() {
            h.insert(COOKIE, v);
        }
    }
    let bearer = h
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"));
    if bearer && strip_bearer {
        h.remove(AUTHORIZATION);
    }
}

/// Drops `Set-Cookie`s with a `Domain` (they would reach other hosts, the
/// terminal's among them) or naming warren's own cookies.
fn drop_wide_cookies(h: &mut HeaderMap) {
    let kept: Vec<HeaderValue> = h
        .get_all(SET_COOKIE)
        .iter()
        .filter(|v| {
            let s = v.to_str().unwrap_or("").to_ascii_lowercase();
            let name = s.split('=').next().unwrap_or("").trim().to_string();
            let wide = s.split(';').skip(1).any(|a| a.trim().starts_with("domain"));
            !wide && name != PREVIEW_COOKIE && name != SESSION_COOKIE
        })
        .cloned()
        .collect();
    h.remove(SET_COOKIE);
    for v in kept {
        h.append(SET_COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warren_credentials_and_hop_headers_stay_here() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_static("a=1; warren_preview=x; warren_session=y"),
        );
        h.append(COOKIE, HeaderValue::from_static("b=2"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer secret"));
        h.insert(
            CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h, false);
        strip_credentials(&mut h, true);
        assert_eq!(h.get(COOKIE).unwrap(), "a=1; b=2");
        assert!(h.get(AUTHORIZATION).is_none());
        assert!(h.get("x-private").is_none() && h.get("te").is_none());
        assert!(h.get(CONNECTION).is_none());
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic dTpw"));
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        strip_credentials(&mut h, true);
        assert_eq!(h.get(AUTHORIZATION).unwrap(), "Basic dTpw");
        assert_eq!(h.get(UPGRADE).unwrap(), "websocket");
        // A Bearer that is not warren's is the app's own.
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Bearer the-apps-own"),
        );
        strip_credentials(&mut h, false);
        assert_eq!(h.get(AUTHORIZATION).unwrap(), "Bearer the-apps-own");
    }

    #[test]
    fn wide_cookies_are_dropped() {
        let mut h = HeaderMap::new();
        for c in [
            "mine=1; Path=/",
            "wide=1; Domain=example.com",
            "warren_session=evil; Path=/",
            "Warren_Preview=x",
        ] {
            h.append(SET_COOKIE, HeaderValue::from_static(c));
        }
        drop_wide_cookies(&mut h);
        let left: Vec<_> = h.get_all(SET_COOKIE).iter().collect();
        assert_eq!(left, vec!["mine=1; Path=/"]);
    }
}
