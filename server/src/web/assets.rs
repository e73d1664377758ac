//! The web page and its assets, embedded in the binary (no CDN). xterm.js
//! and its fit add-on come from npm, pinned by server/web/package-lock.json
//! and fetched by server/build.rs into `$OUT_DIR/web/`; the page itself is
//! server/web/.
//!
//! The scripts and style sheets are served under content-hashed names
//! (`app.<hash>.js`, which the page references) with `Cache-Control:
//! immutable`, and pre-compressed at build time: brotli or gzip, as the
//! client accepts (docs/serve.md, "The page's size"). Their plain names
//! still answer, revalidated on every load, for links that name them.

/// One script or style sheet under its hashed name, with its compressed
/// copies.
pub struct HashedAsset {
    pub name: &'static str,
    /// The name it has in server/web/ and npm.
    pub plain: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
    pub gzip: &'static [u8],
    pub brotli: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

// `HASHED` and `INDEX_HTML` (the page, referencing the hashed names).
include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// How long a hashed asset may be cached: its name changes with its bytes.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Files served as they are (no hash, no compression).
struct Plain {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const PLAIN: &[Plain] = &[
    Plain {
        name: "xterm.LICENSE.txt",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!(concat!(env!("OUT_DIR"), "/web/xterm.LICENSE")),
    },
    Plain {
        name: "addon-fit.LICENSE.txt",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!(concat!(env!("OUT_DIR"), "/web/addon-fit.LICENSE")),
    },
];

/// An encoding of a response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Brotli,
    Gzip,
    Identity,
}

impl Encoding {
    /// The `Content-Encoding` value, if any.
    pub fn header(self) -> Option<&'static str> {
        match self {
            Encoding::Brotli => Some("br"),
            Encoding::Gzip => Some("gzip"),
            Encoding::Identity => None,
        }
    }
}

/// What to send for `/assets/{name}`.
pub struct Served {
    pub content_type: &'static str,
    pub cache_control: &'static str,
    pub encoding: Encoding,
    pub body: &'static [u8],
    /// Whether the answer depends on `Accept-Encoding`.
    pub varies: bool,
}

/// The asset called `name`, in the best encoding `accept_encoding` allows.
pub fn find(name: &str, accept_encoding: &str) -> Option<Served> {
    if let Some(p) = PLAIN.iter().find(|p| p.name == name) {
        return Some(Served {
            content_type: p.content_type,
            cache_control: "no-cache",
            encoding: Encoding::Identity,
            body: p.body,
            varies: false,
        });
    }
    let (asset, cache_control) = match HASHED.iter().find(|a| a.name == name) {
        Some(a) => (a, IMMUTABLE),
        None => (HASHED.iter().find(|a| a.plain == name)?, "no-cache"),
    };
    let encoding = choose(accept_encoding);
    Some(Served {
        content_type: asset.content_type,
        cache_control,
        encoding,
        body: match encoding {
            Encoding::Brotli => asset.brotli,
            Encoding::Gzip => asset.gzip,
            Encoding::Identity => asset.body,
        },
        varies: true,
    })
}

/// brotli, else gzip, else none, by the client's `Accept-Encoding`
/// (a coding with `q=0` is refused; `*` stands for any other).
pub fn choose(accept_encoding: &str) -> Encoding {
    let mut br = None;
    let mut gzip = None;
    let mut star = None;
    for part in accept_encoding.split(',') {
        let mut fields = part.split(';');
        let coding = fields.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = fields
            .filter_map(|f| f.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let accepted = q > 0.0;
        match coding.as_str() {
            "br" => br = Some(accepted),
            "gzip" | "x-gzip" => gzip = Some(accepted),
            "*" => star = Some(accepted),
            _ => {}
        }
    }
    if br.or(star).unwrap_or(false) {
        Encoding::Brotli
    } else if gzip.or(star).unwrap_or(false) {
        Encoding::Gzip
    } else {
        Encoding::Identity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_follow_accept_encoding() {
        assert_eq!(choose(""), Encoding::Identity);
        assert_eq!(choose("gzip, deflate, br, zstd"), Encoding::Brotli);
        assert_eq!(choose("gzip"), Encoding::Gzip);
        assert_eq!(choose("br;q=0, gzip;q=0.5"), Encoding::Gzip);
        assert_eq!(choose("*"), Encoding::Brotli);
        assert_eq!(choose("*, br;q=0"), Encoding::Gzip);
        assert_eq!(choose("identity"), Encoding::Identity);
        assert_eq!(choose("GZIP"), Encoding::Gzip);
    }

    #[test]
    fn the_page_names_every_hashed_asset_and_they_decompress() {
        use std::io::Read;
        for a in HASHED {
            assert!(
                INDEX_HTML.contains(&format!("\"/assets/{}\"", a.name)),
                "{}",
                a.name
            );
            assert!(
                !INDEX_HTML.contains(&format!("\"/assets/{}\"", a.plain)),
                "{}",
                a.plain
            );
            let mut gz = Vec::new();
            flate2::read::GzDecoder::new(a.gzip)
                .read_to_end(&mut gz)
                .unwrap();
            assert_eq!(gz, a.body, "{} gzip", a.name);
            let mut br = Vec::new();
            brotli::Decompressor::new(a.brotli, 4096)
                .read_to_end(&mut br)
                .unwrap();
            assert_eq!(br, a.body, "{} brotli", a.name);
        }
    }
}
