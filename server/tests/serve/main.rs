//! `warren serve` against the echo backend: auth, protocol, sessions,
//! shutdown. No root needed. (The back-pressure test is its own binary,
//! tests/backpressure.rs, because it measures the process's memory.)

#[path = "../common/mod.rs"]
mod common;

mod auth;
mod connections;
mod hosts;
mod http;
mod protocol;
mod sessions;
mod shutdown;
