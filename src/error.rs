//! The crate's one error type. Every way an input can be wrong has a variant that
//! carries the facts needed to fix it (which tensor, which index, what was expected).

use std::path::PathBuf;

/// Everything that can go wrong in `polyattn`, as data.
///
/// Library functions return `Result<_, Error>` instead of panicking on user input:
/// shapes, values, sizes and files are all checked first.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor's shape does not fit the others (or the operation).
    #[error("shape mismatch for {what}: expected {expected}, got {got}")]
    ShapeMismatch {
        /// The tensor or dimension concerned, e.g. `"k columns (d)"`.
        what: String,
        /// What the other inputs imply.
        expected: String,
        /// What was given.
        got: String,
    },
    /// A tensor has a dimension of length zero.
    #[error("{what} has an empty dimension (shape {shape:?}); every dimension must be at least 1")]
    Empty {
        /// The tensor concerned.
        what: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// A tensor holds NaN or an infinity.
    #[error("{what}{index} is {value}: inputs must be finite")]
    NonFinite {
        /// The tensor concerned.
        what: String,
        /// The multi-index of the first offending entry, formatted as `[i, j]`.
        index: String,
        /// The offending value.
        value: f64,
    },
    /// A parameter is outside its domain (scale not finite, and the like).
    #[error("invalid parameter {name} = {value}: {reason}")]
    InvalidParameter {
        /// The parameter's name.
        name: &'static str,
        /// Its value, formatted.
        value: String,
        /// Why it is rejected.
        reason: String,
    },
    /// A tensor computed inside a model layer (the attention's q, k, v, the MLP's
    /// activations) is not finite: the layer overflowed, the user's inputs were finite.
    #[error("layer {layer} ({pass}): the computed {tensor} is {value}: the layer's activations overflowed; rescale the weights or the input, or compute in F64")]
    LayerNonFinite {
        /// The layer, from 0.
        layer: usize,
        /// `"forward"` or `"backward"`.
        pass: &'static str,
        /// The internal tensor and the index of its first non-finite entry.
        tensor: String,
        /// That entry.
        value: f64,
    },
    /// An intermediate quantity could leave the dtype's finite range.
    #[error("{quantity} may reach {bound:e}, beyond the finite range of {dtype}; rescale the inputs or compute in F64")]
    Overflow {
        /// The intermediate, e.g. `"scores tau * q_i . k_j"`.
        quantity: String,
        /// Its a priori bound (Cauchy-Schwarz), computed in f64.
        bound: f64,
        /// The dtype computed in.
        dtype: &'static str,
    },
    /// The polynomial engine declines this input: it cannot certify the requested
    /// accuracy at an acceptable rank or cost (entries past the bounded-entry regime).
    #[error("polynomial engine refused: {reason} (R = {radius:.4e}, B = {entry_bound:.4e}, sqrt(ln n) = {sqrt_ln_n:.3})")]
    PolyRefused {
        /// Why, in words.
        reason: String,
        /// The certified exponent radius R = tau max||q|| max||k||.
        radius: f64,
        /// The papers' entry bound B = max |entry| of Q and K.
        entry_bound: f64,
        /// sqrt(ln n), the theory's threshold for B.
        sqrt_ln_n: f64,
    },
    /// The sizes requested would overflow an index or an allocation.
    #[error("size overflow: {0}")]
    SizeOverflow(String),
    /// An I/O error on a named path.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// "read" or "write".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A file that is not a well-formed safetensors file.
    #[error("{path} is not a valid safetensors file: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What the parser reported.
        reason: String,
    },
    /// A tensor the operation needs is absent from the input file.
    #[error("tensor `{name}` is missing from {path} (tensors present: {present})")]
    MissingTensor {
        /// The tensor's name.
        name: String,
        /// The file.
        path: PathBuf,
        /// The names that are there, comma separated.
        present: String,
    },
    /// A tensor's element type is not one the engine computes in.
    #[error("tensor `{name}` has dtype {dtype}; supported: F16, BF16, F32, F64")]
    UnsupportedDtype {
        /// The tensor's name.
        name: String,
        /// Its dtype as the file names it.
        dtype: String,
    },
    /// A model configuration (or a model file's `__metadata__`) is invalid: a field is
    /// missing or malformed, sizes do not fit together (`d_model` not divisible by
    /// `n_heads`), or a tensor is present that the configuration has no use for.
    #[error("model configuration: `{field}` {reason}")]
    ModelConfig {
        /// The metadata field or tensor concerned, e.g. `"n_heads"`.
        field: String,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// An index tensor (token ids, class labels) holds a value that is not an integer
    /// in `0..limit`.
    #[error("{what}[{index}] = {value} is not an integer in 0..{limit}")]
    BadIndex {
        /// The tensor, e.g. `"labels"`.
        what: String,
        /// The position of the first offending entry.
        index: usize,
        /// The offending value.
        value: f64,
        /// One past the largest valid index (the vocabulary size).
        limit: usize,
    },
    /// The input tensors do not share one dtype.
    #[error(
        "tensor `{name}` has dtype {dtype} but `q` has {expected}; all inputs must share one dtype"
    )]
    MixedDtype {
        /// The tensor's name.
        name: String,
        /// Its dtype.
        dtype: String,
        /// The dtype of `q`.
        expected: String,
    },
    /// An output path that would destroy something: it is one of the run's inputs (the
    /// same file, compared by device and inode), or it exists and is not what the run
    /// writes (a device, a FIFO, a folder where a file is expected).
    #[error("refusing to write {path}: {reason}")]
    Output {
        /// The output path as given.
        path: PathBuf,
        /// Why it is refused.
        reason: String,
    },
    /// Standard output could not be written. A closed pipe (the reader went away, as in
    /// `polyattn demo | head`) is not a failure of the run: the binary ends quietly
    /// with status 141, as a process ended by SIGPIPE; any other error is reported.
    #[error("cannot write to standard output: {0}")]
    Stdout(std::io::Error),
    /// The run's estimated peak memory exceeds what may be used.
    #[error(
        "{what} needs about {needed} bytes ({needed_gib:.2} GiB) at its peak, more than the {limit} bytes ({limit_gib:.2} GiB) available ({source_of_limit}); use smaller sizes or raise --max-memory"
    )]
    OutOfMemory {
        /// The run, e.g. `"model --init"`.
        what: String,
        /// The estimate, bytes.
        needed: u64,
        /// The estimate in GiB, for the message.
        needed_gib: f64,
        /// The limit, bytes.
        limit: u64,
        /// The limit in GiB, for the message.
        limit_gib: f64,
        /// Where the limit comes from (`--max-memory`, the cgroup, MemAvailable).
        source_of_limit: String,
    },
    /// A training checkpoint was written by a run with another configuration (model,
    /// task, optimiser or batch): resuming from it would silently train something else.
    #[error("checkpoint {path} is from another configuration: `{field}` is {checkpoint} there but {run} in this run; resume with the checkpoint's settings or start a new run in another folder")]
    CheckpointMismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// The setting that differs.
        field: String,
        /// Its value in the checkpoint (`missing` when absent).
        checkpoint: String,
        /// Its value in this run.
        run: String,
    },
    /// Training computed a non-finite loss or gradient: the run stops before the
    /// optimiser step, the parameters are not updated, and the last checkpoint written
    /// (if any) is left as it was.
    #[error("training stopped at step {step}: {tensor} is {value}; the weights were not updated{}", match last_checkpoint { Some(p) => format!(" and the last good checkpoint {} (step {last_checkpoint_step}) is intact", p.display()), None => " (no checkpoint was written yet)".to_string() })]
    NonFiniteTraining {
        /// The step (1-based: the step that would have been taken).
        step: u64,
        /// The tensor: `loss`, or `grad.<parameter>[index]`.
        tensor: String,
        /// Its value.
        value: f64,
        /// The last checkpoint written, if any.
        last_checkpoint: Option<PathBuf>,
        /// The step that checkpoint holds (0 when none).
        last_checkpoint_step: u64,
    },
    /// No usable CUDA device (feature `cuda`): the driver library `libcuda` or the
    /// run-time compiler `libnvrtc` is not installed, or the driver reports no device.
    /// Detection never panics; this is what a machine without a GPU gets.
    #[error("no CUDA device: {0}")]
    NoCudaDevice(String),
    /// A CUDA driver, NVRTC compilation or launch failure (feature `cuda`), with the
    /// driver's message or the compiler's full log.
    #[error("CUDA error: {0}")]
    Cuda(String),
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, Error>;
