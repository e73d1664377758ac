//! Preview URLs with real sandboxes (docs/previews.md): an app started in
//! alice's sandbox is reached through `http://<port>-alice.localhost:<port>/`
//! by alice only; the terminal's origin and cookie give nothing of it; a
//! WebSocket passes through; a 100 MiB download streams with the server's
//! memory flat; "nothing listening", "not running", "unknown user" and
//! "bad port" are each their own status. Needs what sandboxes need;
//! tests/matrix.sh runs it in every mode.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket echo server in python3's standard library: answers each
/// text message with `echo:` and the message.
const WS_ECHO: &str = r#"import socket,hashlib,base64,threading,sys
G=b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
def h(c):
  d=b""
  while b"\r\n\r\n" not in d:
    x=c.recv(4096)
    if not x: return
    d+=x
  k=[l.split(b":",1)[1].strip() for l in d.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key:")][0]
  a=base64.b64encode(hashlib.sha1(k+G).digest())
  c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+a+b"\r\n\r\n")
  f=c.makefile("rb")
  while True:
    b=f.read(2)
    if len(b)<2: return
    op=b[0]&15; n=b[1]&127
    if n==126: n=int.from_bytes(f.read(2),"big")
    elif n==127: n=int.from_bytes(f.read(8),"big")
    m=f.read(4) if b[1]&128 else b"\0\0\0\0"
    p=bytes(x^m[i%4] for i,x in enumerate(f.read(n)))
    if op==8:
      c.sendall(b"\x88\x00"); return
    p=b"echo:"+p
    hd=bytes([0x80|op])+(bytes([len(p)]) if len(p)<126 else bytes([126])+len(p).to_bytes(2,"big"))
    c.sendall(hd+p)
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind(("127.0.0.1",int(sys.argv[1]))); s.listen()
while True:
  c,_=s.accept(); threading.Thread(target=h,args=(c,),daemon=True).start()
"#;

/// One HTTP/1.1 request with `Host: host` to the server at `addr`.
async fn get_as(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    http_request_to(addr, host, "GET", path, headers, "").await
}

fn preview_host(server: &TestServer, port: u16, user: &str) -> String {
    format!("{port}-{user}.localhost:{}", server.addr.port())
}

/// Goes through `/preview/auth` on the terminal's origin as the holder of
/// `session` and back to the preview host: the preview cookie's value.
async fn preview_cookie(server: &TestServer, session: &str, host: &str) -> String {
    let main = server.addr.to_string();
    let r = get_as(
        server.addr,
        &main,
        &format!("/preview/auth?host={host}&next=/"),
        &[("cookie", &cookie(session))],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let location = r.header("location").unwrap();
    let path = location
        .strip_prefix(&format!("http://{host}"))
        .unwrap_or_else(|| panic!("grant goes back to the preview host: {location}"));
    assert!(path.starts_with("/?warren_grant="), "{path}");
    let r = get_as(server.addr, host, path, &[]).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("/"));
    let set = r
        .header("set-cookie")
        .expect("a preview cookie")
        .to_string();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(
        !set.to_ascii_lowercase().contains("domain="),
        "host-only: {set}"
    );
    // The grant works once.
    let again = get_as(server.addr, host, path, &[]).await;
    assert_eq!(again.status, 403, "{}", again.body);
    set.split(';')
        .next()
        .unwrap()
        .strip_prefix("warren_preview=")
        .unwrap()
        .to_string()
}

fn preview(c: &str) -> String {
    format!("warren_preview={c}")
}

/// Waits until `path` through the preview answers 200.
async fn wait_for_app(server: &TestServer, host: &str, c: &str, path: &str) -> HttpResponse {
    let started = Instant::now();
    loop {
        let r = get_as(server.addr, host, path, &[("cookie", &preview(c))]).await;
        if r.status == 200 || started.elapsed() > Duration::from_secs(30) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_reaches_the_owners_app_and_nobody_elses() {
    let d = dirs();
    let server = api_server(&d).await;
    for u in ["alice", "bob", "carol"] {
        new_user(&server, u).await;
    }
    let mut term = server.open("alice").await;
    term.run(
        "mkdir -p ~/site && echo hello-from-alice > ~/site/index.html && \
         (cd ~/site && exec python3 -m http.server 8001 --bind 127.0.0.1 >/dev/null 2>&1 &) ; echo O''K",
        "OK",
    )
    .await;
    let alice = server.login("alice").await;
    let host = preview_host(&server, 8001, "alice");
    let c = preview_cookie(&server, &alice, &host).await;

    // The owner, with the preview cookie: the app's answer.
    let r = wait_for_app(&server, &host, &c, "/index.html").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body.trim(), "hello-from-alice");
    // The page's list: the port is open in alice's sandbox (and only there).
    let ports = api(server.addr, "GET", "/api/me/ports", Some(&alice), None).await;
    let ports = ports.json();
    assert_eq!(ports["running"], true, "{ports}");
    let open: Vec<_> = ports["ports"].as_array().unwrap().iter().collect();
    let p8001 = open
        .iter()
        .find(|p| p["port"] == 8001)
        .unwrap_or_else(|| panic!("{ports}"));
    assert_eq!(p8001["host"], host.as_str());
    let bob_ports = api(
        server.addr,
        "GET",
        "/api/me/ports",
        Some(&server.login("bob").await),
        None,
    )
    .await;
    assert_eq!(
        bob_ports.json()["ports"],
        serde_json::json!([]),
        "bob has no sandbox"
    );

    // The owner's token as a Bearer works too.
    let r = get_as(
        server.addr,
        &host,
        "/index.html",
        &[("authorization", &format!("Bearer {alice}"))],
    )
    .await;
    assert_eq!((r.status, r.body.trim()), (200, "hello-from-alice"));

    // Anonymous: sent through the terminal's origin, which asks for a login.
    let r = get_as(server.addr, &host, "/index.html", &[]).await;
    assert_eq!(r.status, 303);
    let location = r.header("location").unwrap();
    assert!(
        location.starts_with(&format!(
            "http://localhost:{}/preview/auth?host=",
            server.addr.port()
        )),
        "{location}"
    );
    assert!(!r.body.contains("hello-from-alice"));
    let r = get_as(
        server.addr,
        &server.addr.to_string(),
        &format!("/preview/auth?host={host}&next=/"),
        &[],
    )
    .await;
    assert_eq!((r.status, r.header("location")), (303, Some("/login")));

    // The terminal's session cookie is no credential on the preview host.
    let r = get_as(
        server.addr,
        &host,
        "/index.html",
        &[("cookie", &cookie(&alice))],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(!r.body.contains("hello-from-alice"));

    // The terminal's origin serves nothing of the app.
    let r = get_as(
        server.addr,
        &server.addr.to_string(),
        "/index.html",
        &[("cookie", &cookie(&alice))],
    )
    .await;
    assert_eq!(r.status, 404);
    assert!(!r.body.contains("hello-from-alice"));

    // bob: 403 through the main origin and with his token.
    let bob = server.login("bob").await;
    let r = get_as(
        server.addr,
        &server.addr.to_string(),
        &format!("/preview/auth?host={host}&next=/"),
        &[("cookie", &cookie(&bob))],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = get_as(
        server.addr,
        &host,
        "/index.html",
        &[("authorization", &format!("Bearer {bob}"))],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(!r.body.contains("hello-from-alice"));
    // A preview cookie is bound to its host: alice's for 8001 is not one for 8002.
    let other = preview_host(&server, 8002, "alice");
    let r = get_as(server.addr, &other, "/", &[("cookie", &preview(&c))]).await;
    assert_eq!(r.status, 303);

    // Nothing listening on 8002: its own status and words.
    let c2 = preview_cookie(&server, &alice, &other).await;
    let r = get_as(server.addr, &other, "/", &[("cookie", &preview(&c2))]).await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(
        r.body
            .contains("nothing is listening on port 8002 in alice&#39;s sandbox"),
        "{}",
        r.body
    );

    // carol's sandbox is not running, and a visit does not start it.
    let carol = server.login("carol").await;
    let ch = preview_host(&server, 8001, "carol");
    let cc = preview_cookie(&server, &carol, &ch).await;
    let r = get_as(server.addr, &ch, "/", &[("cookie", &preview(&cc))]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("not running"), "{}", r.body);
    assert!(server
        .state
        .registry()
        .sessions_of(&warren_domain::user::UserId::parse("carol").unwrap())
        .sandbox
        .is_none());

    // An unknown user, and a port that is none.
    let zed = server.login("zed").await;
    let zh = preview_host(&server, 8001, "zed");
    let zc = preview_cookie(&server, &zed, &zh).await;
    let r = get_as(server.addr, &zh, "/", &[("cookie", &preview(&zc))]).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = get_as(
        server.addr,
        &format!("0-alice.localhost:{}", server.addr.port()),
        "/",
        &[],
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = get_as(
        server.addr,
        &format!("70000-alice.localhost:{}", server.addr.port()),
        "/",
        &[],
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);

    // Counted.
    let m = api(server.addr, "GET", "/metrics", Some(ADMIN_TOKEN), None)
        .await
        .text();
    assert!(
        m.contains("warren_preview_requests_total{status=\"200\"}"),
        "{m}"
    );
    assert!(
        m.contains("warren_preview_bytes_total{direction=\"to_client\"}"),
        "{m}"
    );
    // The grants are in the audit log.
    let audit = admin(server.addr, "GET", "/api/audit?user=alice", None)
        .await
        .text();
    assert!(audit.contains("preview.grant"), "{audit}");
    drop(term);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_and_big_downloads_pass_through() {
    use base64::Engine as _;
    let d = dirs();
    let server = api_server(&d).await;
    new_user(&server, "alice").await;
    let mut term = server.open("alice").await;
    let script = base64::engine::general_purpose::STANDARD.encode(WS_ECHO);
    term.run(
        &format!(
            "mkdir -p ~/dl && echo {script} | base64 -d > ~/ws.py && head -c 100M /dev/zero > ~/dl/big && \
             (exec python3 ~/ws.py 8101 >/dev/null 2>&1 &) ; \
             (cd ~/dl && exec python3 -m http.server 8102 --bind 127.0.0.1 >/dev/null 2>&1 &) ; echo O''K"
        ),
        "OK",
    )
    .await;
    let alice = server.login("alice").await;

    // WebSocket echo through the preview.
    let ws_host = preview_host(&server, 8101, "alice");
    let c = preview_cookie(&server, &alice, &ws_host).await;
    let started = Instant::now();
    let mut ws = loop {
        let mut req = format!("ws://{ws_host}/").into_client_request().unwrap();
        req.headers_mut()
            .insert("cookie", HeaderValue::from_str(&preview(&c)).unwrap());
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        match tokio_tungstenite::client_async(req, tcp).await {
            Ok((ws, _)) => break ws,
            Err(e) if started.elapsed() < Duration::from_secs(30) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("websocket through the preview: {e}"),
        }
    };
    for msg in ["hello", "second"] {
        ws.send(Message::text(msg)).await.unwrap();
        let got = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(got.into_text().unwrap().as_str(), format!("echo:{msg}"));
    }
    let _ = ws.close(None).await;

    // 100 MiB streamed: the server's (this process's) memory stays flat.
    let dl_host = preview_host(&server, 8102, "alice");
    let c = preview_cookie(&server, &alice, &dl_host).await;
    let warm = wait_for_app(&server, &dl_host, &c, "/").await;
    assert_eq!(warm.status, 200, "{}", warm.body);
    let before = rss_kib();
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let req = format!(
        "GET /big HTTP/1.1\r\nHost: {dl_host}\r\nCookie: {}\r\nConnection: close\r\n\r\n",
        preview(&c)
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let (mut total, mut peak) = (0usize, before);
    let t = Instant::now();
    loop {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        total += n;
        if total % (8 << 20) < n {
            peak = peak.max(rss_kib());
        }
    }
    let took = t.elapsed();
    assert!(total > 100 << 20, "read {total} bytes");
    let grew = peak.saturating_sub(before);
    eprintln!("100 MiB through the preview in {took:?}; RSS {before} KiB -> peak {peak} KiB");
    assert!(
        grew < 32 << 10,
        "RSS grew by {grew} KiB while streaming 100 MiB"
    );
    drop(term);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_link_works_expires_and_can_be_revoked() {
    let d = dirs();
    let server = api_server(&d).await;
    new_user(&server, "alice").await;
    let mut term = server.open("alice").await;
    term.run(
        "mkdir -p ~/site && echo shared-by-alice > ~/site/index.html && \
         (cd ~/site && exec python3 -m http.server 8001 --bind 127.0.0.1 >/dev/null 2>&1 &) ; echo O''K",
        "OK",
    )
    .await;
    let alice = server.login("alice").await;
    let host = preview_host(&server, 8001, "alice");
    let owner = preview_cookie(&server, &alice, &host).await;
    assert_eq!(wait_for_app(&server, &host, &owner, "/").await.status, 200);

    let mine = "/api/me/previews/8001/shares";
    let make = |secs: u64| serde_json::to_vec(&serde_json::json!({ "expires_in": secs })).unwrap();
    // The expiry is required and bounded.
    for bad in [
        serde_json::to_vec(&serde_json::json!({})).unwrap(),
        make(5),
        make(40 * 24 * 3600),
    ] {
        let r = api(server.addr, "POST", mine, Some(&alice), Some(bad)).await;
        assert_eq!(r.status, 400, "{}", r.text());
    }
    assert_eq!(
        api(server.addr, "POST", mine, None, Some(make(60)))
            .await
            .status,
        401
    );

    // A visitor with no login at all gets in with the link, and keeps a
    // cookie for that host only.
    let visit = |url: &str| {
        let prefix = format!("http://{host}");
        url.strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{url} is not on {prefix}"))
            .to_string()
    };
    let r = api(server.addr, "POST", mine, Some(&alice), Some(make(3600))).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let long = r.json();
    let path = visit(long["url"].as_str().unwrap());
    let r = get_as(server.addr, &host, &path, &[]).await;
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/")),
        "{}",
        r.body
    );
    let set = r.header("set-cookie").unwrap();
    assert!(
        set.contains("HttpOnly") && !set.to_ascii_lowercase().contains("domain="),
        "{set}"
    );
    let shared = set
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("warren_preview=")
        .unwrap()
        .to_string();
    let r = get_as(
        server.addr,
        &host,
        "/index.html",
        &[("cookie", &preview(&shared))],
    )
    .await;
    assert_eq!((r.status, r.body.trim()), (200, "shared-by-alice"));
    // Not a key to other ports.
    let other = preview_host(&server, 8002, "alice");
    let r = get_as(
        server.addr,
        &other,
        &format!("/?{}", path.split('?').nth(1).unwrap()),
        &[],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);

    // Listed, then revoked: the link and the cookie it set stop at once.
    let list = api(server.addr, "GET", mine, Some(&alice), None)
        .await
        .json();
    assert_eq!(list["shares"].as_array().unwrap().len(), 1, "{list}");
    let id = long["id"].as_str().unwrap();
    let r = api(
        server.addr,
        "DELETE",
        &format!("{mine}/{id}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = get_as(
        server.addr,
        &host,
        "/index.html",
        &[("cookie", &preview(&shared))],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("expired or was revoked"), "{}", r.body);
    assert!(!r.body.contains("shared-by-alice"));
    assert_eq!(get_as(server.addr, &host, &path, &[]).await.status, 403);
    let list = api(server.addr, "GET", mine, Some(&alice), None)
        .await
        .json();
    assert_eq!(list["shares"][0]["active"], false, "{list}");

    // The admin makes one too; it expires by itself.
    let r = admin(
        server.addr,
        "POST",
        "/api/users/alice/previews/8001/shares",
        Some(serde_json::json!({ "expires_in": 10 })),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let short = r.json();
    assert_eq!(short["created_by"], "admin");
    let path = visit(short["url"].as_str().unwrap());
    let r = get_as(server.addr, &host, &path, &[]).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let c = r
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("warren_preview=")
        .unwrap()
        .to_string();
    assert_eq!(
        get_as(server.addr, &host, "/", &[("cookie", &preview(&c))])
            .await
            .status,
        200
    );
    tokio::time::sleep(Duration::from_secs(11)).await;
    let r = get_as(server.addr, &host, "/", &[("cookie", &preview(&c))]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(get_as(server.addr, &host, &path, &[]).await.status, 403);
    // The owner's own access is untouched.
    assert_eq!(
        get_as(server.addr, &host, "/", &[("cookie", &preview(&owner))])
            .await
            .status,
        200
    );

    let audit = admin(server.addr, "GET", "/api/audit?user=alice", None)
        .await
        .text();
    for action in [
        "preview.grant",
        "preview.share.create",
        "preview.share.revoke",
    ] {
        assert!(audit.contains(action), "{action}: {audit}");
    }
    drop(term);
}

/// The landlock tier shares the host's network: there is no namespace of
/// the sandbox's own to reach into, and a preview says so (never the
/// host's port of that number).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previews_are_unavailable_in_the_landlock_tier() {
    if warren_runtime::sys::landlock_abi() == 0 {
        let must_run = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
            || std::env::var("WARREN_MUST_RUN").is_ok_and(|v| v == "1");
        assert!(!must_run, "CI requires Landlock for the landlock tier");
        eprintln!("SKIP: this kernel has no Landlock: the landlock tier cannot run");
        return;
    }
    let d = dirs();
    let server = sandbox_server_in(&d, warren_runtime::spec::Isolation::Landlock).await;
    let term = server.open("alice").await;
    assert_eq!(term.hello.as_ref().unwrap()["tier"], "landlock");
    let alice = server.login("alice").await;
    // A port the host listens on, to be sure it is not what is reached.
    let host_app = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host_app.local_addr().unwrap().port();
    let host = preview_host(&server, port, "alice");
    let c = preview_cookie(&server, &alice, &host).await;
    let r = get_as(server.addr, &host, "/", &[("cookie", &preview(&c))]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.body.contains("shares the host&#39;s network"),
        "{}",
        r.body
    );
    drop(term);
}
