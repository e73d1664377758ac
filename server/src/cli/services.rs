//! `warren services list|create|show|logs|start|stop|restart|delete`: a
//! tenant's named services (docs/services.md). They run in the server,
//! so the command asks it over its admin API
//! (`/api/users/{user}/services`), as `warren node` does.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

use super::args::read_secret_file;
use super::StoreArgs;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Restart {
    OnFailure,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum ServicesCommand {
    /// List a user's services (name, state, restarts).
    List {
        user: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create a service and start it (unless --disabled).
    Create {
        user: String,
        name: String,
        /// Working directory relative to the home [default: sandboxes/NAME].
        #[arg(long)]
        cwd: Option<String>,
        /// Set an environment variable (KEY=VALUE).
        #[arg(long = "env", short, value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Exported to the command as PORT.
        #[arg(long)]
        port: Option<u16>,
        #[arg(long, value_enum, default_value = "on-failure")]
        restart: Restart,
        /// Store it without starting it (nor with the server).
        #[arg(long)]
        disabled: bool,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Show one service (JSON).
    Show { user: String, name: String },
    /// Print the service's output (the last bytes kept).
    Logs {
        user: String,
        name: String,
        /// Only the last N bytes.
        #[arg(long)]
        bytes: Option<u64>,
        /// Then keep printing its output as it comes.
        #[arg(long, short)]
        follow: bool,
    },
    /// Start a service and mark it enabled.
    Start { user: String, name: String },
    /// Stop a service and mark it disabled.
    Stop { user: String, name: String },
    /// Stop a service if it runs and start it again.
    Restart { user: String, name: String },
    /// Stop a service and remove it.
    Delete { user: String, name: String },
}

#[derive(Debug, Args)]
pub struct ServicesArgs {
    #[command(subcommand)]
    pub command: ServicesCommand,
    /// The running server's address.
    #[arg(
        long,
        global = true,
        env = "WARREN_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// File holding the admin token [default: STATE_DIR/admin-token].
    #[arg(
        long,
        global = true,
        env = "WARREN_ADMIN_TOKEN_FILE",
        value_name = "FILE"
    )]
    pub admin_token_file: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// A path segment, percent-encoded (ids may hold `@`, spaces, non-ASCII).
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub fn services(a: ServicesArgs) -> i32 {
    let path = a
        .admin_token_file
        .clone()
        .unwrap_or_else(|| a.store.settings().state_dir.join("admin-token"));
    let token = match read_secret_file(&path) {
        Ok(t) => String::from_utf8_lossy(&t).trim().to_string(),
        Err(e) => {
            eprintln!("warren services: {e}");
            return 2;
        }
    };
    let base = a.url.trim_end_matches('/');
    let one = |user: &str, name: &str, tail: &str| {
        format!(
            "{base}/api/users/{}/services/{}{tail}",
            segment(user),
            segment(name)
        )
    };
    let (method, url, body, table) = match &a.command {
        ServicesCommand::List { user, json } => (
            "GET",
            format!("{base}/api/users/{}/services", segment(user)),
            None,
            !json,
        ),
        ServicesCommand::Create {
            user,
            name,
            cwd,
            env,
            port,
            restart,
            disabled,
            command,
        } => {
            let mut vars = serde_json::Map::new();
            for kv in env {
                let Some((k, v)) = kv.split_once('=') else {
                    eprintln!("warren services: --env {kv:?}: expected KEY=VALUE");
                    return 2;
                };
                vars.insert(k.into(), Value::String(v.into()));
            }
            let restart = match restart {
                Restart::OnFailure => "on-failure",
                Restart::Always => "always",
                Restart::Never => "never",
            };
            let body = json!({"name": name, "argv": command, "cwd": cwd, "env": vars,
                "port": port, "restart": restart, "enabled": !disabled});
            (
                "POST",
                format!("{base}/api/users/{}/services", segment(user)),
                Some(body),
                false,
            )
        }
        ServicesCommand::Show { user, name } => ("GET", one(user, name, ""), None, false),
        ServicesCommand::Logs {
            user,
            name,
            bytes,
            follow,
        } => {
            let mut q = Vec::new();
            if let Some(b) = bytes {
                q.push(format!("bytes={b}"));
            }
            if *follow {
                q.push("follow=1".into());
            }
            let query = if q.is_empty() {
                String::new()
            } else {
                format!("?{}", q.join("&"))
            };
            return logs(&one(user, name, &format!("/logs{query}")), &token, *follow);
        }
        ServicesCommand::Start { user, name } => ("POST", one(user, name, "/start"), None, false),
        ServicesCommand::Stop { user, name } => ("POST", one(user, name, "/stop"), None, false),
        ServicesCommand::Restart { user, name } => {
            ("POST", one(user, name, "/restart"), None, false)
        }
        ServicesCommand::Delete { user, name } => ("DELETE", one(user, name, ""), None, false),
    };
    match call(method, &url, &token, body.as_ref()) {
        Ok((204, _)) => 0,
        Ok((200 | 201, text)) => {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            if table {
                print_table(&v);
            } else {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            }
            0
        }
        Ok((status, text)) => {
            eprintln!("warren services: {status}: {}", error_of(&text));
            1
        }
        Err(e) => {
            eprintln!("warren services: {url}: {e}");
            1
        }
    }
}

fn error_of(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| text.trim().to_string())
}

fn print_table(v: &Value) {
    println!("{:<24} {:<12} {:>8}  COMMAND", "NAME", "STATE", "RESTARTS");
    for s in v["services"].as_array().into_iter().flatten() {
        let argv: Vec<&str> = s["argv"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "{:<24} {:<12} {:>8}  {}",
            s["name"].as_str().unwrap_or_default(),
            s["state"].as_str().unwrap_or_default(),
            s["restarts"],
            argv.join(" ")
        );
    }
}

fn agent(timeout: Option<Duration>) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(timeout)
        .build()
        .into()
}

fn call(
    method: &str,
    url: &str,
    token: &str,
    body: Option<&Value>,
) -> Result<(u16, String), ureq::Error> {
    let agent = agent(Some(Duration::from_secs(60)));
    let auth = format!("Bearer {token}");
    let mut res = match (method, body) {
        ("POST", Some(b)) => agent
            .post(url)
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .send(b.to_string())?,
        ("POST", None) => agent
            .post(url)
            .header("authorization", &auth)
            .send_empty()?,
        ("DELETE", _) => agent.delete(url).header("authorization", &auth).call()?,
        _ => agent.get(url).header("authorization", &auth).call()?,
    };
    let status = res.status().as_u16();
    let text = res.body_mut().read_to_string()?;
    Ok((status, text))
}

/// Copies the output to stdout as it comes (with `follow`, until the
/// service is deleted or the command interrupted).
fn logs(url: &str, token: &str, follow: bool) -> i32 {
    let timeout = (!follow).then_some(Duration::from_secs(60));
    let res = agent(timeout)
        .get(url)
        .header("authorization", &format!("Bearer {token}"))
        .call();
    let mut res = match res {
        Ok(r) => r,
        Err(e) => {
            eprintln!("warren services: {url}: {e}");
            return 1;
        }
    };
    let status = res.status().as_u16();
    if status != 200 {
        let text = res.body_mut().read_to_string().unwrap_or_default();
        eprintln!("warren services: {status}: {}", error_of(&text));
        return 1;
    }
    let mut reader = res.body_mut().with_config().limit(u64::MAX).reader();
    let mut out = std::io::stdout().lock();
    let mut buf = [0u8; 8192];
    loop {
        match std::io::Read::read(&mut reader, &mut buf) {
            Ok(0) => return 0,
            Ok(n) => {
                if out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
                    return 0;
                }
            }
            Err(e) => {
                eprintln!("warren services: {url}: {e}");
                return 1;
            }
        }
    }
}
