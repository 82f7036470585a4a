//! The building blocks every simulated algorithm shares: one blocked matrix product
//! through the cache, one element-wise pass, and the two row reductions (log-sum-exp
//! of scores, `delta_i = dO_i . O_i`) of docs/math.md §2.
//!
//! Summation order: every dot product is accumulated left to right over the inner
//! index, across tiles as within them, so a product computed here rounds exactly as
//! the exact engine's `tile::dot` does.

use super::pattern::Pattern;
use super::sim::{Buf, Sim, SlowId};
use crate::error::{Error, Result};

/// Tile shape of a blocked product `C (m x p) = op(A) (m x k) op(B) (k x p)`: the
/// cache holds one `m x p` tile of C and one `m x k`, one `k x p` tile of the factors,
/// `m k + k p + m p <= M` words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Tiles {
    /// Rows of a C tile.
    pub m: usize,
    /// Columns of a C tile.
    pub p: usize,
    /// Length of an inner-dimension chunk.
    pub k: usize,
}

impl Tiles {
    /// Square tiles of side `t = floor(sqrt(M / 3))`, the small-cache choice of
    /// docs/math.md §8 (IO24): a product costs `2 m p k / t + m p` transfers, which is
    /// `O(m p k / sqrt(M))` (Hong-Kung's bound for standard matrix multiplication).
    pub fn square(capacity: usize) -> Result<Self> {
        let t = ((capacity / 3) as f64).sqrt() as usize;
        let t = (t.max(1)..)
            .take_while(|t| 3 * t * t <= capacity)
            .last()
            .unwrap_or(0);
        if t == 0 {
            return Err(Error::InvalidParameter {
                name: "cache capacity M",
                value: capacity.to_string(),
                reason: "a blocked product needs at least 3 words".into(),
            });
        }
        Ok(Self { m: t, p: t, k: t })
    }

    /// The words a product with these tiles keeps resident.
    pub fn words(&self) -> usize {
        self.m * self.k + self.k * self.p + self.m * self.p
    }
}

/// A factor of a product: a slow array, used as stored or transposed.
#[derive(Clone, Copy, Debug)]
pub struct Operand {
    /// The array.
    pub id: SlowId,
    /// Use its transpose.
    pub trans: bool,
}

impl Operand {
    /// The array as stored.
    pub fn n(id: SlowId) -> Self {
        Self { id, trans: false }
    }
    /// The array's transpose.
    pub fn t(id: SlowId) -> Self {
        Self { id, trans: true }
    }
    /// `[rows, cols]` of `op(X)`.
    fn shape(&self, sim: &Sim) -> Result<[usize; 2]> {
        let [r, c] = sim.shape(self.id)?;
        Ok(if self.trans { [c, r] } else { [r, c] })
    }
    /// Loads the `rows x cols` block of `op(X)` at `(r0, c0)`.
    fn load(&self, sim: &mut Sim, r0: usize, c0: usize, rows: usize, cols: usize) -> Result<Buf> {
        if self.trans {
            sim.load(self.id, c0, r0, cols, rows)
        } else {
            sim.load(self.id, r0, c0, rows, cols)
        }
    }
    /// Entry `(i, j)` of `op(block)` for a block loaded by [`Operand::load`].
    #[inline]
    fn at(&self, b: &Buf, i: usize, j: usize) -> f64 {
        if self.trans {
            b.at(j, i)
        } else {
            b.at(i, j)
        }
    }
}

/// `C = alpha op(A) op(B)`, blocked through the cache with tile shape `tiles` (each
/// side clamped to the matrix). C is overwritten; each of its tiles is written once.
///
/// Transfers (docs/math.md §8): `ceil(m/t_m) ceil(p/t_p) (t_m k + k t_p)` reads, about
/// `m p k (1/t_p + 1/t_m)`, plus `m p` writes.
pub fn matmul(
    sim: &mut Sim,
    a: Operand,
    b: Operand,
    alpha: f64,
    c: SlowId,
    tiles: Tiles,
) -> Result<()> {
    let [m, k] = a.shape(sim)?;
    let [kb, p] = b.shape(sim)?;
    let cs = sim.shape(c)?;
    if kb != k || cs != [m, p] {
        return Err(Error::ShapeMismatch {
            what: "blocked product operands".into(),
            expected: format!("({m} x {k}) ({k} x p) -> ({m} x p)"),
            got: format!("({m} x {k}) ({kb} x {p}) -> {cs:?}"),
        });
    }
    let (tm, tp, tk) = (tiles.m.min(m), tiles.p.min(p), tiles.k.min(k));
    if tm == 0 || tp == 0 || tk == 0 {
        return Err(Error::InvalidParameter {
            name: "tiles",
            value: format!("{tiles:?}"),
            reason: "every tile side must be at least 1".into(),
        });
    }
    for i0 in (0..m).step_by(tm) {
        let mi = tm.min(m - i0);
        for j0 in (0..p).step_by(tp) {
            let pj = tp.min(p - j0);
            let mut acc = sim.alloc(mi, pj)?;
            for l0 in (0..k).step_by(tk) {
                let kl = tk.min(k - l0);
                let at = a.load(sim, i0, l0, mi, kl)?;
                let bt = b.load(sim, l0, j0, kl, pj)?;
                for i in 0..mi {
                    for l in 0..kl {
                        let x = a.at(&at, i, l);
                        for j in 0..pj {
                            *acc.at_mut(i, j) += x * b.at(&bt, l, j);
                        }
                    }
                }
                sim.free(at);
                sim.free(bt);
            }
            if alpha != 1.0 {
                acc.data_mut().iter_mut().for_each(|x| *x *= alpha);
            }
            sim.store_free(acc, c, i0, j0)?;
        }
    }
    Ok(())
}

/// The most columns a row pass can hold when it keeps `arrays` row chunks and
/// `scalars` single words resident: `(M - scalars) / arrays`, at most `cols`.
fn chunk(sim: &Sim, arrays: usize, scalars: usize, cols: usize) -> Result<usize> {
    let c = sim.capacity().saturating_sub(scalars) / arrays.max(1);
    if c == 0 {
        return Err(Error::InvalidParameter {
            name: "cache capacity M",
            value: sim.capacity().to_string(),
            reason: format!("a row pass needs {arrays} + {scalars} words"),
        });
    }
    Ok(c.min(cols))
}

/// `out_ij = f(i, j, [X_ij for X in inputs], [x_i for x in row_vecs])`, streamed row
/// by row in chunks: each input word is read once and each output word written once
/// (`(|inputs| + 1) n_q n_k` transfers plus one word per row per vector). All arrays
/// must share `out`'s shape; `row_vecs` are `rows x 1`. The two value slices are the
/// O(1) registers of one element, not storage.
pub fn map_elementwise(
    sim: &mut Sim,
    inputs: &[SlowId],
    row_vecs: &[SlowId],
    out: SlowId,
    mut f: impl FnMut(usize, usize, &[f64], &[f64]) -> f64,
) -> Result<()> {
    let [rows, cols] = sim.shape(out)?;
    for &x in inputs {
        if sim.shape(x)? != [rows, cols] {
            return Err(Error::ShapeMismatch {
                what: "element-wise input".into(),
                expected: format!("{:?}", [rows, cols]),
                got: format!("{:?}", sim.shape(x)?),
            });
        }
    }
    let c = chunk(sim, inputs.len() + 1, row_vecs.len(), cols)?;
    let mut vals = vec![0.0; inputs.len()];
    let mut rv = vec![0.0; row_vecs.len()];
    for i in 0..rows {
        let vecs: Vec<Buf> = row_vecs
            .iter()
            .map(|&v| sim.load(v, i, 0, 1, 1))
            .collect::<Result<_>>()?;
        for (r, b) in rv.iter_mut().zip(&vecs) {
            *r = b.at(0, 0);
        }
        for j0 in (0..cols).step_by(c) {
            let cj = c.min(cols - j0);
            let tiles: Vec<Buf> = inputs
                .iter()
                .map(|&x| sim.load(x, i, j0, 1, cj))
                .collect::<Result<_>>()?;
            let mut o = sim.alloc(1, cj)?;
            for j in 0..cj {
                for (v, t) in vals.iter_mut().zip(&tiles) {
                    *v = t.at(0, j);
                }
                *o.at_mut(0, j) = f(i, j0 + j, &vals, &rv);
            }
            sim.store_free(o, out, i, j0)?;
            tiles.into_iter().for_each(|t| sim.free(t));
        }
        vecs.into_iter().for_each(|v| sim.free(v));
    }
    Ok(())
}

/// `lse_i = log sum_{j visible} e^{S_ij}` for every row of the scores `s` (`-inf` for
/// a row with no visible score), one streaming pass with the online maximum
/// (docs/math.md §2.1): reads `n_q n_k`, writes `n_q` words. Returns the `n_q x 1` array.
pub fn row_lse(sim: &mut Sim, s: SlowId, pattern: &Pattern) -> Result<SlowId> {
    let [n_q, n_k] = sim.shape(s)?;
    let lse = sim.slow_zeros(n_q, 1)?;
    let c = chunk(sim, 1, 2, n_k)?;
    for i in 0..n_q {
        let mut mx = sim.alloc(1, 1)?; // running max m
        let mut l = sim.alloc(1, 1)?; // running sum l = sum e^{S_ij - m}
        *mx.at_mut(0, 0) = f64::NEG_INFINITY;
        for j0 in (0..n_k).step_by(c) {
            let cj = c.min(n_k - j0);
            if !pattern.any_in(i..i + 1, j0..j0 + cj, n_q, n_k) {
                continue;
            }
            let t = sim.load(s, i, j0, 1, cj)?;
            let vis = |j: &usize| pattern.visible(i, j0 + j, n_q, n_k);
            let m_old = mx.at(0, 0);
            let m_new = (0..cj).filter(vis).fold(m_old, |a, j| a.max(t.at(0, j)));
            let alpha = if m_old == f64::NEG_INFINITY {
                0.0
            } else {
                (m_old - m_new).exp()
            };
            let sum: f64 = (0..cj)
                .filter(vis)
                .map(|j| (t.at(0, j) - m_new).exp())
                .sum();
            *l.at_mut(0, 0) = l.at(0, 0) * alpha + sum;
            *mx.at_mut(0, 0) = m_new;
            sim.free(t);
        }
        let (m, sum) = (mx.at(0, 0), l.at(0, 0));
        *mx.at_mut(0, 0) = if sum > 0.0 {
            m + sum.ln()
        } else {
            f64::NEG_INFINITY
        };
        sim.free(l);
        sim.store_free(mx, lse, i, 0)?;
    }
    Ok(lse)
}

/// `delta_i = dO_i . O_i` (docs/math.md §2.3), streamed by row chunks: reads `2 n_q d_v`,
/// writes `n_q` words. Returns the `n_q x 1` array.
pub fn row_dots(sim: &mut Sim, d_o: SlowId, o: SlowId) -> Result<SlowId> {
    let [n_q, d_v] = sim.shape(o)?;
    if sim.shape(d_o)? != [n_q, d_v] {
        return Err(Error::ShapeMismatch {
            what: "dO".into(),
            expected: format!("{:?}", [n_q, d_v]),
            got: format!("{:?}", sim.shape(d_o)?),
        });
    }
    let delta = sim.slow_zeros(n_q, 1)?;
    let c = chunk(sim, 2, 1, d_v)?;
    for i in 0..n_q {
        let mut acc = sim.alloc(1, 1)?;
        for j0 in (0..d_v).step_by(c) {
            let cj = c.min(d_v - j0);
            let a = sim.load(d_o, i, j0, 1, cj)?;
            let b = sim.load(o, i, j0, 1, cj)?;
            for j in 0..cj {
                *acc.at_mut(0, 0) += a.at(0, j) * b.at(0, j);
            }
            sim.free(a);
            sim.free(b);
        }
        sim.store_free(acc, delta, i, 0)?;
    }
    Ok(delta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Matrix;

    /// Small integers: every product and sum is exact, so == is the right test; the
    /// transfer counts are those of the formula in [`matmul`]'s doc comment, worked
    /// by hand for tiles that divide the sizes.
    #[test]
    fn blocked_product_is_exact_and_counts_as_derived() {
        let (m, k, p) = (6, 9, 12);
        let a = Matrix::from_fn(m, k, |i, j| ((i * 7 + j * 3) % 5) as f64 - 2.0).unwrap();
        let bt = Matrix::from_fn(p, k, |i, j| ((i + 2 * j) % 4) as f64 - 1.0).unwrap();
        let mut sim = Sim::new(27).unwrap(); // t = 3
        let (ia, ib) = (sim.put(a.view()), sim.put(bt.view()));
        let c = sim.slow_zeros(m, p).unwrap();
        let tiles = Tiles::square(27).unwrap();
        assert_eq!(tiles, Tiles { m: 3, p: 3, k: 3 });
        matmul(&mut sim, Operand::n(ia), Operand::t(ib), 2.0, c, tiles).unwrap();
        let got = sim.get(c).unwrap();
        for i in 0..m {
            for j in 0..p {
                let want: f64 = (0..k).map(|l| a.at(i, l) * bt.at(j, l)).sum();
                assert_eq!(got.at(i, j), 2.0 * want);
            }
        }
        // reads = (m/t)(p/t)(t k + k t) = 2 m p k / t; writes = m p.
        let t = 3;
        assert_eq!(sim.counts().reads, (2 * m * p * k / t) as u64);
        assert_eq!(sim.counts().writes, (m * p) as u64);
        assert_eq!(sim.counts().peak, 27);
        // Tiles that do not fit are refused by the simulator itself.
        let big = Tiles { m: 4, p: 4, k: 4 };
        assert!(matmul(&mut sim, Operand::n(ia), Operand::t(ib), 1.0, c, big).is_err());
        assert_eq!(Tiles::square(2).ok(), None);
    }
}
