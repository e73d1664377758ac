//! The sandbox's network (docs/network.md): pasta started from the host
//! side and attached to PID 1's namespaces, and the egress filter loaded
//! by PID 1 into its network namespace before it drops its capabilities.

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
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

/// Starts pasta attached to the namespaces of `pid` (PID 1, not yet
/// released); [`wait_for_pasta`] then waits for it while PID 1 builds the
/// sandbox, which itself starts no command before its network is up
/// ([`wait_for_network_in_child`]).
pub fn start_pasta_from_parent(plan: &NetworkPlan, pid: Pid) -> Result<Option<Pasta>, SetupError> {
    let Some(bin) = &plan.pasta else {
        return Ok(None);
    };
    let as_root = nix::unistd::geteuid().is_root();
    let open = |ns: &str| {
        File::open(format!("/proc/{pid}/ns/{ns}"))
            .map(OwnedFd::from)
            .map_err(|e| SetupError::new(STEP, format!("open the sandbox's {ns} namespace: {e}")))
    };
    let fds = vec![
        (open("user")?, pasta::USERNS_FD),
        (open("net")?, pasta::NETNS_FD),
    ];
    let mut cmd = Command::new(bin);
    cmd.args(pasta::args(as_root, Path::new("/dev/null")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    sys::die_with_us(&mut cmd);
    let child = sys::spawn_with_fds(&mut cmd, fds)
        .map_err(|e| SetupError::new(STEP, format!("{}: {e}", bin.display())))?;
    Ok(Some(Pasta(child)))
}

const STEP: &str = "start pasta";

/// Waits until the sandbox whose PID 1 is `pid` has its default route, or
/// pasta fails (its exit status is the error).
pub fn wait_for_pasta(pasta: &mut Option<Pasta>, pid: Pid) -> Result<(), SetupError> {
    let Some(pasta) = pasta else {
        return Ok(());
    };
    let started = Instant::now();
    loop {
        // PID 1 failed (it reported why): supervise sees its end.
        if has_default_route(pid) || has_ended(pid) {
            return Ok(());
        }
        if let Ok(Some(status)) = pasta.0.try_wait() {
            // PID 1 may have failed first, taking its namespaces along.
            std::thread::sleep(Duration::from_millis(20));
            if has_ended(pid) {
                return Ok(());
            }
            return Err(SetupError::new(
                STEP,
                format!("pasta exited ({status}) before the sandbox's network was up"),
            ));
        }
        if started.elapsed() > PASTA_READY {
            return Err(SetupError::new(
                STEP,
                "pasta did not configure the sandbox's network in time",
            ));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// PID 1, last before it drops its capabilities: waits for the default
/// route pasta sets up, so the tenant's command never starts without its
/// network (the shim outside reports pasta's failure and kills us).
pub fn wait_for_network_in_child(plan: &NetworkPlan) -> Result<(), SetupError> {
    if plan.pasta.is_none() {
        return Ok(());
    }
    let started = Instant::now();
    while !network::has_default_route(Path::new("/proc/self/net")) {
        if started.elapsed() > PASTA_READY {
            return Err(SetupError::new(
                "wait for the network",
                "pasta did not configure it in time",
            ));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

/// `pid`, our child, has exited (a zombie until supervise reaps it).
fn has_ended(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X'))
    })
}

/// A default route in the network namespace of `pid`: what `pasta
/// --config-net` sets up last.
fn has_default_route(pid: Pid) -> bool {
    network::has_default_route(Path::new(&format!("/proc/{pid}/net")))
}

impl Pasta {
    /// Kills pasta: nothing of the sandbox's network is left. Not waited
    /// for: its exit (tens of ms, freeing its buffers) happens while we
    /// report the end; our own exit hands it to init to reap.
    pub fn stop(mut self) {
        let _ = self.0.kill();
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
