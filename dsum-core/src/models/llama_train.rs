//! Llama / Qwen2 / Qwen3 for training: a teacher-forced forward over a right-padded batch
//! that keeps what the backward pass needs, and that backward pass, written by hand
//! (llm.c style). Trainable weights are whatever the [`Setup`] makes them: LoRA adapters on
//! frozen (or NF4) bases, or every weight for full fine-tuning.
//!
//! The passes are written once over a [`TrainBackend`]: the CPU by default, the GPU with
//! [`LlamaTrain::load_on`] and a CUDA backend.

use super::llama::{Family, LlamaConfig};
use crate::backend::train::TrainBackend;
use crate::backend::Cpu;
use crate::error::{Error, Result};
use crate::io::checkpoint::Checkpoint;
use crate::ops::activation::Activation;
use crate::ops::attention::TrainAttn;
use crate::ops::rope::inv_freq;
use crate::tensor::Weight;
use crate::train::setup::{check_targets, make_linear, make_slot, Setup};
use crate::train::{Batch, LossSum, Param, Trainable, IGNORE};

/// The linear modules `all-linear` covers (lm_head excluded, as peft does).
pub const LLAMA_LINEAR: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

struct Layer<B: TrainBackend> {
    ln1: B::Slot,
    q: B::Linear,
    k: B::Linear,
    v: B::Linear,
    o: B::Linear,
    q_norm: Option<B::Slot>,
    k_norm: Option<B::Slot>,
    ln2: B::Slot,
    gate: B::Linear,
    up: B::Linear,
    down: B::Linear,
}

impl<B: TrainBackend> Layer<B> {
    fn slots_mut(&mut self) -> impl Iterator<Item = &mut B::Slot> {
        [
            Some(&mut self.ln1),
            self.q_norm.as_mut(),
            self.k_norm.as_mut(),
            Some(&mut self.ln2),
        ]
        .into_iter()
        .flatten()
    }
    fn linears_mut(&mut self) -> [&mut B::Linear; 7] {
        [
            &mut self.q,
            &mut self.k,
            &mut self.v,
            &mut self.o,
            &mut self.gate,
            &mut self.up,
            &mut self.down,
        ]
    }
}

pub struct LlamaTrain<B: TrainBackend = Cpu> {
    pub config: LlamaConfig,
    backend: B,
    act: Activation,
    embed: B::Slot,
    layers: Vec<Layer<B>>,
    norm: B::Slot,
    /// Untied output projection (None: tied to `embed`).
    lm_head: Option<B::Linear>,
    inv_freq: B::T,
    dropout_seed: Option<u64>,
    /// The host values changed (optimizer step, resume) since the backend last copied them.
    stale: bool,
}

/// Activations of one layer kept for the backward pass.
struct LayerCache<B: TrainBackend> {
    x_in: B::T,
    n1: B::T,
    rstd1: B::T,
    /// Qwen3: q/k before their per-head RMSNorm, and its 1/rms.
    q_pre: Option<(B::T, B::T)>,
    k_pre: Option<(B::T, B::T)>,
    q: B::T,
    k: B::T,
    v: B::T,
    probs: B::Probs,
    att: B::T,
    cq: B::LinCache,
    ck: B::LinCache,
    cv: B::LinCache,
    co: B::LinCache,
    h1: B::T,
    n2: B::T,
    rstd2: B::T,
    g: B::T,
    u: B::T,
    a: B::T,
    cg: B::LinCache,
    cu: B::LinCache,
    cd: B::LinCache,
}

/// A micro-batch on the backend: token ids, key mask, shifted targets.
struct Inputs<B: TrainBackend> {
    ids: B::Ids,
    mask: B::Mask,
    targets: B::Targets,
}

fn seed_for(seed: Option<u64>, layer: usize, slot: u64) -> Option<u64> {
    seed.map(|s| s ^ ((layer as u64 + 1) << 32) ^ slot.wrapping_mul(0x9E37_79B9))
}

fn slot_param<B: TrainBackend>(s: &B::Slot) -> Option<&Param> {
    B::host_slot(s).param()
}
fn slot_param_mut<B: TrainBackend>(s: &mut B::Slot) -> Option<&mut Param> {
    B::host_slot_mut(s).param_mut()
}
fn linear_params<B: TrainBackend>(l: &B::Linear) -> Vec<&Param> {
    B::host_linear(l).params()
}
fn linear_params_mut<B: TrainBackend>(l: &mut B::Linear) -> Vec<&mut Param> {
    B::host_linear_mut(l).params_mut()
}

impl LlamaTrain<Cpu> {
    /// Load for training on the CPU.
    pub fn load(config: LlamaConfig, ck: &Checkpoint, setup: &Setup) -> Result<Self> {
        Self::load_on(Cpu, config, ck, setup)
    }
}

impl<B: TrainBackend> LlamaTrain<B> {
    /// Load for training on `backend` (weights made resident there once).
    pub fn load_on(
        backend: B,
        config: LlamaConfig,
        ck: &Checkpoint,
        setup: &Setup,
    ) -> Result<Self> {
        let family = config.family().map_err(|m| Error::config(ck.path(), m))?;
        let c = &config;
        let (hs, v, f) = (c.hidden_size, c.vocab_size, c.intermediate_size);
        let (h, kv, dh) = (c.num_attention_heads, c.kv_heads(), c.head_dim());
        let qkv_bias = family == Family::Qwen2 || c.attention_bias;
        let mut modules = Vec::new();
        for i in 0..c.num_hidden_layers {
            for m in [
                "self_attn.q_proj",
                "self_attn.k_proj",
                "self_attn.v_proj",
                "self_attn.o_proj",
            ] {
                modules.push(format!("model.layers.{i}.{m}"));
            }
            for m in ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"] {
                modules.push(format!("model.layers.{i}.{m}"));
            }
        }
        check_targets(setup, &modules, &LLAMA_LINEAR)?;
        let lin = |name: &str, out, inp, bias| {
            backend.linear(make_linear(ck, name, out, inp, bias, setup, &LLAMA_LINEAR)?)
        };
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let norm = |n: &str, d: usize| {
                backend.slot(make_slot(ck, &format!("{p}.{n}.weight"), &[d], setup)?)
            };
            let qwen3 = family == Family::Qwen3;
            layers.push(Layer {
                ln1: norm("input_layernorm", hs)?,
                q: lin(&format!("{p}.self_attn.q_proj"), h * dh, hs, qkv_bias)?,
                k: lin(&format!("{p}.self_attn.k_proj"), kv * dh, hs, qkv_bias)?,
                v: lin(&format!("{p}.self_attn.v_proj"), kv * dh, hs, qkv_bias)?,
                o: lin(
                    &format!("{p}.self_attn.o_proj"),
                    hs,
                    h * dh,
                    c.attention_bias,
                )?,
                q_norm: if qwen3 {
                    Some(norm("self_attn.q_norm", dh)?)
                } else {
                    None
                },
                k_norm: if qwen3 {
                    Some(norm("self_attn.k_norm", dh)?)
                } else {
                    None
                },
                ln2: norm("post_attention_layernorm", hs)?,
                gate: lin(&format!("{p}.mlp.gate_proj"), f, hs, false)?,
                up: lin(&format!("{p}.mlp.up_proj"), f, hs, false)?,
                down: lin(&format!("{p}.mlp.down_proj"), hs, f, false)?,
            });
        }
        let lm_head = if c.tie_word_embeddings && !ck.contains("lm_head.weight") {
            None
        } else {
            // Never a LoRA target (peft's all-linear skips the output layer); trains in full FT.
            let mut s = Setup {
                targets: vec![],
                init_adapter: None,
                quantizer: None,
                ..*setup
            };
            if s.kind != crate::train::setup::Kind::Full {
                s.kind = crate::train::setup::Kind::Lora;
            }
            Some(backend.linear(make_linear(ck, "lm_head", v, hs, false, &s, &[])?)?)
        };
        let embed = backend.slot(make_slot(ck, "model.embed_tokens.weight", &[v, hs], setup)?)?;
        let norm = backend.slot(make_slot(ck, "model.norm.weight", &[hs], setup)?)?;
        let inv_freq = backend.upload(&inv_freq(dh, c.rope_theta, c.rope_scaling.as_ref())?)?;
        Ok(LlamaTrain {
            act: Activation::from_name(&c.hidden_act)?,
            embed,
            norm,
            lm_head,
            inv_freq,
            layers,
            config,
            backend,
            dropout_seed: None,
            stale: false,
        })
    }

    fn dims(&self) -> (usize, usize, usize, usize, usize) {
        let c = &self.config;
        (
            c.hidden_size,
            c.num_attention_heads,
            c.kv_heads(),
            c.head_dim(),
            c.vocab_size,
        )
    }

    fn check_batch(&self, b: &Batch) -> Result<()> {
        let n = b.rows * b.cols;
        if b.input_ids.len() != n || b.attention_mask.len() != n || b.labels.len() != n {
            return Err(Error::Generation(
                "batch tensors do not match [rows, cols]".into(),
            ));
        }
        if b.cols > self.config.max_position_embeddings {
            return Err(Error::Generation(format!(
                "sequence length {} exceeds max_position_embeddings {}",
                b.cols, self.config.max_position_embeddings
            )));
        }
        Ok(())
    }

    /// Shifted targets: position t predicts labels[t+1]; the last position predicts nothing.
    fn targets(b: &Batch) -> Vec<i64> {
        let mut t = vec![IGNORE; b.labels.len()];
        for r in 0..b.rows {
            for i in 0..b.cols.saturating_sub(1) {
                t[r * b.cols + i] = b.labels[r * b.cols + i + 1];
            }
        }
        t
    }

    fn attn(&self, cols: usize) -> TrainAttn {
        let (_, h, kv, dh, _) = self.dims();
        TrainAttn {
            t: cols,
            s: cols,
            h,
            kv_h: kv,
            dh,
            causal: true,
            scale: (dh as f32).powf(-0.5),
        }
    }

    /// The backend's copies := the host values, when the loop changed them.
    fn refresh(&mut self) -> Result<()> {
        if !self.stale {
            return Ok(());
        }
        let bk = &self.backend;
        bk.push_slot(&mut self.embed)?;
        bk.push_slot(&mut self.norm)?;
        if let Some(h) = &mut self.lm_head {
            bk.push_linear(h)?;
        }
        for l in &mut self.layers {
            for s in l.slots_mut() {
                bk.push_slot(s)?;
            }
            for lin in l.linears_mut() {
                bk.push_linear(lin)?;
            }
        }
        self.stale = false;
        Ok(())
    }

    /// Host gradients += the backend's (a no-op on the CPU, where they are the same).
    fn pull_grads(&mut self) -> Result<()> {
        let bk = &self.backend;
        bk.pull_slot(&mut self.embed)?;
        bk.pull_slot(&mut self.norm)?;
        if let Some(h) = &mut self.lm_head {
            bk.pull_linear(h)?;
        }
        for l in &mut self.layers {
            for s in l.slots_mut() {
                bk.pull_slot(s)?;
            }
            for lin in l.linears_mut() {
                bk.pull_linear(lin)?;
            }
        }
        Ok(())
    }

    /// Per-head RMSNorm (Qwen3 q_norm / k_norm) then RoPE at each row's position; returns
    /// the input of the norm and its 1/rms when there is one.
    fn norm_rope(
        &self,
        x: &mut B::T,
        heads: usize,
        w: Option<&B::Slot>,
        ids: &B::Ids,
    ) -> Result<Option<(B::T, B::T)>> {
        let dh = self.config.head_dim();
        let mut pre = None;
        if let Some(w) = w {
            let (y, rstd) = self.backend.rmsnorm(x, w, dh, self.config.rms_norm_eps)?;
            pre = Some((std::mem::replace(x, y), rstd));
        }
        self.backend.rope(x, &self.inv_freq, ids, heads, dh)?;
        Ok(pre)
    }

    /// Backward of [`Self::norm_rope`]: `d` is the gradient w.r.t. the output; returns the
    /// gradient w.r.t. the input.
    fn norm_rope_backward(
        &self,
        mut d: B::T,
        heads: usize,
        w: Option<&mut B::Slot>,
        pre: Option<&(B::T, B::T)>,
        (ids, n): (&B::Ids, usize),
    ) -> Result<B::T> {
        let bk = &self.backend;
        let dh = self.config.head_dim();
        bk.rope_backward(&mut d, &self.inv_freq, ids, heads, dh)?;
        match (w, pre) {
            (Some(w), Some((x, rstd))) => {
                let mut dx = bk.zeros(n * heads * dh)?;
                bk.rmsnorm_backward(&mut dx, w, &d, x, rstd, dh)?;
                Ok(dx)
            }
            _ => Ok(d),
        }
    }

    /// Teacher-forced forward; returns the final hidden states (normed) [N, C], the input
    /// of the final norm, its 1/rms, and the per-layer caches (when `keep`).
    #[allow(clippy::type_complexity)]
    fn forward(
        &self,
        inp: &Inputs<B>,
        (rows, cols): (usize, usize),
        keep: bool,
    ) -> Result<(B::T, B::T, B::T, Vec<LayerCache<B>>)> {
        let bk = &self.backend;
        let (hs, h, kv, ..) = self.dims();
        let eps = self.config.rms_norm_eps;
        let n = rows * cols;
        let mut x = bk.embedding(&self.embed, &inp.ids, hs, 1.0)?;
        let attn = self.attn(cols);
        let mut caches = Vec::new();
        // Dropout only while training (`keep`); evaluation is deterministic.
        let seed = if keep { self.dropout_seed } else { None };
        for (li, l) in self.layers.iter().enumerate() {
            let sd = |slot| seed_for(seed, li, slot);
            let (n1, rstd1) = bk.rmsnorm(&x, &l.ln1, hs, eps)?;
            let (mut q, cq) = bk.linear_forward(&l.q, &n1, n, sd(0))?;
            let (mut k, ck) = bk.linear_forward(&l.k, &n1, n, sd(1))?;
            let (v, cv) = bk.linear_forward(&l.v, &n1, n, sd(2))?;
            let q_pre = self.norm_rope(&mut q, h, l.q_norm.as_ref(), &inp.ids)?;
            let k_pre = self.norm_rope(&mut k, kv, l.k_norm.as_ref(), &inp.ids)?;
            let (att, probs) = bk.attention(&q, &k, &v, Some(&inp.mask), rows, &attn)?;
            let (o, co) = bk.linear_forward(&l.o, &att, n, sd(3))?;
            let mut h1 = bk.copy(&x)?;
            bk.add(&mut h1, &o)?;
            let (n2, rstd2) = bk.rmsnorm(&h1, &l.ln2, hs, eps)?;
            let (g, cg) = bk.linear_forward(&l.gate, &n2, n, sd(4))?;
            let (u, cu) = bk.linear_forward(&l.up, &n2, n, sd(5))?;
            let a = bk.glu(&g, &u, self.config.intermediate_size, self.act)?;
            let (d, cd) = bk.linear_forward(&l.down, &a, n, sd(6))?;
            let mut x_out = bk.copy(&h1)?;
            bk.add(&mut x_out, &d)?;
            let x_in = std::mem::replace(&mut x, x_out);
            if keep {
                caches.push(LayerCache {
                    x_in,
                    n1,
                    rstd1,
                    q_pre,
                    k_pre,
                    q,
                    k,
                    v,
                    probs,
                    att,
                    cq,
                    ck,
                    cv,
                    co,
                    h1,
                    n2,
                    rstd2,
                    g,
                    u,
                    a,
                    cg,
                    cu,
                    cd,
                });
            }
        }
        let (nf, rstd) = bk.rmsnorm(&x, &self.norm, hs, eps)?;
        Ok((nf, x, rstd, caches))
    }

    fn logits(&self, nf: &B::T, n: usize) -> Result<(B::T, Option<B::LinCache>)> {
        let (hs, .., v) = self.dims();
        Ok(match &self.lm_head {
            Some(head) => {
                let (y, c) = self.backend.linear_forward(head, nf, n, None)?;
                (y, Some(c))
            }
            None => (self.backend.tied_logits(nf, &self.embed, n, hs, v)?, None),
        })
    }

    fn inputs(&self, b: &Batch) -> Result<Inputs<B>> {
        self.check_batch(b)?;
        let bk = &self.backend;
        Ok(Inputs {
            ids: bk.ids(&b.input_ids, b.cols)?,
            mask: bk.mask(&b.attention_mask)?,
            targets: bk.targets(&Self::targets(b))?,
        })
    }

    fn accumulate_on(&mut self, b: &Batch, scale: f32) -> Result<LossSum> {
        let (hs, h, kv, dh, v) = self.dims();
        let (rows, cols) = (b.rows, b.cols);
        let n = rows * cols;
        self.refresh()?;
        let inp = self.inputs(b)?;
        let (nf, x_last, rstd, caches) = self.forward(&inp, (rows, cols), true)?;
        let (mut logits, chead) = self.logits(&nf, n)?;
        let bk = &self.backend;
        let (sum, tokens) = bk.cross_entropy_backward(&mut logits, &inp.targets, v, scale)?;
        // Output projection.
        let mut dnf = bk.zeros(n * hs)?;
        match (&mut self.lm_head, &chead) {
            (Some(head), Some(c)) => {
                bk.linear_backward(head, Some(&mut dnf), &logits, &nf, c, n)?
            }
            _ => bk.tied_logits_backward(&mut dnf, &mut self.embed, &logits, &nf, n, hs, v)?,
        }
        drop(logits);
        let mut dx = bk.zeros(n * hs)?;
        bk.rmsnorm_backward(&mut dx, &mut self.norm, &dnf, &x_last, &rstd, hs)?;
        let attn = self.attn(cols);
        let f = self.config.intermediate_size;
        for (li, c) in caches.iter().enumerate().rev() {
            let bk = &self.backend;
            // x_out = h1 + down(glu(gate(n2), up(n2))), n2 = rms(h1)
            let mut da = bk.zeros(n * f)?;
            let l = &mut self.layers[li];
            bk.linear_backward(&mut l.down, Some(&mut da), &dx, &c.a, &c.cd, n)?;
            let (dg, du) = bk.glu_backward(&da, &c.g, &c.u, f, self.act)?;
            let mut dn2 = bk.zeros(n * hs)?;
            bk.linear_backward(&mut l.gate, Some(&mut dn2), &dg, &c.n2, &c.cg, n)?;
            bk.linear_backward(&mut l.up, Some(&mut dn2), &du, &c.n2, &c.cu, n)?;
            bk.rmsnorm_backward(&mut dx, &mut l.ln2, &dn2, &c.h1, &c.rstd2, hs)?;
            // h1 = x_in + o(attn(rope(q(n1)), rope(k(n1)), v(n1))), n1 = rms(x_in)
            let mut datt = bk.zeros(n * h * dh)?;
            bk.linear_backward(&mut l.o, Some(&mut datt), &dx, &c.att, &c.co, n)?;
            let (dq, dk, dv) =
                bk.attention_backward(&datt, &c.probs, &c.q, &c.k, &c.v, rows, &attn)?;
            let (mut qn, mut kn) = (l.q_norm.take(), l.k_norm.take());
            let dq = self.norm_rope_backward(dq, h, qn.as_mut(), c.q_pre.as_ref(), (&inp.ids, n));
            let dk = self.norm_rope_backward(dk, kv, kn.as_mut(), c.k_pre.as_ref(), (&inp.ids, n));
            let l = &mut self.layers[li];
            (l.q_norm, l.k_norm) = (qn, kn);
            let (dq, dk) = (dq?, dk?);
            let bk = &self.backend;
            let mut dn1 = bk.zeros(n * hs)?;
            bk.linear_backward(&mut l.q, Some(&mut dn1), &dq, &c.n1, &c.cq, n)?;
            bk.linear_backward(&mut l.k, Some(&mut dn1), &dk, &c.n1, &c.ck, n)?;
            bk.linear_backward(&mut l.v, Some(&mut dn1), &dv, &c.n1, &c.cv, n)?;
            bk.rmsnorm_backward(&mut dx, &mut l.ln1, &dn1, &c.x_in, &c.rstd1, hs)?;
        }
        self.backend
            .embedding_backward(&mut self.embed, &dx, &inp.ids, hs, 1.0)?;
        self.pull_grads()?;
        Ok(LossSum { sum, tokens })
    }
}

impl<B: TrainBackend> Trainable for LlamaTrain<B> {
    fn is_causal(&self) -> bool {
        true
    }

    fn params(&self) -> Vec<&Param> {
        let (slot, lin) = (slot_param::<B>, linear_params::<B>);
        let mut v: Vec<&Param> = slot(&self.embed).into_iter().collect();
        for l in &self.layers {
            v.extend(slot(&l.ln1));
            for x in [&l.q, &l.k, &l.v, &l.o] {
                v.extend(lin(x));
            }
            v.extend(l.q_norm.as_ref().and_then(slot));
            v.extend(l.k_norm.as_ref().and_then(slot));
            v.extend(slot(&l.ln2));
            for x in [&l.gate, &l.up, &l.down] {
                v.extend(lin(x));
            }
        }
        v.extend(slot(&self.norm));
        if let Some(h) = &self.lm_head {
            v.extend(lin(h));
        }
        v
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        // The caller may change the values: the backend copies them again before next use.
        self.stale = true;
        let (slot, lin) = (slot_param_mut::<B>, linear_params_mut::<B>);
        let mut v: Vec<&mut Param> = slot(&mut self.embed).into_iter().collect();
        for l in &mut self.layers {
            v.extend(slot(&mut l.ln1));
            for x in [&mut l.q, &mut l.k, &mut l.v, &mut l.o] {
                v.extend(lin(x));
            }
            v.extend(l.q_norm.as_mut().and_then(slot));
            v.extend(l.k_norm.as_mut().and_then(slot));
            v.extend(slot(&mut l.ln2));
            for x in [&mut l.gate, &mut l.up, &mut l.down] {
                v.extend(lin(x));
            }
        }
        v.extend(slot(&mut self.norm));
        if let Some(h) = &mut self.lm_head {
            v.extend(lin(h));
        }
        v
    }

    fn set_dropout_seed(&mut self, seed: Option<u64>) {
        self.dropout_seed = seed;
    }

    fn accumulate(&mut self, b: &Batch, scale: f32) -> Result<LossSum> {
        self.accumulate_on(b, scale)
    }

    fn eval_loss(&mut self, b: &Batch) -> Result<LossSum> {
        self.refresh()?;
        let inp = self.inputs(b)?;
        let n = b.rows * b.cols;
        let (nf, ..) = self.forward(&inp, (b.rows, b.cols), false)?;
        let (logits, _) = self.logits(&nf, n)?;
        let (sum, tokens) =
            self.backend
                .cross_entropy(&logits, &inp.targets, self.config.vocab_size)?;
        Ok(LossSum { sum, tokens })
    }

    fn merged_weights(&self) -> Result<Vec<(String, Weight)>> {
        let (hs, _, _, dh, v) = self.dims();
        let mut out = vec![
            (
                "model.embed_tokens.weight".to_string(),
                B::host_slot(&self.embed).to_weight(&[v, hs]),
            ),
            (
                "model.norm.weight".to_string(),
                B::host_slot(&self.norm).to_weight(&[hs]),
            ),
        ];
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            out.push((
                format!("{p}.input_layernorm.weight"),
                B::host_slot(&l.ln1).to_weight(&[hs]),
            ));
            out.push((
                format!("{p}.post_attention_layernorm.weight"),
                B::host_slot(&l.ln2).to_weight(&[hs]),
            ));
            if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
                out.push((
                    format!("{p}.self_attn.q_norm.weight"),
                    B::host_slot(qn).to_weight(&[dh]),
                ));
                out.push((
                    format!("{p}.self_attn.k_norm.weight"),
                    B::host_slot(kn).to_weight(&[dh]),
                ));
            }
            for (m, lin_) in [
                ("self_attn.q_proj", &l.q),
                ("self_attn.k_proj", &l.k),
                ("self_attn.v_proj", &l.v),
                ("self_attn.o_proj", &l.o),
                ("mlp.gate_proj", &l.gate),
                ("mlp.up_proj", &l.up),
                ("mlp.down_proj", &l.down),
            ] {
                B::host_linear(lin_).export(&format!("{p}.{m}"), &mut out);
            }
        }
        if let Some(h) = &self.lm_head {
            B::host_linear(h).export("lm_head", &mut out);
        }
        Ok(out)
    }
}
