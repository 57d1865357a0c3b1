//! Llama / Qwen2 / Qwen3 for training: a teacher-forced forward over a right-padded batch
//! that keeps what the backward pass needs, and that backward pass, written by hand
//! (llm.c style). Trainable weights are whatever the [`Setup`] makes them: LoRA adapters on
//! frozen (or NF4) bases, or every weight for full fine-tuning.

use super::llama::{Family, LlamaConfig};
use crate::error::{Error, Result};
use crate::io::checkpoint::Checkpoint;
use crate::ops::activation::{glu_backward, glu_forward, Activation};
use crate::ops::attention::{attention_backward_rows, attention_train_forward_rows, TrainAttn};
use crate::ops::cross_entropy::{cross_entropy_backward, cross_entropy_loss};
use crate::ops::embedding::{embedding_backward, embedding_forward};
use crate::ops::matmul::{linear_backward, linear_forward};
use crate::ops::rmsnorm::{rmsnorm_backward, rmsnorm_forward_train};
use crate::ops::rope::{inv_freq, rope_backward, rope_forward};
use crate::tensor::Weight;
use crate::train::linear::{LinearCache, Slot, TrainLinear};
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

struct Layer {
    ln1: Slot,
    q: TrainLinear,
    k: TrainLinear,
    v: TrainLinear,
    o: TrainLinear,
    q_norm: Option<Slot>,
    k_norm: Option<Slot>,
    ln2: Slot,
    gate: TrainLinear,
    up: TrainLinear,
    down: TrainLinear,
}

pub struct LlamaTrain {
    pub config: LlamaConfig,
    act: Activation,
    embed: Slot,
    layers: Vec<Layer>,
    norm: Slot,
    /// Untied output projection (None: tied to `embed`).
    lm_head: Option<TrainLinear>,
    inv_freq: Vec<f32>,
    dropout_seed: Option<u64>,
}

/// Activations of one layer kept for the backward pass.
struct LayerCache {
    x_in: Vec<f32>,
    n1: Vec<f32>,
    rstd1: Vec<f32>,
    /// Qwen3: q/k before their per-head RMSNorm, and its 1/rms.
    q_pre: Vec<f32>,
    rq: Vec<f32>,
    k_pre: Vec<f32>,
    rk: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    probs: Vec<Vec<f32>>,
    att: Vec<f32>,
    cq: LinearCache,
    ck: LinearCache,
    cv: LinearCache,
    co: LinearCache,
    h1: Vec<f32>,
    n2: Vec<f32>,
    rstd2: Vec<f32>,
    g: Vec<f32>,
    u: Vec<f32>,
    a: Vec<f32>,
    cg: LinearCache,
    cu: LinearCache,
    cd: LinearCache,
}

/// Rows of the MLP's elementwise passes per parallel task.
const GLU_ROWS: usize = 32;

/// [`glu_forward`] over row blocks, in parallel with the `rayon` feature (it evaluates an
/// exp per element of the [N, F] intermediate: serial, it would idle the other cores).
fn glu_forward_rows(a: &mut [f32], g: &[f32], u: &[f32], f: usize, act: Activation) {
    let ch = GLU_ROWS * f.max(1);
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        a.par_chunks_mut(ch)
            .zip(g.par_chunks(ch).zip(u.par_chunks(ch)))
            .for_each(|(a, (g, u))| glu_forward(a, g, u, act));
    }
    #[cfg(not(feature = "rayon"))]
    a.chunks_mut(ch)
        .zip(g.chunks(ch).zip(u.chunks(ch)))
        .for_each(|(a, (g, u))| glu_forward(a, g, u, act));
}

/// [`glu_backward`] over row blocks, like [`glu_forward_rows`].
fn glu_backward_rows(
    dg: &mut [f32],
    du: &mut [f32],
    da: &[f32],
    (g, u): (&[f32], &[f32]),
    f: usize,
    act: Activation,
) {
    let ch = GLU_ROWS * f.max(1);
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        dg.par_chunks_mut(ch)
            .zip(du.par_chunks_mut(ch))
            .zip(
                da.par_chunks(ch)
                    .zip(g.par_chunks(ch).zip(u.par_chunks(ch))),
            )
            .for_each(|((dg, du), (da, (g, u)))| glu_backward(dg, du, da, g, u, act));
    }
    #[cfg(not(feature = "rayon"))]
    dg.chunks_mut(ch)
        .zip(du.chunks_mut(ch))
        .zip(da.chunks(ch).zip(g.chunks(ch).zip(u.chunks(ch))))
        .for_each(|((dg, du), (da, (g, u)))| glu_backward(dg, du, da, g, u, act));
}

fn seed_for(seed: Option<u64>, layer: usize, slot: u64) -> Option<u64> {
    seed.map(|s| s ^ ((layer as u64 + 1) << 32) ^ slot.wrapping_mul(0x9E37_79B9))
}

impl LlamaTrain {
    pub fn load(config: LlamaConfig, ck: &Checkpoint, setup: &Setup) -> Result<Self> {
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
            make_linear(ck, name, out, inp, bias, setup, &LLAMA_LINEAR)
        };
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let norm = |n: &str, d: usize| make_slot(ck, &format!("{p}.{n}.weight"), &[d], setup);
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
            Some(make_linear(ck, "lm_head", v, hs, false, &s, &[])?)
        };
        Ok(LlamaTrain {
            act: Activation::from_name(&c.hidden_act)?,
            embed: make_slot(ck, "model.embed_tokens.weight", &[v, hs], setup)?,
            norm: make_slot(ck, "model.norm.weight", &[hs], setup)?,
            lm_head,
            inv_freq: inv_freq(dh, c.rope_theta, c.rope_scaling.as_ref())?,
            layers,
            config,
            dropout_seed: None,
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

    /// Per-head RMSNorm (Qwen3 q_norm / k_norm) then RoPE at each row's position.
    fn norm_rope(&self, x: &mut [f32], heads: usize, w: Option<&Slot>, cols: usize) -> Vec<f32> {
        let dh = self.config.head_dim();
        let mut rstd = Vec::new();
        if let Some(w) = w {
            let pre = x.to_vec();
            rstd = rmsnorm_forward_train(x, &pre, w.data(), dh, self.config.rms_norm_eps);
        }
        for (i, head) in x.chunks_exact_mut(dh).enumerate() {
            rope_forward(head, &self.inv_freq, (i / heads) % cols);
        }
        rstd
    }

    /// Backward of [`Self::norm_rope`]: `d` is the gradient w.r.t. the output; returns the
    /// gradient w.r.t. the input.
    fn norm_rope_backward(
        &self,
        mut d: Vec<f32>,
        heads: usize,
        w: Option<&mut Slot>,
        pre: &[f32],
        rstd: &[f32],
        cols: usize,
    ) -> Vec<f32> {
        let dh = self.config.head_dim();
        for (i, head) in d.chunks_exact_mut(dh).enumerate() {
            rope_backward(head, &self.inv_freq, (i / heads) % cols);
        }
        match w {
            Some(w) => {
                let wv = w.data().to_vec();
                let mut dx = vec![0f32; d.len()];
                rmsnorm_backward(&mut dx, w.grad_mut(), &d, pre, rstd, &wv, dh);
                dx
            }
            None => d,
        }
    }

    /// Teacher-forced forward; returns the final hidden states (normed) [N, C], the input
    /// of the final norm, its 1/rms, and the per-layer caches.
    #[allow(clippy::type_complexity)]
    fn forward(
        &self,
        b: &Batch,
        keep: bool,
    ) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>, Vec<LayerCache>)> {
        self.check_batch(b)?;
        let (hs, h, kv, dh, _) = self.dims();
        let eps = self.config.rms_norm_eps;
        let (rows, cols) = (b.rows, b.cols);
        let n = rows * cols;
        let mut x = vec![0f32; n * hs];
        embedding_forward(&mut x, &b.input_ids, self.embed.data(), hs, 1.0)?;
        let attn = TrainAttn {
            t: cols,
            s: cols,
            h,
            kv_h: kv,
            dh,
            causal: true,
            scale: (dh as f32).powf(-0.5),
        };
        let mut caches = Vec::new();
        // Dropout only while training (`keep`); evaluation is deterministic.
        let seed = if keep { self.dropout_seed } else { None };
        for (li, l) in self.layers.iter().enumerate() {
            let sd = |slot| seed_for(seed, li, slot);
            let mut n1 = vec![0f32; n * hs];
            let rstd1 = rmsnorm_forward_train(&mut n1, &x, l.ln1.data(), hs, eps);
            let (mut q, cq) = l.q.forward(&n1, n, sd(0));
            let (mut k, ck) = l.k.forward(&n1, n, sd(1));
            let (v, cv) = l.v.forward(&n1, n, sd(2));
            let (q_pre, k_pre) = if l.q_norm.is_some() {
                (q.clone(), k.clone())
            } else {
                (Vec::new(), Vec::new())
            };
            let rq = self.norm_rope(&mut q, h, l.q_norm.as_ref(), cols);
            let rk = self.norm_rope(&mut k, kv, l.k_norm.as_ref(), cols);
            let mut att = vec![0f32; n * h * dh];
            let probs = attention_train_forward_rows(
                &mut att,
                &q,
                &k,
                &v,
                Some(&b.attention_mask),
                rows,
                &attn,
            );
            let (o, co) = l.o.forward(&att, n, sd(3));
            let mut h1 = x.clone();
            h1.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            let mut n2 = vec![0f32; n * hs];
            let rstd2 = rmsnorm_forward_train(&mut n2, &h1, l.ln2.data(), hs, eps);
            let (g, cg) = l.gate.forward(&n2, n, sd(4));
            let (u, cu) = l.up.forward(&n2, n, sd(5));
            let mut a = vec![0f32; g.len()];
            glu_forward_rows(&mut a, &g, &u, self.config.intermediate_size, self.act);
            let (d, cd) = l.down.forward(&a, n, sd(6));
            let mut x_out = h1.clone();
            x_out.iter_mut().zip(&d).for_each(|(a, b)| *a += b);
            if keep {
                caches.push(LayerCache {
                    x_in: std::mem::take(&mut x),
                    n1,
                    rstd1,
                    q_pre,
                    rq,
                    k_pre,
                    rk,
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
            x = x_out;
        }
        let mut nf = vec![0f32; n * hs];
        let rstd = rmsnorm_forward_train(&mut nf, &x, self.norm.data(), hs, eps);
        Ok((nf, x, rstd, caches))
    }

    fn logits(&self, nf: &[f32], n: usize) -> (Vec<f32>, LinearCache) {
        let (hs, .., v) = self.dims();
        match &self.lm_head {
            Some(head) => head.forward(nf, n, None),
            None => {
                let mut logits = vec![0f32; n * v];
                linear_forward(&mut logits, nf, self.embed.data(), None, n, hs, v);
                (logits, LinearCache::default())
            }
        }
    }
}

impl Trainable for LlamaTrain {
    fn is_causal(&self) -> bool {
        true
    }

    fn params(&self) -> Vec<&Param> {
        let mut v: Vec<&Param> = self.embed.param().into_iter().collect();
        for l in &self.layers {
            v.extend(l.ln1.param());
            for lin in [&l.q, &l.k, &l.v, &l.o] {
                v.extend(lin.params());
            }
            v.extend(l.q_norm.as_ref().and_then(|s| s.param()));
            v.extend(l.k_norm.as_ref().and_then(|s| s.param()));
            v.extend(l.ln2.param());
            for lin in [&l.gate, &l.up, &l.down] {
                v.extend(lin.params());
            }
        }
        v.extend(self.norm.param());
        if let Some(h) = &self.lm_head {
            v.extend(h.params());
        }
        v
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut v: Vec<&mut Param> = self.embed.param_mut().into_iter().collect();
        for l in &mut self.layers {
            v.extend(l.ln1.param_mut());
            for lin in [&mut l.q, &mut l.k, &mut l.v, &mut l.o] {
                v.extend(lin.params_mut());
            }
            v.extend(l.q_norm.as_mut().and_then(|s| s.param_mut()));
            v.extend(l.k_norm.as_mut().and_then(|s| s.param_mut()));
            v.extend(l.ln2.param_mut());
            for lin in [&mut l.gate, &mut l.up, &mut l.down] {
                v.extend(lin.params_mut());
            }
        }
        v.extend(self.norm.param_mut());
        if let Some(h) = &mut self.lm_head {
            v.extend(h.params_mut());
        }
        v
    }

    fn set_dropout_seed(&mut self, seed: Option<u64>) {
        self.dropout_seed = seed;
    }

    fn accumulate(&mut self, b: &Batch, scale: f32) -> Result<LossSum> {
        let (hs, h, kv, dh, v) = self.dims();
        let (rows, cols) = (b.rows, b.cols);
        let n = rows * cols;
        let (nf, x_last, rstd, caches) = self.forward(b, true)?;
        let (mut logits, chead) = self.logits(&nf, n);
        let (sum, tokens) = cross_entropy_backward(&mut logits, &Self::targets(b), v, scale)
            .map_err(Error::Generation)?;
        // Output projection.
        let mut dnf = vec![0f32; n * hs];
        match &mut self.lm_head {
            Some(head) => head.backward(Some(&mut dnf), &logits, &nf, &chead, n),
            None => {
                let (w, dw) = match &mut self.embed {
                    Slot::Frozen(w) => (&**w, None),
                    Slot::Train(p) => (&p.value[..], Some(&mut p.grad[..])),
                };
                linear_backward(Some(&mut dnf), dw, None, &logits, &nf, w, n, hs, v);
            }
        }
        drop(logits);
        let mut dx = vec![0f32; n * hs];
        let eps_w = self.norm.data().to_vec();
        rmsnorm_backward(
            &mut dx,
            self.norm.grad_mut(),
            &dnf,
            &x_last,
            &rstd,
            &eps_w,
            hs,
        );
        let attn = TrainAttn {
            t: cols,
            s: cols,
            h,
            kv_h: kv,
            dh,
            causal: true,
            scale: (dh as f32).powf(-0.5),
        };
        for (li, c) in caches.iter().enumerate().rev() {
            // x_out = h1 + down(glu(gate(n2), up(n2))), n2 = rms(h1)
            let mut da = vec![0f32; c.a.len()];
            let l = &mut self.layers[li];
            l.down.backward(Some(&mut da), &dx, &c.a, &c.cd, n);
            let (mut dg, mut du) = (vec![0f32; c.g.len()], vec![0f32; c.u.len()]);
            let f = self.config.intermediate_size;
            glu_backward_rows(&mut dg, &mut du, &da, (&c.g, &c.u), f, self.act);
            let mut dn2 = vec![0f32; n * hs];
            l.gate.backward(Some(&mut dn2), &dg, &c.n2, &c.cg, n);
            l.up.backward(Some(&mut dn2), &du, &c.n2, &c.cu, n);
            let w2 = l.ln2.data().to_vec();
            rmsnorm_backward(&mut dx, l.ln2.grad_mut(), &dn2, &c.h1, &c.rstd2, &w2, hs);
            // h1 = x_in + o(attn(rope(q(n1)), rope(k(n1)), v(n1))), n1 = rms(x_in)
            let mut datt = vec![0f32; n * h * dh];
            l.o.backward(Some(&mut datt), &dx, &c.att, &c.co, n);
            let (mut dq, mut dk, mut dv) = (
                vec![0f32; n * h * dh],
                vec![0f32; n * kv * dh],
                vec![0f32; n * kv * dh],
            );
            attention_backward_rows(
                &mut dq, &mut dk, &mut dv, &datt, &c.probs, &c.q, &c.k, &c.v, &attn,
            );
            let l = &mut self.layers[li];
            let (mut qn, mut kn) = (l.q_norm.take(), l.k_norm.take());
            let dq = self.norm_rope_backward(dq, h, qn.as_mut(), &c.q_pre, &c.rq, cols);
            let dk = self.norm_rope_backward(dk, kv, kn.as_mut(), &c.k_pre, &c.rk, cols);
            let l = &mut self.layers[li];
            (l.q_norm, l.k_norm) = (qn, kn);
            let mut dn1 = vec![0f32; n * hs];
            l.q.backward(Some(&mut dn1), &dq, &c.n1, &c.cq, n);
            l.k.backward(Some(&mut dn1), &dk, &c.n1, &c.ck, n);
            l.v.backward(Some(&mut dn1), &dv, &c.n1, &c.cv, n);
            let w1 = l.ln1.data().to_vec();
            rmsnorm_backward(&mut dx, l.ln1.grad_mut(), &dn1, &c.x_in, &c.rstd1, &w1, hs);
        }
        if let Some(de) = self.embed.grad_mut() {
            embedding_backward(de, &dx, &b.input_ids, hs, 1.0);
        }
        Ok(LossSum { sum, tokens })
    }

    fn eval_loss(&self, b: &Batch) -> Result<LossSum> {
        let n = b.rows * b.cols;
        let (nf, ..) = self.forward(b, false)?;
        let (logits, _) = self.logits(&nf, n);
        let (sum, tokens) = cross_entropy_loss(&logits, &Self::targets(b), self.config.vocab_size)
            .map_err(Error::Generation)?;
        Ok(LossSum { sum, tokens })
    }

    fn merged_weights(&self) -> Result<Vec<(String, Weight)>> {
        let (hs, _, _, dh, v) = self.dims();
        let mut out = vec![
            (
                "model.embed_tokens.weight".to_string(),
                self.embed.to_weight(&[v, hs]),
            ),
            ("model.norm.weight".to_string(), self.norm.to_weight(&[hs])),
        ];
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            out.push((
                format!("{p}.input_layernorm.weight"),
                l.ln1.to_weight(&[hs]),
            ));
            out.push((
                format!("{p}.post_attention_layernorm.weight"),
                l.ln2.to_weight(&[hs]),
            ));
            if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
                out.push((format!("{p}.self_attn.q_norm.weight"), qn.to_weight(&[dh])));
                out.push((format!("{p}.self_attn.k_norm.weight"), kn.to_weight(&[dh])));
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
                lin_.export(&format!("{p}.{m}"), &mut out);
            }
        }
        if let Some(h) = &self.lm_head {
            h.export("lm_head", &mut out);
        }
        Ok(out)
    }
}
