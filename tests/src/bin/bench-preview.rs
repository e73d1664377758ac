//! Preview proxy benchmark: latency (p50/p99) and throughput of requests
//! to an app in a sandbox through its preview URL, beside the same
//! requests made inside the sandbox (the anchor), in the same run.
//!
//!     cargo build --release --workspace && target/release/bench-preview
//!
//! The bench runs a `warren serve` in this process (the sandbox backend,
//! `--auth jwt`, state and homes in a temporary directory), starts
//! `python3 -m http.server` in user `bench`'s sandbox, and runs one client
//! (a short python3 script: a new connection per request, as the app is
//! HTTP/1.0) twice: inside the sandbox against 127.0.0.1:8001, and on the
//! host against `http://8001-bench.localhost:<port>/` with the user's
//! token. The same client on both sides, so the ratio is what the proxy
//! (a connection to warren, the connector's round trip, a second hop)
//! costs. Needs what sandboxes need (root, or user namespaces).
//!
//! Options (defaults in brackets): `--requests N` \[2000\], `--mib N` \[256\].

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use warren::web::{Auth, ServeConfig, Server};
use warren_domain::backend::{ExecCommand, ExecStdio, Stream};
use warren_domain::sandbox::Settings;
use warren_domain::sandboxes::SandboxBackend;
use warren_domain::sessions::SessionLimits;
use warren_domain::user::UserId;

const SECRET: &[u8] = b"bench-preview-secret-0123456789abcdefghijklmnop";
const APP_PORT: u16 = 8001;

/// The client, the same on both sides: prints one JSON line.
const CLIENT: &str = r#"
import socket, sys, time, json
host, port, name, auth, n, big = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6]
def get(path):
    s = socket.create_connection((host, port))
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n%sConnection: close\r\n\r\n" % (path, name, auth)).encode())
    total, head = 0, b""
    while True:
        b = s.recv(1 << 20)
        if not b: break
        if total == 0 and not head: head = b[:12]
        total += len(b)
    s.close()
    if not head.startswith(b"HTTP/1.") or b" 200" not in head:
        sys.exit("bad answer: %r" % head)
    return total
for _ in range(50): get("/small")
lat = []
for _ in range(n):
    t = time.perf_counter(); get("/small"); lat.append(time.perf_counter() - t)
lat.sort()
get(big)
t = time.perf_counter(); total = get(big); dt = time.perf_counter() - t
print(json.dumps({"p50": lat[len(lat)//2], "p99": lat[int(len(lat)*0.99)], "bytes": total, "seconds": dt}))
"#;

struct Opts {
    requests: usize,
    mib: u64,
}

fn opts() -> Opts {
    let mut o = Opts {
        requests: 2000,
        mib: 256,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().and_then(|v| v.parse::<u64>().ok());
        match (flag.as_str(), value) {
            ("--requests", Some(v)) => o.requests = v as usize,
            ("--mib", Some(v)) => o.mib = v,
            _ => {
                eprintln!("usage: bench-preview [--requests N] [--mib N]");
                std::process::exit(2);
            }
        }
    }
    o
}

#[derive(Debug)]
struct Run {
    p50: f64,
    p99: f64,
    mib_per_s: f64,
}

fn parse(out: &str) -> Result<Run, String> {
    let line = out.lines().last().unwrap_or("");
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("client said {out:?}: {e}"))?;
    let f = |k: &str| v[k].as_f64().ok_or(format!("no {k} in {line}"));
    Ok(Run {
        p50: f("p50")?,
        p99: f("p99")?,
        mib_per_s: f("bytes")? / f("seconds")? / (1 << 20) as f64,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if let Err(e) = run(opts()).await {
        eprintln!("bench-preview: {e}");
        std::process::exit(1);
    }
}

async fn run(o: Opts) -> Result<(), String> {
    let tmp = tempfile::Builder::new()
        .prefix("bench-preview-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711));
    }
    let settings = Settings {
        state_dir: tmp.path().join("state"),
        workspace_root: tmp.path().join("ws"),
        uid_base: 1_900_000_000,
    };
    let mut shim = std::env::current_exe().map_err(|e| e.to_string())?;
    shim.set_file_name("warren-shim");
    // No CPU quota: the client inside must not be throttled where the one
    // outside is not (both share the machine's cores alike).
    let limits = warren_runtime::cgroups::Limits {
        memory_bytes: Some(1 << 30),
        cpu: None,
        pids: Some(512),
    };
    let backend = SandboxBackend::new(settings, limits, false).with_shim(shim);
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().expect("an address"),
        auth: Auth::jwt(SECRET.to_vec()),
        allowed_origins: Vec::new(),
        limits: SessionLimits::default(),
        shutdown_timeout: Duration::from_secs(10),
        management: None,
        web: Default::default(),
        node: Default::default(),
    };
    let server = Server::bind(config, Arc::new(backend))
        .await
        .map_err(|e| e.to_string())?;
    let addr = server.local_addr();
    let state = server.state().clone();
    let stop = server.shutdown_handle();
    let serving = tokio::spawn(server.run());

    let user = UserId::parse("bench").map_err(|e| e.to_string())?;
    let lease = state
        .registry()
        .lease(&user)
        .await
        .map_err(|e| e.to_string())?;
    let sandbox = Arc::clone(lease.sandbox());
    let sh = |line: String| ExecCommand {
        argv: vec!["sh".into(), "-c".into(), line],
        ..Default::default()
    };
    let quiet = || ExecStdio {
        stdin: Stream::Null,
        stdout: Stream::Null,
        stderr: Stream::Null,
    };
    // The app's files, then the app, which runs for the whole bench.
    let mut prep = sandbox
        .exec(
            sh(format!(
                "mkdir -p ~/app && echo hello > ~/app/small && head -c {}M /dev/zero > ~/app/big",
                o.mib
            )),
            quiet(),
        )
        .await
        .map_err(|e| e.to_string())?;
    prep.process.wait().await;
    let mut app = sandbox
        .exec(
            sh(format!(
                "cd ~/app && exec python3 -m http.server {APP_PORT} --bind 127.0.0.1"
            )),
            quiet(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let n = o.requests.to_string();
    // Inside: the same client against the app directly.
    let inside = {
        let mut started = None;
        for _ in 0..100 {
            let child = sandbox
                .exec(
                    ExecCommand {
                        argv: vec![
                            "python3".into(),
                            "-c".into(),
                            CLIENT.into(),
                            "127.0.0.1".into(),
                            APP_PORT.to_string(),
                            format!("127.0.0.1:{APP_PORT}"),
                            String::new(),
                            n.clone(),
                            "/big".into(),
                        ],
                        ..Default::default()
                    },
                    ExecStdio {
                        stdin: Stream::Null,
                        stdout: Stream::Piped,
                        stderr: Stream::Piped,
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
            let out = read_all(child).await;
            if out.contains("\"p50\"") {
                started = Some(out);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await; // the app is not up yet
        }
        parse(&started.ok_or("the app in the sandbox never answered")?)?
    };
    // Through the preview: the same client on the host.
    let token = warren::web::mint_token(SECRET, "bench", Duration::from_secs(3600));
    let through = {
        let out = tokio::task::spawn_blocking({
            let n = n.clone();
            move || {
                Command::new("python3")
                    .args(["-c", CLIENT, "127.0.0.1", &addr.port().to_string()])
                    .arg(format!("{APP_PORT}-bench.localhost:{}", addr.port()))
                    .arg(format!("Authorization: Bearer {token}\r\n"))
                    .args([n.as_str(), "/big"])
                    .output()
            }
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("python3: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "the client through the preview failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        parse(&String::from_utf8_lossy(&out.stdout))?
    };
    app.process.kill();
    app.process.wait().await;
    drop(lease);
    stop.shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(20), serving).await;

    let ms = |s: f64| s * 1000.0;
    println!(
        "preview proxy, {} requests (a new connection each) and a {} MiB download, python3 http.server in the sandbox (no CPU quota)\n",
        o.requests, o.mib
    );
    println!(
        "{:<22} {:>16} {:>18} {:>14}",
        "", "inside (anchor)", "through preview", "ratio / added"
    );
    println!(
        "{:<22} {:>13.3} ms {:>15.3} ms {:>+11.3} ms",
        "latency p50",
        ms(inside.p50),
        ms(through.p50),
        ms(through.p50 - inside.p50)
    );
    println!(
        "{:<22} {:>13.3} ms {:>15.3} ms {:>+11.3} ms",
        "latency p99",
        ms(inside.p99),
        ms(through.p99),
        ms(through.p99 - inside.p99)
    );
    println!(
        "{:<22} {:>10.0} MiB/s {:>12.0} MiB/s {:>14.2}",
        "download throughput",
        inside.mib_per_s,
        through.mib_per_s,
        through.mib_per_s / inside.mib_per_s
    );
    Ok(())
}

async fn read_all(mut child: warren_domain::backend::ExecChild) -> String {
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut s = String::new();
        if let Some(mut o) = stdout {
            let _ = o.read_to_string(&mut s);
        }
        if let Some(mut e) = stderr {
            let _ = e.read_to_string(&mut s);
        }
        s
    })
    .await
    .unwrap_or_default();
    child.process.wait().await;
    out
}
