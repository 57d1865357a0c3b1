//! BART for training: teacher-forced encoder-decoder forward over a padded batch that keeps
//! its activations, and the hand-written backward (post-LayerNorm blocks, learned positions,
//! tied shared embeddings counted once, `final_logits_bias` a frozen buffer). LoRA on any of
//! q/k/v/out_proj/fc1/fc2 of every attention block, or full fine-tuning of every weight.
//!
//! The passes are written once over a [`TrainBackend`]: the CPU by default, the GPU with
//! [`BartTrain::load_on`] and a CUDA backend.

use super::bart::BartConfig;
use crate::backend::train::TrainBackend;
use crate::backend::Cpu;
use crate::error::{Error, Result};
use crate::io::checkpoint::Checkpoint;
use crate::ops::activation::Activation;
use crate::ops::attention::TrainAttn;
use crate::tensor::Weight;
use crate::train::linear::TrainLinear;
use crate::train::setup::{check_targets, make_linear, make_slot, Kind, Setup};
use crate::train::{Batch, LossSum, Param, Trainable};

/// The linear modules `all-linear` covers (lm_head excluded, as peft does).
pub const BART_LINEAR: [&str; 6] = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"];
const LN_EPS: f32 = 1e-5;
const POS_OFFSET: usize = 2;
/// Dropout-seed layer numbers: encoder layers count from 0, decoder layers from DEC_LAYER,
/// the two embedding dropouts sit at EMB_LAYER and EMB_LAYER + 1.
const DEC_LAYER: usize = 1000;
const EMB_LAYER: usize = 9998;

/// The dropout seed of sub-layer `part` of `layer` for a pass seeded with `seed`.
fn part_seed(seed: Option<u64>, layer: usize, part: u64) -> Option<u64> {
    seed.map(|s| s ^ ((layer as u64 + 1) << 40) ^ (part << 20))
}

/// The weights of one model part, for the backend's copy and gradient passes.
struct Parts<'a, B: TrainBackend> {
    slots: Vec<&'a mut B::Slot>,
    linears: Vec<&'a mut B::Linear>,
}

struct Norm<B: TrainBackend> {
    w: B::Slot,
    b: B::Slot,
}

impl<B: TrainBackend> Norm<B> {
    fn load(bk: &B, ck: &Checkpoint, prefix: &str, d: usize, setup: &Setup) -> Result<Self> {
        Ok(Norm {
            w: bk.slot(make_slot(ck, &format!("{prefix}.weight"), &[d], setup)?)?,
            b: bk.slot(make_slot(ck, &format!("{prefix}.bias"), &[d], setup)?)?,
        })
    }
    fn forward(&self, bk: &B, x: &B::T, d: usize) -> Result<(B::T, B::LnStats)> {
        bk.layernorm(x, &self.w, &self.b, d, LN_EPS)
    }
    /// Returns d(input) for d(output) `dy`.
    fn backward(&mut self, bk: &B, dy: &B::T, x: &B::T, st: &B::LnStats, d: usize) -> Result<B::T> {
        bk.layernorm_backward(&mut self.w, &mut self.b, dy, x, st, d)
    }
    fn params<'a>(&'a self, v: &mut Vec<&'a Param>) {
        v.extend(B::host_slot(&self.w).param());
        v.extend(B::host_slot(&self.b).param());
    }
    fn params_mut<'a>(&'a mut self, v: &mut Vec<&'a mut Param>) {
        v.extend(B::host_slot_mut(&mut self.w).param_mut());
        v.extend(B::host_slot_mut(&mut self.b).param_mut());
    }
    fn parts<'a>(&'a mut self, p: &mut Parts<'a, B>) {
        p.slots.push(&mut self.w);
        p.slots.push(&mut self.b);
    }
    fn export(&self, name: &str, d: usize, out: &mut Vec<(String, Weight)>) {
        out.push((
            format!("{name}.weight"),
            B::host_slot(&self.w).to_weight(&[d]),
        ));
        out.push((
            format!("{name}.bias"),
            B::host_slot(&self.b).to_weight(&[d]),
        ));
    }
}

struct Attn<B: TrainBackend> {
    q: B::Linear,
    k: B::Linear,
    v: B::Linear,
    o: B::Linear,
}

struct AttnCache<B: TrainBackend> {
    q: B::T,
    k: B::T,
    v: B::T,
    probs: B::Probs,
    att: B::T,
    cq: B::LinCache,
    ck: B::LinCache,
    cv: B::LinCache,
    co: B::LinCache,
}

/// Geometry of one attention call over a batch: `rows` sequences of `t` queries against
/// `s` keys each.
#[derive(Clone, Copy)]
struct Geo {
    rows: usize,
    t: usize,
    s: usize,
    h: usize,
    causal: bool,
}

impl<B: TrainBackend> Attn<B> {
    fn load(bk: &B, ck: &Checkpoint, prefix: &str, d: usize, setup: &Setup) -> Result<Self> {
        let l = |n: &str| {
            bk.linear(make_linear(
                ck,
                &format!("{prefix}.{n}"),
                d,
                d,
                true,
                setup,
                &BART_LINEAR,
            )?)
        };
        Ok(Attn {
            q: l("q_proj")?,
            k: l("k_proj")?,
            v: l("v_proj")?,
            o: l("out_proj")?,
        })
    }

    fn lins(&self) -> [&TrainLinear; 4] {
        [&self.q, &self.k, &self.v, &self.o].map(B::host_linear)
    }

    fn lins_mut(&mut self) -> [&mut TrainLinear; 4] {
        [&mut self.q, &mut self.k, &mut self.v, &mut self.o].map(B::host_linear_mut)
    }

    fn parts<'a>(&'a mut self, p: &mut Parts<'a, B>) {
        p.linears
            .extend([&mut self.q, &mut self.k, &mut self.v, &mut self.o]);
    }

    fn d(&self) -> usize {
        B::host_linear(&self.q).out
    }

    fn shape(&self, g: Geo) -> TrainAttn {
        let d = self.d();
        let dh = d / g.h;
        TrainAttn {
            t: g.t,
            s: g.s,
            h: g.h,
            kv_h: g.h,
            dh,
            causal: g.causal,
            scale: (dh as f32).powf(-0.5),
        }
    }

    /// x_q [rows·t, d] attends to x_kv [rows·s, d]; key_mask [rows, s] if any.
    fn forward(
        &self,
        bk: &B,
        (x_q, x_kv): (&B::T, &B::T),
        key_mask: Option<&B::Mask>,
        g: Geo,
        seed: Option<u64>,
    ) -> Result<(B::T, AttnCache<B>)> {
        let (nq, nk) = (g.rows * g.t, g.rows * g.s);
        let sd = |i: u64| seed.map(|s| s ^ i.wrapping_mul(0x9E37_79B9));
        let (q, cq) = bk.linear_forward(&self.q, x_q, nq, sd(1))?;
        let (k, ck) = bk.linear_forward(&self.k, x_kv, nk, sd(2))?;
        let (v, cv) = bk.linear_forward(&self.v, x_kv, nk, sd(3))?;
        let a = self.shape(g);
        let (att, probs) = bk.attention(&q, &k, &v, key_mask, g.rows, &a)?;
        let (o, co) = bk.linear_forward(&self.o, &att, nq, sd(4))?;
        let cache = AttnCache {
            q,
            k,
            v,
            probs,
            att,
            cq,
            ck,
            cv,
            co,
        };
        Ok((o, cache))
    }

    /// Backward: accumulates into dx_q and dx_kv (the same buffer for self-attention is
    /// handled by the caller adding both).
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &mut self,
        bk: &B,
        dy: &B::T,
        (x_q, x_kv): (&B::T, &B::T),
        c: &AttnCache<B>,
        g: Geo,
        dx_q: &mut B::T,
        dx_kv: &mut B::T,
    ) -> Result<()> {
        let d = self.d();
        let (nq, nk) = (g.rows * g.t, g.rows * g.s);
        let mut datt = bk.zeros(nq * d)?;
        bk.linear_backward(&mut self.o, Some(&mut datt), dy, &c.att, &c.co, nq)?;
        let a = self.shape(g);
        let (dq, dk, dv) = bk.attention_backward(&datt, &c.probs, &c.q, &c.k, &c.v, g.rows, &a)?;
        bk.linear_backward(&mut self.q, Some(dx_q), &dq, x_q, &c.cq, nq)?;
        bk.linear_backward(&mut self.k, Some(&mut *dx_kv), &dk, x_kv, &c.ck, nk)?;
        bk.linear_backward(&mut self.v, Some(dx_kv), &dv, x_kv, &c.cv, nk)
    }
}

struct Ffn<B: TrainBackend> {
    fc1: B::Linear,
    fc2: B::Linear,
}

struct FfnCache<B: TrainBackend> {
    f: B::T,
    a: B::T,
    c1: B::LinCache,
    c2: B::LinCache,
    seed: Option<u64>,
}

impl<B: TrainBackend> Ffn<B> {
    /// fc2(dropout(act(fc1(x)))) then dropout; `drop` = (activation p, hidden p).
    fn forward(
        &self,
        bk: &B,
        x: &B::T,
        n: usize,
        act: Activation,
        seed: Option<u64>,
        drop: (f32, f32),
    ) -> Result<(B::T, FfnCache<B>)> {
        let sd = |i: u64| seed.map(|s| s ^ i.wrapping_mul(0xC2B2_AE35));
        let (f, c1) = bk.linear_forward(&self.fc1, x, n, sd(5))?;
        let mut a = bk.copy(&f)?;
        bk.act(&mut a, act)?;
        if let Some(s) = sd(7) {
            bk.dropout(&mut a, drop.0, s)?;
        }
        let (mut y, c2) = bk.linear_forward(&self.fc2, &a, n, sd(6))?;
        if let Some(s) = sd(8) {
            bk.dropout(&mut y, drop.1, s)?;
        }
        Ok((y, FfnCache { f, a, c1, c2, seed }))
    }
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &mut self,
        bk: &B,
        dy: &B::T,
        x: &B::T,
        c: &FfnCache<B>,
        n: usize,
        act: Activation,
        dx: &mut B::T,
        drop: (f32, f32),
    ) -> Result<()> {
        let sd = |i: u64| c.seed.map(|s| s ^ i.wrapping_mul(0xC2B2_AE35));
        let mut dy = bk.copy(dy)?;
        if let Some(s) = sd(8) {
            bk.dropout(&mut dy, drop.1, s)?;
        }
        let f = B::host_linear(&self.fc1).out;
        let mut da = bk.zeros(n * f)?;
        bk.linear_backward(&mut self.fc2, Some(&mut da), &dy, &c.a, &c.c2, n)?;
        if let Some(s) = sd(7) {
            bk.dropout(&mut da, drop.0, s)?;
        }
        bk.act_backward(&mut da, &c.f, act)?;
        bk.linear_backward(&mut self.fc1, Some(dx), &da, x, &c.c1, n)
    }
    fn parts<'a>(&'a mut self, p: &mut Parts<'a, B>) {
        p.linears.extend([&mut self.fc1, &mut self.fc2]);
    }
}

struct EncLayer<B: TrainBackend> {
    attn: Attn<B>,
    ln1: Norm<B>,
    ffn: Ffn<B>,
    ln2: Norm<B>,
}

struct DecLayer<B: TrainBackend> {
    attn: Attn<B>,
    ln1: Norm<B>,
    cross: Attn<B>,
    ln2: Norm<B>,
    ffn: Ffn<B>,
    ln3: Norm<B>,
}

/// Per-block activations: the block input, its sub-layer cache, and the LayerNorm input/stats.
struct EncCache<B: TrainBackend> {
    x: B::T,
    ca: AttnCache<B>,
    h1: B::T,
    s1: B::LnStats,
    x1: B::T,
    cf: FfnCache<B>,
    h2: B::T,
    s2: B::LnStats,
}

struct DecCache<B: TrainBackend> {
    x: B::T,
    ca: AttnCache<B>,
    h1: B::T,
    s1: B::LnStats,
    x1: B::T,
    cc: AttnCache<B>,
    h2: B::T,
    s2: B::LnStats,
    x2: B::T,
    cf: FfnCache<B>,
    h3: B::T,
    s3: B::LnStats,
}

pub struct BartTrain<B: TrainBackend = Cpu> {
    pub config: BartConfig,
    backend: B,
    act: Activation,
    embed_scale: f32,
    shared: B::Slot,
    lm_head: Option<B::Linear>,
    final_logits_bias: Vec<f32>,
    enc_pos: B::Slot,
    enc_ln: Norm<B>,
    enc: Vec<EncLayer<B>>,
    dec_pos: B::Slot,
    dec_ln: Norm<B>,
    dec: Vec<DecLayer<B>>,
    dropout_seed: Option<u64>,
    /// The host values changed (optimizer step, resume) since the backend last copied them.
    stale: bool,
}

/// A micro-batch on the backend.
struct Inputs<B: TrainBackend> {
    enc_ids: B::Ids,
    enc_pos: B::Ids,
    dec_ids: B::Ids,
    dec_pos: B::Ids,
    mask: B::Mask,
    labels: B::Targets,
}

struct Fwd<B: TrainBackend> {
    /// The dropout seed the pass ran with (None: no dropout).
    seed: Option<u64>,
    enc_emb: B::T,
    enc_emb_st: B::LnStats,
    enc: Vec<EncCache<B>>,
    enc_out: B::T,
    dec_emb: B::T,
    dec_emb_st: B::LnStats,
    dec: Vec<DecCache<B>>,
    out: B::T,
}

impl BartTrain<Cpu> {
    /// Load for training on the CPU.
    pub fn load(config: BartConfig, ck: &Checkpoint, setup: &Setup) -> Result<Self> {
        Self::load_on(Cpu, config, ck, setup)
    }
}

impl<B: TrainBackend> BartTrain<B> {
    /// Load for training on `backend` (weights made resident there once).
    pub fn load_on(backend: B, config: BartConfig, ck: &Checkpoint, setup: &Setup) -> Result<Self> {
        let bk = &backend;
        let c = &config;
        if c.normalize_before || c.add_final_layer_norm {
            return Err(Error::config(
                ck.path(),
                "pre-LayerNorm (mBART-style) BART variants are not supported for training",
            ));
        }
        let (d, v) = (c.d_model, c.vocab_size);
        let mut modules = Vec::new();
        for i in 0..c.encoder_layers {
            for m in [
                "self_attn.q_proj",
                "self_attn.k_proj",
                "self_attn.v_proj",
                "self_attn.out_proj",
                "fc1",
                "fc2",
            ] {
                modules.push(format!("model.encoder.layers.{i}.{m}"));
            }
        }
        for i in 0..c.decoder_layers {
            for a in ["self_attn", "encoder_attn"] {
                for m in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                    modules.push(format!("model.decoder.layers.{i}.{a}.{m}"));
                }
            }
            for m in ["fc1", "fc2"] {
                modules.push(format!("model.decoder.layers.{i}.{m}"));
            }
        }
        check_targets(setup, &modules, &BART_LINEAR)?;
        let shared_name = [
            "model.shared.weight",
            "model.encoder.embed_tokens.weight",
            "model.decoder.embed_tokens.weight",
        ]
        .into_iter()
        .find(|n| ck.contains(n))
        .unwrap_or("model.shared.weight");
        let mut shared = make_slot(ck, shared_name, &[v, d], setup)?;
        if let Some(p) = shared.param_mut() {
            p.name = "model.shared.weight".into();
        }
        let shared = bk.slot(shared)?;
        let lm_head = if c.tie_word_embeddings {
            None
        } else {
            let mut s = Setup {
                targets: vec![],
                init_adapter: None,
                quantizer: None,
                ..*setup
            };
            if s.kind != Kind::Full {
                s.kind = Kind::Lora;
            }
            Some(bk.linear(make_linear(ck, "lm_head", v, d, false, &s, &[])?)?)
        };
        let final_logits_bias = if ck.contains("final_logits_bias") {
            ck.get("final_logits_bias", &[1, v])?.to_vec()
        } else {
            vec![0.0; v]
        };
        let p = c.max_position_embeddings + POS_OFFSET;
        let lin = |name: String, out, inp| {
            bk.linear(make_linear(ck, &name, out, inp, true, setup, &BART_LINEAR)?)
        };
        let ffn = |pre: &str, f: usize| -> Result<Ffn<B>> {
            Ok(Ffn {
                fc1: lin(format!("{pre}.fc1"), f, d)?,
                fc2: lin(format!("{pre}.fc2"), d, f)?,
            })
        };
        let mut enc = Vec::new();
        for i in 0..c.encoder_layers {
            let pre = format!("model.encoder.layers.{i}");
            enc.push(EncLayer {
                attn: Attn::load(bk, ck, &format!("{pre}.self_attn"), d, setup)?,
                ln1: Norm::load(bk, ck, &format!("{pre}.self_attn_layer_norm"), d, setup)?,
                ffn: ffn(&pre, c.encoder_ffn_dim)?,
                ln2: Norm::load(bk, ck, &format!("{pre}.final_layer_norm"), d, setup)?,
            });
        }
        let mut dec = Vec::new();
        for i in 0..c.decoder_layers {
            let pre = format!("model.decoder.layers.{i}");
            dec.push(DecLayer {
                attn: Attn::load(bk, ck, &format!("{pre}.self_attn"), d, setup)?,
                ln1: Norm::load(bk, ck, &format!("{pre}.self_attn_layer_norm"), d, setup)?,
                cross: Attn::load(bk, ck, &format!("{pre}.encoder_attn"), d, setup)?,
                ln2: Norm::load(bk, ck, &format!("{pre}.encoder_attn_layer_norm"), d, setup)?,
                ffn: ffn(&pre, c.decoder_ffn_dim)?,
                ln3: Norm::load(bk, ck, &format!("{pre}.final_layer_norm"), d, setup)?,
            });
        }
        let pos = |n: &str| bk.slot(make_slot(ck, n, &[p, d], setup)?);
        let (enc_pos, dec_pos) = (
            pos("model.encoder.embed_positions.weight")?,
            pos("model.decoder.embed_positions.weight")?,
        );
        let enc_ln = Norm::load(bk, ck, "model.encoder.layernorm_embedding", d, setup)?;
        let dec_ln = Norm::load(bk, ck, "model.decoder.layernorm_embedding", d, setup)?;
        Ok(BartTrain {
            act: Activation::from_name(&c.activation_function)?,
            embed_scale: if c.scale_embedding {
                (d as f32).sqrt()
            } else {
                1.0
            },
            shared,
            lm_head,
            final_logits_bias,
            enc_pos,
            enc_ln,
            enc,
            dec_pos,
            dec_ln,
            dec,
            dropout_seed: None,
            stale: false,
            backend,
            config,
        })
    }

    fn check_batch(&self, b: &Batch) -> Result<()> {
        let (n, m) = (b.rows * b.cols, b.rows * b.dec_cols);
        if b.input_ids.len() != n
            || b.attention_mask.len() != n
            || b.decoder_input_ids.len() != m
            || b.labels.len() != m
        {
            return Err(Error::Generation(
                "batch tensors do not match [rows, cols] / [rows, dec_cols]".into(),
            ));
        }
        let maxp = self.config.max_position_embeddings;
        if b.cols > maxp || b.dec_cols > maxp {
            return Err(Error::Generation(format!(
                "sequence length {} exceeds max_position_embeddings {maxp}",
                b.cols.max(b.dec_cols)
            )));
        }
        Ok(())
    }

    fn inputs(&self, b: &Batch) -> Result<Inputs<B>> {
        self.check_batch(b)?;
        let bk = &self.backend;
        let (ne, nd) = (b.rows * b.cols, b.rows * b.dec_cols);
        Ok(Inputs {
            enc_ids: bk.ids(&b.input_ids, b.cols)?,
            enc_pos: bk.positions(ne, b.cols, POS_OFFSET)?,
            dec_ids: bk.ids(&b.decoder_input_ids, b.dec_cols)?,
            dec_pos: bk.positions(nd, b.dec_cols, POS_OFFSET)?,
            mask: bk.mask(&b.attention_mask)?,
            labels: bk.targets(&b.labels)?,
        })
    }

    /// x = E[ids]·scale + P[pos + 2].
    fn embed(&self, ids: &B::Ids, pids: &B::Ids, pos: &B::Slot) -> Result<B::T> {
        let bk = &self.backend;
        let d = self.config.d_model;
        let mut x = bk.embedding(&self.shared, ids, d, self.embed_scale)?;
        let p = bk.embedding(pos, pids, d, 1.0)?;
        bk.add(&mut x, &p)?;
        Ok(x)
    }

    /// Teacher-forced forward; dropout (hidden, activation, LoRA) only when `train`.
    fn forward(&self, b: &Batch, inp: &Inputs<B>, train: bool) -> Result<Fwd<B>> {
        let bk = &self.backend;
        let c = &self.config;
        let d = c.d_model;
        let (rows, s, t) = (b.rows, b.cols, b.dec_cols);
        let seed = if train { self.dropout_seed } else { None };
        let drop = (c.activation_dropout, c.dropout);
        let hidden_drop = |x: &mut B::T, s: Option<u64>| match s {
            Some(s) => bk.dropout(x, drop.1, s),
            None => Ok(()),
        };
        let sum = |x: &B::T, y: &B::T| -> Result<B::T> {
            let mut z = bk.copy(x)?;
            bk.add(&mut z, y)?;
            Ok(z)
        };
        let sd = |layer: usize, part: u64| part_seed(seed, layer, part);
        // Encoder.
        let enc_emb = self.embed(&inp.enc_ids, &inp.enc_pos, &self.enc_pos)?;
        let (mut x, enc_emb_st) = self.enc_ln.forward(bk, &enc_emb, d)?;
        hidden_drop(&mut x, sd(EMB_LAYER, 14))?;
        let eg = Geo {
            rows,
            t: s,
            s,
            h: c.encoder_attention_heads,
            causal: false,
        };
        let mut enc = Vec::new();
        for (li, l) in self.enc.iter().enumerate() {
            let (mut a, ca) = l
                .attn
                .forward(bk, (&x, &x), Some(&inp.mask), eg, sd(li, 1))?;
            hidden_drop(&mut a, sd(li, 10))?;
            let h1 = sum(&x, &a)?;
            let (x1, s1) = l.ln1.forward(bk, &h1, d)?;
            let (f, cf) = l
                .ffn
                .forward(bk, &x1, rows * s, self.act, sd(li, 2), drop)?;
            let h2 = sum(&x1, &f)?;
            let (x2, s2) = l.ln2.forward(bk, &h2, d)?;
            enc.push(EncCache {
                x: std::mem::replace(&mut x, x2),
                ca,
                h1,
                s1,
                x1,
                cf,
                h2,
                s2,
            });
        }
        let enc_out = x;
        // Decoder.
        let dec_emb = self.embed(&inp.dec_ids, &inp.dec_pos, &self.dec_pos)?;
        let (mut x, dec_emb_st) = self.dec_ln.forward(bk, &dec_emb, d)?;
        hidden_drop(&mut x, sd(EMB_LAYER + 1, 14))?;
        let h = c.decoder_attention_heads;
        let sg = Geo {
            rows,
            t,
            s: t,
            h,
            causal: true,
        };
        let cg = Geo {
            rows,
            t,
            s,
            h,
            causal: false,
        };
        let mut dec = Vec::new();
        for (li, l) in self.dec.iter().enumerate() {
            let li2 = li + DEC_LAYER;
            let (mut a, ca) = l.attn.forward(bk, (&x, &x), None, sg, sd(li2, 1))?;
            hidden_drop(&mut a, sd(li2, 10))?;
            let h1 = sum(&x, &a)?;
            let (x1, s1) = l.ln1.forward(bk, &h1, d)?;
            let (mut cr, cc) =
                l.cross
                    .forward(bk, (&x1, &enc_out), Some(&inp.mask), cg, sd(li2, 3))?;
            hidden_drop(&mut cr, sd(li2, 13))?;
            let h2 = sum(&x1, &cr)?;
            let (x2, s2) = l.ln2.forward(bk, &h2, d)?;
            let (f, cf) = l
                .ffn
                .forward(bk, &x2, rows * t, self.act, sd(li2, 2), drop)?;
            let h3 = sum(&x2, &f)?;
            let (x3, s3) = l.ln3.forward(bk, &h3, d)?;
            dec.push(DecCache {
                x: std::mem::replace(&mut x, x3),
                ca,
                h1,
                s1,
                x1,
                cc,
                h2,
                s2,
                x2,
                cf,
                h3,
                s3,
            });
        }
        Ok(Fwd {
            seed,
            enc_emb,
            enc_emb_st,
            enc,
            enc_out,
            dec_emb,
            dec_emb_st,
            dec,
            out: x,
        })
    }

    fn logits(&self, x: &B::T, n: usize) -> Result<(B::T, Option<B::LinCache>)> {
        let bk = &self.backend;
        let (d, v) = (self.config.d_model, self.config.vocab_size);
        let (mut logits, cache) = match &self.lm_head {
            Some(h) => {
                let (y, c) = bk.linear_forward(h, x, n, None)?;
                (y, Some(c))
            }
            None => (bk.tied_logits(x, &self.shared, n, d, v)?, None),
        };
        bk.add_rows(&mut logits, &self.final_logits_bias, v)?;
        Ok((logits, cache))
    }

    /// Copy the host values to the backend (`push`), or bring the backend's gradients home.
    fn sync(&mut self, push: bool) -> Result<()> {
        let BartTrain {
            backend: bk,
            shared,
            lm_head,
            enc_pos,
            enc_ln,
            enc,
            dec_pos,
            dec_ln,
            dec,
            ..
        } = self;
        let mut p = Parts {
            slots: vec![shared, enc_pos, dec_pos],
            linears: lm_head.iter_mut().collect(),
        };
        enc_ln.parts(&mut p);
        dec_ln.parts(&mut p);
        for l in enc.iter_mut() {
            l.attn.parts(&mut p);
            l.ln1.parts(&mut p);
            l.ffn.parts(&mut p);
            l.ln2.parts(&mut p);
        }
        for l in dec.iter_mut() {
            l.attn.parts(&mut p);
            l.ln1.parts(&mut p);
            l.cross.parts(&mut p);
            l.ln2.parts(&mut p);
            l.ffn.parts(&mut p);
            l.ln3.parts(&mut p);
        }
        for s in p.slots {
            match push {
                true => bk.push_slot(s)?,
                false => bk.pull_slot(s)?,
            }
        }
        for l in p.linears {
            match push {
                true => bk.push_linear(l)?,
                false => bk.pull_linear(l)?,
            }
        }
        Ok(())
    }

    /// The backend's copies := the host values, when the loop changed them.
    fn refresh(&mut self) -> Result<()> {
        if self.stale {
            self.sync(true)?;
            self.stale = false;
        }
        Ok(())
    }

    /// Gradient of the token + position embeddings for one stack's input.
    fn embed_backward(
        &mut self,
        demb: &B::T,
        ids: &B::Ids,
        pids: &B::Ids,
        encoder: bool,
    ) -> Result<()> {
        let bk = &self.backend;
        let d = self.config.d_model;
        bk.embedding_backward(&mut self.shared, demb, ids, d, self.embed_scale)?;
        let pos = if encoder {
            &mut self.enc_pos
        } else {
            &mut self.dec_pos
        };
        bk.embedding_backward(pos, demb, pids, d, 1.0)
    }
}

impl<B: TrainBackend> Trainable for BartTrain<B> {
    fn is_causal(&self) -> bool {
        false
    }

    fn params(&self) -> Vec<&Param> {
        let slot = |s| B::host_slot(s).param();
        let mut v: Vec<&Param> = slot(&self.shared).into_iter().collect();
        v.extend(slot(&self.enc_pos));
        self.enc_ln.params(&mut v);
        for l in &self.enc {
            for lin in l.attn.lins() {
                v.extend(lin.params());
            }
            l.ln1.params(&mut v);
            v.extend(B::host_linear(&l.ffn.fc1).params());
            v.extend(B::host_linear(&l.ffn.fc2).params());
            l.ln2.params(&mut v);
        }
        v.extend(slot(&self.dec_pos));
        self.dec_ln.params(&mut v);
        for l in &self.dec {
            for lin in l.attn.lins() {
                v.extend(lin.params());
            }
            l.ln1.params(&mut v);
            for lin in l.cross.lins() {
                v.extend(lin.params());
            }
            l.ln2.params(&mut v);
            v.extend(B::host_linear(&l.ffn.fc1).params());
            v.extend(B::host_linear(&l.ffn.fc2).params());
            l.ln3.params(&mut v);
        }
        if let Some(h) = &self.lm_head {
            v.extend(B::host_linear(h).params());
        }
        v
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        // The caller may change the values: the backend copies them again before next use.
        self.stale = true;
        let mut v: Vec<&mut Param> = B::host_slot_mut(&mut self.shared)
            .param_mut()
            .into_iter()
            .collect();
        v.extend(B::host_slot_mut(&mut self.enc_pos).param_mut());
        self.enc_ln.params_mut(&mut v);
        for l in &mut self.enc {
            for lin in l.attn.lins_mut() {
                v.extend(lin.params_mut());
            }
            l.ln1.params_mut(&mut v);
            v.extend(B::host_linear_mut(&mut l.ffn.fc1).params_mut());
            v.extend(B::host_linear_mut(&mut l.ffn.fc2).params_mut());
            l.ln2.params_mut(&mut v);
        }
        v.extend(B::host_slot_mut(&mut self.dec_pos).param_mut());
        self.dec_ln.params_mut(&mut v);
        for l in &mut self.dec {
            for lin in l.attn.lins_mut() {
                v.extend(lin.params_mut());
            }
            l.ln1.params_mut(&mut v);
            for lin in l.cross.lins_mut() {
                v.extend(lin.params_mut());
            }
            l.ln2.params_mut(&mut v);
            v.extend(B::host_linear_mut(&mut l.ffn.fc1).params_mut());
            v.extend(B::host_linear_mut(&mut l.ffn.fc2).params_mut());
            l.ln3.params_mut(&mut v);
        }
        if let Some(h) = &mut self.lm_head {
            v.extend(B::host_linear_mut(h).params_mut());
        }
        v
    }

    fn set_dropout_seed(&mut self, seed: Option<u64>) {
        self.dropout_seed = seed;
    }

    fn accumulate(&mut self, b: &Batch, scale: f32) -> Result<LossSum> {
        self.refresh()?;
        let c = self.config.clone();
        let (d, v) = (c.d_model, c.vocab_size);
        let (rows, s, t) = (b.rows, b.cols, b.dec_cols);
        let (ne, nd) = (rows * s, rows * t);
        let inp = self.inputs(b)?;
        let f = self.forward(b, &inp, true)?;
        let (mut logits, chead) = self.logits(&f.out, nd)?;
        let bk = &self.backend;
        let (sum, tokens) = bk.cross_entropy_backward(&mut logits, &inp.labels, v, scale)?;
        let mut dx = bk.zeros(nd * d)?;
        match (&mut self.lm_head, &chead) {
            (Some(h), Some(ch)) => bk.linear_backward(h, Some(&mut dx), &logits, &f.out, ch, nd)?,
            _ => bk.tied_logits_backward(&mut dx, &mut self.shared, &logits, &f.out, nd, d, v)?,
        }
        drop(logits);
        let act = self.act;
        let h = c.decoder_attention_heads;
        let sg = Geo {
            rows,
            t,
            s: t,
            h,
            causal: true,
        };
        let cg = Geo {
            rows,
            t,
            s,
            h,
            causal: false,
        };
        let drop = (c.activation_dropout, c.dropout);
        // Hidden dropout's backward: the same mask on the gradient.
        let undrop = |g: &B::T, layer: usize, part: u64| -> Result<B::T> {
            let mut g = bk.copy(g)?;
            if let Some(s) = part_seed(f.seed, layer, part) {
                bk.dropout(&mut g, drop.1, s)?;
            }
            Ok(g)
        };
        let mut denc = bk.zeros(ne * d)?;
        for (li, (l, cache)) in self.dec.iter_mut().zip(&f.dec).enumerate().rev() {
            let li2 = li + DEC_LAYER;
            let dh3 = l.ln3.backward(bk, &dx, &cache.h3, &cache.s3, d)?;
            let mut dx2 = bk.copy(&dh3)?;
            l.ffn
                .backward(bk, &dh3, &cache.x2, &cache.cf, nd, act, &mut dx2, drop)?;
            let dh2 = l.ln2.backward(bk, &dx2, &cache.h2, &cache.s2, d)?;
            let mut dx1 = bk.copy(&dh2)?;
            let dcr = undrop(&dh2, li2, 13)?;
            l.cross.backward(
                bk,
                &dcr,
                (&cache.x1, &f.enc_out),
                &cache.cc,
                cg,
                &mut dx1,
                &mut denc,
            )?;
            let dh1 = l.ln1.backward(bk, &dx1, &cache.h1, &cache.s1, d)?;
            let mut dxin = bk.copy(&dh1)?;
            let mut dkv = bk.zeros(nd * d)?;
            let da = undrop(&dh1, li2, 10)?;
            l.attn.backward(
                bk,
                &da,
                (&cache.x, &cache.x),
                &cache.ca,
                sg,
                &mut dxin,
                &mut dkv,
            )?;
            bk.add(&mut dxin, &dkv)?;
            dx = dxin;
        }
        let dx = undrop(&dx, EMB_LAYER + 1, 14)?;
        let demb = self
            .dec_ln
            .backward(bk, &dx, &f.dec_emb, &f.dec_emb_st, d)?;
        let eg = Geo {
            rows,
            t: s,
            s,
            h: c.encoder_attention_heads,
            causal: false,
        };
        let mut dx = denc;
        for (li, (l, cache)) in self.enc.iter_mut().zip(&f.enc).enumerate().rev() {
            let dh2 = l.ln2.backward(bk, &dx, &cache.h2, &cache.s2, d)?;
            let mut dx1 = bk.copy(&dh2)?;
            l.ffn
                .backward(bk, &dh2, &cache.x1, &cache.cf, ne, act, &mut dx1, drop)?;
            let dh1 = l.ln1.backward(bk, &dx1, &cache.h1, &cache.s1, d)?;
            let mut dxin = bk.copy(&dh1)?;
            let mut dkv = bk.zeros(ne * d)?;
            let da = undrop(&dh1, li, 10)?;
            l.attn.backward(
                bk,
                &da,
                (&cache.x, &cache.x),
                &cache.ca,
                eg,
                &mut dxin,
                &mut dkv,
            )?;
            bk.add(&mut dxin, &dkv)?;
            dx = dxin;
        }
        let dx = undrop(&dx, EMB_LAYER, 14)?;
        let demb_enc = self
            .enc_ln
            .backward(bk, &dx, &f.enc_emb, &f.enc_emb_st, d)?;
        // Decoder first, then encoder: the order the shared table's gradient always summed in.
        self.embed_backward(&demb, &inp.dec_ids, &inp.dec_pos, false)?;
        self.embed_backward(&demb_enc, &inp.enc_ids, &inp.enc_pos, true)?;
        self.sync(false)?;
        Ok(LossSum { sum, tokens })
    }

    fn eval_loss(&mut self, b: &Batch) -> Result<LossSum> {
        self.refresh()?;
        let inp = self.inputs(b)?;
        let f = self.forward(b, &inp, false)?;
        let (logits, _) = self.logits(&f.out, b.rows * b.dec_cols)?;
        let (sum, tokens) =
            self.backend
                .cross_entropy(&logits, &inp.labels, self.config.vocab_size)?;
        Ok(LossSum { sum, tokens })
    }

    fn merged_weights(&self) -> Result<Vec<(String, Weight)>> {
        let c = &self.config;
        let (d, v, p) = (
            c.d_model,
            c.vocab_size,
            c.max_position_embeddings + POS_OFFSET,
        );
        let mut out = vec![
            (
                "model.shared.weight".to_string(),
                B::host_slot(&self.shared).to_weight(&[v, d]),
            ),
            (
                "model.encoder.embed_positions.weight".to_string(),
                B::host_slot(&self.enc_pos).to_weight(&[p, d]),
            ),
            (
                "model.decoder.embed_positions.weight".to_string(),
                B::host_slot(&self.dec_pos).to_weight(&[p, d]),
            ),
            (
                "final_logits_bias".to_string(),
                Weight::from_vec(vec![1, v], self.final_logits_bias.clone()),
            ),
        ];
        self.enc_ln
            .export("model.encoder.layernorm_embedding", d, &mut out);
        self.dec_ln
            .export("model.decoder.layernorm_embedding", d, &mut out);
        let attn = |out: &mut Vec<(String, Weight)>, pre: &str, a: &Attn<B>| {
            for (n, l) in [
                ("q_proj", &a.q),
                ("k_proj", &a.k),
                ("v_proj", &a.v),
                ("out_proj", &a.o),
            ] {
                B::host_linear(l).export(&format!("{pre}.{n}"), out);
            }
        };
        for (i, l) in self.enc.iter().enumerate() {
            let pre = format!("model.encoder.layers.{i}");
            attn(&mut out, &format!("{pre}.self_attn"), &l.attn);
            l.ln1
                .export(&format!("{pre}.self_attn_layer_norm"), d, &mut out);
            B::host_linear(&l.ffn.fc1).export(&format!("{pre}.fc1"), &mut out);
            B::host_linear(&l.ffn.fc2).export(&format!("{pre}.fc2"), &mut out);
            l.ln2
                .export(&format!("{pre}.final_layer_norm"), d, &mut out);
        }
        for (i, l) in self.dec.iter().enumerate() {
            let pre = format!("model.decoder.layers.{i}");
            attn(&mut out, &format!("{pre}.self_attn"), &l.attn);
            l.ln1
                .export(&format!("{pre}.self_attn_layer_norm"), d, &mut out);
            attn(&mut out, &format!("{pre}.encoder_attn"), &l.cross);
            l.ln2
                .export(&format!("{pre}.encoder_attn_layer_norm"), d, &mut out);
            B::host_linear(&l.ffn.fc1).export(&format!("{pre}.fc1"), &mut out);
            B::host_linear(&l.ffn.fc2).export(&format!("{pre}.fc2"), &mut out);
            l.ln3
                .export(&format!("{pre}.final_layer_norm"), d, &mut out);
        }
        if let Some(h) = &self.lm_head {
            B::host_linear(h).export("lm_head", &mut out);
        }
        Ok(out)
    }
}
