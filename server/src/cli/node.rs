//! `warren node show|drain|undrain`: this node's state in a pool behind a
//! load balancer (docs/scale-out.md). The state lives in the running
//! server, so the command asks it over its admin API (`/api/node`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::args::read_secret_file;
use super::StoreArgs;

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// The node's state and load (JSON).
    Show,
    /// Take no new users; the node's users keep reaching it.
    Drain,
    /// Take new users again.
    Undrain,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    #[command(subcommand)]
    pub command: NodeCommand,
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

pub fn node(a: NodeArgs) -> i32 {
    let path = a
        .admin_token_file
        .clone()
        .unwrap_or_else(|| a.store.settings().state_dir.join("admin-token"));
    let token = match read_secret_file(&path) {
        Ok(t) => String::from_utf8_lossy(&t).trim().to_string(),
        Err(e) => {
            eprintln!("warren node: {e}");
            return 2;
        }
    };
    let body = match a.command {
        NodeCommand::Show => None,
        NodeCommand::Drain => Some(r#"{"state":"draining"}"#),
        NodeCommand::Undrain => Some(r#"{"state":"active"}"#),
    };
    let url = format!("{}/api/node", a.url.trim_end_matches('/'));
    match call(&url, &token, body) {
        Ok((200, text)) => {
            let pretty = serde_json::from_str::<serde_json::Value>(&text)
                .and_then(|v| serde_json::to_string_pretty(&v))
                .unwrap_or(text);
            println!("{pretty}");
            0
        }
        Ok((status, text)) => {
            eprintln!("warren node: {url}: {status}: {}", text.trim());
            1
        }
        Err(e) => {
            eprintln!("warren node: {url}: {e}");
            1
        }
    }
}

fn call(url: &str, token: &str, body: Option<&str>) -> Result<(u16, String), ureq::Error> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let auth = format!("Bearer {token}");
    let mut res = match body {
        Some(b) => agent
            .put(url)
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .send(b)?,
        None => agent.get(url).header("authorization", &auth).call()?,
    };
    let status = res.status().as_u16();
    let text = res.body_mut().read_to_string()?;
    Ok((status, text))
}
