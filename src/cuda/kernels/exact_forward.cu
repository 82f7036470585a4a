// Exact attention forward, f16 storage, f32 arithmetic (docs/math.md §2.2;
// src/cuda/exact.rs).
//
// Compile-time constants (NVRTC -D options from src/cuda/launch.rs): HEAD_D, HEAD_DV,
// BLOCK_Q (threads per block = query rows per block), BLOCK_K (keys per shared tile).
// Grid: (ceil(n_q / BLOCK_Q), heads). One thread owns one query row i:
//
//   s_j   = tau * fma-chain_l(q_il * k_jl)                        (f32, l ascending)
//   per key tile [j0, j0 + BLOCK_K) clipped to key_end(i):
//     m'  = max(m, max_j s_j);  c = expf(m - m');  l = l c;  acc = acc c
//     for j ascending: p = expf(s_j - m'); l += p; acc_c = fmaf(f16(p), v_jc, acc_c)
//   O_i = f16(acc / l), lse_i = m + logf(l)   (l = 0: O_i = 0, lse_i = -inf)
//
// P is rounded to f16 before the P V product, as a tensor-core version must; the
// row sum l uses the unrounded f32 p (FlashAttention-2's arithmetic). Causal masks:
// a block loads only the key tiles its last row can see (masked tiles are skipped),
// and rows stop at their own key_end. src/cuda/emulate.rs repeats this arithmetic
// operation for operation.

extern "C" __global__ void exact_forward(const half_t* __restrict__ q,
                                         const half_t* __restrict__ k,
                                         const half_t* __restrict__ v,
                                         half_t* __restrict__ o,
                                         float* __restrict__ lse,
                                         int n_q, int n_k, float tau, int mask) {
    __shared__ half_t ks[BLOCK_K * HEAD_D];
    __shared__ half_t vs[BLOCK_K * HEAD_DV];
    const int head = blockIdx.y;
    const int i0 = blockIdx.x * BLOCK_Q;
    const int i = i0 + threadIdx.x;
    const bool active = i < n_q;
    const half_t* kh = k + (unsigned long long)head * n_k * HEAD_D;
    const half_t* vh = v + (unsigned long long)head * n_k * HEAD_DV;
    float qr[HEAD_D];
    float acc[HEAD_DV];
    float s[BLOCK_K];
    const unsigned long long row = (unsigned long long)head * n_q + (active ? i : 0);
    for (int l = 0; l < HEAD_D; ++l) qr[l] = active ? h2f(q[row * HEAD_D + l]) : 0.0f;
    for (int c = 0; c < HEAD_DV; ++c) acc[c] = 0.0f;
    float m = NEG_INF_F;
    float lsum = 0.0f;
    const int ke = active ? key_end(mask, i, n_q, n_k) : 0;
    const int last = ((i0 + BLOCK_Q < n_q) ? i0 + BLOCK_Q : n_q) - 1;
    const int ke_block = key_end(mask, last, n_q, n_k);  // non-decreasing in i
    for (int j0 = 0; j0 < ke_block; j0 += BLOCK_K) {
        __syncthreads();
        for (int t = threadIdx.x; t < BLOCK_K * HEAD_D; t += blockDim.x) {
            const int j = j0 + t / HEAD_D;
            ks[t] = (j < n_k) ? kh[(unsigned long long)j * HEAD_D + t % HEAD_D] : (half_t)0;
        }
        for (int t = threadIdx.x; t < BLOCK_K * HEAD_DV; t += blockDim.x) {
            const int j = j0 + t / HEAD_DV;
            vs[t] = (j < n_k) ? vh[(unsigned long long)j * HEAD_DV + t % HEAD_DV] : (half_t)0;
        }
        __syncthreads();
        int cnt = ke - j0;
        if (cnt > BLOCK_K) cnt = BLOCK_K;
        if (cnt <= 0) continue;
        float mt = NEG_INF_F;
        for (int jj = 0; jj < cnt; ++jj) {
            float dot = 0.0f;
            for (int l = 0; l < HEAD_D; ++l) dot = fmaf(qr[l], h2f(ks[jj * HEAD_D + l]), dot);
            s[jj] = tau * dot;
            mt = fmaxf(mt, s[jj]);
        }
        const float mn = fmaxf(m, mt);
        const float corr = expf(m - mn);
        lsum = lsum * corr;
        for (int c = 0; c < HEAD_DV; ++c) acc[c] = acc[c] * corr;
        for (int jj = 0; jj < cnt; ++jj) {
            const float p = expf(s[jj] - mn);
            lsum = lsum + p;
            const float ph = round_h(p);
            for (int c = 0; c < HEAD_DV; ++c) acc[c] = fmaf(ph, h2f(vs[jj * HEAD_DV + c]), acc[c]);
        }
        m = mn;
    }
    if (!active) return;
    for (int c = 0; c < HEAD_DV; ++c) {
        o[row * HEAD_DV + c] = f2h(lsum > 0.0f ? acc[c] / lsum : 0.0f);
    }
    lse[row] = lsum > 0.0f ? m + logf(lsum) : NEG_INF_F;
}
