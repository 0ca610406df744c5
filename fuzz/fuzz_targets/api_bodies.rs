//! Signed API bodies and query strings through the backend (`jit_fuzzing::api_bodies`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = jit_fuzzing::api_bodies(data);
});
