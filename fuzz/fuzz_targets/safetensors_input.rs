//! Fuzz target `safetensors_input`: the property lives in `polyattn_tools::fuzzing` (shared with
//! `tests/fuzz_replay.rs`, which replays this target's corpus on stable).
#![no_main]

use libfuzzer_sys::fuzz_target;
use polyattn_tools::fuzzing::files::SafetensorsInput;

fuzz_target!(|input: SafetensorsInput| {
    if let Err(v) = polyattn_tools::fuzzing::files::check_safetensors(&input) {
        panic!("property violated: {v}");
    }
});
