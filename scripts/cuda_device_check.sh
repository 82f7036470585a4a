#!/usr/bin/env bash
# One-call check of the CUDA f16 path on a machine with a GPU (issue #7):
#   1. the device, driver and NVRTC as the system sees them;
#   2. build with --features cuda, run the CUDA tests (device tests included:
#      NVRTC compiles the kernels for this device's compute capability);
#   3. the timing example (exact fwd/bwd TFLOP/s, poly, certified errors);
#   4. PyTorch SDPA (f16) on the same exact shapes, if torch with CUDA is importable.
# Everything is logged to ${OUT:-results/cuda}/. Exit status: that of the tests.
set -u
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-results/cuda}"
mkdir -p "$OUT_DIR" results/cuda
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
QUICK="${QUICK:-}"

{
  echo "== nvidia-smi"; nvidia-smi || echo "nvidia-smi not available"
  echo "== libraries"; ldconfig -p 2>/dev/null | grep -E "libcuda\.so|libnvrtc" || echo "libcuda/libnvrtc not in ldconfig cache"
  echo "== CUDA_PATH=${CUDA_PATH:-unset}"; ls -d /usr/local/cuda*/include 2>/dev/null
} 2>&1 | tee "$OUT_DIR/environment.txt"

cargo build --locked --release -p polyattn-tools --features cuda --examples 2>&1 | tail -5 | tee "$OUT_DIR/build.txt"
cargo test --locked --release -p polyattn-tools --features cuda --test cuda -- --nocapture --test-threads 1 2>&1 | tee "$OUT_DIR/tests.txt"
status=${PIPESTATUS[0]}

if [ -n "$QUICK" ]; then
  cargo run --locked --release -p polyattn-tools --features cuda --example cuda_bench -- --quick 2>&1 | tee "$OUT_DIR/bench.txt"
else
  cargo run --locked --release -p polyattn-tools --features cuda --example cuda_bench 2>&1 | tee "$OUT_DIR/bench.txt"
fi
cp results/cuda/bench.json "$OUT_DIR/" 2>/dev/null || true

PY="${PYTHON:-python3}"
if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  "$PY" - "$QUICK" <<'PYEOF' 2>&1 | tee "$OUT_DIR/torch_sdpa.txt"
import sys, torch, torch.nn.functional as F
quick = bool(sys.argv[1]) if len(sys.argv) > 1 else False
dev = "cuda"
print("torch", torch.__version__, torch.cuda.get_device_name(0))
print("| d | n | mask | heads | fwd ms | fwd TFLOP/s | bwd ms | bwd TFLOP/s |")
print("|--:|--:|---|--:|--:|--:|--:|--:|")
ns = [4096] if quick else [4096, 8192, 16384, 32768, 65536]
def timed(fn, reps=5):
    fn(); torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); fn(); e.record(); torch.cuda.synchronize()
        ts.append(s.elapsed_time(e) / 1e3)
    return sorted(ts)[len(ts) // 2]
for d in (64, 128):
    for n in ns:
        for causal in (False, True):
            heads = max(1, min(16, 65536 // n))
            q, k, v = (torch.randn(1, heads, n, d, device=dev, dtype=torch.float16, requires_grad=True) for _ in range(3))
            g = torch.randn(1, heads, n, d, device=dev, dtype=torch.float16)
            fwd = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            t_f = timed(fwd)
            o = fwd()
            t_b = timed(lambda: torch.autograd.grad(o, (q, k, v), g, retain_graph=True))
            flops = 4.0 * n * n * d * heads * (0.5 if causal else 1.0)
            print(f"| {d} | {n} | {'causal' if causal else 'none'} | {heads} | {t_f*1e3:.2f} | {flops/t_f/1e12:.1f} | {t_b*1e3:.2f} | {2.5*flops/t_b/1e12:.1f} |")
PYEOF
else
  echo "torch with CUDA not importable: SDPA comparison skipped" | tee "$OUT_DIR/torch_sdpa.txt"
fi
exit "$status"
