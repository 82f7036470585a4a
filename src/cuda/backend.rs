//! The kernel interface: one method per kernel of `kernels/`, implemented by the CUDA
//! device ([`super::CudaDevice`]) and by the exact CPU emulation
//! ([`super::emulate::Emulator`]). The host orchestration ([`super::exact`],
//! [`super::poly`]) is written once against this trait, so everything except the
//! kernels' machine code (validation, planning, buffer sizes, launch order, the
//! result assembly) runs and is tested on machines without a GPU.

use crate::error::Result;
use half::f16;

/// Integer parameters of the exact kernels (one launch covers all heads).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExactArgs {
    /// Heads.
    pub heads: usize,
    /// Queries per head.
    pub n_q: usize,
    /// Keys per head.
    pub n_k: usize,
    /// Head dimension of Q, K.
    pub d: usize,
    /// Head dimension of V.
    pub d_v: usize,
    /// tau, as the f32 the kernels multiply by.
    pub tau: f32,
    /// The mask's kernel code ([`super::launch::mask_code`]).
    pub mask: i32,
}

/// A row factor `F_t = alpha_t (A_t (x) [B_t, beta_t])` of the polynomial
/// contractions (see `kernels/poly.cu`).
pub struct Factor<'a, B: Backend + ?Sized> {
    /// f16 features, row stride `lda`.
    pub a: &'a B::Half,
    /// Row stride of `a`.
    pub lda: usize,
    /// Columns of `a` used.
    pub wa: usize,
    /// f16 rows of width `e` (unused when `e == 0`).
    pub b: &'a B::Half,
    /// Width of `b`.
    pub e: usize,
    /// Per-row multiplier (f32).
    pub alpha: &'a B::Float,
    /// Per-row last entry of `[B_t, beta_t]` (f32).
    pub beta: &'a B::Float,
}

/// A payload `X_s = [x_s, 1 if ones]`, x of width `p` (f16).
pub struct Payload<'a, B: Backend + ?Sized> {
    /// The rows.
    pub x: &'a B::Half,
    /// Their width.
    pub p: usize,
    /// Append a column of ones.
    pub ones: bool,
}

/// Shape of one polynomial contraction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContractGeom {
    /// 0: prefix over keys for each query; 1: suffix over queries for each key.
    pub dir: i32,
    /// The mask's kernel code.
    pub mask: i32,
    /// Queries.
    pub n_q: usize,
    /// Keys.
    pub n_k: usize,
    /// Source rows per chunk.
    pub chunk: usize,
}

impl ContractGeom {
    /// Number of source rows.
    pub fn n_src(&self) -> usize {
        if self.dir == 0 {
            self.n_k
        } else {
            self.n_q
        }
    }
    /// Number of target rows.
    pub fn n_target(&self) -> usize {
        if self.dir == 0 {
            self.n_q
        } else {
            self.n_k
        }
    }
    /// Number of chunks of the sources.
    pub fn chunks(&self) -> usize {
        self.n_src().div_ceil(self.chunk)
    }
}

/// The kernels, on a device or emulated. Buffers are opaque to the orchestration.
pub trait Backend {
    /// A buffer of f16.
    type Half;
    /// A buffer of f32.
    type Float;
    /// A buffer of i32.
    type Int;

    /// A one-line description (device name and compute capability, or "emulator").
    fn describe(&self) -> String;
    /// Copies f16 values to a new buffer.
    fn upload_half(&self, x: &[f16]) -> Result<Self::Half>;
    /// Copies f32 values to a new buffer.
    fn upload_float(&self, x: &[f32]) -> Result<Self::Float>;
    /// Copies i32 values to a new buffer.
    fn upload_int(&self, x: &[i32]) -> Result<Self::Int>;
    /// A zeroed f16 buffer.
    fn alloc_half(&self, len: usize) -> Result<Self::Half>;
    /// A zeroed f32 buffer.
    fn alloc_float(&self, len: usize) -> Result<Self::Float>;
    /// Copies a buffer back.
    fn download_half(&self, x: &Self::Half) -> Result<Vec<f16>>;
    /// Copies a buffer back.
    fn download_float(&self, x: &Self::Float) -> Result<Vec<f32>>;

    /// `exact_forward` (kernels/exact_forward.cu).
    fn exact_forward(
        &self,
        a: &ExactArgs,
        qkv: (&Self::Half, &Self::Half, &Self::Half),
        o: &mut Self::Half,
        lse: &mut Self::Float,
    ) -> Result<()>;
    /// `row_delta` (kernels/common.cuh) over `rows` rows of width `d_v`.
    fn row_delta(
        &self,
        rows: usize,
        d_v: usize,
        d_o: &Self::Half,
        o: &Self::Half,
        delta: &mut Self::Float,
    ) -> Result<()>;
    /// `exact_backward_dkdv` then `exact_backward_dq` (kernels/exact_backward.cu);
    /// `stats` are (lse, delta).
    #[allow(clippy::too_many_arguments)]
    fn exact_backward(
        &self,
        a: &ExactArgs,
        qkv: (&Self::Half, &Self::Half, &Self::Half),
        d_o: &Self::Half,
        stats: (&Self::Float, &Self::Float),
        dq: &mut Self::Half,
        dk: &mut Self::Half,
        dv: &mut Self::Half,
    ) -> Result<()>;
    /// `poly_features`: `n` rows of `d` inputs to `r` features each.
    #[allow(clippy::too_many_arguments)]
    fn poly_features(
        &self,
        x: &Self::Half,
        n: usize,
        d: usize,
        scale: f32,
        table: (&Self::Int, &Self::Int),
        coef: &Self::Float,
        r: usize,
        out: &mut Self::Half,
    ) -> Result<()>;
    /// `poly_chunk_states` then `poly_scan_states`: the scanned chunk states of the
    /// sources (`(chunks + 1) * W * P` floats).
    fn poly_states(
        &self,
        g: &ContractGeom,
        src: &Factor<'_, Self>,
        x: &Payload<'_, Self>,
        states: &mut Self::Float,
    ) -> Result<()>;
    /// `poly_apply`: `y` (`n_target x P`) from the target factors, the states and the
    /// direct in-chunk part.
    fn poly_apply(
        &self,
        g: &ContractGeom,
        tgt: &Factor<'_, Self>,
        src: &Factor<'_, Self>,
        x: &Payload<'_, Self>,
        states: &Self::Float,
        y: &mut Self::Float,
    ) -> Result<()>;
    /// `poly_normalize`.
    fn poly_normalize(
        &self,
        y: &Self::Float,
        n: usize,
        d_v: usize,
        o: &mut Self::Half,
        norm: &mut Self::Float,
    ) -> Result<()>;
    /// `poly_prep_backward`.
    fn poly_prep_backward(
        &self,
        norm: &Self::Float,
        delta: &Self::Float,
        n: usize,
        alpha: &mut Self::Float,
        beta: &mut Self::Float,
    ) -> Result<()>;
    /// `scale_to_half` over the whole buffer.
    fn scale_to_half(&self, y: &Self::Float, scale: f32, out: &mut Self::Half) -> Result<()>;
    /// Bytes the polynomial states may use (device memory budget).
    fn state_budget(&self) -> usize;
}
