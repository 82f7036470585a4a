#!/usr/bin/env bash
# Host-compiler syntax and type check of the CUDA kernels (src/cuda/kernels), for
# machines without nvcc/NVRTC: CUDA keywords become empty macros, the two inline-PTX
# f16 conversions become casts, and g++ -fsyntax-only -Wall -Wextra reads each kernel
# file as C++ with common.cuh prepended (as the host does for NVRTC). It checks
# spelling, declarations and types, not CUDA semantics: only NVRTC on a device
# machine (scripts/cuda_device_check.sh) checks those.
set -euo pipefail
cd "$(dirname "$0")/.."
S=src/cuda/kernels
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cat > "$T/prelude.h" <<'H'
#include <cmath>
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__
#define __restrict__ __restrict
struct Dim3 { unsigned x, y, z; };
static Dim3 blockIdx, threadIdx, blockDim;
inline void __syncthreads() {}
inline float __int_as_float(int x) { float f; __builtin_memcpy(&f, &x, 4); return f; }
H
sed -e 's/asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));/f = (float)h;/' \
    -e 's/asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));/h = (half_t)f;/' \
    "$S/common.cuh" > "$T/common_host.h"
if grep -q 'asm(' "$T/common_host.h"; then echo "asm replacement failed"; exit 1; fi
for f in exact_forward exact_backward poly; do
  for dims in "64 64" "128 32" "8 8"; do
    set -- $dims
    {
      echo '#include "prelude.h"'
      echo "#define HEAD_D $1"; echo "#define HEAD_DV $2"
      echo '#define BLOCK_Q 64'; echo '#define BLOCK_K 32'; echo '#define BLOCK_Q2 32'; echo '#define BLOCK_KV 64'
      echo '#include "common_host.h"'
      cat "$S/$f.cu"
    } > "$T/$f.cpp"
    g++ -std=c++17 -fsyntax-only -Wall -Wextra -Werror -Wno-unused-parameter -I"$T" "$T/$f.cpp"
  done
  echo "$f.cu: host syntax check ok"
done
