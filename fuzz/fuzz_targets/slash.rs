//! The slash command form and `/jit` language through the bridge (`jit_fuzzing::slash`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = jit_fuzzing::slash(data);
});
