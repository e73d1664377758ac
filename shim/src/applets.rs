//! `warren-import` and `warren-export`: the archive tools run inside a
//! sandbox, as its user, under its seccomp filter and Landlock rules, so an
//! import never races the user's running sandbox and writes only what the
//! user could (docs/archives.md).

use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

use warren_runtime::archive::{self, ArchiveLimits};

const IMPORT_USAGE: &str =
    "usage: warren-import [--max-bytes N] [--max-entries N] [--max-entry-bytes N] [DIR]
       warren-import --clean [DIR]
Unpacks the tar.gz on stdin into DIR (default: the current directory) and
prints a JSON summary. A refused or failed import changes nothing.
--clean removes what imports killed while unpacking left in DIR.";

const EXPORT_USAGE: &str = "usage: warren-export [--max-bytes N] [--max-entries N] [--max-entry-bytes N] [--format tar.gz|tar] [DIR] > archive.tar.gz
Writes DIR (default: the current directory) to stdout as tar.gz, or as a
plain tar with --format tar.";

/// What both tools take: limits and one directory.
#[derive(Debug, PartialEq)]
struct Args {
    limits: ArchiveLimits,
    dir: PathBuf,
    /// `warren-import --clean`: remove staging leftovers, import nothing.
    clean: bool,
    /// `warren-export --format tar`: no compression (the server compresses
    /// outside the user's CPU limit).
    plain_tar: bool,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut limits = ArchiveLimits::default();
    let mut dir = None;
    let mut clean = false;
    let mut plain_tar = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let field = match arg.as_str() {
            "--max-bytes" => &mut limits.max_bytes,
            "--max-entries" => &mut limits.max_entries,
            "--max-entry-bytes" => &mut limits.max_entry_bytes,
            "--clean" => {
                clean = true;
                continue;
            }
            "--format" => {
                plain_tar = match it.next().map(String::as_str) {
                    Some("tar") => true,
                    Some("tar.gz") => false,
                    other => return Err(format!("--format: tar.gz or tar, not {other:?}")),
                };
                continue;
            }
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag:?}")),
            path if dir.is_none() => {
                dir = Some(PathBuf::from(path));
                continue;
            }
            extra => return Err(format!("unexpected argument {extra:?}")),
        };
        let value = it.next().ok_or_else(|| format!("{arg} needs a value"))?;
        *field = value
            .parse()
            .map_err(|_| format!("{arg}: not a number: {value:?}"))?;
    }
    Ok(Args {
        limits,
        dir: dir.unwrap_or_else(|| PathBuf::from(".")),
        clean,
        plain_tar,
    })
}

fn usage_error(tool: &str, msg: &str, usage: &str) -> ExitCode {
    eprintln!("{tool}: {msg}\n{usage}");
    ExitCode::from(2)
}

/// `--help`, or the parsed arguments, or a usage error.
fn arguments(tool: &str, args: &[String], usage: &str) -> Result<Args, ExitCode> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{usage}");
        return Err(ExitCode::SUCCESS);
    }
    parse(args).map_err(|msg| usage_error(tool, &msg, usage))
}

/// `warren-import [DIR]`: stdin (a file, or spooled into an unnamed file
/// in DIR when it is a pipe) unpacked into DIR.
pub fn import(args: &[String]) -> ExitCode {
    let args = match arguments("warren-import", args, IMPORT_USAGE) {
        Ok(a) => a,
        Err(code) => return code,
    };
    if args.clean {
        return clean(&args.dir);
    }
    if args.plain_tar {
        return usage_error("warren-import", "unknown option \"--format\"", IMPORT_USAGE);
    }
    if std::io::stdin().is_terminal() {
        return usage_error(
            "warren-import",
            "stdin is a terminal, not an archive",
            IMPORT_USAGE,
        );
    }
    let stdin = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => std::fs::File::from(fd),
        Err(e) => {
            eprintln!("warren-import: stdin: {e}");
            return ExitCode::from(IMPORT_FAILED);
        }
    };
    let result = archive::seekable(stdin, &args.dir, &args.limits)
        .and_then(|input| archive::extract(input, &args.dir, &args.limits));
    match result {
        Ok(summary) => {
            println!(
                "{}",
                serde_json::to_string(&summary).expect("a summary serializes")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("warren-import: {e}");
            // The server answers a refusal (the archive, or the archive
            // against this home) as the client's, a failure as its own.
            ExitCode::from(if e.is_refusal() { 1 } else { IMPORT_FAILED })
        }
    }
}

/// `warren-import`'s exit status when the host side failed (reading the
/// input, writing the home) rather than the archive being refused (1).
const IMPORT_FAILED: u8 = 3;

/// `warren-import --clean [DIR]`: prints `{"removed":N}`.
fn clean(dir: &std::path::Path) -> ExitCode {
    match archive::clean(dir) {
        Ok(n) => {
            println!("{}", serde_json::json!({ "removed": n }));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("warren-import: {e}");
            ExitCode::from(1)
        }
    }
}

/// `warren-export [DIR]`: DIR as tar.gz on stdout; what was left out, on
/// stderr.
pub fn export(args: &[String]) -> ExitCode {
    let args = match arguments("warren-export", args, EXPORT_USAGE) {
        Ok(a) => a,
        Err(code) => return code,
    };
    if args.clean {
        return usage_error("warren-export", "unknown option \"--clean\"", EXPORT_USAGE);
    }
    let stdout = std::io::stdout();
    if stdout.is_terminal() {
        return usage_error(
            "warren-export",
            "stdout is a terminal; redirect it to a file",
            EXPORT_USAGE,
        );
    }
    let mut out = std::io::BufWriter::with_capacity(256 << 10, stdout.lock());
    let result = match args.plain_tar {
        true => archive::export_tar(&args.dir, &mut out, &args.limits),
        false => archive::export(&args.dir, &mut out, &args.limits),
    };
    let result = result.and_then(|exported| {
        out.flush()
            .map(|()| exported)
            .map_err(|e| archive::ArchiveError::Io {
                op: "write",
                path: "stdout".into(),
                source: e,
            })
    });
    match result {
        Ok(exported) => {
            for s in &exported.skipped {
                eprintln!("warren-export: left out {:?}: {}", s.path, s.reason);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("warren-export: {e} (the archive written is incomplete)");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments() {
        assert_eq!(
            parse(&[]).unwrap(),
            Args {
                limits: ArchiveLimits::default(),
                dir: ".".into(),
                clean: false,
                plain_tar: false,
            }
        );
        let a = parse(&strings(&[
            "--max-entries",
            "10",
            "sub",
            "--max-bytes",
            "99",
        ]))
        .unwrap();
        assert_eq!(a.dir, PathBuf::from("sub"));
        assert_eq!((a.limits.max_entries, a.limits.max_bytes), (10, 99));
        assert!(parse(&strings(&["--max-bytes"])).is_err());
        assert!(parse(&strings(&["--max-bytes", "lots"])).is_err());
        assert!(parse(&strings(&["a", "b"])).is_err());
        assert!(parse(&strings(&["--follow"])).is_err());
        assert!(parse(&strings(&["--format", "tar"])).unwrap().plain_tar);
        assert!(!parse(&strings(&["--format", "tar.gz"])).unwrap().plain_tar);
        assert!(parse(&strings(&["--format", "zip"])).is_err());
        assert!(parse(&strings(&["--format"])).is_err());
    }
}
