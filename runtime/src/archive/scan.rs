//! Reading a tar.gz stream entry by entry, with the extended headers
//! (GNU long names and links, pax) decoded here rather than by the tar
//! crate: its own decoding reads an extended header of any declared size
//! into memory, so a 10 GiB long name would be a 10 GiB allocation. Here
//! each is bounded before it is read, and every header then goes through
//! the [`Checker`] before any of its data is read
//! (docs/dependencies.md#q10-tar-reading).

use std::io::{self, BufRead, BufReader, Read};

use tar::{EntryType, PaxExtensions};

use super::rules::{Checked, Checker, Header, Rule};
use super::{ArchiveError, ArchiveLimits};

/// Largest single extended header (a pax header holds a path and a link
/// target of at most 4 KiB each; 1 MiB leaves room for other records).
const MAX_EXTENSION_BYTES: u64 = 1 << 20;
/// Zero padding accepted after the end-of-archive marker (tar pads to
/// 10 KiB records; some writers use larger blocking factors).
const MAX_TRAILER_BYTES: u64 = 1 << 20;

/// An I/O error while reading the archive, as the archive's fault where
/// it is one.
pub(crate) fn stream_err(e: io::Error) -> ArchiveError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => ArchiveError::Truncated,
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::Other => {
            ArchiveError::Corrupt {
                detail: e.to_string(),
            }
        }
        _ => ArchiveError::io("read", "the archive", e),
    }
}

/// Extended headers waiting for the entry they describe.
#[derive(Default)]
struct Pending {
    pax: Option<Vec<u8>>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

/// Counts the bytes read through it.
struct Counted<'a, R> {
    inner: &'a mut R,
    n: u64,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// Scans `input`, checking every entry, and hands each accepted entry and
/// its data to `on_entry` (which may read the data or not: what it leaves
/// is read and counted here). Returns the checker, holding the summary and
/// the tree of paths.
pub(crate) fn scan<R: Read>(
    mut input: R,
    limits: &ArchiveLimits,
    mut on_entry: impl FnMut(&Checked, &mut dyn Read) -> Result<(), ArchiveError>,
) -> Result<Checker, ArchiveError> {
    let mut magic = [0u8; 2];
    match input.read_exact(&mut magic) {
        Ok(()) if magic == [0x1f, 0x8b] => {}
        Ok(()) => return Err(ArchiveError::NotGzip),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(ArchiveError::NotGzip),
        Err(e) => return Err(ArchiveError::io("read", "the archive", e)),
    }
    let gz = flate2::bufread::GzDecoder::new(BufReader::new(io::Cursor::new(magic).chain(input)));
    let mut archive = tar::Archive::new(gz);
    let mut checker = Checker::new(*limits);
    {
        // Raw: extended headers come to us as entries (see the module doc).
        let entries = archive.entries().map_err(stream_err)?.raw(true);
        let mut pending = Pending::default();
        let mut first = true;
        for entry in entries {
            let mut entry = entry.map_err(|e| match stream_err(e) {
                ArchiveError::Corrupt { .. } | ArchiveError::Truncated if first => {
                    ArchiveError::Corrupt {
                        detail: "gzip data, but not a tar archive".into(),
                    }
                }
                other => other,
            })?;
            first = false;
            let header = entry.header().clone();
            let corrupt = |e: io::Error| ArchiveError::Corrupt {
                detail: format!(
                    "header of {:?}: {e}",
                    String::from_utf8_lossy(&header.path_bytes())
                ),
            };
            let size = header.entry_size().map_err(corrupt)?;
            let slot = match header.entry_type() {
                EntryType::XHeader => Some(&mut pending.pax),
                EntryType::GNULongName => Some(&mut pending.long_name),
                EntryType::GNULongLink => Some(&mut pending.long_link),
                EntryType::XGlobalHeader => None,
                _ => {
                    let pending = std::mem::take(&mut pending);
                    let decoded = decode(&header, size, &pending)?;
                    let checked = checker.check(&decoded.header())?;
                    let mut data = Counted {
                        inner: &mut entry,
                        n: 0,
                    };
                    on_entry(&checked, &mut data)?;
                    io::copy(&mut data, &mut io::sink()).map_err(stream_err)?;
                    if data.n != checked.size {
                        return Err(ArchiveError::Truncated);
                    }
                    continue;
                }
            };
            let name = String::from_utf8_lossy(&header.path_bytes()).into_owned();
            let refuse = |rule| ArchiveError::Refused {
                path: name.clone(),
                rule,
            };
            if size > MAX_EXTENSION_BYTES {
                return Err(refuse(Rule::ExtensionTooBig {
                    size,
                    max: MAX_EXTENSION_BYTES,
                }));
            }
            // A global header is read (and bounded) but means nothing here.
            checker.charge_metadata(size.max(512))?;
            let mut data = Vec::with_capacity(size as usize);
            (&mut entry)
                .take(size)
                .read_to_end(&mut data)
                .map_err(stream_err)?;
            if data.len() as u64 != size {
                return Err(ArchiveError::Truncated);
            }
            if let Some(slot) = slot {
                if slot.replace(data).is_some() {
                    return Err(refuse(Rule::DuplicateExtension));
                }
            }
        }
        if pending.pax.is_some() || pending.long_name.is_some() || pending.long_link.is_some() {
            return Err(ArchiveError::Refused {
                path: "(end of archive)".into(),
                rule: Rule::DanglingExtension,
            });
        }
    }
    // Read to the end: the gzip trailer's CRC and length are checked only
    // there, and nothing may hide after the end-of-archive marker.
    let mut gz = archive.into_inner();
    let mut buf = [0u8; 8192];
    let mut trailer = 0u64;
    loop {
        let n = gz.read(&mut buf).map_err(stream_err)?;
        if n == 0 {
            break;
        }
        trailer += n as u64;
        if trailer > MAX_TRAILER_BYTES || buf[..n].iter().any(|b| *b != 0) {
            return Err(ArchiveError::TrailingData);
        }
    }
    let mut rest = gz.into_inner();
    if !rest.fill_buf().map_err(stream_err)?.is_empty() {
        return Err(ArchiveError::TrailingData);
    }
    Ok(checker)
}

/// A header with its extended headers applied.
struct Decoded {
    path: Vec<u8>,
    link: Vec<u8>,
    entry_type: EntryType,
    mode: u32,
    mtime: i64,
    size: u64,
}

impl Decoded {
    fn header(&self) -> Header<'_> {
        Header {
            path: &self.path,
            entry_type: self.entry_type,
            mode: self.mode,
            mtime: self.mtime,
            size: self.size,
            link: &self.link,
        }
    }
}

/// GNU long names end in a NUL; an inner NUL stays and is refused.
fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

fn decode(header: &tar::Header, size: u64, pending: &Pending) -> Result<Decoded, ArchiveError> {
    let shown = String::from_utf8_lossy(&header.path_bytes()).into_owned();
    let corrupt = |detail: String| ArchiveError::Corrupt {
        detail: format!("header of {shown:?}: {detail}"),
    };
    let mut d = Decoded {
        path: match &pending.long_name {
            Some(name) => trim_nul(name.clone()),
            None => header.path_bytes().into_owned(),
        },
        link: match &pending.long_link {
            Some(link) => trim_nul(link.clone()),
            None => header.link_name_bytes().unwrap_or_default().into_owned(),
        },
        entry_type: header.entry_type(),
        mode: header.mode().map_err(|e| corrupt(e.to_string()))?,
        mtime: header
            .mtime()
            .map_err(|e| corrupt(e.to_string()))?
            .min(i64::MAX as u64) as i64,
        size,
    };
    let Some(pax) = &pending.pax else {
        return Ok(d);
    };
    for record in PaxExtensions::new(pax) {
        let record = record.map_err(|_| corrupt("malformed pax header".into()))?;
        let value = record.value_bytes();
        let number = || std::str::from_utf8(value).ok().map(str::trim);
        match record.key_bytes() {
            b"path" => d.path = value.to_vec(),
            b"linkpath" => d.link = value.to_vec(),
            b"size" => {
                let pax: u64 = number()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| corrupt("pax size is not a number".into()))?;
                // The data's extent came from the header; a pax size that
                // disagrees would make parsers see different archives.
                if pax != size {
                    return Err(ArchiveError::Refused {
                        path: String::from_utf8_lossy(&d.path).into_owned(),
                        rule: Rule::PaxSizeMismatch { pax, header: size },
                    });
                }
            }
            b"mtime" => {
                // Seconds, maybe with a fraction; only whole seconds kept.
                let whole = number().map(|v| v.split('.').next().unwrap_or(v));
                if let Some(secs) = whole.and_then(|v| v.parse::<i64>().ok()) {
                    d.mtime = secs;
                }
            }
            key if key.starts_with(b"GNU.sparse.") => {
                return Err(ArchiveError::Refused {
                    path: String::from_utf8_lossy(&d.path).into_owned(),
                    rule: Rule::Sparse,
                })
            }
            _ => {} // atime, uid, uname, xattrs...: ownership and xattrs are never applied
        }
    }
    Ok(d)
}
