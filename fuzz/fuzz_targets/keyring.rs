//! Key ring parsing (`jit_fuzzing::keyring`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = jit_fuzzing::keyring(data);
});
