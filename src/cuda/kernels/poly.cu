// Polynomial attention kernels (docs/math.md §3.3-§3.5; src/cuda/poly.rs). One head per
// launch (each head has its own plan: degree, rank, scaling).
//
// Features (docs/math.md §3.3, with the per-degree scaling of its last paragraph):
//   poly_features: out[row, m] = f16(coef[m] * prod_{t on m's chain} (scale * x[row, var[t]]))
// where m's chain is m, parent[m], parent[parent[m]], ... > 0 (the Monomials table;
// the product runs from m towards the root, one f32 rounding per factor). Query side:
// coef[m] = c_deg * (deg!/alpha!) * s_deg; key side: coef[m] = 1 / s_deg, with s_t a
// power of two chosen on the host so both sides stay inside f16's range.
//
// Contractions: every product of the low-rank algorithm is one of
//   prefix  (dir 0): Y_t = sum_{s < key_end(t)}       (F_t . G_s) X_s   (t queries, s keys)
//   suffix  (dir 1): Y_t = sum_{s >= first_query(t)}  (F_t . G_s) X_s   (t keys, s queries)
// with row factors of Kronecker form F_t = alpha_t (A_t (x) [B_t, beta_t])
// (A: f16 features, width wa, row stride lda; B: f16, width e (may be 0); alpha, beta:
// f32 per row) and payload X_s = [x_s, 1 if ones] (x: f16, width p). The sources are
// cut into chunks of `chunk` rows: poly_chunk_states sums G_s^T X_s per chunk (f32),
// poly_scan_states turns them into exclusive prefix (dir 0; slot nch = total) or
// inclusive suffix (dir 1; slot nch = 0) states, and poly_apply adds the state of
// the first chunk boundary to the rows inside the chunk directly (docs/math.md §3.4's
// chunked form). Non-causal problems use the same kernels (key_end = n_k).

__device__ __forceinline__ float factor_elem(const half_t* __restrict__ a, int lda,
                                             const half_t* __restrict__ b, int e,
                                             const float* __restrict__ alpha,
                                             const float* __restrict__ beta,
                                             long long row, int ai, int bi) {
    const float fa = alpha[row] * h2f(a[row * lda + ai]);
    const float bv = (bi < e) ? h2f(b[row * e + bi]) : beta[row];
    return fa * bv;
}

extern "C" __global__ void poly_features(const half_t* __restrict__ x, int n, int d,
                                         float scale, const int* __restrict__ parent,
                                         const int* __restrict__ var,
                                         const float* __restrict__ coef, int r,
                                         half_t* __restrict__ out) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)n * r) return;
    const long long row = idx / r;
    const int m = (int)(idx % r);
    float val = 1.0f;
    for (int t = m; t > 0; t = parent[t]) {
        const float xv = scale * h2f(x[row * d + var[t]]);
        val = val * xv;
    }
    out[idx] = f2h(val * coef[m]);
}

extern "C" __global__ void poly_chunk_states(const half_t* __restrict__ a, int lda, int wa,
                                             const half_t* __restrict__ b, int e,
                                             const float* __restrict__ alpha,
                                             const float* __restrict__ beta,
                                             const half_t* __restrict__ x, int p, int ones,
                                             int n_src, int chunk,
                                             float* __restrict__ states) {
    const int P = p + ones;
    const long long elems = (long long)wa * (e + 1) * P;
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= elems) return;
    const int c = blockIdx.y;
    const int ab = (int)(idx / P);
    const int pp = (int)(idx % P);
    const int ai = ab / (e + 1);
    const int bi = ab % (e + 1);
    const long long s0 = (long long)c * chunk;
    long long s1 = s0 + chunk;
    if (s1 > n_src) s1 = n_src;
    float acc = 0.0f;
    for (long long s = s0; s < s1; ++s) {
        const float f = factor_elem(a, lda, b, e, alpha, beta, s, ai, bi);
        const float xv = (pp < p) ? h2f(x[s * p + pp]) : 1.0f;
        acc = fmaf(f, xv, acc);
    }
    states[(long long)c * elems + idx] = acc;
}

extern "C" __global__ void poly_scan_states(float* __restrict__ states, int nch,
                                            long long elems, int dir) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= elems) return;
    float run = 0.0f;
    if (dir == 0) {
        for (int c = 0; c < nch; ++c) {
            const float t = states[(long long)c * elems + idx];
            states[(long long)c * elems + idx] = run;
            run = run + t;
        }
        states[(long long)nch * elems + idx] = run;
    } else {
        states[(long long)nch * elems + idx] = 0.0f;
        for (int c = nch - 1; c >= 0; --c) {
            run = run + states[(long long)c * elems + idx];
            states[(long long)c * elems + idx] = run;
        }
    }
}

// One block per target row; dynamic shared memory: `chunk` floats (the direct dots).
extern "C" __global__ void poly_apply(int dir, int mask, int n_q, int n_k,
                                      const half_t* __restrict__ ta, int tlda, int wa,
                                      const half_t* __restrict__ tb, int e,
                                      const float* __restrict__ talpha,
                                      const float* __restrict__ tbeta,
                                      const half_t* __restrict__ sa, int slda,
                                      const half_t* __restrict__ sb,
                                      const float* __restrict__ salpha,
                                      const float* __restrict__ sbeta,
                                      const half_t* __restrict__ x, int p, int ones,
                                      const float* __restrict__ states, int chunk,
                                      float* __restrict__ y) {
    extern __shared__ float dots[];
    const long long t = blockIdx.x;
    const int n_s = (dir == 0) ? n_k : n_q;
    int c, dlo, dhi;
    if (dir == 0) {
        const int hi = key_end(mask, (int)t, n_q, n_k);
        c = hi / chunk;
        dlo = c * chunk;
        dhi = hi;
    } else {
        const int lo = first_query(mask, (int)t, n_q, n_k);
        c = (lo + chunk - 1) / chunk;
        dlo = lo;
        dhi = (c * chunk < n_s) ? c * chunk : n_s;
    }
    const int P = p + ones;
    const long long W = (long long)wa * (e + 1);
    for (int s = dlo + threadIdx.x; s < dhi; s += blockDim.x) {
        float da = 0.0f;
        for (int ai = 0; ai < wa; ++ai) {
            da = fmaf(h2f(ta[t * tlda + ai]), h2f(sa[(long long)s * slda + ai]), da);
        }
        float db = 0.0f;
        for (int bi = 0; bi < e; ++bi) {
            db = fmaf(h2f(tb[t * e + bi]), h2f(sb[(long long)s * e + bi]), db);
        }
        db = fmaf(tbeta[t], sbeta[s], db);
        dots[s - dlo] = (talpha[t] * salpha[s]) * (da * db);
    }
    __syncthreads();
    const float* st = states + (long long)c * W * P;
    for (int pp = threadIdx.x; pp < P; pp += blockDim.x) {
        float acc = 0.0f;
        for (long long ab = 0; ab < W; ++ab) {
            const float f = factor_elem(ta, tlda, tb, e, talpha, tbeta, t,
                                        (int)(ab / (e + 1)), (int)(ab % (e + 1)));
            acc = fmaf(f, st[ab * P + pp], acc);
        }
        for (int s = dlo; s < dhi; ++s) {
            const float xv = (pp < p) ? h2f(x[(long long)s * p + pp]) : 1.0f;
            acc = fmaf(dots[s - dlo], xv, acc);
        }
        y[t * P + pp] = acc;
    }
}

// O_i = f16(Y_i[c] / Y_i[d_v]) and D~_i = Y_i[d_v] (0 rows stay 0).
extern "C" __global__ void poly_normalize(const float* __restrict__ y, int n, int d_v,
                                          half_t* __restrict__ o, float* __restrict__ norm) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float den = y[i * (d_v + 1) + d_v];
    norm[i] = den;
    for (int c = 0; c < d_v; ++c) {
        o[i * d_v + c] = f2h(den != 0.0f ? y[i * (d_v + 1) + c] / den : 0.0f);
    }
}

// alpha_i = 1 / D~_i (0 for a row with no key), beta_i = -delta_i.
extern "C" __global__ void poly_prep_backward(const float* __restrict__ norm,
                                              const float* __restrict__ delta, int n,
                                              float* __restrict__ alpha,
                                              float* __restrict__ beta) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    alpha[i] = (norm[i] != 0.0f) ? 1.0f / norm[i] : 0.0f;
    beta[i] = -delta[i];
}
