//! AdamW with `torch.optim.AdamW`'s exact arithmetic (the single-tensor CPU path): decoupled
//! weight decay `p *= 1 - lr·wd`, `m.lerp_(g, 1-β1)` (fused multiply-add, as torch's
//! vectorized kernel), `v = β2·v + (1-β2)·g²`, bias
//! corrections in f64 as Python computes them, `p -= lr/bc1 · m / (√v/√bc2 + eps)`, with
//! every per-element operation in f32 in torch's order. Weight decay skips biases and norm
//! weights, as transformers' Trainer groups parameters.

use serde::{Deserialize, Serialize};

use super::Param;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// transformers' TrainingArguments defaults.
    fn default() -> Self {
        AdamWConfig {
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// The moments of one parameter (`exp_avg`, `exp_avg_sq` in torch's state dict).
#[derive(Clone, Debug, PartialEq)]
pub struct Moments {
    pub exp_avg: Vec<f32>,
    pub exp_avg_sq: Vec<f32>,
}

pub struct AdamW {
    pub config: AdamWConfig,
    /// Optimizer steps taken (torch's per-param `step`, identical for all params here).
    pub step: u64,
    pub state: Vec<Moments>,
    /// Per param: whether weight decay applies.
    pub decay: Vec<bool>,
}

/// transformers' `get_decay_parameter_names` patterns: no decay for biases and
/// LayerNorm / RMSNorm weights (`bias`, `layernorm`, `rmsnorm`, `.norm.`, `_norm.`).
pub fn decays(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    let norm_component = n.split('.').any(|c| c == "norm" || c.ends_with("_norm"));
    !(n.contains("bias") || n.contains("layernorm") || n.contains("rmsnorm") || norm_component)
}

impl AdamW {
    pub fn new(config: AdamWConfig, params: &[&mut Param]) -> Self {
        AdamW {
            config,
            step: 0,
            state: params
                .iter()
                .map(|p| Moments {
                    exp_avg: vec![0.0; p.value.len()],
                    exp_avg_sq: vec![0.0; p.value.len()],
                })
                .collect(),
            decay: params.iter().map(|p| decays(&p.name)).collect(),
        }
    }

    /// One update of every param with its gradient at learning rate `lr`.
    pub fn step(&mut self, params: &mut [&mut Param], lr: f64) {
        debug_assert_eq!(params.len(), self.state.len());
        self.step += 1;
        let (b1, b2) = self.config.betas;
        let t = self.step as f64;
        let bc1 = 1.0 - b1.powf(t);
        let bc2 = 1.0 - b2.powf(t);
        let step_size = (lr / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let eps = self.config.eps as f32;
        let w1 = (1.0 - b1) as f32;
        let (b2f, w2) = (b2 as f32, (1.0 - b2) as f32);
        let shrink = (1.0 - lr * self.config.weight_decay) as f32;
        for ((p, s), &decay) in params.iter_mut().zip(&mut self.state).zip(&self.decay) {
            let apply_decay = decay && self.config.weight_decay != 0.0;
            for i in 0..p.value.len() {
                let g = p.grad[i];
                let mut x = p.value[i];
                if apply_decay {
                    x *= shrink;
                }
                let m = s.exp_avg[i];
                // torch's vectorized lerp (weight < 0.5): fmadd(w, g - m, m).
                let m = w1.mul_add(g - m, m);
                let v = s.exp_avg_sq[i] * b2f;
                let v = v + w2 * g * g;
                let denom = v.sqrt() / bc2_sqrt + eps;
                x += (-step_size * m) / denom; // addcdiv: self + value * t1 / t2
                s.exp_avg[i] = m;
                s.exp_avg_sq[i] = v;
                p.value[i] = x;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_groups_follow_transformers() {
        for n in [
            "model.encoder.layers.0.fc1.bias",
            "model.encoder.layers.0.self_attn_layer_norm.weight",
            "model.encoder.layernorm_embedding.weight",
            "model.layers.0.input_layernorm.weight",
            "model.norm.weight",
            "model.layers.0.self_attn.q_norm.weight",
        ] {
            assert!(!decays(n), "{n}");
        }
        for n in [
            "model.encoder.layers.0.fc1.weight",
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
            "model.shared.weight",
            "model.normalizer.weight",
        ] {
            assert!(decays(n), "{n}");
        }
    }
}
