//! The default seccomp filter.
