//! Fuzz target `report_plot`: the property lives in `polyattn_tools::fuzzing::report_plot`
//! (shared with `tests/fuzz_replay.rs`, which replays this target's corpus on stable).
#![no_main]

use libfuzzer_sys::fuzz_target;
use polyattn_tools::fuzzing::report_plot::ReportPlotInput;

fuzz_target!(|input: ReportPlotInput| {
    if let Err(v) = polyattn_tools::fuzzing::report_plot::check(&input) {
        panic!("property violated: {v}");
    }
});
