//! warren's runtime: the one crate that knows the kernel.
//!
//! The server turns a request into a [`spec::SandboxSpec`]; the shim turns
//! the spec into a `plan` and executes it. Each kernel concern has its own
//! module, and `unsafe` lives only in [`sys`].

pub mod archive;
pub mod caps;
pub mod cgroups;
pub mod connector;
pub mod control;
pub mod disk;
pub mod files;
pub mod host;
pub mod idmap;
pub mod info;
pub mod init;
pub mod landlock;
pub mod launch;
pub mod mounts;
pub mod namespaces;
pub mod network;
pub mod plan;
pub mod pty;
pub mod record;
pub mod report;
pub mod rlimits;
pub mod seccomp;
pub mod setup_error;
pub mod spec;
pub mod sys;
pub mod tenant;
pub mod title;
pub mod workspace;
