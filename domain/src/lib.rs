//! warren's domain: tenants and their state, provisioning, sessions (one
//! sandbox per user holding that user's terminals), terminals and their
//! PTYs, exec, archives, the audit log and the management service.
//!
//! Its own vocabulary only: no HTTP, WebSocket or command-line types. The
//! web layer (`warren::web`) converts these types to wire types; the command
//! line (`warren::cli`) calls the same service. Everything that touches the
//! kernel lives in `warren-runtime`; this crate has no `unsafe` at all.
#![forbid(unsafe_code)]

pub mod audit;
pub mod backend;
mod by_init;
pub mod child;
pub mod counters;
pub mod echo;
pub mod exec;
pub mod exit;
pub mod manage;
pub mod node;
mod oom;
pub mod private;
pub mod pty;
pub mod random;
pub mod sandbox;
pub mod sandboxes;
pub mod screen;
pub mod sessions;
pub mod state;
pub mod terminal;
pub mod user;

/// A terminal size in character cells: the runtime's, the one `WinSize` in
/// the workspace.
pub use warren_runtime::pty::WinSize;
