//! Fuzz target `poly_bound`: the property lives in `polyattn_tools::fuzzing` (shared with
//! `tests/fuzz_replay.rs`, which replays this target's corpus on stable).
#![no_main]

use libfuzzer_sys::fuzz_target;
use polyattn_tools::fuzzing::poly_bound::PolyBoundInput;

fuzz_target!(|input: PolyBoundInput| {
    if let Err(v) = polyattn_tools::fuzzing::poly_bound::check(&input) {
        panic!("property violated: {v}");
    }
});
