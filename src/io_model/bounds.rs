//! The formulas the simulated counts are compared with (docs/math.md §8, IO24). All in
//! words, as f64; `n` is the sequence length (`n_q = n_k = n`), `d` the head
//! dimension, `m` the cache capacity `M`. IO24's bounds are `Theta`/`Omega` with
//! constants that could not be read from the paper: the functions return the formulas
//! with constant 1, and the harness reports the measured ratios to them.

/// `n^2 d^2 / M`: the large-cache (`M >= d^2`) order of attention's I/O.
pub fn large_cache_scale(n: usize, d: usize, m: usize) -> f64 {
    let (n, d, m) = (n as f64, d as f64, m as f64);
    n * n * d * d / m
}

/// `n^2 d / sqrt(M)`: the small-cache (`M < d^2`) order of attention's I/O.
pub fn small_cache_scale(n: usize, d: usize, m: usize) -> f64 {
    let (n, d, m) = (n as f64, d as f64, m as f64);
    n * n * d / m.sqrt()
}

/// IO24's dense bound, forward and backward: `min{n^2 d^2 / M, n^2 d / sqrt(M)}`
/// (docs/math.md §8). The two terms are equal exactly at `M = d^2`.
pub fn dense_lower_bound(n: usize, d: usize, m: usize) -> f64 {
    large_cache_scale(n, d, m).min(small_cache_scale(n, d, m))
}

/// IO24 v2's backward form: `min{(n^2 d^2 + n d^3) / M, (n^2 d + n d^2) / sqrt(M)}`
/// (docs/math.md §8); within a factor `1 + d / n` of [`dense_lower_bound`].
pub fn backward_lower_bound_v2(n: usize, d: usize, m: usize) -> f64 {
    let (nf, df, mf) = (n as f64, d as f64, m as f64);
    ((nf * nf * df * df + nf * df * df * df) / mf).min((nf * nf * df + nf * df * df) / mf.sqrt())
}

/// Words any algorithm must move (each input read once, each output written once):
/// forward `Q, K, V` in and `O`, `lse` out, `4 n d + n`; backward `Q, K, V, O, dO`
/// and `lse` in, `dQ, dK, dV` out, `8 n d + n`.
pub fn compulsory(n: usize, d: usize, backward: bool) -> f64 {
    let (n, d) = (n as f64, d as f64);
    if backward {
        8.0 * n * d + n
    } else {
        4.0 * n * d + n
    }
}

/// The sparse bound of docs/math.md §8, a conjecture (not verified from IO24's text):
/// `min{Z^2 / M, Z sqrt(Z_QK) / sqrt(M)}` with `Z` the input nonzeros (`n d` per
/// dense `n x d` matrix) and `Z_QK` the visible scores. For a dense mask
/// (`Z = n d`, `Z_QK = n^2`) it is [`dense_lower_bound`].
pub fn sparse_conjecture(z: f64, z_qk: f64, m: usize) -> f64 {
    let m = m as f64;
    (z * z / m).min(z * z_qk.sqrt() / m.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_meet_at_d_squared_and_reduce_to_dense() {
        let (n, d) = (512, 64);
        let m = d * d;
        assert!((large_cache_scale(n, d, m) / small_cache_scale(n, d, m) - 1.0).abs() < 1e-12);
        assert!(dense_lower_bound(n, d, m / 4) == small_cache_scale(n, d, m / 4));
        assert!(dense_lower_bound(n, d, m * 4) == large_cache_scale(n, d, m * 4));
        let dense = sparse_conjecture((n * d) as f64, (n * n) as f64, 1000);
        assert!((dense / dense_lower_bound(n, d, 1000) - 1.0).abs() < 1e-12);
        let v2 = backward_lower_bound_v2(n, d, 1000) / dense_lower_bound(n, d, 1000);
        assert!((1.0..=1.0 + d as f64 / n as f64 + 1e-12).contains(&v2));
    }
}
