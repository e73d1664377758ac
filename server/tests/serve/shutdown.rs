//! Graceful shutdown: clients are told, the server stops within its bound.

use std::time::{Duration, Instant};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_clients_and_finishes_in_time() {
    let server = TestServer::start().await;
    let addr = server.addr;
    let registry = server.state.registry().clone();
    let mut a = server.open("alice").await;
    let mut b = server.open("bob").await;
    // Something is running in one of them.
    a.send_input("sleep 600\r").await;
    let started = Instant::now();
    let stopping = tokio::spawn(server.shutdown(Duration::from_secs(10)));
    for c in [&mut a, &mut b] {
        let (code, _, texts) = c.expect_close().await;
        assert_eq!(code, 1001);
        let exit = texts
            .iter()
            .find(|v| v["type"] == "exit")
            .expect("exit frame");
        assert_eq!(exit["reason"], "server_shutdown");
    }
    stopping.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(registry.sandbox_count(), 0);
    assert!(registry.is_shutting_down());
    // Not accepting any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
