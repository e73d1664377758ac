//! The `warren` command: CLI, tenant state and (later) the web terminal
//! server. Everything that touches the kernel lives in `warren-runtime`;
//! this crate has no `unsafe` at all.
#![forbid(unsafe_code)]

pub mod audit;
pub mod cli;
pub mod config;
pub mod doctor;
pub mod exec;
pub mod manage;
pub mod private;
pub mod run;
pub mod sandbox;
pub mod serve;
pub mod state;
pub mod users_cli;
