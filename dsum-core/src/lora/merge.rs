//! Merging an adapter into its base model, as peft's `merge_and_unload`: for every adapted
//! module `W += (B·A) · scaling` in f32. The result is an ordinary [`Checkpoint`]
//! (untouched tensors are shared, not copied), which the model loaders take as they take
//! any checkpoint: this is how `summarize --adapter` and `dsum-cli merge` work.

use std::collections::HashMap;

use super::adapter::Adapter;
use crate::error::{Error, Result};
use crate::io::checkpoint::Checkpoint;
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

/// The base checkpoint with the adapter merged in. Errors name the adapter module that
/// has no matching weight or whose shape disagrees with the base.
pub fn merge(base: &Checkpoint, adapter: &Adapter, adapter_path: &str) -> Result<Checkpoint> {
    let scaling = adapter.config.scaling();
    let mut weights: HashMap<String, Weight> = HashMap::new();
    for name in base.names() {
        let shape = base.shape(name).map(|s| s.to_vec()).unwrap_or_default();
        weights.insert(name.to_string(), base.get(name, &shape)?);
    }
    for m in &adapter.modules {
        let key = format!("{}.weight", m.path);
        let Some(w) = weights.get(&key) else {
            return Err(Error::checkpoint(
                adapter_path,
                format!(
                    "adapter module `{}` has no weight `{key}` in the base model {} \
                     (an adapter trained on another model?)",
                    m.path,
                    base.path()
                ),
            ));
        };
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
        weights.insert(key, Weight::from_vec(vec![out, inp], merged));
    }
    Ok(Checkpoint::from_weights(base.path().to_string(), weights))
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
