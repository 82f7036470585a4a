// Exact attention backward, FlashAttention-2 style, deterministic (docs/math.md §2.3;
// src/cuda/exact.rs). Constants: HEAD_D, HEAD_DV, BLOCK_Q, BLOCK_K (dQ pass, as in
// the forward), BLOCK_Q2 (query rows per shared tile of the dK/dV pass), BLOCK_KV
// (key rows per block of the dK/dV pass). delta = rowsum(dO o O) comes from
// `row_delta` (common.cuh). Per visible pair (i, j), recomputed from lse:
//
//   s = tau * fma-chain_l(q_il * k_jl);  p = expf(s - lse_i)
//   dp = fma-chain_c(dO_ic * v_jc);  ds = p * (dp - delta_i)
//   dV_j += f16(p) dO_i;  dK_j += f16(ds) q_i;  dQ_i += f16(ds) k_j   (f32 fmaf)
//   dK = f16(tau dK), dQ = f16(tau dQ), dV = f16(dV)
//
// Pass 1 (exact_backward_dkdv): one thread per key row j, query tiles ascending from
// the first tile that sees the block (causal: earlier tiles skipped). Pass 2
// (exact_backward_dq): one thread per query row, key tiles ascending: a separate pass
// instead of atomics, so every result is bitwise reproducible.

extern "C" __global__ void exact_backward_dkdv(const half_t* __restrict__ q,
                                               const half_t* __restrict__ k,
                                               const half_t* __restrict__ v,
                                               const half_t* __restrict__ d_o,
                                               const float* __restrict__ lse,
                                               const float* __restrict__ delta,
                                               half_t* __restrict__ dk,
                                               half_t* __restrict__ dv,
                                               int n_q, int n_k, float tau, int mask) {
    __shared__ half_t qs[BLOCK_Q2 * HEAD_D];
    __shared__ half_t gs[BLOCK_Q2 * HEAD_DV];
    __shared__ float ls[BLOCK_Q2];
    __shared__ float dls[BLOCK_Q2];
    const int head = blockIdx.y;
    const int j0 = blockIdx.x * BLOCK_KV;
    const int j = j0 + threadIdx.x;
    const bool active = j < n_k;
    const unsigned long long krow = (unsigned long long)head * n_k + (active ? j : 0);
    const half_t* qh = q + (unsigned long long)head * n_q * HEAD_D;
    const half_t* gh = d_o + (unsigned long long)head * n_q * HEAD_DV;
    const float* lh = lse + (unsigned long long)head * n_q;
    const float* dh = delta + (unsigned long long)head * n_q;
    float kr[HEAD_D], dkr[HEAD_D];
    float vr[HEAD_DV], dvr[HEAD_DV];
    for (int l = 0; l < HEAD_D; ++l) {
        kr[l] = active ? h2f(k[krow * HEAD_D + l]) : 0.0f;
        dkr[l] = 0.0f;
    }
    for (int c = 0; c < HEAD_DV; ++c) {
        vr[c] = active ? h2f(v[krow * HEAD_DV + c]) : 0.0f;
        dvr[c] = 0.0f;
    }
    const int fq = active ? first_query(mask, j, n_q, n_k) : n_q;
    const int fq_block = first_query(mask, j0, n_q, n_k);  // non-decreasing in j
    for (int i0 = (fq_block / BLOCK_Q2) * BLOCK_Q2; i0 < n_q; i0 += BLOCK_Q2) {
        __syncthreads();
        for (int t = threadIdx.x; t < BLOCK_Q2 * HEAD_D; t += blockDim.x) {
            const int i = i0 + t / HEAD_D;
            qs[t] = (i < n_q) ? qh[(unsigned long long)i * HEAD_D + t % HEAD_D] : (half_t)0;
        }
        for (int t = threadIdx.x; t < BLOCK_Q2 * HEAD_DV; t += blockDim.x) {
            const int i = i0 + t / HEAD_DV;
            gs[t] = (i < n_q) ? gh[(unsigned long long)i * HEAD_DV + t % HEAD_DV] : (half_t)0;
        }
        for (int t = threadIdx.x; t < BLOCK_Q2; t += blockDim.x) {
            const int i = i0 + t;
            ls[t] = (i < n_q) ? lh[i] : 0.0f;
            dls[t] = (i < n_q) ? dh[i] : 0.0f;
        }
        __syncthreads();
        for (int ii = 0; ii < BLOCK_Q2; ++ii) {
            const int i = i0 + ii;
            if (i >= n_q || i < fq) continue;
            float dot = 0.0f;
            for (int l = 0; l < HEAD_D; ++l) dot = fmaf(h2f(qs[ii * HEAD_D + l]), kr[l], dot);
            const float s = tau * dot;
            const float p = expf(s - ls[ii]);
            const float ph = round_h(p);
            float dp = 0.0f;
            for (int c = 0; c < HEAD_DV; ++c) {
                const float g = h2f(gs[ii * HEAD_DV + c]);
                dvr[c] = fmaf(ph, g, dvr[c]);
                dp = fmaf(g, vr[c], dp);
            }
            const float ds = p * (dp - dls[ii]);
            const float dsh = round_h(ds);
            for (int l = 0; l < HEAD_D; ++l) dkr[l] = fmaf(dsh, h2f(qs[ii * HEAD_D + l]), dkr[l]);
        }
    }
    if (!active) return;
    for (int l = 0; l < HEAD_D; ++l) dk[krow * HEAD_D + l] = f2h(tau * dkr[l]);
    for (int c = 0; c < HEAD_DV; ++c) dv[krow * HEAD_DV + c] = f2h(dvr[c]);
}

extern "C" __global__ void exact_backward_dq(const half_t* __restrict__ q,
                                             const half_t* __restrict__ k,
                                             const half_t* __restrict__ v,
                                             const half_t* __restrict__ d_o,
                                             const float* __restrict__ lse,
                                             const float* __restrict__ delta,
                                             half_t* __restrict__ dq,
                                             int n_q, int n_k, float tau, int mask) {
    __shared__ half_t ks[BLOCK_K * HEAD_D];
    __shared__ half_t vs[BLOCK_K * HEAD_DV];
    const int head = blockIdx.y;
    const int i0 = blockIdx.x * BLOCK_Q;
    const int i = i0 + threadIdx.x;
    const bool active = i < n_q;
    const unsigned long long row = (unsigned long long)head * n_q + (active ? i : 0);
    const half_t* kh = k + (unsigned long long)head * n_k * HEAD_D;
    const half_t* vh = v + (unsigned long long)head * n_k * HEAD_DV;
    float qr[HEAD_D], dqr[HEAD_D];
    float gr[HEAD_DV];
    for (int l = 0; l < HEAD_D; ++l) {
        qr[l] = active ? h2f(q[row * HEAD_D + l]) : 0.0f;
        dqr[l] = 0.0f;
    }
    for (int c = 0; c < HEAD_DV; ++c) gr[c] = active ? h2f(d_o[row * HEAD_DV + c]) : 0.0f;
    const float li = active ? lse[row] : 0.0f;
    const float di = active ? delta[row] : 0.0f;
    const int ke = active ? key_end(mask, i, n_q, n_k) : 0;
    const int last = ((i0 + BLOCK_Q < n_q) ? i0 + BLOCK_Q : n_q) - 1;
    const int ke_block = key_end(mask, last, n_q, n_k);
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
        for (int jj = 0; jj < cnt; ++jj) {
            float dot = 0.0f;
            for (int l = 0; l < HEAD_D; ++l) dot = fmaf(qr[l], h2f(ks[jj * HEAD_D + l]), dot);
            const float s = tau * dot;
            const float p = expf(s - li);
            float dp = 0.0f;
            for (int c = 0; c < HEAD_DV; ++c) dp = fmaf(gr[c], h2f(vs[jj * HEAD_DV + c]), dp);
            const float ds = p * (dp - di);
            const float dsh = round_h(ds);
            for (int l = 0; l < HEAD_D; ++l) dqr[l] = fmaf(dsh, h2f(ks[jj * HEAD_D + l]), dqr[l]);
        }
    }
    if (!active) return;
    for (int l = 0; l < HEAD_D; ++l) dq[row * HEAD_D + l] = f2h(tau * dqr[l]);
}
