//! The sandbox's network (docs/network.md): pasta started from the host
//! side and attached to PID 1's namespaces, and the egress filter loaded
//! by PID 1 into its network namespace before it drops its capabilities.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::unistd::Pid;
use warren_runtime::network::{self, pasta, NetworkPlan};
use warren_runtime::report::SetupError;
use warren_runtime::{caps, sys};

/// How long pasta may take to configure the sandbox's interface (under
/// load; it takes about 10 ms).
const PASTA_READY: Duration = Duration::from_secs(10);

/// The pasta process of a live sandbox.
pub struct Pasta(Child);

/// Starts pasta attached to the namespaces of `pid` (PID 1, still waiting
/// to be released) and waits until the sandbox has its default route, so
/// the command never starts without its network.
pub fn start_pasta_from_parent(plan: &NetworkPlan, pid: Pid) -> Result<Option<Pasta>, SetupError> {
    let Some(bin) = &plan.pasta else {
        return Ok(None);
    };
    let step = "start pasta";
    let as_root = nix::unistd::geteuid().is_root();
    let mut cmd = Command::new(bin);
    cmd.args(pasta::args(pid.as_raw(), as_root, Path::new("/dev/null")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = sys::spawn_dying_with_us(&mut cmd)
        .map_err(|e| SetupError::new(step, format!("{}: {e}", bin.display())))?;
    let mut pasta = Pasta(child);
    let started = Instant::now();
    loop {
        if has_default_route(pid) {
            return Ok(Some(pasta));
        }
        if let Ok(Some(status)) = pasta.0.try_wait() {
            return Err(SetupError::new(
                step,
                format!("pasta exited ({status}) before the sandbox's network was up"),
            ));
        }
        if started.elapsed() > PASTA_READY {
            pasta.stop();
            return Err(SetupError::new(
                step,
                "pasta did not configure the sandbox's network in time",
            ));
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// A default route in the network namespace of `pid`: what `pasta
/// --config-net` sets up last.
fn has_default_route(pid: Pid) -> bool {
    network::has_default_route(Path::new(&format!("/proc/{pid}/net")))
}

impl Pasta {
    /// Kills and reaps pasta: nothing of the sandbox's network is left.
    pub fn stop(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// [`Pasta::stop`], if the sandbox has one.
pub fn stop_pasta(pasta: Option<Pasta>) {
    if let Some(p) = pasta {
        p.stop();
    }
}

/// Loads the egress filter into our network namespace with `nft -f -`,
/// holding CAP_NET_ADMIN in the sandbox's user namespace (we are PID 1,
/// before dropping every capability), and checks the table is there.
pub fn load_filter_in_child(plan: &NetworkPlan) -> Result<(), SetupError> {
    let Some((nft, rules)) = &plan.filter else {
        return Ok(());
    };
    let step = "load the network filter";
    let fail = |why: String| {
        SetupError::new(step, why)
            .with_hint("see docs/network.md (nftables in the sandbox's namespace)")
    };
    let output = caps::with_ambient(caps::Capability::CAP_NET_ADMIN, || {
        let mut child = Command::new(nft)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(rules.as_bytes())?;
        child.wait_with_output()
    })?
    .map_err(|e| fail(format!("{}: {e}", nft.display())))?;
    if !output.status.success() {
        return Err(fail(format!(
            "nft exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}
