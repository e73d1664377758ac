//! The page, its assets and the plain HTTP routes.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz() {
    let server = TestServer::start().await;
    let res = http_get(server.addr, "/healthz", &[]).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body, "ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_and_assets_are_served_from_the_binary() {
    let server = TestServer::start().await;
    let page = http_get(server.addr, "/", &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page.body.contains("/assets/xterm.js"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(page.header("x-frame-options"), Some("DENY"));

    for (name, content_type, contains) in [
        ("xterm.js", "text/javascript; charset=utf-8", "Terminal"),
        ("xterm.css", "text/css; charset=utf-8", ".xterm"),
        ("addon-fit.js", "text/javascript; charset=utf-8", "FitAddon"),
        ("app.js", "text/javascript; charset=utf-8", "warren.v1"),
        ("app.css", "text/css; charset=utf-8", "#terminal"),
        ("xterm.LICENSE.txt", "text/plain; charset=utf-8", "MIT"),
    ] {
        let res = http_get(server.addr, &format!("/assets/{name}"), &[]).await;
        assert_eq!(res.status, 200, "{name}");
        assert_eq!(res.header("content-type"), Some(content_type), "{name}");
        assert!(res.body.contains(contains), "{name} lacks {contains:?}");
    }
    let xterm = http_get(server.addr, "/assets/xterm.js", &[]).await;
    assert!(
        xterm.body_len > 100_000,
        "xterm.js is {} bytes",
        xterm.body_len
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_404() {
    let server = TestServer::start().await;
    for path in ["/nope", "/assets/nope.js", "/assets/../Cargo.toml"] {
        let res = http_get(server.addr, path, &[]).await;
        assert_eq!(res.status, 404, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_clears_the_cookie() {
    let server = TestServer::start().await;
    let res = http_get(server.addr, "/logout", &[]).await;
    assert_eq!(res.status, 303);
    assert!(res.header("set-cookie").unwrap().contains("Max-Age=0"));
}
