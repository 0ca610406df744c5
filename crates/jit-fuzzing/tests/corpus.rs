//! Replays every committed fuzz corpus file through its harness, so what the fuzzer once found
//! keeps being tested on every run (a full fuzz run needs cargo-fuzz; see docs/fuzzing.md).
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;

fn replay<T>(target: &str, f: fn(&[u8]) -> T) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let _ = f(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n > 0, "{target}: empty corpus");
}

#[test]
fn verify_corpus() {
    replay("verify", jit_fuzzing::verify);
}

#[test]
fn keyring_corpus() {
    replay("keyring", jit_fuzzing::keyring);
}

#[test]
fn slash_corpus() {
    replay("slash", jit_fuzzing::slash);
}

#[test]
fn interactive_corpus() {
    replay("interactive", jit_fuzzing::interactive);
}

#[test]
fn callback_corpus() {
    replay("callback", jit_fuzzing::callback);
}

#[test]
fn api_bodies_corpus() {
    replay("api_bodies", jit_fuzzing::api_bodies);
}
