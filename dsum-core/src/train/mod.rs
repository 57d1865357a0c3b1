//! Training: the contract between trainable models (LoRA / full fine-tuning of BART and
//! Llama-family models) and the loop that drives them (optimizer, schedule, clipping,
//! accumulation, evaluation, checkpoints).
//!
//! A model owns its trainable [`Param`]s (value and gradient side by side, llm.c style) and
//! computes one micro-batch's forward and backward by hand; the loop never sees activations.

use crate::error::Result;
use crate::tensor::Weight;

/// One trainable tensor. `name` is the key it is saved under: PEFT key names for adapters
/// (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`), checkpoint names
/// for full fine-tuning (`model.encoder.layers.0.fc1.weight`).
pub struct Param {
    pub name: String,
    pub shape: Vec<usize>,
    pub value: Vec<f32>,
    pub grad: Vec<f32>,
}

impl Param {
    pub fn new(name: impl Into<String>, shape: Vec<usize>, value: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), value.len());
        let grad = vec![0f32; value.len()];
        Param {
            name: name.into(),
            shape,
            value,
            grad,
        }
    }

    pub fn zero_grad(&mut self) {
        self.grad.iter_mut().for_each(|g| *g = 0.0);
    }
}

/// Label value that the cross-entropy skips (PyTorch's `ignore_index`).
pub const IGNORE: i64 = -100;

/// A padded micro-batch of `rows` examples, right-padded.
///
/// Causal LMs: `input_ids`/`attention_mask` are `[rows, cols]` and `labels` is `[rows, cols]`
/// aligned with `input_ids` (the model shifts: position t predicts label t+1, as
/// transformers' `ForCausalLMLoss` does).
/// BART: `input_ids`/`attention_mask` are the encoder's `[rows, cols]`;
/// `decoder_input_ids` and `labels` are `[rows, dec_cols]`, not shifted (position t predicts
/// label t).
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub rows: usize,
    pub cols: usize,
    pub input_ids: Vec<u32>,
    pub attention_mask: Vec<bool>,
    pub dec_cols: usize,
    pub decoder_input_ids: Vec<u32>,
    pub labels: Vec<i64>,
}

impl Batch {
    /// Labels that count towards the loss (for causal LMs after the shift).
    pub fn counted_tokens(&self, causal: bool) -> usize {
        if causal {
            self.labels
                .chunks(self.cols.max(1))
                .map(|r| r.iter().skip(1).filter(|&&l| l != IGNORE).count())
                .sum()
        } else {
            self.labels.iter().filter(|&&l| l != IGNORE).count()
        }
    }
}

/// What a micro-batch contributed: the sum of token cross-entropies and how many tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LossSum {
    pub sum: f64,
    pub tokens: usize,
}

/// A model the training loop can drive.
pub trait Trainable {
    /// True for decoder-only models (labels are shifted inside the loss).
    fn is_causal(&self) -> bool;

    /// The trainable parameters, always in the same order.
    fn params(&self) -> Vec<&Param>;
    fn params_mut(&mut self) -> Vec<&mut Param>;

    /// Dropout on (training, with `seed` feeding this micro-batch's masks) or off.
    fn set_dropout_seed(&mut self, seed: Option<u64>);

    /// Forward and backward on one micro-batch: adds `scale * d(sum of token CE)/dθ` to every
    /// `Param::grad` (the loop passes `scale = 1 / counted tokens of the whole accumulation
    /// window`, so gradients are those of the window's mean loss).
    fn accumulate(&mut self, batch: &Batch, scale: f32) -> Result<LossSum>;

    /// Loss only, no gradients, dropout off (`&mut`: a device backend may first copy
    /// parameter values the loop changed).
    fn eval_loss(&mut self, batch: &Batch) -> Result<LossSum>;

    /// Every weight of the full model with the current parameters applied (LoRA merged), by
    /// checkpoint name: what generation for evaluation and the final export are built from.
    fn merged_weights(&self) -> Result<Vec<(String, Weight)>>;
}

pub mod clip;
pub mod data;
pub mod linear;
pub mod method;
pub mod optim;
pub mod rng;
pub mod schedule;
pub mod setup;

#[cfg(feature = "std")]
pub mod metrics;
#[cfg(feature = "std")]
pub mod models;
#[cfg(feature = "std")]
pub mod state;
#[cfg(feature = "std")]
pub mod tensorboard;
#[cfg(feature = "std")]
pub mod trainer;
