//! Llama-family decoders: Llama (1/2/3, incl. `llama3` rope scaling), Qwen2 (q/k/v biases)
//! and Qwen3 (per-head q/k RMSNorm) — one module, the variations are config switches.
//!
//! Glossary: R rows (batch × beams), T new tokens, L cached positions, H query heads,
//! KV key/value heads (grouped-query attention), dh head_dim, C hidden size, F
//! intermediate size, V vocab. Pre-norm blocks: x += attn(rmsnorm(x)); x += mlp(rmsnorm(x)),
//! mlp = down(silu(gate(x)) * up(x)). Left-padded batches: positions count real tokens only,
//! as transformers' `generate` derives them from the attention mask.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::generation::{GenerationConfig, Hypothesis, StepDecoder};
use crate::io::checkpoint::Checkpoint;
use crate::ops::activation::Activation;
use crate::ops::attention::{attention_forward, AttnShape};
use crate::ops::qmatmul::LinearWeight;
use crate::ops::rmsnorm::rmsnorm_inplace;
use crate::ops::rope::{inv_freq, rope_forward, RopeScaling};
use crate::tensor::Weight;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Llama,
    Qwen2,
    Qwen3,
}

/// The fields of `config.json` these families use.
#[derive(Clone, Debug, Deserialize)]
pub struct LlamaConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f32,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
}

fn default_eps() -> f32 {
    1e-6
}
fn default_theta() -> f64 {
    10000.0
}
fn default_act() -> String {
    "silu".into()
}
fn default_positions() -> usize {
    2048
}

impl LlamaConfig {
    pub fn from_json(text: &str, path: &str) -> Result<Self> {
        let c: LlamaConfig =
            serde_json::from_str(text).map_err(|e| Error::config(path, format!("{e}")))?;
        c.family().map_err(|m| Error::config(path, m))?;
        let kv = c.kv_heads();
        if c.num_attention_heads == 0 || kv == 0 || !c.num_attention_heads.is_multiple_of(kv) {
            return Err(Error::config(
                path,
                format!(
                    "num_attention_heads {} is not a multiple of num_key_value_heads {kv}",
                    c.num_attention_heads
                ),
            ));
        }
        if c.head_dim.is_none() && !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            return Err(Error::config(
                path,
                "hidden_size is not divisible by num_attention_heads",
            ));
        }
        if !c.head_dim().is_multiple_of(2) {
            return Err(Error::config(
                path,
                "head_dim must be even for rotary embeddings",
            ));
        }
        Activation::from_name(&c.hidden_act).map_err(|_| {
            Error::config(path, format!("unsupported hidden_act `{}`", c.hidden_act))
        })?;
        inv_freq(c.head_dim(), c.rope_theta, c.rope_scaling.as_ref())
            .map_err(|e| Error::config(path, e.to_string()))?;
        Ok(c)
    }

    pub fn family(&self) -> core::result::Result<Family, String> {
        match self.model_type.as_str() {
            "llama" | "mistral" => Ok(Family::Llama),
            "qwen2" => Ok(Family::Qwen2),
            "qwen3" => Ok(Family::Qwen3),
            other => Err(format!(
                "model_type `{other}` is not a Llama-family model (llama, qwen2, qwen3)"
            )),
        }
    }

    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }
}

struct Proj {
    w: LinearWeight, // [out, in], f32 or read quantized from a GGUF file
    b: Option<Weight>,
    out: usize,
}

impl Proj {
    fn load(ck: &Checkpoint, name: &str, out: usize, inp: usize, bias: bool) -> Result<Self> {
        let w = ck.get_linear(&format!("{name}.weight"), &[out, inp])?;
        let b = if bias {
            Some(ck.get(&format!("{name}.bias"), &[out])?)
        } else {
            None
        };
        Ok(Proj { w, b, out })
    }
    fn forward(&self, x: &[f32], m: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * self.out];
        self.w.forward(&mut y, x, self.b.as_deref(), m);
        y
    }
}

struct Layer {
    input_layernorm: Weight, // [C]
    q: Proj,
    k: Proj,
    v: Proj,
    o: Proj,
    q_norm: Option<Weight>, // [dh] (Qwen3)
    k_norm: Option<Weight>,
    post_attention_layernorm: Weight,
    gate: Proj,
    up: Proj,
    down: Proj,
}

/// Weights of a LlamaForCausalLM / Qwen2ForCausalLM / Qwen3ForCausalLM.
pub struct Llama {
    pub config: LlamaConfig,
    pub family: Family,
    act: Activation,
    embed: LinearWeight, // [V, C], also the output projection when tied
    layers: Vec<Layer>,
    norm: Weight,                  // [C]
    lm_head: Option<LinearWeight>, // [V, C] when not tied
    inv_freq: Vec<f32>,            // [dh/2]
}

/// KV caches and per-row position bookkeeping for R rows.
pub struct CausalState {
    rows: usize,
    cap: usize,
    len: usize,
    /// per layer [R, KV, cap, dh]
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    /// [R, cap] false for left padding
    mask: Vec<bool>,
    /// [R] position of the next token of each row
    next_pos: Vec<usize>,
}

impl CausalState {
    pub fn reorder(&mut self, idx: &[usize]) {
        let per = self
            .k
            .first()
            .map(|k| k.len() / self.rows.max(1))
            .unwrap_or(0);
        for cache in self.k.iter_mut().chain(self.v.iter_mut()) {
            let mut next = vec![0f32; idx.len() * per];
            for (r, &src) in idx.iter().enumerate() {
                next[r * per..(r + 1) * per].copy_from_slice(&cache[src * per..(src + 1) * per]);
            }
            *cache = next;
        }
        let cap = self.cap;
        self.mask = idx
            .iter()
            .flat_map(|&i| self.mask[i * cap..(i + 1) * cap].to_vec())
            .collect();
        self.next_pos = idx.iter().map(|&i| self.next_pos[i]).collect();
        self.rows = idx.len();
    }
}

/// Largest K/V cache `generate` allocates (f32 keys and values, all layers).
const MAX_CACHE_BYTES: u64 = 1 << 38;

impl Llama {
    pub fn load(config: LlamaConfig, ck: &Checkpoint) -> Result<Self> {
        let family = config.family().map_err(|m| Error::config(ck.path(), m))?;
        let c = &config;
        let (hs, v, f) = (c.hidden_size, c.vocab_size, c.intermediate_size);
        let (h, kv, dh) = (c.num_attention_heads, c.kv_heads(), c.head_dim());
        let qkv_bias = family == Family::Qwen2 || c.attention_bias;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let norm = |n: &str, d: usize| ck.get(&format!("{p}.{n}.weight"), &[d]);
            layers.push(Layer {
                input_layernorm: norm("input_layernorm", hs)?,
                q: Proj::load(ck, &format!("{p}.self_attn.q_proj"), h * dh, hs, qkv_bias)?,
                k: Proj::load(ck, &format!("{p}.self_attn.k_proj"), kv * dh, hs, qkv_bias)?,
                v: Proj::load(ck, &format!("{p}.self_attn.v_proj"), kv * dh, hs, qkv_bias)?,
                o: Proj::load(
                    ck,
                    &format!("{p}.self_attn.o_proj"),
                    hs,
                    h * dh,
                    c.attention_bias,
                )?,
                q_norm: if family == Family::Qwen3 {
                    Some(norm("self_attn.q_norm", dh)?)
                } else {
                    None
                },
                k_norm: if family == Family::Qwen3 {
                    Some(norm("self_attn.k_norm", dh)?)
                } else {
                    None
                },
                post_attention_layernorm: norm("post_attention_layernorm", hs)?,
                gate: Proj::load(ck, &format!("{p}.mlp.gate_proj"), f, hs, false)?,
                up: Proj::load(ck, &format!("{p}.mlp.up_proj"), f, hs, false)?,
                down: Proj::load(ck, &format!("{p}.mlp.down_proj"), hs, f, false)?,
            });
        }
        let lm_head = if c.tie_word_embeddings && !ck.contains("lm_head.weight") {
            None
        } else {
            Some(ck.get_linear("lm_head.weight", &[v, hs])?)
        };
        Ok(Llama {
            family,
            act: Activation::from_name(&c.hidden_act)?,
            embed: ck.get_linear("model.embed_tokens.weight", &[v, hs])?,
            norm: ck.get("model.norm.weight", &[hs])?,
            lm_head,
            inv_freq: inv_freq(dh, c.rope_theta, c.rope_scaling.as_ref())?,
            layers,
            config,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    /// How many weight matrices are read quantized (`ops::qmatmul`) rather than as f32.
    pub fn quantized_matrices(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down]
                    .iter()
                    .filter(|p| p.w.is_quantized())
                    .count()
            })
            .sum();
        layers
            + self.embed.is_quantized() as usize
            + self.lm_head.as_ref().is_some_and(|w| w.is_quantized()) as usize
    }

    /// Parameters as `sum(p.numel() for p in model.parameters())` counts them (tied once).
    pub fn num_parameters(&self) -> usize {
        let per_layer: usize = self
            .layers
            .iter()
            .map(|l| {
                let proj = |p: &Proj| p.w.numel() + p.b.as_ref().map_or(0, |b| b.len());
                l.input_layernorm.len()
                    + l.post_attention_layernorm.len()
                    + [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down]
                        .iter()
                        .map(|p| proj(p))
                        .sum::<usize>()
                    + l.q_norm.as_ref().map_or(0, |w| w.len())
                    + l.k_norm.as_ref().map_or(0, |w| w.len())
            })
            .sum();
        self.embed.numel()
            + self.lm_head.as_ref().map_or(0, |w| w.numel())
            + self.norm.len()
            + per_layer
    }

    /// Empty caches for `masks.len()` rows of equal padded length; `masks[r][j]` is false for
    /// left padding. `cap` bounds the total length (prompt + new tokens).
    pub fn start(&self, masks: &[Vec<bool>], cap: usize) -> CausalState {
        let c = &self.config;
        let rows = masks.len();
        let per = c.kv_heads() * cap * c.head_dim();
        let mut mask = vec![true; rows * cap];
        for (r, m) in masks.iter().enumerate() {
            mask[r * cap..r * cap + m.len().min(cap)].copy_from_slice(&m[..m.len().min(cap)]);
        }
        CausalState {
            rows,
            cap,
            len: 0,
            k: vec![vec![0f32; rows * per]; c.num_hidden_layers],
            v: vec![vec![0f32; rows * per]; c.num_hidden_layers],
            mask,
            next_pos: vec![0; rows],
        }
    }

    /// Run T new tokens per row (ids [R, T]); logits [R, T, V] if `all_positions`, else the
    /// last position's [R, V].
    pub fn forward(
        &self,
        st: &mut CausalState,
        ids: &[u32],
        t: usize,
        all_positions: bool,
    ) -> Result<Vec<f32>> {
        let c = &self.config;
        let (hs, h, kv, dh) = (
            c.hidden_size,
            c.num_attention_heads,
            c.kv_heads(),
            c.head_dim(),
        );
        let (r, cap, past) = (st.rows, st.cap, st.len);
        if ids.len() != r * t {
            return Err(Error::Generation(
                "ids do not match [rows, new tokens]".into(),
            ));
        }
        if past + t > cap {
            return Err(Error::Generation(format!(
                "the cache holds {cap} positions, {} requested",
                past + t
            )));
        }
        let n = r * t;
        // Positions: real tokens count from 0; padding gets 1, as transformers' generate sets.
        let mut pos = vec![0usize; n];
        for ri in 0..r {
            for ti in 0..t {
                let real = st.mask[ri * cap + past + ti];
                pos[ri * t + ti] = if real { st.next_pos[ri] } else { 1 };
                if real {
                    st.next_pos[ri] += 1;
                }
            }
        }
        let mut x = vec![0f32; n * hs];
        for (i, &id) in ids.iter().enumerate() {
            let id = id as usize;
            if id >= c.vocab_size {
                return Err(Error::Generation(format!(
                    "token id {id} is outside the vocabulary ({})",
                    c.vocab_size
                )));
            }
            self.embed.row_into(id, &mut x[i * hs..(i + 1) * hs]);
        }
        let scale = (dh as f32).powf(-0.5);
        let mut xn = vec![0f32; n * hs];
        for (li, l) in self.layers.iter().enumerate() {
            xn.copy_from_slice(&x);
            rmsnorm_inplace(&mut xn, &l.input_layernorm, hs, c.rms_norm_eps);
            let mut q = l.q.forward(&xn, n);
            let mut k = l.k.forward(&xn, n);
            let vv = l.v.forward(&xn, n);
            for i in 0..n {
                for hi in 0..h {
                    let qh = &mut q[(i * h + hi) * dh..(i * h + hi + 1) * dh];
                    if let Some(w) = &l.q_norm {
                        rmsnorm_inplace(qh, w, dh, c.rms_norm_eps);
                    }
                    rope_forward(qh, &self.inv_freq, pos[i]);
                }
                for hi in 0..kv {
                    let kh = &mut k[(i * kv + hi) * dh..(i * kv + hi + 1) * dh];
                    if let Some(w) = &l.k_norm {
                        rmsnorm_inplace(kh, w, dh, c.rms_norm_eps);
                    }
                    rope_forward(kh, &self.inv_freq, pos[i]);
                }
            }
            let mut att = vec![0f32; n * h * dh];
            let per = kv * cap * dh;
            for ri in 0..r {
                for ti in 0..t {
                    let i = ri * t + ti;
                    for g in 0..kv {
                        let dst = ri * per + (g * cap + past + ti) * dh;
                        st.k[li][dst..dst + dh]
                            .copy_from_slice(&k[(i * kv + g) * dh..(i * kv + g + 1) * dh]);
                        st.v[li][dst..dst + dh]
                            .copy_from_slice(&vv[(i * kv + g) * dh..(i * kv + g + 1) * dh]);
                    }
                }
                let shape = AttnShape {
                    t,
                    h,
                    kv_h: kv,
                    dh,
                    cap,
                    len: past + t,
                };
                attention_forward(
                    &mut att[ri * t * h * dh..(ri + 1) * t * h * dh],
                    &q[ri * t * h * dh..(ri + 1) * t * h * dh],
                    &st.k[li][ri * per..(ri + 1) * per],
                    &st.v[li][ri * per..(ri + 1) * per],
                    &shape,
                    Some(past),
                    Some(&st.mask[ri * cap..ri * cap + past + t]),
                    scale,
                );
            }
            let o = l.o.forward(&att, n);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            xn.copy_from_slice(&x);
            rmsnorm_inplace(&mut xn, &l.post_attention_layernorm, hs, c.rms_norm_eps);
            let mut gate = l.gate.forward(&xn, n);
            let up = l.up.forward(&xn, n);
            self.act.forward_inplace(&mut gate);
            gate.iter_mut().zip(&up).for_each(|(g, u)| *g *= u);
            let d = l.down.forward(&gate, n);
            x.iter_mut().zip(&d).for_each(|(a, b)| *a += b);
        }
        st.len += t;
        let mut hidden: Vec<f32> = if all_positions || t == 1 {
            x
        } else {
            (0..r)
                .flat_map(|ri| x[(ri * t + t - 1) * hs..(ri * t + t) * hs].to_vec())
                .collect()
        };
        rmsnorm_inplace(&mut hidden, &self.norm, hs, c.rms_norm_eps);
        let m = hidden.len() / hs;
        let mut logits = vec![0f32; m * c.vocab_size];
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        head.forward(&mut logits, &hidden, None, m);
        Ok(logits)
    }

    /// transformers' `generate` for unpadded prompts: left-pads with `pad`, returns per prompt
    /// its hypotheses with the prompt removed (new tokens only).
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        gen: &GenerationConfig,
        user_set_max_length: bool,
    ) -> Result<Vec<Vec<Hypothesis>>> {
        self.generate_streaming(prompts, gen, user_set_max_length, &mut |_, _| {})
    }

    /// [`Llama::generate`] reporting each greedy token `(prompt index, id)` as it is chosen.
    pub fn generate_streaming(
        &self,
        prompts: &[Vec<u32>],
        gen: &GenerationConfig,
        user_set_max_length: bool,
        on_token: &mut dyn FnMut(usize, u32),
    ) -> Result<Vec<Vec<Hypothesis>>> {
        if prompts.is_empty() {
            return Ok(Vec::new());
        }
        if prompts.iter().any(|p| p.is_empty()) {
            return Err(Error::Generation("a prompt has no tokens".into()));
        }
        let p = prompts.iter().map(|x| x.len()).max().unwrap_or(0);
        let cfg = gen.resolve(
            p,
            Some(self.config.max_position_embeddings),
            user_set_max_length,
        )?;
        let pad = cfg.pad_token_id;
        let padded: Vec<Vec<u32>> = prompts
            .iter()
            .map(|x| [vec![pad; p - x.len()], x.clone()].concat())
            .collect();
        let masks: Vec<Vec<bool>> = prompts
            .iter()
            .map(|x| [vec![false; p - x.len()], vec![true; x.len()]].concat())
            .collect();
        let nb = cfg.num_beams;
        let row_masks: Vec<Vec<bool>> = masks
            .iter()
            .flat_map(|m| std::iter::repeat_n(m.clone(), nb))
            .collect();
        let cap = cfg.max_length.max(p);
        // The K/V cache is allocated whole up front: refuse sizes that overflow or could
        // never fit (a huge --max-new-tokens or --num-beams) instead of aborting on allocation.
        let c = &self.config;
        let cache = [
            row_masks.len(),
            cap,
            c.kv_heads(),
            c.head_dim(),
            8,
            c.num_hidden_layers,
        ]
        .iter()
        .try_fold(1u64, |a, &x| a.checked_mul(x as u64))
        .filter(|&bytes| bytes <= MAX_CACHE_BYTES && bytes <= isize::MAX as u64);
        if cache.is_none() {
            return Err(Error::Generation(format!(
                "max_length {cap} with {} rows ({nb} beams) needs a key/value cache over {} GiB",
                row_masks.len(),
                MAX_CACHE_BYTES >> 30
            )));
        }
        let state = self.start(&row_masks, cap);
        let mut stepper = LlamaStepper { model: self, state };
        let out = crate::generation::run_streaming(&mut stepper, &cfg, padded, on_token)?;
        Ok(out
            .into_iter()
            .map(|hyps| {
                hyps.into_iter()
                    .map(|h| Hypothesis {
                        tokens: h.tokens[p.min(h.tokens.len())..].to_vec(),
                        score: h.score,
                    })
                    .collect()
            })
            .collect())
    }
}

/// A Llama-family model bound to its caches, for the search loops.
pub struct LlamaStepper<'a> {
    model: &'a Llama,
    state: CausalState,
}

impl StepDecoder for LlamaStepper<'_> {
    fn vocab_size(&self) -> usize {
        self.model.vocab_size()
    }
    fn prefill(&mut self, prompts: &[Vec<u32>]) -> Result<Vec<f32>> {
        let t = prompts.first().map(|p| p.len()).unwrap_or(0);
        self.model
            .forward(&mut self.state, &prompts.concat(), t, false)
    }
    fn step(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.model.forward(&mut self.state, tokens, 1, false)
    }
    fn reorder(&mut self, idx: &[usize]) {
        self.state.reorder(idx)
    }
}
