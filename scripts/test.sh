#!/usr/bin/env bash
# The test command: installs what is missing, then runs every test of the workspace in
# release mode (the numeric tests are heavy), the benches once each as a smoke test,
# the doc tests, and the Python package's pytest suite (scripts/python_test.sh).
# PROPTEST_CASES bounds the property tests (default 24 here).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PROPTEST_CASES="${PROPTEST_CASES:-24}"
export POLYATTN_BENCH_MAX_LOG2N="${POLYATTN_BENCH_MAX_LOG2N:-11}"
cargo test --locked --release --workspace --all-targets
cargo test --locked --release --workspace --doc
# The CUDA path (feature `cuda`) builds without a toolkit or GPU; its tests run the
# kernels' CPU emulation and report the device tests as skipped where no GPU exists.
cargo test --locked --release -p polyattn-tools --features cuda --test cuda
# The exact engine's lower SIMD levels (the run-time dispatch picks the best one; these
# force AVX2+FMA and plain scalar code through the same enclosure and determinism tests).
POLYATTN_SIMD=avx2 cargo test --locked --release -p polyattn-tools --test exact_enclosure --test exact_properties
POLYATTN_SIMD=scalar cargo test --locked --release -p polyattn-tools --test exact_enclosure --test exact_properties
# The vectorised exp against f64 exp at every f32 in [-104, 0] (about a minute; ignored
# in plain `cargo test` so local runs stay quick, run here so CI holds the 1 ulp claim).
cargo test --locked --release -p polyattn --lib exhaustive -- --ignored
# The Python package (python/, PyO3 + maturin): a venv with maturin, numpy, pytest and
# ml_dtypes, the package built in release mode and installed, then pytest.
bash scripts/python_test.sh
