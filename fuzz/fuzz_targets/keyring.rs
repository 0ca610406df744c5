//! Key ring parsing on arbitrary text: never panics, and never leaks a value into an error.
#![no_main]

use jit_proto::keyring::KeyRing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match KeyRing::parse(text) {
            Ok(ring) => {
                let _ = ring.signing_key(time::OffsetDateTime::UNIX_EPOCH);
                let _ = ring.to_secret_string();
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
});
