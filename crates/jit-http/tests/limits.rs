//! The connection-level limits of `jit_http::serve`, over real TCP with raw requests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use axum::routing::get;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start(limits: jit_http::Limits) -> std::net::SocketAddr {
    let router =
        axum::Router::new().route(
            "/who",
            get(
                |axum::extract::ConnectInfo(a): axum::extract::ConnectInfo<
                    std::net::SocketAddr,
                >| async move { a.ip().to_string() },
            ),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(jit_http::serve(
        l,
        router,
        jit_http::Edge {
            limits,
            ..Default::default()
        },
        std::future::pending(),
    ));
    addr
}

/// Sends `head` and returns everything the server answers until it closes or the answer ends.
async fn exchange(conn: &mut TcpStream, head: &str) -> String {
    conn.write_all(head.as_bytes()).await.unwrap();
    read_answer(conn).await
}

async fn read_answer(conn: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let n = tokio::time::timeout_at(deadline, conn.read(&mut buf))
            .await
            .expect("the server answered in time")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(|v| v.trim().parse::<usize>().unwrap())
            });
            if len.is_some_and(|n| body.len() >= n) {
                break;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

const GET: &str = "GET /who HTTP/1.1\r\nhost: x\r\n\r\n";

#[tokio::test]
async fn heads_too_large_or_with_too_many_headers_get_431() {
    let addr = start(jit_http::Limits::default()).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let ok = exchange(&mut c, GET).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(
        ok.ends_with("127.0.0.1"),
        "the source address reaches the handler: {ok}"
    );

    let big = format!(
        "GET /who HTTP/1.1\r\nhost: x\r\nx-pad: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let mut c = TcpStream::connect(addr).await.unwrap();
    let r = exchange(&mut c, &big).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");

    let many: String = (0..80).map(|i| format!("x-h{i}: v\r\n")).collect();
    let mut c = TcpStream::connect(addr).await.unwrap();
    let r = exchange(
        &mut c,
        &format!("GET /who HTTP/1.1\r\nhost: x\r\n{many}\r\n"),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
}

#[tokio::test]
async fn a_client_that_never_finishes_its_head_is_cut_off() {
    let addr = start(jit_http::Limits {
        header_read_timeout: Duration::from_millis(500),
        ..jit_http::Limits::default()
    })
    .await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    // Half a request line, then nothing: the server must close (a 408 first is allowed).
    let r = exchange(&mut c, "GET /who HT").await;
    assert!(r.is_empty() || r.starts_with("HTTP/1.1 408"), "{r}");
}

#[tokio::test]
async fn connections_past_the_limit_wait_until_one_closes() {
    let addr = start(jit_http::Limits {
        max_connections: 1,
        ..jit_http::Limits::default()
    })
    .await;
    let mut first = TcpStream::connect(addr).await.unwrap();
    assert!(exchange(&mut first, GET).await.starts_with("HTTP/1.1 200"));
    // The first connection stays open (keep-alive): the second is not served meanwhile...
    let mut second = TcpStream::connect(addr).await.unwrap();
    second.write_all(GET.as_bytes()).await.unwrap();
    assert!(
        exchange(&mut first, GET).await.starts_with("HTTP/1.1 200"),
        "the first is still served"
    );
    let mut probe = [0u8; 1];
    assert!(
        matches!(second.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the second connection got an answer while the first held the only slot"
    );
    // ...and is served as soon as the first closes.
    drop(first);
    let r = read_answer(&mut second).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}

#[tokio::test]
async fn a_request_cut_off_by_the_time_limit_is_answered_counted_and_logged() {
    let metrics = std::sync::Arc::new(jit_http::metrics::HttpMetrics::default());
    let router = axum::Router::new().route("/stuck", get(std::future::pending::<String>));
    let app = jit_http::harden(router, Duration::from_millis(100), metrics.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(jit_http::serve(
        l,
        app,
        jit_http::Edge::default(),
        std::future::pending(),
    ));
    let mut c = TcpStream::connect(addr).await.unwrap();
    let r = exchange(&mut c, "GET /stuck HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    assert!(r.contains("\"code\":\"timeout\""), "{r}");
    assert!(
        r.to_ascii_lowercase().contains("x-request-id:"),
        "logged with its id: {r}"
    );
    assert_eq!(
        metrics.requests.get(&["/stuck", "GET", "503"]),
        1,
        "counted under its route"
    );
}
