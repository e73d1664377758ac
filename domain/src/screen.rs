//! A terminal's screen state, kept off the output path.
//!
//! Output is appended to a raw log; it is parsed into the `vt100` screen
//! only when someone needs the screen (a viewer attaches, a resize, a
//! test) or when the log reaches [`LOG_CAP`]. Parsing is where the
//! server's CPU went during output (issue 15: `Screen::text` alone was 27 %
//! of it), and most of a stream like `cat big-file` scrolls off the screen
//! before anyone could see it, so the parse skips it:
//!
//! **The scroll-off shortcut.** A run of plain bytes (printable ASCII, CR,
//! LF) changes only cells, the cursor and the last printed character: no
//! attribute, mode or scroll region. With a full-screen scroll region
//! (no scrollback is kept), after `rows - 1` line feeds the cursor is on the
//! bottom row, and each further line feed scrolls the whole screen by one.
//! So at a point `k` of the run that follows a CR, is preceded by at least
//! `rows - 1` line feeds and followed by at least `rows` line feeds (and a
//! printable character), the screen at `k` is (bottom row, column 0, every
//! row about to scroll away): replacing the run up to `k` with `rows` line
//! feeds and a CR gives the same state, exactly, from any start. The
//! tracker below follows just enough of the escape-sequence grammar to know
//! when the parser is in its ground state and whether the scroll region is
//! full; anything it cannot be sure of turns the shortcut off until a
//! sequence that certainly ends it.

use std::num::NonZeroU16;

/// Raw output kept before it is parsed into the screen: the most an idle
/// terminal holds beyond its screen. Each flush skips all but the last
/// screenful of plain output, so a bigger log would save little more.
pub const LOG_CAP: usize = 64 * 1024;

/// The screen a terminal has drawn, parsed lazily.
///
/// **Compaction.** A parsed 80×24 screen is about 60 KiB of cells (32 bytes
/// each), most of an idle terminal's memory on the server (issue 15). When
/// the terminal goes quiet, [`LazyScreen::compact`] replaces the parser by
/// the bytes that redraw it on a fresh one (a few hundred for a prompt),
/// and keeps them only if replaying them gives back the same screen, every
/// field of it compared (its `Debug` form); otherwise the parser stays. The
/// one field not compared is vt100's count of rows scrolled off, which only
/// decides how many blank rows a taller resize pulls in at the top (the
/// scroll-off shortcut does not keep it either).
pub struct LazyScreen {
    /// None while compacted: then `base` redraws the screen.
    parser: Option<Box<vt100::Parser>>,
    /// Fed to a fresh parser of `size`, gives the screen as it was before
    /// `log` (empty: a fresh screen).
    base: Vec<u8>,
    size: (NonZeroU16, NonZeroU16),
    log: Vec<u8>,
    /// The tracker as it is at the start of `log`.
    tracker: Tracker,
    /// Bytes the shortcut did not parse (diagnostics and tests).
    skipped: u64,
}

impl LazyScreen {
    pub fn new(rows: NonZeroU16, cols: NonZeroU16) -> LazyScreen {
        LazyScreen {
            parser: None,
            base: Vec::new(),
            size: (rows, cols),
            log: Vec::new(),
            tracker: Tracker::new(rows.get()),
            skipped: 0,
        }
    }

    /// Takes some output; cheap unless the log is full.
    pub fn push(&mut self, data: &[u8]) {
        self.log.extend_from_slice(data);
        if self.log.len() >= LOG_CAP {
            self.flush();
        }
    }

    /// The screen with every byte so far applied.
    pub fn screen(&mut self) -> &vt100::Screen {
        self.flush().screen()
    }

    /// Calls `f` with the screen as it is now. A compacted screen with no
    /// new output is parsed for the call only and stays compact.
    pub fn with_screen<R>(&mut self, f: impl FnOnce(&vt100::Screen) -> R) -> R {
        if self.parser.is_none() && self.log.is_empty() {
            let mut parser = vt100::Parser::new(self.size.0, self.size.1, 0);
            parser.process(&self.base);
            return f(parser.screen());
        }
        f(self.screen())
    }

    /// Resizes, after applying the output that was drawn at the old size.
    pub fn set_size(&mut self, rows: NonZeroU16, cols: NonZeroU16) {
        if self.flush().screen().size() != (rows, cols) {
            // vt100, like xterm, resets both scroll regions on a resize.
            self.tracker.region_full = [true, true];
            self.tracker.rows = rows.get();
        }
        self.flush().screen_mut().set_size(rows, cols);
        self.size = (rows, cols);
    }

    /// Drops the parsed screen if it can be redrawn exactly from a few
    /// bytes (see the type's comment). For a terminal gone quiet: it costs
    /// a parse of the log and two formattings of the screen. True if the
    /// screen is now compact.
    pub fn compact(&mut self) -> bool {
        if self.parser.is_none() && self.log.is_empty() {
            return true;
        }
        self.flush();
        // Between two characters, where a fresh parser starts.
        if !(self.tracker.state == State::Ground && self.tracker.utf8_left == 0) {
            return false;
        }
        let (rows, cols) = self.size;
        let parser = self.flush();
        // Formatted once, for the last character and for the comparison.
        let debug = format!("{:?}", parser.screen());
        let base = redraw(parser, &debug);
        let mut replayed = vt100::Parser::new(rows, cols, 0);
        replayed.process(&base);
        if comparable(&format!("{:?}", replayed.screen())) != comparable(&debug) {
            return false;
        }
        self.parser = None;
        self.base = base;
        self.base.shrink_to_fit();
        true
    }

    /// Whether the screen is held compact (tests and diagnostics).
    pub fn is_compact(&self) -> bool {
        self.parser.is_none()
    }

    /// Applies the log, parsing the base first if compacted.
    fn flush(&mut self) -> &mut vt100::Parser {
        let parser = self.parser.get_or_insert_with(|| {
            let mut parser = vt100::Parser::new(self.size.0, self.size.1, 0);
            parser.process(&std::mem::take(&mut self.base));
            Box::new(parser)
        });
        if !self.log.is_empty() {
            // Freed, not kept: an idle terminal holds no empty log buffer.
            let log = std::mem::take(&mut self.log);
            self.skipped += feed(parser, &mut self.tracker, &log);
        }
        parser
    }
}

/// Bytes that redraw `parser`'s screen on a fresh parser of its size: its
/// cells, attributes, cursor and input modes. On the alternate screen,
/// the normal screen behind it first (read by switching `parser` to it and
/// back, which changes nothing else), its cursor saved as entering the
/// alternate screen saves it, then the alternate screen. Last, the last
/// character printed (what REP repeats) is printed again over a cell of
/// the same character with default attributes, if there is one.
/// `debug` is the screen's `Debug` form.
fn redraw(parser: &mut vt100::Parser, debug: &str) -> Vec<u8> {
    let mut out = Vec::new();
    if parser.screen().alternate_screen() {
        parser.process(b"\x1b[?47l");
        out.extend_from_slice(parser.screen().state_formatted().as_bytes());
        parser.process(b"\x1b[?47h");
        out.extend_from_slice(b"\x1b7\x1b[?47h");
    }
    let screen = parser.screen();
    out.extend_from_slice(screen.state_formatted().as_bytes());
    let Some(last) = last_char(debug) else {
        return out;
    };
    let (rows, cols) = screen.size();
    let (mut buf, mut found) = ([0u8; 4], None);
    let last: &str = last.encode_utf8(&mut buf);
    'rows: for row in 0..rows.get() {
        for col in 0..cols.get() {
            let cell = screen.cell(row, col);
            if cell.is_some_and(|c| c.contents() == last && *c == plain_cell(last)) {
                found = Some((row, col));
                break 'rows;
            }
        }
    }
    if let Some((row, col)) = found {
        let (crow, ccol) = screen.cursor_position();
        out.extend_from_slice(
            format!(
                "\x1b[m\x1b[{};{}H{last}\x1b[{};{}H{}",
                row + 1,
                col + 1,
                crow + 1,
                ccol + 1,
                screen.attributes_formatted()
            )
            .as_bytes(),
        );
    }
    out
}

/// A cell holding `c` with default attributes, as printing it makes one.
fn plain_cell(c: &str) -> vt100::Cell {
    let mut p = vt100::Parser::new(NonZeroU16::MIN, NonZeroU16::MAX, 0);
    p.process(c.as_bytes());
    p.screen()
        .cell(0, 0)
        .cloned()
        .unwrap_or_else(|| unreachable!())
}

/// The screen's last printed character, read from its `Debug` form (vt100
/// has no getter for it): `last_char: Some('x')` at the end.
fn last_char(debug: &str) -> Option<char> {
    let lit = debug
        .rsplit_once("last_char: Some('")?
        .1
        .strip_suffix("') }")?;
    let mut chars = lit.chars();
    match (chars.next()?, chars.as_str()) {
        ('\\', rest) => match rest {
            "'" => Some('\''),
            "\\" => Some('\\'),
            "\"" => Some('"'),
            _ => u32::from_str_radix(rest.strip_prefix("u{")?.strip_suffix('}')?, 16)
                .ok()
                .and_then(char::from_u32),
        },
        (c, "") => Some(c),
        _ => None,
    }
}

/// A screen's `Debug` form (every field) without the count of rows
/// scrolled off (see [`LazyScreen`]).
fn comparable(debug: &str) -> String {
    let mut out = String::with_capacity(debug.len());
    let mut rest = debug;
    const FIELD: &str = "unbounded_len: ";
    while let Some(at) = rest.find(FIELD) {
        out.push_str(&rest[..at + FIELD.len()]);
        rest = rest[at + FIELD.len()..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

/// Feeds `data` to `parser`, taking the scroll-off shortcut where it is
/// exact (see the module comment). Returns how many bytes it skipped.
fn feed(parser: &mut vt100::Parser, tracker: &mut Tracker, data: &[u8]) -> u64 {
    let mut skipped = 0;
    let rows = usize::from(tracker.rows);
    let mut fed = 0;
    let mut i = 0;
    while i < data.len() {
        if !(tracker.plain_may_start() && is_plain(data[i])) {
            tracker.step(data[i]);
            i += 1;
            continue;
        }
        let end = data[i..]
            .iter()
            .position(|&b| !is_plain(b))
            .map_or(data.len(), |n| i + n);
        if let Some(k) = scroll_off_point(&data[i..end], rows) {
            parser.process(&data[fed..i]);
            parser.process(&b"\n".repeat(rows));
            parser.process(b"\r");
            fed = i + k;
            skipped += k as u64;
        }
        // Plain bytes leave the tracker in the ground state.
        i = end;
    }
    parser.process(&data[fed..]);
    skipped
}

fn is_plain(b: u8) -> bool {
    matches!(b, b' '..=b'~' | b'\r' | b'\n')
}

/// In a run of plain bytes starting in the ground state, the latest point
/// up to which the run may be replaced by `rows` line feeds and a CR.
fn scroll_off_point(run: &[u8], rows: usize) -> Option<usize> {
    // The `rows`-th line feed from the end: at least `rows` follow from it.
    let mut seen = 0;
    let last_lf = run.iter().rposition(|&b| {
        seen += usize::from(b == b'\n');
        seen == rows
    })?;
    // The last character printed must be the same either way.
    if !run[last_lf..]
        .iter()
        .any(|&b| b.is_ascii_graphic() || b == b' ')
    {
        return None;
    }
    let cr = run[..last_lf].iter().rposition(|&b| b == b'\r')?;
    let k = cr + 1;
    let before = run[..k].iter().filter(|&&b| b == b'\n').count();
    (before + 1 >= rows && k > 0).then_some(k)
}

/// Where the escape-sequence parser is, as far as the shortcut needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ground,
    Escape,
    EscapeIntermediate,
    Csi,
    /// An OSC string: ends at BEL, or at ESC.
    Osc,
    /// A DCS, SOS, PM or APC string, or anything not followed exactly:
    /// only an ESC gets out of it.
    Opaque,
}

/// Follows the output for two facts: whether the parser is in its ground
/// state between characters, and whether each screen's scroll region is
/// full. Errs only towards "not sure".
#[derive(Debug, Clone)]
struct Tracker {
    state: State,
    /// UTF-8 continuation bytes still expected.
    utf8_left: u8,
    /// The CSI's parameter and intermediate bytes (bounded).
    csi: Vec<u8>,
    /// Main and alternate screen.
    region_full: [bool; 2],
    alternate: bool,
    /// The screen's height.
    rows: u16,
}

impl Tracker {
    fn new(rows: u16) -> Tracker {
        Tracker {
            rows,
            state: State::Ground,
            utf8_left: 0,
            csi: Vec::new(),
            region_full: [true, true],
            alternate: false,
        }
    }
}

impl Tracker {
    fn plain_may_start(&self) -> bool {
        self.state == State::Ground && self.utf8_left == 0 && self.region_full[self.screen()]
    }

    fn screen(&self) -> usize {
        usize::from(self.alternate)
    }

    fn step(&mut self, b: u8) {
        if b == 0x1b {
            self.state = State::Escape;
            self.utf8_left = 0;
            return;
        }
        match self.state {
            State::Ground => {
                self.utf8_left = match b {
                    0x80..=0xbf => self.utf8_left.saturating_sub(1),
                    0xc0..=0xdf => 1,
                    0xe0..=0xef => 2,
                    0xf0..=0xf7 => 3,
                    0xf8..=0xff => 0,
                    // ASCII ends whatever was pending.
                    _ => 0,
                };
            }
            State::Escape => match b {
                b'[' => {
                    self.state = State::Csi;
                    self.csi.clear();
                }
                b']' => self.state = State::Osc,
                b'P' | b'X' | b'^' | b'_' => self.state = State::Opaque,
                0x20..=0x2f => self.state = State::EscapeIntermediate,
                b'c' => {
                    // RIS: a new screen.
                    self.region_full = [true, true];
                    self.alternate = false;
                    self.state = State::Ground;
                }
                0x30..=0x7e => self.state = State::Ground,
                // C0 controls execute inside; anything else is not
                // followed exactly.
                0x00..=0x1f | 0x7f => {}
                _ => self.state = State::Opaque,
            },
            State::EscapeIntermediate => match b {
                0x30..=0x7e => self.state = State::Ground,
                0x00..=0x2f | 0x7f => {}
                _ => self.state = State::Opaque,
            },
            State::Csi => match b {
                0x20..=0x3f => {
                    if self.csi.len() < 64 {
                        self.csi.push(b);
                    } else {
                        // Too long to judge: no longer sure of the region.
                        self.region_full[self.screen()] = false;
                    }
                }
                0x40..=0x7e => {
                    self.csi_final(b);
                    self.state = State::Ground;
                }
                0x00..=0x1f | 0x7f => {}
                _ => self.state = State::Opaque,
            },
            State::Osc => {
                if b == 0x07 {
                    self.state = State::Ground;
                }
            }
            State::Opaque => {}
        }
    }

    fn csi_final(&mut self, b: u8) {
        let csi = std::mem::take(&mut self.csi);
        let screen = self.screen();
        match (csi.first(), b) {
            // DECSTBM.
            (None | Some(b'0'..=b'9' | b';'), b'r') => {
                self.region_full[screen] = decstbm_is_full(&csi, self.rows);
            }
            (Some(b'?'), b'h' | b'l') => {
                for param in csi[1..].split(|&c| c == b';') {
                    match (param, b) {
                        (b"1049", b'h') => {
                            // The alternate screen is cleared on entry.
                            self.region_full[1] = true;
                            self.alternate = true;
                        }
                        (b"47", b'h') => self.alternate = true,
                        (b"1049" | b"47", b'l') => self.alternate = false,
                        _ => {}
                    }
                }
            }
            // Anything else ending in `r` (vt100 reads none of them, but a
            // region is what `r` sets): not sure.
            (_, b'r') => self.region_full[screen] = false,
            _ => {}
        }
        self.csi = csi;
    }
}

/// Whether `CSI params r` leaves the whole screen of `rows` rows as the
/// scroll region, as vt100 reads it (0 or none: top 1, bottom the last
/// row; a region of less than two rows resets to the whole screen).
/// `false` also for anything it does not read exactly.
fn decstbm_is_full(params: &[u8], rows: u16) -> bool {
    let mut values = [0u16; 2];
    for (n, p) in params.split(|&c| c == b';').enumerate() {
        let Some(v) = values.get_mut(n) else {
            return false;
        };
        if p.len() > 4 || !p.iter().all(u8::is_ascii_digit) {
            return false;
        }
        *v = p.iter().fold(0, |v, &c| v * 10 + u16::from(c - b'0'));
    }
    let top = values[0].max(1) - 1;
    let bottom = if values[1] == 0 { rows } else { values[1] }.min(rows) - 1;
    top >= bottom || (top == 0 && bottom == rows - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u16) -> NonZeroU16 {
        NonZeroU16::new(n).unwrap()
    }

    /// Everything a snapshot is made of, for comparing two screens.
    fn state(screen: &vt100::Screen) -> (String, (u16, u16), bool) {
        (
            screen.state_formatted().escape_debug().to_string(),
            screen.cursor_position(),
            screen.alternate_screen(),
        )
    }

    /// Feeds `chunks` both ways and checks the screens are the same after
    /// each chunk, and after each chunk followed by `tail` (which shows
    /// state a snapshot does not carry: the last character, for REP, and
    /// the scroll region).
    fn same_as_full_parse(chunks: &[Vec<u8>], tail: &[u8]) -> u64 {
        let (rows, cols) = (nz(6), nz(20));
        let mut full = vt100::Parser::new(rows, cols, 0);
        let mut lazy = LazyScreen::new(rows, cols);
        for (n, chunk) in chunks.iter().enumerate() {
            full.process(chunk);
            lazy.push(chunk);
            assert_eq!(state(lazy.screen()), state(full.screen()), "after {n}");
            let mut f = vt100::Parser::new(rows, cols, 0);
            let mut l = LazyScreen::new(rows, cols);
            for chunk in &chunks[..=n] {
                f.process(chunk);
                l.push(chunk);
            }
            f.process(tail);
            l.push(tail);
            assert_eq!(
                state(l.screen()),
                state(f.screen()),
                "after {n} and the tail"
            );
        }
        lazy.skipped
    }

    fn lines(n: usize, width: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            let line: String = (0..width)
                .map(|j| (b'a' + ((i + j) % 26) as u8) as char)
                .collect();
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    #[test]
    fn plain_output_that_scrolls_off_is_skipped_exactly() {
        let tail = b"\x1b[3bz\n";
        // Lines shorter, equal and longer than the width (wrapping).
        for width in [0, 5, 19, 20, 21, 45] {
            let skipped = same_as_full_parse(&[lines(50, width)], tail);
            assert!(width == 0 || skipped > 0, "width {width}");
            same_as_full_parse(
                &[b"\x1b[31mred ".to_vec(), lines(30, width), b"x".to_vec()],
                tail,
            );
        }
        // Bare LF and CR in odd places, a prompt without newline.
        let mut odd = lines(20, 7);
        odd.extend_from_slice(b"\n\n\rab\rc\n\n\n\n\n\n\n\n\r$ ");
        assert!(same_as_full_parse(&[odd], tail) > 0);
        // The fewest line feeds the shortcut may take: from the top row,
        // with something on the bottom row that must scroll off.
        for n in 9..=11 {
            let mut from_top = b"\x1b[6;1HBOTTOMLINE\x1b[H".to_vec();
            from_top.extend_from_slice(&lines(n, 4));
            same_as_full_parse(&[from_top], tail);
        }
    }

    #[test]
    fn scroll_regions_and_screens_turn_the_shortcut_off_when_needed() {
        let tail = b"q\x1b[2bz\r\n\n\n\n\n\n\n";
        let cases: Vec<Vec<Vec<u8>>> = vec![
            // A region on the main screen, the cursor in it, below and
            // above it.
            vec![b"\x1b[2;4r".to_vec(), lines(30, 8)],
            vec![b"\x1b[2;3r\x1b[5;1H".to_vec(), lines(30, 8)],
            vec![b"\x1b[4;5r\x1b[1;1H".to_vec(), lines(30, 8)],
            // Region set, then reset.
            vec![
                b"\x1b[2;4r".to_vec(),
                lines(10, 3),
                b"\x1b[r".to_vec(),
                lines(30, 8),
            ],
            // Region on main, alternate screen entered and left.
            vec![
                b"\x1b[2;3r\x1b[5;1H\x1b[?1049h".to_vec(),
                lines(30, 4),
                b"\x1b[r\x1b[?1049l".to_vec(),
                lines(30, 9),
            ],
            // The alternate screen via 47, a region inside.
            vec![
                b"\x1b[?47h\x1b[1;3r".to_vec(),
                lines(30, 4),
                b"\x1b[?47l\x1b[1;2r\x1b[4H".to_vec(),
                lines(30, 4),
            ],
            // The alternate screen via 47 keeps its region between visits.
            vec![
                b"\x1b[?47h\x1b[2;3r\x1b[?47l\x1b[r\x1b[?47h\x1b[5H".to_vec(),
                lines(30, 4),
            ],
            // A sequence split over chunks, an OSC title, a DCS, RIS.
            vec![
                b"\x1b[2;".to_vec(),
                b"4r".to_vec(),
                lines(30, 4),
                b"\x1b]0;title\x07".to_vec(),
                lines(30, 4),
                b"\x1bPq#0;2;0;0;0".to_vec(),
                lines(30, 4),
                b"\x1b\\\x1bc".to_vec(),
                lines(30, 6),
            ],
            // UTF-8, wide characters and tabs around plain runs.
            vec![
                "héllo 日本語\tx\r\n".as_bytes().to_vec(),
                lines(30, 4),
                vec![0xe6, 0x97],
                vec![0xa5],
                lines(30, 4),
            ],
            // Top 1 and an explicit bottom (not taken as full).
            vec![
                b"\x1b[1;6r".to_vec(),
                lines(30, 4),
                b"\x1b[1;3r".to_vec(),
                lines(30, 4),
            ],
        ];
        for chunks in cases {
            same_as_full_parse(&chunks, tail);
        }
    }

    /// Random mixes of plain runs and the sequences the tracker reads,
    /// split at random points, looked at at random points.
    #[test]
    fn random_streams_match_a_full_parse() {
        let pieces: &[&[u8]] = &[
            b"\x1b[2;4r",
            b"\x1b[r",
            b"\x1b[1;6r",
            b"\x1b[5H",
            b"\x1b[H",
            b"\x1b[?1049h",
            b"\x1b[?1049l",
            b"\x1b[?47h",
            b"\x1b[?47l",
            b"\x1b]0;t\x07",
            b"\x1b[31m",
            "日本".as_bytes(),
            b"\t",
            b"\x1b[3b",
            b"\x1bc",
            b"\x1b[",
            b"1;",
            b"3r",
            b"\x1bP",
            b"\x1b\\",
            b"\x08",
            b"\xe6",
            b"\x1b[?6h",
            b"\x1b7",
            b"\x1b8",
            b"\x1bM",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut rand = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let (rows, cols) = (nz(6), nz(20));
        let mut skipped = 0;
        for _ in 0..300 {
            let mut stream = Vec::new();
            for _ in 0..40 {
                if rand(3) == 0 {
                    stream.extend_from_slice(pieces[rand(pieces.len())]);
                } else {
                    stream.extend_from_slice(&lines(rand(20), rand(30)));
                }
            }
            let mut full = vt100::Parser::new(rows, cols, 0);
            let mut lazy = LazyScreen::new(rows, cols);
            let mut at = 0;
            while at < stream.len() {
                let end = (at + 1 + rand(600)).min(stream.len());
                full.process(&stream[at..end]);
                lazy.push(&stream[at..end]);
                if rand(4) == 0 {
                    assert_eq!(state(lazy.screen()), state(full.screen()));
                }
                at = end;
            }
            assert_eq!(state(lazy.screen()), state(full.screen()));
            skipped += lazy.skipped;
        }
        assert!(skipped > 0);
    }

    #[test]
    fn a_big_stream_is_mostly_skipped_and_the_log_stays_bounded() {
        let mut lazy = LazyScreen::new(nz(24), nz(80));
        let mut full = vt100::Parser::new(nz(24), nz(80), 0);
        let block = lines(1000, 62);
        for _ in 0..20 {
            lazy.push(&block);
            full.process(&block);
            assert!(lazy.log.len() < LOG_CAP);
        }
        assert_eq!(state(lazy.screen()), state(full.screen()));
        assert!(
            lazy.skipped > 20 * block.len() as u64 * 95 / 100,
            "{}",
            lazy.skipped
        );
    }

    /// Asserts two screens are the same, showing where they differ.
    fn same(a: &vt100::Screen, b: &vt100::Screen, input: &[u8]) {
        let (a, b) = (comparable(&format!("{a:?}")), comparable(&format!("{b:?}")));
        if let Some(at) = a.bytes().zip(b.bytes()).position(|(x, y)| x != y) {
            let from = at.saturating_sub(150);
            panic!(
                "differ at {at}:\n{}\n{}\ninput {}",
                &a[from..(at + 60).min(a.len())],
                &b[from..(at + 60).min(b.len())],
                String::from_utf8_lossy(&input[input.len().saturating_sub(300)..]).escape_debug()
            );
        }
        assert_eq!(a.len(), b.len());
    }

    /// Compacting at random points, then going on, gives the same screen,
    /// every field of it, as one parser fed everything.
    #[test]
    fn compacting_anywhere_keeps_the_screen_exact() {
        let pieces: &[&[u8]] = &[
            b"\x1b[2;4r",
            b"\x1b[r",
            b"\x1b[5H",
            b"\x1b[?1049h",
            b"\x1b[?1049l",
            b"\x1b[?47h",
            b"\x1b[?47l",
            b"\x1b]0;t\x07",
            b"\x1b[31m",
            b"\x1b[1;4;38;5;99m",
            b"\x1b[0m",
            "日本".as_bytes(),
            b"\t",
            b"\x1b[3b",
            b"\x1bc",
            b"\x1b[",
            b"1;",
            b"\x1bP",
            b"\x1b\\",
            b"\x08",
            b"\xe6",
            b"\x1b[?6h",
            b"\x1b7",
            b"\x1b8",
            b"\x1bM",
            b"\x1b[?25l",
            b"\x1b[?25h",
            b"\x1b[?1h\x1b=",
            b"\x1b[?2004h",
            b"\x1b[?1000h\x1b[?1006h",
            b"\x1b[4 q",
            b"\x1b[K",
            b"\x1b[2J",
            b"$ ",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rand = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let (rows, cols) = (nz(6), nz(20));
        let (mut tried, mut compacted) = (0, 0);
        for _ in 0..60 {
            let mut stream = Vec::new();
            for _ in 0..40 {
                if rand(2) == 0 {
                    stream.extend_from_slice(pieces[rand(pieces.len())]);
                } else {
                    stream.extend_from_slice(&lines(rand(10), rand(30)));
                }
            }
            let mut full = vt100::Parser::new(rows, cols, 0);
            let mut lazy = LazyScreen::new(rows, cols);
            let mut at = 0;
            while at < stream.len() {
                let end = (at + 1 + rand(100)).min(stream.len());
                full.process(&stream[at..end]);
                lazy.push(&stream[at..end]);
                if rand(2) == 0 {
                    tried += 1;
                    compacted += usize::from(lazy.compact());
                }
                if rand(4) == 0 {
                    same(lazy.screen(), full.screen(), &stream[..end]);
                }
                at = end;
            }
            same(lazy.screen(), full.screen(), &stream);
        }
        // Many of these states can be redrawn (not all: a saved cursor, a
        // scroll region, an alternate screen with a main one behind it, a
        // sequence cut in two).
        assert!(compacted * 5 > tried, "{compacted} of {tried}");
    }

    #[test]
    fn a_prompt_compacts_to_a_few_bytes() {
        let mut lazy = LazyScreen::new(nz(24), nz(80));
        let mut full = vt100::Parser::new(nz(24), nz(80), 0);
        let out = b"\x1b[?2004h\x1b]0;root@host: ~\x07\x1b[01;32mroot@host\x1b[00m:\x1b[01;34m~\x1b[00m# ";
        lazy.push(out);
        full.process(out);
        assert!(lazy.compact());
        assert!(lazy.is_compact());
        assert!(lazy.base.len() < 200, "{}", lazy.base.len());
        lazy.push(b"ls\r\n\x1b[?2004l\r");
        full.process(b"ls\r\n\x1b[?2004l\r");
        assert!(lazy.is_compact());
        same(lazy.screen(), full.screen(), b"");
        assert!(!lazy.is_compact());
    }

    #[test]
    fn a_full_screen_program_compacts_too() {
        let mut lazy = LazyScreen::new(nz(24), nz(80));
        let mut full = vt100::Parser::new(nz(24), nz(80), 0);
        let out =
            b"$ ls\r\nfile\r\n$ vi\x1b[?1049h\x1b[22;1H\x1b[7mNORMAL\x1b[m\x1b[1;1Htext\x1b[?25l";
        lazy.push(out);
        full.process(out);
        assert!(lazy.compact());
        same(lazy.screen(), full.screen(), out);
        // Leaving it shows the normal screen as it was.
        let more = b"\x1b[?25h\x1b[?1049l$ ";
        lazy.push(more);
        full.process(more);
        same(lazy.screen(), full.screen(), more);
        assert!(lazy.screen().contents().contains("file"));
    }

    #[test]
    fn decstbm_full_forms() {
        for full in [
            &b""[..],
            b";",
            b"1",
            b"0;0",
            b"1;24",
            b"1;99",
            b"5;5",
            b"9;2",
        ] {
            assert!(decstbm_is_full(full, 24), "{full:?}");
        }
        for part in [&b"2"[..], b"1;23", b"1;2;3", b"1:2", b"?1", b"99999"] {
            assert!(!decstbm_is_full(part, 24), "{part:?}");
        }
    }
}
