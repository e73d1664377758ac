//! The web page and its assets, embedded in the binary (no CDN). xterm.js
//! and its fit add-on come from npm, pinned by server/web/package-lock.json
//! and fetched by server/build.rs into `$OUT_DIR/web/`; the page itself is
//! server/web/.

/// One embedded file.
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

pub const INDEX_HTML: &[u8] = include_bytes!("../../web/index.html");

/// Served under `/assets/{name}`.
pub const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: JS,
        body: include_bytes!("../../web/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: CSS,
        body: include_bytes!("../../web/app.css"),
    },
    Asset {
        name: "xterm.js",
        content_type: JS,
        body: include_bytes!(concat!(env!("OUT_DIR"), "/web/xterm.js")),
    },
    Asset {
        name: "xterm.css",
        content_type: CSS,
        body: include_bytes!(concat!(env!("OUT_DIR"), "/web/xterm.css")),
    },
    Asset {
        name: "addon-fit.js",
        content_type: JS,
        body: include_bytes!(concat!(env!("OUT_DIR"), "/web/addon-fit.js")),
    },
    Asset {
        name: "xterm.LICENSE.txt",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!(concat!(env!("OUT_DIR"), "/web/xterm.LICENSE")),
    },
    Asset {
        name: "addon-fit.LICENSE.txt",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!(concat!(env!("OUT_DIR"), "/web/addon-fit.LICENSE")),
    },
];

pub fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}
