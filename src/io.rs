//! Tensors in and out of safetensors files, the interface PyTorch and JAX users have.
//!
//! Only F32 and F64 tensors are read; any other dtype, a missing tensor, or a file that
//! is not valid safetensors gives a typed [`Error`] naming the problem. Writes go to a
//! temporary file in the same folder that is renamed into place, so a failed run never
//! leaves a partial file under the output's name.

use crate::error::{Error, Result};
use crate::scalar::Real;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// A tensor's element type, as far as this crate computes in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// IEEE binary32.
    F32,
    /// IEEE binary64.
    F64,
}

impl DType {
    /// The safetensors name.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F64 => "F64",
        }
    }
}

/// A tensor of either supported dtype with its shape (row-major data).
#[derive(Clone, Debug, PartialEq)]
pub enum AnyTensor {
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
            AnyTensor::F32 { .. } => DType::F32,
            AnyTensor::F64 { .. } => DType::F64,
        }
    }
    /// The shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            AnyTensor::F32 { shape, .. } | AnyTensor::F64 { shape, .. } => shape,
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
    /// The data as `T` if the dtype is `T`'s; `None` otherwise.
    pub fn to_real<T: Real>(&self) -> Option<Vec<T>> {
        match self {
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
            AnyTensor::F32 { data, .. } => data.iter().for_each(|x| x.write_le(&mut out)),
            AnyTensor::F64 { data, .. } => data.iter().for_each(|x| x.write_le(&mut out)),
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
    /// The file's `__metadata__` strings.
    pub metadata: HashMap<String, String>,
}

impl TensorFile {
    /// Reads and parses `path`. Tensors of dtypes other than F32/F64 are kept as
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
        for (name, view) in st.tensors() {
            let shape = view.shape().to_vec();
            let data = view.data();
            let t = match view.dtype() {
                Dtype::F32 => AnyTensor::F32 {
                    shape,
                    data: data.chunks_exact(4).map(f32::read_le).collect(),
                },
                Dtype::F64 => AnyTensor::F64 {
                    shape,
                    data: data.chunks_exact(8).map(f64::read_le).collect(),
                },
                other => {
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
            metadata,
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

/// Writes `tensors` (name, tensor) and `metadata` to `path` as safetensors, atomically
/// (temporary file in the same folder, then rename).
pub fn write_tensors(
    path: &Path,
    tensors: &[(String, AnyTensor)],
    metadata: &HashMap<String, String>,
) -> Result<()> {
    let io_err = |source| Error::Io {
        action: "write",
        path: path.into(),
        source,
    };
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, t)| t.le_bytes()).collect();
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, t), b) in tensors.iter().zip(&bytes) {
        let dtype = match t.dtype() {
            DType::F32 => Dtype::F32,
            DType::F64 => Dtype::F64,
        };
        let view =
            safetensors::tensor::TensorView::new(dtype, t.shape().to_vec(), b).map_err(|e| {
                Error::BadFile {
                    path: path.into(),
                    reason: format!("tensor `{name}`: {e}"),
                }
            })?;
        views.push((name.clone(), view));
    }
    let meta = if metadata.is_empty() {
        None
    } else {
        Some(metadata.clone())
    };
    let out = safetensors::serialize(views, meta).map_err(|e| Error::BadFile {
        path: path.into(),
        reason: e.to_string(),
    })?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, out).map_err(io_err)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(e)
    })
}
