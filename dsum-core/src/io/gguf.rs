//! GGUF files (llama.cpp's single-file format, versions 2 and 3): header, typed metadata,
//! tensor infos and quantized tensor data, read from a mapped file. Follows the spec in
//! ggml's `docs/gguf.md` and `gguf-py`'s reader. Every count, length and offset is checked
//! against the file size before anything is allocated, so a corrupted file gives an error
//! naming the file instead of a panic or a huge allocation.
//!
//! Submodules: `quant` (dequantization to f32, bit-exact with ggml), `hf` (tensor names and
//! `LlamaConfig` as transformers' GGUF loader builds them), `tokenizer` (a tokenizers-crate
//! `tokenizer.json` rebuilt from the metadata like transformers' `convert_gguf_tokenizer`).

pub mod hf;
pub mod quant;
pub mod tokenizer;

use std::collections::HashMap;
use std::string::{String, ToString};
use std::vec::Vec;

use crate::error::{Error, Result};
use crate::tensor::SharedBytes;

pub use quant::GgmlType;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// Largest metadata array accepted (real vocabularies and merge lists have < 300k entries).
const MAX_ARRAY_LEN: usize = 1 << 22;

/// A metadata value. Arrays keep their element type so an empty array still has one.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// Any integer type as u64 (negative values give `None`).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v as i64),
            Value::I16(v) => Some(v as i64),
            Value::I32(v) => Some(v as i64),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }
    /// Floats and integers as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One tensor's header entry. `dims` are in ggml order (`dims[0]` is the contiguous one);
/// the row-major (PyTorch) shape is `dims` reversed.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Absolute byte range of the data in the file.
    pub start: usize,
    pub end: usize,
}

impl TensorInfo {
    /// Row-major shape, as transformers/numpy see the tensor.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
    pub fn numel(&self) -> usize {
        self.dims.iter().map(|&d| d as usize).product()
    }
}

/// A parsed GGUF file: metadata and tensor infos over the file's bytes.
pub struct GgufFile {
    pub path: String,
    pub version: u32,
    pub metadata: HashMap<String, Value>,
    /// Metadata keys in file order.
    pub keys: Vec<String>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    bytes: SharedBytes,
}

/// Bounded little-endian cursor; every read checks the remaining length first.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a str,
}

impl<'a> Cursor<'a> {
    fn err(&self, what: impl core::fmt::Display) -> Error {
        Error::checkpoint(self.path, format!("{what} (at byte {})", self.pos))
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                self.err(format!(
                    "truncated file: {what} needs {n} bytes but only {} remain",
                    self.buf.len().saturating_sub(self.pos)
                ))
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
    /// A count of items that each take at least `min_size` bytes: rejected when the rest of
    /// the file could not hold them, before any allocation is sized from it.
    fn count(&mut self, what: &str, min_size: usize) -> Result<usize> {
        let n = self.u64(what)?;
        let max = (self.remaining() / min_size.max(1)) as u64;
        if n > max {
            return Err(self.err(format!(
                "{what} is {n} but the rest of the file can hold at most {max} (corrupted header?)"
            )));
        }
        Ok(n as usize)
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)?;
        if n > self.remaining() as u64 {
            return Err(self.err(format!(
                "{what}: string length {n} is beyond the end of the file ({} bytes remain)",
                self.remaining()
            )));
        }
        let s = self.take(n as usize, what)?;
        core::str::from_utf8(s)
            .map(|s| s.to_string())
            .map_err(|_| self.err(format!("{what} is not valid UTF-8")))
    }
    fn value(&mut self, ty: u32, what: &str, depth: u32) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.arr::<1>(what)?[0]),
            1 => Value::I8(self.arr::<1>(what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.arr(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.arr(what)?)),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(i32::from_le_bytes(self.arr(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.arr(what)?)),
            7 => match self.arr::<1>(what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.err(format!("{what}: invalid bool byte {b}"))),
            },
            8 => Value::String(self.string(what)?),
            9 => {
                if depth > 0 {
                    return Err(self.err(format!("{what}: nested arrays are not supported")));
                }
                let ety = self.u32(what)?;
                let min = match ety {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    t => return Err(self.err(format!("{what}: unknown array element type {t}"))),
                };
                let n = self.count(&format!("{what}: array length"), min)?;
                // Each parsed item takes 32 bytes in memory whatever its size on disk: bound
                // the blow-up a small file full of u8 arrays could cause.
                if n > MAX_ARRAY_LEN {
                    return Err(self.err(format!(
                        "{what}: array length {n} is over the supported {MAX_ARRAY_LEN}"
                    )));
                }
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(ety, what, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(i64::from_le_bytes(self.arr(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.arr(what)?)),
            t => return Err(self.err(format!("{what}: unknown value type {t}"))),
        })
    }
}

impl GgufFile {
    /// Map (feature `mmap`) or read `path` and parse it.
    #[cfg(feature = "std")]
    pub fn open(path: &std::path::Path) -> Result<Self> {
        let bytes = crate::io::checkpoint::read_shared(path)?;
        Self::parse(path.display().to_string(), bytes)
    }

    /// Parse the header of GGUF bytes; `path` is used in error messages.
    pub fn parse(path: impl Into<String>, bytes: SharedBytes) -> Result<Self> {
        let path = path.into();
        let buf: &[u8] = (*bytes).as_ref();
        let mut c = Cursor {
            buf,
            pos: 0,
            path: &path,
        };
        let magic = c.arr::<4>("magic")?;
        if &magic != MAGIC {
            return Err(Error::checkpoint(
                &path,
                format!("not a GGUF file (magic bytes {magic:02x?}, expected \"GGUF\")"),
            ));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(Error::checkpoint(
                &path,
                format!("GGUF version {version} is not supported (supported: 2, 3)"),
            ));
        }
        // A tensor info takes at least 8 (name len) + 4 (n_dims) + 4 (type) + 8 (offset).
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("metadata count")?;
        if n_tensors > (c.remaining() / 24) as u64 {
            return Err(c.err(format!(
                "tensor count {n_tensors} is more than the file can hold (corrupted header?)"
            )));
        }
        // A key-value pair takes at least 8 (key len) + 4 (type) + 1 (value).
        if n_kv > (c.remaining() / 13) as u64 {
            return Err(c.err(format!(
                "metadata count {n_kv} is more than the file can hold (corrupted header?)"
            )));
        }
        let mut metadata = HashMap::new();
        let mut keys = Vec::with_capacity(n_kv as usize);
        for i in 0..n_kv {
            let key = c.string(&format!("metadata key #{i}"))?;
            let ty = c.u32(&format!("type of `{key}`"))?;
            let v = c.value(ty, &format!("metadata `{key}`"), 0)?;
            if metadata.insert(key.clone(), v).is_some() {
                return Err(c.err(format!("metadata key `{key}` appears twice")));
            }
            keys.push(key);
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
                _ => {
                    return Err(Error::checkpoint(
                        &path,
                        format!("general.alignment {v:?} is not a power of two"),
                    ))
                }
            },
        };
        let mut raw = Vec::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let name = c.string(&format!("name of tensor #{i}"))?;
            let n_dims = c.u32(&format!("dimension count of `{name}`"))?;
            if n_dims > 4 {
                return Err(c.err(format!("tensor `{name}` has {n_dims} dimensions (max 4)")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64(&format!("dimensions of `{name}`"))?);
            }
            let ty = c.u32(&format!("type of `{name}`"))?;
            let offset = c.u64(&format!("offset of `{name}`"))?;
            raw.push((name, dims, ty, offset));
        }
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(raw.len());
        let mut seen = HashMap::new();
        for (name, dims, ty, offset) in raw {
            let terr = |message: String| Error::Tensor {
                path: path.clone(),
                name: name.clone(),
                message,
            };
            if seen.insert(name.clone(), ()).is_some() {
                return Err(terr("appears twice in the tensor list".into()));
            }
            let ty = GgmlType::from_u32(ty);
            let numel = dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .ok_or_else(|| terr(format!("dimensions {dims:?} overflow")))?;
            let nbytes = ty.byte_size(numel).ok_or_else(|| {
                terr(format!(
                    "{numel} values is not a whole number of {ty:?} blocks"
                ))
            })?;
            if !offset.is_multiple_of(alignment) {
                return Err(terr(format!(
                    "data offset {offset} is not a multiple of the alignment {alignment}"
                )));
            }
            let start = data_start.checked_add(offset);
            let end = start.and_then(|s| s.checked_add(nbytes));
            match (start, end) {
                (Some(s), Some(e)) if e <= buf.len() as u64 => tensors.push(TensorInfo {
                    name,
                    dims,
                    ty,
                    start: s as usize,
                    end: e as usize,
                }),
                _ => {
                    return Err(terr(format!(
                        "data ({nbytes} bytes at offset {offset}) lies beyond the end of the file ({} bytes; truncated?)",
                        buf.len()
                    )))
                }
            }
        }
        Ok(GgufFile {
            path,
            version,
            metadata,
            keys,
            tensors,
            alignment,
            bytes,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw (possibly quantized) bytes of a tensor.
    pub fn tensor_bytes(&self, t: &TensorInfo) -> &[u8] {
        &(*self.bytes).as_ref()[t.start..t.end]
    }

    pub fn shared_bytes(&self) -> &SharedBytes {
        &self.bytes
    }

    /// The tensor dequantized to f32, row-major with shape `t.shape()`.
    pub fn dequantize(&self, t: &TensorInfo) -> Result<Vec<f32>> {
        quant::dequantize(t.ty, self.tensor_bytes(t), t.numel()).map_err(|m| Error::Tensor {
            path: self.path.clone(),
            name: t.name.clone(),
            message: m,
        })
    }

    /// A string metadata value, or an error naming the key.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.get(key).and_then(|v| v.as_str()).ok_or_else(|| {
            Error::config(
                &self.path,
                format!("metadata `{key}` is missing or not a string"),
            )
        })
    }
}

/// Everything a Llama-family GGUF file holds, as dsum types.
pub struct GgufModel {
    pub model: crate::models::llama::Llama,
    pub tokenizer: crate::tokenizer::Tokenizer,
    /// bos / eos / pad ids from the tokenizer metadata (transformers' generation_config).
    pub generation: crate::generation::GenerationConfig,
    pub chat_template: Option<String>,
}

impl GgufModel {
    /// The model with its Q4_0 / Q4_1 / Q8_0 matrices read quantized from the mapped file
    /// (`ops::qmatmul`); other types are dequantized to f32.
    pub fn from_file(g: &GgufFile) -> Result<Self> {
        Self::from_file_with(g, false)
    }

    /// `dequantize`: every tensor decoded to f32 at load (as transformers does), none kept
    /// quantized: 4-7x the memory, the same values.
    pub fn from_file_with(g: &GgufFile, dequantize: bool) -> Result<Self> {
        Self::from_file_on(g, dequantize, None)
    }

    /// [`GgufModel::from_file_with`] on a CUDA device when `cuda` is given (its matrices are
    /// uploaded from the quantized file, dequantized one at a time).
    pub fn from_file_on(
        g: &GgufFile,
        dequantize: bool,
        cuda: Option<crate::backend::Cuda>,
    ) -> Result<Self> {
        let config = hf::llama_config(g)?;
        let tok = tokenizer::from_gguf(g)?;
        let tokenizer = crate::tokenizer::Tokenizer::from_json(
            tok.json.as_bytes(),
            Some(&tok.config),
            &g.path,
        )?;
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(Error::Tokenizer {
                path: g.path.clone(),
                message: std::format!(
                    "the tokenizer has {} tokens but the model's vocab_size is {}",
                    tokenizer.vocab_size(),
                    config.vocab_size
                ),
            });
        }
        let ck = if dequantize {
            hf::checkpoint(g, &config)?
        } else {
            hf::quantized_checkpoint(g, &config)?
        };
        let model = match cuda {
            None => crate::models::llama::Llama::load(config, &ck)?,
            Some(cuda) => crate::models::llama::Llama::load_cuda(config, &ck, cuda)?,
        };
        let generation = crate::generation::GenerationConfig {
            bos_token_id: tok.bos_token_id,
            eos_token_id: tok
                .eos_token_id
                .map(|e| crate::generation::config::Ids(std::vec![e])),
            pad_token_id: tok.pad_token_id,
            ..Default::default()
        };
        Ok(GgufModel {
            model,
            tokenizer,
            generation,
            chat_template: tok.chat_template,
        })
    }
}
