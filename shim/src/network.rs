//! The sandbox's network (docs/network.md): the egress filter loaded into
//! PID 1's network namespace and pasta attached to its namespaces, both
//! from the host side and both started as soon as the namespaces exist,
//! while the shim puts PID 1 in its cgroup and PID 1 builds the root. PID 1
//! starts no command before the shim says both are done.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use warren_runtime::network::{self, pasta, NetworkPlan};
use warren_runtime::report::SetupError;
use warren_runtime::{caps, sys};

/// How long pasta may take to configure the sandbox's interface (under
/// load; it takes about 10 ms).
const PASTA_READY: Duration = Duration::from_secs(10);

/// The pasta process of a live sandbox.
pub struct Pasta(Child);

/// Starts pasta attached to the sandbox's namespaces `ns`, beside the
/// filter's helper: nothing of the tenant runs before both are done
/// ([`Starting::wait`], [`wait_for_network_in_child`]).
fn start_pasta_from_parent(
    plan: &NetworkPlan,
    ns: Option<Namespaces>,
) -> Result<Option<Pasta>, SetupError> {
    let (Some(bin), Some(ns)) = (&plan.pasta, ns) else {
        return Ok(None);
    };
    let as_root = nix::unistd::geteuid().is_root();
    let fds = vec![(ns.user, pasta::USERNS_FD), (ns.net, pasta::NETNS_FD)];
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

/// The sandbox's user and network namespaces, held open by the shim.
pub struct Namespaces {
    user: OwnedFd,
    net: OwnedFd,
}

/// Opens the namespaces of `pid` (PID 1, not yet released: while it
/// waits it is still dumpable, so its /proc entry can be opened) when the
/// sandbox gets a network; the filter and pasta use them after the release.
pub fn open_namespaces_from_parent(
    plan: &NetworkPlan,
    pid: Pid,
) -> Result<Option<Namespaces>, SetupError> {
    if plan.pasta.is_none() {
        return Ok(None);
    }
    let open = |ns: &str| {
        File::open(format!("/proc/{pid}/ns/{ns}"))
            .map(OwnedFd::from)
            .map_err(|e| SetupError::new(STEP, format!("open the sandbox's {ns} namespace: {e}")))
    };
    Ok(Some(Namespaces {
        user: open("user")?,
        net: open("net")?,
    }))
}

/// Waits until the sandbox whose PID 1 is `pid` has its default route, or
/// pasta fails (its exit status is the error).
fn wait_for_pasta(pasta: &mut Option<Pasta>, pid: Pid) -> Result<(), SetupError> {
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

/// PID 1, last before it drops its capabilities: waits until the shim
/// says the filter is loaded and pasta's route is there
/// ([`network_ready_from_parent`]), so the tenant's command never starts
/// without either (the shim reports a failure and kills us).
pub fn wait_for_network_in_child(plan: &NetworkPlan, ready: OwnedFd) -> Result<(), SetupError> {
    if plan.pasta.is_none() {
        return Ok(());
    }
    let mut byte = [0u8; 1];
    match File::from(ready).read(&mut byte) {
        Ok(1) => Ok(()),
        _ => Err(SetupError::new(
            "wait for the network",
            "the shim ended before the sandbox's network was up",
        )),
    }
}

/// Tells PID 1 its network is up (the filter loaded, pasta's route
/// there). A failed write means PID 1 has ended: supervise reports why.
pub fn network_ready_from_parent(ready: OwnedFd) {
    let _ = File::from(ready).write_all(b"1");
}

/// The pipe PID 1 waits on for its network ([`wait_for_network_in_child`]).
pub fn network_pipe() -> Result<(OwnedFd, OwnedFd), SetupError> {
    nix::unistd::pipe().map_err(|e| SetupError::errno("create the network's sync pipe", e))
}

/// The sandbox's network while it comes up: the filter's helper and
/// pasta, running side by side.
pub struct Starting {
    filter: Option<FilterHelper>,
    pasta: Option<Pasta>,
}

/// Starts the filter's helper and pasta together in the namespaces `ns`
/// (none when the sandbox gets no network): pasta may set up the route
/// before the filter is in, since nothing of the tenant runs before
/// [`Starting::wait`] has seen both.
pub fn start_network_from_parent(
    plan: &NetworkPlan,
    ns: Option<Namespaces>,
) -> Result<Starting, SetupError> {
    let filter = spawn_filter_helper(plan, ns.as_ref())?;
    match start_pasta_from_parent(plan, ns) {
        Ok(pasta) => Ok(Starting { filter, pasta }),
        Err(e) => {
            if let Some(f) = filter {
                f.kill();
            }
            Err(e)
        }
    }
}

impl Starting {
    /// Stops what was started (a later step failed).
    pub fn stop(self) {
        if let Some(f) = self.filter {
            f.kill();
        }
        if let Some(p) = self.pasta {
            let _ = p.stop().0.wait();
        }
    }

    /// Waits for the filter to be loaded and for pasta's route in the
    /// sandbox whose PID 1 is `pid`; on failure nothing of the network is
    /// left running.
    pub fn wait(self, pid: Pid) -> Result<Option<Pasta>, SetupError> {
        let Starting { filter, mut pasta } = self;
        let loaded = filter.map_or(Ok(()), FilterHelper::wait);
        let result = loaded.and_then(|()| wait_for_pasta(&mut pasta, pid));
        match result {
            Ok(()) => Ok(pasta),
            Err(e) => {
                if let Some(p) = pasta {
                    let _ = p.stop().0.wait();
                }
                Err(e)
            }
        }
    }
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
    /// Kills pasta: nothing of the sandbox's network is left. Reaped (or
    /// left to init) by [`Stopped::end`], so that its exit (tens of ms,
    /// tearing down its tap device) overlaps the rest of the sandbox's end.
    pub fn stop(mut self) -> Stopped {
        let _ = self.0.kill();
        Stopped(self.0)
    }
}

/// A killed pasta, not yet reaped.
pub struct Stopped(Child);

impl Stopped {
    /// Reaps pasta and, the sandbox having ended, whatever else of ours
    /// has exited: the helpers pasta forked and never reaped come to us
    /// as a subreaper ([`reap_pastas_children`]).
    ///
    /// Only for a held sandbox (the server's): its exit (30 to 45 ms,
    /// tearing down its tap device) would add to the run time of a
    /// one-shot command, whose caller waits for our exit; there pasta is
    /// left to init. Left to init, a dead pasta lingers as a zombie as
    /// long as init takes to reap (seconds where init polls, as in CI
    /// containers), and for ever where the server is PID 1 of its own pid
    /// namespace (`unshare --pid --fork warren serve`), which reaps only
    /// its own children.
    pub fn end(mut self, held: bool) {
        if !held {
            return;
        }
        let _ = self.0.wait();
        while let Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) =
            waitpid(None, Some(WaitPidFlag::WNOHANG))
        {}
    }
}

/// [`Pasta::stop`], if the sandbox has one.
pub fn stop_pasta(pasta: Option<Pasta>) -> Option<Stopped> {
    pasta.map(Pasta::stop)
}

/// Makes the shim of a `held` sandbox with a network the reaper of
/// pasta's orphans ([`Stopped::end`]); before pasta starts.
pub fn reap_pastas_children(plan: &NetworkPlan, held: bool) -> Result<(), SetupError> {
    match (&plan.pasta, held) {
        (Some(_), true) => warren_runtime::init::become_subreaper()
            .map_err(|e| SetupError::errno("become child subreaper", e)),
        _ => Ok(()),
    }
}

const FILTER_STEP: &str = "load the network filter";

/// The forked helper loading the egress filter, and the pipe it writes
/// its failure to.
struct FilterHelper {
    pid: Pid,
    why: OwnedFd,
}

/// Forks the helper that loads the egress filter into the sandbox's
/// network namespace `ns` with `nft -f -` ([`FilterHelper::wait`] waits for
/// it). From the host side, so nft is charged to us, not to the tenant's
/// cgroup (a tight memory limit would kill it): the helper joins the
/// sandbox's user namespace (we own it: every capability there) and
/// network namespace, raises CAP_NET_ADMIN as ambient so nft keeps it (our
/// uid is not root in there), and runs nft.
fn spawn_filter_helper(
    plan: &NetworkPlan,
    ns: Option<&Namespaces>,
) -> Result<Option<FilterHelper>, SetupError> {
    let (Some(_), Some(ns)) = (&plan.filter, ns) else {
        return Ok(None);
    };
    let (userns, netns) = (&ns.user, &ns.net);
    let (why_r, why_w) = nix::unistd::pipe().map_err(|e| SetupError::errno(FILTER_STEP, e))?;
    match sys::fork_process().map_err(|e| SetupError::errno(FILTER_STEP, e))? {
        sys::Forked::Child => {
            drop(why_r);
            let result = nix::sched::setns(userns, CloneFlags::CLONE_NEWUSER)
                .and_then(|()| nix::sched::setns(netns, CloneFlags::CLONE_NEWNET))
                .map_err(|e| SetupError::errno("join the sandbox's namespaces", e))
                .and_then(|()| load_filter(plan));
            let code = match result {
                Ok(()) => 0,
                Err(e) => {
                    let _ = File::from(why_w).write_all(e.to_string().as_bytes());
                    1
                }
            };
            sys::exit_immediately(code)
        }
        sys::Forked::Parent(pid) => Ok(Some(FilterHelper { pid, why: why_r })),
    }
}

impl FilterHelper {
    /// Waits for the helper: the filter is loaded, or the error says why not.
    fn wait(self) -> Result<(), SetupError> {
        let mut why = String::new();
        let _ = File::from(self.why).read_to_string(&mut why);
        match warren_runtime::init::wait_for(self.pid) {
            Some(warren_runtime::report::Exit::Code(0)) => Ok(()),
            other => Err(SetupError::new(
                FILTER_STEP,
                match why.is_empty() {
                    true => format!("the helper ended with {other:?}"),
                    false => why,
                },
            )
            .with_hint("see docs/network.md (nftables in the sandbox's namespace)")),
        }
    }

    /// Kills and reaps the helper (another step failed).
    fn kill(self) {
        let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
        warren_runtime::init::wait_for(self.pid);
    }
}

/// Runs `nft -f -` with the plan's ruleset, holding CAP_NET_ADMIN as an
/// ambient capability.
fn load_filter(plan: &NetworkPlan) -> Result<(), SetupError> {
    let Some((nft, rules)) = &plan.filter else {
        return Ok(());
    };
    let fail = |why: String| SetupError::new(FILTER_STEP, why);
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
