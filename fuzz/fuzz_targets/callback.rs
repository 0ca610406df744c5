//! Signed callback payloads and card rendering (`jit_fuzzing::callback`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = jit_fuzzing::callback(data);
});
