//! `warren serve` benchmark: connect-to-prompt latency, output throughput,
//! keystroke echo latency and memory per idle terminal, with real sandboxes
//! (the `sandbox` backend) beside the `echo` backend (plain shells, no
//! sandbox) measured in the same run as the anchor.
//!
//!     cargo build --release --workspace && target/release/bench-serve
//!
//! The bench starts `warren serve` itself (the `warren` next to this
//! executable) on a free port of 127.0.0.1 with `--auth jwt`, a secret and a
//! state directory in a temporary directory, talks `warren.v1` to it over
//! WebSockets, and stops it with SIGTERM. Every server runs fresh: one per
//! backend for latency and throughput, one per backend for memory.
//!
//! Options (defaults in brackets): `--connections N` \[50\], `--keystrokes N`
//! \[200\], `--mib N` \[200\], `--users N` \[20\], `--terminals-per-user N` \[10\],
//! `--only sandbox|echo`, `--keep` (keep the temporary directory with
//! the servers' logs), `--deflate` (warren's connections offer
//! permessage-deflate, as browsers do, through yawc's client; without it
//! they offer nothing, through tungstenite's), `--idle-terminals N` (instead
//! of the rest: the scale run, N idle terminals of the echo backend, then
//! keystroke echo on one more, against the same echo with none idle).
//! The sandbox backend needs what `warren run`
//! needs (root here). docs/bench-serve.md has figures and the method.
//!
//! `--idle-sandboxes N,N,…` (e.g. `0,1000,2000`) measures only a new
//! user's first terminal (the cold open that starts the sandbox) with that
//! many idle sandboxes up, for `--new-users N` \[20\] users at each step,
//! on one server (`--network none`: pasta would not fit 2,000 times), beside
//! the echo backend and terminado at 0.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream as StdTcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// `--deflate`: warren's terminals are opened offering permessage-deflate.
static DEFLATE: AtomicBool = AtomicBool::new(false);

/// A client connection: tungstenite's (no extension), or yawc's offering
/// permessage-deflate; both seen as tungstenite messages.
enum Ws {
    Plain(Box<WebSocketStream<MaybeTlsStream<TcpStream>>>),
    Deflate(Box<yawc::WebSocket<TcpStream>>),
}

impl Ws {
    async fn next(&mut self) -> Option<Result<Message, String>> {
        match self {
            Ws::Plain(ws) => ws.next().await.map(|r| r.map_err(|e| e.to_string())),
            Ws::Deflate(ws) => ws.next().await.map(|f| {
                Ok(match f.opcode() {
                    yawc::OpCode::Binary => Message::Binary(f.into_payload()),
                    yawc::OpCode::Text => {
                        Message::Text(String::from_utf8_lossy(f.payload()).into_owned().into())
                    }
                    yawc::OpCode::Close => Message::Close(None),
                    yawc::OpCode::Ping => Message::Ping(f.into_payload()),
                    _ => Message::Pong(f.into_payload()),
                })
            }),
        }
    }

    async fn send(&mut self, m: Message) -> Result<(), String> {
        match self {
            Ws::Plain(ws) => ws.send(m).await.map_err(|e| e.to_string()),
            Ws::Deflate(ws) => {
                let f = match m {
                    Message::Binary(b) => yawc::Frame::binary(b),
                    Message::Text(t) => yawc::Frame::text(t.as_str().to_owned()),
                    _ => return Ok(()),
                };
                ws.send(f).await.map_err(|e| e.to_string())
            }
        }
    }
}

/// Opens `/ws` with yawc's client offering permessage-deflate (zlib's
/// fastest level, as the server uses; messages under 256 bytes plain, as a
/// browser's keystrokes are small). Whether the server agreed is its
/// answer's business: warren's is checked by server/tests/serve/protocol.rs.
async fn connect_deflate(addr: SocketAddr, path: &str, token: &str) -> Res<Ws> {
    let url: url::Url = format!("ws://{addr}{path}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let io = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = io.set_nodelay(true);
    let req = tokio_tungstenite::tungstenite::http::Request::builder()
        .header("sec-websocket-protocol", "warren.v1")
        .header("authorization", format!("Bearer {token}"));
    let options = yawc::Options::default()
        .with_low_latency_compression()
        .with_compression_threshold(256);
    let ws = yawc::WebSocket::handshake_with_request(url, io, options, req)
        .await
        .map_err(|e| format!("WebSocket handshake: {e}"))?;
    Ok(Ws::Deflate(Box::new(ws)))
}
type Res<T> = Result<T, String>;

/// 62 characters: with its newline (turned into CR LF by the terminal) a
/// line is exactly 64 bytes on the wire.
const PAYLOAD_LINE: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const WIRE_LINE: u64 = 64;
/// What `echo _BENCH_$((40+2))_END` prints; `_` never occurs in the payload
/// and the typed command line (echoed back) doesn't contain it literally.
const END_MARK: &[u8] = b"_BENCH_42_END";
/// Bound on any single step (a connect, a prompt, an echo).
const STEP: Duration = Duration::from_secs(30);
/// Bound on the throughput transfer.
const TRANSFER_LIMIT: Duration = Duration::from_secs(300);
const COLS: u16 = 80;
const ROWS: u16 = 24;

struct Opts {
    connections: usize,
    keystrokes: usize,
    mib: u64,
    users: usize,
    per_user: usize,
    only: Option<String>,
    keep: bool,
    /// `--idle-terminals N`: the scale run instead of the others.
    idle_terminals: Option<usize>,
    /// `--idle-sandboxes N,N,…`: only the first-terminal scale phase.
    idle: Vec<usize>,
    /// `--new-users N`: cold first terminals measured at each idle count.
    new_users: usize,
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        connections: 50,
        keystrokes: 200,
        mib: 200,
        users: 20,
        per_user: 10,
        only: None,
        keep: false,
        idle_terminals: None,
        idle: Vec::new(),
        new_users: 20,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let val = args.get(i + 1).cloned().unwrap_or_default();
        let num = || -> usize {
            val.parse().unwrap_or_else(|_| {
                eprintln!("bench-serve: {} needs a number", args[i]);
                std::process::exit(2)
            })
        };
        if args[i] == "--keep" {
            o.keep = true;
            i += 1;
            continue;
        }
        if args[i] == "--deflate" {
            DEFLATE.store(true, Ordering::Relaxed);
            i += 1;
            continue;
        }
        match args[i].as_str() {
            "--connections" => o.connections = num().max(2),
            "--keystrokes" => o.keystrokes = num().max(2),
            "--mib" => o.mib = num().max(1) as u64,
            "--users" => o.users = num().max(1),
            "--terminals-per-user" => o.per_user = num().max(1),
            "--idle-terminals" => o.idle_terminals = Some(num().max(1)),
            "--new-users" => o.new_users = num().max(2),
            "--idle-sandboxes" => {
                o.idle = val
                    .split(',')
                    .map(|n| n.trim().parse().ok())
                    .collect::<Option<Vec<usize>>>()
                    .unwrap_or_else(|| {
                        eprintln!("bench-serve: --idle-sandboxes needs numbers, e.g. 0,1000,2000");
                        std::process::exit(2)
                    });
                o.idle.sort();
                o.idle.dedup();
            }
            "--only" if ["sandbox", "echo", "terminado"].contains(&val.as_str()) => {
                o.only = Some(val.clone())
            }
            other => {
                eprintln!(
                    "bench-serve: unknown argument {other:?}; see the top of \
                     tests/src/bin/bench-serve.rs"
                );
                std::process::exit(2)
            }
        }
        i += 2;
    }
    o
}

// --- Statistics and formatting ---

/// Nearest-rank percentile of sorted samples.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn sorted(mut v: Vec<Duration>) -> Vec<Duration> {
    v.sort();
    v
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

// --- /proc ---

fn status_kib(pid: i32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn pss_kib(pid: i32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// (parent pid, user+system CPU ticks) from /proc/PID/stat.
fn stat(pid: &str) -> Option<(i32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ppid = f.get(1)?.parse().ok()?;
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some((ppid, ticks))
}

/// CPU time of a process, in seconds (USER_HZ is 100 on Linux).
fn cpu_secs(pid: i32) -> f64 {
    stat(&pid.to_string()).map_or(0.0, |(_, t)| t as f64 / 100.0)
}

/// Busy and total jiffies of the whole machine.
fn machine_ticks() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = s.lines().next().unwrap_or_default();
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Every process below `root`, grouped by what it is: its name, and for
/// warren-shim its subcommand. Values: (count, RSS KiB, PSS KiB).
fn descendants(root: i32) -> BTreeMap<String, (usize, u64, u64)> {
    let mut parent = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let (Ok(pid), Some((ppid, _))) = (name.parse::<i32>(), stat(&name)) {
                parent.push((pid, ppid));
            }
        }
    }
    let mut below = vec![root];
    let mut i = 0;
    while i < below.len() {
        let p = below[i];
        below.extend(parent.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    let mut groups = BTreeMap::new();
    for &pid in &below[1..] {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let mut label = comm.trim().to_string();
        if label.starts_with("warren-shim") {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let sub = cmdline
                .split(|b| *b == 0)
                .nth(1)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .unwrap_or_default();
            label = format!("{label} {sub}");
        }
        let e = groups.entry(label).or_insert((0, 0, 0));
        e.0 += 1;
        e.1 += status_kib(pid, "VmRSS").unwrap_or(0);
        e.2 += pss_kib(pid).unwrap_or(0);
    }
    groups
}

// --- The server ---

struct Server {
    child: Child,
    pid: i32,
    addr: SocketAddr,
    log: PathBuf,
    secret: Vec<u8>,
    stopped: bool,
    /// An external terminado server (the anchor), not `warren serve`.
    terminado: bool,
}

/// The external anchor: terminado (Jupyter's terminal backend: Tornado
/// WebSockets, one PTY per connection, no sandbox), as a minimal server of
/// the kind its README shows, running the echo backend's shell.
const TERMINADO_SERVER: &str = r#"
import asyncio, sys
import tornado.web
from terminado import TermSocket, UniqueTermManager

async def main():
    manager = UniqueTermManager(shell_command=["/bin/sh"], max_terminals=100000)
    app = tornado.web.Application(
        [(r"/websocket", TermSocket, {"term_manager": manager})])
    app.listen(int(sys.argv[1]), "127.0.0.1")
    print("listening on", sys.argv[1], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"#;

/// The Python with terminado: `$BENCH_TERMINADO_PYTHON`, else `python3`;
/// with terminado's and Tornado's versions. `Err` says why not and how to
/// install it.
fn terminado_python() -> Res<(String, String)> {
    let python = std::env::var("BENCH_TERMINADO_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .args([
            "-c",
            "import terminado, tornado; print(terminado.__version__, tornado.version)",
        ])
        .stderr(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let v = String::from_utf8_lossy(&o.stdout).trim().to_string();
            Ok((python, v))
        }
        _ => Err(format!(
            "SKIP: the external anchor needs terminado, which {python} cannot import; install \
             it with `python3 -m venv /tmp/terminado && /tmp/terminado/bin/pip install \
             terminado==0.18.1` and run with BENCH_TERMINADO_PYTHON=/tmp/terminado/bin/python"
        )),
    }
}

impl Server {
    fn start(warren: &Path, backend: &str, root: &Path, name: &str) -> Res<Server> {
        Server::start_with(warren, backend, root, name, (100, 100, 4096), &[])
    }

    /// `start` with `caps` (--max-sandboxes, --max-terminals-per-user and
    /// --max-connections-per-address, and --max-connections) and `extra`
    /// arguments.
    fn start_with(
        warren: &Path,
        backend: &str,
        root: &Path,
        name: &str,
        caps: (usize, usize, usize),
        extra: &[&str],
    ) -> Res<Server> {
        if backend == "terminado" {
            return Server::start_terminado(root, name);
        }
        let secret: Vec<u8> = format!(
            "bench-serve-secret-{}-{name}-0123456789",
            std::process::id()
        )
        .into_bytes();
        let secret_file = root.join(format!("{name}.secret"));
        std::fs::write(&secret_file, &secret).map_err(|e| format!("secret: {e}"))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600));
        }
        let addr = free_addr()?;
        let log = root.join(format!("{name}.log"));
        let out = File::create(&log).map_err(|e| format!("log: {e}"))?;
        let err = out.try_clone().map_err(|e| format!("log: {e}"))?;
        let dir = root.join(name);
        let child = Command::new(warren)
            .arg("serve")
            .args(["--listen", &addr.to_string(), "--backend", backend])
            .args(["--auth", "jwt", "--jwt-secret-file"])
            .arg(&secret_file)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--workspace-root")
            .arg(dir.join("ws"))
            .args(["--max-sandboxes", &caps.0.to_string()])
            .args(["--max-terminals-per-user", &caps.1.to_string()])
            .args(if extra.contains(&"--shutdown-timeout") {
                &[][..]
            } else {
                &["--shutdown-timeout", "30s"][..]
            })
            .args(extra)
            // Every client is this process, at one address.
            .args(["--max-connections-per-address", &caps.2.to_string()])
            .args(["--max-connections", &caps.2.max(4096).to_string()])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", warren.display()))?;
        let pid = child.id() as i32;
        let server = Server {
            child,
            pid,
            addr,
            log,
            secret,
            stopped: false,
            terminado: false,
        };
        server.wait_listening()
    }

    fn start_terminado(root: &Path, name: &str) -> Res<Server> {
        let (python, _) = terminado_python()?;
        let addr = free_addr()?;
        let log = root.join(format!("{name}.log"));
        let out = File::create(&log).map_err(|e| format!("log: {e}"))?;
        let err = out.try_clone().map_err(|e| format!("log: {e}"))?;
        let child = Command::new(&python)
            .args(["-c", TERMINADO_SERVER, &addr.port().to_string()])
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting {python}: {e}"))?;
        let pid = child.id() as i32;
        Server {
            child,
            pid,
            addr,
            log,
            secret: Vec::new(),
            stopped: false,
            terminado: true,
        }
        .wait_listening()
    }

    fn wait_listening(mut self) -> Res<Server> {
        let server = &mut self;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                server.stopped = true;
                return Err(format!(
                    "warren serve exited at start ({status}):\n{}",
                    server.log_text()
                ));
            }
            let listening = std::fs::read_to_string(&server.log)
                .unwrap_or_default()
                .contains("listening on");
            if listening && StdTcpStream::connect(server.addr).is_ok() {
                return Ok(self);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "warren serve did not listen within 15 s:\n{}",
                    server.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn token(&self, user: &str) -> String {
        warren::web::mint_token(&self.secret, user, Duration::from_secs(3600))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn rss_kib(&self) -> (u64, u64) {
        (
            status_kib(self.pid, "VmRSS").unwrap_or(0),
            status_kib(self.pid, "RssAnon").unwrap_or(0),
        )
    }

    /// SIGTERM, then wait (at most 40 s); returns how long it took.
    fn stop(&mut self) -> Res<Duration> {
        self.stop_within(Duration::from_secs(40))
    }

    fn stop_within(&mut self, limit: Duration) -> Res<Duration> {
        let t = Instant::now();
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGTERM);
        while t.elapsed() < limit {
            if let Ok(Some(_)) = self.child.try_wait() {
                self.stopped = true;
                return Ok(t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Err(format!(
            "warren serve did not stop within {} s of SIGTERM",
            limit.as_secs()
        ))
    }

    /// Log lines at WARN or ERROR.
    fn warnings(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_addr() -> Res<SocketAddr> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("free port: {e}"))?
        .port();
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

// --- A warren.v1 client (and a terminado one) ---

enum Frame {
    Bin(Vec<u8>),
    Text(serde_json::Value),
}

struct Term {
    ws: Ws,
    /// The last bytes of output, for prompt detection.
    tail: Vec<u8>,
    tier: String,
    /// Output frames counted by `read_until`.
    frames: u64,
    /// terminado's protocol: JSON text frames `["stdin", s]` and
    /// `["stdout", s]`.
    terminado: bool,
}

/// Timings of one new terminal, from the start of the TCP connect.
#[derive(Clone, Copy)]
struct Open {
    handshake: Duration,
    hello: Duration,
    prompt: Duration,
}

fn tokio_deadline(d: Instant) -> tokio::time::Instant {
    tokio::time::Instant::from_std(d)
}

/// Whether `b` contains `n` (searching for its first byte, which the
/// markers use only there).
fn contains(h: &[u8], n: &[u8]) -> bool {
    let mut i = 0;
    while let Some(p) = h[i..].iter().position(|&b| b == n[0]) {
        if h[i + p..].starts_with(n) {
            return true;
        }
        i += p + 1;
    }
    false
}

/// Whether the output ends in a shell prompt: `$` or `#`, once trailing
/// blanks and control sequences (bracketed paste, colours, cursor moves of a
/// snapshot) are stripped.
fn ends_with_prompt(mut s: &[u8]) -> bool {
    loop {
        let before = s.len();
        while let [rest @ .., b' '] = s {
            s = rest;
        }
        if let Some(esc) = s.iter().rposition(|&b| b == 0x1b) {
            let seq = &s[esc + 1..];
            let csi = matches!(seq, [b'[', mid @ .., fin]
                if mid.iter().all(|b| (0x20..=0x3f).contains(b)) && (0x40..=0x7e).contains(fin));
            let short = seq.len() == 1 && seq[0] != b'[';
            if csi || short {
                s = &s[..esc];
            }
        }
        if s.len() == before {
            break;
        }
    }
    matches!(s.last(), Some(b'$') | Some(b'#'))
}

impl Term {
    /// Opens a new terminal on `server` and waits for its first prompt.
    async fn open(server: &Server, token: &str) -> Res<(Term, Open)> {
        if server.terminado {
            Term::open_terminado(server.addr).await
        } else {
            Term::open_warren(server.addr, token).await
        }
    }

    /// terminado: a new terminal per connection, sized by a `set_size`
    /// message; it has no hello, so that time is the handshake's.
    async fn open_terminado(addr: SocketAddr) -> Res<(Term, Open)> {
        let t0 = Instant::now();
        let deadline = t0 + STEP;
        let (ws, _) = tokio::time::timeout_at(
            tokio_deadline(deadline),
            tokio_tungstenite::connect_async(format!("ws://{addr}/websocket")),
        )
        .await
        .map_err(|_| "WebSocket handshake timed out".to_string())?
        .map_err(|e| format!("WebSocket handshake: {e}"))?;
        let handshake = t0.elapsed();
        let mut term = Term {
            ws: Ws::Plain(Box::new(ws)),
            tail: Vec::new(),
            tier: "none".into(),
            frames: 0,
            terminado: true,
        };
        let size = serde_json::json!(["set_size", ROWS, COLS]).to_string();
        term.ws
            .send(Message::Text(size.into()))
            .await
            .map_err(|e| format!("send: {e}"))?;
        term.wait_prompt(deadline).await?;
        let prompt = t0.elapsed();
        Ok((
            term,
            Open {
                handshake,
                hello: handshake,
                prompt,
            },
        ))
    }

    async fn open_warren(addr: SocketAddr, token: &str) -> Res<(Term, Open)> {
        let t0 = Instant::now();
        let deadline = t0 + STEP;
        let mut req = format!("ws://{addr}/ws?cols={COLS}&rows={ROWS}")
            .into_client_request()
            .map_err(|e| e.to_string())?;
        let h = req.headers_mut();
        h.insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("warren.v1"),
        );
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())?,
        );
        let ws = if DEFLATE.load(Ordering::Relaxed) {
            tokio::time::timeout_at(
                tokio_deadline(deadline),
                connect_deflate(addr, &format!("/ws?cols={COLS}&rows={ROWS}"), token),
            )
            .await
            .map_err(|_| "WebSocket handshake timed out".to_string())??
        } else {
            let (ws, _) = tokio::time::timeout_at(
                tokio_deadline(deadline),
                tokio_tungstenite::connect_async(req),
            )
            .await
            .map_err(|_| "WebSocket handshake timed out".to_string())?
            .map_err(|e| format!("WebSocket handshake: {e}"))?;
            Ws::Plain(Box::new(ws))
        };
        let handshake = t0.elapsed();
        let mut term = Term {
            ws,
            tail: Vec::new(),
            tier: String::new(),
            frames: 0,
            terminado: false,
        };
        match term.next(deadline).await? {
            Frame::Text(v) if v["type"] == "hello" => {
                term.tier = v["tier"].as_str().unwrap_or("?").to_string();
            }
            Frame::Text(v) => return Err(format!("expected hello, got {v}")),
            Frame::Bin(_) => return Err("expected hello, got output".into()),
        }
        let hello = t0.elapsed();
        term.wait_prompt(deadline).await?;
        let prompt = t0.elapsed();
        Ok((
            term,
            Open {
                handshake,
                hello,
                prompt,
            },
        ))
    }

    /// The next data frame; an `exit`, `error` or close is an error.
    async fn next(&mut self, deadline: Instant) -> Res<Frame> {
        loop {
            let msg = tokio::time::timeout_at(tokio_deadline(deadline), self.ws.next())
                .await
                .map_err(|_| {
                    format!(
                        "timed out; last output: {:?}",
                        String::from_utf8_lossy(&self.tail)
                    )
                })?;
            match msg {
                None => return Err("the connection ended".into()),
                Some(Err(e)) => return Err(format!("WebSocket: {e}")),
                Some(Ok(Message::Text(t))) if self.terminado => {
                    let v: serde_json::Value =
                        serde_json::from_str(&t).map_err(|e| format!("bad JSON {t:?}: {e}"))?;
                    match (v[0].as_str(), v[1].as_str()) {
                        (Some("stdout"), Some(out)) => return Ok(self.output(out.as_bytes())),
                        (Some("disconnect"), _) => return Err(format!("server said {v}")),
                        _ => continue,
                    }
                }
                Some(Ok(Message::Binary(b))) => return Ok(self.output(&b)),
                Some(Ok(Message::Text(t))) => {
                    let v: serde_json::Value =
                        serde_json::from_str(&t).map_err(|e| format!("bad JSON {t:?}: {e}"))?;
                    if v["type"] == "exit" || v["type"] == "error" {
                        return Err(format!("server said {v}"));
                    }
                    return Ok(Frame::Text(v));
                }
                Some(Ok(Message::Close(f))) => return Err(format!("closed: {f:?}")),
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Keeps the tail of output `b` for prompt detection.
    fn output(&mut self, b: &[u8]) -> Frame {
        let keep = b.len().min(256);
        if b.len() >= 256 {
            self.tail.clear();
        }
        self.tail.extend_from_slice(&b[b.len() - keep..]);
        if self.tail.len() > 512 {
            self.tail.drain(..self.tail.len() - 256);
        }
        Frame::Bin(b.to_vec())
    }

    async fn next_bin(&mut self, deadline: Instant) -> Res<Vec<u8>> {
        loop {
            if let Frame::Bin(b) = self.next(deadline).await? {
                return Ok(b);
            }
        }
    }

    async fn wait_prompt(&mut self, deadline: Instant) -> Res<()> {
        while !ends_with_prompt(&self.tail) {
            self.next_bin(deadline).await?;
        }
        Ok(())
    }

    async fn send(&mut self, bytes: &[u8]) -> Res<()> {
        let msg = if self.terminado {
            let input = String::from_utf8_lossy(bytes);
            Message::Text(serde_json::json!(["stdin", input]).to_string().into())
        } else {
            Message::Binary(bytes.to_vec().into())
        };
        self.ws.send(msg).await.map_err(|e| format!("send: {e}"))
    }

    /// Reads until `marker` has arrived; returns the output bytes received.
    async fn read_until(&mut self, marker: &[u8], deadline: Instant) -> Res<u64> {
        let mut carry: Vec<u8> = Vec::new();
        let mut bytes = 0u64;
        loop {
            let b = self.next_bin(deadline).await?;
            bytes += b.len() as u64;
            self.frames += 1;
            carry.extend_from_slice(&b[..b.len().min(marker.len())]);
            if contains(&carry, marker) || contains(&b, marker) {
                return Ok(bytes);
            }
            let keep = marker.len() - 1;
            if b.len() >= keep {
                carry.clear();
                carry.extend_from_slice(&b[b.len() - keep..]);
            } else if carry.len() > keep {
                carry.drain(..carry.len() - keep);
            }
        }
    }

    /// Types `line` and waits for `marker`, then for the prompt.
    async fn run(&mut self, line: &str, marker: &[u8]) -> Res<()> {
        let deadline = Instant::now() + STEP;
        self.send(format!("{line}\r").as_bytes()).await?;
        self.read_until(marker, deadline).await?;
        self.wait_prompt(deadline).await
    }

    /// Ends the shell with `exit` and waits for the server to close.
    async fn exit(mut self) -> Res<()> {
        self.send(b"exit\r").await?;
        let deadline = tokio_deadline(Instant::now() + STEP);
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Err("the terminal did not end after `exit`".into()),
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return Ok(()),
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

// --- The measurements ---

struct Throughput {
    secs: f64,
    received: u64,
    frames: u64,
    server_cpu: f64,
    client_cpu: f64,
    machine_busy: f64,
}

struct Memory {
    terminals: usize,
    rss_before: (u64, u64),
    rss_after: (u64, u64),
    procs: BTreeMap<String, (usize, u64, u64)>,
    cold: Vec<Duration>,
    warm: Vec<Duration>,
    shutdown: Duration,
}

#[derive(Default)]
struct Results {
    tier: String,
    cold: Option<Open>,
    warm: Vec<Open>,
    echo: Vec<Duration>,
    echo_kernel: Vec<Duration>,
    throughput: Option<Throughput>,
    memory: Option<Memory>,
    warnings: Vec<String>,
}

/// Keystroke echo: type `x`, time until it comes back, erase it with DEL
/// (whose echo holds a backspace and no `x`), pause, repeat.
async fn echo_latency(term: &mut Term, n: usize) -> Res<Vec<Duration>> {
    let warmup = 20;
    let mut samples = Vec::with_capacity(n);
    for i in 0..warmup + n {
        let deadline = Instant::now() + STEP;
        let t = Instant::now();
        term.send(b"x").await?;
        while !term.next_bin(deadline).await?.contains(&b'x') {}
        let d = t.elapsed();
        if i >= warmup {
            samples.push(d);
        }
        term.send(b"\x7f").await?;
        while !term.next_bin(deadline).await?.contains(&0x08) {}
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(samples)
}

/// `yes` through `head`: `mib` MiB of terminal output, then the end marker.
async fn throughput(term: &mut Term, server_pid: i32, mib: u64) -> Res<Throughput> {
    term.run("echo _SYNC_$((1+1))", b"_SYNC_2").await?;
    let lines = mib * 1024 * 1024 / WIRE_LINE;
    let cmd = format!("yes {PAYLOAD_LINE} | head -n {lines}; echo _BENCH_$((40+2))_END\r");
    let (cpu0, me0, m0) = (
        cpu_secs(server_pid),
        cpu_secs(std::process::id() as i32),
        machine_ticks(),
    );
    let t = Instant::now();
    term.frames = 0;
    term.send(cmd.as_bytes()).await?;
    let received = term.read_until(END_MARK, t + TRANSFER_LIMIT).await?;
    let secs = t.elapsed().as_secs_f64();
    let (cpu1, me1, m1) = (
        cpu_secs(server_pid),
        cpu_secs(std::process::id() as i32),
        machine_ticks(),
    );
    term.wait_prompt(Instant::now() + STEP).await?;
    let expected = lines * WIRE_LINE;
    if received < expected || received > expected + 4096 {
        return Err(format!(
            "received {received} bytes for {expected} bytes of payload"
        ));
    }
    Ok(Throughput {
        secs,
        received,
        frames: term.frames,
        server_cpu: (cpu1 - cpu0) / secs,
        client_cpu: (me1 - me0) / secs,
        machine_busy: (m1.0 - m0.0) as f64 / (m1.1 - m0.1).max(1) as f64,
    })
}

/// Connect latency, echo latency and throughput on a fresh server.
async fn latency_and_throughput(
    warren: &Path,
    backend: &str,
    root: &Path,
    o: &Opts,
    r: &mut Results,
) -> Res<()> {
    let mut server = Server::start(warren, backend, root, &format!("{backend}-a"))?;
    let token = server.token("bench");
    eprintln!(
        "[{backend}] connect → prompt: 1 cold + {} warm",
        o.connections
    );
    let (term, cold) = Term::open(&server, &token).await?;
    r.tier = term.tier.clone();
    r.cold = Some(cold);
    term.exit().await?;
    for _ in 0..o.connections {
        let (term, open) = Term::open(&server, &token).await?;
        r.warm.push(open);
        term.exit().await?;
    }
    let (mut term, _) = Term::open(&server, &token).await?;
    term.run("echo _SYNC_$((1+1))", b"_SYNC_2").await?;
    if backend != "sandbox" {
        // /bin/sh is dash: the kernel's line discipline echoes. Measure
        // that too, then switch to bash so both backends echo through
        // readline.
        eprintln!("[{backend}] keystroke echo, sh (kernel tty echo)");
        r.echo_kernel = echo_latency(&mut term, o.keystrokes).await?;
        term.tail.clear();
        term.send(b"exec /bin/bash --norc --noprofile\r").await?;
        term.wait_prompt(Instant::now() + STEP).await?;
        term.run("echo _SYNC_$((1+1))", b"_SYNC_2").await?;
    }
    eprintln!("[{backend}] keystroke echo, bash readline");
    r.echo = echo_latency(&mut term, o.keystrokes).await?;
    eprintln!("[{backend}] throughput: {} MiB", o.mib);
    r.throughput = Some(throughput(&mut term, server.pid, o.mib).await?);
    term.exit().await?;
    server.stop()?;
    r.warnings.extend(server.warnings());
    Ok(())
}

/// Server memory before and after opening users × per_user idle terminals
/// (viewers connected) on a fresh server.
async fn memory(warren: &Path, backend: &str, root: &Path, o: &Opts, r: &mut Results) -> Res<()> {
    let mut server = Server::start(warren, backend, root, &format!("{backend}-m"))?;
    let n = o.users * o.per_user;
    eprintln!(
        "[{backend}] memory: {} users × {} terminals",
        o.users, o.per_user
    );
    // One terminal first, so that one-time costs (code paged in, the
    // runtime's threads) are in "before".
    let (t, _) = Term::open(&server, &server.token("warmup")).await?;
    t.exit().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = server.rss_kib();
    let (mut terms, mut cold, mut warm) = (Vec::new(), Vec::new(), Vec::new());
    for u in 0..o.users {
        let token = server.token(&format!("mem{u:02}"));
        for t in 0..o.per_user {
            let (term, open) = Term::open(&server, &token).await?;
            if t == 0 {
                cold.push(open.prompt);
            } else {
                warm.push(open.prompt);
            }
            terms.push(term);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = server.rss_kib();
    let procs = descendants(server.pid);
    drop(terms);
    tokio::time::sleep(Duration::from_millis(200)).await;
    eprintln!("[{backend}] stopping the server with {n} terminals");
    let shutdown = server.stop()?;
    r.warnings.extend(server.warnings());
    r.memory = Some(Memory {
        terminals: n,
        rss_before,
        rss_after,
        procs,
        cold,
        warm,
        shutdown,
    });
    Ok(())
}

/// The load average over 1, 5 and 15 minutes, as /proc/loadavg says it.
fn loadavg() -> String {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// What bash readline's echo looks like on an open echo-backend terminal.
async fn to_bash(term: &mut Term) -> Res<()> {
    term.run("echo _SYNC_$((1+1))", b"_SYNC_2").await?;
    term.tail.clear();
    term.send(b"exec /bin/bash --norc --noprofile\r").await?;
    term.wait_prompt(Instant::now() + STEP).await?;
    term.run("echo _SYNC_$((1+1))", b"_SYNC_2").await
}

/// `--idle-terminals N` (issue 15: 10,000 idle terminals with the server
/// responsive): on one echo-backend server, keystroke echo (bash readline)
/// on an active terminal with no other terminal open (the anchor), then N
/// idle terminals opened, 100 per user, each with its viewer connected,
/// the server's RSS per idle terminal, and the same echo again.
async fn scale(warren: &Path, root: &Path, o: &Opts, n: usize) -> Res<()> {
    let per_user = 100;
    let users = n.div_ceil(per_user) + 1;
    let mut server = Server::start_with(
        warren,
        "echo",
        root,
        "echo-scale",
        (users + 1, per_user, n + 100),
        &[],
    )?;
    let load0 = loadavg();
    let (mut active, _) = Term::open(&server, &server.token("active")).await?;
    to_bash(&mut active).await?;
    eprintln!("[scale] keystroke echo with no idle terminal");
    let anchor = sorted(echo_latency(&mut active, o.keystrokes).await?);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = server.rss_kib();
    let t = Instant::now();
    let mut terms = Vec::with_capacity(n);
    let mut opens = Vec::with_capacity(n);
    for i in 0..n {
        let token = server.token(&format!("idle{:04}", i / per_user));
        match Term::open(&server, &token).await {
            Ok((term, open)) => {
                terms.push(term);
                opens.push(open.prompt);
            }
            Err(e) => {
                eprintln!("[scale] terminal {} of {n} failed to open: {e}", i + 1);
                break;
            }
        }
        if (i + 1) % 500 == 0 {
            eprintln!("[scale] {} idle terminals open", i + 1);
        }
    }
    let opened = terms.len();
    let open_secs = t.elapsed().as_secs_f64();
    // Longer than the quiet time after which a terminal compacts its screen.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after = server.rss_kib();
    let load1 = loadavg();
    eprintln!("[scale] keystroke echo with {opened} idle terminals");
    let loaded = sorted(echo_latency(&mut active, o.keystrokes).await?);
    let load2 = loadavg();
    let fds = std::fs::read_dir(format!("/proc/{}/fd", server.pid)).map_or(0, |d| d.count());
    drop(terms);
    active.exit().await?;
    let shutdown = server.stop()?;
    let opens = sorted(opens);
    let per = |a: u64, b: u64| (b as f64 - a as f64) / opened.max(1) as f64;
    println!(
        "\nwarren serve at scale: {opened} idle terminals (echo backend, {per_user} per user)"
    );
    println!(
        "load average (1, 5, 15 min): {load0} before, {load1} once open, {load2} after the echo"
    );
    println!(
        "{:<44}{:>18}{:>18}{:>9}",
        "",
        "no idle terminal",
        format!("{opened} idle"),
        "ratio"
    );
    for (what, p) in [
        ("keystroke echo (bash readline), p50", 0.5),
        ("keystroke echo (bash readline), p99", 0.99),
    ] {
        let (a, b) = (pct(&anchor, p), pct(&loaded, p));
        println!(
            "{what:<44}{:>18}{:>18}{:>8.2}×",
            ms(a),
            ms(b),
            b.as_secs_f64() / a.as_secs_f64().max(1e-9)
        );
    }
    println!(
        "{:<44}{:>18}",
        "server RSS before the idle terminals",
        format!("{:.1} MiB", rss_before.0 as f64 / 1024.0)
    );
    println!(
        "{:<44}{:>18}",
        "server RSS with them",
        format!("{:.1} MiB", rss_after.0 as f64 / 1024.0)
    );
    println!(
        "{:<44}{:>18}",
        "server RSS per idle terminal",
        format!("{:.1} KiB", per(rss_before.0, rss_after.0))
    );
    println!(
        "{:<44}{:>18}",
        "  of which anonymous",
        format!("{:.1} KiB", per(rss_before.1, rss_after.1))
    );
    println!("{:<44}{:>18}", "server open files with them", fds);
    println!(
        "{:<44}{:>18}",
        "opening them, total",
        format!("{open_secs:.1} s")
    );
    if !opens.is_empty() {
        println!(
            "{:<44}{:>18}",
            "  connect → prompt, p50 / p99",
            format!("{} / {}", ms(pct(&opens, 0.5)), ms(pct(&opens, 0.99)))
        );
    }
    println!("{:<44}{:>18}", "SIGTERM → exit with them", ms(shutdown));
    if opened < n {
        println!("(asked for {n}; the host stopped at {opened}: see the PTY capacity above)");
    }
    Ok(())
}

/// The PTY and open-file capacity, as `warren doctor` reports it.
fn print_capacity(warren: &Path) {
    let pty = |k: &str| {
        std::fs::read_to_string(format!("/proc/sys/kernel/pty/{k}"))
            .map_or("?".into(), |s| s.trim().to_string())
    };
    println!(
        "kernel.pty.max {}, kernel.pty.reserve {}, in use {}",
        pty("max"),
        pty("reserve"),
        pty("nr")
    );
    match Command::new(warren).arg("doctor").output() {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            for l in text.lines().filter(|l| {
                let l = l.to_ascii_lowercase();
                l.contains("pty") || l.contains("open file") || l.contains("nofile")
            }) {
                println!("warren doctor: {}", l.trim());
            }
        }
        Err(e) => println!("warren doctor: could not run it: {e}"),
    }
}

/// One step of the first-terminal scale phase: new users' first terminals
/// (each starting the user's sandbox) with `idle` sandboxes already up.
struct ScaleStep {
    idle: usize,
    /// Sandboxes counted under the server before the step (one
    /// `warren-shim create` each; its PID 1 is `warren-shim init`).
    seen: usize,
    opens: Vec<Open>,
    /// /proc/loadavg's 1-minute figure before and after the step.
    load: (f64, f64),
    server_rss_kib: u64,
    /// Time taken to start the idle sandboxes added before this step.
    grow: Duration,
}

struct Scale {
    steps: Vec<ScaleStep>,
    shutdown: Duration,
}

fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Idle sandboxes started this many at a time (the server starts each on
/// its own; 2 cores).
const GROW_PARALLEL: usize = 8;

/// Cold first terminals of `o.new_users` new users, with 0 and then each
/// of `o.idle` idle sandboxes (users who opened a terminal and closed it;
/// the sandbox stays for the idle timeout) on one server. The idle counts
/// include the users measured at earlier steps. The anchors (no sandbox)
/// are measured at 0 only.
async fn first_terminal_scale(warren: &Path, backend: &str, root: &Path, o: &Opts) -> Res<Scale> {
    let sandbox = backend == "sandbox";
    let steps: Vec<usize> = if sandbox { o.idle.clone() } else { vec![0] };
    let max = steps.last().copied().unwrap_or(0) + o.new_users * steps.len() + 10;
    // pasta (the `public` network) is ~30 MiB resident per sandbox: 2,000
    // of them would not fit in 24 GiB, so the scale phase runs without a
    // network, for the measured users too.
    let extra = [
        "--network",
        "none",
        "--idle-timeout",
        "12h",
        "--shutdown-timeout",
        "600s",
    ];
    let mut server = Server::start_with(
        warren,
        backend,
        root,
        &format!("{backend}-scale"),
        (max, 100, 4096),
        if backend == "terminado" {
            &[][..]
        } else {
            &extra[..]
        },
    )?;
    let count = |server: &Server| {
        descendants(server.pid)
            .get("warren-shim create")
            .map_or(0, |g| g.0)
    };
    let mut made = 0;
    let mut out = Vec::new();
    let srv = &server;
    let run = async {
        for &n in &steps {
            let t = Instant::now();
            if made < n {
                eprintln!("[{backend}] starting {} idle sandboxes", n - made);
            }
            let mut opens = futures_util::stream::iter(made..n)
                .map(|i| {
                    let token = srv.token(&format!("idle{i:05}"));
                    async move {
                        let (term, _) = Term::open(srv, &token).await?;
                        term.exit().await
                    }
                })
                .buffer_unordered(GROW_PARALLEL);
            let mut done = made;
            while let Some(r) = opens.next().await {
                r.map_err(|e| format!("idle sandbox {done}: {e}"))?;
                done += 1;
                if done % 250 == 0 {
                    eprintln!("[{backend}]   {done} (load {:.1})", load1());
                }
            }
            drop(opens);
            made = made.max(n);
            let grow = t.elapsed();
            // Let the last starts settle (their shells exit, the server
            // notes the idle sandboxes).
            tokio::time::sleep(Duration::from_secs(2)).await;
            let seen = if sandbox { count(srv) } else { 0 };
            eprintln!(
                "[{backend}] {n} idle ({seen} seen): {} new users' first terminals",
                o.new_users
            );
            let load0 = load1();
            let mut step = Vec::new();
            for u in 0..o.new_users {
                let token = srv.token(&format!("new{n:05}-{u:03}"));
                let (term, open) = Term::open(srv, &token).await?;
                step.push(open);
                term.exit().await?;
            }
            if sandbox {
                made += o.new_users;
            }
            out.push(ScaleStep {
                idle: n,
                seen,
                opens: step,
                load: (load0, load1()),
                server_rss_kib: srv.rss_kib().0,
                grow,
            });
        }
        Ok::<(), String>(())
    }
    .await;
    eprintln!("[{backend}] stopping the server with {made} sandboxes");
    // Whatever happened above: every sandbox goes with the server.
    let shutdown = server.stop_within(Duration::from_secs(900));
    run?;
    Ok(Scale {
        steps: out,
        shutdown: shutdown?,
    })
}

fn report_scale(o: &Opts, scales: &[(&str, Res<Scale>)], terminado: &Res<(String, String)>) {
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!();
    println!("first terminal of a new user (connect → first prompt; starts the sandbox), {date}",);
    println!(
        "{} new users per step, one after another; warren with --network none",
        o.new_users
    );
    if let Ok((_, v)) = terminado {
        println!("anchor: terminado and Tornado {v}, a new terminal per connection");
    }
    let p = |s: &ScaleStep, q: f64, f: fn(&Open) -> Duration| {
        pct(&sorted(s.opens.iter().map(f).collect()), q)
    };
    let anchor = scales
        .iter()
        .find(|(b, _)| *b == "terminado")
        .and_then(|(_, s)| s.as_ref().ok())
        .and_then(|s| s.steps.first())
        .map(|s| p(s, 0.5, |x| x.prompt));
    println!(
        "{:<10} {:>6} {:>6} {:>10} {:>10} {:>10} {:>9} {:>9} {:>11} {:>10} {:>9}",
        "backend",
        "idle",
        "seen",
        "p50",
        "p99",
        "hello p50",
        "÷ idle 0",
        "÷ anchor",
        "load 1-min",
        "serve RSS",
        "grow"
    );
    for (backend, scale) in scales {
        let scale = match scale {
            Ok(s) => s,
            Err(e) => {
                println!("{backend:<10} failed: {e}");
                continue;
            }
        };
        let base = scale.steps.first().map(|s| p(s, 0.5, |x| x.prompt));
        for s in &scale.steps {
            let p50 = p(s, 0.5, |x| x.prompt);
            let ratio = |d: Option<Duration>| {
                d.map_or("-".to_string(), |d| {
                    format!("{:.2}×", p50.as_secs_f64() / d.as_secs_f64())
                })
            };
            println!(
                "{:<10} {:>6} {:>6} {:>10} {:>10} {:>10} {:>9} {:>9} {:>11} {:>10} {:>9}",
                backend,
                s.idle,
                s.seen,
                ms(p50),
                ms(p(s, 0.99, |x| x.prompt)),
                ms(p(s, 0.5, |x| x.hello)),
                ratio(base),
                ratio(anchor),
                format!("{:.1}–{:.1}", s.load.0, s.load.1),
                format!("{:.1} MiB", s.server_rss_kib as f64 / 1024.0),
                format!("{:.0} s", s.grow.as_secs_f64()),
            );
        }
        println!(
            "{:<10} SIGTERM → exit with every sandbox: {:.2} s",
            backend,
            scale.shutdown.as_secs_f64()
        );
    }
}

/// Reference without a server: the same command writing into a bare PTY
/// whose master this process reads in 16 KiB reads (the kernel's share of
/// the work). Returns MiB/s.
fn bare_pty(mib: u64) -> Res<f64> {
    use std::io::Read;
    let size = nix::pty::Winsize {
        ws_row: ROWS,
        ws_col: COLS,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(&size, None).map_err(|e| format!("openpty: {e}"))?;
    let lines = mib * 1024 * 1024 / WIRE_LINE;
    let slave2 = pty.slave.try_clone().map_err(|e| e.to_string())?;
    let t = Instant::now();
    // The Command (and with it this process's copies of the slave) is
    // dropped at the end of the statement.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("yes {PAYLOAD_LINE} | head -n {lines}"))
        .stdin(Stdio::null())
        .stdout(Stdio::from(pty.slave))
        .stderr(Stdio::from(slave2))
        .spawn()
        .map_err(|e| format!("sh: {e}"))?;
    let mut master = File::from(pty.master);
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0u64;
    loop {
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            // EIO: every slave is closed and the buffer is drained.
            Err(e) if e.raw_os_error() == Some(5) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading the PTY: {e}")),
        }
        if t.elapsed() > TRANSFER_LIMIT {
            let _ = child.kill();
            return Err("the bare PTY transfer took too long".into());
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let _ = child.wait();
    if total != lines * WIRE_LINE {
        return Err(format!(
            "bare PTY: {total} bytes, not {}",
            lines * WIRE_LINE
        ));
    }
    Ok(total as f64 / 1048576.0 / secs)
}

/// Reference without a server: the `vt100` parser the server keeps each
/// screen in, fed the same bytes in 16 KiB chunks, on one core. MiB/s.
fn vt100_alone(mib: u64) -> f64 {
    let nz = |n: u16| std::num::NonZeroU16::new(n).unwrap_or(std::num::NonZeroU16::MIN);
    let mut parser = vt100::Parser::new(nz(ROWS), nz(COLS), 0);
    let chunk = format!("{PAYLOAD_LINE}\r\n").repeat(16 * 1024 / WIRE_LINE as usize);
    let n = mib * 1024 * 1024 / chunk.len() as u64;
    let t = Instant::now();
    for _ in 0..n {
        parser.process(chunk.as_bytes());
    }
    std::hint::black_box(parser.screen().cursor_position());
    (n * chunk.len() as u64) as f64 / 1048576.0 / t.elapsed().as_secs_f64()
}

// --- The report ---

fn row(name: &str, a: String, b: String) {
    println!("{name:<46} {a:>18} {b:>18}");
}

fn report(o: &Opts, sandbox: &Results, echo: &Results, refs: &(Res<f64>, f64), busy_before: f64) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!("warren serve benchmark, {date}");
    println!("{cores} cores ({cpu}), Linux {}", kernel.trim());
    println!(
        "warren's connections offer permessage-deflate: {}",
        if DEFLATE.load(Ordering::Relaxed) {
            "yes (--deflate)"
        } else {
            "no"
        }
    );
    println!(
        "machine busy before the run: {:.0} % (over 1 s)",
        busy_before * 100.0
    );
    println!();
    let dash = || "-".to_string();
    let label = |r: &Results, b: &str| {
        if r.tier.is_empty() {
            b.to_string()
        } else {
            format!("{b} (tier {})", r.tier)
        }
    };
    row("", label(sandbox, "sandbox"), label(echo, "echo"));
    let open_row = |name: &str, f: &dyn Fn(&Results) -> Option<Duration>| {
        row(
            name,
            f(sandbox).map_or_else(dash, ms),
            f(echo).map_or_else(dash, ms),
        );
    };
    let warm = |r: &Results, p: f64, f: fn(&Open) -> Duration| {
        (!r.warm.is_empty()).then(|| pct(&sorted(r.warm.iter().map(f).collect()), p))
    };
    println!("connect → first prompt (new terminal)");
    open_row("  cold: the user's first (starts the sandbox)", &|r| {
        r.cold.map(|c| c.prompt)
    });
    open_row(&format!("  warm p50 ({})", o.connections), &|r| {
        warm(r, 0.5, |x| x.prompt)
    });
    open_row(&format!("  warm p99 ({})", o.connections), &|r| {
        warm(r, 0.99, |x| x.prompt)
    });
    open_row("    WebSocket handshake done, p50", &|r| {
        warm(r, 0.5, |x| x.handshake)
    });
    open_row("    hello frame received, p50", &|r| {
        warm(r, 0.5, |x| x.hello)
    });
    let mem_open = |r: &Results, cold: bool, p: f64| {
        r.memory.as_ref().and_then(|m| {
            let v = if cold { &m.cold } else { &m.warm };
            (!v.is_empty()).then(|| pct(&sorted(v.clone()), p))
        })
    };
    open_row(
        &format!("  cold p50 over {} users (memory run)", o.users),
        &|r| mem_open(r, true, 0.5),
    );
    open_row(
        &format!("  cold p99 over {} users (memory run)", o.users),
        &|r| mem_open(r, true, 0.99),
    );
    println!("output throughput ({} MiB)", o.mib);
    let tp = |f: &dyn Fn(&Throughput) -> String| {
        (
            sandbox.throughput.as_ref().map_or_else(dash, f),
            echo.throughput.as_ref().map_or_else(dash, f),
        )
    };
    let (a, b) = tp(&|t| format!("{:.1} MiB/s", t.received as f64 / 1048576.0 / t.secs));
    row("  MiB/s", a, b);
    let (a, b) = tp(&|t| format!("{:.2} s", t.secs));
    row("  time", a, b);
    let (a, b) = tp(&|t| {
        format!(
            "{:.1} KiB",
            t.received as f64 / 1024.0 / t.frames.max(1) as f64
        )
    });
    row("  average output frame", a, b);
    let (a, b) = tp(&|t| format!("{:.2} cores", t.server_cpu));
    row("  warren serve CPU during it", a, b);
    let (a, b) = tp(&|t| format!("{:.2} cores", t.client_cpu));
    row("  bench client CPU during it", a, b);
    let (a, b) = tp(&|t| format!("{:.0} %", t.machine_busy * 100.0));
    row("  whole machine busy", a, b);
    let per_core = |r: &Results| {
        r.throughput.as_ref().map_or_else(dash, |t| {
            format!(
                "{:.1} MiB/s",
                t.received as f64 / 1048576.0 / t.secs / t.server_cpu.max(0.01)
            )
        })
    };
    row(
        "  MiB/s per core of warren serve CPU",
        per_core(sandbox),
        per_core(echo),
    );
    println!("  reference, no server, same bytes:");
    let bare = match &refs.0 {
        Ok(v) => format!("{v:.1} MiB/s"),
        Err(e) => format!("failed: {e}"),
    };
    println!("{:<46} {bare:>18}", "    bare PTY read in 16 KiB reads");
    println!(
        "{:<46} {:>18}",
        "    vt100 parser alone (one core)",
        format!("{:.1} MiB/s", refs.1)
    );
    println!("keystroke echo ({} samples)", o.keystrokes);
    let ech = |v: &Vec<Duration>, p: f64| (!v.is_empty()).then(|| pct(&sorted(v.clone()), p));
    open_row("  bash readline, p50", &|r| ech(&r.echo, 0.5));
    open_row("  bash readline, p99", &|r| ech(&r.echo, 0.99));
    open_row("  sh (kernel tty echo), p50", &|r| ech(&r.echo_kernel, 0.5));
    open_row("  sh (kernel tty echo), p99", &|r| {
        ech(&r.echo_kernel, 0.99)
    });
    let n = sandbox
        .memory
        .as_ref()
        .or(echo.memory.as_ref())
        .map_or(0, |m| m.terminals);
    println!("memory, {n} idle terminals with a viewer each");
    let mm = |f: &dyn Fn(&Memory) -> String| {
        (
            sandbox.memory.as_ref().map_or_else(dash, f),
            echo.memory.as_ref().map_or_else(dash, f),
        )
    };
    let mib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
    let (a, b) = mm(&|m| mib(m.rss_before.0));
    row("  server RSS before", a, b);
    let (a, b) = mm(&|m| mib(m.rss_after.0));
    row("  server RSS after", a, b);
    let (a, b) = mm(&|m| {
        format!(
            "{:.1} KiB",
            (m.rss_after.0 as f64 - m.rss_before.0 as f64) / m.terminals as f64
        )
    });
    row("  server RSS per terminal", a, b);
    let (a, b) = mm(&|m| {
        format!(
            "{:.1} KiB",
            (m.rss_after.1 as f64 - m.rss_before.1 as f64) / m.terminals as f64
        )
    });
    row("    of which anonymous", a, b);
    let labels: std::collections::BTreeSet<&String> = [sandbox, echo]
        .iter()
        .filter_map(|r| r.memory.as_ref())
        .flat_map(|m| m.procs.keys())
        .collect();
    println!("  processes under the server: count, RSS sum / PSS sum");
    for l in labels {
        let (a, b) = mm(&|m| {
            m.procs.get(l).map_or_else(dash, |(c, rss, pss)| {
                format!("{c}: {} / {}", mib(*rss), mib(*pss))
            })
        });
        row(&format!("    {l}"), a, b);
    }
    let (a, b) = mm(&|m| {
        let (rss, pss) = m.procs.values().fold((0, 0), |a, v| (a.0 + v.1, a.1 + v.2));
        format!(
            "{:.0} / {:.0} KiB",
            rss as f64 / m.terminals as f64,
            pss as f64 / m.terminals as f64
        )
    });
    row("  all of them per terminal, RSS / PSS", a, b);
    let (a, b) = mm(&|m| format!("{:.2} s", m.shutdown.as_secs_f64()));
    row(&format!("  SIGTERM → exit with {n} terminals"), a, b);
    for (name, r) in [("sandbox", sandbox), ("echo", echo)] {
        if !r.warnings.is_empty() {
            println!();
            println!(
                "{name} server log, {} WARN/ERROR lines; first:",
                r.warnings.len()
            );
            let mut seen = std::collections::BTreeSet::new();
            for w in &r.warnings {
                // Without the timestamp, to show each kind once.
                let key = w.split_once(" WARN ").map_or(w.as_str(), |x| x.1);
                if seen.insert(key.to_string()) && seen.len() <= 5 {
                    println!("  {w}");
                }
            }
        }
    }
}

/// Each headline figure of the external anchor beside warren's, with the
/// ratio warren ÷ anchor (below 1 is better for times, CPU and memory;
/// above 1 for throughput).
fn report_anchor(anchor: &Results, ours: &[(&str, &Results)], terminado: &Res<(String, String)>) {
    println!();
    let version = match terminado {
        Ok((_, v)) => v.clone(),
        Err(skip) => {
            println!("external anchor: {skip}");
            return;
        }
    };
    if anchor.throughput.is_none() {
        println!("external anchor: not measured (see the errors above)");
        return;
    }
    println!(
        "against the external anchor, terminado {} (Tornado {}), same client, shell and sizes",
        version.split(' ').next().unwrap_or("?"),
        version.split(' ').nth(1).unwrap_or("?")
    );
    println!("ratio = warren ÷ anchor");
    let mut head = format!("{:<40} {:>12}", "", "terminado");
    for (name, _) in ours {
        head += &format!(" {:>22}", name);
    }
    println!("{head}");
    type Figure = fn(&Results) -> Option<(f64, &'static str)>;
    let figures: [(&str, Figure); 9] = [
        ("output throughput", |r| {
            let t = r.throughput.as_ref()?;
            Some((t.received as f64 / 1048576.0 / t.secs, "MiB/s"))
        }),
        ("server CPU per MiB", |r| {
            let t = r.throughput.as_ref()?;
            Some((
                t.server_cpu * t.secs * 1000.0 / (t.received as f64 / 1048576.0),
                "ms",
            ))
        }),
        ("open a terminal, p50", |r| {
            (!r.warm.is_empty())
                .then(|| pct(&sorted(r.warm.iter().map(|x| x.prompt).collect()), 0.5))
                .map(|d| (d.as_secs_f64() * 1000.0, "ms"))
        }),
        ("open a terminal, p99", |r| {
            (!r.warm.is_empty())
                .then(|| pct(&sorted(r.warm.iter().map(|x| x.prompt).collect()), 0.99))
                .map(|d| (d.as_secs_f64() * 1000.0, "ms"))
        }),
        ("keystroke echo (bash readline), p50", |r| {
            (!r.echo.is_empty()).then(|| {
                (
                    pct(&sorted(r.echo.clone()), 0.5).as_secs_f64() * 1000.0,
                    "ms",
                )
            })
        }),
        ("keystroke echo (bash readline), p99", |r| {
            (!r.echo.is_empty()).then(|| {
                (
                    pct(&sorted(r.echo.clone()), 0.99).as_secs_f64() * 1000.0,
                    "ms",
                )
            })
        }),
        ("server RSS per idle terminal", |r| {
            let m = r.memory.as_ref()?;
            Some((
                (m.rss_after.0 as f64 - m.rss_before.0 as f64) / m.terminals as f64,
                "KiB",
            ))
        }),
        ("server CPU during the transfer", |r| {
            let t = r.throughput.as_ref()?;
            Some((t.server_cpu, "cores"))
        }),
        ("whole machine busy during it", |r| {
            let t = r.throughput.as_ref()?;
            Some((t.machine_busy * 100.0, "%"))
        }),
    ];
    for (name, f) in figures {
        let Some((a, unit)) = f(anchor) else {
            continue;
        };
        let mut line = format!("{name:<40} {:>12}", format!("{a:.2} {unit}"));
        for (_, r) in ours {
            let cell = match f(r) {
                Some((v, _)) if a > 0.0 => format!("{v:.2} ({:.2}×)", v / a),
                Some((v, _)) => format!("{v:.2}"),
                None => "-".into(),
            };
            line += &format!(" {cell:>22}");
        }
        println!("{line}");
    }
}

fn main() {
    let o = parse_opts();
    let bin_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let warren = bin_dir.join("warren");
    if !warren.exists() || !bin_dir.join("warren-shim").exists() {
        eprintln!(
            "bench-serve: {} or warren-shim is missing: run `cargo build --release --workspace`",
            warren.display()
        );
        std::process::exit(2);
    }
    let tmp = tempfile::Builder::new()
        .prefix("warren-bench-serve-")
        .tempdir()
        .expect("temporary directory");
    {
        // Sandbox users must be able to reach their homes below it.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // Other load on the machine makes every figure noisy: say so.
    let m0 = machine_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let m1 = machine_ticks();
    let busy_before = (m1.0 - m0.0) as f64 / (m1.1 - m0.1).max(1) as f64;
    if busy_before > 0.1 {
        eprintln!(
            "bench-serve: the machine is already {:.0} % busy: the figures will be noisy",
            busy_before * 100.0
        );
    }
    if let Some(n) = o.idle_terminals {
        print_capacity(&warren);
        let run = rt.block_on(scale(&warren, tmp.path(), &o, n));
        if o.keep {
            let dir = tmp.keep();
            eprintln!("bench-serve: kept {} (servers' logs: *.log)", dir.display());
        }
        if let Err(e) = run {
            eprintln!("bench-serve: scale run: {e}");
            std::process::exit(1);
        }
        return;
    }
    let (mut sandbox, mut echo, mut anchor) =
        (Results::default(), Results::default(), Results::default());
    let terminado = terminado_python();
    let mut failed = false;
    if !o.idle.is_empty() {
        let mut scales = Vec::new();
        for backend in ["terminado", "echo", "sandbox"] {
            if o.only.as_deref().is_some_and(|b| b != backend)
                || (backend == "terminado" && terminado.is_err())
            {
                continue;
            }
            let s = rt.block_on(first_terminal_scale(&warren, backend, tmp.path(), &o));
            failed |= s.is_err();
            scales.push((backend, s));
        }
        if let Err(skip) = &terminado {
            eprintln!("bench-serve: {skip}");
        }
        report_scale(&o, &scales, &terminado);
        if o.keep {
            let dir = tmp.keep();
            eprintln!("bench-serve: kept {} (servers' logs: *.log)", dir.display());
        } else {
            drop(tmp);
        }
        std::process::exit(i32::from(failed));
    }
    eprintln!("[reference] bare PTY and vt100 alone: {} MiB each", o.mib);
    let refs = (bare_pty(o.mib), vt100_alone(o.mib));
    // The anchors first, then the sandboxes: same order for every phase.
    for (backend, r) in [
        ("terminado", &mut anchor),
        ("echo", &mut echo),
        ("sandbox", &mut sandbox),
    ] {
        if o.only.as_deref().is_some_and(|b| b != backend) {
            continue;
        }
        if backend == "terminado" {
            if let Err(skip) = &terminado {
                eprintln!("bench-serve: {skip}");
                continue;
            }
        }
        let run = rt.block_on(async {
            latency_and_throughput(&warren, backend, tmp.path(), &o, r).await?;
            memory(&warren, backend, tmp.path(), &o, r).await
        });
        if let Err(e) = run {
            eprintln!("bench-serve: {backend} backend: {e}");
            failed = true;
        }
    }
    report(&o, &sandbox, &echo, &refs, busy_before);
    report_anchor(
        &anchor,
        &[("sandbox", &sandbox), ("echo", &echo)],
        &terminado,
    );
    if o.keep {
        let dir = tmp.keep();
        eprintln!("bench-serve: kept {} (servers' logs: *.log)", dir.display());
    }
    if failed {
        std::process::exit(1);
    }
}
