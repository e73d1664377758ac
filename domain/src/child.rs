//! Waiting for a child process from async code, shared by both backends
//! (the shims of `sandboxes` and the shells of `echo`).

use std::process::Child;
use std::sync::Mutex;
use std::time::Duration;

use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;

/// Waits until `child` has exited, without a thread: its pidfd becomes
/// readable then.
pub async fn wait_child(child: &Mutex<Child>) -> Option<std::process::ExitStatus> {
    let pid = Pid::from_raw(child.lock().ok()?.id() as i32);
    // An OwnedFd cannot swap or close its fd while registered, which is the
    // unsoundness tokio#8587 deprecates `new` for (see crate::pty).
    #[allow(deprecated)]
    let pidfd = warren_runtime::sys::pidfd_open(pid)
        .ok()
        .and_then(|fd| AsyncFd::new(fd).ok());
    loop {
        if let Some(status) = child.lock().ok()?.try_wait().ok()? {
            return Some(status);
        }
        match &pidfd {
            Some(fd) => match fd.readable().await {
                Ok(mut guard) => guard.clear_ready(),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
