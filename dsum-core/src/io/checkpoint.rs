//! safetensors checkpoints: one `model.safetensors` or shards listed in
//! `model.safetensors.index.json`. Headers are parsed and validated by the `safetensors`
//! crate; tensor data stays in the mapped file and f32 tensors are borrowed, not copied.

use std::collections::HashMap;
use std::string::{String, ToString};
use std::vec::Vec;

use safetensors::tensor::{Dtype, SafeTensors};

use super::raw_tensor::{RawTensor, TensorSource};
use crate::error::{Error, Result};
use crate::ops::qmatmul::{LinearWeight, QMatrix};
use crate::tensor::{SharedBytes, Weight};

struct Entry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Absolute byte range in the file.
    start: usize,
    end: usize,
}

/// All tensors of a model, possibly spread over several files.
pub struct Checkpoint {
    files: Vec<(String, SharedBytes)>,
    tensors: HashMap<String, Entry>,
    /// Tensors already decoded to f32 by another reader (GGUF, pytorch .bin), by HF name.
    decoded: HashMap<String, Weight>,
    /// Matrices kept in a quantized form the fused kernels read (GGUF), by HF name.
    quantized: HashMap<String, QMatrix>,
    /// Where errors about decoded tensors point.
    decoded_path: String,
}

impl Checkpoint {
    /// Index the tensors of already-loaded safetensors files (name used in errors, bytes).
    pub fn from_files(files: Vec<(String, SharedBytes)>) -> Result<Self> {
        let mut tensors = HashMap::new();
        for (fi, (path, bytes)) in files.iter().enumerate() {
            let buf: &[u8] = (**bytes).as_ref();
            let (n, meta) = SafeTensors::read_metadata(buf).map_err(|e| {
                Error::checkpoint(
                    path.clone(),
                    format!("not a valid safetensors file (truncated or corrupted?): {e}"),
                )
            })?;
            let data_start = 8 + n;
            for (name, info) in meta.tensors() {
                let (s, e) = info.data_offsets;
                let (start, end) = (data_start + s, data_start + e);
                if end > buf.len() {
                    return Err(Error::checkpoint(
                        path.clone(),
                        format!("tensor `{name}` ends at byte {end} but the file has {} bytes (truncated?)", buf.len()),
                    ));
                }
                if tensors.contains_key(&name) {
                    return Err(Error::checkpoint(
                        path.clone(),
                        format!("tensor `{name}` appears in two shards"),
                    ));
                }
                tensors.insert(
                    name,
                    Entry {
                        file: fi,
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                        start,
                        end,
                    },
                );
            }
        }
        Ok(Checkpoint {
            files,
            tensors,
            decoded: HashMap::new(),
            quantized: HashMap::new(),
            decoded_path: String::new(),
        })
    }

    /// A checkpoint of tensors another format reader has already decoded, under their
    /// Hugging Face names (`path` is the source file, for error messages).
    pub fn from_weights(path: impl Into<String>, weights: HashMap<String, Weight>) -> Self {
        Checkpoint {
            files: Vec::new(),
            tensors: HashMap::new(),
            decoded: weights,
            quantized: HashMap::new(),
            decoded_path: path.into(),
        }
    }

    /// Add matrices that stay quantized: [`Checkpoint::get_linear`] hands them out as they
    /// are, [`Checkpoint::get`] dequantizes them.
    pub fn with_quantized(mut self, quantized: HashMap<String, QMatrix>) -> Self {
        self.quantized = quantized;
        self
    }

    /// Open `model.safetensors`, or the shards of `model.safetensors.index.json`, in `dir`.
    #[cfg(feature = "std")]
    pub fn open_dir(dir: &std::path::Path) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let names: Vec<String> = if index.is_file() {
            shard_names(&index)?
        } else if single.is_file() {
            vec!["model.safetensors".to_string()]
        } else {
            return Err(Error::checkpoint(
                dir.display().to_string(),
                "no model.safetensors or model.safetensors.index.json in this folder",
            ));
        };
        let mut files = Vec::new();
        for name in names {
            let path = dir.join(&name);
            files.push((path.display().to_string(), read_shared(&path)?));
        }
        Self::from_files(files)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
            || self.decoded.contains_key(name)
            || self.quantized.contains_key(name)
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        match self.tensors.get(name) {
            Some(e) => Some(e.shape.as_slice()),
            None => match self.decoded.get(name) {
                Some(w) => Some(w.shape.as_slice()),
                None => self.quantized.get(name).map(|q| q.shape()),
            },
        }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors
            .keys()
            .chain(self.decoded.keys())
            .chain(self.quantized.keys())
            .map(|s| s.as_str())
    }

    /// Where errors about this checkpoint should point: the source file.
    pub fn path(&self) -> &str {
        if !self.decoded_path.is_empty() {
            return &self.decoded_path;
        }
        self.files
            .first()
            .map(|f| f.0.as_str())
            .unwrap_or("<empty checkpoint>")
    }

    /// A linear layer's weight: quantized when the checkpoint keeps it so, else f32.
    pub fn get_linear(&self, name: &str, shape: &[usize]) -> Result<LinearWeight> {
        match self.quantized.get(name) {
            Some(q) if q.shape() == shape => Ok(LinearWeight::Quant(q.clone())),
            _ => self.get(name, shape).map(LinearWeight::F32),
        }
    }

    /// The tensor `name` as f32, checked against `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Weight> {
        if let Some(q) = self.quantized.get(name) {
            if q.shape() != shape {
                return Err(Error::Tensor {
                    path: self.path().to_string(),
                    name: name.to_string(),
                    message: format!("expected shape {shape:?}, found {:?}", q.shape()),
                });
            }
            return Ok(Weight::from_vec(shape.to_vec(), q.dequantize()));
        }
        if let Some(w) = self.decoded.get(name) {
            if w.shape != shape {
                return Err(Error::Tensor {
                    path: self.path().to_string(),
                    name: name.to_string(),
                    message: format!("expected shape {shape:?}, found {:?}", w.shape),
                });
            }
            return Ok(w.clone_view());
        }
        let e = self.tensors.get(name).ok_or_else(|| Error::Tensor {
            path: self.path().to_string(),
            name: name.to_string(),
            message: "missing from the checkpoint".to_string(),
        })?;
        let (path, bytes) = &self.files[e.file];
        let terr = |message: String| Error::Tensor {
            path: path.clone(),
            name: name.to_string(),
            message,
        };
        if e.shape != shape {
            return Err(terr(format!(
                "expected shape {shape:?}, found {:?}",
                e.shape
            )));
        }
        let numel: usize = shape.iter().product();
        let raw = &(**bytes).as_ref()[e.start..e.end];
        let width = match e.dtype {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            other => {
                return Err(terr(format!(
                    "dtype {other:?} is not supported (expected F32, F16 or BF16)"
                )))
            }
        };
        if raw.len() != numel * width {
            return Err(terr(format!(
                "{} bytes for {numel} values of {:?}",
                raw.len(),
                e.dtype
            )));
        }
        let data: Vec<f32> = match e.dtype {
            Dtype::F32 => {
                if let Some(w) = Weight::from_shared(shape.to_vec(), bytes.clone(), e.start) {
                    return Ok(w);
                }
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            }
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => raw
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        };
        Ok(Weight::from_vec(shape.to_vec(), data))
    }
}

/// The distinct shard files of a `*.index.json` (`weight_map` values), in first-seen order.
#[cfg(feature = "std")]
pub(crate) fn shard_names(index: &std::path::Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(index).map_err(|e| Error::io(index.display().to_string(), e))?;
    shard_names_of(&text, &index.display().to_string())
}

/// [`shard_names`] of the index's text (`path` is what errors call it).
#[cfg(feature = "std")]
pub(crate) fn shard_names_of(text: &str, path: &str) -> Result<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Error::config(path, format!("invalid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::config(path, "missing the `weight_map` object"))?;
    let mut files: Vec<String> = Vec::new();
    for f in map.values() {
        let f = f
            .as_str()
            .ok_or_else(|| Error::config(path, "`weight_map` values must be file names"))?;
        if f.contains('/') || f.contains('\\') || f.contains("..") {
            return Err(Error::config(
                path,
                format!("shard name `{f}` is not a plain file name"),
            ));
        }
        if !files.iter().any(|x| x == f) {
            files.push(f.to_string());
        }
    }
    Ok(files)
}

/// Conversion reads safetensors entries in their stored dtype (bit-exact) and tensors that
/// another reader decoded (GGUF...) as the f32 values the models would use.
impl TensorSource for Checkpoint {
    fn source_path(&self) -> String {
        self.path().to_string()
    }
    fn tensor_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.names().map(|s| s.to_string()).collect();
        v.sort();
        v.dedup();
        v
    }
    fn raw_tensor(&self, name: &str) -> Result<RawTensor> {
        if let Some(e) = self.tensors.get(name) {
            let bytes = &self.files[e.file].1;
            return Ok(RawTensor::owned(
                e.dtype,
                e.shape.clone(),
                (**bytes).as_ref()[e.start..e.end].to_vec(),
            ));
        }
        let shape = self.shape(name).map(|s| s.to_vec()).unwrap_or_default();
        let w = self.get(name, &shape)?;
        Ok(RawTensor::owned(
            Dtype::F32,
            shape,
            w.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ))
    }
}

/// Map (feature `mmap`) or read a file.
#[cfg(feature = "std")]
pub fn read_shared(path: &std::path::Path) -> Result<SharedBytes> {
    let p = path.display().to_string();
    #[cfg(feature = "mmap")]
    {
        let f = std::fs::File::open(path).map_err(|e| Error::io(p.clone(), e))?;
        // SAFETY: the map is read-only; a concurrent writer truncating the file could fault,
        // the same contract as every mmap-based loader (safetensors, candle, llama.cpp).
        let m = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| Error::io(p, e))?;
        Ok(std::sync::Arc::new(m))
    }
    #[cfg(not(feature = "mmap"))]
    {
        let v = std::fs::read(path).map_err(|e| Error::io(p, e))?;
        Ok(std::sync::Arc::new(v))
    }
}
