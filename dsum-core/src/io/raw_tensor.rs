//! A tensor in its stored dtype, bytes untouched: what conversion writes bit-exactly and what
//! readers of other formats (.bin, safetensors) hand over before decoding to f32 [`Weight`]s.

use std::borrow::Cow;
use std::string::{String, ToString};
use std::vec::Vec;

use safetensors::tensor::Dtype;

use crate::error::{Error, Result};
use crate::tensor::{SharedBytes, Weight};

enum Data {
    /// Contiguous bytes inside a mapped file.
    Shared {
        bytes: SharedBytes,
        start: usize,
        len: usize,
    },
    Owned(Vec<u8>),
}

/// Row-major little-endian bytes of `dtype` with `shape`.
pub struct RawTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    data: Data,
}

impl RawTensor {
    /// Bytes `start..start+len` of `bytes`; the caller has checked the range and the length.
    pub(crate) fn shared(
        dtype: Dtype,
        shape: Vec<usize>,
        bytes: SharedBytes,
        start: usize,
        len: usize,
    ) -> Self {
        RawTensor {
            dtype,
            shape,
            data: Data::Shared { bytes, start, len },
        }
    }

    pub fn owned(dtype: Dtype, shape: Vec<usize>, bytes: Vec<u8>) -> Self {
        RawTensor {
            dtype,
            shape,
            data: Data::Owned(bytes),
        }
    }

    pub fn bytes(&self) -> &[u8] {
        match &self.data {
            Data::Shared { bytes, start, len } => &(**bytes).as_ref()[*start..*start + *len],
            Data::Owned(v) => v,
        }
    }

    /// True when the bytes are borrowed from the file, not copied.
    pub fn is_borrowed(&self) -> bool {
        matches!(self.data, Data::Shared { .. })
    }

    /// Decode to an f32 weight: borrowed without copying when f32 and aligned.
    /// `path` and `name` locate errors.
    pub fn to_weight(&self, path: &str, name: &str) -> Result<Weight> {
        let numel: usize = self.shape.iter().product();
        let raw = self.bytes();
        let width = match self.dtype {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            other => {
                return Err(Error::Tensor {
                    path: path.to_string(),
                    name: name.to_string(),
                    message: format!(
                        "dtype {other:?} is not supported (expected F32, F16 or BF16)"
                    ),
                })
            }
        };
        if raw.len() != numel * width {
            return Err(Error::Tensor {
                path: path.to_string(),
                name: name.to_string(),
                message: format!("{} bytes for {numel} values of {:?}", raw.len(), self.dtype),
            });
        }
        if let (Dtype::F32, Data::Shared { bytes, start, .. }) = (self.dtype, &self.data) {
            if let Some(w) = Weight::from_shared(self.shape.clone(), bytes.clone(), *start) {
                return Ok(w);
            }
        }
        let data: Vec<f32> = match self.dtype {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => raw
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        };
        Ok(Weight::from_vec(self.shape.clone(), data))
    }
}

impl safetensors::View for &RawTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.bytes())
    }
    fn data_len(&self) -> usize {
        self.bytes().len()
    }
}

/// Anything conversion can read tensors from: a safetensors [`Checkpoint`](super::checkpoint::Checkpoint)
/// (including tensors other readers decoded into it), a PyTorch `.bin` checkpoint...
pub trait TensorSource {
    /// Where errors should point.
    fn source_path(&self) -> String;
    /// Every tensor name, sorted.
    fn tensor_names(&self) -> Vec<String>;
    /// The tensor `name` in its stored dtype.
    fn raw_tensor(&self, name: &str) -> Result<RawTensor>;
}
