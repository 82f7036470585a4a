//! A CPU emulation of every kernel of `kernels/`, operation for operation: f16 storage
//! through `half` (round to nearest even, like `cvt.rn.f16.f32`), f32 arithmetic with
//! the kernels' fused multiply-adds (`f32::mul_add` is `fmaf`), the same loop order and
//! the same tiles ([`super::launch`]'s constants). It implements [`Backend`], so the
//! whole host pipeline runs on it.
//!
//! What is not bit-identical to a device: `expf` and `logf` (the device's are within
//! 2 and 1 ulp; Rust's libm within about 1 ulp) and nothing else, provided NVRTC
//! compiles with `--fmad=false` (so no product and sum is contracted where the source
//! does not say `fmaf`) and without `--ftz` (subnormals kept). The device tests compare
//! the two with a tolerance derived from that (tests/cuda.rs).
//!
//! Also here: [`plain_forward`] / [`plain_backward`], the "plain f16 implementation"
//! of FlashAttention's acceptance rule (docs/math.md §2 computed the textbook way in
//! half precision; see their docs).

use super::backend::{Backend, ContractGeom, ExactArgs, Factor, Payload};
use super::launch::BLOCK_K;
use crate::attention::Mask;
use crate::error::{Error, Result};
use half::f16;

/// The CPU emulation of the kernels (buffers are `Vec`s).
#[derive(Clone, Copy, Debug, Default)]
pub struct Emulator;

#[inline]
fn h(x: f16) -> f32 {
    x.to_f32()
}
#[inline]
fn rh(x: f32) -> f16 {
    f16::from_f32(x)
}
#[inline]
fn round_h(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// The mask for a kernel code.
fn mask_of(code: i32) -> Mask {
    match code {
        1 => Mask::CausalTopLeft,
        2 => Mask::CausalBottomRight,
        _ => Mask::None,
    }
}

fn check_len(what: &str, len: usize, want: usize) -> Result<()> {
    if len < want {
        return Err(Error::ShapeMismatch {
            what: format!("emulator buffer {what}"),
            expected: format!("at least {want} entries"),
            got: len.to_string(),
        });
    }
    Ok(())
}

/// f32 score s = tau * fma-chain(q_l k_l), as every exact kernel computes it.
#[inline]
fn score(q: &[f16], k: &[f16], tau: f32) -> f32 {
    let mut dot = 0.0f32;
    for (a, b) in q.iter().zip(k) {
        dot = h(*a).mul_add(h(*b), dot);
    }
    tau * dot
}

impl Emulator {
    fn forward_row(
        a: &ExactArgs,
        (q, k, v): (&[f16], &[f16], &[f16]),
        i: usize,
        o: &mut [f16],
        lse: &mut f32,
    ) {
        let (d, d_v) = (a.d, a.d_v);
        let ke = mask_of(a.mask).key_end(i, a.n_q, a.n_k);
        let qi = &q[i * d..(i + 1) * d];
        let mut acc = vec![0.0f32; d_v];
        let (mut m, mut l) = (f32::NEG_INFINITY, 0.0f32);
        let mut s = [0.0f32; BLOCK_K];
        for j0 in (0..ke).step_by(BLOCK_K) {
            let cnt = (ke - j0).min(BLOCK_K);
            let mut mt = f32::NEG_INFINITY;
            for (jj, sj) in s.iter_mut().enumerate().take(cnt) {
                let j = j0 + jj;
                *sj = score(qi, &k[j * d..(j + 1) * d], a.tau);
                mt = mt.max(*sj);
            }
            let mn = m.max(mt);
            let corr = (m - mn).exp();
            l *= corr;
            acc.iter_mut().for_each(|x| *x *= corr);
            for (jj, sj) in s.iter().enumerate().take(cnt) {
                let p = (sj - mn).exp();
                l += p;
                let ph = round_h(p);
                let vj = &v[(j0 + jj) * d_v..(j0 + jj + 1) * d_v];
                for (x, vv) in acc.iter_mut().zip(vj) {
                    *x = ph.mul_add(h(*vv), *x);
                }
            }
            m = mn;
        }
        for (oc, x) in o.iter_mut().zip(&acc) {
            *oc = rh(if l > 0.0 { x / l } else { 0.0 });
        }
        *lse = if l > 0.0 {
            m + l.ln()
        } else {
            f32::NEG_INFINITY
        };
    }
}

type Stats<'a> = (&'a [f32], &'a [f32]);

impl Emulator {
    /// dK_j, dV_j of one key row (exact_backward_dkdv).
    #[allow(clippy::too_many_arguments)]
    fn dkdv_row(
        a: &ExactArgs,
        (q, k, v): (&[f16], &[f16], &[f16]),
        d_o: &[f16],
        (lse, delta): Stats<'_>,
        j: usize,
        dk: &mut [f16],
        dv: &mut [f16],
    ) {
        let (d, d_v) = (a.d, a.d_v);
        let fq = mask_of(a.mask).first_query(j, a.n_q, a.n_k);
        let kj = &k[j * d..(j + 1) * d];
        let vj = &v[j * d_v..(j + 1) * d_v];
        let (mut dkr, mut dvr) = (vec![0.0f32; d], vec![0.0f32; d_v]);
        // Query tiles (BLOCK_Q2 rows) only group the loads: the kernel visits the
        // rows in ascending order, as here.
        for i in fq..a.n_q {
            let qi = &q[i * d..(i + 1) * d];
            let gi = &d_o[i * d_v..(i + 1) * d_v];
            let s = score(qi, kj, a.tau);
            let p = (s - lse[i]).exp();
            let ph = round_h(p);
            let mut dp = 0.0f32;
            for c in 0..d_v {
                let g = h(gi[c]);
                dvr[c] = ph.mul_add(g, dvr[c]);
                dp = g.mul_add(h(vj[c]), dp);
            }
            let dsh = round_h(p * (dp - delta[i]));
            for (x, qq) in dkr.iter_mut().zip(qi) {
                *x = dsh.mul_add(h(*qq), *x);
            }
        }
        for (o, x) in dk.iter_mut().zip(&dkr) {
            *o = rh(a.tau * x);
        }
        for (o, x) in dv.iter_mut().zip(&dvr) {
            *o = rh(*x);
        }
    }

    /// dQ_i of one query row (exact_backward_dq).
    fn dq_row(
        a: &ExactArgs,
        (q, k, v): (&[f16], &[f16], &[f16]),
        d_o: &[f16],
        (lse, delta): Stats<'_>,
        i: usize,
        dq: &mut [f16],
    ) {
        let (d, d_v) = (a.d, a.d_v);
        let ke = mask_of(a.mask).key_end(i, a.n_q, a.n_k);
        let qi = &q[i * d..(i + 1) * d];
        let gi = &d_o[i * d_v..(i + 1) * d_v];
        let mut dqr = vec![0.0f32; d];
        for j in 0..ke {
            let kj = &k[j * d..(j + 1) * d];
            let s = score(qi, kj, a.tau);
            let p = (s - lse[i]).exp();
            let mut dp = 0.0f32;
            for c in 0..d_v {
                dp = h(gi[c]).mul_add(h(v[j * d_v + c]), dp);
            }
            let dsh = round_h(p * (dp - delta[i]));
            for (x, kk) in dqr.iter_mut().zip(kj) {
                *x = dsh.mul_add(h(*kk), *x);
            }
        }
        for (o, x) in dq.iter_mut().zip(&dqr) {
            *o = rh(a.tau * x);
        }
    }
}

/// One element of a row factor (kernels/poly.cu `factor_elem`).
#[inline]
fn factor_elem(f: &Factor<'_, Emulator>, row: usize, ai: usize, bi: usize) -> f32 {
    let fa = f.alpha[row] * h(f.a[row * f.lda + ai]);
    let bv = if bi < f.e {
        h(f.b[row * f.e + bi])
    } else {
        f.beta[row]
    };
    fa * bv
}

#[inline]
fn payload_elem(x: &Payload<'_, Emulator>, s: usize, pp: usize) -> f32 {
    if pp < x.p {
        h(x.x[s * x.p + pp])
    } else {
        1.0
    }
}

impl Backend for Emulator {
    type Half = Vec<f16>;
    type Float = Vec<f32>;
    type Int = Vec<i32>;

    fn describe(&self) -> String {
        "CPU emulation of the CUDA kernels".into()
    }
    fn upload_half(&self, x: &[f16]) -> Result<Vec<f16>> {
        Ok(x.to_vec())
    }
    fn upload_float(&self, x: &[f32]) -> Result<Vec<f32>> {
        Ok(x.to_vec())
    }
    fn upload_int(&self, x: &[i32]) -> Result<Vec<i32>> {
        Ok(x.to_vec())
    }
    fn alloc_half(&self, len: usize) -> Result<Vec<f16>> {
        Ok(vec![f16::ZERO; len])
    }
    fn alloc_float(&self, len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }
    fn download_half(&self, x: &Vec<f16>) -> Result<Vec<f16>> {
        Ok(x.clone())
    }
    fn download_float(&self, x: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(x.clone())
    }

    fn exact_forward(
        &self,
        a: &ExactArgs,
        (q, k, v): (&Vec<f16>, &Vec<f16>, &Vec<f16>),
        o: &mut Vec<f16>,
        lse: &mut Vec<f32>,
    ) -> Result<()> {
        let (hq, hk) = (a.n_q, a.n_k);
        check_len("o", o.len(), a.heads * hq * a.d_v)?;
        check_len("lse", lse.len(), a.heads * hq)?;
        for hd in 0..a.heads {
            let qh = &q[hd * hq * a.d..(hd + 1) * hq * a.d];
            let kh = &k[hd * hk * a.d..(hd + 1) * hk * a.d];
            let vh = &v[hd * hk * a.d_v..(hd + 1) * hk * a.d_v];
            for i in 0..hq {
                let r = hd * hq + i;
                Self::forward_row(
                    a,
                    (qh, kh, vh),
                    i,
                    &mut o[r * a.d_v..(r + 1) * a.d_v],
                    &mut lse[r],
                );
            }
        }
        Ok(())
    }

    fn row_delta(
        &self,
        rows: usize,
        d_v: usize,
        d_o: &Vec<f16>,
        o: &Vec<f16>,
        delta: &mut Vec<f32>,
    ) -> Result<()> {
        check_len("delta", delta.len(), rows)?;
        for (r, out) in delta.iter_mut().enumerate().take(rows) {
            let mut acc = 0.0f32;
            for c in 0..d_v {
                acc = h(d_o[r * d_v + c]).mul_add(h(o[r * d_v + c]), acc);
            }
            *out = acc;
        }
        Ok(())
    }

    fn exact_backward(
        &self,
        a: &ExactArgs,
        (q, k, v): (&Vec<f16>, &Vec<f16>, &Vec<f16>),
        d_o: &Vec<f16>,
        (lse, delta): (&Vec<f32>, &Vec<f32>),
        dq: &mut Vec<f16>,
        dk: &mut Vec<f16>,
        dv: &mut Vec<f16>,
    ) -> Result<()> {
        let (n_q, n_k, d, d_v) = (a.n_q, a.n_k, a.d, a.d_v);
        for hd in 0..a.heads {
            let qh = &q[hd * n_q * d..(hd + 1) * n_q * d];
            let kh = &k[hd * n_k * d..(hd + 1) * n_k * d];
            let vh = &v[hd * n_k * d_v..(hd + 1) * n_k * d_v];
            let gh = &d_o[hd * n_q * d_v..(hd + 1) * n_q * d_v];
            let st = (
                &lse[hd * n_q..(hd + 1) * n_q],
                &delta[hd * n_q..(hd + 1) * n_q],
            );
            for j in 0..n_k {
                let r = hd * n_k + j;
                let (dkr, dvr) = (&mut dk[r * d..(r + 1) * d], &mut dv[r * d_v..(r + 1) * d_v]);
                Self::dkdv_row(a, (qh, kh, vh), gh, st, j, dkr, dvr);
            }
            for i in 0..n_q {
                let r = hd * n_q + i;
                Self::dq_row(a, (qh, kh, vh), gh, st, i, &mut dq[r * d..(r + 1) * d]);
            }
        }
        Ok(())
    }

    fn poly_features(
        &self,
        x: &Vec<f16>,
        n: usize,
        d: usize,
        scale: f32,
        (parent, var): (&Vec<i32>, &Vec<i32>),
        coef: &Vec<f32>,
        r: usize,
        out: &mut Vec<f16>,
    ) -> Result<()> {
        check_len("features", out.len(), n * r)?;
        for row in 0..n {
            for m in 0..r {
                let mut val = 1.0f32;
                let mut t = m;
                while t > 0 {
                    let xv = scale * h(x[row * d + var[t] as usize]);
                    val *= xv;
                    t = parent[t] as usize;
                }
                out[row * r + m] = rh(val * coef[m]);
            }
        }
        Ok(())
    }

    fn poly_states(
        &self,
        g: &ContractGeom,
        src: &Factor<'_, Self>,
        x: &Payload<'_, Self>,
        states: &mut Vec<f32>,
    ) -> Result<()> {
        let pw = x.p + x.ones as usize;
        let elems = src.wa * (src.e + 1) * pw;
        let (nch, n_src) = (g.chunks(), g.n_src());
        check_len("states", states.len(), (nch + 1) * elems)?;
        for c in 0..nch {
            let (s0, s1) = (c * g.chunk, ((c + 1) * g.chunk).min(n_src));
            for idx in 0..elems {
                let (ab, pp) = (idx / pw, idx % pw);
                let (ai, bi) = (ab / (src.e + 1), ab % (src.e + 1));
                let mut acc = 0.0f32;
                for s in s0..s1 {
                    acc = factor_elem(src, s, ai, bi).mul_add(payload_elem(x, s, pp), acc);
                }
                states[c * elems + idx] = acc;
            }
        }
        for idx in 0..elems {
            let mut run = 0.0f32;
            if g.dir == 0 {
                for c in 0..nch {
                    let t = states[c * elems + idx];
                    states[c * elems + idx] = run;
                    run += t;
                }
                states[nch * elems + idx] = run;
            } else {
                states[nch * elems + idx] = 0.0;
                for c in (0..nch).rev() {
                    run += states[c * elems + idx];
                    states[c * elems + idx] = run;
                }
            }
        }
        Ok(())
    }

    fn poly_apply(
        &self,
        g: &ContractGeom,
        tgt: &Factor<'_, Self>,
        src: &Factor<'_, Self>,
        x: &Payload<'_, Self>,
        states: &Vec<f32>,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        let pw = x.p + x.ones as usize;
        let w = tgt.wa * (tgt.e + 1);
        let mask = mask_of(g.mask);
        let n_s = g.n_src();
        check_len("y", y.len(), g.n_target() * pw)?;
        let mut dots = vec![0.0f32; g.chunk];
        for t in 0..g.n_target() {
            let (c, dlo, dhi) = if g.dir == 0 {
                let hi = mask.key_end(t, g.n_q, g.n_k);
                let c = hi / g.chunk;
                (c, c * g.chunk, hi)
            } else {
                let lo = mask.first_query(t, g.n_q, g.n_k);
                let c = lo.div_ceil(g.chunk);
                (c, lo, (c * g.chunk).min(n_s))
            };
            for s in dlo..dhi {
                let mut da = 0.0f32;
                for ai in 0..tgt.wa {
                    da = h(tgt.a[t * tgt.lda + ai]).mul_add(h(src.a[s * src.lda + ai]), da);
                }
                let mut db = 0.0f32;
                for bi in 0..tgt.e {
                    db = h(tgt.b[t * tgt.e + bi]).mul_add(h(src.b[s * src.e + bi]), db);
                }
                db = tgt.beta[t].mul_add(src.beta[s], db);
                dots[s - dlo] = (tgt.alpha[t] * src.alpha[s]) * (da * db);
            }
            let st = &states[c * w * pw..(c + 1) * w * pw];
            for pp in 0..pw {
                let mut acc = 0.0f32;
                for ab in 0..w {
                    let f = factor_elem(tgt, t, ab / (tgt.e + 1), ab % (tgt.e + 1));
                    acc = f.mul_add(st[ab * pw + pp], acc);
                }
                for s in dlo..dhi {
                    acc = dots[s - dlo].mul_add(payload_elem(x, s, pp), acc);
                }
                y[t * pw + pp] = acc;
            }
        }
        Ok(())
    }

    fn poly_normalize(
        &self,
        y: &Vec<f32>,
        n: usize,
        d_v: usize,
        o: &mut Vec<f16>,
        norm: &mut Vec<f32>,
    ) -> Result<()> {
        for i in 0..n {
            let den = y[i * (d_v + 1) + d_v];
            norm[i] = den;
            for c in 0..d_v {
                let val = if den != 0.0 {
                    y[i * (d_v + 1) + c] / den
                } else {
                    0.0
                };
                o[i * d_v + c] = rh(val);
            }
        }
        Ok(())
    }

    fn poly_prep_backward(
        &self,
        norm: &Vec<f32>,
        delta: &Vec<f32>,
        n: usize,
        alpha: &mut Vec<f32>,
        beta: &mut Vec<f32>,
    ) -> Result<()> {
        for i in 0..n {
            alpha[i] = if norm[i] != 0.0 { 1.0 / norm[i] } else { 0.0 };
            beta[i] = -delta[i];
        }
        Ok(())
    }

    fn scale_to_half(&self, y: &Vec<f32>, scale: f32, out: &mut Vec<f16>) -> Result<()> {
        check_len("out", out.len(), y.len())?;
        for (o, x) in out.iter_mut().zip(y) {
            *o = rh(scale * x);
        }
        Ok(())
    }

    fn state_budget(&self) -> usize {
        1 << 30
    }
}

/// Results of the plain f16 implementation, widened to f64, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Plain {
    /// O.
    pub o: Vec<f64>,
    /// dQ, dK, dV (when computed).
    pub grads: Option<(Vec<f64>, Vec<f64>, Vec<f64>)>,
}

/// The "plain f16 implementation" of FlashAttention's acceptance rule: the textbook
/// formulas of docs/math.md §2 with every tensor stored in f16 and every product
/// accumulated in f32 (what a framework's half-precision matmuls and softmax do):
/// inputs rounded to f16; S = f16(tau * f32-dot); per row m = max S,
/// p = f16(exp(S - m)) (f32 exp), Z = f32 sum of p, P = f16(p / Z); O = f16(f32 P V).
/// One head, `q` `n_q x d`, `k` `n_k x d`, `v` `n_k x d_v` (f64 values, rounded here).
pub fn plain_forward(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    (n_q, n_k, d, d_v): (usize, usize, usize, usize),
    tau: f32,
    mask: Mask,
) -> (Plain, Vec<f32>) {
    let r16 = |x: &[f64]| x.iter().map(|z| round_h(*z as f32)).collect::<Vec<f32>>();
    let (q, k, v) = (r16(q), r16(k), r16(v));
    let mut p = vec![0.0f32; n_q * n_k];
    let mut o = vec![0.0f64; n_q * d_v];
    for i in 0..n_q {
        let ke = mask.key_end(i, n_q, n_k);
        if ke == 0 {
            continue;
        }
        let s: Vec<f32> = (0..ke)
            .map(|j| {
                let dot: f32 = (0..d).map(|l| q[i * d + l] * k[j * d + l]).sum();
                round_h(tau * dot)
            })
            .collect();
        let m = s.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = s.iter().map(|x| round_h((x - m).exp())).collect();
        let z: f32 = e.iter().sum();
        for j in 0..ke {
            p[i * n_k + j] = round_h(e[j] / z);
        }
        for c in 0..d_v {
            let acc: f32 = (0..ke).map(|j| p[i * n_k + j] * v[j * d_v + c]).sum();
            o[i * d_v + c] = round_h(acc) as f64;
        }
    }
    (Plain { o, grads: None }, p)
}

/// The plain f16 backward (see [`plain_forward`]): dP = f16(dO V^T), delta = f32
/// rowsum(dO o O) with the f16 O, dS = f16(P o (dP - delta)), dV = f16(P^T dO),
/// dQ = f16(tau dS K), dK = f16(tau dS^T Q), products accumulated in f32.
#[allow(clippy::too_many_arguments)]
pub fn plain_backward(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    d_o: &[f64],
    (n_q, n_k, d, d_v): (usize, usize, usize, usize),
    tau: f32,
    mask: Mask,
) -> Plain {
    let (fwd, p) = plain_forward(q, k, v, (n_q, n_k, d, d_v), tau, mask);
    let r16 = |x: &[f64]| x.iter().map(|z| round_h(*z as f32)).collect::<Vec<f32>>();
    let (q, k, v, g) = (r16(q), r16(k), r16(v), r16(d_o));
    let mut ds = vec![0.0f32; n_q * n_k];
    for i in 0..n_q {
        let delta: f32 = (0..d_v)
            .map(|c| g[i * d_v + c] * fwd.o[i * d_v + c] as f32)
            .sum();
        for j in 0..mask.key_end(i, n_q, n_k) {
            let dp: f32 = round_h((0..d_v).map(|c| g[i * d_v + c] * v[j * d_v + c]).sum());
            ds[i * n_k + j] = round_h(p[i * n_k + j] * (dp - delta));
        }
    }
    let dq = (0..n_q * d)
        .map(|il| {
            let (i, l) = (il / d, il % d);
            let acc: f32 = (0..n_k).map(|j| ds[i * n_k + j] * k[j * d + l]).sum();
            round_h(tau * acc) as f64
        })
        .collect();
    let dk = (0..n_k * d)
        .map(|jl| {
            let (j, l) = (jl / d, jl % d);
            let acc: f32 = (0..n_q).map(|i| ds[i * n_k + j] * q[i * d + l]).sum();
            round_h(tau * acc) as f64
        })
        .collect();
    let dv = (0..n_k * d_v)
        .map(|jc| {
            let (j, c) = (jc / d_v, jc % d_v);
            let acc: f32 = (0..n_q).map(|i| p[i * n_k + j] * g[i * d_v + c]).sum();
            round_h(acc) as f64
        })
        .collect();
    Plain {
        o: fwd.o,
        grads: Some((dq, dk, dv)),
    }
}
