//! Past one machine (docs/scale-out.md): three `warren serve` nodes, each
//! in a network namespace of its own behind a bridge this test makes, with
//! two HAProxy peers in front running deploy/haproxy's configuration (the
//! users placed through one are routed alike through the other). New users are
//! spread least-loaded; each user's logins, terminal reattach and API calls
//! reach their home's node; a draining node takes no new users; the drain
//! procedure (deploy/haproxy/move-user.sh) moves a user with their home; a
//! killed node's users get the "unavailable" page, never another node,
//! while the others keep working. Root only (network namespaces); under
//! CI=true it must run. Everything made is removed at the end, by name and
//! by pid.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const NODES: usize = 3;
const MAX_USERS: usize = 20;
/// Users node0 has before the others are placed.
const PRELOADED: usize = 6;
const ADMIN: &str = "scale-out-admin-token-0123456789abcdefghijkl";
const SECRET: &str = "scale-out-jwt-secret-0123456789abcdefghijklm";
/// How often HAProxy asks the agents and checks health, in the test.
const INTER: Duration = Duration::from_millis(300);

fn must_run() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var("WARREN_MUST_RUN").is_ok_and(|v| v == "1")
}

/// Why this host cannot run the test, if it cannot.
fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (network namespaces, a bridge)".into());
    }
    if std::env::var("WARREN_TEST_MODE").is_ok_and(|m| m != "root") {
        return Some("runs in the root mode only".into());
    }
    for tool in ["ip", "haproxy", "socat", "jq", "curl"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("{tool} is not installed (.ci/run installs it)"));
        }
    }
    None
}

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

/// The pool: a bridge, three namespaces with a node each, HAProxy.
struct Lab {
    tag: String,
    dir: tempfile::TempDir,
    subnet: String,
    nodes: Vec<Option<Child>>,
    /// Two HAProxy peers: their stick tables are one.
    haproxy: Vec<Child>,
    lbs: [SocketAddr; 2],
    sockets: [PathBuf; 2],
}

impl Lab {
    fn bridge(&self) -> String {
        format!("{}b", self.tag)
    }
    fn netns(&self, i: usize) -> String {
        format!("{}-n{i}", self.tag)
    }
    fn node_addr(&self, i: usize) -> SocketAddr {
        format!("{}.{}:8080", self.subnet, 11 + i).parse().unwrap()
    }
    fn node_url(&self, i: usize) -> String {
        format!("http://{}", self.node_addr(i))
    }

    fn start() -> Lab {
        let pid = std::process::id();
        let tag = format!("wso{}", pid % 100_000);
        // 10.213.N.0/24, N from the pid: two runs at once do not meet.
        let subnet = format!("10.213.{}", pid % 250 + 1);
        let dir = tempfile::tempdir().unwrap();
        let mut lab = Lab {
            tag,
            sockets: [0, 1].map(|i| dir.path().join(format!("haproxy{i}.sock"))),
            dir,
            subnet,
            nodes: Vec::new(),
            haproxy: Vec::new(),
            lbs: [0, 1].map(|_| format!("127.0.0.1:{}", free_port()).parse().unwrap()),
        };
        let br = lab.bridge();
        run(&["ip", "link", "add", &br, "type", "bridge"]);
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}.1/24", lab.subnet),
            "dev",
            &br,
        ]);
        run(&["ip", "link", "set", &br, "up"]);
        std::fs::write(lab.dir.path().join("jwt-secret"), SECRET).unwrap();
        std::fs::write(lab.dir.path().join("admin-token"), ADMIN).unwrap();
        for f in ["jwt-secret", "admin-token"] {
            run(&["chmod", "600", lab.dir.path().join(f).to_str().unwrap()]);
        }
        for i in 0..NODES {
            let ns = lab.netns(i);
            let veth = format!("{}v{i}", lab.tag);
            run(&["ip", "netns", "add", &ns]);
            run(&[
                "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            run(&["ip", "link", "set", &veth, "master", &br, "up"]);
            let ip = format!("{}.{}/24", lab.subnet, 11 + i);
            run(&["ip", "-n", &ns, "addr", "add", &ip, "dev", "eth0"]);
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            let child = lab.start_node(i);
            lab.nodes.push(Some(child));
        }
        for i in 0..NODES {
            lab.wait_healthy(i);
        }
        lab.start_haproxy();
        lab
    }

    fn start_node(&self, i: usize) -> Child {
        let home = self.dir.path().join(format!("node{i}"));
        std::fs::create_dir_all(&home).unwrap();
        let log = std::fs::File::create(home.join("log")).unwrap();
        let addr = self.node_addr(i);
        Command::new("ip")
            .args(["netns", "exec", &self.netns(i)])
            .arg(env!("CARGO_BIN_EXE_warren"))
            .arg("serve")
            .args(["--listen", &addr.to_string()])
            .args(["--auth", "jwt", "--jwt-secret-file"])
            .arg(self.dir.path().join("jwt-secret"))
            .arg("--admin-token-file")
            .arg(self.dir.path().join("admin-token"))
            .arg("--state-dir")
            .arg(home.join("state"))
            .arg("--workspace-root")
            .arg(home.join("homes"))
            .args(["--uid-base", &(1_950_000_000 + i * 100_000).to_string()])
            .args(["--node-id", &format!("node{i}")])
            .args(["--max-users", &MAX_USERS.to_string()])
            .args(["--agent-listen", &format!("{}:8081", addr.ip())])
            .args(["--public-url", &format!("http://{}", self.lbs[0])])
            .args(["--public-url", &format!("http://{}", self.lbs[1])])
            .args(["--stop-when-no-terminals", "--isolation", "namespaces"])
            .env("WARREN_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start a node")
    }

    fn wait_healthy(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = self.node_addr(i);
        loop {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node{i} did not start: {}",
                self.node_log(i)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn node_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node{i}/log"))).unwrap_or_default()
    }

    fn nodes_list(&self) -> String {
        (0..NODES)
            .map(|i| format!("node{i}={}", self.node_addr(i)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The sockets as move-user.sh and sync-homes.sh take them.
    fn sockets_list(&self) -> String {
        format!(
            "{} {}",
            self.sockets[0].display(),
            self.sockets[1].display()
        )
    }

    fn haproxy_env(&self, cmd: &mut Command, i: usize) {
        cmd.env("WARREN_LB_BIND", self.lbs[i].to_string())
            .env("WARREN_LB_SOCKET", &self.sockets[i])
            .env("WARREN_LB_PEER", format!("lb{i}"))
            .env("WARREN_LB_PAGES", repo().join("deploy/haproxy/pages"))
            .env("WARREN_JWT_SECRET", SECRET);
    }

    fn start_haproxy(&mut self) {
        let out = Command::new(repo().join("deploy/haproxy/render.sh"))
            .env("WARREN_NODES", self.nodes_list())
            .env(
                "WARREN_LB_PEERS",
                format!(
                    "lb0=127.0.0.1:{} lb1=127.0.0.1:{}",
                    free_port(),
                    free_port()
                ),
            )
            .env("WARREN_AGENT_INTER", format!("{}ms", INTER.as_millis()))
            .env("WARREN_CHECK_INTER", format!("{}ms", INTER.as_millis()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cfg = self.dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, &out.stdout).unwrap();
        let mut check = Command::new("haproxy");
        check.args(["-dW", "-c", "-f"]).arg(&cfg);
        self.haproxy_env(&mut check, 0);
        let out = check.output().unwrap();
        assert!(
            out.status.success(),
            "haproxy -c: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for i in 0..2 {
            let log =
                std::fs::File::create(self.dir.path().join(format!("haproxy{i}.log"))).unwrap();
            let mut cmd = Command::new("haproxy");
            cmd.args(["-db", "-f"])
                .arg(&cfg)
                .stdout(log)
                .stderr(Stdio::null());
            self.haproxy_env(&mut cmd, i);
            self.haproxy.push(cmd.spawn().expect("start haproxy"));
        }
        // Every node up, and its agent heard, by both.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let stat = self.runtime(0, "show stat") + &self.runtime(1, "show stat");
            let up = stat
                .lines()
                .filter(|l| l.starts_with("warren,node"))
                .filter(|l| l.split(',').nth(17) == Some("UP"))
                .count();
            if up == 2 * NODES {
                std::thread::sleep(INTER * 3);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "HAProxy never saw the nodes up:\n{stat}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A command on HAProxy `i`'s runtime API.
    fn runtime(&self, i: usize, command: &str) -> String {
        let out = Command::new("socat")
            .args(["-t", "5", "stdio"])
            .arg(format!("unix-connect:{}", self.sockets[i].display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin
                    .take()
                    .unwrap()
                    .write_all(format!("{command}\n").as_bytes())?;
                c.wait_with_output()
            });
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    fn kill_node(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for mut h in self.haproxy.drain(..) {
            let _ = h.kill();
            let _ = h.wait();
        }
        for i in 0..self.nodes.len() {
            if let Some(c) = self.nodes[i].as_mut() {
                // SIGTERM first: the node stops its sandboxes.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(c.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        for i in 0..self.nodes.len() {
            if let Some(mut c) = self.nodes[i].take() {
                let deadline = Instant::now() + Duration::from_secs(15);
                while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for i in 0..NODES {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.netns(i)])
                .status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .stderr(Stdio::null())
            .status();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn jwt(user: &str) -> String {
    warren::web::mint_token(SECRET.as_bytes(), user, Duration::from_secs(3600))
}

/// An admin API call; the status, the answering node and the body.
async fn admin_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, String, String) {
    let auth = format!("Bearer {ADMIN}");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut headers = vec![("authorization", auth.as_str())];
    if !body.is_empty() {
        headers.push(("content-type", "application/json"));
    }
    let r = http_request(addr, method, path, &headers, &body).await;
    let node = r.header("x-warren-node").unwrap_or("").to_string();
    (r.status, node, r.body)
}

/// A user's login through the pool; the status, the node, the response.
async fn login(lb: SocketAddr, user: &str) -> (u16, String, HttpResponse) {
    let r = http_get(lb, &format!("/login?token={}", jwt(user)), &[]).await;
    let node = r.header("x-warren-node").unwrap_or("").to_string();
    (r.status, node, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_behind_haproxy() {
    if let Some(why) = unavailable() {
        if must_run() {
            panic!("test cannot run here and CI requires it to: {why}");
        }
        eprintln!("SKIP: {why}");
        return;
    }
    let mut lab = tokio::task::spawn_blocking(Lab::start).await.unwrap();
    let lb = lab.lbs[0];
    let lb_peer = lab.lbs[1];

    // 1. Thirty users, six of them already on node0 (made there directly,
    // then put in HAProxy's table by sync-homes.sh), the others created
    // through the pool: least-loaded, so each node ends near ten (a
    // round-robin would give node0 six more than the others).
    let mut home: BTreeMap<String, String> = BTreeMap::new();
    for k in 0..PRELOADED {
        let user = format!("u{k:02}");
        let (status, _, body) = admin_call(
            lab.node_addr(0),
            "POST",
            "/api/users",
            Some(json!({"id": user})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        home.insert(user, "node0".into());
    }
    let out = tokio::task::spawn_blocking({
        let nodes = (0..NODES)
            .map(|i| format!("node{i}={}", lab.node_url(i)))
            .collect::<Vec<_>>()
            .join(" ");
        let socket = lab.sockets_list();
        move || {
            Command::new(repo().join("deploy/haproxy/sync-homes.sh"))
                .env("WARREN_NODES", nodes)
                .env("WARREN_ADMIN_TOKEN", ADMIN)
                .env("WARREN_LB_SOCKETS", socket)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "sync-homes.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("node0 (id 1): {PRELOADED} users")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    tokio::time::sleep(INTER * 3).await;
    for k in PRELOADED..30 {
        let user = format!("u{k:02}");
        let (status, node, body) =
            admin_call(lb, "POST", "/api/users", Some(json!({"id": user}))).await;
        assert_eq!(status, 201, "{user}: {body}");
        assert!(node.starts_with("node"), "{user}: no X-Warren-Node");
        home.insert(user, node);
        // Let the agents report the new count.
        tokio::time::sleep(INTER * 2).await;
    }
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for n in home.values() {
        *per_node.entry(n).or_default() += 1;
    }
    eprintln!("placement: {per_node:?}");
    assert_eq!(per_node.len(), NODES, "{per_node:?}");
    for (n, count) in &per_node {
        assert!(
            (9..=11).contains(count),
            "{n} got {count} of 30: {per_node:?}"
        );
    }
    for i in 0..NODES {
        let (_, _, body) = admin_call(lab.node_addr(i), "GET", "/api/node", None).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["users"]["used"],
            per_node[format!("node{i}").as_str()],
            "{v}"
        );
    }

    // 2. Each user's login and API calls reach their home's node, through
    // either HAProxy: the peers share the table.
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.runtime(1, "show table warren").matches("gpt0=").count() < home.len() {
        assert!(
            Instant::now() < deadline,
            "the peer never learned the table:\n{}",
            lab.runtime(1, "show table warren")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (k, (user, node)) in home.iter().enumerate() {
        let via = if k % 2 == 0 { lb } else { lb_peer };
        let (status, at, r) = login(via, user).await;
        assert_eq!(status, 303, "{user}: {}", r.body);
        assert_eq!(&at, node, "{user}'s login via {via}");
        let (status, at, _) = admin_call(via, "GET", &format!("/api/users/{user}"), None).await;
        assert_eq!(status, 200);
        assert_eq!(&at, node, "{user}'s API call");
    }

    // 3. A terminal, closed and reattached through the pool, for one user
    // of each node: the terminal exists on the home node only.
    let mut firsts: BTreeMap<String, String> = BTreeMap::new();
    for (user, node) in &home {
        firsts.entry(node.clone()).or_insert(user.clone());
    }
    for user in firsts.values() {
        let token = jwt(user);
        let mut c = Client::connect(lb, &format!("/ws?token={token}"), &[])
            .await
            .expect("terminal through the pool");
        c.expect_hello().await;
        let id = c.terminal_id();
        c.run("echo rea$((1+1))ttach", "rea2ttach").await;
        c.close().await;
        let mut again = Client::connect(lb, &format!("/ws/{id}?token={token}"), &[])
            .await
            .unwrap_or_else(|s| panic!("{user}: reattach through the pool: {s}"));
        again.expect_hello().await;
        again.run("echo sec$((1+1))ond", "sec2ond").await;
        again.close().await;
    }

    // 4. A draining node takes no new users (and says so to its agent).
    let drained = 2;
    let (status, _, body) = admin_call(
        lab.node_addr(drained),
        "PUT",
        "/api/node",
        Some(json!({"state": "draining"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(INTER * 4).await;
    for k in 0..4 {
        let user = format!("v{k}");
        let (status, node, body) =
            admin_call(lb, "POST", "/api/users", Some(json!({"id": user}))).await;
        assert_eq!(status, 201, "{body}");
        assert_ne!(
            node,
            format!("node{drained}"),
            "{user} placed on a draining node"
        );
        home.insert(user, node);
    }
    // Its own users still reach it.
    let user = firsts[&format!("node{drained}")].clone();
    let (status, at, _) = login(lb, &user).await;
    assert_eq!(
        (status, at.as_str()),
        (303, format!("node{drained}").as_str())
    );

    // 5. The drain procedure moves a user, home included.
    let (status, _, body) = admin_call(
        lb,
        "POST",
        &format!("/api/users/{user}/exec"),
        Some(
            json!({"argv": ["sh", "-c", "mkdir -p notes && echo kept-across-nodes > notes/a.txt"]}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let target = 0;
    let out = tokio::task::spawn_blocking({
        let (from, to) = (lab.node_url(drained), lab.node_url(target));
        let socket = lab.sockets_list();
        let user = user.clone();
        move || {
            Command::new(repo().join("deploy/haproxy/move-user.sh"))
                .args([&user, &from, &to, &(target + 1).to_string()])
                .env("WARREN_ADMIN_TOKEN", ADMIN)
                .env("WARREN_LB_SOCKETS", socket)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "move-user.sh: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, at, body) = admin_call(
        lb,
        "POST",
        &format!("/api/users/{user}/exec"),
        Some(json!({"argv": ["cat", "notes/a.txt"]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(at, format!("node{target}"), "{user} after the move");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["stdout"], "kept-across-nodes\n", "{v}");
    let (status, at, _) = login(lb, &user).await;
    assert_eq!(
        (status, at.as_str()),
        (303, format!("node{target}").as_str())
    );
    let (status, _, _) = admin_call(
        lab.node_addr(drained),
        "GET",
        &format!("/api/users/{user}"),
        None,
    )
    .await;
    assert_eq!(status, 404, "the old node forgot {user}");
    home.insert(user.clone(), format!("node{target}"));

    // 6. A killed node: its users get the clear error page, never another
    // node; everyone else keeps working.
    let killed = 1;
    lab.kill_node(killed);
    tokio::time::sleep(INTER * 6).await;
    let killed_name = format!("node{killed}");
    for (user, node) in &home {
        let (status, at, r) = login(lb, user).await;
        if *node == killed_name {
            assert_eq!(status, 503, "{user}: {}", r.body);
            assert_eq!(at, "", "{user} was answered by another node");
            assert_eq!(r.header("x-warren-home-down"), Some(killed_name.as_str()));
            assert!(
                r.body.contains("Your workspace is unavailable"),
                "{}",
                r.body
            );
        } else {
            assert_eq!(
                (status, &at),
                (303, node),
                "{user} while {killed_name} is down"
            );
        }
    }
    drop(lab);
}
