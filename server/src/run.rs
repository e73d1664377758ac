//! `warren run`: one sandbox, one command, stdio passed through, signals
//! forwarded, the command's exit code returned.

use std::io::IsTerminal;
use std::process::Stdio;

use nix::unistd::Pid;
use warren_runtime::init::{self, Target};
use warren_runtime::launch::{self, Outcome};
use warren_runtime::report::{self, EXIT_SETUP_FAILED};

use crate::sandbox::{self, Request, Settings};

/// Runs `req` and returns the exit code to leave with. Errors are printed
/// to stderr in the form "warren: <step>: <what>" plus a hint line.
pub fn run(settings: &Settings, req: &Request) -> i32 {
    let spec = match sandbox::prepare(settings, req) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("warren: {e}");
            return EXIT_SETUP_FAILED;
        }
    };
    // Block before any thread or child exists, so the reader thread never
    // takes a signal and nothing is lost before we supervise.
    if let Err(e) = init::block_signals() {
        eprintln!("warren: cannot block signals: {e}");
        return EXIT_SETUP_FAILED;
    }
    let launched = match launch::start(
        &launch::shim_path(),
        &spec,
        Stdio::inherit(),
        Stdio::inherit(),
        Stdio::inherit(),
    ) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("warren: {e}");
            return EXIT_SETUP_FAILED;
        }
    };
    let reader = std::thread::spawn(move || report::read_all(launched.report));
    let shim = Pid::from_raw(launched.child.id() as i32);
    let shim_exit = init::supervise(shim, Target::Process(shim), false);
    let events = reader.join().unwrap_or_default();
    let outcome = Outcome::from_events(&events, shim_exit);
    if let Outcome::Failed(err) = &outcome {
        print_failure(err);
    }
    outcome.exit_code()
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
