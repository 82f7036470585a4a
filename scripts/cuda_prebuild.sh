#!/usr/bin/env bash
# Builds, on a machine with Rust, the two programs that scripts/cuda_device_check.sh
# runs on a GPU machine without one, into DIR (default .devbin):
#   DIR/cuda-tests  the tools crate's `cuda` test binary (device tests included)
#   DIR/cuda_bench  the timing / comparison example
# cudarc loads libcuda and libnvrtc at run time, so no CUDA toolkit is needed here.
# Both are stripped (the pair is about 6 MB) so that they travel cheaply.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-.devbin}"
mkdir -p "$dir"
test_bin=$(cargo test --locked --release -p polyattn-tools --features cuda --test cuda --no-run \
  --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "cuda":
        print(m["executable"])')
cargo build --locked --release -p polyattn-tools --features cuda --example cuda_bench
install -m 755 "$test_bin" "$dir/cuda-tests"
install -m 755 "${CARGO_TARGET_DIR:-target}/release/examples/cuda_bench" "$dir/cuda_bench"
strip "$dir/cuda-tests" "$dir/cuda_bench" 2>/dev/null || true
git rev-parse HEAD > "$dir/revision" 2>/dev/null || echo unknown > "$dir/revision"
git diff --quiet HEAD 2>/dev/null || sed -i 's/$/-dirty/' "$dir/revision"
ls -l "$dir"
