//! The CUDA device: detection that never panics, one context and stream, NVRTC
//! compilation of the `.cu` sources for the device's compute capability (with the
//! compiler's log in the error), and the [`Backend`] implementation that launches the
//! kernels.
//!
//! Detection order (ARCHITECTURE.md, cudarc facts): cudarc's dynamic loader panics
//! when `libcuda` or `libnvrtc` is absent, so `is_culib_present()` is asked for both
//! before any other cudarc call; a missing library, a failed `cuInit` or a device
//! count of zero is [`Error::NoCudaDevice`].

use super::backend::{Backend, ContractGeom, ExactArgs, Factor, Payload};
use super::launch::{self, Geometry};
use crate::error::{Error, Result};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileError, CompileOptions};
use half::f16;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// `kernels/common.cuh`, prepended to every kernel source.
pub const COMMON_SRC: &str = include_str!("kernels/common.cuh");
/// `kernels/exact_forward.cu`.
pub const EXACT_FORWARD_SRC: &str = include_str!("kernels/exact_forward.cu");
/// `kernels/exact_backward.cu`.
pub const EXACT_BACKWARD_SRC: &str = include_str!("kernels/exact_backward.cu");
/// `kernels/poly.cu`.
pub const POLY_SRC: &str = include_str!("kernels/poly.cu");

/// The NVRTC target option for compute capability (major, minor):
/// `--gpu-architecture=compute_XY`. A virtual architecture makes NVRTC emit PTX (what
/// `nvrtcGetPTX` returns; a real `sm_XY` target makes a cubin instead), which the
/// driver then compiles for exactly this device when the module is loaded.
pub fn arch_option(cc: (i32, i32)) -> String {
    format!("--gpu-architecture=compute_{}{}", cc.0, cc.1)
}

/// Directories that may hold the toolkit headers (`cuda_fp16.h`, `mma.h`): the
/// `include` folders of `$CUDA_PATH`, `$CUDA_HOME`, `/usr/local/cuda` and versioned
/// `/usr/local/cuda-*`, and `/usr/include`, those that exist, in that order. The
/// present kernels include no header (f16 conversions are inline PTX), so a missing
/// toolkit cannot break them; the paths are passed for kernels that do.
pub fn include_candidates() -> Vec<String> {
    let mut out = Vec::new();
    for var in ["CUDA_PATH", "CUDA_HOME"] {
        if let Ok(p) = std::env::var(var) {
            out.push(format!("{p}/include"));
        }
    }
    out.push("/usr/local/cuda/include".into());
    if let Ok(rd) = std::fs::read_dir("/usr/local") {
        let mut v: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("cuda-"))
            })
            .map(|p| format!("{}/include", p.display()))
            .collect();
        v.sort();
        out.extend(v.into_iter().rev());
    }
    out.push("/usr/include".into());
    out.into_iter()
        .filter(|p| Path::new(p).join("cuda_fp16.h").is_file())
        .collect()
}

/// Turns an NVRTC failure into [`Error::Cuda`] carrying the full compiler log, the
/// options, and a hint when a toolkit header was not found.
pub fn compile_error(name: &str, e: CompileError, include_paths: &[String]) -> Error {
    match e {
        CompileError::CompileError {
            nvrtc,
            options,
            log,
        } => {
            let log = log.to_string_lossy().into_owned();
            let hint = if log.contains("cuda_fp16.h") || log.contains("cannot open source file") {
                format!(
                    "\nhint: a CUDA toolkit header was not found; searched {include_paths:?} (set CUDA_PATH to the toolkit root)"
                )
            } else {
                String::new()
            };
            Error::Cuda(format!(
                "NVRTC failed to compile {name} ({nvrtc:?}) with options {options:?}:\n{log}{hint}"
            ))
        }
        other => Error::Cuda(format!("NVRTC failed on {name}: {other:?}")),
    }
}

fn drv<T>(what: &str, r: std::result::Result<T, cudarc::driver::DriverError>) -> Result<T> {
    r.map_err(|e| Error::Cuda(format!("{what}: {e}")))
}

/// Checks that the driver and NVRTC libraries can be loaded, without touching any
/// other cudarc function (those panic when the library is missing).
pub fn libraries_present() -> Result<()> {
    // SAFETY: these only try to dlopen the libraries by name.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(Error::NoCudaDevice(
            "the NVIDIA driver library libcuda.so is not installed or not on the loader path"
                .into(),
        ));
    }
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(Error::NoCudaDevice(
            "the run-time compiler libnvrtc.so (CUDA toolkit) is not installed or not on the loader path".into(),
        ));
    }
    Ok(())
}

/// One CUDA device with its context, stream and compiled modules.
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    name: String,
    cc: (i32, i32),
    include_paths: Vec<String>,
    modules: Mutex<HashMap<String, Arc<CudaModule>>>,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CudaDevice({}, sm_{}{})",
            self.name, self.cc.0, self.cc.1
        )
    }
}

impl CudaDevice {
    /// Opens device `ordinal`: [`Error::NoCudaDevice`] when the libraries are missing,
    /// the driver cannot initialise, or there is no such device; never panics.
    pub fn new(ordinal: usize) -> Result<Self> {
        libraries_present()?;
        cudarc::driver::result::init()
            .map_err(|e| Error::NoCudaDevice(format!("cuInit failed: {e}")))?;
        let count = CudaContext::device_count()
            .map_err(|e| Error::NoCudaDevice(format!("cannot count devices: {e}")))?;
        if ordinal >= count.max(0) as usize {
            return Err(Error::NoCudaDevice(format!(
                "device {ordinal} requested, the driver reports {count}"
            )));
        }
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| Error::NoCudaDevice(format!("cannot create a context: {e}")))?;
        let name = drv("device name", ctx.name())?;
        let cc = drv("compute capability", ctx.compute_capability())?;
        let stream = ctx.default_stream();
        Ok(Self {
            ctx,
            stream,
            name,
            cc,
            include_paths: include_candidates(),
            modules: Mutex::new(HashMap::new()),
        })
    }

    /// The device's compute capability (major, minor).
    pub fn compute_capability(&self) -> (i32, i32) {
        self.cc
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Compiles (once; cached by `key`) `COMMON_SRC + src` with `defines` and loads it.
    fn module(&self, key: &str, src: &str, defines: &[String]) -> Result<Arc<CudaModule>> {
        let mut map = self
            .modules
            .lock()
            .map_err(|_| Error::Cuda("module cache poisoned".into()))?;
        if let Some(m) = map.get(key) {
            return Ok(m.clone());
        }
        let mut options = vec![arch_option(self.cc)];
        options.extend(defines.iter().cloned());
        let opts = CompileOptions {
            ftz: Some(false),
            prec_div: Some(true),
            prec_sqrt: Some(true),
            fmad: Some(false),
            include_paths: self.include_paths.clone(),
            options,
            name: Some(format!("{key}.cu")),
            ..Default::default()
        };
        let full = format!("{COMMON_SRC}\n{src}");
        let ptx = compile_ptx_with_opts(full, opts)
            .map_err(|e| compile_error(key, e, &self.include_paths))?;
        let m = drv(&format!("loading module {key}"), self.ctx.load_module(ptx))?;
        map.insert(key.to_string(), m.clone());
        Ok(m)
    }

    fn function(
        &self,
        key: &str,
        src: &str,
        defines: &[String],
        name: &str,
    ) -> Result<CudaFunction> {
        let m = self.module(key, src, defines)?;
        drv(&format!("loading kernel {name}"), m.load_function(name))
    }

    fn exact_fn(&self, a: &ExactArgs, forward: bool, name: &str) -> Result<CudaFunction> {
        launch::check_head_dims(a.d, a.d_v)?;
        let defines = launch::exact_defines(a.d, a.d_v);
        let (key, src) = if forward {
            (
                format!("exact_forward_{}_{}", a.d, a.d_v),
                EXACT_FORWARD_SRC,
            )
        } else {
            (
                format!("exact_backward_{}_{}", a.d, a.d_v),
                EXACT_BACKWARD_SRC,
            )
        };
        self.function(&key, src, &defines, name)
    }

    fn poly_fn(&self, name: &str) -> Result<CudaFunction> {
        self.function("poly", POLY_SRC, &[], name)
    }

    fn sync(&self) -> Result<()> {
        drv("stream synchronize", self.stream.synchronize())
    }
}

fn cfg(g: Geometry) -> LaunchConfig {
    LaunchConfig {
        grid_dim: g.grid,
        block_dim: g.block,
        shared_mem_bytes: g.shared_bytes,
    }
}

fn i32_of(what: &str, x: usize) -> Result<i32> {
    i32::try_from(x).map_err(|_| Error::SizeOverflow(format!("{what} = {x} exceeds i32")))
}

impl Backend for CudaDevice {
    type Half = CudaSlice<f16>;
    type Float = CudaSlice<f32>;
    type Int = CudaSlice<i32>;

    fn describe(&self) -> String {
        format!(
            "{} (compute capability {}.{})",
            self.name, self.cc.0, self.cc.1
        )
    }
    fn upload_half(&self, x: &[f16]) -> Result<Self::Half> {
        drv("upload", self.stream.clone_htod(x))
    }
    fn upload_float(&self, x: &[f32]) -> Result<Self::Float> {
        drv("upload", self.stream.clone_htod(x))
    }
    fn upload_int(&self, x: &[i32]) -> Result<Self::Int> {
        drv("upload", self.stream.clone_htod(x))
    }
    fn alloc_half(&self, len: usize) -> Result<Self::Half> {
        drv("alloc", self.stream.alloc_zeros::<f16>(len.max(1)))
    }
    fn alloc_float(&self, len: usize) -> Result<Self::Float> {
        drv("alloc", self.stream.alloc_zeros::<f32>(len.max(1)))
    }
    fn download_half(&self, x: &Self::Half) -> Result<Vec<f16>> {
        drv("download", self.stream.clone_dtoh(x))
    }
    fn download_float(&self, x: &Self::Float) -> Result<Vec<f32>> {
        drv("download", self.stream.clone_dtoh(x))
    }

    fn exact_forward(
        &self,
        a: &ExactArgs,
        (q, k, v): (&Self::Half, &Self::Half, &Self::Half),
        o: &mut Self::Half,
        lse: &mut Self::Float,
    ) -> Result<()> {
        let f = self.exact_fn(a, true, "exact_forward")?;
        let g = launch::exact_rows(a.n_q, a.heads)?;
        let (n_q, n_k) = (i32_of("n_q", a.n_q)?, i32_of("n_k", a.n_k)?);
        let mut b = self.stream.launch_builder(&f);
        b.arg(q).arg(k).arg(v).arg(o).arg(lse);
        b.arg(&n_q).arg(&n_k).arg(&a.tau).arg(&a.mask);
        // SAFETY: argument list matches the kernel's signature; buffer lengths were
        // checked by the caller (heads * n * d).
        drv("launch exact_forward", unsafe { b.launch(cfg(g)) })?;
        self.sync()
    }

    fn row_delta(
        &self,
        rows: usize,
        d_v: usize,
        d_o: &Self::Half,
        o: &Self::Half,
        delta: &mut Self::Float,
    ) -> Result<()> {
        let f = self.poly_fn("row_delta")?;
        let g = launch::elementwise(rows, 1)?;
        let (rows_l, dv) = (rows as i64, i32_of("d_v", d_v)?);
        let mut b = self.stream.launch_builder(&f);
        b.arg(d_o).arg(o).arg(delta).arg(&rows_l).arg(&dv);
        // SAFETY: matches `row_delta(const half_t*, const half_t*, float*, long long, int)`.
        drv("launch row_delta", unsafe { b.launch(cfg(g)) })?;
        self.sync()
    }

    fn exact_backward(
        &self,
        a: &ExactArgs,
        (q, k, v): (&Self::Half, &Self::Half, &Self::Half),
        d_o: &Self::Half,
        (lse, delta): (&Self::Float, &Self::Float),
        dq: &mut Self::Half,
        dk: &mut Self::Half,
        dv: &mut Self::Half,
    ) -> Result<()> {
        let (n_q, n_k) = (i32_of("n_q", a.n_q)?, i32_of("n_k", a.n_k)?);
        let f = self.exact_fn(a, false, "exact_backward_dkdv")?;
        let g = launch::exact_keys(a.n_k, a.heads)?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(q)
            .arg(k)
            .arg(v)
            .arg(d_o)
            .arg(lse)
            .arg(delta)
            .arg(dk)
            .arg(dv);
        b.arg(&n_q).arg(&n_k).arg(&a.tau).arg(&a.mask);
        // SAFETY: matches exact_backward_dkdv's signature.
        drv("launch exact_backward_dkdv", unsafe { b.launch(cfg(g)) })?;
        let f = self.exact_fn(a, false, "exact_backward_dq")?;
        let g = launch::exact_rows(a.n_q, a.heads)?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(q).arg(k).arg(v).arg(d_o).arg(lse).arg(delta).arg(dq);
        b.arg(&n_q).arg(&n_k).arg(&a.tau).arg(&a.mask);
        // SAFETY: matches exact_backward_dq's signature.
        drv("launch exact_backward_dq", unsafe { b.launch(cfg(g)) })?;
        self.sync()
    }

    fn poly_features(
        &self,
        x: &Self::Half,
        n: usize,
        d: usize,
        scale: f32,
        (parent, var): (&Self::Int, &Self::Int),
        coef: &Self::Float,
        r: usize,
        out: &mut Self::Half,
    ) -> Result<()> {
        let f = self.poly_fn("poly_features")?;
        let g = launch::elementwise(n * r, 1)?;
        let (n_i, d_i, r_i) = (i32_of("n", n)?, i32_of("d", d)?, i32_of("r", r)?);
        let mut b = self.stream.launch_builder(&f);
        b.arg(x)
            .arg(&n_i)
            .arg(&d_i)
            .arg(&scale)
            .arg(parent)
            .arg(var)
            .arg(coef);
        b.arg(&r_i).arg(out);
        // SAFETY: matches poly_features' signature.
        drv("launch poly_features", unsafe { b.launch(cfg(g)) })?;
        self.sync()
    }

    fn poly_states(
        &self,
        g: &ContractGeom,
        src: &Factor<'_, Self>,
        x: &Payload<'_, Self>,
        states: &mut Self::Float,
    ) -> Result<()> {
        let pw = x.p + x.ones as usize;
        let elems = src.wa * (src.e + 1) * pw;
        let nch = g.chunks();
        let f = self.poly_fn("poly_chunk_states")?;
        let geo = launch::elementwise(elems, nch)?;
        let (lda, wa, e) = (
            i32_of("lda", src.lda)?,
            i32_of("wa", src.wa)?,
            i32_of("e", src.e)?,
        );
        let (p, ones) = (i32_of("p", x.p)?, x.ones as i32);
        let (n_src, chunk) = (i32_of("n", g.n_src())?, i32_of("chunk", g.chunk)?);
        let mut b = self.stream.launch_builder(&f);
        b.arg(src.a)
            .arg(&lda)
            .arg(&wa)
            .arg(src.b)
            .arg(&e)
            .arg(src.alpha)
            .arg(src.beta);
        b.arg(x.x)
            .arg(&p)
            .arg(&ones)
            .arg(&n_src)
            .arg(&chunk)
            .arg(&mut *states);
        // SAFETY: matches poly_chunk_states' signature; states hold (nch + 1) * elems.
        drv("launch poly_chunk_states", unsafe { b.launch(cfg(geo)) })?;
        let f = self.poly_fn("poly_scan_states")?;
        let geo = launch::elementwise(elems, 1)?;
        let (nch_i, elems_l) = (i32_of("chunks", nch)?, elems as i64);
        let mut b = self.stream.launch_builder(&f);
        b.arg(&mut *states).arg(&nch_i).arg(&elems_l).arg(&g.dir);
        // SAFETY: matches poly_scan_states' signature.
        drv("launch poly_scan_states", unsafe { b.launch(cfg(geo)) })?;
        self.sync()
    }

    fn poly_apply(
        &self,
        g: &ContractGeom,
        tgt: &Factor<'_, Self>,
        src: &Factor<'_, Self>,
        x: &Payload<'_, Self>,
        states: &Self::Float,
        y: &mut Self::Float,
    ) -> Result<()> {
        let f = self.poly_fn("poly_apply")?;
        let geo = launch::apply(g.n_target(), g.chunk)?;
        let (n_q, n_k) = (i32_of("n_q", g.n_q)?, i32_of("n_k", g.n_k)?);
        let (tlda, wa, e) = (
            i32_of("lda", tgt.lda)?,
            i32_of("wa", tgt.wa)?,
            i32_of("e", tgt.e)?,
        );
        let slda = i32_of("lda", src.lda)?;
        let (p, ones, chunk) = (i32_of("p", x.p)?, x.ones as i32, i32_of("chunk", g.chunk)?);
        let mut b = self.stream.launch_builder(&f);
        b.arg(&g.dir).arg(&g.mask).arg(&n_q).arg(&n_k);
        b.arg(tgt.a)
            .arg(&tlda)
            .arg(&wa)
            .arg(tgt.b)
            .arg(&e)
            .arg(tgt.alpha)
            .arg(tgt.beta);
        b.arg(src.a)
            .arg(&slda)
            .arg(src.b)
            .arg(src.alpha)
            .arg(src.beta);
        b.arg(x.x).arg(&p).arg(&ones).arg(states).arg(&chunk).arg(y);
        // SAFETY: matches poly_apply's signature; dynamic shared memory = chunk floats.
        drv("launch poly_apply", unsafe { b.launch(cfg(geo)) })?;
        self.sync()
    }

    fn poly_normalize(
        &self,
        y: &Self::Float,
        n: usize,
        d_v: usize,
        o: &mut Self::Half,
        norm: &mut Self::Float,
    ) -> Result<()> {
        let f = self.poly_fn("poly_normalize")?;
        let g = launch::elementwise(n, 1)?;
        let (n_i, dv) = (i32_of("n", n)?, i32_of("d_v", d_v)?);
        let mut b = self.stream.launch_builder(&f);
        b.arg(y).arg(&n_i).arg(&dv).arg(o).arg(norm);
        // SAFETY: matches poly_normalize's signature.
        drv("launch poly_normalize", unsafe { b.launch(cfg(g)) })?;
        self.sync()
    }

    fn poly_prep_backward(
        &self,
        norm: &Self::Float,
        delta: &Self::Float,
        n: usize,
        alpha: &mut Self::Float,
        beta: &mut Self::Float,
    ) -> Result<()> {
        let f = self.poly_fn("poly_prep_backward")?;
        let g = launch::elementwise(n, 1)?;
        let n_i = i32_of("n", n)?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(norm).arg(delta).arg(&n_i).arg(alpha).arg(beta);
        // SAFETY: matches poly_prep_backward's signature.
        drv("launch poly_prep_backward", unsafe { b.launch(cfg(g)) })?;
        self.sync()
    }

    fn scale_to_half(&self, y: &Self::Float, scale: f32, out: &mut Self::Half) -> Result<()> {
        let f = self.poly_fn("scale_to_half")?;
        let len = y.len();
        let g = launch::elementwise(len, 1)?;
        let len_l = len as i64;
        let mut b = self.stream.launch_builder(&f);
        b.arg(y).arg(&len_l).arg(&scale).arg(out);
        // SAFETY: matches scale_to_half's signature; out has at least len entries.
        drv("launch scale_to_half", unsafe { b.launch(cfg(g)) })?;
        self.sync()
    }

    fn state_budget(&self) -> usize {
        match self.ctx.mem_get_info() {
            Ok((free, _)) => (free / 4).min(8 << 30),
            Err(_) => 1 << 30,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_is_the_devices_compute_capability() {
        assert_eq!(arch_option((9, 0)), "--gpu-architecture=compute_90");
        assert_eq!(arch_option((8, 6)), "--gpu-architecture=compute_86");
    }

    #[test]
    fn sources_hold_every_kernel_the_host_launches() {
        for name in ["row_delta", "scale_to_half"] {
            assert!(COMMON_SRC.contains(&format!("void {name}(")), "{name}");
        }
        assert!(EXACT_FORWARD_SRC.contains("void exact_forward("));
        for name in ["exact_backward_dkdv", "exact_backward_dq"] {
            assert!(
                EXACT_BACKWARD_SRC.contains(&format!("void {name}(")),
                "{name}"
            );
        }
        for name in [
            "poly_features",
            "poly_chunk_states",
            "poly_scan_states",
            "poly_apply",
            "poly_normalize",
            "poly_prep_backward",
        ] {
            assert!(POLY_SRC.contains(&format!("void {name}(")), "{name}");
        }
        // No kernel depends on a toolkit header.
        for src in [COMMON_SRC, EXACT_FORWARD_SRC, EXACT_BACKWARD_SRC, POLY_SRC] {
            assert!(!src.lines().any(|l| l.trim_start().starts_with("#include")));
        }
    }
}
