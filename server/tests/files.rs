//! The files API (issue 16): a file and a folder in and out of a home,
//! read and written inside the sandbox as the user; a symlink to outside
//! the home and a `..` path refused with nothing written; a huge body
//! bounded like an import; the same under the user's own login. Runs in
//! every mode of tests/matrix.sh.

mod common;

use std::io::Read;

use common::*;
use serde_json::{json, Value};

async fn exec(server: &TestServer, user: &str, argv: &[&str]) -> Value {
    let body = json!({ "argv": argv, "timeout_secs": 120 });
    let r = admin(
        server.addr,
        "POST",
        &format!("/api/users/{user}/exec"),
        Some(body.clone()),
    )
    .await;
    assert_eq!(r.status, 200, "exec {body}: {}", r.text());
    r.json()
}

async fn sh(server: &TestServer, user: &str, script: &str) -> String {
    let r = exec(server, user, &["sh", "-c", script]).await;
    assert_eq!(r["exit_code"], 0, "{script}: {r}");
    r["stdout"].as_str().unwrap().to_string()
}

/// Every name in the home and in /tmp with its type and size, from inside.
async fn everything(server: &TestServer, user: &str) -> String {
    sh(
        server,
        user,
        "{ find . /tmp -printf '%y %s %p\\n' 2>/dev/null; true; } | sort",
    )
    .await
}

async fn put(server: &TestServer, path: &str, body: Vec<u8>) -> ApiResponse {
    api(server.addr, "PUT", path, Some(ADMIN_TOKEN), Some(body)).await
}

async fn get(server: &TestServer, path: &str) -> ApiResponse {
    api(server.addr, "GET", path, Some(ADMIN_TOKEN), None).await
}

/// A PUT whose answer may come before the whole body was sent (a refusal
/// closes the connection under the sender): the status and the body.
async fn put_raw(server: &TestServer, path: &str, body: Vec<u8>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
         Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: {}\r\n\r\n",
        server.addr,
        body.len()
    );
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(head.as_bytes()).await;
        let _ = wr.write_all(&body).await;
        wr
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(_) if !raw.is_empty() => break,
            Err(e) => panic!("PUT {path}: {e}"),
        }
    }
    writer.abort();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    (status, text)
}

fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, name, *data).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// Names and contents of the files in a tar.gz.
fn untar(data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(data));
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type() == tar::EntryType::Regular {
            let name = e.path().unwrap().display().to_string();
            let mut buf = Vec::new();
            e.read_to_end(&mut buf).unwrap();
            out.push((name, buf));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_and_a_folder_go_in_and_come_out() {
    let d = dirs();
    let server = api_server(&d).await;
    new_user(&server, "filer").await;

    let r = put(
        &server,
        "/api/users/filer/files/notes/a%20b.txt",
        b"hello\n".to_vec(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json(), json!({"path": "notes/a b.txt", "bytes": 6}));
    // Written as the user, seen from inside.
    let seen = sh(
        &server,
        "filer",
        "cat 'notes/a b.txt'; stat -c '%U %s' 'notes/a b.txt'",
    )
    .await;
    assert_eq!(seen, "hello\nfiler 6\n");

    let r = get(&server, "/api/users/filer/files/notes/a%20b.txt").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.content_type, "application/octet-stream");
    assert_eq!(r.body, b"hello\n");

    let upload = tar_gz(&[("x/y.txt", b"yes\n"), ("z", b"")]);
    let r = put(
        &server,
        "/api/users/filer/files/unpacked/here?archive=tar.gz",
        upload,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        sh(&server, "filer", "cat unpacked/here/x/y.txt").await,
        "yes\n"
    );

    let r = get(&server, "/api/users/filer/files/notes").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.content_type, "application/gzip");
    assert_eq!(
        untar(&r.body),
        vec![("a b.txt".to_string(), b"hello\n".to_vec())]
    );

    let r = get(&server, "/api/users/filer/files/nothing/here").await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(
        r.json()["error"].as_str().unwrap().contains("nothing/here"),
        "{}",
        r.text()
    );

    // A file where a folder is asked for, a folder where a file would go.
    let r = put(&server, "/api/users/filer/files/notes", b"x".to_vec()).await;
    assert_eq!(r.status, 409, "{}", r.text());

    // The user's own login reaches their own home only.
    let session = server.login("filer").await;
    let r = api(
        server.addr,
        "GET",
        "/api/me/files/notes/a%20b.txt",
        Some(&session),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, b"hello\n");
    let r = api(
        server.addr,
        "PUT",
        "/api/me/files/mine.txt",
        Some(&session),
        Some(b"me".to_vec()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(sh(&server, "filer", "cat mine.txt").await, "me");
    let r = api(server.addr, "GET", "/api/me/files/mine.txt", None, None).await;
    assert_eq!(r.status, 401, "{}", r.text());
    // Another site's page cannot use the cookie: refused before anything.
    let cookie = cookie(&session);
    for method in ["GET", "PUT"] {
        let r = http_request(
            server.addr,
            method,
            "/api/me/files/cross.txt",
            &[("cookie", &cookie), ("origin", "http://evil.example")],
            "x",
        )
        .await;
        assert_eq!(r.status, 403, "{method}: {}", r.body);
        assert!(r.body.contains("cross-origin"), "{}", r.body);
    }
    let listing = sh(&server, "filer", "ls cross.txt 2>&1 || true").await;
    assert!(listing.contains("No such"), "{listing}");
    let r = api(
        server.addr,
        "GET",
        "/api/users/filer/files/mine.txt",
        Some(&session),
        None,
    )
    .await;
    assert_eq!(
        r.status,
        403,
        "a user's login is not the admin token: {}",
        r.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_out_and_dotdot_are_refused_with_nothing_written() {
    let d = dirs();
    let server = api_server(&d).await;
    new_user(&server, "linker").await;
    sh(
        &server,
        "linker",
        "mkdir -p /tmp/outside && echo secret > /tmp/outside/s && ln -s /tmp/outside out \
         && ln -s /tmp/outside/s s && mkdir in",
    )
    .await;
    let before = everything(&server, "linker").await;
    let archive = tar_gz(&[("f", b"x")]);
    for path in [
        "out/new.txt",
        "out/s",
        "s",
        "out/deeper/new.txt",
        "%2E%2E/escaped",
        "in/%2E%2E/%2E%2E/escaped",
        "%2Ftmp%2Fabsolute",
        "in/nul%00byte",
    ] {
        let url = format!("/api/users/linker/files/{path}");
        let r = put(&server, &url, b"written\n".to_vec()).await;
        assert_eq!(r.status, 400, "PUT {path}: {}", r.text());
        assert!(r.json()["error"].is_string(), "{}", r.text());
        let r = put(&server, &format!("{url}?archive=tar.gz"), archive.clone()).await;
        assert_eq!(r.status, 400, "PUT {path} archive: {}", r.text());
        let r = get(&server, &url).await;
        assert_eq!(r.status, 400, "GET {path}: {}", r.text());
    }
    assert_eq!(
        everything(&server, "linker").await,
        before,
        "something was written"
    );
    assert_eq!(
        sh(&server, "linker", "cat /tmp/outside/s").await,
        "secret\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_body_is_bounded_like_an_import() {
    let d = dirs();
    let server = api_server(&d).await;
    new_user(&server, "big").await;
    let before = everything(&server, "big").await;
    // One byte over the per-file limit of the test server's import limits.
    let body = vec![b'x'; IMPORT_LIMITS.max_entry_bytes as usize + 1];
    let (status, answer) = put_raw(&server, "/api/users/big/files/huge.bin", body).await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains("\"error\""), "{answer}");
    let r = put(
        &server,
        "/api/users/big/files/hostile?archive=tar.gz",
        vec![0u8; 1000],
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        everything(&server, "big").await,
        before,
        "something was written"
    );
}
