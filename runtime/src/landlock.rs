//! Landlock, best effort, as a second wall around the filesystem.
