//! Fuzz target `model_config`: the property lives in `polyattn::fuzzing` (shared with
//! `tests/fuzz_replay.rs`, which replays this target's corpus on stable).
#![no_main]

use libfuzzer_sys::fuzz_target;
use polyattn::fuzzing::files::ModelInput;

fuzz_target!(|input: ModelInput| {
    if let Err(v) = polyattn::fuzzing::files::check_model(&input) {
        panic!("property violated: {v}");
    }
});
