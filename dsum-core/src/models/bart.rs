//! BART (`BartForConditionalGeneration`), as transformers computes it in eval mode.
//!
//! Glossary: B batch, S source (encoder) length, R decoder rows (B × beams), T new decoder
//! tokens, L cached decoder positions, D d_model, H heads, dh = D/H, F ffn dim, V vocab.
//! Post-LN blocks; learned positions with offset 2; `layernorm_embedding`; optional
//! √D embedding scale; lm_head tied to `model.shared.weight` plus `final_logits_bias`.
//! Tensor names are exactly the Hugging Face checkpoint names.
//!
//! Encoder and decoder are written once, over `backend::Backend` as `models/llama.rs` is: the
//! CPU backend runs the `ops` functions, the CUDA backend (feature `cuda`) the dsum-kernels ones.

use serde::Deserialize;

use crate::backend::{Backend, Cpu, Cuda, Device, HostLinear};
use crate::error::{Error, Result};
use crate::generation::{GenerationConfig, Hypothesis, StepDecoder};
use crate::io::checkpoint::Checkpoint;
use crate::ops::activation::Activation;
use crate::ops::attention::AttnShape;
use crate::ops::qmatmul::LinearWeight;
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

/// A LayerNorm's weight and bias `[D]`, resident on backend `B`.
struct LayerNorm<B: Backend> {
    w: B::Tensor,
    b: B::Tensor,
}

/// Projections `[D, D]` with biases.
struct Attention<B: Backend> {
    q: B::Linear,
    k: B::Linear,
    v: B::Linear,
    o: B::Linear,
}

struct Ffn<B: Backend> {
    fc1: B::Linear, // [F, D]
    fc2: B::Linear, // [D, F]
}

struct EncoderLayer<B: Backend> {
    self_attn: Attention<B>,
    self_attn_layer_norm: LayerNorm<B>,
    ffn: Ffn<B>,
    final_layer_norm: LayerNorm<B>,
}

struct DecoderLayer<B: Backend> {
    self_attn: Attention<B>,
    self_attn_layer_norm: LayerNorm<B>,
    cross_attn: Attention<B>,
    cross_attn_layer_norm: LayerNorm<B>,
    ffn: Ffn<B>,
    final_layer_norm: LayerNorm<B>,
}

/// All weights, resident on backend `B`.
struct Weights<B: Backend> {
    shared: B::Linear,  // [V, D] token embeddings of encoder and decoder, read by rows
    lm_head: B::Linear, // [V, D] (`shared` unless untied) + final_logits_bias [V]
    enc_pos: B::Linear, // [P+2, D]
    enc_ln_emb: LayerNorm<B>,
    enc_layers: Vec<EncoderLayer<B>>,
    dec_pos: B::Linear, // [P+2, D]
    dec_ln_emb: LayerNorm<B>,
    dec_layers: Vec<DecoderLayer<B>>,
}

/// The backend a model computes on, with the weights it holds.
enum Engine {
    Cpu(Box<Weights<Cpu>>),
    Cuda(Box<(Cuda, Weights<Cuda>)>),
}

/// Weights of a BartForConditionalGeneration (on the CPU, borrowed from the checkpoint).
pub struct Bart {
    pub config: BartConfig,
    act: Activation,
    embed_scale: f32,
    /// lm_head is its own tensor (not tied to the shared embeddings).
    untied: bool,
    engine: Engine,
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

/// The decoder caches of every layer on one backend.
struct Caches<B: Backend> {
    /// per layer [R, H, cap, dh]
    self_kv: Vec<B::KvCache>,
    /// per layer [B, H, S, dh], computed once from the encoder output
    cross_kv: Vec<B::KvCache>,
    /// encoder key mask [B, S]
    enc: B::Inputs,
}

enum DeviceCaches {
    Cpu(Box<Caches<Cpu>>),
    Cuda(Box<Caches<Cuda>>),
}

/// Decoder key/value caches for R rows. Self-attention caches grow by T each call;
/// cross-attention keys/values are computed once per encoder batch item and shared by its beams.
pub struct DecoderState {
    rows: usize,
    cap: usize,
    len: usize,
    /// row -> encoder batch item
    row_batch: Vec<usize>,
    s: usize,
    caches: DeviceCaches,
}

impl DecoderState {
    /// No decoder position filled yet.
    fn empty(caches: DeviceCaches, row_batch: Vec<usize>, s: usize, cap: usize) -> Self {
        DecoderState {
            rows: row_batch.len(),
            cap,
            len: 0,
            row_batch,
            s,
            caches,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
}

/// Reads tensors by their Hugging Face names and makes them resident on a backend.
struct Loader<'a, B> {
    b: &'a B,
    ck: &'a Checkpoint,
}

impl<B: Backend> Loader<'_, B> {
    fn matrix(&self, name: &str, out: usize, inp: usize) -> Result<HostLinear> {
        let w = self.ck.get(name, &[out, inp])?;
        Ok(HostLinear::Dense(LinearWeight::F32(w)))
    }

    /// `{prefix}.weight` [out, inp] and `{prefix}.bias` [out].
    fn linear(&self, prefix: &str, out: usize, inp: usize) -> Result<B::Linear> {
        let w = self.matrix(&format!("{prefix}.weight"), out, inp)?;
        let b = self.ck.get(&format!("{prefix}.bias"), &[out])?;
        self.b.upload_linear(w, Some(b))
    }

    /// A table `name` [rows, d] read by rows (embeddings).
    fn table(&self, name: &str, rows: usize, d: usize) -> Result<B::Linear> {
        self.b.upload_linear(self.matrix(name, rows, d)?, None)
    }

    fn layer_norm(&self, prefix: &str, d: usize) -> Result<LayerNorm<B>> {
        Ok(LayerNorm {
            w: self
                .b
                .upload(&self.ck.get(&format!("{prefix}.weight"), &[d])?)?,
            b: self
                .b
                .upload(&self.ck.get(&format!("{prefix}.bias"), &[d])?)?,
        })
    }

    fn attention(&self, prefix: &str, d: usize) -> Result<Attention<B>> {
        Ok(Attention {
            q: self.linear(&format!("{prefix}.q_proj"), d, d)?,
            k: self.linear(&format!("{prefix}.k_proj"), d, d)?,
            v: self.linear(&format!("{prefix}.v_proj"), d, d)?,
            o: self.linear(&format!("{prefix}.out_proj"), d, d)?,
        })
    }

    fn ffn(&self, prefix: &str, d: usize, f: usize) -> Result<Ffn<B>> {
        Ok(Ffn {
            fc1: self.linear(&format!("{prefix}.fc1"), f, d)?,
            fc2: self.linear(&format!("{prefix}.fc2"), d, f)?,
        })
    }

    fn weights(&self, c: &BartConfig) -> Result<Weights<B>> {
        let ck = self.ck;
        let (d, v) = (c.d_model, c.vocab_size);
        let shared_name = [
            "model.shared.weight",
            "model.encoder.embed_tokens.weight",
            "model.decoder.embed_tokens.weight",
        ]
        .into_iter()
        .find(|n| ck.contains(n))
        .unwrap_or("model.shared.weight");
        let head_name = match c.tie_word_embeddings {
            true => shared_name,
            false => "lm_head.weight",
        };
        let final_logits_bias = if ck.contains("final_logits_bias") {
            ck.get("final_logits_bias", &[1, v])?.to_vec()
        } else {
            vec![0.0; v]
        };
        let final_logits_bias = Weight::from_vec(vec![v], final_logits_bias);
        let p = c.max_position_embeddings + POS_OFFSET;
        let mut enc_layers = Vec::new();
        for i in 0..c.encoder_layers {
            let pre = format!("model.encoder.layers.{i}");
            enc_layers.push(EncoderLayer {
                self_attn: self.attention(&format!("{pre}.self_attn"), d)?,
                self_attn_layer_norm: self.layer_norm(&format!("{pre}.self_attn_layer_norm"), d)?,
                ffn: self.ffn(&pre, d, c.encoder_ffn_dim)?,
                final_layer_norm: self.layer_norm(&format!("{pre}.final_layer_norm"), d)?,
            });
        }
        let mut dec_layers = Vec::new();
        for i in 0..c.decoder_layers {
            let pre = format!("model.decoder.layers.{i}");
            dec_layers.push(DecoderLayer {
                self_attn: self.attention(&format!("{pre}.self_attn"), d)?,
                self_attn_layer_norm: self.layer_norm(&format!("{pre}.self_attn_layer_norm"), d)?,
                cross_attn: self.attention(&format!("{pre}.encoder_attn"), d)?,
                cross_attn_layer_norm: self
                    .layer_norm(&format!("{pre}.encoder_attn_layer_norm"), d)?,
                ffn: self.ffn(&pre, d, c.decoder_ffn_dim)?,
                final_layer_norm: self.layer_norm(&format!("{pre}.final_layer_norm"), d)?,
            });
        }
        Ok(Weights {
            shared: self.table(shared_name, v, d)?,
            // On the CPU both borrow the checkpoint's tensor; a GPU holds the table twice.
            lm_head: self
                .b
                .upload_linear(self.matrix(head_name, v, d)?, Some(final_logits_bias))?,
            enc_pos: self.table("model.encoder.embed_positions.weight", p, d)?,
            enc_ln_emb: self.layer_norm("model.encoder.layernorm_embedding", d)?,
            enc_layers,
            dec_pos: self.table("model.decoder.embed_positions.weight", p, d)?,
            dec_ln_emb: self.layer_norm("model.decoder.layernorm_embedding", d)?,
            dec_layers,
        })
    }
}

/// The new decoder tokens of one `decode` call.
struct Step<'a> {
    /// [R, T]
    ids: &'a [u32],
    rows: usize,
    t: usize,
    past: usize,
    all_positions: bool,
}

impl Bart {
    /// Load on the CPU (weights stay borrowed from the checkpoint).
    pub fn load(config: BartConfig, ck: &Checkpoint) -> Result<Self> {
        let w = Loader { b: &Cpu, ck }.weights(&config)?;
        Self::assemble(config, Engine::Cpu(Box::new(w)))
    }

    /// Load on `device` (a CUDA device with its default settings: TF32 off).
    pub fn load_on(config: BartConfig, ck: &Checkpoint, device: Device) -> Result<Self> {
        match device {
            Device::Cpu => Self::load(config, ck),
            Device::Cuda(n) => Self::load_cuda(config, ck, Cuda::open(n)?),
        }
    }

    /// Load onto an opened CUDA device: every weight is uploaded once, here.
    pub fn load_cuda(config: BartConfig, ck: &Checkpoint, cuda: Cuda) -> Result<Self> {
        let w = Loader { b: &cuda, ck }.weights(&config)?;
        Self::assemble(config, Engine::Cuda(Box::new((cuda, w))))
    }

    fn assemble(config: BartConfig, engine: Engine) -> Result<Self> {
        let d = config.d_model;
        Ok(Bart {
            act: Activation::from_name(&config.activation_function)?,
            embed_scale: if config.scale_embedding {
                (d as f32).sqrt()
            } else {
                1.0
            },
            untied: !config.tie_word_embeddings,
            engine,
            config,
        })
    }

    /// Where this model computes.
    pub fn device(&self) -> Device {
        match &self.engine {
            Engine::Cpu(_) => Device::Cpu,
            Engine::Cuda(e) => e.0.device(),
        }
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
        let head = if self.untied { v * d } else { 0 };
        v * d + head + 2 * (p * d + ln) + enc + dec
    }

    /// Longest input either stack can embed.
    pub fn max_positions(&self) -> usize {
        self.config.max_position_embeddings
    }

    /// Checks token ids and positions on the host; returns the rows of the position table
    /// (`positions + 2`) to read.
    fn check_embed(&self, ids: &[u32], positions: impl Iterator<Item = usize>) -> Result<Vec<u32>> {
        if let Some(&id) = ids
            .iter()
            .find(|&&id| id as usize >= self.config.vocab_size)
        {
            return Err(Error::Generation(format!(
                "token id {id} is outside the vocabulary ({})",
                self.config.vocab_size
            )));
        }
        let rows = self.config.max_position_embeddings + POS_OFFSET;
        positions
            .take(ids.len())
            .map(|p| match p + POS_OFFSET < rows {
                true => Ok((p + POS_OFFSET) as u32),
                false => Err(Error::Generation(format!(
                    "position {p} exceeds max_position_embeddings {}",
                    self.config.max_position_embeddings
                ))),
            })
            .collect()
    }

    /// x[N, D] = layernorm_embedding(embed(ids) · scale + pos[positions + 2])
    fn embed_on<B: Backend>(
        &self,
        b: &B,
        table: &B::Linear,
        pos_table: &B::Linear,
        ln: &LayerNorm<B>,
        ids: &[u32],
        pos_ids: &[u32],
    ) -> Result<B::Tensor> {
        let d = self.config.d_model;
        let mut x = b.embedding(table, ids, d)?;
        if self.embed_scale != 1.0 {
            b.scale(&mut x, self.embed_scale)?;
        }
        b.add(&mut x, &b.embedding(pos_table, pos_ids, d)?)?;
        b.layernorm(&mut x, &ln.w, &ln.b, d, LN_EPS)?;
        Ok(x)
    }

    /// x = final_layer_norm(x + fc2(act(fc1(x)))) for x [M, D].
    fn ffn_on<B: Backend>(
        &self,
        b: &B,
        ffn: &Ffn<B>,
        ln: &LayerNorm<B>,
        x: &mut B::Tensor,
        m: usize,
    ) -> Result<()> {
        let mut h = b.linear(x, &ffn.fc1, m)?; // [M, F]
        b.act(&mut h, self.act)?;
        let f = b.linear(&h, &ffn.fc2, m)?; // [M, D]
        b.add(x, &f)?;
        b.layernorm(x, &ln.w, &ln.b, self.config.d_model, LN_EPS)
    }

    fn check_batch(&self, ids: &[u32], mask: &[bool], b: usize, s: usize) -> Result<()> {
        if ids.len() != b * s || mask.len() != b * s {
            return Err(Error::Generation(
                "encoder ids / mask do not match [batch, length]".into(),
            ));
        }
        Ok(())
    }

    /// Encode a right-padded batch: ids and mask are [B, S].
    pub fn encode(&self, ids: &[u32], mask: &[bool], b: usize, s: usize) -> Result<EncoderOutput> {
        self.check_batch(ids, mask, b, s)?;
        let hidden = match &self.engine {
            Engine::Cpu(w) => self.encode_on(&Cpu, w, ids, mask, b, s)?,
            Engine::Cuda(e) => {
                let h = self.encode_on(&e.0, &e.1, ids, mask, b, s)?;
                e.0.to_host(h)?
            }
        };
        Ok(EncoderOutput {
            b,
            s,
            hidden,
            mask: mask.to_vec(),
        })
    }

    /// The encoder, the same code on every backend: hidden [B, S, D].
    fn encode_on<B: Backend>(
        &self,
        b: &B,
        w: &Weights<B>,
        ids: &[u32],
        mask: &[bool],
        bn: usize,
        s: usize,
    ) -> Result<B::Tensor> {
        let (d, h) = (self.config.d_model, self.config.encoder_attention_heads);
        let dh = d / h;
        let n = bn * s;
        let pos: Vec<usize> = (0..n).map(|i| i % s).collect();
        let pos_ids = self.check_embed(ids, pos.iter().copied())?;
        let mut x = self.embed_on(b, &w.shared, &w.enc_pos, &w.enc_ln_emb, ids, &pos_ids)?;
        let inputs = b.inputs(&pos, mask)?;
        let items: Vec<usize> = (0..bn).collect();
        let shape = AttnShape {
            t: s,
            h,
            kv_h: h,
            dh,
            cap: s,
            len: s,
        };
        let scale = (dh as f32).powf(-0.5);
        // Keys and values of the current layer, [B, H, S, dh] each.
        let mut kv = b.kv_cache(bn, h, s, dh)?;
        for layer in &w.enc_layers {
            // x = self_attn_layer_norm(x + o(attention(q(x), k(x), v(x)))), padding keys hidden
            let q = b.linear(&x, &layer.self_attn.q, n)?; // [N, D]
            let k = b.linear(&x, &layer.self_attn.k, n)?;
            let v = b.linear(&x, &layer.self_attn.v, n)?;
            b.kv_write(&mut kv, &k, &v, s, 0)?;
            let att = b.cross_attention(&q, &kv, &inputs, &items, &shape, scale)?;
            let o = b.linear(&att, &layer.self_attn.o, n)?;
            b.add(&mut x, &o)?;
            let ln = &layer.self_attn_layer_norm;
            b.layernorm(&mut x, &ln.w, &ln.b, d, LN_EPS)?;
            self.ffn_on(b, &layer.ffn, &layer.final_layer_norm, &mut x, n)?;
        }
        Ok(x)
    }

    /// Decoder caches for `row_batch.len()` rows (row r decodes for batch item row_batch[r]),
    /// able to hold `cap` decoder positions. Cross-attention K/V are computed here, once.
    pub fn start_decoder(
        &self,
        enc: &EncoderOutput,
        row_batch: Vec<usize>,
        cap: usize,
    ) -> Result<DecoderState> {
        let (b, s) = (enc.b, enc.s);
        if enc.hidden.len() != b * s * self.config.d_model || enc.mask.len() != b * s {
            return Err(Error::Generation(
                "encoder output does not match [batch, length, d_model]".into(),
            ));
        }
        let caches = match &self.engine {
            Engine::Cpu(w) => {
                let c = self.start_on(&Cpu, w, &enc.hidden, &enc.mask, b, s, &row_batch, cap)?;
                DeviceCaches::Cpu(Box::new(c))
            }
            Engine::Cuda(e) => {
                let hidden = e.0.upload(&enc.hidden)?;
                let c = self.start_on(&e.0, &e.1, &hidden, &enc.mask, b, s, &row_batch, cap)?;
                DeviceCaches::Cuda(Box::new(c))
            }
        };
        Ok(DecoderState::empty(caches, row_batch, s, cap))
    }

    /// Encoder, then empty decoder caches: what generation starts from, with the encoder
    /// output kept on the device.
    fn start(
        &self,
        batch: &EncoderBatch,
        row_batch: Vec<usize>,
        cap: usize,
    ) -> Result<DecoderState> {
        let (ids, mask, b, s) = (&batch.ids, &batch.mask, batch.b, batch.s);
        self.check_batch(ids, mask, b, s)?;
        let caches = match &self.engine {
            Engine::Cpu(w) => {
                let hidden = self.encode_on(&Cpu, w, ids, mask, b, s)?;
                let c = self.start_on(&Cpu, w, &hidden, mask, b, s, &row_batch, cap)?;
                DeviceCaches::Cpu(Box::new(c))
            }
            Engine::Cuda(e) => {
                let hidden = self.encode_on(&e.0, &e.1, ids, mask, b, s)?;
                let c = self.start_on(&e.0, &e.1, &hidden, mask, b, s, &row_batch, cap)?;
                DeviceCaches::Cuda(Box::new(c))
            }
        };
        Ok(DecoderState::empty(caches, row_batch, s, cap))
    }

    /// Cross-attention keys/values of every decoder layer from `hidden` [B, S, D], and empty
    /// self-attention caches for the rows.
    #[allow(clippy::too_many_arguments)]
    fn start_on<B: Backend>(
        &self,
        b: &B,
        w: &Weights<B>,
        hidden: &B::Tensor,
        mask: &[bool],
        bn: usize,
        s: usize,
        row_batch: &[usize],
        cap: usize,
    ) -> Result<Caches<B>> {
        let (d, h) = (self.config.d_model, self.config.decoder_attention_heads);
        let dh = d / h;
        if row_batch.iter().any(|&r| r >= bn) {
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
        let mut cross_kv = Vec::with_capacity(w.dec_layers.len());
        let mut self_kv = Vec::with_capacity(w.dec_layers.len());
        for layer in &w.dec_layers {
            let k = b.linear(hidden, &layer.cross_attn.k, bn * s)?; // [B, S, D]
            let v = b.linear(hidden, &layer.cross_attn.v, bn * s)?;
            let mut kv = b.kv_cache(bn, h, s, dh)?;
            b.kv_write(&mut kv, &k, &v, s, 0)?;
            cross_kv.push(kv);
            self_kv.push(b.kv_cache(row_batch.len(), h, cap, dh)?);
        }
        let pos: Vec<usize> = (0..bn * s).map(|i| i % s.max(1)).collect();
        Ok(Caches {
            self_kv,
            cross_kv,
            enc: b.inputs(&pos, mask)?,
        })
    }

    /// New row r of `st` continues its old row `idx[r]` (beam search).
    pub fn reorder(&self, st: &mut DecoderState, idx: &[usize]) -> Result<()> {
        if idx.iter().any(|&i| i >= st.rows) {
            return Err(Error::Generation(
                "reorder: a row index past the decoder rows".into(),
            ));
        }
        match (&self.engine, &mut st.caches) {
            (Engine::Cpu(_), DeviceCaches::Cpu(c)) => {
                c.self_kv.iter_mut().try_for_each(|kv| Cpu.reorder(kv, idx))
            }
            (Engine::Cuda(e), DeviceCaches::Cuda(c)) => {
                c.self_kv.iter_mut().try_for_each(|kv| e.0.reorder(kv, idx))
            }
            _ => Err(other_device()),
        }?;
        st.row_batch = idx.iter().map(|&i| st.row_batch[i]).collect();
        st.rows = idx.len();
        Ok(())
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
        let step = Step {
            ids,
            rows: r,
            t,
            past: st.len,
            all_positions,
        };
        let (cap, s) = (st.cap, st.s);
        let logits = match (&self.engine, &mut st.caches) {
            (Engine::Cpu(w), DeviceCaches::Cpu(c)) => {
                self.decode_on(&Cpu, w, c, &st.row_batch, cap, s, &step)
            }
            (Engine::Cuda(e), DeviceCaches::Cuda(c)) => {
                self.decode_on(&e.0, &e.1, c, &st.row_batch, cap, s, &step)
            }
            _ => Err(other_device()),
        }?;
        st.len += t;
        Ok(logits)
    }

    /// The decoder itself, the same code on every backend.
    #[allow(clippy::too_many_arguments)]
    fn decode_on<B: Backend>(
        &self,
        b: &B,
        w: &Weights<B>,
        c: &mut Caches<B>,
        row_batch: &[usize],
        cap: usize,
        s: usize,
        st: &Step,
    ) -> Result<Vec<f32>> {
        let (d, h) = (self.config.d_model, self.config.decoder_attention_heads);
        let dh = d / h;
        let (r, t, past) = (st.rows, st.t, st.past);
        let n = r * t;
        let pos: Vec<usize> = (0..n).map(|i| past + i % t).collect();
        let pos_ids = self.check_embed(st.ids, pos.iter().copied())?;
        let mut x = self.embed_on(b, &w.shared, &w.dec_pos, &w.dec_ln_emb, st.ids, &pos_ids)?;
        // Causal self-attention: every cached key is real (no padding in the decoder).
        let inputs = b.inputs(&pos, &vec![true; r * cap])?;
        let self_shape = AttnShape {
            t,
            h,
            kv_h: h,
            dh,
            cap,
            len: past + t,
        };
        let cross_shape = AttnShape {
            t,
            h,
            kv_h: h,
            dh,
            cap: s,
            len: s,
        };
        let scale = (dh as f32).powf(-0.5);
        let caches = c.self_kv.iter_mut().zip(&c.cross_kv);
        for (layer, (self_kv, cross_kv)) in w.dec_layers.iter().zip(caches) {
            // x = self_attn_layer_norm(x + o(causal attention over the cache))
            let q = b.linear(&x, &layer.self_attn.q, n)?; // [N, D]
            let k = b.linear(&x, &layer.self_attn.k, n)?;
            let v = b.linear(&x, &layer.self_attn.v, n)?;
            b.kv_write(self_kv, &k, &v, t, past)?;
            let att = b.attention(&q, self_kv, &inputs, &self_shape, past, scale)?;
            let o = b.linear(&att, &layer.self_attn.o, n)?;
            b.add(&mut x, &o)?;
            let ln = &layer.self_attn_layer_norm;
            b.layernorm(&mut x, &ln.w, &ln.b, d, LN_EPS)?;

            // x = cross_attn_layer_norm(x + o(attention over the row's encoder output))
            let q = b.linear(&x, &layer.cross_attn.q, n)?;
            let att = b.cross_attention(&q, cross_kv, &c.enc, row_batch, &cross_shape, scale)?;
            let o = b.linear(&att, &layer.cross_attn.o, n)?;
            b.add(&mut x, &o)?;
            let ln = &layer.cross_attn_layer_norm;
            b.layernorm(&mut x, &ln.w, &ln.b, d, LN_EPS)?;

            self.ffn_on(b, &layer.ffn, &layer.final_layer_norm, &mut x, n)?;
        }
        let (hidden, m) = if st.all_positions {
            (x, n)
        } else {
            (b.last_positions(x, r, t, d)?, r)
        };
        let logits = b.linear(&hidden, &w.lm_head, m)?; // [M, V]
        b.to_host(logits)
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
        let batch = EncoderBatch {
            b,
            s,
            ids: ids.to_vec(),
            mask: mask.to_vec(),
        };
        let mut st = self.start(&batch, (0..b).collect(), t)?;
        self.decode(&mut st, dec_ids, t, true)
    }
}

fn other_device() -> Error {
    Error::Generation("this state was started by a model on another device".into())
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
        self.model.reorder(&mut self.state, idx)
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
        let nb = cfg.num_beams;
        let row_batch: Vec<usize> = (0..batch.b * nb).map(|r| r / nb).collect();
        let state = self.start(batch, row_batch, cfg.max_length)?;
        let mut stepper = BartStepper { model: self, state };
        let prompts = vec![vec![start]; batch.b];
        crate::generation::run_streaming(&mut stepper, &cfg, prompts, on_token)
    }
}
