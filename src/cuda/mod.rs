//! The CUDA f16 path (feature `cuda`): exact attention (docs/math.md §2) and the
//! polynomial method (docs/math.md §3.3-§3.5), forward and backward, as CUDA C kernels
//! compiled at run time by NVRTC, with f16 storage and f32 arithmetic.
//!
//! - [`device`]: detection that never panics ([`CudaDevice::new`] returns
//!   [`Error::NoCudaDevice`](crate::Error::NoCudaDevice) on a machine without a GPU,
//!   driver or NVRTC), compilation for the device's compute capability, launches;
//! - [`backend`]: the kernel interface, implemented by the device and by
//!   [`emulate::Emulator`], an operation-for-operation CPU emulation of the kernels;
//! - [`exact`], [`poly`]: the host API, mirroring the CPU engines
//!   ([`crate::attention::exact`], [`crate::attention::poly`]): same shapes, same
//!   config types, same planner and monomials;
//! - [`launch`]: block sizes, grids and chunk lengths (pure, unit-tested);
//! - [`allowance`]: the certified rounding allowance for f16 storage with f32
//!   accumulation (docs/math.md §5.6).
//!
//! The kernel sources live in `src/cuda/kernels/*.cu` and are embedded with
//! `include_str!`. See `docs/cuda.md` for what has and has not run on a device.
//!
//! ```no_run
//! use polyattn::attention::{AttentionConfig, Mask};
//! use polyattn::cuda::{self, CudaDevice};
//! use polyattn::tensor::Matrix;
//!
//! let q = Matrix::from_fn(128, 64, |i, j| ((i + j) % 7) as f32 * 0.1)?;
//! let cfg = AttentionConfig { scale: None, mask: Mask::CausalTopLeft, softcap: None };
//! match CudaDevice::new(0) {
//!     Ok(dev) => {
//!         let f = cuda::exact::forward(&dev, q.view(), q.view(), q.view(), &cfg)?;
//!         println!("{}", f.o.at(0, 0));
//!     }
//!     Err(e) => println!("skipped: {e}"),
//! }
//! # Ok::<(), polyattn::Error>(())
//! ```

pub mod allowance;
pub mod backend;
pub mod device;
pub mod emulate;
pub mod exact;
pub mod launch;
pub mod poly;

pub use backend::Backend;
pub use device::CudaDevice;
pub use emulate::Emulator;
