//! cgroup limits for sandboxes (v2 and v1 drivers behind one interface).
