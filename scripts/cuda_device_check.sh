#!/usr/bin/env bash
# The f16 CUDA path on a GPU machine, in one call (docs/cuda.md):
#   1. the machine: nvidia-smi, the toolkit, where libnvrtc is; the loader path set so
#      that cudarc finds libcuda and libnvrtc (an unversioned libnvrtc.so link is made
#      in a scratch folder when the toolkit ships only libnvrtc.so.13);
#   2. every CUDA test (device tests included: NVRTC compiles the kernels for this
#      device, then the flash rule, the MPFR enclosures, the polynomial bounds);
#   3. PyTorch's SDPA backends: outputs of one causal problem in f16 and bf16 for
#      `polyattn certify --candidate` (scripts/cuda_torch.py dump), then timings;
#   4. cuda_bench: device vs emulation bit by bit, exact kernel timings with certified
#      rows, the polynomial engine at long n (each timed section under BUDGET_S).
# Every stage has its own time limit; a stage that fails or overruns is logged and the
# next one runs. Results: $OUT/log.txt (everything printed), $OUT/results.tar (bench.json,
# torch_sdpa.json, one log per stage, refreshed after each stage), $OUT/dump_f16.tar and
# $OUT/dump_bf16.tar (the tensors to certify). $OUT defaults to results/cuda.
#
#   scripts/cuda_device_check.sh                  # builds with cargo first
#   scripts/cuda_device_check.sh --prebuilt DIR   # runs DIR/cuda-tests, DIR/cuda_bench
#                                                 # (made by scripts/cuda_prebuild.sh DIR)
# Environment: QUICK=1 (smallest sizes), BUDGET_S (default 90), POLYATTN_REVISION,
# BENCH_ARGS / TORCH_ARGS (extra options of cuda_bench / cuda_torch.py time),
# SKIP (stages to leave out, e.g. "tests torch_dump").
# Exit status: that of the tests.
set -u
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-results/cuda}"
mkdir -p "$OUT_DIR"
WORK="$(mktemp -d /tmp/polyattn-cuda.XXXXXX)"
LOG="$OUT_DIR/log.txt"
: > "$LOG"
BUDGET_S="${BUDGET_S:-90}"
QUICK="${QUICK:-}"
say() { echo "$*" | tee -a "$LOG"; }
pack() { tar -C "$WORK" -cf "$OUT_DIR/results.tar" --exclude=dump --exclude=lib . 2>/dev/null || true; }
# stage NAME SECONDS CMD...: runs CMD under a time limit, its output to the log and to
# $WORK/NAME.txt; returns CMD's status (124 when it ran out of time).
stage() {
  local name=$1 limit=$2
  shift 2
  case " ${SKIP:-} " in *" $name "*) say "== $name: skipped (SKIP)"; return 0 ;; esac
  say "== $name (limit ${limit} s): $*"
  local t0=$SECONDS
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$WORK/$name.txt" >> "$LOG"
  local rc=${PIPESTATUS[0]}
  say "== $name: exit $rc after $((SECONDS - t0)) s"
  pack
  return "$rc"
}

BIN=""
if [ "${1:-}" = "--prebuilt" ]; then
  BIN="${2:?--prebuilt needs a folder}"
  if [ -z "${POLYATTN_REVISION:-}" ] && [ -f "$BIN/revision" ]; then
    POLYATTN_REVISION="$(cat "$BIN/revision")"
  fi
else
  scripts/cuda_prebuild.sh "$WORK/bin" >/dev/null || { say "build failed"; exit 1; }
  BIN="$WORK/bin"
  POLYATTN_REVISION="${POLYATTN_REVISION:-$(cat "$BIN/revision")}"
fi
export POLYATTN_REVISION="${POLYATTN_REVISION:-unknown}"
say "revision $POLYATTN_REVISION, started $(date -u +%FT%TZ)"

# 1. The machine and the loader path.
mkdir -p "$WORK/lib"
nvrtc=""
for f in $(ldconfig -p 2>/dev/null | awk '/libnvrtc\.so/ {print $NF}') \
  /usr/local/cuda/lib64/libnvrtc.so* /usr/local/cuda*/targets/*/lib/libnvrtc.so* \
  /usr/local/cuda*/lib64/libnvrtc.so*; do
  case "$f" in *builtins*|*alt*) continue ;; esac
  if [ -e "$f" ]; then nvrtc="$f"; break; fi
done
if [ -z "$nvrtc" ]; then
  nvrtc=$(find /usr /opt -name 'libnvrtc.so*' -not -name '*builtins*' -not -name '*alt*' 2>/dev/null | sort | head -1)
fi
if [ -n "$nvrtc" ]; then
  ln -sf "$(readlink -f "$nvrtc")" "$WORK/lib/libnvrtc.so"
  export LD_LIBRARY_PATH="$WORK/lib:$(dirname "$(readlink -f "$nvrtc")")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
machine() {
  nvidia-smi || echo "nvidia-smi failed"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
  command -v nvcc >/dev/null && nvcc --version | tail -2
  echo "libnvrtc: ${nvrtc:-not found}; LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
  ldconfig -p 2>/dev/null | grep -E "libcuda\.so" || echo "libcuda not in the ldconfig cache"
  grep -m1 "model name" /proc/cpuinfo; nproc
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" || true
}
export -f machine
export nvrtc
stage machine 60 bash -c machine

# 2. The tests, one thread: each device test prints what it measured.
stage tests 180 "$BIN/cuda-tests" --test-threads 1 --nocapture
status=$?
if grep -q "skipped: no CUDA device" "$WORK/tests.txt" 2>/dev/null; then
  say "WARNING: the device tests were skipped (no device found); see tests.txt"
fi

# 3. PyTorch: outputs to certify (small), then timings.
stage torch_dump 120 python3 scripts/cuda_torch.py dump --out "$WORK/dump"
for dn in f16 bf16; do
  ls "$WORK/dump/"*"$dn"* >/dev/null 2>&1 &&
    tar -C "$WORK/dump" -cf "$OUT_DIR/dump_$dn.tar" meta.json $(cd "$WORK/dump" && ls | grep "_$dn[._]")
done
if [ -n "$QUICK" ]; then tq=--quick; else tq=; fi
stage torch_time $((BUDGET_S + 60)) python3 scripts/cuda_torch.py time --out "$WORK" --budget-s "$BUDGET_S" $tq ${TORCH_ARGS:-}

# 4. The bench: compare, exact, poly (each timed section within BUDGET_S).
if [ -n "$QUICK" ]; then bq=--quick; else bq=; fi
stage bench $((2 * BUDGET_S + 90)) "$BIN/cuda_bench" --budget-s "$BUDGET_S" --out "$WORK" $bq ${BENCH_ARGS:-}

say "finished $(date -u +%FT%TZ); tests exit $status"
pack
exit "$status"
