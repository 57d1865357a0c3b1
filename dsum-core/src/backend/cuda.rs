//! The CUDA backend: each step is a dsum-kernels launcher (the kernel that mirrors the `ops`
//! function the CPU backend calls), on f32 device buffers. Weights are uploaded once, at
//! load; only token ids, positions, the key mask (host → device) and the logits (device →
//! host) cross the bus during generation.
//!
//! f32 weights multiply through cuBLAS in plain f32 by default, for parity with the CPU;
//! [`Cuda::with_tf32`] turns on TF32 tensor cores (`torch.backends.cuda.matmul.allow_tf32`).

use std::sync::{Arc, Mutex};

use dsum_kernels::activation::{act_forward, glu_forward, Act};
use dsum_kernels::attention::{attention_forward, kv_write, AttnDims};
use dsum_kernels::cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};
use dsum_kernels::elementwise::{add_inplace, scale_inplace};
use dsum_kernels::embedding::embedding_forward;
use dsum_kernels::gemm::{linear_forward, Math};
use dsum_kernels::layernorm::layernorm_forward;
use dsum_kernels::nf4::{nf4_linear, Nf4Absmax, Nf4Parts, Nf4Scratch, Nf4Weight};
use dsum_kernels::rmsnorm::rmsnorm_forward;
use dsum_kernels::rope::rope_forward;
use dsum_kernels::{Gpu, KernelError};

use super::{Backend, Device, HostLinear};
use crate::error::{Error, Result};
use crate::ops::activation::Activation;
use crate::ops::attention::AttnShape;
use crate::ops::qmatmul::LinearWeight;
use crate::quant::nf4::{Absmax, Nf4Tensor};
use crate::tensor::Weight;

/// One CUDA device, opened once; clones share it.
#[derive(Clone)]
pub struct Cuda {
    pub(super) gpu: Arc<Gpu>,
    pub(super) math: Math,
    /// Dequantization buffers of the NF4 GEMM path, grown on demand.
    pub(super) nf4: Arc<Mutex<Nf4Scratch>>,
}

impl Cuda {
    /// Open device `ordinal` (`--device cuda:N`). Without a driver: `KernelError::NoDriver`.
    pub fn open(ordinal: usize) -> Result<Cuda> {
        let gpu = Gpu::open(ordinal)?;
        // The kernels are compiled on first use: fail here rather than on the first token.
        if !dsum_kernels::nvrtc_present() {
            return Err(KernelError::NoNvrtc.into());
        }
        Ok(Cuda {
            gpu: Arc::new(gpu),
            math: Math::F32,
            nf4: Arc::new(Mutex::new(Nf4Scratch::default())),
        })
    }

    /// Number of CUDA devices here (0 without a driver).
    pub fn device_count() -> usize {
        dsum_kernels::device_count()
    }

    /// TF32 tensor-core matmuls for f32 weights: several times faster on Ampere and later,
    /// about 1e-3 relative error per product, so outputs no longer match the CPU bit for bit.
    pub fn with_tf32(mut self, on: bool) -> Cuda {
        self.math = if on { Math::Tf32 } else { Math::F32 };
        self
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    pub(super) fn zeros(&self, n: usize) -> Result<CudaSlice<f32>> {
        Ok(self.gpu.zeros::<f32>(n)?)
    }

    /// Rows of `per` elements: new row r = row `idx[r]` of `src` (device to device copies).
    fn gather_rows<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        src: &CudaSlice<T>,
        per: usize,
        idx: &[usize],
    ) -> Result<CudaSlice<T>> {
        check(
            idx.iter().all(|&i| (i + 1) * per <= src.len()),
            "a row index past the buffer",
        )?;
        let mut next = self.gpu.zeros::<T>(idx.len() * per)?;
        let stream = self.gpu.stream();
        for (r, &i) in idx.iter().enumerate() {
            let from = src.slice(i * per..(i + 1) * per);
            let mut to = next.slice_mut(r * per..(r + 1) * per);
            stream
                .memcpy_dtod(&from, &mut to)
                .map_err(KernelError::from)?;
        }
        Ok(next)
    }
}

/// A weight on the device.
pub(super) enum DeviceWeight {
    F32(CudaSlice<f32>),
    Nf4(Box<Nf4Weight>),
}

/// A linear weight `[out, inp]` on the device, with its bias `[out]`.
pub struct CudaLinear {
    w: DeviceWeight,
    bias: Option<CudaSlice<f32>>,
    out: usize,
    inp: usize,
}

/// One layer's keys and values on the device, `[R, KV, cap, dh]` each.
pub struct CudaKv {
    k: CudaSlice<f32>,
    v: CudaSlice<f32>,
    rows: usize,
    kv_heads: usize,
    cap: usize,
    dh: usize,
}

/// Positions `[N]` and key mask `[R, cap]` (1 = real token) of one forward call.
pub struct CudaInputs {
    pos: CudaSlice<i32>,
    mask: CudaSlice<u8>,
}

pub(super) fn act(a: Activation) -> Act {
    match a {
        Activation::Gelu => Act::Gelu,
        Activation::GeluTanh => Act::GeluTanh,
        Activation::Relu => Act::Relu,
        Activation::Silu => Act::Silu,
    }
}

/// The NF4 tensor's buffers as dsum-kernels reads them (bitsandbytes' layout either side).
pub(super) fn nf4_parts(t: &Nf4Tensor, rows: usize, cols: usize) -> Nf4Parts<'_> {
    let absmax = match t.absmax() {
        Absmax::Plain(a) => Nf4Absmax::F32(a),
        Absmax::Double(d) => Nf4Absmax::Double {
            codes: &d.codes,
            nested_absmax: &d.nested_absmax,
            nested_code: &d.nested_code,
            nested_blocksize: d.nested_blocksize,
            offset: d.offset,
        },
    };
    Nf4Parts {
        packed: t.packed(),
        absmax,
        rows,
        cols,
        blocksize: t.blocksize(),
    }
}

impl Backend for Cuda {
    type Tensor = CudaSlice<f32>;
    type Linear = CudaLinear;
    type KvCache = CudaKv;
    type Inputs = CudaInputs;

    fn device(&self) -> Device {
        Device::Cuda(self.gpu.ordinal())
    }

    fn upload(&self, host: &[f32]) -> Result<CudaSlice<f32>> {
        Ok(self.gpu.upload(host)?)
    }

    fn upload_linear(&self, w: HostLinear, bias: Option<Weight>) -> Result<CudaLinear> {
        let [out, inp] = w.shape();
        let w = match w {
            HostLinear::Dense(LinearWeight::F32(w)) => DeviceWeight::F32(self.gpu.upload(&w)?),
            // GGUF Q4_0 / Q4_1 / Q8_0 are dequantized to f32 at upload for now (the values the
            // CPU decodes, 4-7x the device memory); fused quantized GEMVs would keep them packed.
            HostLinear::Dense(LinearWeight::Quant(q)) => {
                DeviceWeight::F32(self.gpu.upload(&q.dequantize())?)
            }
            HostLinear::Nf4(t) => {
                let w = Nf4Weight::upload(&self.gpu, nf4_parts(&t, out, inp))?;
                DeviceWeight::Nf4(Box::new(w))
            }
        };
        let bias = bias.map(|b| self.gpu.upload(&b)).transpose()?;
        Ok(CudaLinear { w, bias, out, inp })
    }

    fn kv_cache(&self, rows: usize, kv_heads: usize, cap: usize, dh: usize) -> Result<CudaKv> {
        let n = rows * kv_heads * cap * dh;
        Ok(CudaKv {
            k: self.zeros(n)?,
            v: self.zeros(n)?,
            rows,
            kv_heads,
            cap,
            dh,
        })
    }

    fn inputs(&self, pos: &[usize], mask: &[bool]) -> Result<CudaInputs> {
        let pos = pos
            .iter()
            .map(|&p| i32::try_from(p))
            .collect::<core::result::Result<Vec<i32>, _>>()
            .map_err(|_| Error::Generation("a position does not fit the GPU's i32".into()))?;
        let mask: Vec<u8> = mask.iter().map(|&m| m as u8).collect();
        Ok(CudaInputs {
            pos: self.gpu.upload(&pos)?,
            mask: self.gpu.upload(&mask)?,
        })
    }

    fn embedding(&self, table: &CudaLinear, ids: &[u32], c: usize) -> Result<CudaSlice<f32>> {
        let DeviceWeight::F32(w) = &table.w else {
            return Err(Error::Quant(
                "an NF4 embedding table cannot be read by rows".into(),
            ));
        };
        let n = ids.len();
        let mut out = self.zeros(n * c)?;
        let ids = self.gpu.upload(ids)?;
        embedding_forward(&self.gpu, &mut out, w, &ids, n, c, table.out, 1.0)?;
        Ok(out)
    }

    fn rmsnorm(
        &self,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        c: usize,
        eps: f32,
    ) -> Result<CudaSlice<f32>> {
        let mut y = self.zeros(x.len())?;
        rmsnorm_forward(&self.gpu, &mut y, None, x, w, x.len() / c.max(1), c, eps)?;
        Ok(y)
    }

    fn linear(&self, x: &CudaSlice<f32>, l: &CudaLinear, m: usize) -> Result<CudaSlice<f32>> {
        let mut y = self.zeros(m * l.out)?;
        match &l.w {
            DeviceWeight::F32(w) => linear_forward(
                &self.gpu,
                &mut y,
                x,
                w,
                l.bias.as_ref(),
                m,
                l.inp,
                l.out,
                self.math,
            )?,
            DeviceWeight::Nf4(w) => {
                let mut scratch = self.nf4.lock().unwrap_or_else(|p| p.into_inner());
                nf4_linear(&self.gpu, &mut y, x, w, l.bias.as_ref(), m, &mut scratch)?
            }
        }
        Ok(y)
    }

    fn head_norm_rope(
        &self,
        x: &mut CudaSlice<f32>,
        norm: Option<&CudaSlice<f32>>,
        inv_freq: &CudaSlice<f32>,
        inp: &CudaInputs,
        heads: usize,
        dh: usize,
        eps: f32,
    ) -> Result<()> {
        let n_tok = x.len() / (heads * dh).max(1);
        if let Some(w) = norm {
            let mut y = self.zeros(x.len())?;
            rmsnorm_forward(&self.gpu, &mut y, None, x, w, n_tok * heads, dh, eps)?;
            *x = y;
        }
        rope_forward(&self.gpu, x, inv_freq, &inp.pos, n_tok, heads, dh)?;
        Ok(())
    }

    fn kv_write(
        &self,
        cache: &mut CudaKv,
        k: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        t: usize,
        past: usize,
    ) -> Result<()> {
        let (rows, kv, dh, cap) = (cache.rows, cache.kv_heads, cache.dh, cache.cap);
        kv_write(&self.gpu, &mut cache.k, k, rows, t, kv, dh, cap, past)?;
        kv_write(&self.gpu, &mut cache.v, v, rows, t, kv, dh, cap, past)?;
        Ok(())
    }

    fn attention(
        &self,
        q: &CudaSlice<f32>,
        cache: &CudaKv,
        inp: &CudaInputs,
        s: &AttnShape,
        past: usize,
        scale: f32,
    ) -> Result<CudaSlice<f32>> {
        let mut out = self.zeros(cache.rows * s.t * s.h * s.dh)?;
        let dims = attn_dims(cache.rows, s);
        attention_forward(
            &self.gpu,
            &mut out,
            q,
            &cache.k,
            &cache.v,
            Some(&inp.mask),
            dims,
            Some(past),
            scale,
        )?;
        Ok(out)
    }

    fn cross_attention(
        &self,
        q: &CudaSlice<f32>,
        kv: &CudaKv,
        inp: &CudaInputs,
        items: &[usize],
        s: &AttnShape,
        scale: f32,
    ) -> Result<CudaSlice<f32>> {
        check(
            items.iter().all(|&i| i < kv.rows),
            "cross-attention: a row index past the encoder keys",
        )?;
        let rows = items.len();
        let mut out = self.zeros(rows * s.t * s.h * s.dh)?;
        let dims = attn_dims(rows, s);
        // The kernel reads keys and mask of query row r at row r: used as they are when
        // every row is its own sequence (the encoder, greedy search), gathered per query row
        // when several beams share one input.
        if items.iter().copied().eq(0..kv.rows) {
            let (k, v, m) = (&kv.k, &kv.v, &inp.mask);
            attention_forward(&self.gpu, &mut out, q, k, v, Some(m), dims, None, scale)?;
        } else {
            let per = kv.kv_heads * kv.cap * kv.dh;
            let k = self.gather_rows(&kv.k, per, items)?;
            let v = self.gather_rows(&kv.v, per, items)?;
            let m = self.gather_rows(&inp.mask, kv.cap, items)?;
            attention_forward(&self.gpu, &mut out, q, &k, &v, Some(&m), dims, None, scale)?;
        }
        Ok(out)
    }

    fn add(&self, x: &mut CudaSlice<f32>, y: &CudaSlice<f32>) -> Result<()> {
        let n = x.len();
        Ok(add_inplace(&self.gpu, x, y, n)?)
    }

    fn scale(&self, x: &mut CudaSlice<f32>, s: f32) -> Result<()> {
        let n = x.len();
        Ok(scale_inplace(&self.gpu, x, s, n)?)
    }

    fn layernorm(
        &self,
        x: &mut CudaSlice<f32>,
        w: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        c: usize,
        eps: f32,
    ) -> Result<()> {
        let mut y = self.zeros(x.len())?;
        let rows = x.len() / c.max(1);
        layernorm_forward(&self.gpu, &mut y, None, None, x, w, b, rows, c, eps)?;
        *x = y;
        Ok(())
    }

    fn act(&self, x: &mut CudaSlice<f32>, a: Activation) -> Result<()> {
        let n = x.len();
        Ok(act_forward(&self.gpu, x, act(a), n)?)
    }

    fn glu(&self, gate: &mut CudaSlice<f32>, up: &CudaSlice<f32>, a: Activation) -> Result<()> {
        let n = gate.len();
        let mut out = self.zeros(n)?;
        glu_forward(&self.gpu, &mut out, gate, up, act(a), n)?;
        *gate = out;
        Ok(())
    }

    fn last_positions(
        &self,
        x: CudaSlice<f32>,
        rows: usize,
        t: usize,
        c: usize,
    ) -> Result<CudaSlice<f32>> {
        if t == 1 {
            return Ok(x);
        }
        check(
            x.len() == rows * t * c,
            "last_positions: x is not [R, T, C]",
        )?;
        let mut out = self.zeros(rows * c)?;
        let stream = self.gpu.stream();
        for ri in 0..rows {
            let src = x.slice((ri * t + t - 1) * c..(ri * t + t) * c);
            let mut dst = out.slice_mut(ri * c..(ri + 1) * c);
            stream
                .memcpy_dtod(&src, &mut dst)
                .map_err(KernelError::from)?;
        }
        Ok(out)
    }

    fn to_host(&self, x: CudaSlice<f32>) -> Result<Vec<f32>> {
        Ok(self.gpu.download(&x)?)
    }

    fn reorder(&self, cache: &mut CudaKv, idx: &[usize]) -> Result<()> {
        check(
            idx.iter().all(|&i| i < cache.rows),
            "reorder: a row index past the cache",
        )?;
        let per = cache.kv_heads * cache.cap * cache.dh;
        cache.k = self.gather_rows(&cache.k, per, idx)?;
        cache.v = self.gather_rows(&cache.v, per, idx)?;
        cache.rows = idx.len();
        Ok(())
    }
}

/// The kernel's dimensions of an attention call over `rows` rows of shape `s`.
fn attn_dims(rows: usize, s: &AttnShape) -> AttnDims {
    AttnDims {
        rows,
        t: s.t,
        h: s.h,
        kv_h: s.kv_h,
        dh: s.dh,
        cap: s.cap,
        len: s.len,
    }
}

/// A shape the model code guarantees; an error (not a panic in cudarc) if it ever does not.
fn check(ok: bool, what: &str) -> Result<()> {
    match ok {
        true => Ok(()),
        false => Err(Error::Generation(format!("CUDA backend: {what}"))),
    }
}
