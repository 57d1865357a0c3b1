//! Where a model computes. One [`Backend`] trait whose operations are the coarse steps of the
//! inference forward passes (`models/llama.rs`, `models/bart.rs`), so the same model code runs
//! on the CPU ([`Cpu`], the `ops` functions) and on a GPU ([`Cuda`], the dsum-kernels launchers).
//!
//! As in candle, a backend that is not compiled in keeps its API: without the `cuda` feature
//! [`Cuda::open`] answers [`Error::NotCompiledWithCuda`] and no value of it can exist.

mod cpu;
mod cpu_train;
#[cfg(feature = "dsum-kernels")]
mod cuda;
#[cfg(not(feature = "dsum-kernels"))]
#[path = "cuda_stub.rs"]
mod cuda;
#[cfg(feature = "dsum-kernels")]
mod cuda_train;

pub mod train;

pub use cpu::{Cpu, CpuKv, CpuLinear};
pub use cpu_train::CpuIds;
pub use cuda::Cuda;
#[cfg(feature = "dsum-kernels")]
pub use cuda_train::{CudaIds, CudaLinCache, CudaMask, CudaSlot, CudaTrainLinear};

use core::fmt;
use core::str::FromStr;

use crate::error::{Error, Result};
use crate::ops::activation::Activation;
use crate::ops::attention::AttnShape;
use crate::ops::qmatmul::LinearWeight;
use crate::quant::nf4::Nf4Tensor;
use crate::tensor::Weight;

/// `--device`: `cpu`, `cuda` (GPU 0) or `cuda:N`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(usize),
}

impl FromStr for Device {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::InvalidDevice(s.to_string());
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => {
                let n = s.strip_prefix("cuda:").ok_or_else(bad)?;
                // Digits only: `usize::from_str` would also take a leading `+`.
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                n.parse().map(Device::Cuda).map_err(|_| bad())
            }
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// A linear layer's weight as read from the checkpoint, before a backend makes it resident.
pub enum HostLinear {
    /// f32, or ggml-quantized from a GGUF file (`ops::qmatmul`).
    Dense(LinearWeight),
    /// bitsandbytes NF4 (`quant::nf4`).
    Nf4(Nf4Tensor),
}

impl HostLinear {
    pub fn is_quantized(&self) -> bool {
        !matches!(self, HostLinear::Dense(LinearWeight::F32(_)))
    }

    /// `[out, in]`.
    pub fn shape(&self) -> [usize; 2] {
        let two = |s: &[usize]| {
            let n = s.first().copied().unwrap_or(0);
            [n, s.iter().product::<usize>().checked_div(n).unwrap_or(0)]
        };
        match self {
            HostLinear::Dense(LinearWeight::F32(w)) => two(&w.shape),
            HostLinear::Dense(LinearWeight::Quant(q)) => two(q.shape()),
            HostLinear::Nf4(t) => two(t.shape()),
        }
    }
}

/// The steps of a Llama-family or BART forward pass. Activations are row-major `[rows, cols]`
/// tensors that stay on the backend between steps; only the logits come back to the host.
/// Weights are made resident once, at load (`upload*`).
pub trait Backend {
    /// f32 activations, row-major; also small resident vectors (norm weights, rope
    /// frequencies).
    type Tensor;
    /// A resident linear weight `[out, in]` with its optional bias; also an embedding table
    /// `[V, C]` (read by rows) and the tied output projection.
    type Linear;
    /// Keys and values of one layer for R rows, `[R, KV, cap, dh]` each.
    type KvCache;
    /// What every layer of one forward call reads: token positions `[N]` and the key mask
    /// `[R, cap]`.
    type Inputs;

    fn device(&self) -> Device;

    // ---- residency ----------------------------------------------------------------------------
    fn upload(&self, host: &[f32]) -> Result<Self::Tensor>;
    fn upload_linear(&self, w: HostLinear, bias: Option<Weight>) -> Result<Self::Linear>;
    /// Zeroed caches for `rows` rows of `cap` positions.
    fn kv_cache(
        &self,
        rows: usize,
        kv_heads: usize,
        cap: usize,
        dh: usize,
    ) -> Result<Self::KvCache>;
    /// `pos[N]` of the new tokens and the key mask `[R, cap]` (false: left padding).
    fn inputs(&self, pos: &[usize], mask: &[bool]) -> Result<Self::Inputs>;

    // ---- the forward steps ----------------------------------------------------------------------
    /// out[N, C] = table[ids] (callers check `ids < V`).
    fn embedding(&self, table: &Self::Linear, ids: &[u32], c: usize) -> Result<Self::Tensor>;
    /// RMSNorm of every row of `x` [R, C].
    fn rmsnorm(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        c: usize,
        eps: f32,
    ) -> Result<Self::Tensor>;
    /// y[M, out] = x[M, in] · Wᵀ + bias.
    fn linear(&self, x: &Self::Tensor, w: &Self::Linear, m: usize) -> Result<Self::Tensor>;
    /// On every head vector of `x` [N, heads, dh]: RMSNorm by `norm` [dh] when given
    /// (Qwen3's q/k norms), then the rotary embedding at its token's position.
    #[allow(clippy::too_many_arguments)]
    fn head_norm_rope(
        &self,
        x: &mut Self::Tensor,
        norm: Option<&Self::Tensor>,
        inv_freq: &Self::Tensor,
        inp: &Self::Inputs,
        heads: usize,
        dh: usize,
        eps: f32,
    ) -> Result<()>;
    /// Store `k`, `v` [R, T, KV, dh] at positions `past..past + T` of the cache.
    fn kv_write(
        &self,
        cache: &mut Self::KvCache,
        k: &Self::Tensor,
        v: &Self::Tensor,
        t: usize,
        past: usize,
    ) -> Result<()>;
    /// out[R, T, H, dh]: causal attention of `q` [R, T, H, dh] over the cache's first
    /// `s.len` positions, masked keys never attended.
    fn attention(
        &self,
        q: &Self::Tensor,
        cache: &Self::KvCache,
        inp: &Self::Inputs,
        s: &AttnShape,
        past: usize,
        scale: f32,
    ) -> Result<Self::Tensor>;
    /// out[R, T, H, dh]: attention of `q` [R, T, H, dh] with no causal limit over `kv`, whose
    /// row i holds the keys and values of sequence i (BART's encoder self-attention and its
    /// cross-attention over the encoder output); query row r reads row `items[r]` of `kv` and
    /// of the key mask of `inp`, so the beams of one input share its encoder keys.
    #[allow(clippy::too_many_arguments)]
    fn cross_attention(
        &self,
        q: &Self::Tensor,
        kv: &Self::KvCache,
        inp: &Self::Inputs,
        items: &[usize],
        s: &AttnShape,
        scale: f32,
    ) -> Result<Self::Tensor>;
    /// x += y (the residual stream).
    fn add(&self, x: &mut Self::Tensor, y: &Self::Tensor) -> Result<()>;
    /// x *= s (BART's √D embedding scale).
    fn scale(&self, x: &mut Self::Tensor, s: f32) -> Result<()>;
    /// LayerNorm with bias of every row of `x` [R, C], in place.
    fn layernorm(
        &self,
        x: &mut Self::Tensor,
        w: &Self::Tensor,
        b: &Self::Tensor,
        c: usize,
        eps: f32,
    ) -> Result<()>;
    /// x = act(x) (the ungated MLP of BART).
    fn act(&self, x: &mut Self::Tensor, act: Activation) -> Result<()>;
    /// gate = act(gate) · up (the gated MLP input; SwiGLU for `silu`).
    fn glu(&self, gate: &mut Self::Tensor, up: &Self::Tensor, act: Activation) -> Result<()>;
    /// The last of every row's T positions: [R, T, C] -> [R, C].
    fn last_positions(
        &self,
        x: Self::Tensor,
        rows: usize,
        t: usize,
        c: usize,
    ) -> Result<Self::Tensor>;
    /// Download (the logits).
    fn to_host(&self, x: Self::Tensor) -> Result<Vec<f32>>;
    /// New row r continues old row `idx[r]` (beam search).
    fn reorder(&self, cache: &mut Self::KvCache, idx: &[usize]) -> Result<()>;
}
