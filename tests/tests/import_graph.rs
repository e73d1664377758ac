//! No import circle among the source files of any crate in the workspace
//! (docs/architecture.md: layers import only downward; a circle means
//! nothing in it can be lifted out or tested alone).
//!
//! Each crate's `src/` is read as text: the module tree from `mod x;`
//! declarations (from `lib.rs`, `main.rs` and `bin/*.rs`), then one edge
//! from a file to the file of every module its `crate::…`, `super::…`,
//! `self::…` and child-relative `use` paths name. A path naming an item a
//! module re-exports (`pub use child::Item`) leads to the file defining it.
//! A module using its own descendants is not an edge: a parent contains its
//! children (a `mod.rs` facade re-exporting them); the child using its
//! parent is. `#[cfg(test)]` modules are not read: tests may use any part of
//! their crate, and no production code imports them.
//!
//! Needs no privileges and no build of the crates it reads.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// A module: the file that holds it (inline modules share their file's).
#[derive(Debug, Clone)]
struct Module {
    file: PathBuf,
    /// `true` for the module a file defines (not an inline `mod x { }`).
    owns_file: bool,
    parent: Option<usize>,
    children: BTreeMap<String, usize>,
    /// `pub use` names: item name → the path it re-exports, as segments.
    reexports: BTreeMap<String, Vec<String>>,
}

/// One crate root's module tree and the paths each module names.
#[derive(Default)]
struct Tree {
    modules: Vec<Module>,
    /// (module, path as written) for every path found in the source.
    paths: Vec<(usize, Vec<String>)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Colons,
    Open,
    Close,
    Comma,
    Semi,
    Star,
    Other,
}

/// Tokens of Rust source with comments, strings and chars removed: enough
/// to see `mod`, `use` and `a::b` paths.
fn tokens(src: &str) -> Vec<Tok> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == b'r' && matches!(b.get(i + 1), Some(b'"') | Some(b'#')) {
            // Raw string r"…" or r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(Tok::Ident("r".into()));
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == b'"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&b'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push(Tok::Other);
            i = j;
        } else if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push(Tok::Other);
        } else if c == b'\'' {
            // A char literal ('x', '\n', '\u{1F600}') or a lifetime ('a).
            if b.get(i + 1) == Some(&b'\\') {
                i += 2;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
                i += 1;
            } else if b.get(i + 2) == Some(&b'\'') {
                i += 3;
            } else {
                i += 1;
            }
            out.push(Tok::Other);
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(Tok::Ident(src[start..i].to_string()));
        } else if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b':' && b.get(i + 1) == Some(&b':') {
            out.push(Tok::Colons);
            i += 2;
        } else {
            out.push(match c {
                b'{' => Tok::Open,
                b'}' => Tok::Close,
                b',' => Tok::Comma,
                b';' => Tok::Semi,
                b'*' => Tok::Star,
                _ => Tok::Other,
            });
            i += 1;
        }
    }
    out
}

/// Expands a `use` tree starting at `toks[*i]` into (path, alias) pairs,
/// each path prefixed by `prefix`. Leaves `*i` after the tree.
fn use_tree(
    toks: &[Tok],
    i: &mut usize,
    prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, String)>,
) {
    let mut path = prefix;
    loop {
        match toks.get(*i) {
            Some(Tok::Ident(s)) if s == "as" => {
                *i += 1;
                if let Some(Tok::Ident(alias)) = toks.get(*i) {
                    out.push((path.clone(), alias.clone()));
                    *i += 1;
                }
                return;
            }
            Some(Tok::Ident(s)) => {
                path.push(s.clone());
                *i += 1;
                if toks.get(*i) == Some(&Tok::Colons) {
                    *i += 1;
                    continue;
                }
                let name = path.last().cloned().unwrap_or_default();
                if toks.get(*i) == Some(&Tok::Ident("as".into())) {
                    continue;
                }
                out.push((path, name));
                return;
            }
            Some(Tok::Open) => {
                *i += 1;
                while !matches!(toks.get(*i), None | Some(Tok::Close)) {
                    use_tree(toks, i, path.clone(), out);
                    if toks.get(*i) == Some(&Tok::Comma) {
                        *i += 1;
                    }
                }
                *i += 1;
                return;
            }
            Some(Tok::Star) => {
                *i += 1;
                out.push((path, "*".into()));
                return;
            }
            _ => {
                out.push((path, String::new()));
                return;
            }
        }
    }
}

/// Whether the item ending `before` (a `mod`, maybe after `pub`) is under
/// `#[cfg(test)]`: tokens `cfg ( test ) ]` right before it.
fn test_only(before: &[Tok]) -> bool {
    let before = match before.last() {
        Some(Tok::Ident(p)) if p == "pub" => &before[..before.len() - 1],
        _ => before,
    };
    let n = before.len();
    n >= 5
        && before[n - 5] == Tok::Ident("cfg".into())
        && before[n - 3] == Tok::Ident("test".into())
}

/// The index after a `mod x;` or `mod x { … }` whose `;` or `{` is at `i`.
fn skip_item(toks: &[Tok], mut i: usize) -> usize {
    if toks.get(i) != Some(&Tok::Open) {
        return i + 1;
    }
    let mut depth = 0;
    while i < toks.len() {
        match toks[i] {
            Tok::Open => depth += 1,
            Tok::Close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

fn ident(t: Option<&Tok>) -> Option<&str> {
    match t {
        Some(Tok::Ident(s)) => Some(s),
        _ => None,
    }
}

impl Tree {
    /// Reads the module in `file` (and the files of its `mod x;`
    /// children) into the tree; `dir` is where its children's files are.
    fn read(&mut self, file: &Path, dir: &Path, parent: Option<usize>, name: &str) -> usize {
        let id = self.modules.len();
        self.modules.push(Module {
            file: file.to_path_buf(),
            owns_file: true,
            parent,
            children: BTreeMap::new(),
            reexports: BTreeMap::new(),
        });
        if let Some(p) = parent {
            self.modules[p].children.insert(name.to_string(), id);
        }
        let src = fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let toks = tokens(&src);
        // Inline modules: (module, brace depth at which it closes).
        let mut stack: Vec<(usize, usize)> = vec![(id, 0)];
        let mut depth: usize = 0;
        let mut i = 0;
        let mut pending_pub = false;
        while i < toks.len() {
            let cur = stack.last().unwrap().0;
            match &toks[i] {
                Tok::Open => {
                    depth += 1;
                    i += 1;
                }
                Tok::Close => {
                    depth = depth.saturating_sub(1);
                    if stack.len() > 1 && stack.last().unwrap().1 == depth {
                        stack.pop();
                    }
                    i += 1;
                }
                Tok::Ident(k) if k == "pub" => {
                    pending_pub = true;
                    i += 1;
                    // `pub(crate)`, `pub(super)`, `pub(in path)`: skip to `)`.
                    if toks.get(i) == Some(&Tok::Other)
                        && matches!(
                            ident(toks.get(i + 1)),
                            Some("crate" | "super" | "self" | "in")
                        )
                    {
                        i += 2;
                        while matches!(toks.get(i), Some(Tok::Ident(_) | Tok::Colons)) {
                            i += 1;
                        }
                        i += 1;
                    }
                    continue;
                }
                Tok::Ident(k) if k == "mod" => {
                    let Some(child) = ident(toks.get(i + 1)).map(str::to_string) else {
                        i += 1;
                        continue;
                    };
                    if test_only(&toks[..i]) {
                        i = skip_item(&toks, i + 2);
                        continue;
                    }
                    match toks.get(i + 2) {
                        Some(Tok::Semi) => {
                            let cdir = self.child_dir(cur, dir);
                            let flat = cdir.join(format!("{child}.rs"));
                            let nested = cdir.join(&child).join("mod.rs");
                            if flat.is_file() {
                                self.read(&flat, &cdir.join(&child), Some(cur), &child);
                            } else if nested.is_file() {
                                self.read(&nested, &cdir.join(&child), Some(cur), &child);
                            }
                            i += 3;
                        }
                        Some(Tok::Open) => {
                            let m = self.modules.len();
                            self.modules.push(Module {
                                file: file.to_path_buf(),
                                owns_file: false,
                                parent: Some(cur),
                                children: BTreeMap::new(),
                                reexports: BTreeMap::new(),
                            });
                            self.modules[cur].children.insert(child, m);
                            stack.push((m, depth));
                            depth += 1;
                            i += 3;
                        }
                        _ => i += 2,
                    }
                }
                Tok::Ident(k) if k == "use" => {
                    i += 1;
                    let mut found = Vec::new();
                    use_tree(&toks, &mut i, Vec::new(), &mut found);
                    for (path, name) in found {
                        if pending_pub && !name.is_empty() && name != "*" {
                            self.modules[cur].reexports.insert(name, path.clone());
                        }
                        self.paths.push((cur, path));
                    }
                }
                Tok::Ident(k) if k == "crate" || k == "super" || k == "self" => {
                    // A path in code: `crate::a::b(…)`, `super::X`.
                    let mut path = vec![k.clone()];
                    i += 1;
                    while toks.get(i) == Some(&Tok::Colons) {
                        match ident(toks.get(i + 1)) {
                            Some(s) => {
                                path.push(s.to_string());
                                i += 2;
                            }
                            None => break,
                        }
                    }
                    if path.len() > 1 {
                        self.paths.push((cur, path));
                    }
                }
                _ => i += 1,
            }
            pending_pub = false;
        }
        id
    }

    /// Where a module's `mod x;` children live: the directory of a
    /// `mod.rs`/`lib.rs`/`main.rs`, else `dir` (`a.rs` → `a/`).
    fn child_dir(&self, m: usize, dir: &Path) -> PathBuf {
        let mut names = Vec::new();
        let mut cur = m;
        while !self.modules[cur].owns_file {
            names.push(self.child_name(cur));
            cur = self.modules[cur].parent.unwrap();
        }
        names.iter().rev().fold(dir.to_path_buf(), |d, n| d.join(n))
    }

    fn child_name(&self, m: usize) -> String {
        let p = self.modules[m].parent.unwrap();
        self.modules[p]
            .children
            .iter()
            .find(|(_, &c)| c == m)
            .map(|(n, _)| n.clone())
            .unwrap()
    }

    fn is_ancestor(&self, a: usize, mut m: usize) -> bool {
        while let Some(p) = self.modules[m].parent {
            if p == a {
                return true;
            }
            m = p;
        }
        false
    }

    /// The module a path leads to, following re-exports (at most `hops`).
    fn resolve(&self, from: usize, path: &[String], hops: usize) -> Option<usize> {
        let mut segs = path.iter().peekable();
        let mut m = match segs.peek().map(|s| s.as_str()) {
            Some("crate") => {
                segs.next();
                0
            }
            Some("self") => {
                segs.next();
                from
            }
            Some("super") => {
                let mut m = from;
                while segs.peek().map(|s| s.as_str()) == Some("super") {
                    segs.next();
                    m = self.modules[m].parent?;
                }
                m
            }
            // Edition 2018: `use child::x` names a child of this module;
            // anything else is another crate.
            Some(s) if self.modules[from].children.contains_key(s) => from,
            _ => return None,
        };
        while let Some(s) = segs.next() {
            if let Some(&c) = self.modules[m].children.get(s) {
                m = c;
                continue;
            }
            if hops > 0 {
                if let Some(target) = self.modules[m].reexports.get(s) {
                    let mut rest = target.clone();
                    rest.extend(segs.cloned());
                    return self.resolve(m, &rest, hops - 1).or(Some(m));
                }
            }
            break;
        }
        Some(m)
    }

    /// File-level edges, as indices of the modules owning the files.
    fn edges(&self) -> BTreeSet<(PathBuf, PathBuf)> {
        let mut out = BTreeSet::new();
        for (from, path) in &self.paths {
            let Some(to) = self.resolve(*from, path, 4) else {
                continue;
            };
            let (a, b) = (self.file_owner(*from), self.file_owner(to));
            if a == b || self.is_ancestor(a, b) {
                continue;
            }
            out.insert((self.modules[a].file.clone(), self.modules[b].file.clone()));
        }
        out
    }

    fn file_owner(&self, mut m: usize) -> usize {
        while !self.modules[m].owns_file {
            m = self.modules[m].parent.unwrap();
        }
        m
    }
}

/// The crate roots under `crate_dir/src`.
fn roots(crate_dir: &Path) -> Vec<PathBuf> {
    let src = crate_dir.join("src");
    let mut out: Vec<PathBuf> = ["lib.rs", "main.rs"]
        .iter()
        .map(|f| src.join(f))
        .filter(|p| p.is_file())
        .collect();
    if let Ok(dir) = fs::read_dir(src.join("bin")) {
        let mut bins: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "rs"))
            .collect();
        bins.sort();
        out.extend(bins);
    }
    out
}

/// Every cycle among the files of one crate: the strongly connected
/// components of more than one file (Tarjan), each as a sorted file list.
fn cycles(edges: &BTreeSet<(PathBuf, PathBuf)>) -> Vec<Vec<PathBuf>> {
    let nodes: BTreeSet<&PathBuf> = edges.iter().flat_map(|(a, b)| [a, b]).collect();
    let nodes: Vec<&PathBuf> = nodes.into_iter().collect();
    let idx = |p: &PathBuf| nodes.iter().position(|n| *n == p).unwrap();
    let mut adj = vec![Vec::new(); nodes.len()];
    for (a, b) in edges {
        adj[idx(a)].push(idx(b));
    }
    struct St {
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        sccs: Vec<Vec<usize>>,
    }
    fn visit(v: usize, adj: &[Vec<usize>], s: &mut St) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on[v] = true;
        for &w in &adj[v] {
            match s.index[w] {
                None => {
                    visit(w, adj, s);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on[w] => s.low[v] = s.low[v].min(iw),
                _ => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut scc = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on[w] = false;
                scc.push(w);
                if w == v {
                    break;
                }
            }
            s.sccs.push(scc);
        }
    }
    let n = nodes.len();
    let mut s = St {
        index: vec![None; n],
        low: vec![0; n],
        on: vec![false; n],
        stack: Vec::new(),
        next: 0,
        sccs: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(v, &adj, &mut s);
        }
    }
    let mut out: Vec<Vec<PathBuf>> = s
        .sccs
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| {
            let mut files: Vec<PathBuf> = c.into_iter().map(|v| nodes[v].clone()).collect();
            files.sort();
            files
        })
        .collect();
    out.sort();
    out
}

/// A circle: its files, and the imports among them (which to cut).
#[derive(Debug, PartialEq)]
struct Circle {
    files: Vec<String>,
    imports: Vec<(String, String)>,
}

/// The circles of every crate root under `crate_dir`, files relative to
/// `base`.
fn crate_cycles(crate_dir: &Path, base: &Path) -> Vec<Circle> {
    let shown = |f: &PathBuf| f.strip_prefix(base).unwrap_or(f).display().to_string();
    let mut out: Vec<Circle> = Vec::new();
    for root in roots(crate_dir) {
        let mut tree = Tree::default();
        let dir = crate_dir.join("src");
        tree.read(&root, &dir, None, "");
        let edges = tree.edges();
        for cycle in cycles(&edges) {
            let circle = Circle {
                files: cycle.iter().map(shown).collect(),
                imports: edges
                    .iter()
                    .filter(|(a, b)| cycle.contains(a) && cycle.contains(b))
                    .map(|(a, b)| (shown(a), shown(b)))
                    .collect(),
            };
            if !out.contains(&circle) {
                out.push(circle);
            }
        }
    }
    out
}

/// The workspace's crates: every directory beside this one with a
/// Cargo.toml and a `src/`.
fn workspace_crates() -> (PathBuf, Vec<PathBuf>) {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let mut crates: Vec<PathBuf> = fs::read_dir(&ws)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Cargo.toml").is_file() && p.join("src").is_dir())
        .collect();
    crates.sort();
    (ws, crates)
}

#[test]
fn no_import_circle_in_any_crate() {
    let (ws, crates) = workspace_crates();
    for name in ["runtime", "shim", "server", "tests"] {
        assert!(
            crates.contains(&ws.join(name)),
            "crate {name} not found in {}",
            ws.display()
        );
    }
    let mut report = String::new();
    for c in &crates {
        for circle in crate_cycles(c, &ws) {
            let files = circle.files.join(" ");
            report.push_str(&format!("  {} files: {files}\n", circle.files.len()));
            for (a, b) in &circle.imports {
                report.push_str(&format!("    {a} -> {b}\n"));
            }
        }
    }
    assert!(
        report.is_empty(),
        "import circles (each a set of files that import each other):\n{report}"
    );
}

/// A scratch crate with the given files under `src/`.
fn scratch(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let p = dir.path().join("src").join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
    dir
}

#[test]
fn a_circle_between_siblings_is_found_whichever_way_it_is_written() {
    let dir = scratch(&[
        ("main.rs", "mod a;\nmod b;\nmod c;\nfn main() {}\n"),
        ("a.rs", "use crate::{b::{self, B}, c};\n"),
        ("b.rs", "pub struct B;\nfn f() { super::c::g() }\n"),
        // The circle closes through a path in code, not a `use`.
        ("c.rs", "pub fn g() { let _ = crate::a::A; }\n"),
    ]);
    let found = crate_cycles(dir.path(), dir.path());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].files, ["src/a.rs", "src/b.rs", "src/c.rs"]);
    let imports: Vec<(&str, &str)> = found[0]
        .imports
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        imports,
        [
            ("src/a.rs", "src/b.rs"),
            ("src/a.rs", "src/c.rs"),
            ("src/b.rs", "src/c.rs"),
            ("src/c.rs", "src/a.rs")
        ]
    );
}

#[test]
fn a_circle_through_a_reexport_is_found() {
    let dir = scratch(&[
        ("lib.rs", "pub mod cli;\npub mod web;\n"),
        ("cli.rs", "use crate::web::Args;\npub struct Opts;\n"),
        ("web/mod.rs", "mod args;\npub(crate) use args::Args;\n"),
        ("web/args.rs", "use crate::cli::Opts;\npub struct Args;\n"),
    ]);
    let found = crate_cycles(dir.path(), dir.path());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].files, ["src/cli.rs", "src/web/args.rs"]);
}

#[test]
fn a_parent_using_its_children_and_tests_using_super_are_no_circle() {
    let dir = scratch(&[
        (
            "lib.rs",
            "pub mod archive;\npub mod other;\n/* crate::x::y */ const S: &str = \"crate::archive::Limits\";\n",
        ),
        (
            "archive/mod.rs",
            "mod export;\n#[cfg(test)]\nmod tests;\npub use export::export;\npub struct Limits;\n\
             mod inline { use super::Limits; }\n",
        ),
        ("archive/export.rs", "use super::Limits;\npub fn export(_: &Limits) {}\n"),
        ("archive/tests.rs", "use super::*;\nuse crate::other::X;\n"),
        ("other.rs", "use crate::archive::Limits;\n#[cfg(test)]\nmod t { use crate::archive::tests::Y; }\n"),
    ]);
    assert!(crate_cycles(dir.path(), dir.path()).is_empty());
}

#[test]
fn paths_in_comments_and_strings_are_not_imports() {
    let toks = tokens("// crate::a\n/* crate::b /* nested */ */ let s = \"crate::c\"; r#\"crate::d\"#; 'x'; fn f<'a>() {}");
    assert!(!toks.contains(&Tok::Ident("crate".into())), "{toks:?}");
    assert!(toks.contains(&Tok::Ident("f".into())));
}
