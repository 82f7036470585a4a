//! The per-entry rounding allowance of the f16 CUDA exact kernels, evaluated on a
//! fuzz case: the formula derived in `polyattn::cuda::allowance` (docs/math.md §4.4,
//! §5.6), instantiated with the row maxima and sums of the case's MPFR enclosure.

use polyattn::cuda::allowance::{gamma32, ETA16, U16, U32};
use polyattn::cuda::launch::BLOCK_K;

/// The per-entry rounding allowance of the f16 exact kernels for `c` (see the module
/// docs); `u_in` is [`U16`] when `c`'s inputs will be rounded from f32 to f16 (so the
/// allowance covers that rounding too) and 0 when they are f16 values already.
pub fn exact_allowance(c: &super::enclosure::Case, u_in: f64) -> super::enclosure::Allowance {
    use super::enclosure::{reference, tau_of, Allowance};
    let (u, uh, eta) = (U32, U16, ETA16);
    let tau = tau_of::<f32>(c.scale, c.d);
    let r = reference(c, tau);
    let (n_q, n_k, d, d_v) = (c.n_q, c.n_k, c.d, c.d_v);
    let mut e = vec![0.0; n_q * n_k];
    for i in 0..n_q {
        for j in 0..n_k {
            let abs_dot: f64 = (0..d)
                .map(|l| (c.q[i * d + l] * c.k[j * d + l]).abs())
                .sum();
            e[i * n_k + j] =
                tau.abs() * (gamma32(d) + 2.0 * u_in) * abs_dot + u * r.s[i * n_k + j].abs();
        }
    }
    let (mut a_o, mut a_lse) = (vec![0.0; n_q * d_v], vec![0.0; n_q]);
    for i in 0..n_q {
        // The CUDA kernels take prefix masks only (a window is refused): keys 0..end.
        let vis = r.visible[i].clone();
        if vis.is_empty() {
            continue;
        }
        let nb = vis.end.div_ceil(BLOCK_K);
        let r_i = vis
            .clone()
            .map(|j| r.s[i * n_k + j].abs())
            .fold(0.0, f64::max);
        let e_max = vis.clone().map(|j| e[i * n_k + j]).fold(0.0, f64::max);
        let eps = e_max + 4.0 * u * r_i + 4.0 * u + 5.0 * u * nb as f64 + gamma32(vis.end + nb + 1);
        for cc in 0..d_v {
            let pv: f64 = vis
                .clone()
                .map(|j| r.p[i * n_k + j] * c.v[j * d_v + cc].abs())
                .sum();
            let v_abs: f64 = vis.clone().map(|j| c.v[j * d_v + cc].abs()).sum();
            a_o[i * d_v + cc] = (2.0 * eps + uh + u_in) / (1.0 - eps) * pv
                + (u + uh) * r.o[i * d_v + cc].abs()
                + eta * (v_abs + 1.0);
        }
        let m = vis
            .map(|j| r.s[i * n_k + j])
            .fold(f64::NEG_INFINITY, f64::max);
        a_lse[i] = eps / (1.0 - eps) + 2.0 * u * (r.lse[i] - m).abs() + u * r.lse[i].abs();
    }
    let (mut h, mut rho) = (vec![0.0; n_q * n_k], vec![0.0; n_q * n_k]);
    for i in 0..n_q {
        let g_i: f64 = (0..d_v)
            .map(|cc| {
                let x = c.d_o[i * d_v + cc].abs();
                (gamma32(d_v) + u_in) * x * r.o[i * d_v + cc].abs() + x * a_o[i * d_v + cc]
            })
            .sum();
        for j in r.visible[i].clone() {
            let ij = i * n_k + j;
            rho[ij] = e[ij] + a_lse[i] + u * (r.s[ij] - r.lse[i]).abs() + 4.0 * u;
            let f: f64 = (gamma32(d_v) + 2.0 * u_in)
                * (0..d_v)
                    .map(|cc| (c.d_o[i * d_v + cc] * c.v[j * d_v + cc]).abs())
                    .sum::<f64>();
            let diff = (r.dp[ij] - r.delta[i]).abs();
            h[ij] =
                r.p[ij] * (rho[ij] * diff + f + g_i + u * diff) + (u + uh) * r.ds[ij].abs() + eta;
        }
    }
    let (gq, gk) = (gamma32(n_q + 1), gamma32(n_k + 1));
    let (mut a_dq, mut a_dk, mut a_dv) =
        (vec![0.0; n_q * d], vec![0.0; n_k * d], vec![0.0; n_k * d_v]);
    for i in 0..n_q {
        for j in r.visible[i].clone() {
            let ij = i * n_k + j;
            let w = h[ij] + r.ds[ij].abs() * (gq.max(gk) + u_in);
            for l in 0..d {
                a_dq[i * d + l] += tau.abs() * w * c.k[j * d + l].abs();
                a_dk[j * d + l] += tau.abs() * w * c.q[i * d + l].abs();
            }
            for cc in 0..d_v {
                let x = c.d_o[i * d_v + cc].abs();
                a_dv[j * d_v + cc] += r.p[ij] * x * (rho[ij] + uh + u_in + gq) + eta * (x + 1.0);
            }
        }
    }
    let fin = |a: Vec<f64>, y: &[f64]| -> Vec<f64> {
        a.iter()
            .zip(y)
            .map(|(a, y)| 2.0 * (a + (u + uh) * y.abs() + eta))
            .collect()
    };
    let dv_ref: Vec<f64> = (0..n_k * d_v)
        .map(|jc| {
            let (j, cc) = (jc / d_v, jc % d_v);
            (0..n_q)
                .map(|i| r.p[i * n_k + j] * c.d_o[i * d_v + cc])
                .sum()
        })
        .collect();
    Allowance {
        o: a_o.iter().map(|x| 2.0 * x).collect(),
        lse: a_lse.iter().map(|x| 2.0 * x).collect(),
        dq: fin(a_dq, &r.dq),
        dk: fin(a_dk, &r.dk),
        dv: fin(a_dv, &dv_ref),
    }
}
