//! The title `ps` shows for the shim's processes (`warren: init alice`).
//!
//! `comm` (PR_SET_NAME) holds 15 bytes and stays `warren-shim`; what `ps -o
//! args`, `ps aux` and `top -c` show is the argument area of the process's
//! memory (`/proc/PID/cmdline`). It is rewritten in place, as setproctitle(3)
//! does, through `/proc/self/mem` at the addresses `/proc/self/stat` gives:
//! no `unsafe`, and a process may always write its own memory. The title is
//! written as separate arguments (`ps` joins them with spaces; tools that
//! split the command line still find a subcommand in `argv[1]`), cut to the
//! original area (the shim's own arguments, 40 bytes or more) and padded
//! with NULs, so the kernel reads it as ordinary arguments.

use std::fs;
use std::io;
use std::os::unix::fs::FileExt;

/// Shows `args` as this process's command line. Best effort: callers
/// ignore a failure, the title is only for people reading `ps`.
pub fn set(args: &[&str]) -> io::Result<()> {
    let stat = fs::read_to_string("/proc/self/stat")?;
    let (start, end) =
        arg_area(&stat).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))?;
    let mem = fs::OpenOptions::new().write(true).open("/proc/self/mem")?;
    mem.write_all_at(&fit(&args.join("\0"), end - start), start)
}

/// `arg_start` and `arg_end` (fields 48 and 49 of `/proc/PID/stat`, counted
/// after the command name, which may hold spaces and parentheses).
fn arg_area(stat: &str) -> Option<(u64, u64)> {
    let mut fields = stat.get(stat.rfind(')')? + 2..)?.split(' ').skip(48 - 3);
    let start: u64 = fields.next()?.parse().ok()?;
    let end: u64 = fields.next()?.parse().ok()?;
    (start < end).then_some((start, end))
}

/// `title` (arguments separated by NULs) cut to fit `len` bytes with a NUL at the end (on a character
/// boundary), padded with NULs to exactly `len`.
fn fit(title: &str, len: u64) -> Vec<u8> {
    let len = len as usize;
    let mut cut = title.len().min(len.saturating_sub(1));
    while !title.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut bytes = title.as_bytes()[..cut].to_vec();
    bytes.resize(len, 0);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_argument_area_after_an_odd_command_name() {
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[48 - 3] = "140737488347000".into();
        fields[49 - 3] = "140737488347044".into();
        let stat = format!("42 (a) b (c) {}", fields.join(" "));
        assert_eq!(
            arg_area(&stat),
            Some((140_737_488_347_000, 140_737_488_347_044))
        );
        assert_eq!(arg_area("42 (x) S 1"), None);
    }

    #[test]
    fn title_is_cut_and_padded_to_the_area() {
        assert_eq!(fit("warren: init alice", 20), b"warren: init alice\0\0");
        assert_eq!(fit("warren: init alice", 8), b"warren:\0");
        assert_eq!(fit("warren:\0init\0al", 16), b"warren:\0init\0al\0");
        // Never half a character: the cut moves back to a boundary.
        assert_eq!(fit("ab\u{e9}", 4), b"ab\0\0");
    }

    #[test]
    fn reads_its_own_area() {
        let stat = fs::read_to_string("/proc/self/stat").unwrap();
        let (start, end) = arg_area(&stat).unwrap();
        let cmdline = fs::read("/proc/self/cmdline").unwrap();
        assert_eq!((end - start) as usize, cmdline.len());
    }
}
