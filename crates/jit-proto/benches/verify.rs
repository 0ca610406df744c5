//! Verify cost of a v1 and a v2 request with a 1 KiB body, next to the floor measured in the
//! same run: SHA-256 of the body plus HMAC-SHA256 (prepared key) of a canonical string of the
//! same length. Run: `cargo bench -p jit-proto --bench verify`. Figures: docs/benchmarks.md.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use hmac::Mac;
use jit_proto::keyring::KeyRing;
use jit_proto::sign::{
    Audience, RequestParts, SignInput, SignatureVersion, SignedHeaders, Verifier, VerifierConfig,
    canonical_string, sign,
};
use jit_proto::{MemoryNonceStore, NonceStore};
use sha2::{Digest, Sha256};
use std::hint::black_box;
use std::task::{Context, Poll, Waker};

const NOW: i64 = 1_764_072_000;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fn bench(c: &mut Criterion) {
    let ring = KeyRing::parse(
        r#"{"key-20261125":"6f1d3c0b8e9a4f27b5c2d1e0a9f8e7d6c5b4a3928170f6e5d4c3b2a190817263"}"#,
    )
    .unwrap();
    let key = ring.get("key-20261125").unwrap().clone();
    let body = vec![b'x'; 1024];
    let nonce = "3f2b8c1e-9d4a-4e6b-8f1a-2c3d4e5f6a7b";

    for (name, version, pq) in [
        (
            "v1",
            SignatureVersion::V1,
            "/requests/a1b2c3d4-e5f6-7890-abcd-ef1234567890/approve",
        ),
        (
            "v2",
            SignatureVersion::V2,
            "/requests?channel_id=ch1&status=PENDING&limit=50",
        ),
    ] {
        let req = RequestParts {
            method: "POST",
            path_and_query: pq,
            body: &body,
        };
        let input = SignInput {
            version,
            audience: Audience::Backend,
            request: req,
            timestamp: NOW,
            nonce,
        };
        let headers = sign(&key, &input);
        // The server's real input: an http::HeaderMap with the signature headers and a few others.
        let mut pairs = http::HeaderMap::new();
        for (k, v) in &headers {
            pairs.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        for (k, v) in [
            ("host", "127.0.0.1:8080"),
            ("content-type", "application/json"),
            ("content-length", "1024"),
            ("accept", "*/*"),
        ] {
            pairs.insert(k, v.parse().unwrap());
        }
        let verifier = Verifier::new(VerifierConfig::new(Audience::Backend));
        let canonical = canonical_string(version, Audience::Backend, &NOW.to_string(), nonce, &req);

        let mut g = c.benchmark_group(format!("verify_1k_{name}"));
        g.bench_function("floor_sha256_body_plus_hmac", |b| {
            b.iter(|| {
                let h = Sha256::digest(black_box(&body));
                let mut m = key.mac();
                m.update(black_box(canonical.as_bytes()));
                black_box((h, m.finalize()))
            })
        });
        g.bench_function("parse_and_check", |b| {
            b.iter(|| {
                let parsed = SignedHeaders::parse(black_box(&pairs)).unwrap();
                verifier
                    .check(&ring, &parsed, black_box(&req), NOW)
                    .unwrap()
            })
        });
        g.bench_function("parse_only", |b| {
            b.iter(|| SignedHeaders::parse(black_box(&pairs)).unwrap())
        });
        let parsed = SignedHeaders::parse(&pairs).unwrap();
        g.bench_function("check_only", |b| {
            b.iter(|| {
                verifier
                    .check(&ring, black_box(&parsed), black_box(&req), NOW)
                    .unwrap()
            })
        });
        let store = MemoryNonceStore::new(usize::MAX);
        let mut i: u64 = 0;
        g.bench_function("check_plus_memory_nonce", |b| {
            b.iter(|| {
                let parsed = SignedHeaders::parse(black_box(&pairs)).unwrap();
                let v = verifier
                    .check(&ring, &parsed, black_box(&req), NOW)
                    .unwrap();
                i += 1;
                let n = i.to_string();
                block_on(store.check_and_insert(&n, NOW, NOW + 600)).unwrap();
                v
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
