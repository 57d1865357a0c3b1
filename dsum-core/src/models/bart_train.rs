//! BART for training: teacher-forced encoder-decoder forward over a padded batch that keeps
//! its activations, and the hand-written backward (post-LayerNorm blocks, learned positions,
//! tied shared embeddings counted once, `final_logits_bias` a frozen buffer). LoRA on any of
//! q/k/v/out_proj/fc1/fc2 of every attention block, or full fine-tuning of every weight.

use super::bart::BartConfig;
use crate::error::{Error, Result};
use crate::io::checkpoint::Checkpoint;
use crate::ops::activation::Activation;
use crate::ops::attention::{attention_backward_rows, attention_train_forward_rows, TrainAttn};
use crate::ops::cross_entropy::{cross_entropy_backward, cross_entropy_loss};
use crate::ops::dropout::dropout_inplace;
use crate::ops::embedding::{embedding_backward, embedding_forward};
use crate::ops::layernorm::{layernorm_backward, layernorm_forward_train};
use crate::ops::matmul::{linear_backward, linear_forward};
use crate::tensor::Weight;
use crate::train::linear::{LinearCache, Slot, TrainLinear};
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

struct Norm {
    w: Slot,
    b: Slot,
}

impl Norm {
    fn load(ck: &Checkpoint, prefix: &str, d: usize, setup: &Setup) -> Result<Self> {
        Ok(Norm {
            w: make_slot(ck, &format!("{prefix}.weight"), &[d], setup)?,
            b: make_slot(ck, &format!("{prefix}.bias"), &[d], setup)?,
        })
    }
    fn forward(&self, x: &[f32], d: usize) -> (Vec<f32>, Vec<(f32, f32)>) {
        let mut y = vec![0f32; x.len()];
        let st = layernorm_forward_train(&mut y, x, self.w.data(), self.b.data(), d, LN_EPS);
        (y, st)
    }
    /// Returns d(input) for d(output) `dy`.
    fn backward(&mut self, dy: &[f32], x: &[f32], st: &[(f32, f32)], d: usize) -> Vec<f32> {
        let w = self.w.data().to_vec();
        let mut dx = vec![0f32; x.len()];
        let db = match &mut self.b {
            Slot::Train(p) => Some(&mut p.grad[..]),
            Slot::Frozen(_) => None,
        };
        layernorm_backward(&mut dx, self.w.grad_mut(), db, dy, x, st, &w, d);
        dx
    }
    fn params<'a>(&'a self, v: &mut Vec<&'a Param>) {
        v.extend(self.w.param());
        v.extend(self.b.param());
    }
    fn params_mut<'a>(&'a mut self, v: &mut Vec<&'a mut Param>) {
        v.extend(self.w.param_mut());
        v.extend(self.b.param_mut());
    }
    fn export(&self, name: &str, d: usize, out: &mut Vec<(String, Weight)>) {
        out.push((format!("{name}.weight"), self.w.to_weight(&[d])));
        out.push((format!("{name}.bias"), self.b.to_weight(&[d])));
    }
}

struct Attn {
    q: TrainLinear,
    k: TrainLinear,
    v: TrainLinear,
    o: TrainLinear,
}

struct AttnCache {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    probs: Vec<Vec<f32>>,
    att: Vec<f32>,
    cq: LinearCache,
    ck: LinearCache,
    cv: LinearCache,
    co: LinearCache,
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

impl Attn {
    fn load(ck: &Checkpoint, prefix: &str, d: usize, setup: &Setup) -> Result<Self> {
        let l = |n: &str| {
            make_linear(
                ck,
                &format!("{prefix}.{n}"),
                d,
                d,
                true,
                setup,
                &BART_LINEAR,
            )
        };
        Ok(Attn {
            q: l("q_proj")?,
            k: l("k_proj")?,
            v: l("v_proj")?,
            o: l("out_proj")?,
        })
    }

    fn lins(&self) -> [&TrainLinear; 4] {
        [&self.q, &self.k, &self.v, &self.o]
    }

    fn lins_mut(&mut self) -> [&mut TrainLinear; 4] {
        [&mut self.q, &mut self.k, &mut self.v, &mut self.o]
    }

    fn shape(&self, g: Geo) -> TrainAttn {
        let d = self.q.out;
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
        x_q: &[f32],
        x_kv: &[f32],
        key_mask: Option<&[bool]>,
        g: Geo,
        seed: Option<u64>,
    ) -> (Vec<f32>, AttnCache) {
        let d = self.q.out;
        let (nq, nk) = (g.rows * g.t, g.rows * g.s);
        let sd = |i: u64| seed.map(|s| s ^ i.wrapping_mul(0x9E37_79B9));
        let (q, cq) = self.q.forward(x_q, nq, sd(1));
        let (k, ck) = self.k.forward(x_kv, nk, sd(2));
        let (v, cv) = self.v.forward(x_kv, nk, sd(3));
        let a = self.shape(g);
        let mut att = vec![0f32; nq * d];
        let probs = attention_train_forward_rows(&mut att, &q, &k, &v, key_mask, g.rows, &a);
        let (o, co) = self.o.forward(&att, nq, sd(4));
        (
            o,
            AttnCache {
                q,
                k,
                v,
                probs,
                att,
                cq,
                ck,
                cv,
                co,
            },
        )
    }

    /// Backward: accumulates into dx_q and dx_kv (the same buffer for self-attention is
    /// handled by the caller adding both).
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &mut self,
        dy: &[f32],
        x_q: &[f32],
        x_kv: &[f32],
        c: &AttnCache,
        g: Geo,
        dx_q: &mut [f32],
        dx_kv: &mut [f32],
    ) {
        let d = self.q.out;
        let (nq, nk) = (g.rows * g.t, g.rows * g.s);
        let mut datt = vec![0f32; nq * d];
        self.o.backward(Some(&mut datt), dy, &c.att, &c.co, nq);
        let a = self.shape(g);
        let (mut dq, mut dk, mut dv) = (vec![0f32; nq * d], vec![0f32; nk * d], vec![0f32; nk * d]);
        attention_backward_rows(
            &mut dq, &mut dk, &mut dv, &datt, &c.probs, &c.q, &c.k, &c.v, &a,
        );
        self.q.backward(Some(dx_q), &dq, x_q, &c.cq, nq);
        self.k.backward(Some(&mut *dx_kv), &dk, x_kv, &c.ck, nk);
        self.v.backward(Some(dx_kv), &dv, x_kv, &c.cv, nk);
    }
}

struct Ffn {
    fc1: TrainLinear,
    fc2: TrainLinear,
}

struct FfnCache {
    f: Vec<f32>,
    a: Vec<f32>,
    c1: LinearCache,
    c2: LinearCache,
    seed: Option<u64>,
}

impl Ffn {
    /// fc2(dropout(act(fc1(x)))) then dropout; `drop` = (activation p, hidden p).
    fn forward(
        &self,
        x: &[f32],
        n: usize,
        act: Activation,
        seed: Option<u64>,
        drop: (f32, f32),
    ) -> (Vec<f32>, FfnCache) {
        let sd = |i: u64| seed.map(|s| s ^ i.wrapping_mul(0xC2B2_AE35));
        let (f, c1) = self.fc1.forward(x, n, sd(5));
        let mut a = f.clone();
        act.forward_inplace(&mut a);
        if let Some(s) = sd(7) {
            dropout_inplace(&mut a, drop.0, s);
        }
        let (mut y, c2) = self.fc2.forward(&a, n, sd(6));
        if let Some(s) = sd(8) {
            dropout_inplace(&mut y, drop.1, s);
        }
        (y, FfnCache { f, a, c1, c2, seed })
    }
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &mut self,
        dy: &[f32],
        x: &[f32],
        c: &FfnCache,
        n: usize,
        act: Activation,
        dx: &mut [f32],
        drop: (f32, f32),
    ) {
        let sd = |i: u64| c.seed.map(|s| s ^ i.wrapping_mul(0xC2B2_AE35));
        let mut dy = dy.to_vec();
        if let Some(s) = sd(8) {
            dropout_inplace(&mut dy, drop.1, s);
        }
        let mut da = vec![0f32; c.a.len()];
        self.fc2.backward(Some(&mut da), &dy, &c.a, &c.c2, n);
        if let Some(s) = sd(7) {
            dropout_inplace(&mut da, drop.0, s);
        }
        act.backward_inplace(&mut da, &c.f);
        self.fc1.backward(Some(dx), &da, x, &c.c1, n);
    }
}

struct EncLayer {
    attn: Attn,
    ln1: Norm,
    ffn: Ffn,
    ln2: Norm,
}

struct DecLayer {
    attn: Attn,
    ln1: Norm,
    cross: Attn,
    ln2: Norm,
    ffn: Ffn,
    ln3: Norm,
}

/// Per-block activations: the block input, its sub-layer cache, and the LayerNorm input/stats.
struct EncCache {
    x: Vec<f32>,
    ca: AttnCache,
    h1: Vec<f32>,
    s1: Vec<(f32, f32)>,
    x1: Vec<f32>,
    cf: FfnCache,
    h2: Vec<f32>,
    s2: Vec<(f32, f32)>,
}

struct DecCache {
    x: Vec<f32>,
    ca: AttnCache,
    h1: Vec<f32>,
    s1: Vec<(f32, f32)>,
    x1: Vec<f32>,
    cc: AttnCache,
    h2: Vec<f32>,
    s2: Vec<(f32, f32)>,
    x2: Vec<f32>,
    cf: FfnCache,
    h3: Vec<f32>,
    s3: Vec<(f32, f32)>,
}

pub struct BartTrain {
    pub config: BartConfig,
    act: Activation,
    embed_scale: f32,
    shared: Slot,
    lm_head: Option<TrainLinear>,
    final_logits_bias: Vec<f32>,
    enc_pos: Slot,
    enc_ln: Norm,
    enc: Vec<EncLayer>,
    dec_pos: Slot,
    dec_ln: Norm,
    dec: Vec<DecLayer>,
    dropout_seed: Option<u64>,
}

struct Fwd {
    /// The dropout seed the pass ran with (None: no dropout).
    seed: Option<u64>,
    enc_emb: Vec<f32>,
    enc_emb_st: Vec<(f32, f32)>,
    enc: Vec<EncCache>,
    enc_out: Vec<f32>,
    dec_emb: Vec<f32>,
    dec_emb_st: Vec<(f32, f32)>,
    dec: Vec<DecCache>,
    out: Vec<f32>,
}

impl BartTrain {
    pub fn load(config: BartConfig, ck: &Checkpoint, setup: &Setup) -> Result<Self> {
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
            Some(make_linear(ck, "lm_head", v, d, false, &s, &[])?)
        };
        let final_logits_bias = if ck.contains("final_logits_bias") {
            ck.get("final_logits_bias", &[1, v])?.to_vec()
        } else {
            vec![0.0; v]
        };
        let p = c.max_position_embeddings + POS_OFFSET;
        let lin =
            |name: String, out, inp| make_linear(ck, &name, out, inp, true, setup, &BART_LINEAR);
        let ffn = |pre: &str, f: usize| -> Result<Ffn> {
            Ok(Ffn {
                fc1: lin(format!("{pre}.fc1"), f, d)?,
                fc2: lin(format!("{pre}.fc2"), d, f)?,
            })
        };
        let mut enc = Vec::new();
        for i in 0..c.encoder_layers {
            let pre = format!("model.encoder.layers.{i}");
            enc.push(EncLayer {
                attn: Attn::load(ck, &format!("{pre}.self_attn"), d, setup)?,
                ln1: Norm::load(ck, &format!("{pre}.self_attn_layer_norm"), d, setup)?,
                ffn: ffn(&pre, c.encoder_ffn_dim)?,
                ln2: Norm::load(ck, &format!("{pre}.final_layer_norm"), d, setup)?,
            });
        }
        let mut dec = Vec::new();
        for i in 0..c.decoder_layers {
            let pre = format!("model.decoder.layers.{i}");
            dec.push(DecLayer {
                attn: Attn::load(ck, &format!("{pre}.self_attn"), d, setup)?,
                ln1: Norm::load(ck, &format!("{pre}.self_attn_layer_norm"), d, setup)?,
                cross: Attn::load(ck, &format!("{pre}.encoder_attn"), d, setup)?,
                ln2: Norm::load(ck, &format!("{pre}.encoder_attn_layer_norm"), d, setup)?,
                ffn: ffn(&pre, c.decoder_ffn_dim)?,
                ln3: Norm::load(ck, &format!("{pre}.final_layer_norm"), d, setup)?,
            });
        }
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
            enc_pos: make_slot(ck, "model.encoder.embed_positions.weight", &[p, d], setup)?,
            enc_ln: Norm::load(ck, "model.encoder.layernorm_embedding", d, setup)?,
            enc,
            dec_pos: make_slot(ck, "model.decoder.embed_positions.weight", &[p, d], setup)?,
            dec_ln: Norm::load(ck, "model.decoder.layernorm_embedding", d, setup)?,
            dec,
            dropout_seed: None,
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

    /// x = E[ids]·scale + P[pos + 2] for every row of length `t`.
    fn embed(&self, ids: &[u32], t: usize, pos: &Slot) -> Result<Vec<f32>> {
        let d = self.config.d_model;
        let mut x = vec![0f32; ids.len() * d];
        embedding_forward(&mut x, ids, self.shared.data(), d, self.embed_scale)?;
        let p = pos.data();
        for (i, row) in x.chunks_exact_mut(d).enumerate() {
            let pi = i % t + POS_OFFSET;
            row.iter_mut()
                .zip(&p[pi * d..(pi + 1) * d])
                .for_each(|(a, b)| *a += b);
        }
        Ok(x)
    }

    /// Teacher-forced forward; dropout (hidden, activation, LoRA) only when `train`.
    fn forward(&self, b: &Batch, train: bool) -> Result<Fwd> {
        self.check_batch(b)?;
        let c = &self.config;
        let d = c.d_model;
        let (rows, s, t) = (b.rows, b.cols, b.dec_cols);
        let seed = if train { self.dropout_seed } else { None };
        let drop = (c.activation_dropout, c.dropout);
        let hidden_drop = |x: &mut [f32], s: Option<u64>| {
            if let Some(s) = s {
                dropout_inplace(x, drop.1, s);
            }
        };
        let sd = |layer: usize, part: u64| part_seed(seed, layer, part);
        // Encoder.
        let enc_emb = self.embed(&b.input_ids, s, &self.enc_pos)?;
        let (mut x, enc_emb_st) = self.enc_ln.forward(&enc_emb, d);
        hidden_drop(&mut x, sd(EMB_LAYER, 14));
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
                .forward(&x, &x, Some(&b.attention_mask), eg, sd(li, 1));
            hidden_drop(&mut a, sd(li, 10));
            let h1: Vec<f32> = x.iter().zip(&a).map(|(p, q)| p + q).collect();
            let (x1, s1) = l.ln1.forward(&h1, d);
            let (f, cf) = l.ffn.forward(&x1, rows * s, self.act, sd(li, 2), drop);
            let h2: Vec<f32> = x1.iter().zip(&f).map(|(p, q)| p + q).collect();
            let (x2, s2) = l.ln2.forward(&h2, d);
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
        let dec_emb = self.embed(&b.decoder_input_ids, t, &self.dec_pos)?;
        let (mut x, dec_emb_st) = self.dec_ln.forward(&dec_emb, d);
        hidden_drop(&mut x, sd(EMB_LAYER + 1, 14));
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
            let (mut a, ca) = l.attn.forward(&x, &x, None, sg, sd(li2, 1));
            hidden_drop(&mut a, sd(li2, 10));
            let h1: Vec<f32> = x.iter().zip(&a).map(|(p, q)| p + q).collect();
            let (x1, s1) = l.ln1.forward(&h1, d);
            let (mut cr, cc) =
                l.cross
                    .forward(&x1, &enc_out, Some(&b.attention_mask), cg, sd(li2, 3));
            hidden_drop(&mut cr, sd(li2, 13));
            let h2: Vec<f32> = x1.iter().zip(&cr).map(|(p, q)| p + q).collect();
            let (x2, s2) = l.ln2.forward(&h2, d);
            let (f, cf) = l.ffn.forward(&x2, rows * t, self.act, sd(li2, 2), drop);
            let h3: Vec<f32> = x2.iter().zip(&f).map(|(p, q)| p + q).collect();
            let (x3, s3) = l.ln3.forward(&h3, d);
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

    fn logits(&self, x: &[f32], n: usize) -> (Vec<f32>, LinearCache) {
        let (d, v) = (self.config.d_model, self.config.vocab_size);
        let (mut logits, cache) = match &self.lm_head {
            Some(h) => h.forward(x, n, None),
            None => {
                let mut l = vec![0f32; n * v];
                linear_forward(&mut l, x, self.shared.data(), None, n, d, v);
                (l, LinearCache::default())
            }
        };
        for row in logits.chunks_exact_mut(v) {
            row.iter_mut()
                .zip(&self.final_logits_bias)
                .for_each(|(a, b)| *a += b);
        }
        (logits, cache)
    }
}

/// Adds `src` into `dst` element-wise.
fn add(dst: &mut [f32], src: &[f32]) {
    dst.iter_mut().zip(src).for_each(|(a, b)| *a += b);
}

impl Trainable for BartTrain {
    fn is_causal(&self) -> bool {
        false
    }

    fn params(&self) -> Vec<&Param> {
        let mut v: Vec<&Param> = self.shared.param().into_iter().collect();
        v.extend(self.enc_pos.param());
        self.enc_ln.params(&mut v);
        for l in &self.enc {
            for lin in l.attn.lins() {
                v.extend(lin.params());
            }
            l.ln1.params(&mut v);
            v.extend(l.ffn.fc1.params());
            v.extend(l.ffn.fc2.params());
            l.ln2.params(&mut v);
        }
        v.extend(self.dec_pos.param());
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
            v.extend(l.ffn.fc1.params());
            v.extend(l.ffn.fc2.params());
            l.ln3.params(&mut v);
        }
        if let Some(h) = &self.lm_head {
            v.extend(h.params());
        }
        v
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut v: Vec<&mut Param> = self.shared.param_mut().into_iter().collect();
        v.extend(self.enc_pos.param_mut());
        self.enc_ln.params_mut(&mut v);
        for l in &mut self.enc {
            for lin in l.attn.lins_mut() {
                v.extend(lin.params_mut());
            }
            l.ln1.params_mut(&mut v);
            v.extend(l.ffn.fc1.params_mut());
            v.extend(l.ffn.fc2.params_mut());
            l.ln2.params_mut(&mut v);
        }
        v.extend(self.dec_pos.param_mut());
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
            v.extend(l.ffn.fc1.params_mut());
            v.extend(l.ffn.fc2.params_mut());
            l.ln3.params_mut(&mut v);
        }
        if let Some(h) = &mut self.lm_head {
            v.extend(h.params_mut());
        }
        v
    }

    fn set_dropout_seed(&mut self, seed: Option<u64>) {
        self.dropout_seed = seed;
    }

    fn accumulate(&mut self, b: &Batch, scale: f32) -> Result<LossSum> {
        let c = self.config.clone();
        let (d, v) = (c.d_model, c.vocab_size);
        let (rows, s, t) = (b.rows, b.cols, b.dec_cols);
        let (ne, nd) = (rows * s, rows * t);
        let f = self.forward(b, true)?;
        let (mut logits, chead) = self.logits(&f.out, nd);
        let (sum, tokens) =
            cross_entropy_backward(&mut logits, &b.labels, v, scale).map_err(Error::Generation)?;
        let mut dx = vec![0f32; nd * d];
        match &mut self.lm_head {
            Some(h) => h.backward(Some(&mut dx), &logits, &f.out, &chead, nd),
            None => {
                let (w, dw) = match &mut self.shared {
                    Slot::Frozen(w) => (&**w, None),
                    Slot::Train(p) => (&p.value[..], Some(&mut p.grad[..])),
                };
                linear_backward(Some(&mut dx), dw, None, &logits, &f.out, w, nd, d, v);
            }
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
        let undrop = |g: &[f32], layer: usize, part: u64| {
            let mut g = g.to_vec();
            if let Some(s) = part_seed(f.seed, layer, part) {
                dropout_inplace(&mut g, drop.1, s);
            }
            g
        };
        let mut denc = vec![0f32; ne * d];
        for (li, (l, cache)) in self.dec.iter_mut().zip(&f.dec).enumerate().rev() {
            let li2 = li + DEC_LAYER;
            let dh3 = l.ln3.backward(&dx, &cache.h3, &cache.s3, d);
            let mut dx2 = dh3.clone();
            l.ffn
                .backward(&dh3, &cache.x2, &cache.cf, nd, act, &mut dx2, drop);
            let dh2 = l.ln2.backward(&dx2, &cache.h2, &cache.s2, d);
            let mut dx1 = dh2.clone();
            let dcr = undrop(&dh2, li2, 13);
            l.cross.backward(
                &dcr, &cache.x1, &f.enc_out, &cache.cc, cg, &mut dx1, &mut denc,
            );
            let dh1 = l.ln1.backward(&dx1, &cache.h1, &cache.s1, d);
            let mut dxin = dh1.clone();
            let mut dkv = vec![0f32; nd * d];
            let da = undrop(&dh1, li2, 10);
            l.attn
                .backward(&da, &cache.x, &cache.x, &cache.ca, sg, &mut dxin, &mut dkv);
            add(&mut dxin, &dkv);
            dx = dxin;
        }
        let dx = undrop(&dx, EMB_LAYER + 1, 14);
        let demb = self.dec_ln.backward(&dx, &f.dec_emb, &f.dec_emb_st, d);
        self.embed_backward(&demb, &b.decoder_input_ids, t, false);
        let eg = Geo {
            rows,
            t: s,
            s,
            h: c.encoder_attention_heads,
            causal: false,
        };
        let mut dx = denc;
        for (li, (l, cache)) in self.enc.iter_mut().zip(&f.enc).enumerate().rev() {
            let dh2 = l.ln2.backward(&dx, &cache.h2, &cache.s2, d);
            let mut dx1 = dh2.clone();
            l.ffn
                .backward(&dh2, &cache.x1, &cache.cf, ne, act, &mut dx1, drop);
            let dh1 = l.ln1.backward(&dx1, &cache.h1, &cache.s1, d);
            let mut dxin = dh1.clone();
            let mut dkv = vec![0f32; ne * d];
            let da = undrop(&dh1, li, 10);
            l.attn
                .backward(&da, &cache.x, &cache.x, &cache.ca, eg, &mut dxin, &mut dkv);
            add(&mut dxin, &dkv);
            dx = dxin;
        }
        let dx = undrop(&dx, EMB_LAYER, 14);
        let demb = self.enc_ln.backward(&dx, &f.enc_emb, &f.enc_emb_st, d);
        self.embed_backward(&demb, &b.input_ids, s, true);
        Ok(LossSum { sum, tokens })
    }

    fn eval_loss(&mut self, b: &Batch) -> Result<LossSum> {
        let f = self.forward(b, false)?;
        let (logits, _) = self.logits(&f.out, b.rows * b.dec_cols);
        let (sum, tokens) = cross_entropy_loss(&logits, &b.labels, self.config.vocab_size)
            .map_err(Error::Generation)?;
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
                self.shared.to_weight(&[v, d]),
            ),
            (
                "model.encoder.embed_positions.weight".to_string(),
                self.enc_pos.to_weight(&[p, d]),
            ),
            (
                "model.decoder.embed_positions.weight".to_string(),
                self.dec_pos.to_weight(&[p, d]),
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
        let attn = |out: &mut Vec<(String, Weight)>, pre: &str, a: &Attn| {
            for (n, l) in [
                ("q_proj", &a.q),
                ("k_proj", &a.k),
                ("v_proj", &a.v),
                ("out_proj", &a.o),
            ] {
                l.export(&format!("{pre}.{n}"), out);
            }
        };
        for (i, l) in self.enc.iter().enumerate() {
            let pre = format!("model.encoder.layers.{i}");
            attn(&mut out, &format!("{pre}.self_attn"), &l.attn);
            l.ln1
                .export(&format!("{pre}.self_attn_layer_norm"), d, &mut out);
            l.ffn.fc1.export(&format!("{pre}.fc1"), &mut out);
            l.ffn.fc2.export(&format!("{pre}.fc2"), &mut out);
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
            l.ffn.fc1.export(&format!("{pre}.fc1"), &mut out);
            l.ffn.fc2.export(&format!("{pre}.fc2"), &mut out);
            l.ln3
                .export(&format!("{pre}.final_layer_norm"), d, &mut out);
        }
        if let Some(h) = &self.lm_head {
            h.export("lm_head", &mut out);
        }
        Ok(out)
    }
}

impl BartTrain {
    /// Gradient of the token + position embeddings for one stack's input `ids` [rows, t].
    fn embed_backward(&mut self, demb: &[f32], ids: &[u32], t: usize, encoder: bool) {
        let d = self.config.d_model;
        if let Some(g) = self.shared.grad_mut() {
            embedding_backward(g, demb, ids, d, self.embed_scale);
        }
        let pos = if encoder {
            &mut self.enc_pos
        } else {
            &mut self.dec_pos
        };
        if let Some(g) = pos.grad_mut() {
            let pids: Vec<u32> = (0..ids.len())
                .map(|i| (i % t + POS_OFFSET) as u32)
                .collect();
            embedding_backward(g, demb, &pids, d, 1.0);
        }
    }
}
