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
    // The page names xterm.js by its content-hashed name (issue 16).
    let xterm_hashed = hashed_name(&page.body, "xterm", "js");
    assert!(page.body.contains(&format!("/assets/{xterm_hashed}")));
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

/// The `/assets/<stem>.<hash>.<ext>` name the page uses for `<stem>.<ext>`.
fn hashed_name(page: &str, stem: &str, ext: &str) -> String {
    let prefix = format!("\"/assets/{stem}.");
    let name = page
        .match_indices(&prefix)
        .map(|(i, _)| {
            let start = i + "\"/assets/".len();
            &page[start..start + page[start..].find('"').unwrap()]
        })
        .find(|n| n.ends_with(&format!(".{ext}")))
        .unwrap_or_else(|| panic!("the page names no {stem}.*.{ext}:\n{page}"));
    let hash = name
        .strip_prefix(&format!("{stem}."))
        .and_then(|n| n.strip_suffix(&format!(".{ext}")))
        .unwrap_or_else(|| panic!("{name} is not {stem}.<hash>.{ext}"));
    assert!(
        hash.len() == 12 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "{name}"
    );
    name.to_string()
}

/// The page's scripts and styles (issue 16): hashed names cached for a
/// year as immutable, sent brotli- or gzip-compressed as the client
/// accepts, and the bytes a first load transfers, printed for
/// docs/serve.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assets_are_hashed_cached_and_precompressed() {
    let server = TestServer::start().await;
    let page = http_get(server.addr, "/", &[]).await;
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    let mut sizes = [0usize; 3]; // identity, gzip, br
    for (stem, ext) in [
        ("xterm", "js"),
        ("xterm", "css"),
        ("addon-fit", "js"),
        ("app", "js"),
        ("app", "css"),
    ] {
        let name = hashed_name(&page.body, stem, ext);
        let path = format!("/assets/{name}");
        let plain = http_get(server.addr, &path, &[]).await;
        assert_eq!(plain.status, 200, "{name}");
        assert_eq!(plain.header("content-encoding"), None, "{name}");
        assert_eq!(
            plain.header("cache-control"),
            Some("public, max-age=31536000, immutable"),
            "{name}"
        );
        assert_eq!(plain.header("vary"), Some("accept-encoding"), "{name}");
        // The same bytes as under the plain name, which is revalidated.
        let unhashed = http_get(server.addr, &format!("/assets/{stem}.{ext}"), &[]).await;
        assert_eq!(unhashed.body, plain.body, "{name}");
        assert_eq!(unhashed.header("cache-control"), Some("no-cache"));
        for (i, accept, coding) in [(1, "gzip", "gzip"), (2, "gzip, deflate, br", "br")] {
            let res = http_get(server.addr, &path, &[("accept-encoding", accept)]).await;
            assert_eq!(res.status, 200, "{name} {accept}");
            assert_eq!(res.header("content-encoding"), Some(coding), "{name}");
            assert!(
                res.body_len < plain.body_len,
                "{name}: {coding} is no smaller"
            );
            sizes[i] += res.body_len;
        }
        sizes[0] += plain.body_len;
    }
    let other = http_get(server.addr, "/assets/xterm.000000000000.js", &[]).await;
    assert_eq!(other.status, 404, "a hash that is not the content's");
    let html = page.body_len;
    println!(
        "a first load transfers {} bytes uncompressed, {} with gzip, {} with brotli \
         (the page {html} bytes included, uncompressed); brotli/identity {:.3}",
        sizes[0] + html,
        sizes[1] + html,
        sizes[2] + html,
        (sizes[2] + html) as f64 / (sizes[0] + html) as f64
    );
    assert!(
        (sizes[2] + html) * 3 < sizes[0] + html,
        "brotli saves less than 2/3"
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
