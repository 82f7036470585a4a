//! Launch geometry of the kernels in `kernels/`, as pure functions: block sizes, grids,
//! the NVRTC `-D` defines, and the chunk length of the polynomial scans. Everything
//! here is checked without a device (unit tests below), and the emulation
//! ([`super::emulate`]) uses the same constants, so the emulated tile order is the
//! kernels' tile order.

use crate::attention::Mask;
use crate::error::{Error, Result};

/// Query rows per block (= threads per block) of `exact_forward` and `exact_backward_dq`.
pub const BLOCK_Q: usize = 64;
/// Keys per shared-memory tile of `exact_forward` and `exact_backward_dq`.
pub const BLOCK_K: usize = 32;
/// Query rows per shared-memory tile of `exact_backward_dkdv`.
pub const BLOCK_Q2: usize = 32;
/// Key rows per block (= threads per block) of `exact_backward_dkdv`.
pub const BLOCK_KV: usize = 64;
/// Threads per block of the element-wise kernels.
pub const ELEMENTWISE: usize = 256;
/// Threads per block of `poly_apply` (one block per target row).
pub const APPLY_THREADS: usize = 128;
/// The largest head dimension the exact kernels are compiled for (per-thread rows
/// live in registers / local memory).
pub const MAX_HEAD_DIM: usize = 256;
/// The largest grid extent in y and z.
const MAX_GRID_YZ: usize = 65_535;
/// The largest grid extent in x.
const MAX_GRID_X: usize = (1 << 31) - 1;
/// Smallest and largest chunk of the polynomial scans.
pub const MIN_CHUNK: usize = 64;
/// See [`MIN_CHUNK`].
pub const MAX_CHUNK: usize = 4096;

/// A launch configuration: grid, block, dynamic shared memory (bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Blocks in x, y, z.
    pub grid: (u32, u32, u32),
    /// Threads in x, y, z.
    pub block: (u32, u32, u32),
    /// Dynamic shared memory per block.
    pub shared_bytes: u32,
}

/// The kernels' integer code for a mask (see `kernels/common.cuh`); the kernels take
/// the prefix masks only, so a sliding window is refused with a typed error.
pub fn mask_code(mask: Mask) -> Result<i32> {
    match mask {
        Mask::None => Ok(0),
        Mask::CausalTopLeft => Ok(1),
        Mask::CausalBottomRight => Ok(2),
        Mask::Window(_) => Err(Error::InvalidParameter {
            name: "mask",
            value: mask.name(),
            reason: "the CUDA kernels take no mask or a causal one; sliding windows run \
                     on the CPU engines"
                .into(),
        }),
    }
}

fn grid_dim(what: &str, n: usize, limit: usize) -> Result<u32> {
    if n == 0 || n > limit {
        return Err(Error::SizeOverflow(format!(
            "{what}: {n} blocks, the device allows 1..={limit}"
        )));
    }
    Ok(n as u32)
}

/// `exact_forward` / `exact_backward_dq`: grid (ceil(n_q / BLOCK_Q), heads), BLOCK_Q threads.
pub fn exact_rows(n_q: usize, heads: usize) -> Result<Geometry> {
    Ok(Geometry {
        grid: (
            grid_dim("query blocks", n_q.div_ceil(BLOCK_Q), MAX_GRID_X)?,
            grid_dim("heads", heads, MAX_GRID_YZ)?,
            1,
        ),
        block: (BLOCK_Q as u32, 1, 1),
        shared_bytes: 0,
    })
}

/// `exact_backward_dkdv`: grid (ceil(n_k / BLOCK_KV), heads), BLOCK_KV threads.
pub fn exact_keys(n_k: usize, heads: usize) -> Result<Geometry> {
    Ok(Geometry {
        grid: (
            grid_dim("key blocks", n_k.div_ceil(BLOCK_KV), MAX_GRID_X)?,
            grid_dim("heads", heads, MAX_GRID_YZ)?,
            1,
        ),
        block: (BLOCK_KV as u32, 1, 1),
        shared_bytes: 0,
    })
}

/// One thread per element, `y` blocks in y (`poly_chunk_states`: one per chunk).
pub fn elementwise(len: usize, y: usize) -> Result<Geometry> {
    Ok(Geometry {
        grid: (
            grid_dim("element blocks", len.div_ceil(ELEMENTWISE), MAX_GRID_X)?,
            grid_dim("chunks", y, MAX_GRID_YZ)?,
            1,
        ),
        block: (ELEMENTWISE as u32, 1, 1),
        shared_bytes: 0,
    })
}

/// `poly_apply`: one block per target row, `chunk` floats of dynamic shared memory.
pub fn apply(n_targets: usize, chunk: usize) -> Result<Geometry> {
    Ok(Geometry {
        grid: (grid_dim("target rows", n_targets, MAX_GRID_X)?, 1, 1),
        block: (APPLY_THREADS as u32, 1, 1),
        shared_bytes: (chunk * 4) as u32,
    })
}

/// Bytes of shared memory the exact kernels declare statically: forward/dQ tiles
/// (BLOCK_K keys of K and V) and the dK/dV tiles (BLOCK_Q2 rows of Q and dO, two f32
/// per row). Must stay within the 48 KiB a block gets without opting in.
pub fn exact_static_shared(d: usize, d_v: usize) -> (usize, usize) {
    (
        BLOCK_K * (d + d_v) * 2,
        BLOCK_Q2 * (d + d_v) * 2 + BLOCK_Q2 * 8,
    )
}

/// Checks the head dimensions the exact kernels are compiled for.
pub fn check_head_dims(d: usize, d_v: usize) -> Result<()> {
    for (name, x) in [("d", d), ("d_v", d_v)] {
        if x == 0 || x > MAX_HEAD_DIM {
            return Err(Error::InvalidParameter {
                name: "head dimension",
                value: format!("{name} = {x}"),
                reason: format!("the CUDA exact kernels support 1..={MAX_HEAD_DIM}"),
            });
        }
    }
    let (a, b) = exact_static_shared(d, d_v);
    if a.max(b) > 48 * 1024 {
        return Err(Error::InvalidParameter {
            name: "head dimension",
            value: format!("d = {d}, d_v = {d_v}"),
            reason: "the kernels' shared tiles would exceed 48 KiB".into(),
        });
    }
    Ok(())
}

/// The NVRTC defines of the exact kernels for head dimensions (d, d_v).
pub fn exact_defines(d: usize, d_v: usize) -> Vec<String> {
    vec![
        format!("-DHEAD_D={d}"),
        format!("-DHEAD_DV={d_v}"),
        format!("-DBLOCK_Q={BLOCK_Q}"),
        format!("-DBLOCK_K={BLOCK_K}"),
        format!("-DBLOCK_Q2={BLOCK_Q2}"),
        format!("-DBLOCK_KV={BLOCK_KV}"),
    ]
}

/// The chunk length of a polynomial scan over `n_src` source rows whose states have
/// `elems` f32 entries each: the smallest power of two in [MIN_CHUNK, MAX_CHUNK] such
/// that the `ceil(n_src / chunk) + 1` states fit in `budget_bytes` and the chunk count
/// fits the grid; a typed error if none does.
pub fn poly_chunk(n_src: usize, elems: usize, budget_bytes: usize) -> Result<usize> {
    let mut chunk = MIN_CHUNK;
    loop {
        let nch = n_src.div_ceil(chunk);
        let bytes = (nch + 1).checked_mul(elems).and_then(|x| x.checked_mul(4));
        if matches!(bytes, Some(b) if b <= budget_bytes) && nch <= MAX_GRID_YZ {
            return Ok(chunk);
        }
        if chunk >= MAX_CHUNK {
            return Err(Error::SizeOverflow(format!(
                "polynomial scan states: {elems} f32 per chunk over {n_src} rows need more than {budget_bytes} bytes even at chunk {MAX_CHUNK}"
            )));
        }
        chunk *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_grids_cover_every_row_once() {
        let g = exact_rows(1000, 3).unwrap();
        assert_eq!(g.grid, (16, 3, 1));
        assert!(g.grid.0 as usize * BLOCK_Q >= 1000 && (g.grid.0 as usize - 1) * BLOCK_Q < 1000);
        let g = exact_keys(65, 1).unwrap();
        assert_eq!(g.grid, (2, 1, 1));
        assert!(exact_rows(10, 70_000).is_err());
        assert!(exact_rows(0, 1).is_err());
    }

    #[test]
    fn chunk_respects_the_budget() {
        // 1 MiB per state, 64k rows: chunk 64 needs 1025 states (over 1 GiB).
        let c = poly_chunk(65_536, 1 << 18, 1 << 30).unwrap();
        assert_eq!(c, 128);
        assert!((65_536usize.div_ceil(c) + 1) * (1 << 20) <= 1 << 30);
        assert_eq!(poly_chunk(100, 10, 1 << 30).unwrap(), MIN_CHUNK);
        assert!(poly_chunk(1 << 20, 1 << 28, 1 << 30).is_err());
    }

    #[test]
    fn shared_memory_and_head_dims() {
        assert!(check_head_dims(128, 128).is_ok());
        assert!(check_head_dims(0, 4).is_err());
        assert!(check_head_dims(300, 4).is_err());
        let (a, b) = exact_static_shared(256, 256);
        assert!(a <= 48 * 1024 && b <= 48 * 1024);
        assert_eq!(apply(5, 64).unwrap().shared_bytes, 256);
        assert_eq!(mask_code(Mask::CausalBottomRight).unwrap(), 2);
        assert!(exact_defines(64, 32).contains(&"-DHEAD_DV=32".to_string()));
    }
}
