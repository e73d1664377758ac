//! The `warren` command, in two layers that import only downward:
//! [`cli`] (the command line) → [`web`] (HTTP and WebSocket transport) →
//! `warren-domain` (tenants, sessions, terminals, the management service)
//! → `warren-runtime` (the kernel). This crate has no `unsafe` at all.
#![forbid(unsafe_code)]

pub mod cli;
pub mod web;
