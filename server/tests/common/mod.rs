//! Test harness for `warren serve`: a [`TestServer`] on port 0 with the echo
//! backend (a real shell on a real PTY, no root needed) that stops when
//! dropped, a WebSocket [`Client`] speaking warren.v1, and a tiny HTTP/1.1
//! client. Every wait has a timeout: a broken server fails a test, it never
//! hangs it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use warren::web::{AppState, Auth, ServeConfig, Server, ShutdownHandle};
use warren_domain::backend::Backend;
use warren_domain::echo::EchoBackend;
use warren_domain::sessions::SessionLimits;

pub const LOGIN_TOKEN: &str = "test-login-token-0123456789abcdefghijklmnop";
pub const JWT_SECRET: &[u8] = b"test-jwt-secret-0123456789abcdefghijklmnop";
pub const WAIT: Duration = Duration::from_secs(30);

pub enum AuthKind {
    Token,
    Jwt,
    None,
}

pub struct Options {
    pub auth: AuthKind,
    pub limits: SessionLimits,
    pub allowed_origins: Vec<String>,
    pub backend: Arc<dyn Backend>,
    pub shutdown_timeout: Duration,
    /// The management API (`/api`, `/metrics`).
    pub management: Option<warren::web::Management>,
    /// Public URLs, connection caps, timeouts and pings.
    pub web: warren::web::WebSettings,
    /// This node in a pool (`--node-id`, `--max-users`, `--agent-listen`).
    pub node: warren::web::NodeConfig,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            auth: AuthKind::Token,
            limits: SessionLimits::default(),
            allowed_origins: Vec::new(),
            backend: Arc::new(EchoBackend::new()),
            shutdown_timeout: Duration::from_secs(5),
            management: None,
            web: Default::default(),
            node: Default::default(),
        }
    }
}

/// A server on 127.0.0.1:0, stopped on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The agent-check port, when `Options::node` asked for one.
    pub agent: Option<SocketAddr>,
    pub state: AppState,
    handle: ShutdownHandle,
    run: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::with(Options::default()).await
    }

    pub async fn with(opts: Options) -> TestServer {
        let auth = match opts.auth {
            AuthKind::Token => Auth::token(Some(LOGIN_TOKEN.into()), Duration::from_secs(3600)),
            AuthKind::Jwt => Auth::jwt(JWT_SECRET.to_vec()),
            AuthKind::None => Auth::none(),
        };
        let config = ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            auth,
            allowed_origins: opts.allowed_origins,
            limits: opts.limits,
            shutdown_timeout: opts.shutdown_timeout,
            management: opts.management,
            web: opts.web,
            node: opts.node,
        };
        let server = Server::bind(config, opts.backend).await.expect("bind");
        let addr = server.local_addr();
        let agent = server.agent_addr();
        let state = server.state().clone();
        let handle = server.shutdown_handle();
        let run = tokio::spawn(async move {
            server.run().await.expect("server run");
        });
        TestServer {
            addr,
            agent,
            state,
            handle,
            run: Some(run),
        }
    }

    /// Shuts down and waits for `run` to return (or panics after `limit`).
    pub async fn shutdown(mut self, limit: Duration) {
        self.handle.shutdown();
        let run = self.run.take().unwrap();
        tokio::time::timeout(limit, run)
            .await
            .expect("server did not stop in time")
            .expect("server task");
    }

    /// Logs `user` in through `/login` (token mode) and returns the session
    /// cookie's value.
    pub async fn login(&self, user: &str) -> String {
        let res = http_get(
            self.addr,
            &format!("/login?token={LOGIN_TOKEN}&user={user}"),
            &[],
        )
        .await;
        assert_eq!(res.status, 303, "login failed: {}", res.body);
        let cookie = res.header("set-cookie").expect("set-cookie");
        let value = cookie
            .split(';')
            .next()
            .unwrap()
            .strip_prefix("warren_session=")
            .unwrap();
        value.to_string()
    }

    /// Logs in and opens a new terminal.
    pub async fn open(&self, user: &str) -> Client {
        let session = self.login(user).await;
        let mut c = Client::connect(self.addr, "/ws", &[("cookie", &cookie(&session))])
            .await
            .expect("connect");
        c.expect_hello().await;
        c
    }

    /// Attaches to terminal `id` as `user`.
    pub async fn attach(&self, user: &str, id: &str) -> Client {
        let session = self.login(user).await;
        Client::connect(
            self.addr,
            &format!("/ws/{id}"),
            &[("cookie", &cookie(&session))],
        )
        .await
        .expect("connect")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

pub fn cookie(session: &str) -> String {
    format!("warren_session={session}")
}

/// What a client received.
#[derive(Debug)]
pub enum Event {
    Text(Value),
    Binary(Vec<u8>),
    Close(u16, String),
    /// The connection ended without a close frame.
    Gone,
}

/// A warren.v1 client.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// All terminal output received so far.
    pub output: Vec<u8>,
    /// Where the next `read_until` starts looking.
    cursor: usize,
    /// Control frames received while reading output.
    pub controls: Vec<Value>,
    pub hello: Option<Value>,
}

impl Client {
    /// Connects with the warren.v1 subprotocol and extra headers; an HTTP
    /// refusal comes back as `Err(status)`.
    pub async fn connect(
        addr: SocketAddr,
        path: &str,
        headers: &[(&'static str, &str)],
    ) -> Result<Client, u16> {
        let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
        req.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("warren.v1"),
        );
        for (k, v) in headers {
            req.headers_mut()
                .append(*k, HeaderValue::from_str(v).unwrap());
        }
        match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req)).await {
            Ok(Ok((ws, resp))) => {
                assert_eq!(
                    resp.headers()
                        .get("sec-websocket-protocol")
                        .map(|v| v.to_str().unwrap()),
                    Some("warren.v1")
                );
                Ok(Client {
                    ws,
                    output: Vec::new(),
                    cursor: 0,
                    controls: Vec::new(),
                    hello: None,
                })
            }
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
                Err(resp.status().as_u16())
            }
            Ok(Err(e)) => panic!("connect failed: {e}"),
            Err(_) => panic!("connect timed out"),
        }
    }

    /// The next event, within `WAIT`.
    pub async fn next_event(&mut self) -> Event {
        self.next_event_within(WAIT)
            .await
            .expect("timed out waiting for the server")
    }

    pub async fn next_event_within(&mut self, limit: Duration) -> Option<Event> {
        loop {
            let msg = match tokio::time::timeout(limit, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) | Ok(Some(Err(_))) => return Some(Event::Gone),
                Ok(Some(Ok(msg))) => msg,
            };
            return Some(match msg {
                Message::Text(t) => Event::Text(serde_json::from_str(&t).expect("JSON")),
                Message::Binary(b) => Event::Binary(b.to_vec()),
                Message::Close(Some(f)) => Event::Close(u16::from(f.code), f.reason.to_string()),
                Message::Close(None) => Event::Close(CloseCode::Status.into(), String::new()),
                _ => continue,
            });
        }
    }

    /// Reads the `hello` frame.
    pub async fn expect_hello(&mut self) -> Value {
        match self.next_event().await {
            Event::Text(v) if v["type"] == "hello" => {
                self.hello = Some(v.clone());
                v
            }
            other => panic!("expected hello, got {other:?}"),
        }
    }

    pub fn terminal_id(&self) -> String {
        self.hello.as_ref().expect("hello")["terminal"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Reads until the connection closes; returns the close code, reason and
    /// the control frames seen on the way.
    pub async fn expect_close(&mut self) -> (u16, String, Vec<Value>) {
        let mut texts = Vec::new();
        loop {
            match self.next_event().await {
                Event::Text(v) => texts.push(v),
                Event::Binary(b) => self.output.extend_from_slice(&b),
                Event::Close(code, reason) => return (code, reason, texts),
                Event::Gone => panic!("connection dropped without a close frame; saw {texts:?}"),
            }
        }
    }

    /// Reads output until `needle` appears (after the previous match);
    /// returns the text from the previous match to the end of this one.
    pub async fn read_until(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        // Only look at bytes not searched yet (plus an overlap), so reading
        // megabytes stays linear.
        let mut from = self.cursor;
        loop {
            if let Some(pos) = find(&self.output[from..], needle.as_bytes()) {
                let end = from + pos + needle.len();
                let text = String::from_utf8_lossy(&self.output[self.cursor..end]).into_owned();
                self.cursor = end;
                return text;
            }
            from = self
                .output
                .len()
                .saturating_sub(needle.len() - 1)
                .max(self.cursor);
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event_within(left).await {
                Some(Event::Binary(b)) => self.output.extend_from_slice(&b),
                Some(Event::Text(v)) => self.controls.push(v),
                Some(other) => panic!(
                    "waiting for {needle:?}: got {other:?}; output so far: {:?}",
                    String::from_utf8_lossy(&self.output[self.cursor..])
                ),
                None => panic!(
                    "timed out waiting for {needle:?}; output so far: {:?}",
                    String::from_utf8_lossy(&self.output[self.cursor..])
                ),
            }
        }
    }

    /// Reads until a control frame of `kind` arrives.
    pub async fn read_control(&mut self, kind: &str) -> Value {
        if let Some(i) = self.controls.iter().position(|v| v["type"] == kind) {
            return self.controls.remove(i);
        }
        loop {
            match self.next_event().await {
                Event::Binary(b) => self.output.extend_from_slice(&b),
                Event::Text(v) if v["type"] == kind => return v,
                Event::Text(v) => self.controls.push(v),
                other => panic!("waiting for a {kind} frame: got {other:?}"),
            }
        }
    }

    pub async fn send_input(&mut self, s: &str) {
        self.ws
            .send(Message::Binary(s.as_bytes().to_vec().into()))
            .await
            .expect("send");
    }

    pub async fn send_text(&mut self, s: &str) {
        self.ws.send(Message::Text(s.into())).await.expect("send");
    }

    /// Types a command line and waits for `marker` in the output.
    pub async fn run(&mut self, line: &str, marker: &str) -> String {
        self.send_input(&format!("{line}\r")).await;
        self.read_until(marker).await
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        // Let the server see the close.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }

    /// The raw stream, for tests that stop reading.
    pub fn ws(&mut self) -> &mut WebSocketStream<MaybeTlsStream<TcpStream>> {
        &mut self.ws
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A response from [`http_get`].
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub body_len: usize,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 request (`Connection: close`, body read to EOF).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    http_request_to(addr, &addr.to_string(), method, path, headers, body).await
}

/// [`http_request`] with its own `Host` header (a preview host, say).
#[allow(dead_code)] // not every test binary names another host
pub async fn http_request_to(
    addr: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("HTTP response timed out")
        .unwrap();
    let split = find(&raw, b"\r\n\r\n").expect("HTTP head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(body).into_owned(),
        body_len: body.len(),
    }
}

pub async fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    http_request(addr, "GET", path, headers, "").await
}

/// The test process's resident set size, in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

// --- Real sandboxes (the `sandbox` backend) ---

use std::path::PathBuf;
use warren_domain::sandbox::Settings;
use warren_domain::sandboxes::SandboxBackend;

/// A private state directory and workspace root.
pub struct Dirs {
    _tmp: tempfile::TempDir,
    pub settings: Settings,
}

pub fn dirs() -> Dirs {
    let tmp = tempfile::Builder::new()
        .prefix("warren-serve-")
        .tempdir()
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let settings = Settings {
        state_dir: tmp.path().join("state"),
        workspace_root: tmp.path().join("ws"),
        uid_base: 1_900_000_000,
    };
    Dirs {
        _tmp: tmp,
        settings,
    }
}

/// target/<profile>/warren-shim, built by `cargo build --workspace`.
pub fn shim() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let shim = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("warren-shim");
    assert!(
        shim.exists(),
        "{} is missing: run `cargo build --workspace` first",
        shim.display()
    );
    shim
}

/// A server whose terminals are real sandboxes (state and homes in `d`).
pub async fn sandbox_server(d: &Dirs) -> TestServer {
    sandbox_server_in(d, warren_runtime::spec::Isolation::Namespaces).await
}

/// A real-sandbox server with these cgroup limits and session limits.
pub async fn sandbox_server_with(
    d: &Dirs,
    limits: warren_runtime::cgroups::Limits,
    sessions: SessionLimits,
) -> TestServer {
    let backend = SandboxBackend::new(d.settings.clone(), limits, false).with_shim(shim());
    TestServer::with(Options {
        backend: Arc::new(backend),
        limits: sessions,
        ..Default::default()
    })
    .await
}

/// [`sandbox_server`] with sandboxes of another isolation tier.
pub async fn sandbox_server_in(d: &Dirs, isolation: warren_runtime::spec::Isolation) -> TestServer {
    let limits = warren_runtime::cgroups::Limits::default();
    let backend = SandboxBackend::new(d.settings.clone(), limits, false)
        .with_shim(shim())
        .with_isolation(isolation);
    TestServer::with(Options {
        backend: Arc::new(backend),
        ..Default::default()
    })
    .await
}

/// Small import limits, so the hostile set's "too many entries" archive
/// stays small.
pub const IMPORT_LIMITS: warren_runtime::archive::ArchiveLimits =
    warren_runtime::archive::ArchiveLimits {
        max_bytes: 64 << 20,
        max_entries: 1000,
        max_entry_bytes: 64 << 20,
    };

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdefghijklmnop";

/// The management API settings for a server over `d`.
pub fn management(d: &Dirs) -> warren::web::Management {
    warren::web::Management {
        settings: d.settings.clone(),
        defaults: warren_runtime::cgroups::Limits::default(),
        admin_token: ADMIN_TOKEN.into(),
        admin_token_file: None,
        import_limits: IMPORT_LIMITS,
        disk: Default::default(),
        services: Default::default(),
    }
}

/// A real-sandbox server with the management API.
pub async fn api_server(d: &Dirs) -> TestServer {
    let limits = warren_runtime::cgroups::Limits::default();
    let backend = SandboxBackend::new(d.settings.clone(), limits, false).with_shim(shim());
    TestServer::with(Options {
        backend: Arc::new(backend),
        management: Some(management(d)),
        ..Default::default()
    })
    .await
}

/// An HTTP response with a binary body.
pub struct ApiResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl ApiResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A blocking HTTP call (ureq) run off the async threads. `token`: the
/// Bearer token, if any.
pub async fn api(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> ApiResponse {
    let url = format!("http://{addr}{path}");
    let method = method.to_string();
    let token = token.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let mut req = ureq::http::Request::builder()
            .method(method.as_str())
            .uri(&url);
        if let Some(t) = &token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let res = match body {
            Some(b) => {
                let req = req
                    .header("content-type", "application/json")
                    .body(b)
                    .unwrap();
                agent.run(req)
            }
            None => agent.run(req.body(()).unwrap()),
        }
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = res.status().as_u16();
        let content_type = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = res
            .into_body()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .unwrap_or_default();
        ApiResponse {
            status,
            content_type,
            body,
        }
    })
    .await
    .unwrap()
}

/// Creates `user` through the API (a new one: 201).
pub async fn new_user(server: &TestServer, user: &str) {
    let r = admin(
        server.addr,
        "POST",
        "/api/users",
        Some(serde_json::json!({ "id": user })),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
}

/// `api` with the admin token and a JSON body.
pub async fn admin(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> ApiResponse {
    api(
        addr,
        method,
        path,
        Some(ADMIN_TOKEN),
        body.map(|b| serde_json::to_vec(&b).unwrap()),
    )
    .await
}
