//! BART (`BartForConditionalGeneration`), as transformers computes it in eval mode.
//!
//! Glossary: B batch, S source (encoder) length, R decoder rows (B × beams), T new decoder
//! tokens, L cached decoder positions, D d_model, H heads, dh = D/H, F ffn dim, V vocab.
//! Post-LN blocks; learned positions with offset 2; `layernorm_embedding`; optional
//! √D embedding scale; lm_head tied to `model.shared.weight` plus `final_logits_bias`.
//! Tensor names are exactly the Hugging Face checkpoint names.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::generation::{GenerationConfig, Hypothesis, StepDecoder};
use crate::io::checkpoint::Checkpoint;
use crate::ops::activation::Activation;
use crate::ops::attention::{attention_forward, AttnShape};
use crate::ops::layernorm::layernorm_inplace;
use crate::ops::matmul::linear_forward;
use crate::tensor::Weight;

const LN_EPS: f32 = 1e-5;
/// BART's positional embedding table is shifted by 2 (a fairseq legacy).
const POS_OFFSET: usize = 2;

/// The fields of `config.json` that BART uses.
#[derive(Clone, Debug, Deserialize)]
pub struct BartConfig {
    #[serde(default)]
    pub model_type: Option<String>,
    pub vocab_size: usize,
    pub d_model: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub encoder_attention_heads: usize,
    pub decoder_attention_heads: usize,
    pub encoder_ffn_dim: usize,
    pub decoder_ffn_dim: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_act")]
    pub activation_function: String,
    #[serde(default)]
    pub scale_embedding: bool,
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    #[serde(default)]
    pub decoder_start_token_id: Option<u32>,
    #[serde(default)]
    pub forced_bos_token_id: Option<u32>,
    #[serde(default)]
    pub forced_eos_token_id: Option<u32>,
    /// Hidden-state dropout while training (after embeddings, attention and the FFN).
    #[serde(default)]
    pub dropout: f32,
    /// Dropout after the FFN activation while training.
    #[serde(default)]
    pub activation_dropout: f32,
    #[serde(default)]
    pub normalize_before: bool,
    #[serde(default)]
    pub add_final_layer_norm: bool,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_true() -> bool {
    true
}

impl BartConfig {
    /// Parse and validate; `path` is only used in error messages.
    pub fn from_json(text: &str, path: &str) -> Result<Self> {
        let c: BartConfig =
            serde_json::from_str(text).map_err(|e| Error::config(path, format!("{e}")))?;
        match c.model_type.as_deref() {
            Some("bart") | None => {}
            Some(other) => {
                return Err(Error::config(
                    path,
                    format!("model_type `{other}` is not BART (this loader handles `bart`)"),
                ))
            }
        }
        if c.normalize_before || c.add_final_layer_norm {
            return Err(Error::config(
                path,
                "pre-LN BART variants (mBART-style normalize_before) are not supported",
            ));
        }
        for (name, heads) in [
            ("encoder", c.encoder_attention_heads),
            ("decoder", c.decoder_attention_heads),
        ] {
            if heads == 0 || !c.d_model.is_multiple_of(heads) {
                return Err(Error::config(
                    path,
                    format!(
                        "d_model {} is not divisible by {name}_attention_heads {heads}",
                        c.d_model
                    ),
                ));
            }
        }
        if c.vocab_size == 0 || c.d_model == 0 {
            return Err(Error::config(
                path,
                "vocab_size and d_model must be positive",
            ));
        }
        Activation::from_name(&c.activation_function).map_err(|_| {
            Error::config(
                path,
                format!(
                    "unsupported activation_function `{}`",
                    c.activation_function
                ),
            )
        })?;
        Ok(c)
    }
}

struct Linear {
    w: Weight, // [out, in]
    b: Weight, // [out]
    out: usize,
    inp: usize,
}

impl Linear {
    fn load(ck: &Checkpoint, prefix: &str, out: usize, inp: usize) -> Result<Self> {
        Ok(Linear {
            w: ck.get(&format!("{prefix}.weight"), &[out, inp])?,
            b: ck.get(&format!("{prefix}.bias"), &[out])?,
            out,
            inp,
        })
    }
    /// y[M, out] = x[M, in] · Wᵀ + b
    fn forward(&self, x: &[f32], m: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * self.out];
        linear_forward(&mut y, x, &self.w, Some(&self.b), m, self.inp, self.out);
        y
    }
}

struct LayerNorm {
    w: Weight,
    b: Weight,
}

impl LayerNorm {
    fn load(ck: &Checkpoint, prefix: &str, d: usize) -> Result<Self> {
        Ok(LayerNorm {
            w: ck.get(&format!("{prefix}.weight"), &[d])?,
            b: ck.get(&format!("{prefix}.bias"), &[d])?,
        })
    }
    fn forward_inplace(&self, x: &mut [f32]) {
        layernorm_inplace(x, &self.w, &self.b, self.w.len(), LN_EPS);
    }
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
}

impl Attention {
    fn load(ck: &Checkpoint, prefix: &str, d: usize) -> Result<Self> {
        Ok(Attention {
            q: Linear::load(ck, &format!("{prefix}.q_proj"), d, d)?,
            k: Linear::load(ck, &format!("{prefix}.k_proj"), d, d)?,
            v: Linear::load(ck, &format!("{prefix}.v_proj"), d, d)?,
            o: Linear::load(ck, &format!("{prefix}.out_proj"), d, d)?,
        })
    }
}

struct Ffn {
    fc1: Linear,
    fc2: Linear,
}

struct EncoderLayer {
    self_attn: Attention,
    self_attn_layer_norm: LayerNorm,
    ffn: Ffn,
    final_layer_norm: LayerNorm,
}

struct DecoderLayer {
    self_attn: Attention,
    self_attn_layer_norm: LayerNorm,
    cross_attn: Attention,
    cross_attn_layer_norm: LayerNorm,
    ffn: Ffn,
    final_layer_norm: LayerNorm,
}

/// Weights of a BartForConditionalGeneration, borrowed from the checkpoint where possible.
pub struct Bart {
    pub config: BartConfig,
    act: Activation,
    embed_scale: f32,
    shared: Weight,          // [V, D] token embeddings (encoder, decoder and lm_head)
    lm_head: Option<Weight>, // [V, D] only when not tied
    final_logits_bias: Vec<f32>, // [V]
    enc_pos: Weight,         // [P+2, D]
    enc_ln_emb: LayerNorm,
    enc_layers: Vec<EncoderLayer>,
    dec_pos: Weight, // [P+2, D]
    dec_ln_emb: LayerNorm,
    dec_layers: Vec<DecoderLayer>,
}

/// Encoder output plus its padding mask.
pub struct EncoderOutput {
    pub b: usize,
    pub s: usize,
    /// [B, S, D]
    pub hidden: Vec<f32>,
    /// [B, S] true where the token is real.
    pub mask: Vec<bool>,
}

/// Decoder key/value caches for R rows. Self-attention caches grow by T each call;
/// cross-attention keys/values are computed once per encoder batch item and shared by its beams.
pub struct DecoderState {
    rows: usize,
    cap: usize,
    len: usize,
    /// row -> encoder batch item
    row_batch: Vec<usize>,
    /// per layer [R, H, cap, dh]
    self_k: Vec<Vec<f32>>,
    self_v: Vec<Vec<f32>>,
    /// per layer [B, H, S, dh]
    cross_k: Vec<Vec<f32>>,
    cross_v: Vec<Vec<f32>>,
    s: usize,
    enc_mask: Vec<bool>,
}

impl DecoderState {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Keep only the rows in `idx` (new row r takes old row idx[r]): beam reordering.
    pub fn reorder(&mut self, idx: &[usize]) {
        let per_row = self
            .self_k
            .first()
            .map(|k| k.len() / self.rows.max(1))
            .unwrap_or(0);
        for cache in self.self_k.iter_mut().chain(self.self_v.iter_mut()) {
            let mut next = vec![0f32; idx.len() * per_row];
            for (r, &src) in idx.iter().enumerate() {
                next[r * per_row..(r + 1) * per_row]
                    .copy_from_slice(&cache[src * per_row..(src + 1) * per_row]);
            }
            *cache = next;
        }
        self.row_batch = idx.iter().map(|&i| self.row_batch[i]).collect();
        self.rows = idx.len();
    }
}

/// [N, H*dh] rows -> [H, N, dh] (head-major), written into `dst` at rows offset within cap.
fn split_heads_into(
    dst: &mut [f32],
    src: &[f32],
    n: usize,
    h: usize,
    dh: usize,
    cap: usize,
    at: usize,
) {
    for i in 0..n {
        for hi in 0..h {
            let d0 = (hi * cap + at + i) * dh;
            dst[d0..d0 + dh]
                .copy_from_slice(&src[i * h * dh + hi * dh..i * h * dh + (hi + 1) * dh]);
        }
    }
}

impl Bart {
    pub fn load(config: BartConfig, ck: &Checkpoint) -> Result<Self> {
        let c = &config;
        let (d, v) = (c.d_model, c.vocab_size);
        let shared_name = [
            "model.shared.weight",
            "model.encoder.embed_tokens.weight",
            "model.decoder.embed_tokens.weight",
        ]
        .into_iter()
        .find(|n| ck.contains(n))
        .unwrap_or("model.shared.weight");
        let shared = ck.get(shared_name, &[v, d])?;
        let lm_head = if c.tie_word_embeddings {
            None
        } else {
            Some(ck.get("lm_head.weight", &[v, d])?)
        };
        let final_logits_bias = if ck.contains("final_logits_bias") {
            ck.get("final_logits_bias", &[1, v])?.to_vec()
        } else {
            vec![0.0; v]
        };
        let p = c.max_position_embeddings + POS_OFFSET;
        let ffn = |prefix: &str, f: usize| -> Result<Ffn> {
            Ok(Ffn {
                fc1: Linear::load(ck, &format!("{prefix}.fc1"), f, d)?,
                fc2: Linear::load(ck, &format!("{prefix}.fc2"), d, f)?,
            })
        };
        let mut enc_layers = Vec::new();
        for i in 0..c.encoder_layers {
            let pre = format!("model.encoder.layers.{i}");
            enc_layers.push(EncoderLayer {
                self_attn: Attention::load(ck, &format!("{pre}.self_attn"), d)?,
                self_attn_layer_norm: LayerNorm::load(
                    ck,
                    &format!("{pre}.self_attn_layer_norm"),
                    d,
                )?,
                ffn: ffn(&pre, c.encoder_ffn_dim)?,
                final_layer_norm: LayerNorm::load(ck, &format!("{pre}.final_layer_norm"), d)?,
            });
        }
        let mut dec_layers = Vec::new();
        for i in 0..c.decoder_layers {
            let pre = format!("model.decoder.layers.{i}");
            dec_layers.push(DecoderLayer {
                self_attn: Attention::load(ck, &format!("{pre}.self_attn"), d)?,
                self_attn_layer_norm: LayerNorm::load(
                    ck,
                    &format!("{pre}.self_attn_layer_norm"),
                    d,
                )?,
                cross_attn: Attention::load(ck, &format!("{pre}.encoder_attn"), d)?,
                cross_attn_layer_norm: LayerNorm::load(
                    ck,
                    &format!("{pre}.encoder_attn_layer_norm"),
                    d,
                )?,
                ffn: ffn(&pre, c.decoder_ffn_dim)?,
                final_layer_norm: LayerNorm::load(ck, &format!("{pre}.final_layer_norm"), d)?,
            });
        }
        Ok(Bart {
            act: Activation::from_name(&c.activation_function)?,
            embed_scale: if c.scale_embedding {
                (d as f32).sqrt()
            } else {
                1.0
            },
            shared,
            lm_head,
            final_logits_bias,
            enc_pos: ck.get("model.encoder.embed_positions.weight", &[p, d])?,
            enc_ln_emb: LayerNorm::load(ck, "model.encoder.layernorm_embedding", d)?,
            enc_layers,
            dec_pos: ck.get("model.decoder.embed_positions.weight", &[p, d])?,
            dec_ln_emb: LayerNorm::load(ck, "model.decoder.layernorm_embedding", d)?,
            dec_layers,
            config,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    /// Trainable parameters, as `sum(p.numel() for p in model.parameters())` counts them
    /// (tied embeddings once; `final_logits_bias` is a buffer).
    pub fn num_parameters(&self) -> usize {
        let c = &self.config;
        let (d, v, p) = (
            c.d_model,
            c.vocab_size,
            c.max_position_embeddings + POS_OFFSET,
        );
        let attn = 4 * (d * d + d);
        let ln = 2 * d;
        let ffn = |f: usize| d * f + f + f * d + d;
        let enc = c.encoder_layers * (attn + ln + ffn(c.encoder_ffn_dim) + ln);
        let dec = c.decoder_layers * (2 * attn + 3 * ln + ffn(c.decoder_ffn_dim));
        let head = if self.lm_head.is_some() { v * d } else { 0 };
        v * d + head + 2 * (p * d + ln) + enc + dec
    }

    /// Longest input either stack can embed.
    pub fn max_positions(&self) -> usize {
        self.config.max_position_embeddings
    }

    /// x[N, D] = embed(ids) · scale + pos[positions + 2]
    fn embed(
        &self,
        ids: &[u32],
        positions: impl Iterator<Item = usize>,
        pos_table: &Weight,
    ) -> Result<Vec<f32>> {
        let d = self.config.d_model;
        let mut x = vec![0f32; ids.len() * d];
        for ((i, &id), p) in ids.iter().enumerate().zip(positions) {
            let id = id as usize;
            if id >= self.config.vocab_size {
                return Err(Error::Generation(format!(
                    "token id {id} is outside the vocabulary ({})",
                    self.config.vocab_size
                )));
            }
            if p + POS_OFFSET >= pos_table.shape[0] {
                return Err(Error::Generation(format!(
                    "position {p} exceeds max_position_embeddings {}",
                    self.config.max_position_embeddings
                )));
            }
            let e = &self.shared[id * d..(id + 1) * d];
            let pe = &pos_table[(p + POS_OFFSET) * d..(p + POS_OFFSET + 1) * d];
            for j in 0..d {
                x[i * d + j] = e[j] * self.embed_scale + pe[j];
            }
        }
        Ok(x)
    }

    fn ffn_forward(&self, ffn: &Ffn, x: &[f32], m: usize) -> Vec<f32> {
        let mut h = ffn.fc1.forward(x, m);
        self.act.forward_inplace(&mut h);
        ffn.fc2.forward(&h, m)
    }

    /// Encode a right-padded batch: ids and mask are [B, S].
    pub fn encode(&self, ids: &[u32], mask: &[bool], b: usize, s: usize) -> Result<EncoderOutput> {
        if ids.len() != b * s || mask.len() != b * s {
            return Err(Error::Generation(
                "encoder ids / mask do not match [batch, length]".into(),
            ));
        }
        let (d, h) = (self.config.d_model, self.config.encoder_attention_heads);
        let dh = d / h;
        let n = b * s;
        let mut x = self.embed(ids, (0..n).map(|i| i % s), &self.enc_pos)?;
        self.enc_ln_emb.forward_inplace(&mut x);
        let scale = (dh as f32).powf(-0.5);
        let mut kh = vec![0f32; h * s * dh];
        let mut vh = vec![0f32; h * s * dh];
        for layer in &self.enc_layers {
            let q = layer.self_attn.q.forward(&x, n);
            let k = layer.self_attn.k.forward(&x, n);
            let v = layer.self_attn.v.forward(&x, n);
            let mut att = vec![0f32; n * d];
            for bi in 0..b {
                split_heads_into(&mut kh, &k[bi * s * d..(bi + 1) * s * d], s, h, dh, s, 0);
                split_heads_into(&mut vh, &v[bi * s * d..(bi + 1) * s * d], s, h, dh, s, 0);
                let shape = AttnShape {
                    t: s,
                    h,
                    kv_h: h,
                    dh,
                    cap: s,
                    len: s,
                };
                attention_forward(
                    &mut att[bi * s * d..(bi + 1) * s * d],
                    &q[bi * s * d..(bi + 1) * s * d],
                    &kh,
                    &vh,
                    &shape,
                    None,
                    Some(&mask[bi * s..(bi + 1) * s]),
                    scale,
                );
            }
            let o = layer.self_attn.o.forward(&att, n);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            layer.self_attn_layer_norm.forward_inplace(&mut x);
            let f = self.ffn_forward(&layer.ffn, &x, n);
            x.iter_mut().zip(&f).for_each(|(a, b)| *a += b);
            layer.final_layer_norm.forward_inplace(&mut x);
        }
        Ok(EncoderOutput {
            b,
            s,
            hidden: x,
            mask: mask.to_vec(),
        })
    }

    /// Decoder caches for `row_batch.len()` rows (row r decodes for batch item row_batch[r]),
    /// able to hold `cap` decoder positions. Cross-attention K/V are computed here, once.
    pub fn start_decoder(
        &self,
        enc: &EncoderOutput,
        row_batch: Vec<usize>,
        cap: usize,
    ) -> Result<DecoderState> {
        let (d, h) = (self.config.d_model, self.config.decoder_attention_heads);
        let dh = d / h;
        let (b, s) = (enc.b, enc.s);
        if row_batch.iter().any(|&r| r >= b) {
            return Err(Error::Generation(
                "decoder row refers to a missing batch item".into(),
            ));
        }
        if cap > self.config.max_position_embeddings {
            return Err(Error::Generation(format!(
                "max_length {cap} exceeds the decoder's max_position_embeddings {}",
                self.config.max_position_embeddings
            )));
        }
        let rows = row_batch.len();
        let mut cross_k = Vec::new();
        let mut cross_v = Vec::new();
        for layer in &self.dec_layers {
            let k = layer.cross_attn.k.forward(&enc.hidden, b * s);
            let v = layer.cross_attn.v.forward(&enc.hidden, b * s);
            let mut kh = vec![0f32; b * h * s * dh];
            let mut vh = vec![0f32; b * h * s * dh];
            for bi in 0..b {
                let o = bi * h * s * dh;
                split_heads_into(
                    &mut kh[o..o + h * s * dh],
                    &k[bi * s * d..(bi + 1) * s * d],
                    s,
                    h,
                    dh,
                    s,
                    0,
                );
                split_heads_into(
                    &mut vh[o..o + h * s * dh],
                    &v[bi * s * d..(bi + 1) * s * d],
                    s,
                    h,
                    dh,
                    s,
                    0,
                );
            }
            cross_k.push(kh);
            cross_v.push(vh);
        }
        let nl = self.dec_layers.len();
        Ok(DecoderState {
            rows,
            cap,
            len: 0,
            row_batch,
            self_k: vec![vec![0f32; rows * h * cap * dh]; nl],
            self_v: vec![vec![0f32; rows * h * cap * dh]; nl],
            cross_k,
            cross_v,
            s,
            enc_mask: enc.mask.clone(),
        })
    }

    /// Run `t` new tokens per row (ids [R, T]) through the decoder, extending the caches.
    /// Returns logits [R, T, V] for every new position when `all_positions`, else [R, V]
    /// for the last one (what generation needs).
    pub fn decode(
        &self,
        st: &mut DecoderState,
        ids: &[u32],
        t: usize,
        all_positions: bool,
    ) -> Result<Vec<f32>> {
        let (d, h) = (self.config.d_model, self.config.decoder_attention_heads);
        let dh = d / h;
        let r = st.rows;
        if ids.len() != r * t {
            return Err(Error::Generation(
                "decoder ids do not match [rows, new tokens]".into(),
            ));
        }
        if st.len + t > st.cap {
            return Err(Error::Generation(format!(
                "decoder cache holds {} positions, {} requested",
                st.cap,
                st.len + t
            )));
        }
        let past = st.len;
        let n = r * t;
        let mut x = self.embed(ids, (0..n).map(|i| past + i % t), &self.dec_pos)?;
        self.dec_ln_emb.forward_inplace(&mut x);
        let scale = (dh as f32).powf(-0.5);
        let (cap, s) = (st.cap, st.s);
        for (li, layer) in self.dec_layers.iter().enumerate() {
            // Causal self-attention over the cache.
            let q = layer.self_attn.q.forward(&x, n);
            let k = layer.self_attn.k.forward(&x, n);
            let v = layer.self_attn.v.forward(&x, n);
            let mut att = vec![0f32; n * d];
            for ri in 0..r {
                let kc = &mut st.self_k[li][ri * h * cap * dh..(ri + 1) * h * cap * dh];
                split_heads_into(kc, &k[ri * t * d..(ri + 1) * t * d], t, h, dh, cap, past);
                let vc = &mut st.self_v[li][ri * h * cap * dh..(ri + 1) * h * cap * dh];
                split_heads_into(vc, &v[ri * t * d..(ri + 1) * t * d], t, h, dh, cap, past);
                let shape = AttnShape {
                    t,
                    h,
                    kv_h: h,
                    dh,
                    cap,
                    len: past + t,
                };
                attention_forward(
                    &mut att[ri * t * d..(ri + 1) * t * d],
                    &q[ri * t * d..(ri + 1) * t * d],
                    &st.self_k[li][ri * h * cap * dh..(ri + 1) * h * cap * dh],
                    &st.self_v[li][ri * h * cap * dh..(ri + 1) * h * cap * dh],
                    &shape,
                    Some(past),
                    None,
                    scale,
                );
            }
            let o = layer.self_attn.o.forward(&att, n);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            layer.self_attn_layer_norm.forward_inplace(&mut x);

            // Cross-attention over the encoder output of each row's batch item.
            let q = layer.cross_attn.q.forward(&x, n);
            for ri in 0..r {
                let bi = st.row_batch[ri];
                let o = bi * h * s * dh;
                let shape = AttnShape {
                    t,
                    h,
                    kv_h: h,
                    dh,
                    cap: s,
                    len: s,
                };
                attention_forward(
                    &mut att[ri * t * d..(ri + 1) * t * d],
                    &q[ri * t * d..(ri + 1) * t * d],
                    &st.cross_k[li][o..o + h * s * dh],
                    &st.cross_v[li][o..o + h * s * dh],
                    &shape,
                    None,
                    Some(&st.enc_mask[bi * s..(bi + 1) * s]),
                    scale,
                );
            }
            let o = layer.cross_attn.o.forward(&att, n);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            layer.cross_attn_layer_norm.forward_inplace(&mut x);

            let f = self.ffn_forward(&layer.ffn, &x, n);
            x.iter_mut().zip(&f).for_each(|(a, b)| *a += b);
            layer.final_layer_norm.forward_inplace(&mut x);
        }
        st.len += t;

        // lm_head (tied to the shared embeddings unless the config says otherwise).
        let hidden: Vec<f32> = if all_positions || t == 1 {
            x
        } else {
            (0..r)
                .flat_map(|ri| x[(ri * t + t - 1) * d..(ri * t + t) * d].to_vec())
                .collect()
        };
        let m = hidden.len() / d;
        let v = self.config.vocab_size;
        let mut logits = vec![0f32; m * v];
        let head = self.lm_head.as_ref().unwrap_or(&self.shared);
        linear_forward(
            &mut logits,
            &hidden,
            head,
            Some(&self.final_logits_bias),
            m,
            d,
            v,
        );
        Ok(logits)
    }

    /// Teacher-forced forward: logits [B, T, V] for decoder_input_ids [B, T].
    pub fn forward(
        &self,
        ids: &[u32],
        mask: &[bool],
        b: usize,
        s: usize,
        dec_ids: &[u32],
        t: usize,
    ) -> Result<Vec<f32>> {
        let enc = self.encode(ids, mask, b, s)?;
        let mut st = self.start_decoder(&enc, (0..b).collect(), t)?;
        self.decode(&mut st, dec_ids, t, true)
    }
}

/// A right-padded encoder batch.
pub struct EncoderBatch {
    pub b: usize,
    pub s: usize,
    /// [B, S]
    pub ids: Vec<u32>,
    /// [B, S]
    pub mask: Vec<bool>,
}

impl EncoderBatch {
    /// Right-pad `rows` with `pad` (the layout transformers' tokenizers produce).
    pub fn from_rows(rows: &[Vec<u32>], pad: u32) -> Self {
        let b = rows.len();
        let s = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let mut ids = vec![pad; b * s];
        let mut mask = vec![false; b * s];
        for (i, r) in rows.iter().enumerate() {
            ids[i * s..i * s + r.len()].copy_from_slice(r);
            mask[i * s..i * s + r.len()]
                .iter_mut()
                .for_each(|m| *m = true);
        }
        EncoderBatch { b, s, ids, mask }
    }
}

/// The decoder of a BART model bound to its caches, for the search loops.
pub struct BartStepper<'a> {
    model: &'a Bart,
    state: DecoderState,
}

impl StepDecoder for BartStepper<'_> {
    fn vocab_size(&self) -> usize {
        self.model.vocab_size()
    }
    fn prefill(&mut self, prompts: &[Vec<u32>]) -> Result<Vec<f32>> {
        let t = prompts.first().map(|p| p.len()).unwrap_or(0);
        if prompts.iter().any(|p| p.len() != t) {
            return Err(Error::Generation(
                "decoder prompts must have equal lengths".into(),
            ));
        }
        self.model
            .decode(&mut self.state, &prompts.concat(), t, false)
    }
    fn step(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.model.decode(&mut self.state, tokens, 1, false)
    }
    fn reorder(&mut self, idx: &[usize]) -> Result<()> {
        self.state.reorder(idx);
        Ok(())
    }
}

impl Bart {
    /// transformers' `generate` for an encoder batch: returns, per batch item, the
    /// `num_return_sequences` hypotheses (decoder ids starting with the decoder start token).
    pub fn generate(
        &self,
        batch: &EncoderBatch,
        gen: &GenerationConfig,
        user_set_max_length: bool,
    ) -> Result<Vec<Vec<Hypothesis>>> {
        self.generate_streaming(batch, gen, user_set_max_length, &mut |_, _| {})
    }

    /// [`Bart::generate`] reporting each greedy token `(input index, id)` as it is chosen.
    pub fn generate_streaming(
        &self,
        batch: &EncoderBatch,
        gen: &GenerationConfig,
        user_set_max_length: bool,
        on_token: &mut dyn FnMut(usize, u32),
    ) -> Result<Vec<Vec<Hypothesis>>> {
        if batch.b == 0 {
            return Ok(Vec::new());
        }
        if batch.s == 0 {
            return Err(Error::Generation("an input has no tokens".into()));
        }
        if batch.s > self.max_positions() {
            return Err(Error::Generation(format!(
                "input of {} tokens exceeds max_position_embeddings {}",
                batch.s,
                self.max_positions()
            )));
        }
        let cfg = gen.resolve(1, Some(self.max_positions()), user_set_max_length)?;
        let start = cfg
            .decoder_start_token_id
            .or(gen.bos_token_id)
            .ok_or_else(|| {
                Error::Generation(
                    "no decoder_start_token_id (or bos_token_id) in the generation config".into(),
                )
            })?;
        let enc = self.encode(&batch.ids, &batch.mask, batch.b, batch.s)?;
        let nb = cfg.num_beams;
        let row_batch: Vec<usize> = (0..batch.b * nb).map(|r| r / nb).collect();
        let state = self.start_decoder(&enc, row_batch, cfg.max_length)?;
        let mut stepper = BartStepper { model: self, state };
        let prompts = vec![vec![start]; batch.b];
        crate::generation::run_streaming(&mut stepper, &cfg, prompts, on_token)
    }
}
