//! Merging an adapter into its base model, as peft's `merge_and_unload`: for every adapted
//! module `W += (B·A) · scaling` in f32. [`merge`] gives an ordinary f32 [`Checkpoint`]
//! (untouched tensors are shared, not copied), which the model loaders take as they take any
//! checkpoint (`summarize --adapter`); [`merge_source`] gives the tensors to write
//! (`dsum-cli merge`), each in the base's dtype or one asked for.

use std::collections::HashMap;
use std::string::{String, ToString};
use std::vec::Vec;

use safetensors::tensor::Dtype;

use super::adapter::{Adapter, LoraModule};
use crate::error::{Error, Result};
use crate::io::checkpoint::Checkpoint;
use crate::io::raw_tensor::{RawTensor, TensorSource};
use crate::tensor::Weight;

/// `W[out, in] + scaling · B[out, r] · A[r, in]`.
pub fn merged_weight(
    w: &[f32],
    a: &[f32],
    b: &[f32],
    out: usize,
    inp: usize,
    r: usize,
    scaling: f32,
) -> Vec<f32> {
    // delta = B · A = B · (Aᵀ)ᵀ, i.e. a linear layer with input B and weight Aᵀ [in, r].
    let mut at = vec![0f32; inp * r];
    for k in 0..r {
        for j in 0..inp {
            at[j * r + k] = a[k * inp + j];
        }
    }
    let mut delta = vec![0f32; out * inp];
    crate::ops::matmul::linear_forward(&mut delta, b, &at, None, out, r, inp);
    w.iter()
        .zip(&delta)
        .map(|(&w, &d)| w + d * scaling)
        .collect()
}

/// The error for adapter module `m` whose weight the base model lacks.
fn missing_weight(m: &LoraModule, adapter_path: &str, base_path: &str) -> Error {
    Error::checkpoint(
        adapter_path,
        format!(
            "adapter module `{}` has no weight `{}.weight` in the base model {base_path} \
             (an adapter trained on another model?)",
            m.path, m.path
        ),
    )
}

/// Module `m`'s merged weight from its base weight `w`; an error names the module when the
/// shapes disagree.
fn merged_module(w: &Weight, m: &LoraModule, scaling: f32, adapter_path: &str) -> Result<Weight> {
    let (r, inp, out) = (m.a.shape[0], m.a.shape[1], m.b.shape[0]);
    if w.shape != [out, inp] {
        return Err(Error::checkpoint(
            adapter_path,
            format!(
                "adapter module `{}` is [{out}, {inp}] but the base weight is {:?} \
                 (an adapter trained on another model?)",
                m.path, w.shape
            ),
        ));
    }
    let merged = merged_weight(w, &m.a, &m.b, out, inp, r, scaling);
    Ok(Weight::from_vec(vec![out, inp], merged))
}

/// The base checkpoint with the adapter merged in, every tensor f32.
pub fn merge(base: &Checkpoint, adapter: &Adapter, adapter_path: &str) -> Result<Checkpoint> {
    let scaling = adapter.config.scaling();
    let mut weights: HashMap<String, Weight> = HashMap::new();
    for name in base.names() {
        let shape = base.shape(name).map(|s| s.to_vec()).unwrap_or_default();
        weights.insert(name.to_string(), base.get(name, &shape)?);
    }
    for m in &adapter.modules {
        let key = format!("{}.weight", m.path);
        let w = weights
            .get(&key)
            .ok_or_else(|| missing_weight(m, adapter_path, base.path()))?;
        let merged = merged_module(w, m, scaling, adapter_path)?;
        weights.insert(key, merged);
    }
    Ok(Checkpoint::from_weights(base.path().to_string(), weights))
}

/// The dtype a merged model is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeDtype {
    /// Each tensor in the dtype the base stores it in: what peft's `merge_and_unload` and
    /// `save_pretrained` write for a model loaded in its own dtype.
    Base,
    F32,
    Bf16,
    F16,
}

impl MergeDtype {
    /// `base`, `f32` / `float32`, `bf16` / `bfloat16`, `f16` / `float16`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "base" => Self::Base,
            "f32" | "float32" => Self::F32,
            "bf16" | "bfloat16" => Self::Bf16,
            "f16" | "float16" => Self::F16,
            _ => return None,
        })
    }

    /// The dtype a float tensor stored as `stored` is written in.
    fn of(self, stored: Dtype) -> Dtype {
        match self {
            Self::Base => stored,
            Self::F32 => Dtype::F32,
            Self::Bf16 => Dtype::BF16,
            Self::F16 => Dtype::F16,
        }
    }
}

/// `values` as little-endian `dtype` bytes, each rounded once to nearest even (as torch's
/// `.to(dtype)`). `dtype` is F32, BF16 or F16.
fn encode(values: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::BF16 => values
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
        Dtype::F16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn is_float(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F32 | Dtype::BF16 | Dtype::F16)
}

/// The tensors of a base model with an adapter merged in, for writing: merged weights are
/// computed in f32 from the base's values and rounded once to the output dtype (peft, on a
/// bf16 model with its f32 adapter weights, adds the f32 delta to the bf16 weight the same
/// way); untouched tensors keep their bytes when their dtype is kept. Each merged weight is
/// computed when it is asked for, so no f32 copy of the whole model is ever held.
pub struct MergedSource<'a> {
    base: &'a dyn TensorSource,
    modules: HashMap<String, &'a LoraModule>,
    scaling: f32,
    adapter_path: String,
    dtype: MergeDtype,
}

/// [`MergedSource`] of `base` and `adapter`. An adapter module without a base weight is an
/// error here; one whose shape disagrees, when its tensor is read (before anything is written).
pub fn merge_source<'a>(
    base: &'a dyn TensorSource,
    adapter: &'a Adapter,
    adapter_path: &str,
    dtype: MergeDtype,
) -> Result<MergedSource<'a>> {
    let names: std::collections::HashSet<String> = base.tensor_names().into_iter().collect();
    let mut modules = HashMap::new();
    for m in &adapter.modules {
        let key = format!("{}.weight", m.path);
        if !names.contains(&key) {
            return Err(missing_weight(m, adapter_path, &base.source_path()));
        }
        modules.insert(key, m);
    }
    Ok(MergedSource {
        base,
        modules,
        scaling: adapter.config.scaling(),
        adapter_path: adapter_path.to_string(),
        dtype,
    })
}

impl TensorSource for MergedSource<'_> {
    fn source_path(&self) -> String {
        self.base.source_path()
    }
    fn tensor_names(&self) -> Vec<String> {
        self.base.tensor_names()
    }
    fn raw_tensor(&self, name: &str) -> Result<RawTensor> {
        let raw = self.base.raw_tensor(name)?;
        let dtype = self.dtype.of(raw.dtype);
        if let Some(m) = self.modules.get(name) {
            let w = raw.to_weight(&self.base.source_path(), name)?;
            let w = merged_module(&w, m, self.scaling, &self.adapter_path)?;
            return Ok(RawTensor::owned(dtype, w.shape.clone(), encode(&w, dtype)));
        }
        if dtype == raw.dtype || !is_float(raw.dtype) {
            return Ok(raw);
        }
        let w = raw.to_weight(&self.base.source_path(), name)?;
        Ok(RawTensor::owned(
            dtype,
            raw.shape.clone(),
            encode(&w, dtype),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_weight_matches_the_definition() {
        let (out, inp, r) = (3, 4, 2);
        let w: Vec<f32> = (0..12).map(|i| i as f32 * 0.1).collect();
        let a: Vec<f32> = (0..8).map(|i| (i as f32 - 3.0) * 0.2).collect();
        let b: Vec<f32> = (0..6).map(|i| (i as f32 + 1.0) * 0.3).collect();
        let m = merged_weight(&w, &a, &b, out, inp, r, 2.0);
        for o in 0..out {
            for j in 0..inp {
                let d: f32 = (0..r).map(|k| b[o * r + k] * a[k * inp + j]).sum();
                assert!((m[o * inp + j] - (w[o * inp + j] + 2.0 * d)).abs() < 1e-6);
            }
        }
    }
}
