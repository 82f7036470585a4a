//! Fuzz target `safetensors_input`: the property lives in `polyattn::fuzzing` (shared with
//! `tests/fuzz_replay.rs`, which replays this target's corpus on stable).
#![no_main]

use libfuzzer_sys::fuzz_target;
use polyattn::fuzzing::files::SafetensorsInput;

fuzz_target!(|input: SafetensorsInput| {
    if let Err(v) = polyattn::fuzzing::files::check_safetensors(&input) {
        panic!("property violated: {v}");
    }
});
