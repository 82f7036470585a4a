#!/usr/bin/env bash
# A bounded cargo-fuzz campaign over every target of fuzz/, then a report.
#
#   scripts/fuzz_campaign.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 60; targets default to all five. Each target runs
# under libFuzzer (stable toolchain, `--sanitizer none`, fork mode so one crash, OOM or
# timeout does not end the run: every one is kept under fuzz/artifacts/<target>/).
# New inputs go to fuzz/corpus-run/<target>/ (git-ignored); the committed seeds in
# fuzz/corpus/<target>/ are read only. Afterwards every input of both folders is
# replayed through the same property (`tools/examples/fuzz_corpus.rs stats`) to record the
# ranges of n, B and R explored, and the report is written to
# fuzz/reports/campaign-<UTC time>.{md,json} (and copied to fuzz/reports/latest.* when
# every target ran).
# Environment: FUZZ_JOBS (libFuzzer -jobs in fork mode, default 1), FUZZ_RSS_MB (memory
# limit per execution, default 2048), FUZZ_TIMEOUT (seconds per execution, default 30).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-60}"
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    TARGETS=(poly_bound exact_vs_reference safetensors_input model_config report_plot)
fi
JOBS="${FUZZ_JOBS:-1}"
RSS="${FUZZ_RSS_MB:-2048}"
TMO="${FUZZ_TIMEOUT:-30}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
WORK="fuzz/reports/.work-$STAMP"
mkdir -p "$WORK" fuzz/reports
# The same build the runs use (stable: no sanitizer, so no nightly -Z flags).
# cargo fuzz has no --locked: fetch against the committed lock file first, so a
# dependency change fails here instead of silently updating fuzz/Cargo.lock.
(cd fuzz && cargo fetch --locked)
(cd fuzz && cargo fuzz build --sanitizer none -O)
cargo build --locked --release --example fuzz_corpus
for t in "${TARGETS[@]}"; do
    mkdir -p "fuzz/corpus-run/$t" "fuzz/artifacts/$t"
    before=$(ls "fuzz/artifacts/$t" | wc -l)
    echo "== $t: ${SECS}s"
    start=$(date +%s)
    (cd fuzz && cargo fuzz run --sanitizer none -O "$t" "corpus-run/$t" "corpus/$t" -- \
        -max_total_time="$SECS" -timeout="$TMO" -rss_limit_mb="$RSS" -malloc_limit_mb="$RSS" \
        -fork="$JOBS" -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1) >"$WORK/$t.log" 2>&1 || true
    end=$(date +%s)
    echo "$((end - start))" >"$WORK/$t.seconds"
    ls "fuzz/artifacts/$t" | tail -n +"$((before + 1))" >"$WORK/$t.new_artifacts" || true
    ./target/release/examples/fuzz_corpus stats "$t" "fuzz/corpus/$t" "fuzz/corpus-run/$t" \
        >"$WORK/$t.stats.json" 2>"$WORK/$t.stats.err" || true
    for a in $(cat "$WORK/$t.new_artifacts"); do
        ./target/release/examples/fuzz_corpus show "$t" "fuzz/artifacts/$t/$a" \
            >"$WORK/$t.$a.input.txt" 2>&1 || true
    done
    tail -n 3 "$WORK/$t.log"
done
python3 scripts/fuzz_report.py "$WORK" "$STAMP" "$SECS" "${TARGETS[@]}"
# latest.* is the last campaign over every target (a run of some targets keeps only its
# own campaign-* report).
if [ $# -eq 0 ]; then
    cp "fuzz/reports/campaign-$STAMP.md" fuzz/reports/latest.md
    cp "fuzz/reports/campaign-$STAMP.json" fuzz/reports/latest.json
fi
rm -rf "$WORK"
echo "report: fuzz/reports/campaign-$STAMP.md"
