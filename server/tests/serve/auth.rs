//! Login, session cookies, JWTs and the Origin check.

use std::time::Duration;

use warren::web::jwt;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credentials_close_4401() {
    let server = TestServer::start().await;
    let mut c = Client::connect(server.addr, "/ws", &[]).await.unwrap();
    let (code, reason, texts) = c.expect_close().await;
    assert_eq!(code, 4401);
    assert!(reason.contains("not logged in"), "{reason}");
    assert_eq!(texts[0]["type"], "error");
    // Nothing was started.
    assert_eq!(server.state.registry().sandbox_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_with_the_token_sets_a_strict_http_only_cookie() {
    let server = TestServer::start().await;
    let wrong = http_get(server.addr, "/login?token=nope&user=alice", &[]).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("set-cookie").is_none());
    let missing = http_get(server.addr, "/login", &[]).await;
    assert_eq!(missing.status, 401);

    let ok = http_get(
        server.addr,
        &format!("/login?token={LOGIN_TOKEN}&user=alice"),
        &[],
    )
    .await;
    assert_eq!(ok.status, 303);
    assert_eq!(ok.header("location"), Some("/"));
    let set_cookie = ok.header("set-cookie").unwrap();
    assert!(set_cookie.starts_with("warren_session="));
    assert!(set_cookie.contains("HttpOnly"));
    assert!(set_cookie.contains("SameSite=Strict"));
    assert_eq!(ok.header("referrer-policy"), Some("no-referrer"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_without_a_user_asks_for_one() {
    let server = TestServer::start().await;
    let form = http_get(server.addr, &format!("/login?token={LOGIN_TOKEN}"), &[]).await;
    assert_eq!(form.status, 200);
    assert!(form.body.contains("name=\"user\""));
    // Token mode says what it is (issue 16).
    assert!(
        form.body
            .contains("Anyone with this link can open a shell as any user name"),
        "{}",
        form.body
    );
    assert!(form.header("set-cookie").is_none());
    // A bad name: the form again, with the reason.
    let bad = http_get(
        server.addr,
        &format!("/login?token={LOGIN_TOKEN}&user=root"),
        &[],
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("reserved"), "{}", bad.body);
    // The form posts token and user.
    let posted = http_request(
        server.addr,
        "POST",
        "/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        &format!("token={LOGIN_TOKEN}&user=carol"),
    )
    .await;
    assert_eq!(posted.status, 303);
    assert!(posted.header("set-cookie").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cookie_opens_a_terminal_as_that_user() {
    let server = TestServer::start().await;
    let mut c = server.open("alice").await;
    let hello = c.hello.clone().unwrap();
    assert_eq!(hello["user"], "alice");
    assert_eq!(hello["protocol"], "warren.v1");
    assert_eq!(hello["tier"], "none");
    c.run("echo I am $USER-$((1+1))", "I am alice-2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_token_itself_is_not_a_session() {
    let server = TestServer::start().await;
    for headers in [
        vec![("authorization", format!("Bearer {LOGIN_TOKEN}"))],
        vec![("cookie", cookie(LOGIN_TOKEN))],
    ] {
        let h: Vec<(&'static str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut c = Client::connect(server.addr, "/ws", &h).await.unwrap();
        assert_eq!(c.expect_close().await.0, 4401);
    }
    let mut c = Client::connect(server.addr, &format!("/ws?token={LOGIN_TOKEN}"), &[])
        .await
        .unwrap();
    assert_eq!(c.expect_close().await.0, 4401);
}

fn jwt_opts() -> Options {
    Options {
        auth: AuthKind::Jwt,
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_from_bearer_query_or_cookie() {
    let server = TestServer::with(jwt_opts()).await;
    let token = warren::web::mint_token(JWT_SECRET, "bob", Duration::from_secs(600));
    let bearer = format!("Bearer {token}");
    let mut c = Client::connect(server.addr, "/ws", &[("authorization", &bearer)])
        .await
        .unwrap();
    assert_eq!(c.expect_hello().await["user"], "bob");
    c.close().await;

    let mut c = Client::connect(server.addr, &format!("/ws?token={token}"), &[])
        .await
        .unwrap();
    assert_eq!(c.expect_hello().await["user"], "bob");
    c.close().await;

    // /login?token=JWT turns it into a cookie.
    let res = http_get(server.addr, &format!("/login?token={token}"), &[]).await;
    assert_eq!(res.status, 303);
    let set_cookie = res.header("set-cookie").unwrap().to_string();
    let value = set_cookie.split(';').next().unwrap().to_string();
    let mut c = Client::connect(server.addr, "/ws", &[("cookie", &value)])
        .await
        .unwrap();
    assert_eq!(c.expect_hello().await["user"], "bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_expired_jwts_are_refused() {
    let server = TestServer::with(jwt_opts()).await;
    let wrong_key = warren::web::mint_token(
        b"another-secret-0123456789abcdefghijkl",
        "bob",
        Duration::from_secs(600),
    );
    let expired = jwt::mint_at(
        JWT_SECRET,
        "bob",
        jwt::now_secs() - 7200,
        Duration::from_secs(3600),
    );
    for (token, why) in [
        (wrong_key.as_str(), "signature"),
        (expired.as_str(), "expired"),
        ("garbage", "three base64url parts"),
    ] {
        let bearer = format!("Bearer {token}");
        let mut c = Client::connect(server.addr, "/ws", &[("authorization", &bearer)])
            .await
            .unwrap();
        let (code, reason, _) = c.expect_close().await;
        assert_eq!(code, 4401, "{why}");
        assert!(reason.contains(why), "{reason:?} should say {why}");
    }
    let res = http_get(server.addr, &format!("/login?token={expired}"), &[]).await;
    assert_eq!(res.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_websocket_is_refused_before_the_upgrade() {
    let server = TestServer::with(Options {
        allowed_origins: vec!["https://term.example.com".into()],
        ..Options::default()
    })
    .await;
    let session = server.login("alice").await;
    let cookie = cookie(&session);
    let refused = Client::connect(
        server.addr,
        "/ws",
        &[("cookie", &cookie), ("origin", "http://evil.example")],
    )
    .await;
    assert_eq!(refused.err(), Some(403));
    let refused = Client::connect(
        server.addr,
        "/ws",
        &[("cookie", &cookie), ("origin", "null")],
    )
    .await;
    assert_eq!(refused.err(), Some(403));
    assert_eq!(server.state.registry().sandbox_count(), 0);

    let own = format!("http://{}", server.addr);
    let mut c = Client::connect(server.addr, "/ws", &[("cookie", &cookie), ("origin", &own)])
        .await
        .unwrap();
    c.expect_hello().await;
    let mut c = Client::connect(
        server.addr,
        "/ws",
        &[("cookie", &cookie), ("origin", "https://term.example.com")],
    )
    .await
    .unwrap();
    c.expect_hello().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_none_takes_the_user_from_the_url() {
    let server = TestServer::with(Options {
        auth: AuthKind::None,
        ..Options::default()
    })
    .await;
    let mut c = Client::connect(server.addr, "/ws?user=dave", &[])
        .await
        .unwrap();
    assert_eq!(c.expect_hello().await["user"], "dave");
    let mut c = Client::connect(server.addr, "/ws?user=..%2Fetc", &[])
        .await
        .unwrap();
    assert_eq!(c.expect_close().await.0, 4401);
}
