//! `warren-get`, `warren-put` and `warren-download`: files in and out of
//! the home, run inside the sandbox as its user (docs/api.md, "Files").
//! The server runs the first two for the files API; the user runs
//! `warren-download FILE` in the web terminal to have the page fetch it.

use std::io::{IsTerminal, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use warren_runtime::archive::{self, ArchiveLimits};
use warren_runtime::files::{self, FileError};

const GET_USAGE: &str = "usage: warren-get [--max-bytes N] [--max-entries N] -- PATH > out
Writes `file` or `dir` on a line, then the file's bytes or the directory
as tar.gz. PATH is relative to the current directory (the home) and may
not go through a symlink.";

const PUT_USAGE: &str = "usage: warren-put [--archive] [--max-bytes N] [--max-entries N] [--max-entry-bytes N] -- PATH < in
Writes stdin to the file PATH (parents made), or with --archive unpacks
the tar.gz on stdin into the directory PATH; prints a JSON summary.";

const DOWNLOAD_USAGE: &str = "usage: warren-download FILE
In warren's web terminal, has the page download FILE (a file or a
folder in your home; a folder comes as .tar.gz).";

struct Args {
    limits: ArchiveLimits,
    archive: bool,
    path: String,
}

fn parse(args: &[String], allow_archive: bool) -> Result<Args, String> {
    let mut limits = ArchiveLimits::default();
    let (mut archive, mut path) = (false, None);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let field = match arg.as_str() {
            "--" => {
                path = it.next().cloned();
                if let Some(extra) = it.next() {
                    return Err(format!("unexpected argument {extra:?}"));
                }
                break;
            }
            "--archive" if allow_archive => {
                archive = true;
                continue;
            }
            "--max-bytes" => &mut limits.max_bytes,
            "--max-entries" => &mut limits.max_entries,
            "--max-entry-bytes" => &mut limits.max_entry_bytes,
            other => {
                return Err(format!(
                    "unknown option {other:?} (the path comes after --)"
                ))
            }
        };
        let value = it.next().ok_or_else(|| format!("{arg} needs a value"))?;
        *field = value
            .parse()
            .map_err(|_| format!("{arg}: not a number: {value:?}"))?;
    }
    let path = path.ok_or("missing -- PATH")?;
    Ok(Args {
        limits,
        archive,
        path,
    })
}

fn usage(tool: &str, msg: &str, usage: &str) -> ExitCode {
    eprintln!("{tool}: {msg}\n{usage}");
    ExitCode::from(2)
}

fn failed(tool: &str, e: FileError) -> ExitCode {
    eprintln!("{tool}: {e}");
    ExitCode::from(e.exit_code())
}

fn home() -> Result<OwnedFd, FileError> {
    std::fs::File::open(".")
        .map(OwnedFd::from)
        .map_err(|source| FileError::Io {
            op: "open",
            path: ".".into(),
            source,
        })
}

/// `warren-get -- PATH`.
pub fn get(args: &[String]) -> ExitCode {
    let args = match parse(args, false) {
        Ok(a) => a,
        Err(msg) => return usage("warren-get", &msg, GET_USAGE),
    };
    let stdout = std::io::stdout();
    if stdout.is_terminal() {
        return usage("warren-get", "stdout is a terminal; redirect it", GET_USAGE);
    }
    let out = std::io::BufWriter::with_capacity(256 << 10, stdout.lock());
    let result = files::parse(&args.path)
        .and_then(|comps| Ok((comps, home()?)))
        .and_then(|(comps, root)| files::get(root.as_fd(), &comps, out, &args.limits));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failed("warren-get", e),
    }
}

/// `warren-put [--archive] -- PATH`, stdin the content.
pub fn put(args: &[String]) -> ExitCode {
    let args = match parse(args, true) {
        Ok(a) => a,
        Err(msg) => return usage("warren-put", &msg, PUT_USAGE),
    };
    if std::io::stdin().is_terminal() {
        return usage("warren-put", "stdin is a terminal", PUT_USAGE);
    }
    let result = (|| {
        let comps = files::parse(&args.path)?;
        let root = home()?;
        let stdin = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned().map_err(
            |source| FileError::Io {
                op: "read",
                path: "stdin".into(),
                source,
            },
        )?);
        if args.archive {
            let input = archive::seekable(stdin, Path::new("."), &args.limits)?;
            let s = files::put_archive(root.as_fd(), &comps, input, &args.limits)?;
            Ok(serde_json::json!({ "path": args.path, "bytes": s.bytes, "entries": s.entries }))
        } else {
            let n = files::put_file(root.as_fd(), &comps, &mut &stdin)?;
            Ok(serde_json::json!({ "path": args.path, "bytes": n }))
        }
    })();
    match result {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => failed("warren-put", e),
    }
}

/// The OSC the page turns into a download (docs/serve.md, "Files"):
/// `ESC ] 5379 ; download ; PATH BEL`, PATH relative to the home and
/// percent-encoded.
pub const DOWNLOAD_OSC: u32 = 5379;

/// `warren-download FILE`: prints the escape sequence (and a line for
/// people on other terminals).
pub fn download(args: &[String]) -> ExitCode {
    let [file] = args else {
        return usage("warren-download", "give one file", DOWNLOAD_USAGE);
    };
    if file == "--help" || file == "-h" {
        println!("{DOWNLOAD_USAGE}");
        return ExitCode::SUCCESS;
    }
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
    // The real path: the API refuses a path through a symlink.
    let (real, home) = match (std::fs::canonicalize(file), std::fs::canonicalize(&home)) {
        (Ok(r), Ok(h)) => (r, h),
        (Err(e), _) => {
            eprintln!("warren-download: {file}: {e}");
            return ExitCode::from(1);
        }
        (_, Err(e)) => {
            eprintln!("warren-download: your home {}: {e}", home.display());
            return ExitCode::from(1);
        }
    };
    let Ok(rel) = real.strip_prefix(&home) else {
        eprintln!(
            "warren-download: {} is outside your home ({}); copy it there first",
            real.display(),
            home.display()
        );
        return ExitCode::from(1);
    };
    if rel.as_os_str().is_empty() {
        eprintln!("warren-download: name a file or folder inside your home, not the home itself");
        return ExitCode::from(1);
    }
    let encoded = percent_encode(rel.as_os_str().as_encoded_bytes());
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "\x1b]{DOWNLOAD_OSC};download;{encoded}\x07");
    let _ = writeln!(
        out,
        "warren-download: sending ~/{} to your browser",
        rel.display()
    );
    let _ = out.flush();
    ExitCode::SUCCESS
}

/// Everything but unreserved characters and `/` as %XX.
fn percent_encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments() {
        let a = parse(
            &strings(&["--archive", "--max-bytes", "9", "--", "-a b"]),
            true,
        )
        .unwrap();
        assert!(a.archive);
        assert_eq!((a.limits.max_bytes, a.path.as_str()), (9, "-a b"));
        assert!(parse(&strings(&["--archive", "--", "x"]), false).is_err());
        assert!(parse(&strings(&["x"]), true).is_err());
        assert!(parse(&strings(&["--", "x", "y"]), true).is_err());
    }

    #[test]
    fn paths_are_percent_encoded() {
        assert_eq!(
            percent_encode("a b/ü;\x07".as_bytes()),
            "a%20b/%C3%BC%3B%07"
        );
    }
}
