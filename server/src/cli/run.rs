//! `warren run`: one sandbox, one command, stdio passed through (or a
//! terminal of the sandbox's own, relayed), signals forwarded, the command's
//! exit code returned.

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::thread::JoinHandle;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use warren_runtime::init::{self, SignalTarget};
use warren_runtime::launch::{self, Outcome};
use warren_runtime::pty::{self, RawMode, WinSize};
use warren_runtime::report::{self, EXIT_SETUP_FAILED};

use warren_domain::sandbox::{self, Request, Settings};

/// Whether the command gets a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TtyMode {
    /// When stdin and stdout are both terminals (like ssh).
    Auto,
    Always,
    Never,
}

impl TtyMode {
    /// The terminal size to ask for, or `None` for plain stdio.
    pub fn resolve(self) -> Option<WinSize> {
        let stdin = std::io::stdin();
        let interactive = stdin.is_terminal() && std::io::stdout().is_terminal();
        match (self, interactive) {
            (TtyMode::Never, _) | (TtyMode::Auto, false) => None,
            _ => Some(pty::size_of(&stdin).unwrap_or_default()),
        }
    }
}

/// Says which isolation tier is in use: with `--verbose`, and always when
/// it is not the full one (one line on stderr).
pub fn announce(choice: &warren_runtime::host::TierChoice, verbose: bool) {
    use warren_runtime::spec::Isolation;
    let line = format!("isolation {}: {}", choice.isolation, choice.why);
    match &choice.warning {
        Some(w) => eprintln!("warren: warning: {line}; {w}"),
        None if verbose || choice.isolation != Isolation::Namespaces => {
            eprintln!("warren: {line}")
        }
        None => {}
    }
}

/// Runs `req` and returns the exit code to leave with. Errors are printed
/// to stderr in the form `warren: <step>: <what>` plus a hint line.
pub fn run(settings: &Settings, req: &Request, verbose: bool) -> i32 {
    let spec = match sandbox::prepare(settings, req) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("warren: {e}");
            return EXIT_SETUP_FAILED;
        }
    };
    let cgroups = prepare_cgroups();
    // Block before any thread or child exists, so no thread ever takes a
    // signal and nothing is lost before we supervise.
    if let Err(e) = init::block_signals() {
        eprintln!("warren: cannot block signals: {e}");
        return EXIT_SETUP_FAILED;
    }
    // Its time grows with every sandbox on the host (a liveness check of
    // each one's creator): off the start-up path, finished before we exit.
    let sweep = cgroups.map(|c| std::thread::spawn(move || drop(c.sweep_stale())));
    let tty = spec.tty.is_some();
    let (stdin, stdout) = if tty {
        (Stdio::null(), Stdio::null())
    } else {
        (Stdio::inherit(), Stdio::inherit())
    };
    let launched = match launch::start(&launch::shim_path(), &spec, stdin, stdout, Stdio::inherit())
    {
        Ok(l) => l,
        Err(e) => {
            eprintln!("warren: {e}");
            return EXIT_SETUP_FAILED;
        }
    };
    let reader = std::thread::spawn(move || report::read_all(launched.report));
    let shim = Pid::from_raw(launched.child.id() as i32);

    // With a terminal: wait for its master (none comes if set-up failed).
    let relay = launched
        .pty_socket
        .and_then(|sock| pty::recv_fd(&sock).ok().flatten())
        .map(Relay::start);
    let shim_exit = match &relay {
        Some(r) => {
            let master = &r.master;
            init::supervise_with(shim, SignalTarget::Process(shim), false, |sig| {
                if sig != Signal::SIGWINCH {
                    return false;
                }
                if let Some(size) = pty::size_of(&std::io::stdin()) {
                    let _ = pty::resize(master, size);
                }
                true
            })
        }
        None => init::supervise(shim, SignalTarget::Process(shim), false),
    };
    if let Some(r) = relay {
        r.finish();
    }
    let events = reader.join().unwrap_or_default();
    if let Some(s) = sweep {
        let _ = s.join();
    }
    let outcome = Outcome::from_events(&events, shim_exit);
    print_events(&events, verbose);
    match &outcome {
        Outcome::Failed(err) => print_failure(err),
        Outcome::MemoryLimit { limit_bytes, .. } => {
            eprintln!("warren: killed: memory limit {} reached", mib(*limit_bytes))
        }
        _ => {}
    }
    outcome.exit_code()
}

/// Moves us into our own leaf cgroup (cgroup v2's no-internal-processes
/// rule) before the shim inherits it; the cgroups returned are to be swept
/// of sandboxes' cgroups left by a crash. Failures are the shim's to
/// report, with the sandbox's limits.
fn prepare_cgroups() -> Option<warren_runtime::cgroups::Cgroups> {
    use warren_runtime::cgroups::{Cgroups, Roots};
    let c = Cgroups::probe(&Roots::default()).ok()?;
    (c.availability().complete() && c.prepare().is_ok()).then_some(c)
}

fn mib(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 30) {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

fn describe(limits: &warren_runtime::cgroups::Limits) -> String {
    let mut parts = Vec::new();
    if let Some(m) = limits.memory_bytes {
        parts.push(format!("memory {} (no swap)", mib(m)));
    }
    if let Some(c) = limits.cpu {
        parts.push(format!("cpu {c} core(s)"));
    }
    if let Some(p) = limits.pids {
        parts.push(format!("pids {p}"));
    }
    parts.join(", ")
}

/// Warnings always; the confinement in force with `--verbose`.
fn print_events(events: &[report::Event], verbose: bool) {
    use warren_runtime::report::Event;
    for e in events {
        match e {
            Event::Sandbox { record, .. } => {
                let limits = &record.limits;
                if !limits.missing.is_empty() {
                    eprintln!(
                        "warren: warning: running without the {} limit(s)",
                        limits.missing.join(", ")
                    );
                    for r in limits.reasons.values() {
                        eprintln!("  {r}");
                    }
                }
                if verbose && limits.in_force() != warren_runtime::cgroups::Limits::NONE {
                    eprintln!("warren: limits: {}", describe(&limits.in_force()));
                    for n in &limits.notes {
                        eprintln!("  note: {n}");
                    }
                }
            }
            Event::Confined { seccomp, landlock } if verbose => {
                eprintln!(
                    "warren: confined: seccomp {seccomp}, landlock {landlock}, no capabilities"
                );
            }
            Event::LimitsHit { limits, events } => {
                if let (Some(n), Some(max)) =
                    (events.pids_limit_hits.filter(|n| *n > 0), limits.pids)
                {
                    eprintln!("warren: pids limit {max} reached: {n} fork(s) refused");
                }
                if events.oom_killed() && verbose {
                    eprintln!(
                        "warren: the OOM killer ran {} time(s) in this sandbox",
                        events.oom_kills.unwrap_or(0)
                    );
                }
            }
            _ => {}
        }
    }
}

/// Copies between our stdio and the sandbox's terminal, with our own
/// terminal in raw mode so every key (Ctrl-C, Ctrl-Z) reaches the sandbox.
struct Relay {
    master: OwnedFd,
    _raw: Option<RawMode>,
    output: JoinHandle<()>,
}

impl Relay {
    fn start(master: OwnedFd) -> Relay {
        let raw = RawMode::enable(&std::io::stdin()).ok();
        let to_master = master.try_clone().ok().map(File::from);
        let from_master = master.try_clone().ok().map(File::from);
        // Input: a detached thread; it may sit in read() when the sandbox
        // ends, and the process exits under it.
        if let Some(mut m) = to_master {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut stdin = std::io::stdin().lock();
                while let Ok(n) = stdin.read(&mut buf) {
                    if n == 0 || m.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
        let output = std::thread::spawn(move || {
            let Some(mut m) = from_master else { return };
            let mut buf = [0u8; 16384];
            let mut out = std::io::stdout().lock();
            // EIO once every slave fd is closed: the sandbox has ended.
            while let Ok(n) = m.read(&mut buf) {
                if n == 0 || out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
                    break;
                }
            }
        });
        Relay {
            master,
            _raw: raw,
            output,
        }
    }

    /// Waits for the last output, then restores our terminal (on drop).
    fn finish(self) {
        let _ = self.output.join();
    }
}

fn print_failure(err: &warren_runtime::report::SetupError) {
    let color = std::io::stderr().is_terminal();
    let (b, r) = if color {
        ("\x1b[1m", "\x1b[0m")
    } else {
        ("", "")
    };
    eprintln!("{b}warren:{r} {err}");
    if let Some(hint) = &err.hint {
        eprintln!("  hint: {hint}");
    }
}
