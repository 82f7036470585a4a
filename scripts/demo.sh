#!/usr/bin/env bash
# The main job on the embedded default: installs what is missing, builds in release,
# runs `polyattn demo` (extra arguments are passed on).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo run --locked --release --quiet -- demo "$@"
