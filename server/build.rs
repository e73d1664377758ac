//! Fetches the web page's third-party assets (xterm.js and its fit add-on)
//! with `npm ci`, pinned by `web/package-lock.json`, and copies the few files
//! the binary embeds into `$OUT_DIR/web/`. No CDN, no manual step: a plain
//! `cargo build` does it.
//!
//! Then every script and style sheet (those and the page's own) gets a
//! content-hashed name (`app.<hash>.js`, served with `Cache-Control:
//! immutable`) and a gzip and a brotli copy, and `$OUT_DIR/assets.rs`
//! lists them, with the page rewritten to reference the hashed names
//! (server/src/web/assets.rs includes it).
//!
//! npm runs inside `$OUT_DIR`, never in the source tree, so two cargo
//! invocations (say `build` and `clippy`) never share a half-written
//! `node_modules`. It runs again only when the manifest or the lockfile
//! changes (a copy of the lockfile inside `node_modules` is the stamp).

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (file inside node_modules, name in `$OUT_DIR/web/`)
const ASSETS: &[(&str, &str)] = &[
    ("@xterm/xterm/lib/xterm.js", "xterm.js"),
    ("@xterm/xterm/css/xterm.css", "xterm.css"),
    ("@xterm/addon-fit/lib/addon-fit.js", "addon-fit.js"),
    ("@xterm/xterm/LICENSE", "xterm.LICENSE"),
    ("@xterm/addon-fit/LICENSE", "addon-fit.LICENSE"),
];

const STAMP: &str = ".warren-package-lock.json";

fn main() {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env("OUT_DIR"));
    let web = manifest_dir.join("web");
    println!("cargo:rerun-if-changed=web/package.json");
    println!("cargo:rerun-if-changed=web/index.html");
    println!("cargo:rerun-if-changed=web/app.js");
    println!("cargo:rerun-if-changed=web/app.css");
    println!("cargo:rerun-if-changed=web/package-lock.json");
    println!("cargo:rerun-if-env-changed=WARREN_NPM");

    let npm_dir = out_dir.join("npm");
    fs::create_dir_all(&npm_dir).unwrap_or_else(|e| fail(&format!("create {npm_dir:?}: {e}")));
    let lock = read(&web.join("package-lock.json"));
    let stamp = npm_dir.join("node_modules").join(STAMP);
    if fs::read(&stamp).ok().as_deref() != Some(&lock[..]) {
        write(
            &npm_dir.join("package.json"),
            &read(&web.join("package.json")),
        );
        write(&npm_dir.join("package-lock.json"), &lock);
        npm_ci(&npm_dir);
        write(&stamp, &lock);
    }

    let dest = out_dir.join("web");
    fs::create_dir_all(&dest).unwrap_or_else(|e| fail(&format!("create {dest:?}: {e}")));
    for (from, to) in ASSETS {
        let src = npm_dir.join("node_modules").join(from);
        write(&dest.join(to), &read(&src));
    }
    hashed_assets(&web, &dest, &out_dir);
}

/// (name the page uses, where it is, content type) of what gets a hashed,
/// pre-compressed copy.
const HASHED: &[(&str, Source, &str)] = &[
    ("xterm.js", Source::Npm, "JS"),
    ("xterm.css", Source::Npm, "CSS"),
    ("addon-fit.js", Source::Npm, "JS"),
    ("app.js", Source::Page, "JS"),
    ("app.css", Source::Page, "CSS"),
];

#[derive(Clone, Copy)]
enum Source {
    /// `$OUT_DIR/web/` (from npm).
    Npm,
    /// `server/web/`.
    Page,
}

/// Writes `$OUT_DIR/web/<stem>.<hash>.<ext>` with `.gz` and `.br` copies
/// and `$OUT_DIR/assets.rs` (`HASHED` and `INDEX_HTML`).
fn hashed_assets(web: &Path, dest: &Path, out_dir: &Path) {
    use sha2::{Digest, Sha256};
    use std::fmt::Write as _;
    use std::io::Write as _;
    let mut index = String::from_utf8(read(&web.join("index.html")))
        .unwrap_or_else(|e| fail(&format!("web/index.html: {e}")));
    let mut list = String::new();
    for (name, source, content_type) in HASHED {
        let body = read(&match source {
            Source::Npm => dest.join(name),
            Source::Page => web.join(name),
        });
        let hash: String = Sha256::digest(&body)
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect();
        let (stem, ext) = name.rsplit_once('.').expect("a name with an extension");
        let hashed = format!("{stem}.{hash}.{ext}");
        write(&dest.join(&hashed), &body);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&body)
            .unwrap_or_else(|e| fail(&format!("gzip {name}: {e}")));
        let gz = gz
            .finish()
            .unwrap_or_else(|e| fail(&format!("gzip {name}: {e}")));
        write(&dest.join(format!("{hashed}.gz")), &gz);
        let mut br = Vec::new();
        let params = brotli::enc::BrotliEncoderParams {
            quality: 11,
            lgwin: 22,
            ..Default::default()
        };
        brotli::BrotliCompress(&mut &body[..], &mut br, &params)
            .unwrap_or_else(|e| fail(&format!("brotli {name}: {e}")));
        write(&dest.join(format!("{hashed}.br")), &br);
        let reference = format!("\"/assets/{name}\"");
        if !index.contains(&reference) {
            fail(&format!("web/index.html does not reference {reference}"));
        }
        index = index.replace(&reference, &format!("\"/assets/{hashed}\""));
        let _ = writeln!(
            list,
            "    HashedAsset {{ name: {hashed:?}, plain: {name:?}, content_type: {content_type}, \
             body: include_bytes!(concat!(env!(\"OUT_DIR\"), \"/web/{hashed}\")), \
             gzip: include_bytes!(concat!(env!(\"OUT_DIR\"), \"/web/{hashed}.gz\")), \
             brotli: include_bytes!(concat!(env!(\"OUT_DIR\"), \"/web/{hashed}.br\")) }},"
        );
    }
    let code = format!(
        "// Generated by server/build.rs: the page's hashed, pre-compressed assets.\n\
         pub const HASHED: &[HashedAsset] = &[\n{list}];\n\
         pub const INDEX_HTML: &str = {index:?};\n"
    );
    write(&out_dir.join("assets.rs"), code.as_bytes());
}

fn npm_ci(dir: &Path) {
    let npm = std::env::var("WARREN_NPM").unwrap_or_else(|_| "npm".to_string());
    let status = Command::new(&npm)
        .args([
            "ci",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ])
        .current_dir(dir)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => fail(&format!(
            "`{npm} ci` in {dir:?} failed ({s}). The web page's xterm.js is fetched from the npm \
             registry as pinned by server/web/package-lock.json; check that the registry is \
             reachable (or an npm cache holds the packages) and build again."
        )),
        Err(e) if e.kind() == ErrorKind::NotFound => fail(&format!(
            "`{npm}` was not found. Building warren needs npm (Node.js 20 or newer) to fetch \
             xterm.js for the web page, pinned by server/web/package-lock.json. Install it \
             (Debian/Ubuntu: `apt-get install npm`) or point WARREN_NPM at an npm binary, then \
             build again."
        )),
        Err(e) => fail(&format!("could not run `{npm} ci` in {dir:?}: {e}")),
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| fail(&format!("cargo did not set {name}")))
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| fail(&format!("read {path:?}: {e}")))
}

fn write(path: &Path, data: &[u8]) {
    fs::write(path, data).unwrap_or_else(|e| fail(&format!("write {path:?}: {e}")))
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    panic!("{message}");
}
