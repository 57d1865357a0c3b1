//! [`TrainBackend`] on CUDA: each step is the dsum-kernels launcher that mirrors the CPU
//! `ops` function of `cpu_train.rs` (each launcher is property-tested against it in
//! dsum-kernels/tests/gpu.rs).
//!
//! Frozen weights are uploaded once (an NF4 base stays 4-bit: QLoRA). Trainable weights and
//! their gradients have a device copy next to the host `Param`: the values are uploaded
//! again after the loop changed them (`push_*`), the gradients are added into the host ones
//! and zeroed at the end of every micro-batch (`pull_*`). The host stays the master copy, so
//! the loop's AdamW, clipping and checkpoints are the CPU's, unchanged; for LoRA the copies
//! are the adapters only (r·(in+out) floats per layer).

use dsum_kernels::activation::{act_backward, act_forward, glu_backward, glu_forward};
use dsum_kernels::attention::{attention_backward, attention_train_forward, TrainDims};
use dsum_kernels::cross_entropy::{
    cross_entropy_backward, cross_entropy_forward, cross_entropy_sum, cross_entropy_total,
    STATS_LEN,
};
use dsum_kernels::cudarc::driver::CudaSlice;
use dsum_kernels::dropout::{dropout_backward_acc, dropout_forward};
use dsum_kernels::embedding::{embedding_backward, embedding_forward};
use dsum_kernels::gemm::{add_bias, linear_backward, linear_forward};
use dsum_kernels::layernorm::{layernorm_backward, layernorm_forward};
use dsum_kernels::lora::{lora_backward, lora_forward};
use dsum_kernels::nf4::{nf4_linear, nf4_linear_backward_input, Nf4Weight};
use dsum_kernels::reduce::sum_rows_acc;
use dsum_kernels::rmsnorm::{rmsnorm_backward, rmsnorm_forward};
use dsum_kernels::rope::{rope_backward, rope_forward};
use dsum_kernels::KernelError;

use super::cuda::{act, nf4_parts, DeviceWeight};
use super::train::TrainBackend;
use super::Cuda;
use crate::error::{Error, Result};
use crate::ops::activation::Activation;
use crate::ops::attention::TrainAttn;
use crate::train::linear::{Base, Slot, TrainLinear};

/// A norm or embedding weight: the host slot, its device values and, when it trains, the
/// device gradient.
pub struct CudaSlot {
    host: Slot,
    value: CudaSlice<f32>,
    grad: Option<CudaSlice<f32>>,
}

/// LoRA factors on the device: A `[r, in]`, B `[out, r]`, and their gradients.
struct CudaLora {
    a: CudaSlice<f32>,
    b: CudaSlice<f32>,
    da: CudaSlice<f32>,
    db: CudaSlice<f32>,
    r: usize,
    scaling: f32,
    dropout: f32,
}

/// A linear layer: the host layer, its base weight (f32 or NF4) and bias on the device,
/// their gradients when they train, and the LoRA adapter.
pub struct CudaTrainLinear {
    host: TrainLinear,
    w: DeviceWeight,
    dw: Option<CudaSlice<f32>>,
    bias: Option<CudaSlice<f32>>,
    dbias: Option<CudaSlice<f32>>,
    lora: Option<CudaLora>,
}

/// What a linear forward keeps: the dropped-out LoRA input (when dropout is on), x·Aᵀ, and
/// the dropout seed the backward regenerates the mask from.
#[derive(Default)]
pub struct CudaLinCache {
    x_drop: Option<CudaSlice<f32>>,
    tmp: Option<CudaSlice<f32>>,
    seed: u64,
}

/// Token ids on the device (also on the host, to name a bad one) and each one's column.
pub struct CudaIds {
    host: Vec<u32>,
    ids: CudaSlice<u32>,
    pos: CudaSlice<i32>,
}

/// A key mask on the device (1 = a real token).
pub struct CudaMask(CudaSlice<u8>);

impl Cuda {
    /// host += device; device := 0.
    fn drain(&self, dev: &mut CudaSlice<f32>, host: &mut [f32]) -> Result<()> {
        let g = self.gpu.download(dev)?;
        host.iter_mut().zip(&g).for_each(|(h, d)| *h += d);
        self.gpu
            .stream()
            .memset_zeros(dev)
            .map_err(KernelError::from)?;
        Ok(())
    }

    /// device := host (same length).
    fn refill(&self, dev: &mut CudaSlice<f32>, host: &[f32]) -> Result<()> {
        self.gpu
            .stream()
            .memcpy_htod(host, dev)
            .map_err(KernelError::from)?;
        Ok(())
    }

    fn train_dims(&self, rows: usize, a: &TrainAttn) -> TrainDims {
        TrainDims {
            rows,
            t: a.t,
            s: a.s,
            h: a.h,
            kv_h: a.kv_h,
            dh: a.dh,
            causal: a.causal,
            scale: a.scale,
        }
    }

    /// Σ loss and count from the per-row losses (deterministic, on the device).
    fn loss_total(
        &self,
        losses: &CudaSlice<f32>,
        t: &CudaSlice<i64>,
        v: usize,
    ) -> Result<(f64, usize)> {
        let mut stats = self.gpu.zeros::<f64>(STATS_LEN)?;
        cross_entropy_sum(&self.gpu, &mut stats, losses, t, t.len(), v)?;
        Ok(cross_entropy_total(&self.gpu, &stats, v)?)
    }
}

impl TrainBackend for Cuda {
    type T = CudaSlice<f32>;
    type Slot = CudaSlot;
    type Linear = CudaTrainLinear;
    type LinCache = CudaLinCache;
    type Probs = CudaSlice<f32>;
    /// (mean, 1/std) per row.
    type LnStats = (CudaSlice<f32>, CudaSlice<f32>);
    type Ids = CudaIds;
    type Mask = CudaMask;
    type Targets = CudaSlice<i64>;

    fn slot(&self, host: Slot) -> Result<CudaSlot> {
        let value = self.gpu.upload(host.data())?;
        let grad = match &host {
            Slot::Train(p) => Some(self.zeros(p.value.len())?),
            Slot::Frozen(_) => None,
        };
        Ok(CudaSlot { host, value, grad })
    }

    fn linear(&self, host: TrainLinear) -> Result<CudaTrainLinear> {
        let (out, inp) = (host.out, host.inp);
        let (w, dw) = match &host.base {
            Base::Dense(s) => {
                let dw = match s {
                    Slot::Train(_) => Some(self.zeros(out * inp)?),
                    Slot::Frozen(_) => None,
                };
                (DeviceWeight::F32(self.gpu.upload(s.data())?), dw)
            }
            Base::Quantized(q) => match q.as_nf4() {
                Some(t) => {
                    let w = Nf4Weight::upload(&self.gpu, nf4_parts(t, out, inp))?;
                    (DeviceWeight::Nf4(Box::new(w)), None)
                }
                None => (DeviceWeight::F32(self.gpu.upload(&q.dequantize())?), None),
            },
        };
        let bias = host
            .bias
            .as_ref()
            .map(|b| self.gpu.upload(b.data()))
            .transpose()?;
        let dbias = match host.bias.as_ref().and_then(|b| b.param()) {
            Some(_) => Some(self.zeros(out)?),
            None => None,
        };
        let lora = match &host.lora {
            Some(l) => {
                let r = l.a.shape[0];
                Some(CudaLora {
                    a: self.gpu.upload(&l.a.value)?,
                    b: self.gpu.upload(&l.b.value)?,
                    da: self.zeros(r * inp)?,
                    db: self.zeros(out * r)?,
                    r,
                    scaling: l.scaling,
                    dropout: l.dropout,
                })
            }
            None => None,
        };
        Ok(CudaTrainLinear {
            host,
            w,
            dw,
            bias,
            dbias,
            lora,
        })
    }

    fn host_slot(s: &CudaSlot) -> &Slot {
        &s.host
    }
    fn host_slot_mut(s: &mut CudaSlot) -> &mut Slot {
        &mut s.host
    }
    fn host_linear(l: &CudaTrainLinear) -> &TrainLinear {
        &l.host
    }
    fn host_linear_mut(l: &mut CudaTrainLinear) -> &mut TrainLinear {
        &mut l.host
    }

    fn push_slot(&self, s: &mut CudaSlot) -> Result<()> {
        if let Slot::Train(p) = &s.host {
            self.refill(&mut s.value, &p.value)?;
        }
        Ok(())
    }

    fn push_linear(&self, l: &mut CudaTrainLinear) -> Result<()> {
        if let (Base::Dense(Slot::Train(p)), DeviceWeight::F32(w)) = (&l.host.base, &mut l.w) {
            self.refill(w, &p.value)?;
        }
        if let (Some(p), Some(b)) = (l.host.bias.as_ref().and_then(|b| b.param()), &mut l.bias) {
            self.refill(b, &p.value)?;
        }
        if let (Some(h), Some(d)) = (&l.host.lora, &mut l.lora) {
            self.refill(&mut d.a, &h.a.value)?;
            self.refill(&mut d.b, &h.b.value)?;
        }
        Ok(())
    }

    fn pull_slot(&self, s: &mut CudaSlot) -> Result<()> {
        if let (Slot::Train(p), Some(g)) = (&mut s.host, &mut s.grad) {
            self.drain(g, &mut p.grad)?;
        }
        Ok(())
    }

    fn pull_linear(&self, l: &mut CudaTrainLinear) -> Result<()> {
        if let (Base::Dense(Slot::Train(p)), Some(g)) = (&mut l.host.base, &mut l.dw) {
            self.drain(g, &mut p.grad)?;
        }
        if let (Some(p), Some(g)) = (
            l.host.bias.as_mut().and_then(|b| b.param_mut()),
            &mut l.dbias,
        ) {
            self.drain(g, &mut p.grad)?;
        }
        if let (Some(h), Some(d)) = (&mut l.host.lora, &mut l.lora) {
            self.drain(&mut d.da, &mut h.a.grad)?;
            self.drain(&mut d.db, &mut h.b.grad)?;
        }
        Ok(())
    }

    fn upload(&self, host: &[f32]) -> Result<CudaSlice<f32>> {
        Ok(self.gpu.upload(host)?)
    }

    fn ids(&self, ids: &[u32], cols: usize) -> Result<CudaIds> {
        let pos = (0..ids.len())
            .map(|i| i32::try_from(i % cols.max(1)))
            .collect::<core::result::Result<Vec<i32>, _>>()
            .map_err(|_| Error::Generation("a position does not fit the GPU's i32".into()))?;
        Ok(CudaIds {
            host: ids.to_vec(),
            ids: self.gpu.upload(ids)?,
            pos: self.gpu.upload(&pos)?,
        })
    }

    fn positions(&self, n: usize, cols: usize, offset: usize) -> Result<CudaIds> {
        let ids = (0..n)
            .map(|i| u32::try_from(i % cols.max(1) + offset))
            .collect::<core::result::Result<Vec<u32>, _>>()
            .map_err(|_| Error::Generation("a position does not fit in u32".into()))?;
        self.ids(&ids, cols)
    }

    fn mask(&self, mask: &[bool]) -> Result<CudaMask> {
        let m: Vec<u8> = mask.iter().map(|&m| m as u8).collect();
        Ok(CudaMask(self.gpu.upload(&m)?))
    }

    fn targets(&self, targets: &[i64]) -> Result<CudaSlice<i64>> {
        Ok(self.gpu.upload(targets)?)
    }

    fn zeros(&self, n: usize) -> Result<CudaSlice<f32>> {
        // cuda.rs's inherent `zeros` (inherent methods win over this trait's in every call).
        Cuda::zeros(self, n)
    }

    fn copy(&self, x: &CudaSlice<f32>) -> Result<CudaSlice<f32>> {
        Ok(self.gpu.stream().clone_dtod(x).map_err(KernelError::from)?)
    }

    fn add(&self, x: &mut CudaSlice<f32>, y: &CudaSlice<f32>) -> Result<()> {
        let n = x.len();
        Ok(dsum_kernels::elementwise::add_inplace(&self.gpu, x, y, n)?)
    }

    fn add_rows(&self, x: &mut CudaSlice<f32>, bias: &[f32], c: usize) -> Result<()> {
        let b = self.gpu.upload(bias)?;
        let m = x.len() / c.max(1);
        Ok(add_bias(&self.gpu, x, &b, m, c)?)
    }

    fn dropout(&self, x: &mut CudaSlice<f32>, p: f32, seed: u64) -> Result<()> {
        // As `ops::dropout::dropout_inplace`: p <= 0 leaves x alone.
        if p <= 0.0 {
            return Ok(());
        }
        let n = x.len();
        let mut y = self.zeros(n)?;
        dropout_forward(&self.gpu, &mut y, x, p, seed, n)?;
        *x = y;
        Ok(())
    }

    fn embedding(
        &self,
        table: &CudaSlot,
        ids: &CudaIds,
        c: usize,
        scale: f32,
    ) -> Result<CudaSlice<f32>> {
        let vocab = table.value.len() / c.max(1);
        if let Some(&bad) = ids.host.iter().find(|&&i| i as usize >= vocab) {
            return Err(Error::Generation(format!(
                "token id {bad} is outside the embedding table ({vocab} rows)"
            )));
        }
        let n = ids.host.len();
        let mut out = self.zeros(n * c)?;
        embedding_forward(
            &self.gpu,
            &mut out,
            &table.value,
            &ids.ids,
            n,
            c,
            vocab,
            scale,
        )?;
        Ok(out)
    }

    fn embedding_backward(
        &self,
        table: &mut CudaSlot,
        dx: &CudaSlice<f32>,
        ids: &CudaIds,
        c: usize,
        scale: f32,
    ) -> Result<()> {
        let vocab = table.value.len() / c.max(1);
        if let Some(g) = &mut table.grad {
            let n = ids.host.len();
            embedding_backward(&self.gpu, g, dx, &ids.ids, n, c, vocab, scale)?;
        }
        Ok(())
    }

    fn layernorm(
        &self,
        x: &CudaSlice<f32>,
        w: &CudaSlot,
        b: &CudaSlot,
        c: usize,
        eps: f32,
    ) -> Result<(CudaSlice<f32>, (CudaSlice<f32>, CudaSlice<f32>))> {
        let rows = x.len() / c.max(1);
        let mut y = self.zeros(x.len())?;
        let (mut mean, mut rstd) = (self.zeros(rows)?, self.zeros(rows)?);
        layernorm_forward(
            &self.gpu,
            &mut y,
            Some(&mut mean),
            Some(&mut rstd),
            x,
            &w.value,
            &b.value,
            rows,
            c,
            eps,
        )?;
        Ok((y, (mean, rstd)))
    }

    fn layernorm_backward(
        &self,
        w: &mut CudaSlot,
        b: &mut CudaSlot,
        dy: &CudaSlice<f32>,
        x: &CudaSlice<f32>,
        (mean, rstd): &(CudaSlice<f32>, CudaSlice<f32>),
        c: usize,
    ) -> Result<CudaSlice<f32>> {
        let rows = x.len() / c.max(1);
        let mut dx = self.zeros(x.len())?;
        // The kernel updates weight and bias gradients together: a frozen one gets a scratch
        // gradient that is dropped.
        let trains = w.grad.is_some() || b.grad.is_some();
        let (mut spare_w, mut spare_b, mut scratch) = (None, None, None);
        if trains {
            scratch = Some(self.zeros(rows * c)?);
            if w.grad.is_none() {
                spare_w = Some(self.zeros(c)?);
            }
            if b.grad.is_none() {
                spare_b = Some(self.zeros(c)?);
            }
        }
        let dw = w.grad.as_mut().or(spare_w.as_mut());
        let db = b.grad.as_mut().or(spare_b.as_mut());
        let grads = match (dw, db, scratch.as_mut()) {
            (Some(dw), Some(db), Some(s)) => Some((dw, db, s)),
            _ => None,
        };
        layernorm_backward(
            &self.gpu, &mut dx, grads, dy, x, mean, rstd, &w.value, rows, c,
        )?;
        Ok(dx)
    }

    fn act(&self, x: &mut CudaSlice<f32>, a: Activation) -> Result<()> {
        let n = x.len();
        Ok(act_forward(&self.gpu, x, act(a), n)?)
    }

    fn act_backward(
        &self,
        d: &mut CudaSlice<f32>,
        x: &CudaSlice<f32>,
        a: Activation,
    ) -> Result<()> {
        let n = d.len();
        Ok(act_backward(&self.gpu, d, x, act(a), n)?)
    }

    fn rmsnorm(
        &self,
        x: &CudaSlice<f32>,
        w: &CudaSlot,
        c: usize,
        eps: f32,
    ) -> Result<(CudaSlice<f32>, CudaSlice<f32>)> {
        let rows = x.len() / c.max(1);
        let (mut y, mut rstd) = (self.zeros(x.len())?, self.zeros(rows)?);
        rmsnorm_forward(
            &self.gpu,
            &mut y,
            Some(&mut rstd),
            x,
            &w.value,
            rows,
            c,
            eps,
        )?;
        Ok((y, rstd))
    }

    fn rmsnorm_backward(
        &self,
        dx: &mut CudaSlice<f32>,
        w: &mut CudaSlot,
        dy: &CudaSlice<f32>,
        x: &CudaSlice<f32>,
        rstd: &CudaSlice<f32>,
        c: usize,
    ) -> Result<()> {
        let rows = x.len() / c.max(1);
        let mut scratch = match w.grad {
            Some(_) => Some(self.zeros(rows * c)?),
            None => None,
        };
        let dw = w.grad.as_mut().zip(scratch.as_mut());
        rmsnorm_backward(&self.gpu, dx, dw, dy, x, rstd, &w.value, rows, c)?;
        Ok(())
    }

    fn linear_forward(
        &self,
        l: &CudaTrainLinear,
        x: &CudaSlice<f32>,
        m: usize,
        seed: Option<u64>,
    ) -> Result<(CudaSlice<f32>, CudaLinCache)> {
        let (inp, out) = (l.host.inp, l.host.out);
        let mut y = self.zeros(m * out)?;
        match &l.w {
            DeviceWeight::F32(w) => linear_forward(
                &self.gpu,
                &mut y,
                x,
                w,
                l.bias.as_ref(),
                m,
                inp,
                out,
                self.math,
            )?,
            DeviceWeight::Nf4(w) => {
                let mut scratch = self.nf4.lock().unwrap_or_else(|p| p.into_inner());
                nf4_linear(&self.gpu, &mut y, x, w, l.bias.as_ref(), m, &mut scratch)?
            }
        }
        let Some(lo) = &l.lora else {
            return Ok((y, CudaLinCache::default()));
        };
        let x_drop = match seed {
            Some(s) if lo.dropout > 0.0 => {
                let mut xd = self.zeros(m * inp)?;
                dropout_forward(&self.gpu, &mut xd, x, lo.dropout, s, m * inp)?;
                Some(xd)
            }
            _ => None,
        };
        let mut tmp = self.zeros(m * lo.r)?;
        let xd = x_drop.as_ref().unwrap_or(x);
        lora_forward(
            &self.gpu, &mut y, xd, &lo.a, &lo.b, &mut tmp, lo.scaling, m, inp, out, lo.r,
        )?;
        let cache = CudaLinCache {
            x_drop,
            tmp: Some(tmp),
            seed: seed.unwrap_or(0),
        };
        Ok((y, cache))
    }

    fn linear_backward(
        &self,
        l: &mut CudaTrainLinear,
        mut dx: Option<&mut CudaSlice<f32>>,
        dy: &CudaSlice<f32>,
        x: &CudaSlice<f32>,
        cache: &CudaLinCache,
        m: usize,
    ) -> Result<()> {
        let (inp, out) = (l.host.inp, l.host.out);
        if let Some(db) = &mut l.dbias {
            sum_rows_acc(&self.gpu, db, dy, m, out)?;
        }
        match &l.w {
            DeviceWeight::F32(w) => linear_backward(
                &self.gpu,
                dx.as_deref_mut(),
                l.dw.as_mut(),
                None,
                dy,
                x,
                w,
                m,
                inp,
                out,
                self.math,
            )?,
            DeviceWeight::Nf4(w) => {
                if let Some(dx) = dx.as_deref_mut() {
                    let mut scratch = self.nf4.lock().unwrap_or_else(|p| p.into_inner());
                    nf4_linear_backward_input(&self.gpu, dx, dy, w, m, &mut scratch)?;
                }
            }
        }
        let (Some(lo), Some(tmp)) = (&mut l.lora, &cache.tmp) else {
            return Ok(());
        };
        let r = lo.r;
        let mut dh = self.zeros(m * r)?;
        let (a, b, s) = (&lo.a, &lo.b, lo.scaling);
        match &cache.x_drop {
            // Without dropout the LoRA input is x itself: its gradient goes straight to dx.
            None => lora_backward(
                &self.gpu, dx, &mut lo.da, &mut lo.db, dy, x, a, b, tmp, s, m, inp, out, r, &mut dh,
            )?,
            Some(xd) => {
                let mut dxd = match dx {
                    Some(_) => Some(self.zeros(m * inp)?),
                    None => None,
                };
                lora_backward(
                    &self.gpu,
                    dxd.as_mut(),
                    &mut lo.da,
                    &mut lo.db,
                    dy,
                    xd,
                    a,
                    b,
                    tmp,
                    s,
                    m,
                    inp,
                    out,
                    r,
                    &mut dh,
                )?;
                // The mask is regenerated from the seed, as on the CPU.
                if let (Some(dx), Some(dxd)) = (dx, &dxd) {
                    dropout_backward_acc(&self.gpu, dx, dxd, lo.dropout, cache.seed, m * inp)?;
                }
            }
        }
        Ok(())
    }

    fn tied_logits(
        &self,
        x: &CudaSlice<f32>,
        table: &CudaSlot,
        n: usize,
        c: usize,
        v: usize,
    ) -> Result<CudaSlice<f32>> {
        let mut logits = self.zeros(n * v)?;
        linear_forward(
            &self.gpu,
            &mut logits,
            x,
            &table.value,
            None,
            n,
            c,
            v,
            self.math,
        )?;
        Ok(logits)
    }

    fn tied_logits_backward(
        &self,
        dx: &mut CudaSlice<f32>,
        table: &mut CudaSlot,
        dlogits: &CudaSlice<f32>,
        x: &CudaSlice<f32>,
        n: usize,
        c: usize,
        v: usize,
    ) -> Result<()> {
        linear_backward(
            &self.gpu,
            Some(dx),
            table.grad.as_mut(),
            None,
            dlogits,
            x,
            &table.value,
            n,
            c,
            v,
            self.math,
        )?;
        Ok(())
    }

    fn rope(
        &self,
        x: &mut CudaSlice<f32>,
        inv_freq: &CudaSlice<f32>,
        ids: &CudaIds,
        heads: usize,
        dh: usize,
    ) -> Result<()> {
        let n_tok = ids.host.len();
        Ok(rope_forward(
            &self.gpu, x, inv_freq, &ids.pos, n_tok, heads, dh,
        )?)
    }

    fn rope_backward(
        &self,
        d: &mut CudaSlice<f32>,
        inv_freq: &CudaSlice<f32>,
        ids: &CudaIds,
        heads: usize,
        dh: usize,
    ) -> Result<()> {
        let n_tok = ids.host.len();
        Ok(rope_backward(
            &self.gpu, d, inv_freq, &ids.pos, n_tok, heads, dh,
        )?)
    }

    fn attention(
        &self,
        q: &CudaSlice<f32>,
        k: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        mask: Option<&CudaMask>,
        rows: usize,
        a: &TrainAttn,
    ) -> Result<(CudaSlice<f32>, CudaSlice<f32>)> {
        let d = self.train_dims(rows, a);
        let mut out = self.zeros(rows * a.t * a.h * a.dh)?;
        let mut probs = self.zeros(rows * a.h * a.t * a.s)?;
        let mask = mask.map(|m| &m.0);
        attention_train_forward(&self.gpu, &mut out, &mut probs, q, k, v, mask, &d)?;
        Ok((out, probs))
    }

    fn attention_backward(
        &self,
        dout: &CudaSlice<f32>,
        probs: &CudaSlice<f32>,
        q: &CudaSlice<f32>,
        k: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        rows: usize,
        a: &TrainAttn,
    ) -> Result<(CudaSlice<f32>, CudaSlice<f32>, CudaSlice<f32>)> {
        let d = self.train_dims(rows, a);
        let (mut dq, mut dk, mut dv) = (
            self.zeros(q.len())?,
            self.zeros(k.len())?,
            self.zeros(v.len())?,
        );
        let mut ds = self.zeros(probs.len())?;
        attention_backward(
            &self.gpu, &mut dq, &mut dk, &mut dv, &mut ds, dout, probs, q, k, v, &d,
        )?;
        Ok((dq, dk, dv))
    }

    fn glu(
        &self,
        g: &CudaSlice<f32>,
        u: &CudaSlice<f32>,
        _f: usize,
        a: Activation,
    ) -> Result<CudaSlice<f32>> {
        let n = g.len();
        let mut out = self.zeros(n)?;
        glu_forward(&self.gpu, &mut out, g, u, act(a), n)?;
        Ok(out)
    }

    fn glu_backward(
        &self,
        da: &CudaSlice<f32>,
        g: &CudaSlice<f32>,
        u: &CudaSlice<f32>,
        _f: usize,
        a: Activation,
    ) -> Result<(CudaSlice<f32>, CudaSlice<f32>)> {
        let n = g.len();
        let (mut dg, mut du) = (self.zeros(n)?, self.zeros(n)?);
        glu_backward(&self.gpu, &mut dg, &mut du, da, g, u, act(a), n)?;
        Ok((dg, du))
    }

    fn cross_entropy_backward(
        &self,
        logits: &mut CudaSlice<f32>,
        t: &CudaSlice<i64>,
        v: usize,
        scale: f32,
    ) -> Result<(f64, usize)> {
        let rows = t.len();
        let mut losses = self.zeros(rows)?;
        cross_entropy_backward(&self.gpu, logits, &mut losses, t, rows, v, scale)?;
        self.loss_total(&losses, t, v)
    }

    fn cross_entropy(
        &self,
        logits: &CudaSlice<f32>,
        t: &CudaSlice<i64>,
        v: usize,
    ) -> Result<(f64, usize)> {
        let rows = t.len();
        let mut losses = self.zeros(rows)?;
        cross_entropy_forward(&self.gpu, &mut losses, logits, t, rows, v)?;
        self.loss_total(&losses, t, v)
    }
}
