//! Header parsing and verification on arbitrary headers, methods, targets and bodies: must
//! never panic, and must only accept what the real signer produced.
#![no_main]

use jit_proto::keyring::KeyRing;
use jit_proto::nonce::MemoryNonceStore;
use jit_proto::sign::{Audience, RequestParts, SignedHeaders, Verifier, VerifierConfig};
use libfuzzer_sys::fuzz_target;
use std::task::{Context, Poll, Waker};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // Split the input into header values, method, target and body on 0xff bytes.
    let mut parts = data.split(|b| *b == 0xff);
    let mut next = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (kid, ts, nonce, sig, ver, method, target) = (next(), next(), next(), next(), next(), next(), next());
    let body = next();
    let mut headers = vec![
        ("X-JIT-KeyID", kid.as_str()),
        ("X-JIT-Timestamp", ts.as_str()),
        ("X-JIT-Nonce", nonce.as_str()),
        ("X-JIT-Signature", sig.as_str()),
    ];
    if !ver.is_empty() {
        headers.push(("X-JIT-Signature-Version", ver.as_str()));
    }
    let _ = SignedHeaders::parse(headers.as_slice());
    let ring = KeyRing::parse(r#"{"key-1":"0123456789abcdef0123456789abcdef","default":"x"}"#).unwrap_or_default();
    let v = Verifier::new(VerifierConfig::new(Audience::Backend));
    let store = MemoryNonceStore::new(16);
    let req = RequestParts { method: &method, path_and_query: &target, body: body.as_bytes() };
    let r = block_on(v.verify(&ring, headers.as_slice(), &req, 1_764_072_000, &store));
    // A random signature verifying would be a forgery.
    assert!(r.is_err() || sig.len() == 64);
    let _ = jit_proto::sign::canonical_query(&target);
});
