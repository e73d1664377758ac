//! The `Host` check against DNS rebinding (issue 10 §3): a page at a
//! rebound name sends `Host: attacker.example:PORT` and a matching
//! `Origin`; it gets 421 for the WebSocket, the page, the login and the
//! API, in every auth mode, and nothing happens. Requests naming the
//! server (127.0.0.1, localhost, a --public-url) still work.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

/// A raw HTTP/1.1 request with the given `Host` header; returns the status
/// and the body.
async fn request_as(addr: SocketAddr, host: &str, path: &str, extra: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("response timed out")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

/// A WebSocket handshake with the given `Host` and `Origin`: the HTTP
/// status if refused, or the first frame's `type` if upgraded.
async fn websocket_as(
    addr: SocketAddr,
    host: &str,
    path: &str,
    cookie: Option<&str>,
) -> Result<String, u16> {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    let h = req.headers_mut();
    h.insert("host", HeaderValue::from_str(host).unwrap());
    h.insert(
        "origin",
        HeaderValue::from_str(&format!("http://{host}")).unwrap(),
    );
    h.insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("warren.v1"),
    );
    if let Some(c) = cookie {
        h.insert("cookie", HeaderValue::from_str(c).unwrap());
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("handshake timed out")
    {
        Ok((mut ws, _)) => {
            let first = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
            match first {
                Some(Ok(Message::Text(t))) => {
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                    Ok(v["type"].as_str().unwrap_or_default().to_string())
                }
                other => Ok(format!("{other:?}")),
            }
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("handshake failed: {e}"),
    }
}

/// Credentials for each auth mode: (a WebSocket path, a cookie).
async fn credentials(server: &TestServer, auth: &str) -> (String, Option<String>) {
    match auth {
        "token" => (
            "/ws".to_string(),
            Some(cookie(&server.login("alice").await)),
        ),
        "jwt" => {
            let t = warren::web::mint_token(JWT_SECRET, "alice", Duration::from_secs(600));
            (format!("/ws?token={t}"), None)
        }
        _ => ("/ws?user=alice".to_string(), None),
    }
}

fn kind(auth: &str) -> AuthKind {
    match auth {
        "token" => AuthKind::Token,
        "jwt" => AuthKind::Jwt,
        _ => AuthKind::None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebinding_requests_are_refused_in_every_auth_mode() {
    for auth in ["token", "jwt", "none"] {
        let server = TestServer::with(Options {
            auth: kind(auth),
            ..Options::default()
        })
        .await;
        let port = server.addr.port();
        let (ws_path, cookie) = credentials(&server, auth).await;
        let evil = format!("attacker.example:{port}");

        let refused = websocket_as(server.addr, &evil, &ws_path, cookie.as_deref()).await;
        assert_eq!(refused, Err(421), "{auth}: the WebSocket");
        assert_eq!(
            server.state.registry().sandbox_count(),
            0,
            "{auth}: nothing started"
        );
        for path in [
            "/",
            "/assets/app.js",
            &format!("/login?token={LOGIN_TOKEN}&user=alice"),
            "/api/users",
            "/metrics",
            "/nope",
        ] {
            let (status, body) = request_as(server.addr, &evil, path, "").await;
            assert_eq!(status, 421, "{auth}: {path}: {body}");
            assert!(body.contains("not this server's name"), "{body}");
        }
        // A foreign absolute-form target behind our own Host: refused.
        let (status, _) = request_as(
            server.addr,
            &format!("127.0.0.1:{port}"),
            &format!("http://{evil}/"),
            "",
        )
        .await;
        assert_eq!(status, 421, "{auth}: absolute-form target");
        // An HTTP/1.0 request without any Host is refused too.
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        assert!(raw.starts_with(b"HTTP/1.0 421") || raw.starts_with(b"HTTP/1.1 421"));

        // The server's own names still work, with the same credentials.
        for host in [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ] {
            let (status, _) = request_as(server.addr, &host, "/", "").await;
            assert_eq!(status, 200, "{auth}: {host}");
        }
        let hello = websocket_as(
            server.addr,
            &format!("localhost:{port}"),
            &ws_path,
            cookie.as_deref(),
        )
        .await;
        assert_eq!(hello.as_deref(), Ok("hello"), "{auth}");
        // Health checks come with any Host (load balancers' probes).
        let (status, body) = request_as(server.addr, &evil, "/healthz", "").await;
        assert_eq!((status, body.as_str()), (200, "ok\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_url_is_this_servers_name_and_origin() {
    let server = TestServer::with(Options {
        web: warren::web::WebSettings {
            public_urls: vec!["https://term.example.com".into()],
            ..Default::default()
        },
        ..Options::default()
    })
    .await;
    let (status, _) = request_as(server.addr, "term.example.com", "/", "").await;
    assert_eq!(status, 200);
    let (status, _) = request_as(server.addr, "other.example.com", "/", "").await;
    assert_eq!(status, 421);
    // Behind a proxy that rewrites Host, the public origin is still ours.
    let session = server.login("alice").await;
    let mut c = Client::connect(
        server.addr,
        "/ws",
        &[
            ("cookie", &cookie(&session)),
            ("origin", "https://term.example.com"),
        ],
    )
    .await
    .expect("the public URL's origin may open a terminal");
    c.expect_hello().await;
}
