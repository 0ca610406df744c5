//! TLS on `jit_http::serve` over real TCP with a real HTTPS client: the certificate follows its
//! files, a broken pair never replaces a good one, and the client address comes from
//! `X-Forwarded-For` only when a trusted proxy sent it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use axum::routing::get;
use std::path::Path;
use std::time::Duration;

/// A self-signed certificate for 127.0.0.1 and localhost: (certificate PEM, key PEM).
fn self_signed() -> (String, String) {
    let c =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    (c.cert.pem(), c.signing_key.serialize_pem())
}

/// Replaces a file the way an operator's tool does: write aside, then rename over it.
fn put(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        // A new connection (and handshake) per request, so each sees the current pair.
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn start(edge: jit_http::Edge) -> std::net::SocketAddr {
    let router = axum::Router::new().route(
        "/who",
        get(|req: axum::extract::Request| async move {
            jit_http::source_ip(req.extensions()).unwrap().to_string()
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(jit_http::serve(l, router, edge, std::future::pending()));
    addr
}

#[tokio::test]
async fn the_listener_serves_https_and_follows_its_certificate_files() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (cert_a, key_a) = self_signed();
    put(&cert_path, &cert_a);
    put(&key_path, &key_a);
    let tls = jit_http::tls::TlsConfig {
        cert_file: Some(cert_path.clone()),
        key_file: Some(key_path.clone()),
    };
    // Re-read the files at every handshake, so the test needs no waiting.
    let acceptor = jit_http::tls::from_config(&tls, Duration::ZERO).unwrap();
    let addr = start(jit_http::Edge {
        tls: acceptor,
        ..Default::default()
    })
    .await;
    let url = format!("https://127.0.0.1:{}/who", addr.port());

    let r = client(&cert_a).get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "127.0.0.1");
    // Plain HTTP on the TLS port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/who", addr.port()))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);

    // A renewed certificate takes effect on the next connection, without a restart.
    let (cert_b, key_b) = self_signed();
    put(&key_path, &key_b);
    put(&cert_path, &cert_b);
    let r = client(&cert_b).get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        client(&cert_a).get(&url).send().await.is_err(),
        "the old certificate is no longer served"
    );

    // A half-written or mismatched pair is refused: the last good pair keeps serving.
    put(&key_path, &key_a);
    let r = client(&cert_b).get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200, "cert B with key A must not replace B + B");
    put(&key_path, "not a key");
    let r = client(&cert_b).get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn a_listener_never_starts_without_a_valid_pair() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = self_signed();
    let (_, other_key) = self_signed();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    put(&cert_path, &cert);
    put(&key_path, &other_key);
    let tls = |c: Option<&Path>, k: Option<&Path>| jit_http::tls::TlsConfig {
        cert_file: c.map(Path::to_path_buf),
        key_file: k.map(Path::to_path_buf),
    };
    let refused = |t: jit_http::tls::TlsConfig| match jit_http::tls::from_config(&t, Duration::ZERO)
    {
        Ok(_) => panic!("loaded"),
        Err(e) => e,
    };
    let e = refused(tls(Some(&cert_path), Some(&key_path)));
    assert!(e.contains("cert.pem"), "{e}");
    assert!(!e.contains("PRIVATE KEY"), "no key material in errors: {e}");
    let e = refused(tls(Some(&cert_path), Some(&dir.path().join("missing.pem"))));
    assert!(e.contains("missing.pem"), "{e}");
    let e = refused(tls(Some(&cert_path), None));
    assert!(e.contains("tls.key_file"), "{e}");
    assert!(
        jit_http::tls::from_config(&tls(None, None), Duration::ZERO)
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
    let plain = reqwest::Client::new();
    let ask = |addr: std::net::SocketAddr, xff: &'static str| {
        let plain = plain.clone();
        async move {
            plain
                .get(format!("http://{addr}/who"))
                .header("x-forwarded-for", xff)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    // No trusted proxies: the header is ignored (anyone can send it).
    let open = start(jit_http::Edge::default()).await;
    assert_eq!(ask(open, "203.0.113.9").await, "127.0.0.1");
    // The peer is a trusted proxy: the first untrusted hop from the right is the client;
    // what the client wrote itself (the leftmost entry) is not believed.
    let proxied = start(jit_http::Edge {
        trusted_proxies: jit_http::TrustedProxies::parse(&["127.0.0.1", "10.0.0.0/8"]).unwrap(),
        ..Default::default()
    })
    .await;
    assert_eq!(
        ask(proxied, "198.51.100.1, 203.0.113.9, 10.1.2.3").await,
        "203.0.113.9"
    );
}
