//! Where a model trains. [`TrainBackend`] holds the forward and backward steps of the
//! training passes (`models/llama_train.rs`, `models/bart_train.rs`), so the same hand-written
//! backward runs on the CPU ([`Cpu`](super::Cpu): the `ops` functions, exactly as before) and
//! on a GPU ([`Cuda`](super::Cuda): the dsum-kernels launchers that mirror them).
//!
//! The host [`Param`](crate::train::Param)s stay the master copy: the training loop's
//! optimizer, clipping and checkpoints never see the device. A backend keeps its own copy of
//! each weight next to the host one; [`TrainBackend::push_slot`] refreshes it after the loop
//! changed the host values, and [`TrainBackend::pull_slot`] adds the gradients it accumulated
//! into the host `Param::grad`s at the end of a micro-batch.

use crate::error::Result;
use crate::ops::activation::Activation;
use crate::ops::attention::TrainAttn;
use crate::train::linear::{Slot, TrainLinear};

/// The steps of a teacher-forced training forward pass and its backward pass.
///
/// Gradients named `d…` are w.r.t. the step's output (`dy`) or input (`dx`); a backward
/// step adds into `dx` (the residual stream's gradient) unless it returns new tensors, and
/// adds weight gradients into the backend's copy of the trainable weight.
pub trait TrainBackend {
    /// f32 activations, row-major.
    type T;
    /// A norm or embedding weight, frozen or trainable (wraps the host [`Slot`]).
    type Slot;
    /// A linear layer with its base, bias and LoRA adapter (wraps the host [`TrainLinear`]).
    type Linear;
    /// What a linear layer's forward keeps for its backward.
    type LinCache;
    /// The attention probabilities the backward pass needs.
    type Probs;
    /// LayerNorm's per-row statistics.
    type LnStats;
    /// Token ids `[R, T]` of a batch, with the position of each (its column).
    type Ids;
    /// A key mask `[R, S]` (false: padding).
    type Mask;
    /// Cross-entropy targets (-100: not counted).
    type Targets;

    // ---- weights --------------------------------------------------------------------------
    fn slot(&self, s: Slot) -> Result<Self::Slot>;
    fn linear(&self, l: TrainLinear) -> Result<Self::Linear>;
    fn host_slot(s: &Self::Slot) -> &Slot;
    fn host_slot_mut(s: &mut Self::Slot) -> &mut Slot;
    fn host_linear(l: &Self::Linear) -> &TrainLinear;
    fn host_linear_mut(l: &mut Self::Linear) -> &mut TrainLinear;
    /// The backend's copy of the trainable values := the host values.
    fn push_slot(&self, s: &mut Self::Slot) -> Result<()>;
    fn push_linear(&self, l: &mut Self::Linear) -> Result<()>;
    /// Host gradients += the backend's; the backend's := 0.
    fn pull_slot(&self, s: &mut Self::Slot) -> Result<()>;
    fn pull_linear(&self, l: &mut Self::Linear) -> Result<()>;

    // ---- inputs ---------------------------------------------------------------------------
    fn upload(&self, host: &[f32]) -> Result<Self::T>;
    /// Token ids of rows of `cols` tokens.
    fn ids(&self, ids: &[u32], cols: usize) -> Result<Self::Ids>;
    /// The ids `offset + column` of `n` tokens in rows of `cols` (BART's learned positions).
    fn positions(&self, n: usize, cols: usize, offset: usize) -> Result<Self::Ids>;
    fn mask(&self, mask: &[bool]) -> Result<Self::Mask>;
    fn targets(&self, targets: &[i64]) -> Result<Self::Targets>;

    // ---- elementwise ----------------------------------------------------------------------
    fn zeros(&self, n: usize) -> Result<Self::T>;
    fn copy(&self, x: &Self::T) -> Result<Self::T>;
    /// x += y.
    fn add(&self, x: &mut Self::T, y: &Self::T) -> Result<()>;
    /// Every row of x [R, c] += bias [c].
    fn add_rows(&self, x: &mut Self::T, bias: &[f32], c: usize) -> Result<()>;
    /// Inverted dropout in place with the mask of `seed` (the same call on a gradient is the
    /// backward pass).
    fn dropout(&self, x: &mut Self::T, p: f32, seed: u64) -> Result<()>;

    // ---- the steps, forward and backward side by side ---------------------------------------
    /// out[N, C] = table[ids] · scale (an error names an id past the table).
    fn embedding(
        &self,
        table: &Self::Slot,
        ids: &Self::Ids,
        c: usize,
        scale: f32,
    ) -> Result<Self::T>;
    /// dtable[ids] += dx · scale when the table trains.
    fn embedding_backward(
        &self,
        table: &mut Self::Slot,
        dx: &Self::T,
        ids: &Self::Ids,
        c: usize,
        scale: f32,
    ) -> Result<()>;

    /// LayerNorm with bias of every row of `x` [R, c]: the output and the row statistics.
    fn layernorm(
        &self,
        x: &Self::T,
        w: &Self::Slot,
        b: &Self::Slot,
        c: usize,
        eps: f32,
    ) -> Result<(Self::T, Self::LnStats)>;
    /// d(input) for d(output) `dy`; the weight and bias gradients when they train.
    #[allow(clippy::too_many_arguments)]
    fn layernorm_backward(
        &self,
        w: &mut Self::Slot,
        b: &mut Self::Slot,
        dy: &Self::T,
        x: &Self::T,
        st: &Self::LnStats,
        c: usize,
    ) -> Result<Self::T>;

    /// x = act(x) in place.
    fn act(&self, x: &mut Self::T, act: Activation) -> Result<()>;
    /// d *= act'(x).
    fn act_backward(&self, d: &mut Self::T, x: &Self::T, act: Activation) -> Result<()>;

    /// RMSNorm of every row of `x` [R, c]: the output and 1/rms per row.
    fn rmsnorm(
        &self,
        x: &Self::T,
        w: &Self::Slot,
        c: usize,
        eps: f32,
    ) -> Result<(Self::T, Self::T)>;
    #[allow(clippy::too_many_arguments)]
    fn rmsnorm_backward(
        &self,
        dx: &mut Self::T,
        w: &mut Self::Slot,
        dy: &Self::T,
        x: &Self::T,
        rstd: &Self::T,
        c: usize,
    ) -> Result<()>;

    /// y[M, out]; `seed` is Some while training with LoRA dropout on.
    fn linear_forward(
        &self,
        l: &Self::Linear,
        x: &Self::T,
        m: usize,
        seed: Option<u64>,
    ) -> Result<(Self::T, Self::LinCache)>;
    fn linear_backward(
        &self,
        l: &mut Self::Linear,
        dx: Option<&mut Self::T>,
        dy: &Self::T,
        x: &Self::T,
        cache: &Self::LinCache,
        m: usize,
    ) -> Result<()>;

    /// logits[N, V] = x · tableᵀ (the output projection tied to the embedding table [V, C]).
    fn tied_logits(
        &self,
        x: &Self::T,
        table: &Self::Slot,
        n: usize,
        c: usize,
        v: usize,
    ) -> Result<Self::T>;
    #[allow(clippy::too_many_arguments)]
    fn tied_logits_backward(
        &self,
        dx: &mut Self::T,
        table: &mut Self::Slot,
        dlogits: &Self::T,
        x: &Self::T,
        n: usize,
        c: usize,
        v: usize,
    ) -> Result<()>;

    /// Rotary embedding of every head vector of `x` [N, heads, dh] at its token's position.
    fn rope(
        &self,
        x: &mut Self::T,
        inv_freq: &Self::T,
        ids: &Self::Ids,
        heads: usize,
        dh: usize,
    ) -> Result<()>;
    /// In place: `d` holds the output's gradient on entry, the input's on exit.
    fn rope_backward(
        &self,
        d: &mut Self::T,
        inv_freq: &Self::T,
        ids: &Self::Ids,
        heads: usize,
        dh: usize,
    ) -> Result<()>;

    /// Attention of q [R·T, H·dh] over k, v [R·S, KV·dh], masked keys never attended.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        q: &Self::T,
        k: &Self::T,
        v: &Self::T,
        mask: Option<&Self::Mask>,
        rows: usize,
        a: &TrainAttn,
    ) -> Result<(Self::T, Self::Probs)>;
    /// (dq, dk, dv) for the output gradient `dout`.
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        dout: &Self::T,
        probs: &Self::Probs,
        q: &Self::T,
        k: &Self::T,
        v: &Self::T,
        rows: usize,
        a: &TrainAttn,
    ) -> Result<(Self::T, Self::T, Self::T)>;

    /// act(gate) · up over [N, f].
    fn glu(&self, g: &Self::T, u: &Self::T, f: usize, act: Activation) -> Result<Self::T>;
    /// (dgate, dup).
    fn glu_backward(
        &self,
        da: &Self::T,
        g: &Self::T,
        u: &Self::T,
        f: usize,
        act: Activation,
    ) -> Result<(Self::T, Self::T)>;

    /// Σ of the token cross-entropies of the counted targets and their count; the logits are
    /// replaced by d(scale · Σ)/dlogits.
    fn cross_entropy_backward(
        &self,
        logits: &mut Self::T,
        t: &Self::Targets,
        v: usize,
        scale: f32,
    ) -> Result<(f64, usize)>;
    /// The same sum and count, logits untouched.
    fn cross_entropy(&self, logits: &Self::T, t: &Self::Targets, v: usize) -> Result<(f64, usize)>;
}
