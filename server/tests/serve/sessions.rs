//! Terminals outliving their WebSocket, screen restore, several viewers,
//! user separation, capacity, grace period and idle timeout.

use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use warren_domain::sessions::SessionLimits;

use crate::common::*;

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reattach_resumes_the_same_shell() {
    let server = TestServer::start().await;
    let mut c = server.open("alice").await;
    let id = c.terminal_id();
    c.run("X=banana; echo set$((1+1))", "set2").await;
    c.close().await;

    let mut c = server.attach("alice", &id).await;
    assert_eq!(c.expect_hello().await["terminal"], id.as_str());
    c.run("echo ${X}2", "banana2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reattach_restores_a_full_screen_program() {
    let server = TestServer::start().await;
    let mut c = server.open("alice").await;
    let id = c.terminal_id();
    // Like vi: alternate screen, clear, draw at row 5 column 10, wait. One
    // process draws and then waits, so the Ctrl-C below finds it whenever
    // it comes (after `printf`, before `sleep`, it would reach only the
    // shell, which ignores it).
    c.send_input(
        "sh -c \"printf '\\033[?1049h\\033[2J\\033[5;10HFULLSCREEN%d' 7; exec sleep 60\"\r",
    )
    .await;
    c.read_until("FULLSCREEN7").await;
    c.close().await;

    let mut c = server.attach("alice", &id).await;
    c.expect_hello().await;
    let snapshot = match c.next_event().await {
        Event::Binary(b) => b,
        other => panic!("expected the screen snapshot, got {other:?}"),
    };
    let mut screen = vt100::Parser::new(
        NonZeroU16::new(24).unwrap(),
        NonZeroU16::new(80).unwrap(),
        0,
    );
    screen.process(&snapshot);
    let s = screen.screen();
    assert!(
        s.alternate_screen(),
        "the program's alternate screen is restored"
    );
    assert!(s.contents().contains("FULLSCREEN7"));
    assert_eq!(s.cell(4, 9).unwrap().contents(), "F");
    // Nothing of the shell's normal screen shows through.
    assert!(!s.contents().contains("printf"));
    // The terminal is live: interrupt the program, the shell answers.
    c.send_input("\x03").await;
    c.run("printf '\\033[?1049l'; echo back$((1+1))", "back2")
        .await;
}

/// What a client that saw every byte shows, against what a reattaching
/// client is shown: text, cursor and screen.
fn same_screen(seen: &[u8], snapshot: &[u8], hello: &serde_json::Value) {
    let size = |k: &str| NonZeroU16::new(hello[k].as_u64().unwrap() as u16).unwrap();
    let parse = |bytes: &[u8]| {
        let mut p = vt100::Parser::new(size("rows"), size("cols"), 0);
        p.process(bytes);
        p
    };
    let (want, got) = (parse(seen), parse(snapshot));
    let (want, got) = (want.screen(), got.screen());
    assert_eq!(got.contents(), want.contents());
    assert_eq!(got.cursor_position(), want.cursor_position());
    assert_eq!(got.alternate_screen(), want.alternate_screen());
    assert_eq!(got.contents_formatted(), want.contents_formatted());
}

/// Issue 15: the screen is parsed lazily and most of a long stream is
/// skipped; after hundreds of KiB of scrolling output, a full-screen
/// program with a scroll region and cursor addressing (printing below the
/// region, where a line feed does not scroll), then more scrolling
/// on the normal screen, a reattach still shows exactly what a viewer that
/// saw every byte shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reattach_after_long_output_and_a_scroll_region_is_exact() {
    let server = TestServer::start().await;
    let mut c = server.open("alice").await;
    let id = c.terminal_id();
    let hello = c.hello.clone().unwrap();
    c.send_input(
        "seq 1 100000; printf '\\033[?1049h\\033[2J\\033[3;20r\\033[2;1Hstatus\\033[21;1H'; \
         seq 1 3000; sh -c \"printf '\\033[1;5H\\033[7mTOP%d' 9; exec sleep 60\"\r",
    )
    .await;
    c.read_until("TOP9").await;
    let seen = std::mem::take(&mut c.output);
    c.close().await;

    let mut c = server.attach("alice", &id).await;
    c.expect_hello().await;
    let snapshot = match c.next_event().await {
        Event::Binary(b) => b,
        other => panic!("expected the screen snapshot, got {other:?}"),
    };
    same_screen(&seen, &snapshot, &hello);
    assert!(vt100_text(&snapshot, &hello).contains("status"));

    // Back on the normal screen, a long scroll again.
    c.send_input("\x03").await;
    c.run(
        "printf '\\033[r\\033[?1049l'; seq 1 120000; echo DONE$((1+1))",
        "DONE2",
    )
    .await;
    let mut seen = snapshot;
    seen.extend_from_slice(&c.output);
    c.close().await;
    let mut c = server.attach("alice", &id).await;
    c.expect_hello().await;
    let snapshot = match c.next_event().await {
        Event::Binary(b) => b,
        other => panic!("expected the screen snapshot, got {other:?}"),
    };
    same_screen(&seen, &snapshot, &hello);
    assert!(vt100_text(&snapshot, &hello).contains("120000\nDONE2"));
    c.run("echo still$((3+3))", "still6").await;
}

/// Issue 15: a terminal gone quiet holds its screen compact (a few bytes
/// that redraw it, not the parsed cells); a reattach then is still exact,
/// at a prompt after coloured output and in a full-screen program, and the
/// terminal goes on from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reattach_to_a_quiet_terminal_with_a_compact_screen_is_exact() {
    use warren_domain::terminal::COMPACT_AFTER;
    let server = TestServer::start().await;
    let mut c = server.open("alice").await;
    let id = c.terminal_id();
    let hello = c.hello.clone().unwrap();
    let terminal = || {
        server
            .state
            .registry()
            .terminals_of(&"alice".parse_user())
            .into_iter()
            .find(|t| t.id() == id)
            .expect("the terminal")
    };
    let mut seen = Vec::new();
    for step in [
        // Coloured output, a wrapped line, a prompt.
        "printf '\\033[1;31mred\\033[0m plain %0100d\\n' 0; echo COLOURS$((1+1))",
        // A full-screen program: alternate screen, cursor addressing,
        // a hidden cursor, application cursor keys.
        "sh -c \"printf '\\033[?1049h\\033[2J\\033[?25l\\033[?1h\\033[5;10HQUIET%d' 7; exec sleep 60\"",
    ] {
        let marker = if step.contains("QUIET") { "QUIET7" } else { "COLOURS2" };
        c.send_input(&format!("{step}\r")).await;
        c.read_until(marker).await;
        seen.extend_from_slice(&std::mem::take(&mut c.output));
        tokio::time::sleep(COMPACT_AFTER + Duration::from_millis(500)).await;
        seen.extend_from_slice(&std::mem::take(&mut c.output));
        eventually("a compact screen", || terminal().screen_is_compact()).await;
        c.close().await;
        c = server.attach("alice", &id).await;
        c.expect_hello().await;
        let snapshot = match c.next_event().await {
            Event::Binary(b) => b,
            other => panic!("expected the screen snapshot, got {other:?}"),
        };
        same_screen(&seen, &snapshot, &hello);
        seen = snapshot;
    }
    assert!(vt100_text(&seen, &hello).contains("QUIET7"));
    // Live from there: leave the program, the shell answers.
    c.send_input("\x03").await;
    c.run("printf '\\033[?1049l'; echo after$((2+2))", "after4")
        .await;
}

fn vt100_text(bytes: &[u8], hello: &serde_json::Value) -> String {
    let size = |k: &str| NonZeroU16::new(hello[k].as_u64().unwrap() as u16).unwrap();
    let mut p = vt100::Parser::new(size("rows"), size("cols"), 0);
    p.process(bytes);
    p.screen().contents()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_viewers_see_the_same_terminal() {
    let server = TestServer::start().await;
    let mut a = server.open("alice").await;
    let id = a.terminal_id();
    let mut b = server.attach("alice", &id).await;
    b.expect_hello().await;
    a.send_input("echo hi$((1+1))\r").await;
    a.read_until("hi2").await;
    b.read_until("hi2").await;
    // Input from either goes to the one shell.
    b.send_input("echo from-b$((2+2))\r").await;
    a.read_until("from-b4").await;
    b.read_until("from-b4").await;
    // One leaving does not disturb the other.
    b.close().await;
    a.run("echo still$((3+3))", "still6").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_cannot_attach() {
    let server = TestServer::start().await;
    let alice = server.open("alice").await;
    let id = alice.terminal_id();

    let mut bob = server.attach("bob", &id).await;
    let (code, reason, texts) = bob.expect_close().await;
    assert_eq!(code, 4404);
    assert_eq!(reason, "no such terminal");
    assert_eq!(texts[0]["type"], "error");

    // Exactly the same answer as for an id that never existed.
    for bogus in ["0123456789abcdef01234567", "..%2F..%2Fetc", "x%00y"] {
        let mut c = server.attach("bob", bogus).await;
        let (code, reason, _) = c.expect_close().await;
        assert_eq!(
            (code, reason.as_str()),
            (4404, "no such terminal"),
            "{bogus}"
        );
    }
    assert_eq!(
        server
            .state
            .registry()
            .terminals_of(&"bob".parse_user())
            .len(),
        0
    );
}

trait ParseUser {
    fn parse_user(&self) -> warren_domain::user::UserId;
}

impl ParseUser for str {
    fn parse_user(&self) -> warren_domain::user::UserId {
        warren_domain::user::UserId::parse(self).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminals_per_user_are_capped_with_a_message() {
    let server = TestServer::with(Options {
        limits: SessionLimits {
            max_terminals_per_user: 2,
            ..SessionLimits::default()
        },
        ..Options::default()
    })
    .await;
    let mut first = server.open("alice").await;
    let _second = server.open("alice").await;
    let session = server.login("alice").await;
    let mut third = Client::connect(server.addr, "/ws", &[("cookie", &cookie(&session))])
        .await
        .unwrap();
    let (code, reason, texts) = third.expect_close().await;
    assert_eq!(code, 4429);
    assert!(reason.contains("2 terminals open"), "{reason}");
    assert_eq!(texts[0]["type"], "error");
    // Others are not affected.
    let _bob = server.open("bob").await;
    // Closing one makes room.
    first.send_input("exit\r").await;
    first.expect_close().await;
    eventually("the terminal to go", || {
        server
            .state
            .registry()
            .terminals_of(&"alice".parse_user())
            .len()
            == 1
    })
    .await;
    let _again = server.open("alice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_are_capped_and_idle_ones_make_room() {
    let server = TestServer::with(Options {
        limits: SessionLimits {
            max_sandboxes: 1,
            ..SessionLimits::default()
        },
        ..Options::default()
    })
    .await;
    let mut alice = server.open("alice").await;
    let session = server.login("bob").await;
    let mut bob = Client::connect(server.addr, "/ws", &[("cookie", &cookie(&session))])
        .await
        .unwrap();
    let (code, reason, _) = bob.expect_close().await;
    assert_eq!(code, 4429);
    assert!(reason.contains("server is full"), "{reason}");

    // Alice's terminal ends; her sandbox is idle and gives way to bob's.
    alice.send_input("exit\r").await;
    alice.expect_close().await;
    eventually("alice's terminal to go", || {
        server
            .state
            .registry()
            .terminals_of(&"alice".parse_user())
            .is_empty()
    })
    .await;
    let mut bob = server.open("bob").await;
    bob.run("echo bob$((1+1))", "bob2").await;
    assert_eq!(server.state.registry().sandbox_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwatched_terminal_is_closed_after_the_grace_period() {
    let server = TestServer::with(Options {
        limits: SessionLimits {
            terminal_grace: Duration::from_millis(300),
            ..SessionLimits::default()
        },
        ..Options::default()
    })
    .await;
    let c = server.open("alice").await;
    let id = c.terminal_id();
    c.close().await;
    eventually("the grace period to end the terminal", || {
        server
            .state
            .registry()
            .terminals_of(&"alice".parse_user())
            .is_empty()
    })
    .await;
    // Coming back tells why it ended.
    let mut c = server.attach("alice", &id).await;
    let (code, _, texts) = c.expect_close().await;
    assert_eq!(code, 1000);
    assert_eq!(texts[0]["type"], "exit");
    assert_eq!(texts[0]["reason"], "idle_timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_terminal_outlives_the_grace_period() {
    let server = TestServer::with(Options {
        limits: SessionLimits {
            terminal_grace: Duration::from_millis(100),
            ..SessionLimits::default()
        },
        ..Options::default()
    })
    .await;
    let mut c = server.open("alice").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    c.run("echo alive$((1+1))", "alive2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sandbox_is_stopped() {
    let server = TestServer::with(Options {
        limits: SessionLimits {
            idle_timeout: Duration::from_millis(300),
            ..SessionLimits::default()
        },
        ..Options::default()
    })
    .await;
    let mut c = server.open("alice").await;
    assert_eq!(server.state.registry().sandbox_count(), 1);
    c.send_input("exit\r").await;
    c.expect_close().await;
    eventually("the idle sandbox to stop", || {
        server.state.registry().sandbox_count() == 0
    })
    .await;
    // And a new terminal starts a new one.
    let mut c = server.open("alice").await;
    c.run("echo new$((1+1))", "new2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_terminal_reports_its_exit_to_a_late_viewer() {
    let server = TestServer::start().await;
    let mut c = server.open("alice").await;
    let id = c.terminal_id();
    c.send_input("exit 5\r").await;
    c.expect_close().await;
    let mut c = server.attach("alice", &id).await;
    let (code, _, texts) = c.expect_close().await;
    assert_eq!(code, 1000);
    assert_eq!(texts[0]["type"], "exit");
    assert_eq!(texts[0]["code"], 5);
    assert_eq!(texts[0]["reason"], "exit");
}
