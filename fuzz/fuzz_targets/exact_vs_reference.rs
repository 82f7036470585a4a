//! Fuzz target `exact_vs_reference`: the property lives in `polyattn_tools::fuzzing` (shared with
//! `tests/fuzz_replay.rs`, which replays this target's corpus on stable).
#![no_main]

use libfuzzer_sys::fuzz_target;
use polyattn_tools::fuzzing::enclosure::ExactInput;

fuzz_target!(|input: ExactInput| {
    if let Err(v) = polyattn_tools::fuzzing::enclosure::check(&input) {
        panic!("property violated: {v}");
    }
});
