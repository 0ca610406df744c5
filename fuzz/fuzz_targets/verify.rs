//! Signature headers and verification (`jit_fuzzing::verify`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = jit_fuzzing::verify(data);
});
