//! Tensors in and out of safetensors files, the interface PyTorch and JAX users have.
//!
//! F16, BF16, F32 and F64 tensors are read (every value converts to f64 exactly,
//! [`crate::storage`]); I32 and I64 tensors are read as integers where a file carries
//! indices or offsets ([`TensorFile::get_integers`]); any other dtype, a missing tensor, or a file that
//! is not valid safetensors gives a typed [`Error`] naming the problem. Writes go to a
//! temporary file in the same folder that is renamed into place, so a failed run never
//! leaves a partial file under the output's name.

use crate::error::{Error, Result};
use crate::scalar::Real;
use crate::storage::Storage;
use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// A tensor's element type. The engines compute in F32 and F64; F16 and BF16 are
/// storage formats (read exactly, written rounded to nearest even).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DType {
    /// IEEE binary16.
    F16,
    /// bfloat16 (8 significand bits, f32's exponent range).
    BF16,
    /// IEEE binary32.
    F32,
    /// IEEE binary64.
    F64,
}

impl DType {
    /// The safetensors name.
    pub fn name(self) -> &'static str {
        match self {
            DType::F16 => f16::NAME,
            DType::BF16 => bf16::NAME,
            DType::F32 => f32::NAME,
            DType::F64 => f64::NAME,
        }
    }

    /// The unit roundoff `2^-p` (p significand bits: 11, 8, 24, 53).
    pub fn unit_roundoff(self) -> f64 {
        match self {
            DType::F16 => f16::unit_roundoff(),
            DType::BF16 => bf16::unit_roundoff(),
            DType::F32 => f32::unit_roundoff(),
            DType::F64 => f64::unit_roundoff(),
        }
    }

    /// `x` rounded to this dtype (nearest even), as an exact f64.
    pub fn round(self, x: f64) -> f64 {
        match self {
            DType::F16 => Storage::to_f64(<f16 as Storage>::round(x)),
            DType::BF16 => Storage::to_f64(<bf16 as Storage>::round(x)),
            DType::F32 => Storage::to_f64(<f32 as Storage>::round(x)),
            DType::F64 => x,
        }
    }
}

/// Decodes little-endian values of one storage format.
fn decode<E: Storage>(bytes: &[u8]) -> Vec<E> {
    bytes
        .chunks_exact(std::mem::size_of::<E>())
        .map(E::read_le)
        .collect()
}

/// Rounds f64 values into one storage format.
fn encode<E: Storage>(data: &[f64]) -> Vec<E> {
    data.iter().map(|&x| E::round(x)).collect()
}

/// A tensor of a supported dtype with its shape (row-major data).
#[derive(Clone, Debug, PartialEq)]
pub enum AnyTensor {
    /// F16 data.
    F16 {
        /// Dimensions.
        shape: Vec<usize>,
        /// Row-major values.
        data: Vec<f16>,
    },
    /// BF16 data.
    BF16 {
        /// Dimensions.
        shape: Vec<usize>,
        /// Row-major values.
        data: Vec<bf16>,
    },
    /// F32 data.
    F32 {
        /// Dimensions.
        shape: Vec<usize>,
        /// Row-major values.
        data: Vec<f32>,
    },
    /// F64 data.
    F64 {
        /// Dimensions.
        shape: Vec<usize>,
        /// Row-major values.
        data: Vec<f64>,
    },
}

impl AnyTensor {
    /// The dtype.
    pub fn dtype(&self) -> DType {
        match self {
            AnyTensor::F16 { .. } => DType::F16,
            AnyTensor::BF16 { .. } => DType::BF16,
            AnyTensor::F32 { .. } => DType::F32,
            AnyTensor::F64 { .. } => DType::F64,
        }
    }
    /// The shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            AnyTensor::F16 { shape, .. }
            | AnyTensor::BF16 { shape, .. }
            | AnyTensor::F32 { shape, .. }
            | AnyTensor::F64 { shape, .. } => shape,
        }
    }
    /// A tensor of `T`'s dtype from a shape and data.
    pub fn from_real<T: Real>(shape: Vec<usize>, data: Vec<T>) -> Self {
        // `T` is f32 or f64 (the only `Real` impls); convert through f64 exactly.
        if T::DTYPE == "F32" {
            AnyTensor::F32 {
                shape,
                data: data.into_iter().map(|x| x.to_f64() as f32).collect(),
            }
        } else {
            AnyTensor::F64 {
                shape,
                data: data.into_iter().map(|x| x.to_f64()).collect(),
            }
        }
    }
    /// Every value as f64 (exact for every dtype).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        fn wide<E: Storage>(d: &[E]) -> Vec<f64> {
            d.iter().map(|x| x.to_f64()).collect()
        }
        match self {
            AnyTensor::F16 { data, .. } => wide(data),
            AnyTensor::BF16 { data, .. } => wide(data),
            AnyTensor::F32 { data, .. } => wide(data),
            AnyTensor::F64 { data, .. } => data.clone(),
        }
    }
    /// A tensor of `dtype` holding `data` rounded to it (nearest even).
    pub fn from_f64_rounded(dtype: DType, shape: Vec<usize>, data: &[f64]) -> Self {
        match dtype {
            DType::F16 => AnyTensor::F16 {
                shape,
                data: encode(data),
            },
            DType::BF16 => AnyTensor::BF16 {
                shape,
                data: encode(data),
            },
            DType::F32 => AnyTensor::F32 {
                shape,
                data: encode(data),
            },
            DType::F64 => AnyTensor::F64 {
                shape,
                data: data.to_vec(),
            },
        }
    }
    /// The data as `T` if the dtype is `T`'s, or a narrower storage format (F16, BF16:
    /// exact in f32 and f64); `None` otherwise.
    pub fn to_real<T: Real>(&self) -> Option<Vec<T>> {
        match self {
            AnyTensor::F16 { .. } | AnyTensor::BF16 { .. } => {
                Some(self.to_f64_vec().into_iter().map(T::from_f64).collect())
            }
            AnyTensor::F32 { data, .. } if T::DTYPE == "F32" => {
                Some(data.iter().map(|&x| T::from_f64(x as f64)).collect())
            }
            AnyTensor::F64 { data, .. } if T::DTYPE == "F64" => {
                Some(data.iter().map(|&x| T::from_f64(x)).collect())
            }
            _ => None,
        }
    }
    fn le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            AnyTensor::F16 { data, .. } => data.iter().for_each(|x| x.write_le(&mut out)),
            AnyTensor::BF16 { data, .. } => data.iter().for_each(|x| x.write_le(&mut out)),
            AnyTensor::F32 { data, .. } => data.iter().for_each(|x| Real::write_le(*x, &mut out)),
            AnyTensor::F64 { data, .. } => data.iter().for_each(|x| Real::write_le(*x, &mut out)),
        }
        out
    }
}

/// The tensors of one file, by name, with the file's path for messages.
#[derive(Clone, Debug)]
pub struct TensorFile {
    path: PathBuf,
    tensors: BTreeMap<String, AnyTensor>,
    /// Names of tensors in dtypes this crate does not compute in, with their dtype.
    unsupported: BTreeMap<String, String>,
    /// The I32 and I64 tensors among them: shape and values.
    integers: BTreeMap<String, (Vec<usize>, Vec<i64>)>,
    /// The file's `__metadata__` strings.
    pub metadata: HashMap<String, String>,
}

impl TensorFile {
    /// Reads and parses `path`. Tensors of dtypes other than F16/BF16/F32/F64 are kept as
    /// names only; asking for one gives [`Error::UnsupportedDtype`].
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            action: "read",
            path: path.into(),
            source,
        })?;
        Self::parse(path, &bytes)
    }

    /// Parses safetensors `bytes`; `path` is used in messages only.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        let bad = |reason: String| Error::BadFile {
            path: path.into(),
            reason,
        };
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
        let mut tensors = BTreeMap::new();
        let mut unsupported = BTreeMap::new();
        let mut integers = BTreeMap::new();
        for (name, view) in st.tensors() {
            let shape = view.shape().to_vec();
            let data = view.data();
            let t = match view.dtype() {
                Dtype::F16 => AnyTensor::F16 {
                    shape,
                    data: decode(data),
                },
                Dtype::BF16 => AnyTensor::BF16 {
                    shape,
                    data: decode(data),
                },
                Dtype::F32 => AnyTensor::F32 {
                    shape,
                    data: decode(data),
                },
                Dtype::F64 => AnyTensor::F64 {
                    shape,
                    data: decode(data),
                },
                other => {
                    let ints: Option<Vec<i64>> = match other {
                        Dtype::I32 => Some(
                            data.chunks_exact(4)
                                .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                                .collect(),
                        ),
                        Dtype::I64 => Some(
                            data.chunks_exact(8)
                                .map(|b| {
                                    i64::from_le_bytes([
                                        b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
                                    ])
                                })
                                .collect(),
                        ),
                        _ => None,
                    };
                    if let Some(ints) = ints {
                        integers.insert(name.clone(), (shape, ints));
                    }
                    unsupported.insert(name.clone(), format!("{other:?}"));
                    continue;
                }
            };
            tensors.insert(name, t);
        }
        let metadata = meta.metadata().clone().unwrap_or_default();
        Ok(Self {
            path: path.into(),
            tensors,
            unsupported,
            integers,
            metadata,
        })
    }

    /// The integer tensor `name` (I32 or I64: sequence offsets, indices) as its shape
    /// and values; a tensor of another dtype is a [`Error::BadFile`] naming it.
    pub fn get_integers(&self, name: &str) -> Result<(&[usize], &[i64])> {
        if let Some((shape, v)) = self.integers.get(name) {
            return Ok((shape, v));
        }
        if !self.contains(name) {
            return Err(Error::MissingTensor {
                name: name.into(),
                path: self.path.clone(),
                present: self.names().join(", "),
            });
        }
        let dtype = match (self.tensors.get(name), self.unsupported.get(name)) {
            (Some(t), _) => t.dtype().name().to_string(),
            (None, Some(d)) => d.clone(),
            (None, None) => "unknown".into(),
        };
        Err(Error::BadFile {
            path: self.path.clone(),
            reason: format!(
                "tensor `{name}` has dtype {dtype}; it holds integers and must be I32 or I64"
            ),
        })
    }

    /// The tensor `name`, or an error naming what is there instead.
    pub fn get(&self, name: &str) -> Result<&AnyTensor> {
        if let Some(t) = self.tensors.get(name) {
            return Ok(t);
        }
        if let Some(dtype) = self.unsupported.get(name) {
            return Err(Error::UnsupportedDtype {
                name: name.into(),
                dtype: dtype.clone(),
            });
        }
        Err(Error::MissingTensor {
            name: name.into(),
            path: self.path.clone(),
            present: self.names().join(", "),
        })
    }

    /// The path the file was read from (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a tensor called `name` exists (of any dtype).
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name) || self.unsupported.contains_key(name)
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self
            .tensors
            .keys()
            .chain(self.unsupported.keys())
            .cloned()
            .collect();
        n.sort();
        n
    }
}

/// The safetensors bytes of `tensors` (data laid out in the given order) and
/// `metadata`: an 8-byte little-endian header length, the JSON header with its keys
/// in sorted order (`__metadata__` included, its entries sorted too), padded with
/// spaces to a multiple of 8, then the data. Same tensors and metadata, same bytes,
/// whatever the hash order of `metadata`.
pub fn safetensors_bytes(
    tensors: &[(String, AnyTensor)],
    metadata: &HashMap<String, String>,
) -> Result<Vec<u8>> {
    use serde_json::{json, Value};
    let mut header: BTreeMap<String, Value> = BTreeMap::new();
    if !metadata.is_empty() {
        let sorted: BTreeMap<&String, &String> = metadata.iter().collect();
        header.insert("__metadata__".into(), json!(sorted));
    }
    let mut data = Vec::new();
    for (name, t) in tensors {
        if name == "__metadata__" || header.contains_key(name) {
            return Err(Error::InvalidParameter {
                name: "tensor name",
                value: name.clone(),
                reason: "reserved or repeated in one file".into(),
            });
        }
        let begin = data.len();
        data.extend_from_slice(&t.le_bytes());
        header.insert(
            name.clone(),
            json!({"dtype": t.dtype().name(), "shape": t.shape(), "data_offsets": [begin, data.len()]}),
        );
    }
    let mut head = serde_json::to_string(&header).map_err(|e| Error::InvalidParameter {
        name: "safetensors header",
        value: String::new(),
        reason: e.to_string(),
    })?;
    while head.len() % 8 != 0 {
        head.push(' ');
    }
    let mut out = Vec::with_capacity(8 + head.len() + data.len());
    out.extend_from_slice(&(head.len() as u64).to_le_bytes());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(&data);
    Ok(out)
}

/// Writes `tensors` (name, tensor) and `metadata` to `path` as safetensors
/// ([`safetensors_bytes`]: reproducible bytes), atomically through
/// [`crate::output::write_file`]: on failure the previous file is intact and no
/// temporary is left.
pub fn write_tensors(
    path: &Path,
    tensors: &[(String, AnyTensor)],
    metadata: &HashMap<String, String>,
) -> Result<()> {
    let bytes = safetensors_bytes(tensors, metadata)?;
    crate::output::write_file(path, &bytes)
}
