//! The repository's `tools/examples/time_attention.rs`, built against this crate's engine
//! dependency (`polyattn` without default features, release): no dev-dependencies, so
//! no GMP/MPFR build, and the same compiled engine as the extension module. Used by
//! `bench/overhead.py` to time the Rust API next to the Python binding:
//!
//! ```sh
//! cd python && cargo build --release --example time_attention
//! ```

include!("../../tools/examples/time_attention.rs");
