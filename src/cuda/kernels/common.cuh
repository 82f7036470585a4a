// Shared helpers of the polyattn CUDA kernels (docs/math.md §1.2 masks; f16 storage).
//
// f16 values are stored as `unsigned short` and converted with the PTX `cvt`
// instructions (round to nearest even), so no kernel needs <cuda_fp16.h>: a missing
// toolkit header cannot break the NVRTC compilation. The host prepends this file to
// every kernel source (NVRTC sees one translation unit; nothing is #included).
//
// Mask codes (src/cuda/launch.rs `mask_code`, src/attention/mod.rs `Mask`):
// 0 = none, 1 = causal top-left (j <= i), 2 = causal bottom-right (j <= i + n_k - n_q).

typedef unsigned short half_t;

#define NEG_INF_F (__int_as_float((int)0xff800000))

__device__ __forceinline__ float h2f(half_t h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ half_t f2h(float f) {
    half_t h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// The f32 value of f's nearest f16 (what a tensor-core operand would hold).
__device__ __forceinline__ float round_h(float f) { return h2f(f2h(f)); }

// One past the last key that query i sees (Mask::key_end).
__device__ __forceinline__ int key_end(int mask, int i, int n_q, int n_k) {
    if (mask == 0) return n_k;
    if (mask == 1) return (i + 1 < n_k) ? i + 1 : n_k;
    long long e = (long long)i + 1 + (long long)n_k - (long long)n_q;
    if (e < 0) e = 0;
    return (e < (long long)n_k) ? (int)e : n_k;
}

// The first query that sees key j (Mask::first_query).
__device__ __forceinline__ int first_query(int mask, int j, int n_q, int n_k) {
    if (mask == 0) return 0;
    if (mask == 1) return (j < n_q) ? j : n_q;
    long long f = (long long)j + (long long)n_q - (long long)n_k;
    if (f < 0) f = 0;
    return (f < (long long)n_q) ? (int)f : n_q;
}

// delta_r = sum_c dO_rc O_rc in f32 (fmaf, c ascending), for every row r of every head
// (docs/math.md §2.3: delta = rowsum(dO o O)); O is the f16-stored forward output.
extern "C" __global__ void row_delta(const half_t* __restrict__ d_o,
                                     const half_t* __restrict__ o,
                                     float* __restrict__ delta,
                                     long long rows, int d_v) {
    long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    float acc = 0.0f;
    for (int c = 0; c < d_v; ++c) {
        acc = fmaf(h2f(d_o[r * d_v + c]), h2f(o[r * d_v + c]), acc);
    }
    delta[r] = acc;
}

// out = f16(scale * y), elementwise.
extern "C" __global__ void scale_to_half(const float* __restrict__ y, long long len,
                                         float scale, half_t* __restrict__ out) {
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= len) return;
    out[t] = f2h(scale * y[t]);
}
