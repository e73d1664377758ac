//! docs/openapi.json against the server. The document must be well-formed
//! OpenAPI 3.1 (every `$ref` resolves, every schema is valid JSON Schema
//! 2020-12), describe exactly the router's routes (read from
//! src/web/api.rs and probed: a documented route answers, an
//! undocumented method gets 405), and every documented operation is called
//! on a live server (echo backend, no root needed) with each status code it
//! documents: the status must be documented and the body must match the
//! schema documented for it. A status that cannot be produced here is
//! excused by name, with the reason printed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use common::{dirs, management, Dirs, Options, TestServer, ADMIN_TOKEN, IMPORT_LIMITS};
use serde_json::{json, Value};
use warren_runtime::archive::testing::{good_archive, hostile_set};

/// The committed document (the server serves the one it generates, which
/// a unit test in src/serve/api_doc.rs keeps equal to this file).
const DOCUMENT: &str = include_str!("../../docs/openapi.json");

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

// --- The document ---

/// One operation of the document.
#[derive(Clone)]
struct Op {
    /// Upper case, as sent.
    method: String,
    /// The path template, e.g. `/api/users/{user}`.
    path: String,
    op: Value,
    /// Path-level parameters.
    path_params: Vec<Value>,
}

impl Op {
    fn label(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

struct Spec {
    doc: Value,
}

impl Spec {
    fn load() -> Spec {
        let doc: Value = serde_json::from_str(DOCUMENT)
            .unwrap_or_else(|e| panic!("docs/openapi.json is not JSON: {e}"));
        Spec { doc }
    }

    /// The value a local `$ref` (`#/a/b`) points at.
    fn pointer(&self, reference: &str) -> Option<&Value> {
        self.doc.pointer(reference.strip_prefix('#')?)
    }

    /// Follows `$ref`s until a value without one.
    fn deref<'a>(&'a self, mut v: &'a Value) -> &'a Value {
        for _ in 0..16 {
            match v.get("$ref").and_then(Value::as_str) {
                Some(r) => {
                    v = self
                        .pointer(r)
                        .unwrap_or_else(|| panic!("$ref {r} does not resolve"))
                }
                None => return v,
            }
        }
        panic!("$ref chain too long at {v}");
    }

    fn ops(&self) -> Vec<Op> {
        let mut out = Vec::new();
        let paths = self.doc["paths"].as_object().expect("paths is an object");
        for (path, item) in paths {
            let item = self.deref(item);
            let path_params = item
                .get("parameters")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for m in METHODS.iter().chain(&["head", "options", "trace"]) {
                if let Some(op) = item.get(*m) {
                    out.push(Op {
                        method: m.to_uppercase(),
                        path: path.clone(),
                        op: op.clone(),
                        path_params: path_params.clone(),
                    });
                }
            }
        }
        out
    }

    fn op(&self, method: &str, path: &str) -> Op {
        self.ops()
            .into_iter()
            .find(|o| o.method == method && o.path == path)
            .unwrap_or_else(|| panic!("{method} {path} is not in docs/openapi.json"))
    }

    /// Whether the operation needs the admin's bearer token.
    fn secured(&self, op: &Op) -> bool {
        self.needs(op, "bearerAuth")
    }

    /// Whether the operation needs a user's own login (`/api/me/...`).
    fn user_secured(&self, op: &Op) -> bool {
        self.needs(op, "userSession")
    }

    fn needs(&self, op: &Op, scheme: &str) -> bool {
        let security = op.op.get("security").unwrap_or(&self.doc["security"]);
        security.as_array().is_some_and(|s| {
            s.iter()
                .any(|req| req.as_object().is_some_and(|o| o.contains_key(scheme)))
        })
    }

    /// The documented status codes of an operation.
    fn statuses(&self, op: &Op) -> BTreeSet<u16> {
        op.op["responses"]
            .as_object()
            .map(|r| r.keys().filter_map(|k| k.parse().ok()).collect())
            .unwrap_or_default()
    }

    /// A validator for `schema`, with `#/components/schemas/...` resolving
    /// into this document.
    fn validator(&self, schema: &Value) -> jsonschema::Validator {
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": {"schemas": self.doc["components"]["schemas"]},
            "allOf": [schema],
        });
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&root)
            .unwrap_or_else(|e| panic!("schema {schema} does not compile: {e}"))
    }

    /// The validation errors of `instance` against `schema`, one a line.
    fn errors(&self, schema: &Value, instance: &Value) -> Vec<String> {
        let v = self.validator(schema);
        v.iter_errors(instance)
            .map(|e| {
                let at = e.instance_path().to_string();
                format!("{}: {e}", if at.is_empty() { "(the body)" } else { &at })
            })
            .collect()
    }

    /// The request body schema of an operation (JSON bodies only).
    fn request_schema(&self, op: &Op) -> Option<Value> {
        let body = self.deref(op.op.get("requestBody")?);
        body["content"]["application/json"].get("schema").cloned()
    }
}

/// Where a schema comes from, for messages.
fn schema_name(schema: &Value) -> String {
    schema
        .get("$ref")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| schema.to_string())
}

// --- HTTP ---

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Credentials a request carries.
#[derive(Clone, Copy)]
enum Cred<'a> {
    None,
    Bearer(&'a str),
    Cookie(&'a str),
}

/// A body and its content type (`None`: no Content-Type header).
struct Body<'a> {
    content_type: Option<&'a str>,
    bytes: Vec<u8>,
}

fn json_body(v: &Value) -> Option<Body<'static>> {
    Some(Body {
        content_type: Some("application/json"),
        bytes: serde_json::to_vec(v).unwrap(),
    })
}

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cred: Cred<'_>,
    body: Option<Body<'_>>,
) -> Resp {
    let url = format!("http://{addr}{path}");
    let method = method.to_string();
    let mut headers: Vec<(String, String)> = Vec::new();
    match cred {
        Cred::None => {}
        Cred::Bearer(t) => headers.push(("authorization".into(), format!("Bearer {t}"))),
        Cred::Cookie(c) => headers.push(("cookie".into(), format!("warren_session={c}"))),
    }
    let body = body.map(|b| {
        if let Some(ct) = b.content_type {
            headers.push(("content-type".into(), ct.into()));
        }
        b.bytes
    });
    if body.as_ref().is_some_and(|b| b.len() > 1 << 20) {
        return send_oversized(addr, &method, path, headers, body.unwrap_or_default()).await;
    }
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let mut req = ureq::http::Request::builder()
            .method(method.as_str())
            .uri(&url);
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        let res = match body {
            Some(b) => agent.run(req.body(b).unwrap()),
            None => agent.run(req.body(()).unwrap()),
        }
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = res.status().as_u16();
        let headers = res
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    v.to_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        let body = res
            .into_body()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .unwrap_or_else(|e| panic!("{method} {url}: reading the body: {e}"));
        Resp {
            status,
            headers,
            body,
        }
    })
    .await
    .unwrap()
}

/// A body the server is expected to refuse before reading it all: it
/// answers and closes while the body is still being sent, which an
/// ordinary client reports as a broken pipe. The body is written from
/// another task, write errors are ignored, and the answer is read.
async fn send_oversized(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
) -> Resp {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in &headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(head.as_bytes()).await;
        let _ = wr.write_all(&body).await;
        wr
    });
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        let mut buf = [0u8; 16 << 10];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                // A reset after the answer arrived ends the read.
                Err(e) if !raw.is_empty() => {
                    eprintln!("{method} {path}: read ended with {e}");
                    break;
                }
                Err(e) => panic!("{method} {path}: {e}"),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "{method} {path}: no answer in 60 s");
    writer.abort();
    let split = common::find(&raw, b"\r\n\r\n").unwrap_or_else(|| {
        panic!(
            "{method} {path}: no HTTP head in {:?}",
            String::from_utf8_lossy(&raw)
        )
    });
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: bad status line in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if let Some(len) = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        assert!(
            body.len() >= len,
            "{method} {path}: the answer was cut: {:?}",
            String::from_utf8_lossy(&body)
        );
        body.truncate(len);
    } else {
        panic!("{method} {path}: expected a Content-Length answer, got {head:?}");
    }
    Resp {
        status,
        headers,
        body,
    }
}

// --- Checking responses against the document ---

/// Checks responses and remembers which (operation, status) were seen.
struct Checker {
    spec: Spec,
    seen: Mutex<BTreeMap<String, BTreeSet<u16>>>,
}

impl Checker {
    fn new() -> Checker {
        Checker {
            spec: Spec::load(),
            seen: Mutex::new(BTreeMap::new()),
        }
    }

    /// Checks `res` (to `method path`, documented as `template`) against
    /// the document and returns its JSON body (`Null` when it has none).
    fn check(&self, method: &str, template: &str, path: &str, res: &Resp) -> Value {
        self.try_check(method, template, path, res)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Checker::check`], with the mismatch as an error.
    fn try_check(
        &self,
        method: &str,
        template: &str,
        path: &str,
        res: &Resp,
    ) -> Result<Value, String> {
        let op = self.spec.op(method, template);
        let what = format!("{method} {template} (as {method} {path}) → {}", res.status);
        let Some(response) = op.op["responses"].get(res.status.to_string()) else {
            return Err(format!(
                "{what}: the status is not documented (documented: {:?}); body: {}",
                self.spec.statuses(&op),
                res.text()
            ));
        };
        let response = self.spec.deref(response);
        let Some(content) = response.get("content").and_then(Value::as_object) else {
            if !res.body.is_empty() {
                return Err(format!(
                    "{what}: documented without a body, got {:?}",
                    res.text()
                ));
            }
            self.seen(&op, res.status);
            return Ok(Value::Null);
        };
        let ctype = res
            .header("content-type")
            .and_then(|c| c.split(';').next())
            .map(|c| c.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let Some(media) = content.get(&ctype) else {
            return Err(format!(
                "{what}: Content-Type {ctype:?} is not documented (documented: {:?}); body: {}",
                content.keys().collect::<Vec<_>>(),
                res.text()
            ));
        };
        let schema = media.get("schema").cloned().unwrap_or(json!({}));
        let matches = |instance: &Value| {
            let errors = self.spec.errors(&schema, instance);
            if errors.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{what}: the body does not match {}:\n  {}\nbody: {instance}",
                    schema_name(&schema),
                    errors.join("\n  ")
                ))
            }
        };
        let text = || {
            String::from_utf8(res.body.clone())
                .map_err(|e| format!("{what}: the body is not UTF-8: {e}"))
        };
        let body = match ctype.as_str() {
            "application/json" => {
                let body: Value = serde_json::from_slice(&res.body)
                    .map_err(|e| format!("{what}: not JSON ({e}): {:?}", res.text()))?;
                matches(&body)?;
                body
            }
            "application/x-ndjson" => {
                let text = text()?;
                if !text.ends_with('\n') {
                    return Err(format!("{what}: NDJSON must end with a newline: {text:?}"));
                }
                let mut lines = Vec::new();
                for line in text.lines() {
                    let v: Value = serde_json::from_str(line)
                        .map_err(|e| format!("{what}: NDJSON line {line:?}: {e}"))?;
                    matches(&v)?;
                    lines.push(v);
                }
                Value::Array(lines)
            }
            "application/gzip" => {
                if !res.body.starts_with(&[0x1f, 0x8b]) {
                    return Err(format!("{what}: the body is not gzip"));
                }
                Value::Null
            }
            t if t.starts_with("text/") || t.contains("openmetrics") => {
                let text = Value::String(text()?);
                matches(&text)?;
                text
            }
            other => return Err(format!("{what}: no check for media type {other}")),
        };
        self.seen(&op, res.status);
        Ok(body)
    }

    fn seen(&self, op: &Op, status: u16) {
        self.seen
            .lock()
            .unwrap()
            .entry(op.label())
            .or_default()
            .insert(status);
    }

    /// Whether `body` matches the documented JSON request body.
    fn request_valid(&self, method: &str, template: &str, body: &Value) -> bool {
        let op = self.spec.op(method, template);
        let schema = self
            .spec
            .request_schema(&op)
            .unwrap_or_else(|| panic!("{method} {template}: no JSON request body documented"));
        self.spec.errors(&schema, body).is_empty()
    }
}

/// A live server and the checker.
struct Live<'a> {
    addr: SocketAddr,
    c: &'a Checker,
}

impl Live<'_> {
    /// Sends, checks against the document, and asserts the status.
    async fn call(
        &self,
        method: &str,
        template: &str,
        path: &str,
        cred: Cred<'_>,
        body: Option<Body<'_>>,
        expect: u16,
    ) -> Value {
        let res = send(self.addr, method, path, cred, body).await;
        let v = self.c.check(method, template, path, &res);
        assert_eq!(
            res.status,
            expect,
            "{method} {path}: expected {expect}, got {}: {}",
            res.status,
            res.text()
        );
        v
    }

    /// As the admin, with a JSON body that must (or must not) match the
    /// documented request schema.
    async fn admin_json(
        &self,
        method: &str,
        template: &str,
        path: &str,
        body: Value,
        schema_accepts: bool,
        expect: u16,
    ) -> Value {
        assert_eq!(
            self.c.request_valid(method, template, &body),
            schema_accepts,
            "{method} {template}: the documented request schema {} {body}",
            if schema_accepts { "refuses" } else { "accepts" }
        );
        self.call(
            method,
            template,
            path,
            Cred::Bearer(ADMIN_TOKEN),
            json_body(&body),
            expect,
        )
        .await
    }

    async fn admin(&self, method: &str, template: &str, path: &str, expect: u16) -> Value {
        self.call(
            method,
            template,
            path,
            Cred::Bearer(ADMIN_TOKEN),
            None,
            expect,
        )
        .await
    }
}

/// A concrete path for a template.
fn concrete(template: &str, user: &str) -> String {
    template
        .replace("{user}", user)
        .replace("{terminal}", "0123456789abcdef01234567")
        .replace("{path}", "notes/a.txt")
        .replace("{name}", "web")
        .replace("{port}", "8001")
        .replace("{share}", "0123456789abcdef01234567")
}

/// A plausible valid body for operations that take one.
fn sample_body(op: &Op) -> Option<Body<'static>> {
    match (op.method.as_str(), op.path.as_str()) {
        ("POST", "/api/users") => json_body(&json!({"id": "alice"})),
        ("PUT", "/api/users/{user}/limits") => json_body(&json!({})),
        ("PUT", "/api/users/{user}/shell") => json_body(&json!({"shell": "sh"})),
        ("POST", "/api/users/{user}/exec") | ("POST", "/api/users/{user}/exec/stream") => {
            json_body(&json!({"argv": ["true"]}))
        }
        ("POST", "/api/users/{user}/services") | ("POST", "/api/me/services") => {
            json_body(&json!({"name": "web", "argv": ["true"]}))
        }
        ("POST", "/api/users/{user}/previews/{port}/shares")
        | ("POST", "/api/me/previews/{port}/shares") => json_body(&json!({"expires_in": 3600})),
        ("POST", "/api/users/{user}/import") => Some(Body {
            content_type: Some("application/gzip"),
            bytes: good_archive(),
        }),
        _ => None,
    }
}

// --- The router's routes, from its source ---

/// The text from just after an opening parenthesis to its match.
fn balanced(s: &str) -> &str {
    let mut depth = 1;
    let mut in_str = false;
    let mut prev = ' ';
    for (i, c) in s.char_indices() {
        match c {
            '"' if prev != '\\' => in_str = !in_str,
            '(' if !in_str => depth += 1,
            ')' if !in_str => {
                depth -= 1;
                if depth == 0 {
                    return &s[..i];
                }
            }
            _ => {}
        }
        prev = c;
    }
    panic!("unbalanced parentheses in {s:.80}");
}

/// `(METHOD, path)` of every `.route("path", get(..).post(..))` in the
/// body of `fn_sig` in `file` (relative to this crate).
fn routes_in(file: &str, fn_sig: &str) -> BTreeSet<(String, String)> {
    let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
    let src = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let start = src
        .find(fn_sig)
        .unwrap_or_else(|| panic!("{path}: `{fn_sig}` not found; update this test"));
    let body = &src[start..];
    let body = &body[..body.find("\n}\n").expect("end of fn")];
    for unknown in [".nest(", ".route_service(", ".nest_service("] {
        assert!(
            !body.contains(unknown),
            "{path}: `{unknown}` is not understood by this test; extend routes_in"
        );
    }
    let mut out = BTreeSet::new();
    let mut rest = body;
    while let Some(i) = rest.find(".route(") {
        let args = balanced(&rest[i + ".route(".len()..]);
        // A wildcard `{*path}` is the document's `{path}`.
        let lit = args
            .split('"')
            .nth(1)
            .expect("a path literal")
            .replace("{*", "{");
        for m in METHODS.iter().chain(&["head", "options", "trace", "any"]) {
            let needle = format!("{m}(");
            let mut from = 0;
            while let Some(j) = args[from..].find(&needle) {
                let at = from + j;
                let before = args[..at].chars().next_back().unwrap_or(' ');
                if !(before.is_alphanumeric() || before == '_' || before == ':') {
                    assert_ne!(*m, "any", "{path}: any() routes cannot be documented");
                    out.insert((m.to_uppercase(), lit.to_string()));
                }
                from = at + needle.len();
            }
        }
        rest = &rest[i + ".route(".len() + args.len()..];
    }
    out
}

// --- Tests ---

#[test]
fn the_document_is_well_formed_openapi_3_1() {
    let spec = Spec::load();
    let doc = &spec.doc;
    let mut problems: Vec<String> = Vec::new();
    let mut problem = |p: String| problems.push(p);

    let version = doc["openapi"].as_str().unwrap_or_default();
    if !version.starts_with("3.1.") {
        problem(format!("openapi is {version:?}, not 3.1.x"));
    }
    if doc["info"]["title"] != "warren" {
        problem("info.title is not warren".into());
    }
    if doc["info"]["version"] != env!("CARGO_PKG_VERSION") {
        problem(format!(
            "info.version {} is not the crate's {}",
            doc["info"]["version"],
            env!("CARGO_PKG_VERSION")
        ));
    }
    if !doc["info"]["description"]
        .as_str()
        .is_some_and(|d| d.contains("docs/api.md"))
    {
        problem("info.description does not point at docs/api.md".into());
    }
    let scheme = &doc["components"]["securitySchemes"]["bearerAuth"];
    if scheme["type"] != "http" || scheme["scheme"] != "bearer" {
        problem(format!("bearerAuth is not an http bearer scheme: {scheme}"));
    }
    if doc["security"] != json!([{"bearerAuth": []}]) {
        problem(format!(
            "the default security is not bearerAuth: {}",
            doc["security"]
        ));
    }

    // Every $ref resolves.
    fn walk(v: &Value, at: &str, f: &mut dyn FnMut(&str, &str)) {
        match v {
            Value::Object(o) => {
                if let Some(r) = o.get("$ref").and_then(Value::as_str) {
                    f(at, r);
                }
                for (k, c) in o {
                    walk(c, &format!("{at}/{k}"), f);
                }
            }
            Value::Array(a) => {
                for (i, c) in a.iter().enumerate() {
                    walk(c, &format!("{at}/{i}"), f);
                }
            }
            _ => {}
        }
    }
    let mut refs = Vec::new();
    walk(doc, "#", &mut |at, r| {
        refs.push((at.to_string(), r.to_string()))
    });
    assert!(!refs.is_empty(), "no $ref at all?");
    for (at, r) in &refs {
        if !r.starts_with("#/") || spec.pointer(r).is_none() {
            problem(format!("{at}: $ref {r} does not resolve"));
        }
    }
    // Every component schema is used and is valid JSON Schema 2020-12.
    let schemas = doc["components"]["schemas"]
        .as_object()
        .expect("components.schemas");
    for (name, schema) in schemas {
        let r = format!("#/components/schemas/{name}");
        if !refs.iter().any(|(_, used)| *used == r) {
            problem(format!("{r} is never used"));
        }
        let mut standalone = schema.clone();
        standalone["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
        if let Err(e) = jsonschema::meta::validate(&standalone) {
            problem(format!("{r} is not valid JSON Schema 2020-12: {e}"));
        }
        spec.validator(&json!({"$ref": r}));
        // Exact shapes: an object lists what it requires and allows no
        // other field, unless it says otherwise on purpose.
        if schema["type"] == "object" && schema.get("properties").is_some() {
            if schema.get("additionalProperties").is_none() {
                problem(format!("{r}: additionalProperties is not stated"));
            }
            for req in schema["required"].as_array().into_iter().flatten() {
                let req = req.as_str().unwrap_or_default();
                if schema["properties"].get(req).is_none() {
                    problem(format!("{r}: required {req:?} is not a property"));
                }
            }
        }
    }

    let ops = spec.ops();
    assert!(!ops.is_empty(), "no operations");
    let mut ids = BTreeSet::new();
    for op in &ops {
        let label = op.label();
        if !op.path.starts_with('/') {
            problem(format!("{label}: the path does not start with /"));
        }
        if !METHODS.contains(&op.method.to_lowercase().as_str()) {
            problem(format!("{label}: unexpected method"));
        }
        match op.op["operationId"].as_str() {
            Some(id) if ids.insert(id.to_string()) => {}
            Some(id) => problem(format!("{label}: operationId {id} is used twice")),
            None => problem(format!("{label}: no operationId")),
        }
        // Path parameters: each template variable declared, and back.
        let vars: BTreeSet<String> = op
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_string)
            .collect();
        let mut declared = BTreeSet::new();
        let own = op.op["parameters"].as_array().cloned().unwrap_or_default();
        for p in op.path_params.iter().chain(&own) {
            let p = spec.deref(p);
            if p.get("schema").is_none() {
                problem(format!("{label}: parameter {} has no schema", p["name"]));
            }
            match p["in"].as_str() {
                Some("path") => {
                    if p["required"] != true {
                        problem(format!(
                            "{label}: path parameter {} is not required",
                            p["name"]
                        ));
                    }
                    declared.insert(p["name"].as_str().unwrap_or_default().to_string());
                }
                Some("query" | "header" | "cookie") => {}
                other => problem(format!("{label}: parameter in {other:?}")),
            }
        }
        if vars != declared {
            problem(format!(
                "{label}: path variables {vars:?} but declared path parameters {declared:?}"
            ));
        }
        // Responses.
        let Some(responses) = op.op["responses"].as_object().filter(|r| !r.is_empty()) else {
            problem(format!("{label}: no responses"));
            continue;
        };
        for (code, response) in responses {
            let ok = code.len() == 3 && code.parse::<u16>().is_ok_and(|c| (100..600).contains(&c));
            if !ok {
                problem(format!(
                    "{label}: response key {code:?} is not a status code"
                ));
                continue;
            }
            let response = spec.deref(response);
            if !response["description"].is_string() {
                problem(format!("{label} {code}: no description"));
            }
            for (media, m) in response["content"].as_object().into_iter().flatten() {
                if m.get("schema").is_none() {
                    problem(format!("{label} {code} {media}: no schema"));
                }
            }
            // Every error is {"error": "..."}.
            if code.starts_with('4') || code.starts_with('5') {
                let schema = &response["content"]["application/json"]["schema"];
                if schema["$ref"] != "#/components/schemas/Error" {
                    problem(format!("{label} {code}: not the Error schema"));
                }
            }
        }
        if let Some(body) = op.op.get("requestBody") {
            let body = spec.deref(body);
            if body["content"].as_object().is_none_or(|c| c.is_empty()) {
                problem(format!("{label}: requestBody without content"));
            }
        }
        // The admin routes say how they refuse.
        if spec.secured(op) {
            for code in [401, 403, 503] {
                if !responses.contains_key(&code.to_string()) {
                    problem(format!("{label}: secured but {code} is not documented"));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "docs/openapi.json:\n  {}",
        problems.join("\n  ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_routes_are_the_routers() {
    let spec = Spec::load();
    let documented: BTreeSet<(String, String)> =
        spec.ops().into_iter().map(|o| (o.method, o.path)).collect();

    // From the source: the API's routes, plus /healthz from the app's.
    let mut routed = routes_in("src/web/api.rs", "pub fn routes(");
    routed.extend(routes_in("src/web/node.rs", "pub fn routes("));
    routed.extend(routes_in("src/web/api_services.rs", "pub fn routes("));
    routed.extend(routes_in("src/web/api_previews.rs", "pub fn routes("));
    let app = routes_in("src/web/http.rs", "pub fn app(");
    assert!(
        app.contains(&("GET".into(), "/healthz".into())),
        "no GET /healthz in http.rs"
    );
    for (m, p) in &app {
        assert!(
            !(p.starts_with("/api") || p == "/metrics"),
            "{m} {p} is routed in http.rs, outside the API's routes()"
        );
    }
    routed.insert(("GET".into(), "/healthz".into()));
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "docs/openapi.json and the router differ:\n  routed but not documented: {undocumented:?}\n  documented but not routed: {stale:?}"
    );

    // Probing: every documented operation answers (401 without the token
    // where it needs one), and every other method of a documented path is
    // 405 even with the token.
    let d = dirs();
    let server = TestServer::with(Options {
        management: Some(management(&d)),
        ..Default::default()
    })
    .await;
    for op in spec.ops() {
        let path = concrete(&op.path, "alice");
        let res = send(server.addr, &op.method, &path, Cred::None, sample_body(&op)).await;
        let expect = if spec.secured(&op) || spec.user_secured(&op) {
            401
        } else {
            200
        };
        assert_eq!(
            res.status,
            expect,
            "{} (as {path}) without a token: {}",
            op.label(),
            res.text()
        );
    }
    let by_path: BTreeMap<String, BTreeSet<String>> =
        documented.iter().fold(BTreeMap::new(), |mut acc, (m, p)| {
            acc.entry(p.clone()).or_default().insert(m.clone());
            acc
        });
    for (template, methods) in &by_path {
        let path = concrete(template, "alice");
        for m in METHODS {
            let m = m.to_uppercase();
            if methods.contains(&m) {
                continue;
            }
            let res = send(server.addr, &m, &path, Cred::Bearer(ADMIN_TOKEN), None).await;
            assert_eq!(
                res.status,
                405,
                "{m} {template} is not documented, yet it answers {}: {}",
                res.status,
                res.text()
            );
            // A JSON error like every other, with the methods there are
            // (issue 16).
            if template.starts_with("/api/") {
                let allow = res.header("allow").unwrap_or_default();
                for documented in methods {
                    assert!(
                        allow.contains(documented.as_str()),
                        "{m} {template}: Allow {allow:?}"
                    );
                }
                let body: Value = serde_json::from_slice(&res.body).unwrap_or_else(|e| {
                    panic!("{m} {template}: 405 not JSON ({e}): {}", res.text())
                });
                assert!(
                    body["error"].as_str().is_some_and(|e| e.contains(&m)),
                    "{body}"
                );
            }
        }
    }
    for path in [
        "/api",
        "/api/",
        "/api/user",
        "/api/users/alice/nothing",
        "/api/users/alice/terminals/abc/more",
        "/api/openapi.yaml",
        "/metrics/x",
    ] {
        let res = send(server.addr, "GET", path, Cred::Bearer(ADMIN_TOKEN), None).await;
        assert_eq!(res.status, 404, "GET {path}: {}", res.text());
        if path.starts_with("/api/") {
            let body: Value = serde_json::from_slice(&res.body)
                .unwrap_or_else(|e| panic!("GET {path}: 404 not JSON ({e}): {}", res.text()));
            assert!(body["error"].is_string(), "{body}");
        }
    }
}

/// Whether the archive tools exist on this host (they exist only inside
/// a real sandbox, so the echo backend cannot run them).
fn echo_has_archivers() -> bool {
    std::path::Path::new(warren_domain::manage::EXPORT_COMMAND).exists()
        && std::path::Path::new(warren_domain::manage::IMPORT_COMMAND).exists()
}

/// Statuses that cannot be produced against this test server, with why.
fn excused(label: &str, status: u16, echo_has_archivers: bool) -> Option<&'static str> {
    match (label, status) {
        ("POST /api/users/{user}/exec" | "POST /api/users/{user}/exec/stream", 500)
        | ("GET /api/users/{user}/export" | "POST /api/users/{user}/import", 500) => None,
        (_, 500) => Some("an internal failure (the state database failing) cannot be caused from outside"),
        ("POST /api/users/{user}/exec" | "POST /api/users/{user}/exec/stream", 409) => Some(
            "a sandbox at its pids limit needs a real sandbox with a cgroup; tests/api.rs covers it",
        ),
        ("GET /api/users/{user}/export" | "POST /api/users/{user}/import", 409) => Some(
            "needs the landlock tier or a real sandbox at its pids limit; tests/api.rs covers both",
        ),
        (
            "GET /api/users/{user}/files/{path}"
            | "PUT /api/users/{user}/files/{path}"
            | "GET /api/me/files/{path}"
            | "PUT /api/me/files/{path}",
            200 | 201 | 409,
        ) => Some("needs warren-get/warren-put, which exist only inside a real sandbox (server/tests/files.rs covers them)"),
        ("PUT /api/me/files/{path}", 413) => Some(
            "the same bound as PUT /api/users/{user}/files/{path}, which produces it here; server/tests/files.rs too",
        ),
        ("GET /api/me/files/{path}" | "PUT /api/me/files/{path}", 403) => Some(
            "a cross-origin request; server/tests/files.rs covers it",
        ),
        (l, 403) if l.contains(" /api/me/services") => Some(
            "a cross-origin request, refused as for /api/me/files; server/tests/files.rs covers it",
        ),
        ("POST /api/me/services", 413 | 415) => Some(
            "the same JSON body rules as POST /api/users/{user}/services, which produces them here",
        ),
        ("POST /api/me/previews/{port}/shares", 413 | 415) => Some(
            "the same JSON bounds as POST /api/users/{user}/previews/{port}/shares, which produces them here",
        ),
        (
            "POST /api/me/previews/{port}/shares"
            | "GET /api/me/previews/{port}/shares"
            | "DELETE /api/me/previews/{port}/shares/{share}"
            | "GET /api/me/ports",
            403,
        ) => Some("a cross-origin request: the same check as /api/me/files, which server/tests/files.rs covers"),
        ("GET /api/audit", 400) => Some(
            "only a malformed query gives it; see the test query_and_path_rejections_are_json_errors",
        ),
        ("GET /api/users/{user}/export" | "POST /api/users/{user}/import", 200)
            if !echo_has_archivers =>
        {
            Some("needs warren-export/warren-import, which exist only inside a real sandbox (tests/api.rs covers them)")
        }
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_answers_as_documented() {
    let checker = Checker::new();
    let d = dirs();
    let server = TestServer::with(Options {
        management: Some(management(&d)),
        // One sandbox, so a second user's command finds the server full.
        limits: warren_domain::sessions::SessionLimits {
            max_sandboxes: 1,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let live = Live {
        addr: server.addr,
        c: &checker,
    };
    // Each part is boxed: one future holding them all overflows the
    // test thread's stack in a debug build.
    Box::pin(unauthenticated(&live, &server)).await;
    Box::pin(users(&live, &d)).await;
    Box::pin(limits_and_stats(&live)).await;
    Box::pin(exec(&live)).await;
    Box::pin(terminals(&live, &server)).await;
    Box::pin(archives(&live, &server)).await;
    Box::pin(files(&live, &server)).await;
    Box::pin(services(&live, &server)).await;
    Box::pin(audit_and_metrics(&live)).await;
    Box::pin(node(&live)).await;
    Box::pin(previews(&live, &server)).await;
    Box::pin(deletes(&live, &d)).await;
    drop(server);
    Box::pin(unavailable(&checker)).await;
    coverage(&checker);
}

/// The document and /healthz need no token; every other operation
/// refuses no token, a wrong one, and a user's own login.
async fn unauthenticated(live: &Live<'_>, server: &TestServer) {
    let doc = send(server.addr, "GET", "/api/openapi.json", Cred::None, None).await;
    live.c
        .check("GET", "/api/openapi.json", "/api/openapi.json", &doc);
    // (Not assert_eq: a mismatch would print two whole documents.)
    assert!(
        doc.body == DOCUMENT.as_bytes(),
        "the served document ({} bytes) is not docs/openapi.json ({} bytes)",
        doc.body.len(),
        DOCUMENT.len()
    );
    let ok = live
        .call("GET", "/healthz", "/healthz", Cred::None, None, 200)
        .await;
    assert_eq!(ok, "ok\n");

    // --- Refusals: no token, a wrong one, a user's own login ---
    let session = server.login("alice").await;
    for op in live
        .c
        .spec
        .ops()
        .into_iter()
        .filter(|o| live.c.spec.secured(o))
    {
        let path = concrete(&op.path, "alice");
        for (cred, expect) in [
            (Cred::None, 401),
            (Cred::Bearer("not-the-admin-token"), 401),
            (Cred::Bearer(&session), 403),
            (Cred::Cookie(&session), 403),
        ] {
            let v = live
                .call(&op.method, &op.path, &path, cred, sample_body(&op), expect)
                .await;
            assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
        }
    }
}

/// Share links of a preview port: the admin's and the user's own.
async fn previews(live: &Live<'_>, server: &TestServer) {
    let t = "/api/users/{user}/previews/{port}/shares";
    let p = "/api/users/alice/previews/8001/shares";
    let made = live
        .admin_json("POST", t, p, json!({"expires_in": 3600}), true, 201)
        .await;
    assert!(
        made["url"].as_str().unwrap().contains("?warren_share="),
        "{made}"
    );
    assert_eq!(made["active"], true);
    live.admin_json("POST", t, p, json!({"expires_in": 1}), false, 400)
        .await;
    json_errors(live, "POST", t, p, json!({"expires_in": 3600})).await;
    live.admin_json(
        "POST",
        t,
        "/api/users/zoe/previews/8001/shares",
        json!({"expires_in": 60}),
        true,
        404,
    )
    .await;
    let list = live.admin("GET", t, p, 200).await;
    assert_eq!(list["shares"][0]["id"], made["id"]);
    live.admin("GET", t, "/api/users/alice/previews/0/shares", 400)
        .await;
    live.admin("GET", t, "/api/users/zoe/previews/8001/shares", 404)
        .await;
    let d = "/api/users/{user}/previews/{port}/shares/{share}";
    let id = made["id"].as_str().unwrap();
    live.admin("DELETE", d, &format!("{p}/{id}"), 204).await;
    live.admin("DELETE", d, &format!("{p}/nosuch"), 404).await;
    live.admin("DELETE", d, "/api/users/alice/previews/x/shares/a", 400)
        .await;

    // Under a user's own login; a user without a tenant is 404.
    let alice = server.login("alice").await;
    let ghost = server.login("ghost").await;
    let mt = "/api/me/previews/{port}/shares";
    let mp = "/api/me/previews/8001/shares";
    let body = |secs: u64| json_body(&json!({ "expires_in": secs }));
    let mine = live
        .call("POST", mt, mp, Cred::Cookie(&alice), body(60), 201)
        .await;
    assert_eq!(mine["created_by"], "alice");
    live.call("POST", mt, mp, Cred::Cookie(&alice), body(1), 400)
        .await;
    live.call("POST", mt, mp, Cred::Cookie(&ghost), body(60), 404)
        .await;
    live.call("POST", mt, mp, Cred::Bearer(ADMIN_TOKEN), body(60), 401)
        .await;
    live.call("GET", mt, mp, Cred::Cookie(&alice), None, 200)
        .await;
    live.call(
        "GET",
        mt,
        "/api/me/previews/0/shares",
        Cred::Cookie(&alice),
        None,
        400,
    )
    .await;
    live.call("GET", mt, mp, Cred::Cookie(&ghost), None, 404)
        .await;
    live.call("GET", mt, mp, Cred::None, None, 401).await;
    let md = "/api/me/previews/{port}/shares/{share}";
    let id = mine["id"].as_str().unwrap();
    live.call(
        "DELETE",
        md,
        &format!("{mp}/{id}"),
        Cred::Cookie(&alice),
        None,
        204,
    )
    .await;
    live.call(
        "DELETE",
        md,
        &format!("{mp}/nosuch"),
        Cred::Cookie(&alice),
        None,
        404,
    )
    .await;
    live.call(
        "DELETE",
        md,
        "/api/me/previews/x/shares/a",
        Cred::Cookie(&alice),
        None,
        400,
    )
    .await;
    live.call("DELETE", md, &format!("{mp}/{id}"), Cred::None, None, 401)
        .await;

    // The open ports (of the echo backend: the host's).
    let t = "/api/me/ports";
    let ports = live
        .call("GET", t, t, Cred::Cookie(&alice), None, 200)
        .await;
    assert!(ports["ports"].is_array(), "{ports}");
    live.call("GET", t, t, Cred::Cookie(&ghost), None, 404)
        .await;
    live.call("GET", t, t, Cred::None, None, 401).await;
}

/// The node's state and load; draining and back; a state that is none.
async fn node(live: &Live<'_>) {
    let t = "/api/node";
    let n = live.admin("GET", t, t, 200).await;
    assert_eq!(n["state"], "active");
    let n = live
        .admin_json("PUT", t, t, json!({"state": "draining"}), true, 200)
        .await;
    assert_eq!(n["accepting"], false);
    // Not sent as JSON: 415, as for every JSON body.
    for ct in [None, Some("text/plain")] {
        let body = Some(Body {
            content_type: ct,
            bytes: br#"{"state": "active"}"#.to_vec(),
        });
        live.call("PUT", t, t, Cred::Bearer(ADMIN_TOKEN), body, 415)
            .await;
    }
    live.admin_json("PUT", t, t, json!({"state": "off"}), false, 400)
        .await;
    live.admin_json("PUT", t, t, json!({"state": "active"}), true, 200)
        .await;
}

/// Create (201, then 200), list, show; invalid ids; a slug conflict.
async fn users(live: &Live<'_>, d: &Dirs) {
    let t = "/api/users";
    let alice = live
        .admin_json("POST", t, t, json!({"id": "alice"}), true, 201)
        .await;
    assert_eq!(alice["id"], "alice");
    assert_eq!(alice["slug"], "alice");
    assert_eq!(alice["sandbox"], "stopped");
    assert_eq!(
        alice["limits"],
        json!({"memory_bytes": "default", "cpus": "default", "pids": "default"})
    );
    let again = live
        .admin_json("POST", t, t, json!({"id": "alice"}), true, 200)
        .await;
    assert_eq!(again["host_uid"], alice["host_uid"]);
    let odd = live
        .admin_json("POST", t, t, json!({"id": "Alice@Example.com"}), true, 201)
        .await;
    assert_ne!(odd["slug"], "alice");
    live.admin_json("POST", t, t, json!({"id": "bob"}), true, 201)
        .await;
    // Every id the server refuses is outside the documented schema.
    for bad in ["root", "../x", "", " ", "al\u{202E}ecila", "eve-0123abcd"] {
        let e = live
            .admin_json("POST", t, t, json!({ "id": bad }), false, 400)
            .await;
        assert!(
            e["error"].as_str().unwrap().contains("invalid user id"),
            "{e}"
        );
    }
    json_errors(live, "POST", t, t, json!({"id": "x"})).await;
    // 409: "carol"'s slug already belongs to another id (made directly in
    // the state database: two ids never derive one slug by themselves).
    {
        let mut state = warren_domain::state::State::open(&d.settings.state_dir).unwrap();
        let mut impostor = warren_runtime::tenant::Tenant::parse("Carol@x").unwrap();
        impostor.slug = "carol".into();
        state.get_or_create(&impostor, d.settings.uid_base).unwrap();
    }
    let e = live
        .admin_json("POST", t, t, json!({"id": "carol"}), true, 409)
        .await;
    assert!(e["error"].as_str().unwrap().contains("slug"), "{e}");

    let list = live.admin("GET", t, t, 200).await;
    let ids: Vec<&str> = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    for id in ["alice", "Alice@Example.com", "bob", "Carol@x"] {
        assert!(ids.contains(&id), "{id} not in {ids:?}");
    }
    let t = "/api/users/{user}";
    let shown = live.admin("GET", t, "/api/users/alice", 200).await;
    assert_eq!(shown["id"], "alice");
    let shown = live
        .admin("GET", t, "/api/users/Alice%40Example.com", 200)
        .await;
    assert_eq!(shown["id"], "Alice@Example.com");
    live.admin("GET", t, "/api/users/ghost", 404).await;
    live.admin("GET", t, "/api/users/root", 400).await;
}

/// Limit overrides, then stats of a tenant without a sandbox.
async fn limits_and_stats(live: &Live<'_>) {
    // The tenant's own shell (issue 16).
    let t = "/api/users/{user}/shell";
    let p = "/api/users/alice/shell";
    let user = live
        .admin_json("PUT", t, p, json!({"shell": "zsh -l"}), true, 200)
        .await;
    assert_eq!(user["shell"], "zsh -l");
    let user = live
        .admin_json("PUT", t, p, json!({"shell": "default"}), true, 200)
        .await;
    assert_eq!(user["shell"], Value::Null);
    for bad in [json!({"shell": "   "}), json!({"shell": "bin/zsh"})] {
        let e = live.admin_json("PUT", t, p, bad, true, 400).await;
        assert!(e["error"].as_str().unwrap().contains("shell"), "{e}");
    }
    live.admin_json(
        "PUT",
        t,
        "/api/users/ghost/shell",
        json!({"shell": "sh"}),
        true,
        404,
    )
    .await;
    json_errors(live, "PUT", t, p, json!({"shell": "sh"})).await;

    let t = "/api/users/{user}/limits";
    let set = json!({"memory_bytes": 268435456, "cpus": "none", "pids": "default"});
    let user = live
        .admin_json("PUT", t, "/api/users/alice/limits", set.clone(), true, 200)
        .await;
    assert_eq!(user["limits"], set);
    let user = live
        .admin_json(
            "PUT",
            t,
            "/api/users/alice/limits",
            json!({"cpus": 1.5}),
            true,
            200,
        )
        .await;
    assert_eq!(
        user["limits"],
        json!({"memory_bytes": "default", "cpus": 1.5, "pids": "default"})
    );
    for bad in [
        json!({"cpus": 0}),
        json!({"memory_bytes": 1000}),
        json!({"pids": 0}),
    ] {
        live.admin_json("PUT", t, "/api/users/alice/limits", bad, false, 400)
            .await;
    }
    for bad in [
        json!({"memory_bytes": "lots"}),
        json!({"disk": 1}),
        json!({"pids": -1}),
    ] {
        live.admin_json("PUT", t, "/api/users/alice/limits", bad, false, 400)
            .await;
    }
    live.admin_json("PUT", t, "/api/users/ghost/limits", json!({}), true, 404)
        .await;
    json_errors(live, "PUT", t, "/api/users/alice/limits", json!({})).await;

    // --- Stats (no sandbox yet) ---
    let t = "/api/users/{user}/stats";
    let stats = live.admin("GET", t, "/api/users/alice/stats", 200).await;
    assert_eq!(stats["sandbox"], "stopped");
    assert_eq!(stats["tier"], Value::Null);
    assert_eq!(stats["limits"]["cpu"], 1.5);
    assert!(stats["workspace"].is_object(), "{stats}");
    live.admin("GET", t, "/api/users/ghost/stats", 404).await;
    live.admin("GET", t, "/api/users/root/stats", 400).await;
}

/// exec and exec/stream: exit, signal, timeout and every refusal.
async fn exec(live: &Live<'_>) {
    let t = "/api/users/{user}/exec";
    let p = "/api/users/alice/exec";
    let r = live
        .admin_json(
            "POST",
            t,
            p,
            json!({
                "argv": ["/bin/sh", "-c", "read x; echo \"$x $A\"; echo err >&2; exit 3"],
                "cwd": ".",
                "env": {"A": "b"},
                "stdin": "in\n",
                "timeout_secs": 30,
            }),
            true,
            200,
        )
        .await;
    assert_eq!(
        (&r["exit_code"], &r["reason"], &r["stdout"], &r["stderr"]),
        (&json!(3), &json!("exit"), &json!("in b\n"), &json!("err\n")),
        "{r}"
    );
    let r = live
        .admin_json(
            "POST",
            t,
            p,
            json!({"argv": ["/bin/sh", "-c", "kill -TERM $$"], "cwd": null, "stdin": null}),
            true,
            200,
        )
        .await;
    assert_eq!(
        (&r["exit_code"], &r["signal"], &r["reason"]),
        (&Value::Null, &json!(15), &json!("signal")),
        "{r}"
    );
    let r = live
        .admin_json(
            "POST",
            t,
            p,
            json!({"argv": ["sleep", "5"], "timeout_secs": 0.3}),
            true,
            200,
        )
        .await;
    assert_eq!(r["reason"], "timeout", "{r}");
    exec_errors(live, t, "exec").await;

    // --- Exec, streamed ---
    let t = "/api/users/{user}/exec/stream";
    let lines = live
        .admin_json(
            "POST",
            t,
            "/api/users/alice/exec/stream",
            json!({"argv": ["/bin/sh", "-c", "echo out; echo err >&2; exit 4"]}),
            true,
            200,
        )
        .await;
    let lines = lines.as_array().unwrap();
    let (end, chunks) = lines.split_last().expect("an end line");
    let end_schema = json!({"$ref": "#/components/schemas/ExecEnd"});
    let chunk_schema = json!({"$ref": "#/components/schemas/ExecChunk"});
    assert!(
        live.c.spec.errors(&end_schema, end).is_empty(),
        "the last line is not an ExecEnd: {end}"
    );
    assert_eq!(
        (&end["exit_code"], &end["reason"]),
        (&json!(4), &json!("exit"))
    );
    let mut out = BTreeMap::<String, String>::new();
    for c in chunks {
        assert!(
            live.c.spec.errors(&chunk_schema, c).is_empty(),
            "a line before the last is not an ExecChunk: {c}"
        );
        *out.entry(c["stream"].as_str().unwrap().into()).or_default() +=
            c["data"].as_str().unwrap();
    }
    assert_eq!(out.get("stdout").map(String::as_str), Some("out\n"));
    assert_eq!(out.get("stderr").map(String::as_str), Some("err\n"));
    exec_errors(live, t, "exec/stream").await;

    // --- Stats (alice's sandbox runs now) ---
    let stats = live
        .admin(
            "GET",
            "/api/users/{user}/stats",
            "/api/users/alice/stats",
            200,
        )
        .await;
    assert_eq!(stats["sandbox"], "running", "{stats}");
    assert_eq!(stats["tier"], "none", "{stats}");
}

/// Terminals listed and closed; a full server refuses a second user's
/// commands.
async fn terminals(live: &Live<'_>, server: &TestServer) {
    let admin = Cred::Bearer(ADMIN_TOKEN);
    let mut term = server.open("alice").await;
    let id = term.terminal_id();
    let t = "/api/users/{user}/terminals";
    let list = live
        .admin("GET", t, "/api/users/alice/terminals", 200)
        .await;
    assert_eq!(list["terminals"][0]["id"], id.as_str(), "{list}");
    assert_eq!(list["terminals"][0]["viewers"], 1, "{list}");
    live.admin("GET", t, "/api/users/ghost/terminals", 404)
        .await;
    live.admin("GET", t, "/api/users/root/terminals", 400).await;

    // The server is full (alice's sandbox holds a terminal): bob's
    // commands cannot start.
    for (t, body) in [
        (
            "/api/users/{user}/exec",
            json_body(&json!({"argv": ["true"]})),
        ),
        (
            "/api/users/{user}/exec/stream",
            json_body(&json!({"argv": ["true"]})),
        ),
        (
            "/api/users/{user}/import",
            Some(Body {
                content_type: Some("application/gzip"),
                bytes: good_archive(),
            }),
        ),
    ] {
        let e = live
            .call("POST", t, &concrete(t, "bob"), admin, body, 503)
            .await;
        assert!(e["error"].as_str().unwrap().contains("full"), "{e}");
    }
    live.admin(
        "GET",
        "/api/users/{user}/export",
        "/api/users/bob/export",
        503,
    )
    .await;

    let t = "/api/users/{user}/terminals/{terminal}";
    live.admin(
        "DELETE",
        t,
        &format!("/api/users/alice/terminals/{id}"),
        204,
    )
    .await;
    term.read_control("exit").await;
    live.admin(
        "DELETE",
        t,
        &format!("/api/users/alice/terminals/{id}"),
        404,
    )
    .await;
    live.admin("DELETE", t, &format!("/api/users/bob/terminals/{id}"), 404)
        .await;
    live.admin("DELETE", t, "/api/users/ghost/terminals/abc", 404)
        .await;
    live.admin("DELETE", t, "/api/users/root/terminals/abc", 400)
        .await;
}

/// Export and import: refusals, hostile archives, and the echo
/// backend's missing archivers.
async fn archives(live: &Live<'_>, server: &TestServer) {
    let admin = Cred::Bearer(ADMIN_TOKEN);
    let echo_has_archivers = echo_has_archivers();
    let t = "/api/users/{user}/export";
    live.admin(
        "GET",
        t,
        "/api/users/alice/export",
        if echo_has_archivers { 200 } else { 500 },
    )
    .await;
    live.admin("GET", t, "/api/users/ghost/export", 404).await;
    live.admin("GET", t, "/api/users/root/export", 400).await;

    let t = "/api/users/{user}/import";
    let gz = |bytes: Vec<u8>| {
        Some(Body {
            content_type: Some("application/gzip"),
            bytes,
        })
    };
    let p = "/api/users/alice/import";
    let e = live.call("POST", t, p, admin, gz(Vec::new()), 400).await;
    assert!(e["error"].as_str().unwrap().contains("empty"), "{e}");
    for h in hostile_set(&IMPORT_LIMITS) {
        let res = send(server.addr, "POST", p, admin, gz(h.archive)).await;
        let e = live.c.check("POST", t, p, &res);
        assert!(
            matches!(res.status, 400 | 413),
            "hostile archive {}: {} {e}",
            h.name,
            res.status
        );
        assert!(
            e["error"].as_str().unwrap().contains(&h.refusal),
            "hostile archive {}: {e}",
            h.name
        );
    }
    let imported = live
        .call(
            "POST",
            t,
            p,
            admin,
            gz(good_archive()),
            if echo_has_archivers { 200 } else { 500 },
        )
        .await;
    if !echo_has_archivers {
        assert_eq!(
            imported["error"], "internal error; the server's log has the details",
            "a 500 must not leak detail"
        );
    }
    live.call(
        "POST",
        t,
        "/api/users/ghost/import",
        admin,
        gz(good_archive()),
        404,
    )
    .await;
    live.call(
        "POST",
        t,
        "/api/users/root/import",
        admin,
        gz(good_archive()),
        400,
    )
    .await;
}

/// The audit log (filters, paging) and the metrics the document names.
async fn audit_and_metrics(live: &Live<'_>) {
    let t = "/api/audit";
    // The largest page: the refusals checked first fill more than the
    // default page of 100 on their own.
    let all = live.admin("GET", t, "/api/audit?limit=1000", 200).await;
    let entries = all["entries"].as_array().unwrap();
    for action in [
        "auth.failed",
        "user.create",
        "limits",
        "exec",
        "terminal.close",
    ] {
        assert!(
            entries.iter().any(|e| e["action"] == action),
            "no {action} entry in the audit log"
        );
    }
    let some = live
        .admin(
            "GET",
            t,
            "/api/audit?user=alice&action=exec&after=1&limit=2",
            200,
        )
        .await;
    let some = some["entries"].as_array().unwrap();
    assert_eq!(some.len(), 2);
    for e in some {
        assert_eq!(
            (&e["tenant"], &e["action"]),
            (&json!("alice"), &json!("exec"))
        );
        assert!(e["seq"].as_i64().unwrap() > 1);
    }
    let none = live.admin("GET", t, "/api/audit?after=1000000", 200).await;
    assert_eq!(none["entries"], json!([]));

    // --- Metrics ---
    let text = live.admin("GET", "/metrics", "/metrics", 200).await;
    let text = text.as_str().unwrap();
    let described = live.c.spec.op("GET", "/metrics").op["description"]
        .as_str()
        .unwrap()
        .to_string();
    let names: Vec<&str> = described
        .split('`')
        .filter(|w| w.starts_with("warren_"))
        .collect();
    assert!(names.len() >= 7, "{described}");
    // The echo backend has no cgroup, so no tenant's memory is known.
    for name in names.iter().filter(|n| **n != "warren_tenant_memory_bytes") {
        assert!(
            text.contains(name),
            "/metrics is documented to have {name}; it has:\n{text}"
        );
    }
}

/// Delete, with and without the home; a home that is not a directory.
async fn deletes(live: &Live<'_>, d: &Dirs) {
    let t = "/api/users/{user}";
    let del = live
        .admin("DELETE", t, "/api/users/Alice%40Example.com", 200)
        .await;
    assert_eq!(
        del,
        json!({"id": "Alice@Example.com", "home_removed": false, "terminals_closed": 0})
    );
    // A home that is not a directory is not removed.
    live.admin_json(
        "POST",
        "/api/users",
        "/api/users",
        json!({"id": "dave"}),
        true,
        201,
    )
    .await;
    let home = d.settings.workspace_root.join("dave");
    std::fs::remove_dir(&home).unwrap();
    std::fs::write(&home, "not a directory").unwrap();
    live.admin("DELETE", t, "/api/users/dave?remove_home=true", 409)
        .await;
    live.admin("DELETE", t, "/api/users/dave?remove_home=false", 200)
        .await;
    let home = d.settings.workspace_root.join("bob");
    assert!(home.is_dir());
    let del = live
        .admin("DELETE", t, "/api/users/bob?remove_home=true", 200)
        .await;
    assert_eq!(del["home_removed"], true);
    assert!(!home.exists());
    live.admin("DELETE", t, "/api/users/alice", 200).await;
    live.admin("DELETE", t, "/api/users/alice", 404).await;
    live.admin("DELETE", t, "/api/users/root", 400).await;
}

/// A server without the management API: 503 everywhere.
async fn unavailable(checker: &Checker) {
    let admin = Cred::Bearer(ADMIN_TOKEN);
    let plain = TestServer::start().await;
    let live = Live {
        addr: plain.addr,
        c: checker,
    };
    for op in checker
        .spec
        .ops()
        .into_iter()
        .filter(|o| checker.spec.secured(o))
    {
        let path = concrete(&op.path, "alice");
        let e = live
            .call(&op.method, &op.path, &path, admin, sample_body(&op), 503)
            .await;
        assert!(e["error"].as_str().unwrap().contains("not enabled"), "{e}");
    }
    let session = plain.login("alice").await;
    for op in checker
        .spec
        .ops()
        .into_iter()
        .filter(|o| checker.spec.user_secured(o))
    {
        let path = concrete(&op.path, "alice");
        let e = live
            .call(
                &op.method,
                &op.path,
                &path,
                Cred::Cookie(&session),
                sample_body(&op),
                503,
            )
            .await;
        assert!(e["error"].as_str().unwrap().contains("not enabled"), "{e}");
    }
    live.call(
        "GET",
        "/api/openapi.json",
        "/api/openapi.json",
        Cred::None,
        None,
        200,
    )
    .await;
}

/// The files API against the echo backend: what is refused before
/// `warren-get`/`warren-put` would run (server/tests/files.rs runs them in
/// real sandboxes).
async fn files(live: &Live<'_>, server: &TestServer) {
    let admin = Cred::Bearer(ADMIN_TOKEN);
    for (method, t, user_path) in [
        (
            "GET",
            "/api/users/{user}/files/{path}",
            "/api/users/alice/files",
        ),
        (
            "PUT",
            "/api/users/{user}/files/{path}",
            "/api/users/alice/files",
        ),
    ] {
        let body = || {
            (method == "PUT").then(|| Body {
                content_type: None,
                bytes: b"x".to_vec(),
            })
        };
        let p = format!("{user_path}/%2E%2E/x");
        live.call(method, t, &p, admin, body(), 400).await;
        live.call(method, t, "/api/users/ghost/files/x", admin, body(), 404)
            .await;
    }
    let t = "/api/users/{user}/files/{path}";
    let mut statuses = BTreeSet::new();
    for h in hostile_set(&IMPORT_LIMITS) {
        let p = "/api/users/alice/files/d?archive=tar.gz";
        let body = Some(Body {
            content_type: Some("application/gzip"),
            bytes: h.archive,
        });
        let res = send(server.addr, "PUT", p, admin, body).await;
        live.c.check("PUT", t, p, &res);
        statuses.insert(res.status);
    }
    assert_eq!(statuses, BTreeSet::from([400, 413]), "hostile archives");
    live.call(
        "PUT",
        t,
        "/api/users/alice/files/d?archive=zip",
        admin,
        None,
        400,
    )
    .await;

    // A user's own: their login, their home; a user without a tenant is 404.
    let alice = server.login("alice").await;
    let ghost = server.login("ghost").await;
    for (method, t) in [
        ("GET", "/api/me/files/{path}"),
        ("PUT", "/api/me/files/{path}"),
    ] {
        let body = || {
            (method == "PUT").then(|| Body {
                content_type: None,
                bytes: b"x".to_vec(),
            })
        };
        live.call(
            method,
            t,
            "/api/me/files/%2E%2E/x",
            Cred::Cookie(&alice),
            body(),
            400,
        )
        .await;
        live.call(
            method,
            t,
            "/api/me/files/x",
            Cred::Cookie(&ghost),
            body(),
            404,
        )
        .await;
        live.call(
            method,
            t,
            "/api/me/files/x",
            Cred::Bearer(ADMIN_TOKEN),
            body(),
            401,
        )
        .await;
    }
}

/// Named services on the echo backend (server/tests/services.rs runs them
/// in real sandboxes): each operation, its refusals, the user's own.
async fn services(live: &Live<'_>, server: &TestServer) {
    let admin = Cred::Bearer(ADMIN_TOKEN);
    let list = "/api/users/{user}/services";
    let one = "/api/users/{user}/services/{name}";
    // The echo backend runs it in the server's own $HOME: no new directory.
    let web = json!({"name": "web", "cwd": ".", "argv": ["sh", "-c", "echo hi; sleep 60"]});
    let v = live
        .admin_json(
            "POST",
            list,
            "/api/users/alice/services",
            web.clone(),
            true,
            201,
        )
        .await;
    assert_eq!(v["state"], "running", "create answers once it runs: {v}");
    live.admin_json(
        "POST",
        list,
        "/api/users/alice/services",
        web.clone(),
        true,
        409,
    )
    .await;
    live.admin_json(
        "POST",
        list,
        "/api/users/ghost/services",
        web.clone(),
        true,
        404,
    )
    .await;
    live.admin_json(
        "POST",
        list,
        "/api/users/root/services",
        web.clone(),
        true,
        400,
    )
    .await;
    json_errors(live, "POST", list, "/api/users/alice/services", web.clone()).await;
    let v = live
        .admin("GET", list, "/api/users/alice/services", 200)
        .await;
    assert_eq!(v["services"][0]["name"], "web");
    live.admin("GET", list, "/api/users/ghost/services", 404)
        .await;
    live.admin("GET", list, "/api/users/root/services", 400)
        .await;
    for (method, t, ok) in [
        ("GET", one, 200),
        ("GET", "/api/users/{user}/services/{name}/logs", 200),
        ("POST", "/api/users/{user}/services/{name}/stop", 200),
        ("POST", "/api/users/{user}/services/{name}/start", 200),
        ("POST", "/api/users/{user}/services/{name}/restart", 200),
        ("DELETE", one, 204),
    ] {
        let path = |user: &str, name: &str| t.replace("{user}", user).replace("{name}", name);
        live.admin(method, t, &path("ghost", "web"), 404).await;
        live.admin(method, t, &path("alice", "nothing"), 404).await;
        live.admin(method, t, &path("alice", "a%20b"), 400).await;
        live.admin(method, t, &path("root", "web"), 400).await;
        live.admin(method, t, &path("alice", "web"), ok).await;
    }

    // The user's own, under their login.
    let alice = server.login("alice").await;
    let ghost = server.login("ghost").await;
    let mine = "/api/me/services";
    let body = || json_body(&web);
    live.call("POST", mine, mine, Cred::Cookie(&alice), body(), 201)
        .await;
    live.call("POST", mine, mine, Cred::Cookie(&alice), body(), 409)
        .await;
    let bad = json_body(&json!({"name": "../x", "argv": ["true"]}));
    live.call("POST", mine, mine, Cred::Cookie(&alice), bad, 400)
        .await;
    live.call("POST", mine, mine, Cred::Cookie(&ghost), body(), 404)
        .await;
    live.call("POST", mine, mine, admin, body(), 401).await;
    live.call("GET", mine, mine, Cred::Cookie(&alice), None, 200)
        .await;
    live.call("GET", mine, mine, Cred::Cookie(&ghost), None, 404)
        .await;
    live.call("GET", mine, mine, admin, None, 401).await;
    let my_one = "/api/me/services/{name}";
    for (method, t, ok) in [
        ("GET", my_one, 200),
        ("GET", "/api/me/services/{name}/logs", 200),
        ("POST", "/api/me/services/{name}/stop", 200),
        ("POST", "/api/me/services/{name}/start", 200),
        ("POST", "/api/me/services/{name}/restart", 200),
        ("DELETE", my_one, 204),
    ] {
        let path = |name: &str| t.replace("{name}", name);
        live.call(method, t, &path("web"), Cred::Cookie(&ghost), None, 404)
            .await;
        live.call(method, t, &path("a%20b"), Cred::Cookie(&alice), None, 400)
            .await;
        live.call(method, t, &path("web"), admin, None, 401).await;
        live.call(method, t, &path("web"), Cred::Cookie(&alice), None, ok)
            .await;
    }
}

/// Every documented status was seen, or is excused.
fn coverage(checker: &Checker) {
    let seen = checker.seen.lock().unwrap().clone();
    let mut missing = Vec::new();
    for op in checker.spec.ops() {
        let label = op.label();
        for status in checker.spec.statuses(&op) {
            let was_seen = seen.get(&label).is_some_and(|s| s.contains(&status));
            match excused(&label, status, echo_has_archivers()) {
                _ if was_seen => {}
                Some(why) => println!("not exercised: {label} → {status}: {why}"),
                None => missing.push(format!("{label} → {status}")),
            }
        }
    }
    assert!(
        missing.is_empty(),
        "documented but never produced by this test (produce them, or excuse them with a reason):\n  {}",
        missing.join("\n  ")
    );
}

/// The JSON body errors every JSON operation documents: malformed JSON
/// (400), the wrong shape (400 too), no JSON content type (415) and a body
/// over 4 MiB (413). `valid` is a body the operation accepts.
async fn json_errors(live: &Live<'_>, method: &str, template: &str, path: &str, valid: Value) {
    let admin = Cred::Bearer(ADMIN_TOKEN);
    let malformed = Some(Body {
        content_type: Some("application/json"),
        bytes: b"{\"id\": ".to_vec(),
    });
    live.call(method, template, path, admin, malformed, 400)
        .await;
    let mut extra = valid.clone();
    extra["no_such_field"] = json!(1);
    live.admin_json(method, template, path, extra, false, 400)
        .await;
    live.admin_json(method, template, path, json!([1, 2]), false, 400)
        .await;
    for ct in [None, Some("text/plain")] {
        let body = Some(Body {
            content_type: ct,
            bytes: serde_json::to_vec(&valid).unwrap(),
        });
        live.call(method, template, path, admin, body, 415).await;
    }
    let big = Some(Body {
        content_type: Some("application/json"),
        bytes: format!("{{\"id\": \"{}\"}}", "a".repeat(5 << 20)).into_bytes(),
    });
    live.call(method, template, path, admin, big, 413).await;
}

/// exec and exec/stream refuse the same requests.
async fn exec_errors(live: &Live<'_>, template: &str, name: &str) {
    let p = concrete(template, "alice");
    for (bad, schema_accepts) in [
        (json!({"argv": []}), false),
        (json!({"argv": [""]}), false),
        (json!({"argv": ["", "x"]}), false),
        (json!({"argv": ["true", "a\u{0}b"]}), false),
        (json!({"argv": ["true"], "cwd": "../bob"}), false),
        (json!({"argv": ["true"], "cwd": "a/./../b"}), false),
        (json!({"argv": ["true"], "cwd": "a/.."}), false),
        (json!({"argv": ["true"], "cwd": "/etc"}), false),
        (json!({"argv": ["true"], "cwd": "a\u{0}"}), false),
        (json!({"argv": ["true"], "cwd": "a".repeat(1025)}), false),
        (json!({"argv": ["true"], "timeout_secs": 0}), false),
        (json!({"argv": ["true"], "timeout_secs": 5e-324}), false),
        (json!({"argv": ["true"], "timeout_secs": 0.0009}), false),
        (json!({"argv": ["true"], "timeout_secs": 3601}), false),
        (json!({"argv": ["true"], "env": {"A=B": "c"}}), false),
        (json!({"argv": ["true"], "env": {"": "c"}}), false),
        (json!({"argv": ["true"], "env": {"A": "c\u{0}"}}), false),
    ] {
        let e = live
            .admin_json("POST", template, &p, bad.clone(), schema_accepts, 400)
            .await;
        assert!(
            !e["error"].as_str().unwrap().is_empty(),
            "{name} {bad}: {e}"
        );
    }
    for bad in [json!({"argv": "true"}), json!({"cmd": ["true"]})] {
        live.admin_json("POST", template, &p, bad, false, 400).await;
    }
    // The edges the document calls valid are accepted.
    for good in [
        json!({"argv": ["true"], "cwd": ""}),
        json!({"argv": ["true"], "cwd": "."}),
        json!({"argv": ["true", ""], "env": {"A": ""}, "timeout_secs": 0.001}),
        json!({"argv": ["true"], "timeout_secs": 3600}),
    ] {
        live.admin_json("POST", template, &p, good, true, 200).await;
    }
    let ok = json!({"argv": ["true"]});
    live.admin_json(
        "POST",
        template,
        &concrete(template, "ghost"),
        ok.clone(),
        true,
        404,
    )
    .await;
    live.admin_json(
        "POST",
        template,
        &concrete(template, "root"),
        ok.clone(),
        true,
        400,
    )
    .await;
    // A command that cannot be started is the server's failure.
    let e = live
        .admin_json(
            "POST",
            template,
            &p,
            json!({"argv": ["/nonexistent/command"]}),
            true,
            500,
        )
        .await;
    assert_eq!(
        e["error"],
        "internal error; the server's log has the details"
    );
    json_errors(live, "POST", template, &p, ok).await;
}

/// Query strings and path segments that cannot be parsed are errors like
/// any other: JSON `{"error": ...}`, 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_and_path_rejections_are_json_errors() {
    let checker = Checker::new();
    let d = dirs();
    let server = TestServer::with(Options {
        management: Some(management(&d)),
        ..Default::default()
    })
    .await;
    let live = Live {
        addr: server.addr,
        c: &checker,
    };
    live.admin_json(
        "POST",
        "/api/users",
        "/api/users",
        json!({"id": "alice"}),
        true,
        201,
    )
    .await;
    let mut failures = Vec::new();
    for (method, template, path) in [
        ("GET", "/api/audit", "/api/audit?limit=many"),
        ("GET", "/api/audit", "/api/audit?limit=1001"),
        ("GET", "/api/audit", "/api/audit?after=x"),
        ("GET", "/api/audit", "/api/audit?no_such_param=1"),
        (
            "DELETE",
            "/api/users/{user}",
            "/api/users/alice?remove_home=maybe",
        ),
        ("GET", "/api/users/{user}", "/api/users/%FF"),
        ("PUT", "/api/users/{user}/limits", "/api/users/root/limits"),
    ] {
        let body = (method == "PUT").then(|| json_body(&json!({}))).flatten();
        let res = send(server.addr, method, path, Cred::Bearer(ADMIN_TOKEN), body).await;
        let outcome = checker
            .try_check(method, template, path, &res)
            .and_then(|v| match res.status {
                400 => Ok(()),
                other => Err(format!("expected 400, got {other}: {v}")),
            });
        if let Err(e) = outcome {
            failures.push(format!("{method} {path}: {e}"));
        }
    }
    // The user is untouched by the refused delete.
    live.admin("GET", "/api/users/{user}", "/api/users/alice", 200)
        .await;
    assert!(
        failures.is_empty(),
        "not JSON 400 errors:\n  {}",
        failures.join("\n  ")
    );
}

/// `warren_exec_total` counts commands run through the API, as the
/// document says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_commands() {
    let checker = Checker::new();
    let d = dirs();
    let server = TestServer::with(Options {
        management: Some(management(&d)),
        ..Default::default()
    })
    .await;
    let live = Live {
        addr: server.addr,
        c: &checker,
    };
    let exec_total = |text: &Value| -> f64 {
        let text = text.as_str().unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("warren_exec_total "))
            .unwrap_or_else(|| panic!("no warren_exec_total in:\n{text}"))
            .trim()
            .parse()
            .unwrap()
    };
    let before = exec_total(&live.admin("GET", "/metrics", "/metrics", 200).await);
    live.admin_json(
        "POST",
        "/api/users",
        "/api/users",
        json!({"id": "alice"}),
        true,
        201,
    )
    .await;
    for t in ["/api/users/{user}/exec", "/api/users/{user}/exec/stream"] {
        live.admin_json(
            "POST",
            t,
            &concrete(t, "alice"),
            json!({"argv": ["true"]}),
            true,
            200,
        )
        .await;
    }
    let after = exec_total(&live.admin("GET", "/metrics", "/metrics", 200).await);
    assert_eq!(
        after - before,
        2.0,
        "two commands ran; warren_exec_total went {before} → {after}"
    );
}

/// The documented id pattern (`UserIdString`) and `Tenant::parse` agree:
/// every id the server refuses is outside the schema and every id inside
/// it is accepted. Samples: the edges of every refused range, the rules'
/// own cases, and pseudo-random mixes of characters near those edges.
#[test]
fn the_user_id_schema_is_the_tenant_rule() {
    use warren_runtime::tenant::{Tenant, INVISIBLE};
    let spec = Spec::load();
    let schema = json!({"$ref": "#/components/schemas/UserIdString"});
    let validator = spec.validator(&schema);
    let mut samples: Vec<String> = [
        "alice",
        "a b",
        " ",
        " a",
        "a ",
        "a  b",
        "Alice@Example.com",
        "名前",
        "Zoë",
        "root",
        "Root",
        "www-data",
        "rooty",
        "eve-0123abcd",
        "Eve-0123abcd",
        "eve-0123abcdx",
        "e-0123abcd",
        "-0123abcd",
        "_-0123abcd",
        "a/b",
        "a\\b",
        ".x",
        "x.",
        "a..b",
        "a.b",
        "..",
        "",
        "alice\n",
        "\n",
        "a\u{0}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    samples.push("x".repeat(64));
    samples.push("x".repeat(65));
    samples.push("名".repeat(64));
    samples.push("名".repeat(65));
    samples.push(format!("{}-0123abcd", "a".repeat(23)));
    samples.push(format!("{}-0123abcd", "a".repeat(24)));
    let mut edges: Vec<char> = vec![
        '\u{0}', '\u{1f}', ' ', '\u{7e}', '\u{7f}', '\u{9f}', '\u{a1}',
    ];
    for (lo, hi) in INVISIBLE {
        for c in [*lo as u32 - 1, *lo as u32, *hi as u32, *hi as u32 + 1] {
            edges.extend(char::from_u32(c));
        }
    }
    for c in &edges {
        samples.push(format!("a{c}b"));
        samples.push(c.to_string());
    }
    // A small deterministic generator (xorshift): ids of 0 to 70
    // characters from letters, the edges, `.`, `/`, `-` and space.
    let pool: Vec<char> = "aZ9_-. /@".chars().chain(edges.iter().copied()).collect();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..3000 {
        let len = (next() % 71) as usize;
        samples.push(
            (0..len)
                .map(|_| pool[(next() % pool.len() as u64) as usize])
                .collect(),
        );
    }
    let mut disagree = Vec::new();
    for id in &samples {
        let server = Tenant::parse(id).is_ok();
        let document = validator.is_valid(&json!(id));
        if server != document {
            disagree.push(format!("{id:?}: server {server}, document {document}"));
        }
    }
    assert!(
        disagree.is_empty(),
        "docs/openapi.json's UserIdString and Tenant::parse disagree on {} of {} ids:\n  {}",
        disagree.len(),
        samples.len(),
        disagree[..disagree.len().min(20)].join("\n  ")
    );
}
