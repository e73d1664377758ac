//! Back-pressure, end to end: a client that stops reading blocks the
//! terminal's program, the server's memory stays flat, and when the client
//! reads again the stream goes on with no byte missing.
//!
//! Its own test binary: it measures the process's resident memory (the
//! server runs in this process), so no other test may run beside it; the
//! two tests here take turns through `ONE_AT_A_TIME`.

mod common;

use std::time::Duration;

use common::*;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How much the process may grow while the client is not reading. An
/// unbounded relay would buffer everything the program writes: `seq` below
/// writes 14.9 MiB, `yes` far more.
const MAX_GROWTH_KIB: u64 = 6 * 1024;
const STALL: Duration = Duration::from_secs(3);

/// A process whose command line is `argv`, of session `sid` when given (a
/// sandboxed shell's `$$` means nothing on the host; its command lines are
/// unique enough while these tests take turns).
fn find_process(sid: Option<i32>, argv: &[&str]) -> Option<i32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        (cmdline == want && sid.is_none_or(|sid| stat(pid).is_some_and(|s| s.session == sid)))
            .then_some(pid)
    })
}

struct Stat {
    state: char,
    session: i32,
    cpu_ticks: u64,
}

fn stat(pid: i32) -> Option<Stat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    Some(Stat {
        state: f[0].chars().next()?,
        session: f[3].parse().ok()?,
        cpu_ticks: f[11].parse::<u64>().ok()? + f[12].parse::<u64>().ok()?,
    })
}

/// Checks that `pid` is alive, asleep and not using the CPU: it must be
/// found so in a 500 ms window within 10 s after the stall. On a loaded
/// machine the buffers between the program and the stalled client take
/// longer to fill than `STALL`; an unbounded relay never blocks it at all.
async fn assert_blocked(pid: i32, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let before = stat(pid).unwrap_or_else(|| panic!("{what} is no longer running"));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = stat(pid).unwrap_or_else(|| panic!("{what} is no longer running"));
        let blocked = after.state == 'S' && before.cpu_ticks == after.cpu_ticks;
        if blocked {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            assert_eq!(after.state, 'S', "{what} should be asleep in write()");
            assert_eq!(
                before.cpu_ticks, after.cpu_ticks,
                "{what} used CPU while the client was not reading"
            );
        }
    }
}

async fn shell_pid(c: &mut Client) -> i32 {
    // The quotes keep the typed line from matching the answer.
    c.run("echo 'P''ID='$$", "PID=").await;
    let rest = c.read_until("\r\n").await;
    // Let the shell print its next prompt before anything is typed: the
    // kernel echoes typed input at once, and a line typed before the prompt
    // puts the prompt on the line of the command's first output.
    tokio::time::sleep(Duration::from_millis(300)).await;
    rest.trim_end().parse().expect("pid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_blocks_seq_and_loses_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let server = TestServer::start().await;
    seq_case(&server, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_blocks_seq_in_a_real_sandbox() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let d = dirs();
    let server = sandbox_server(&d).await;
    seq_case(&server, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_blocks_yes_in_a_real_sandbox() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let d = dirs();
    let server = sandbox_server(&d).await;
    yes_case(&server, false).await;
}

async fn seq_case(server: &TestServer, host_shell: bool) {
    let mut c = server.open("alice").await;
    let sid = shell_pid(&mut c).await;
    let sid = host_shell.then_some(sid);

    c.send_input("seq 1 2000000; echo DONE$((1+1))\r").await;
    c.read_until("\r\n1000\r\n").await;
    let rss_before = rss_kib();

    // Stop reading.
    tokio::time::sleep(STALL).await;
    let seq = find_process(sid, &["seq", "1", "2000000"])
        .expect("seq should still be running: the client has not read its output");
    assert_blocked(seq, "seq").await;
    let rss_after = rss_kib();
    eprintln!("RSS before the stall {rss_before} KiB, after {rss_after} KiB");
    assert!(
        rss_after < rss_before + MAX_GROWTH_KIB,
        "memory grew from {rss_before} KiB to {rss_after} KiB while the client was not reading"
    );

    // Read again: everything arrives, in order.
    c.read_until("DONE2").await;
    let text = String::from_utf8_lossy(&c.output);
    let mut lines = text.split("\r\n");
    lines
        .by_ref()
        // bash ends bracketed paste ("\x1b[?2004l\r") before the output.
        .find(|l| l.rsplit('\r').next() == Some("1"))
        .expect("the first number");
    let mut expected = 2u32;
    for line in lines {
        if expected > 2_000_000 {
            assert_eq!(line, "DONE2");
            break;
        }
        assert_eq!(line, expected.to_string(), "after {}", expected - 1);
        expected += 1;
    }
    assert_eq!(expected, 2_000_001, "not every number arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_blocks_yes() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let server = TestServer::start().await;
    yes_case(&server, true).await;
}

async fn yes_case(server: &TestServer, host_shell: bool) {
    let mut c = server.open("alice").await;
    let sid = shell_pid(&mut c).await;
    let sid = host_shell.then_some(sid);

    c.send_input("yes warren-backpressure\r").await;
    c.read_until("warren-backpressure\r\nwarren-backpressure\r\n")
        .await;
    let rss_before = rss_kib();
    tokio::time::sleep(STALL).await;
    let yes = find_process(sid, &["yes", "warren-backpressure"]).expect("yes is running");
    assert_blocked(yes, "yes").await;
    let rss_after = rss_kib();
    eprintln!("RSS before the stall {rss_before} KiB, after {rss_after} KiB");
    assert!(
        rss_after < rss_before + MAX_GROWTH_KIB,
        "memory grew from {rss_before} KiB to {rss_after} KiB while the client was not reading"
    );

    // Reading again, the stream goes on; ^C stops yes and the shell answers.
    c.read_until("warren-backpressure\r\n").await;
    c.send_input("\x03").await;
    c.run("echo after$((1+1))", "after2").await;
    assert!(find_process(sid, &["yes", "warren-backpressure"]).is_none());
}
