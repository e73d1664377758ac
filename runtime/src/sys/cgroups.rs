//! Raw syscalls for the cgroups module (clone3 with CLONE_INTO_CGROUP and
//! the like). Empty until that module needs one.
