//! Raw syscalls for the seccomp and landlock modules. Empty until they
//! need one.
