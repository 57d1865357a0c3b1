//! Llama-family decoders: Llama (1/2/3, incl. `llama3` rope scaling), Qwen2 (q/k/v biases)
//! and Qwen3 (per-head q/k RMSNorm) — one module, the variations are config switches.
//!
//! Glossary: R rows (batch × beams), T new tokens, L cached positions, H query heads,
//! KV key/value heads (grouped-query attention), dh head_dim, C hidden size, F
//! intermediate size, V vocab. Pre-norm blocks: x += attn(rmsnorm(x)); x += mlp(rmsnorm(x)),
//! mlp = down(silu(gate(x)) * up(x)). Left-padded batches: positions count real tokens only,
//! as transformers' `generate` derives them from the attention mask.
//!
//! The forward pass is written once, over `backend::Backend`: the CPU backend runs the `ops`
//! functions, the CUDA backend (feature `cuda`) their dsum-kernels counterparts.

use serde::Deserialize;

use crate::backend::{Backend, Cpu, Cuda, Device, HostLinear};
use crate::error::{Error, Result};
use crate::generation::{GenerationConfig, Hypothesis, StepDecoder};
use crate::io::checkpoint::Checkpoint;
use crate::ops::activation::Activation;
use crate::ops::attention::AttnShape;
use crate::ops::qmatmul::LinearWeight;
use crate::ops::rope::{inv_freq, RopeScaling};
use crate::quant::bnb_state::{from_bnb, QUANT_STATE_SUFFIX};
use crate::quant::nf4::Nf4Tensor;
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

/// One decoder layer's weights, resident on backend `B`.
struct Layer<B: Backend> {
    input_layernorm: B::Tensor,          // [C]
    q: B::Linear,                        // [H*dh, C] (+ bias: Qwen2, attention_bias)
    k: B::Linear,                        // [KV*dh, C]
    v: B::Linear,                        // [KV*dh, C]
    o: B::Linear,                        // [C, H*dh]
    q_norm: Option<B::Tensor>,           // [dh] (Qwen3)
    k_norm: Option<B::Tensor>,           // [dh] (Qwen3)
    post_attention_layernorm: B::Tensor, // [C]
    gate: B::Linear,                     // [F, C]
    up: B::Linear,                       // [F, C]
    down: B::Linear,                     // [C, F]
}

/// All weights, resident on backend `B`.
struct Weights<B: Backend> {
    embed: B::Linear, // [V, C], also the output projection when tied
    layers: Vec<Layer<B>>,
    norm: B::Tensor,            // [C]
    lm_head: Option<B::Linear>, // [V, C] when not tied
    inv_freq: B::Tensor,        // [dh/2]
}

/// The backend a model computes on, with the weights it holds.
enum Engine {
    Cpu(Box<Weights<Cpu>>),
    Cuda(Box<(Cuda, Weights<Cuda>)>),
}

/// Weights of a LlamaForCausalLM / Qwen2ForCausalLM / Qwen3ForCausalLM.
pub struct Llama {
    pub config: LlamaConfig,
    pub family: Family,
    act: Activation,
    /// Counted at load, from the checkpoint's tensors (a GPU model keeps no host copy).
    params: usize,
    quantized: usize,
    engine: Engine,
}

/// The K/V caches of every layer, on the model's backend.
enum Caches {
    Cpu(Vec<<Cpu as Backend>::KvCache>),
    Cuda(Vec<<Cuda as Backend>::KvCache>),
}

/// KV caches and per-row position bookkeeping for R rows.
pub struct CausalState {
    rows: usize,
    cap: usize,
    len: usize,
    /// per layer [R, KV, cap, dh]
    caches: Caches,
    /// [R, cap] false for left padding
    mask: Vec<bool>,
    /// [R] position of the next token of each row
    next_pos: Vec<usize>,
}

/// Largest K/V cache `generate` allocates (f32 keys and values, all layers).
const MAX_CACHE_BYTES: u64 = 1 << 38;

/// Reads tensors by their Hugging Face names, makes them resident on a backend and counts
/// them (`num_parameters`, `quantized_matrices`).
struct Loader<'a, B> {
    b: &'a B,
    ck: &'a Checkpoint,
    params: usize,
    quantized: usize,
}

impl<'a, B: Backend> Loader<'a, B> {
    fn new(b: &'a B, ck: &'a Checkpoint) -> Self {
        Loader {
            b,
            ck,
            params: 0,
            quantized: 0,
        }
    }

    /// The bitsandbytes 4-bit weight `name` (`dsum-cli nf4 quantize`, or transformers'
    /// `load_in_4bit` save) if the checkpoint has one, checked against `shape`.
    fn nf4(&self, name: &str, shape: &[usize]) -> Result<Option<Nf4Tensor>> {
        if !self.ck.contains(&format!("{name}{QUANT_STATE_SUFFIX}")) {
            return Ok(None);
        }
        let t = from_bnb(self.ck, name)?;
        if t.shape() != shape {
            return Err(Error::Tensor {
                path: self.ck.path().to_string(),
                name: name.to_string(),
                message: format!("expected shape {shape:?}, found {:?}", t.shape()),
            });
        }
        Ok(Some(t))
    }

    /// A vector [len] (norm weight, bias) on the host; an NF4 one is dequantized.
    fn host_vector(&self, name: &str, len: usize) -> Result<Weight> {
        match self.nf4(name, &[len])? {
            Some(t) => Ok(Weight::from_vec(vec![len], t.dequantize())),
            None => self.ck.get(name, &[len]),
        }
    }

    fn vector(&mut self, name: &str, len: usize) -> Result<B::Tensor> {
        let w = self.host_vector(name, len)?;
        self.params += w.len();
        self.b.upload(&w)
    }

    /// `{name}.weight` [out, inp] and, with `bias`, `{name}.bias` [out].
    fn linear(&mut self, name: &str, out: usize, inp: usize, bias: bool) -> Result<B::Linear> {
        self.linear_as(name, out, inp, bias, false)
    }

    /// The embedding table `{name}.weight` [V, C]: read by rows, so an NF4 table is
    /// dequantized here (GGUF rows decode one at a time).
    fn table(&mut self, name: &str, v: usize, c: usize) -> Result<B::Linear> {
        self.linear_as(name, v, c, false, true)
    }

    fn linear_as(
        &mut self,
        name: &str,
        out: usize,
        inp: usize,
        bias: bool,
        by_rows: bool,
    ) -> Result<B::Linear> {
        let wname = format!("{name}.weight");
        let shape = [out, inp];
        let w = match self.nf4(&wname, &shape)? {
            Some(t) if by_rows => {
                let dense = Weight::from_vec(shape.to_vec(), t.dequantize());
                HostLinear::Dense(LinearWeight::F32(dense))
            }
            Some(t) => HostLinear::Nf4(t),
            None => HostLinear::Dense(self.ck.get_linear(&wname, &shape)?),
        };
        let b = if bias {
            Some(self.host_vector(&format!("{name}.bias"), out)?)
        } else {
            None
        };
        self.params += out * inp + b.as_ref().map_or(0, |b| b.len());
        self.quantized += w.is_quantized() as usize;
        self.b.upload_linear(w, b)
    }

    fn weights(&mut self, c: &LlamaConfig, family: Family) -> Result<Weights<B>> {
        let (hs, v, f) = (c.hidden_size, c.vocab_size, c.intermediate_size);
        let (h, kv, dh) = (c.num_attention_heads, c.kv_heads(), c.head_dim());
        let qkv_bias = family == Family::Qwen2 || c.attention_bias;
        let qwen3 = family == Family::Qwen3;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let a = format!("{p}.self_attn");
            let m = format!("{p}.mlp");
            layers.push(Layer {
                input_layernorm: self.vector(&format!("{p}.input_layernorm.weight"), hs)?,
                q: self.linear(&format!("{a}.q_proj"), h * dh, hs, qkv_bias)?,
                k: self.linear(&format!("{a}.k_proj"), kv * dh, hs, qkv_bias)?,
                v: self.linear(&format!("{a}.v_proj"), kv * dh, hs, qkv_bias)?,
                o: self.linear(&format!("{a}.o_proj"), hs, h * dh, c.attention_bias)?,
                q_norm: match qwen3 {
                    true => Some(self.vector(&format!("{a}.q_norm.weight"), dh)?),
                    false => None,
                },
                k_norm: match qwen3 {
                    true => Some(self.vector(&format!("{a}.k_norm.weight"), dh)?),
                    false => None,
                },
                post_attention_layernorm: self
                    .vector(&format!("{p}.post_attention_layernorm.weight"), hs)?,
                gate: self.linear(&format!("{m}.gate_proj"), f, hs, false)?,
                up: self.linear(&format!("{m}.up_proj"), f, hs, false)?,
                down: self.linear(&format!("{m}.down_proj"), hs, f, false)?,
            });
        }
        let lm_head = if c.tie_word_embeddings && !self.ck.contains("lm_head.weight") {
            None
        } else {
            Some(self.linear("lm_head", v, hs, false)?)
        };
        Ok(Weights {
            embed: self.table("model.embed_tokens", v, hs)?,
            norm: self.vector("model.norm.weight", hs)?,
            lm_head,
            inv_freq: self
                .b
                .upload(&inv_freq(dh, c.rope_theta, c.rope_scaling.as_ref())?)?,
            layers,
        })
    }
}

/// The new tokens of one forward call, as every backend sees them.
struct Step<'a> {
    /// [R, T]
    ids: &'a [u32],
    /// [R*T] rope position of each new token
    pos: &'a [usize],
    /// [R, cap]
    mask: &'a [bool],
    rows: usize,
    t: usize,
    cap: usize,
    past: usize,
    all_positions: bool,
}

impl Llama {
    /// Load on the CPU (weights stay borrowed from the checkpoint).
    pub fn load(config: LlamaConfig, ck: &Checkpoint) -> Result<Self> {
        let family = config.family().map_err(|m| Error::config(ck.path(), m))?;
        let mut l = Loader::new(&Cpu, ck);
        let w = l.weights(&config, family)?;
        let counts = (l.params, l.quantized);
        Self::assemble(config, family, counts, Engine::Cpu(Box::new(w)))
    }

    /// Load on `device` (a CUDA device with its default settings: TF32 off).
    pub fn load_on(config: LlamaConfig, ck: &Checkpoint, device: Device) -> Result<Self> {
        match device {
            Device::Cpu => Self::load(config, ck),
            Device::Cuda(n) => Self::load_cuda(config, ck, Cuda::open(n)?),
        }
    }

    /// Load onto an opened CUDA device: every weight is uploaded once, here.
    pub fn load_cuda(config: LlamaConfig, ck: &Checkpoint, cuda: Cuda) -> Result<Self> {
        let family = config.family().map_err(|m| Error::config(ck.path(), m))?;
        let mut l = Loader::new(&cuda, ck);
        let w = l.weights(&config, family)?;
        let counts = (l.params, l.quantized);
        Self::assemble(config, family, counts, Engine::Cuda(Box::new((cuda, w))))
    }

    fn assemble(
        config: LlamaConfig,
        family: Family,
        (params, quantized): (usize, usize),
        engine: Engine,
    ) -> Result<Self> {
        Ok(Llama {
            family,
            act: Activation::from_name(&config.hidden_act)?,
            params,
            quantized,
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

    /// How many weight matrices are kept quantized: GGUF Q4_0 / Q4_1 / Q8_0 (read so by
    /// `ops::qmatmul` on the CPU, dequantized at upload on CUDA) and bitsandbytes NF4 linear
    /// weights (fused NF4 matmuls on both).
    pub fn quantized_matrices(&self) -> usize {
        self.quantized
    }

    /// Parameters as `sum(p.numel() for p in model.parameters())` counts them (tied once).
    pub fn num_parameters(&self) -> usize {
        self.params
    }

    /// Empty caches for `masks.len()` rows of equal padded length; `masks[r][j]` is false for
    /// left padding. `cap` bounds the total length (prompt + new tokens).
    pub fn start(&self, masks: &[Vec<bool>], cap: usize) -> Result<CausalState> {
        let rows = masks.len();
        let mut mask = vec![true; rows * cap];
        for (r, m) in masks.iter().enumerate() {
            mask[r * cap..r * cap + m.len().min(cap)].copy_from_slice(&m[..m.len().min(cap)]);
        }
        let caches = match &self.engine {
            Engine::Cpu(_) => Caches::Cpu(self.caches(&Cpu, rows, cap)?),
            Engine::Cuda(e) => Caches::Cuda(self.caches(&e.0, rows, cap)?),
        };
        Ok(CausalState {
            rows,
            cap,
            len: 0,
            caches,
            mask,
            next_pos: vec![0; rows],
        })
    }

    fn caches<B: Backend>(&self, b: &B, rows: usize, cap: usize) -> Result<Vec<B::KvCache>> {
        let c = &self.config;
        (0..c.num_hidden_layers)
            .map(|_| b.kv_cache(rows, c.kv_heads(), cap, c.head_dim()))
            .collect()
    }

    /// New row r of `st` continues its old row `idx[r]` (beam search).
    pub fn reorder(&self, st: &mut CausalState, idx: &[usize]) -> Result<()> {
        match (&self.engine, &mut st.caches) {
            (Engine::Cpu(_), Caches::Cpu(kv)) => {
                kv.iter_mut().try_for_each(|c| Cpu.reorder(c, idx))
            }
            (Engine::Cuda(e), Caches::Cuda(kv)) => {
                kv.iter_mut().try_for_each(|c| e.0.reorder(c, idx))
            }
            _ => Err(other_device()),
        }?;
        let cap = st.cap;
        st.mask = idx
            .iter()
            .flat_map(|&i| st.mask[i * cap..(i + 1) * cap].to_vec())
            .collect();
        st.next_pos = idx.iter().map(|&i| st.next_pos[i]).collect();
        st.rows = idx.len();
        Ok(())
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
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= c.vocab_size) {
            return Err(Error::Generation(format!(
                "token id {id} is outside the vocabulary ({})",
                c.vocab_size
            )));
        }
        // Positions: real tokens count from 0; padding gets 1, as transformers' generate sets.
        let mut pos = vec![0usize; r * t];
        for ri in 0..r {
            for ti in 0..t {
                let real = st.mask[ri * cap + past + ti];
                pos[ri * t + ti] = if real { st.next_pos[ri] } else { 1 };
                if real {
                    st.next_pos[ri] += 1;
                }
            }
        }
        let step = Step {
            ids,
            pos: &pos,
            mask: &st.mask,
            rows: r,
            t,
            cap,
            past,
            all_positions,
        };
        let logits = match (&self.engine, &mut st.caches) {
            (Engine::Cpu(w), Caches::Cpu(kv)) => self.forward_on(&Cpu, w, kv, &step),
            (Engine::Cuda(e), Caches::Cuda(kv)) => self.forward_on(&e.0, &e.1, kv, &step),
            _ => Err(other_device()),
        }?;
        st.len += t;
        Ok(logits)
    }

    /// The forward pass itself, the same code on every backend.
    fn forward_on<B: Backend>(
        &self,
        b: &B,
        w: &Weights<B>,
        caches: &mut [B::KvCache],
        s: &Step,
    ) -> Result<Vec<f32>> {
        let c = &self.config;
        let (hs, h, kv, dh) = (
            c.hidden_size,
            c.num_attention_heads,
            c.kv_heads(),
            c.head_dim(),
        );
        let eps = c.rms_norm_eps;
        let n = s.rows * s.t;
        let inputs = b.inputs(s.pos, s.mask)?;
        let shape = AttnShape {
            t: s.t,
            h,
            kv_h: kv,
            dh,
            cap: s.cap,
            len: s.past + s.t,
        };
        let scale = (dh as f32).powf(-0.5);
        let mut x = b.embedding(&w.embed, s.ids, hs)?; // [N, C]
        for (l, cache) in w.layers.iter().zip(caches.iter_mut()) {
            // x += o(attention(rope(q(xn)), rope(k(xn)), v(xn))), xn = rmsnorm(x)
            let xn = b.rmsnorm(&x, &l.input_layernorm, hs, eps)?;
            let mut q = b.linear(&xn, &l.q, n)?; // [N, H*dh]
            let mut k = b.linear(&xn, &l.k, n)?; // [N, KV*dh]
            let v = b.linear(&xn, &l.v, n)?; // [N, KV*dh]
            b.head_norm_rope(&mut q, l.q_norm.as_ref(), &w.inv_freq, &inputs, h, dh, eps)?;
            b.head_norm_rope(&mut k, l.k_norm.as_ref(), &w.inv_freq, &inputs, kv, dh, eps)?;
            b.kv_write(cache, &k, &v, s.t, s.past)?;
            let att = b.attention(&q, cache, &inputs, &shape, s.past, scale)?; // [N, H*dh]
            let o = b.linear(&att, &l.o, n)?;
            b.add(&mut x, &o)?;
            // x += down(act(gate(xn)) * up(xn)), xn = rmsnorm(x)
            let xn = b.rmsnorm(&x, &l.post_attention_layernorm, hs, eps)?;
            let mut gate = b.linear(&xn, &l.gate, n)?; // [N, F]
            let up = b.linear(&xn, &l.up, n)?;
            b.glu(&mut gate, &up, self.act)?;
            let d = b.linear(&gate, &l.down, n)?;
            b.add(&mut x, &d)?;
        }
        let (hidden, m) = if s.all_positions {
            (x, n)
        } else {
            (b.last_positions(x, s.rows, s.t, hs)?, s.rows)
        };
        let hidden = b.rmsnorm(&hidden, &w.norm, hs, eps)?;
        let logits = b.linear(&hidden, w.lm_head.as_ref().unwrap_or(&w.embed), m)?; // [M, V]
        b.to_host(logits)
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
        let state = self.start(&row_masks, cap)?;
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
    fn reorder(&mut self, idx: &[usize]) -> Result<()> {
        self.model.reorder(&mut self.state, idx)
    }
}

fn other_device() -> Error {
    Error::Generation("this state was started by a model on another device".into())
}
