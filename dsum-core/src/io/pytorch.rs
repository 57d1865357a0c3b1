//! PyTorch checkpoints: `pytorch_model.bin` (the zip format of `torch.save` since 1.6) or the
//! shards listed in `pytorch_model.bin.index.json`. `data.pkl` goes through the restricted
//! unpickler; each tensor is a view (offset, sizes, strides) on a storage entry, which is
//! borrowed straight from the mapped file when contiguous, and gathered into a copy otherwise.

use std::collections::BTreeMap;
use std::string::{String, ToString};
use std::vec::Vec;

use safetensors::tensor::Dtype;

use super::checkpoint::Checkpoint;
use super::pickle::{state_dict, unpickle, TensorRef};
use super::raw_tensor::{RawTensor, TensorSource};
use super::torch_zip::{is_zip, ZipEntry, ZipIndex};
use crate::error::{Error, Result};
use crate::tensor::SharedBytes;

/// The tensors of one or more `.bin` files, in their stored dtypes.
pub struct PtCheckpoint {
    path: String,
    tensors: BTreeMap<String, RawTensor>,
}

/// Resolve one tensor view against its storage entry.
fn materialize(
    t: &TensorRef,
    entry: ZipEntry,
    bytes: &SharedBytes,
    big_endian: bool,
    path: &str,
    name: &str,
) -> Result<RawTensor> {
    let terr = |m: String| Error::Tensor {
        path: path.to_string(),
        name: name.to_string(),
        message: m,
    };
    let item = t.storage.dtype.bitsize() / 8;
    let storage_bytes = t
        .storage
        .numel
        .checked_mul(item)
        .filter(|&n| n <= entry.len)
        .ok_or_else(|| {
            terr(format!(
                "storage `{}` claims {} elements of {:?} but its entry has {} bytes",
                t.storage.key, t.storage.numel, t.storage.dtype, entry.len
            ))
        })?;
    let _ = storage_bytes;
    let numel = t
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| terr("element count overflows".to_string()))?;
    if numel == 0 {
        return Ok(RawTensor::owned(
            t.storage.dtype,
            t.shape.clone(),
            Vec::new(),
        ));
    }
    // Highest element index the view touches; checked before anything is allocated.
    let last = t
        .shape
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset, |a, (&d, &s)| a.checked_add((d - 1).checked_mul(s)?))
        .filter(|&l| l < t.storage.numel)
        .ok_or_else(|| {
            terr(format!(
                "view (offset {}, sizes {:?}, strides {:?}) reaches past its storage of {} elements",
                t.offset, t.shape, t.stride, t.storage.numel
            ))
        })?;
    let _ = last;
    if numel > t.storage.numel {
        return Err(terr(format!(
            "{numel} elements viewed from a storage of {} (an expanded view); re-save it with .contiguous()",
            t.storage.numel
        )));
    }
    let base = entry.start + t.offset * item;
    let all: &[u8] = (**bytes).as_ref();
    let contiguous = {
        let mut expect = 1usize;
        let mut ok = true;
        for (&d, &s) in t.shape.iter().zip(&t.stride).rev() {
            if d != 1 && s != expect {
                ok = false;
            }
            expect *= d;
        }
        ok
    };
    let mut out = if contiguous {
        if !big_endian {
            return Ok(RawTensor::shared(
                t.storage.dtype,
                t.shape.clone(),
                bytes.clone(),
                base,
                numel * item,
            ));
        }
        all[base..base + numel * item].to_vec()
    } else {
        gather(all, base, &t.shape, &t.stride, item, numel)
    };
    if big_endian {
        for c in out.chunks_exact_mut(item) {
            c.reverse();
        }
    }
    Ok(RawTensor::owned(t.storage.dtype, t.shape.clone(), out))
}

/// Copy a strided view into row-major order (`base` and the result in bytes, strides in elements).
fn gather(
    all: &[u8],
    base: usize,
    shape: &[usize],
    stride: &[usize],
    item: usize,
    numel: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(numel * item);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..numel {
        let off: usize = idx.iter().zip(stride).map(|(i, s)| i * s).sum();
        let at = base + off * item;
        out.extend_from_slice(&all[at..at + item]);
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

impl PtCheckpoint {
    /// Read one `.bin` file already in memory (mapped); `path` names it in errors.
    pub fn from_bytes(path: &str, bytes: SharedBytes) -> Result<Self> {
        let buf: &[u8] = (*bytes).as_ref();
        if !is_zip(buf) {
            let msg = if buf.first() == Some(&0x80) {
                "legacy (pre-1.6, non-zip) PyTorch format is not supported; re-save it with torch>=1.6 \
                 (`torch.save(torch.load(f), f)`) or convert it to safetensors in Python"
            } else {
                "not a PyTorch zip checkpoint (no zip header)"
            };
            return Err(Error::checkpoint(path.to_string(), msg));
        }
        let zip = ZipIndex::parse(buf, path)?;
        let mut pkls = zip
            .entries
            .keys()
            .filter(|k| k.ends_with("/data.pkl") && k.matches('/').count() == 1);
        let pkl_name = pkls
            .next()
            .ok_or_else(|| {
                Error::checkpoint(path.to_string(), "no `<archive>/data.pkl` in the zip")
            })?
            .clone();
        if pkls.next().is_some() {
            return Err(Error::checkpoint(
                path.to_string(),
                "several `data.pkl` records in one zip",
            ));
        }
        let prefix = &pkl_name[..pkl_name.len() - "data.pkl".len()];
        let big_endian = match zip.entries.get(&format!("{prefix}byteorder")) {
            Some(e) => match &buf[e.start..e.start + e.len] {
                b"little" => false,
                b"big" => true,
                _ => {
                    return Err(Error::checkpoint(
                        path.to_string(),
                        "`byteorder` is neither little nor big",
                    ))
                }
            },
            None => false, // written by torch < 1.10: always little-endian hosts
        };
        let pkl = zip.entries[&pkl_name];
        let root = unpickle(&buf[pkl.start..pkl.start + pkl.len], path)?;
        let mut tensors = BTreeMap::new();
        for (name, t) in state_dict(&root, path)? {
            let key = format!("{prefix}data/{}", t.storage.key);
            let entry = *zip.entries.get(&key).ok_or_else(|| Error::Tensor {
                path: path.to_string(),
                name: name.clone(),
                message: format!("its storage `{key}` is missing from the zip"),
            })?;
            let raw = materialize(&t, entry, &bytes, big_endian, path, &name)?;
            if tensors.insert(name.clone(), raw).is_some() {
                return Err(Error::checkpoint(
                    path.to_string(),
                    format!("tensor `{name}` appears twice"),
                ));
            }
        }
        Ok(PtCheckpoint {
            path: path.to_string(),
            tensors,
        })
    }

    /// Open one `.bin` file (mapped with feature `mmap`).
    #[cfg(feature = "std")]
    pub fn open_file(path: &std::path::Path) -> Result<Self> {
        let bytes = super::checkpoint::read_shared(path)?;
        Self::from_bytes(&path.display().to_string(), bytes)
    }

    /// Open `pytorch_model.bin`, or the shards of `pytorch_model.bin.index.json`, in `dir`.
    #[cfg(feature = "std")]
    pub fn open_dir(dir: &std::path::Path) -> Result<Self> {
        let index = dir.join("pytorch_model.bin.index.json");
        if !index.is_file() {
            return Self::open_file(&dir.join("pytorch_model.bin"));
        }
        let shown = index.display().to_string();
        let mut all = PtCheckpoint {
            path: shown.clone(),
            tensors: BTreeMap::new(),
        };
        for name in super::checkpoint::shard_names(&index)? {
            let shard = Self::open_file(&dir.join(&name))?;
            for (k, v) in shard.tensors {
                if all.tensors.insert(k.clone(), v).is_some() {
                    return Err(Error::checkpoint(
                        shown,
                        format!("tensor `{k}` appears in two shards"),
                    ));
                }
            }
        }
        Ok(all)
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&RawTensor> {
        self.tensors.get(name)
    }

    /// Decode the float tensors to f32 weights (aligned contiguous f32 stays borrowed from the
    /// map); integer buffers, which no model reads, are left out.
    pub fn into_checkpoint(self) -> Result<Checkpoint> {
        let mut weights = std::collections::HashMap::new();
        for (name, raw) in &self.tensors {
            if matches!(raw.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
                weights.insert(name.clone(), raw.to_weight(&self.path, name)?);
            }
        }
        Ok(Checkpoint::from_weights(self.path, weights))
    }
}

impl TensorSource for PtCheckpoint {
    fn source_path(&self) -> String {
        self.path.clone()
    }
    fn tensor_names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }
    fn raw_tensor(&self, name: &str) -> Result<RawTensor> {
        let t = self.tensors.get(name).ok_or_else(|| Error::Tensor {
            path: self.path.clone(),
            name: name.to_string(),
            message: "missing from the checkpoint".to_string(),
        })?;
        Ok(RawTensor::owned(
            t.dtype,
            t.shape.clone(),
            t.bytes().to_vec(),
        ))
    }
}

/// True when `dir` holds PyTorch weights (`pytorch_model.bin` or its index).
#[cfg(feature = "std")]
pub fn has_pytorch_weights(dir: &std::path::Path) -> bool {
    dir.join("pytorch_model.bin").is_file() || dir.join("pytorch_model.bin.index.json").is_file()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::pickle::StorageRef;

    #[test]
    fn gather_transposes() {
        // storage [0 1 2 3 4 5] as 2x3, viewed transposed (3x2, strides (1, 3)).
        let all: Vec<u8> = (0u8..6).collect();
        assert_eq!(
            gather(&all, 0, &[3, 2], &[1, 3], 1, 6),
            vec![0, 3, 1, 4, 2, 5]
        );
    }

    #[test]
    fn view_past_storage_is_refused() {
        let bytes: SharedBytes = std::sync::Arc::new(vec![0u8; 16]);
        let t = TensorRef {
            storage: StorageRef {
                dtype: Dtype::F32,
                key: "0".into(),
                numel: 4,
            },
            offset: 2,
            shape: vec![3],
            stride: vec![1],
        };
        let e = materialize(&t, ZipEntry { start: 0, len: 16 }, &bytes, false, "f", "w");
        assert!(e.is_err());
        let huge = TensorRef {
            shape: vec![usize::MAX, 2],
            ..t
        };
        assert!(materialize(
            &huge,
            ZipEntry { start: 0, len: 16 },
            &bytes,
            false,
            "f",
            "w"
        )
        .is_err());
    }
}
