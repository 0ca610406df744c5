//! Button clicks and dialog submissions through the bridge (`jit_fuzzing::interactive`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = jit_fuzzing::interactive(data);
});
