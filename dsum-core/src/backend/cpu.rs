//! The CPU backend: each step is the `ops` function the Llama forward has always called, on
//! `Vec<f32>` activations; weights stay borrowed from the checkpoint (no copy at load).

use super::{Backend, Device, HostLinear};
use crate::error::{Error, Result};
use crate::ops::activation::Activation;
use crate::ops::attention::{attention_forward, AttnShape};
use crate::ops::layernorm::layernorm_inplace;
use crate::ops::rmsnorm::rmsnorm_inplace;
use crate::ops::rope::rope_forward;
use crate::tensor::Weight;

/// The CPU (threads through `rayon` when that feature is on).
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

/// A linear weight `[out, in]` as loaded, with its bias `[out]`.
pub struct CpuLinear {
    w: HostLinear,
    b: Option<Weight>,
    out: usize,
}

/// One layer's keys and values, `[R, KV, cap, dh]` each.
pub struct CpuKv {
    k: Vec<f32>,
    v: Vec<f32>,
    rows: usize,
    kv_heads: usize,
    cap: usize,
    dh: usize,
}

/// Positions `[N]` and key mask `[R, cap]` of one forward call.
pub struct CpuInputs {
    pos: Vec<usize>,
    mask: Vec<bool>,
}

impl Backend for Cpu {
    type Tensor = Vec<f32>;
    type Linear = CpuLinear;
    type KvCache = CpuKv;
    type Inputs = CpuInputs;

    fn device(&self) -> Device {
        Device::Cpu
    }

    fn upload(&self, host: &[f32]) -> Result<Vec<f32>> {
        Ok(host.to_vec())
    }

    fn upload_linear(&self, w: HostLinear, b: Option<Weight>) -> Result<CpuLinear> {
        let out = w.shape()[0];
        Ok(CpuLinear { w, b, out })
    }

    fn kv_cache(&self, rows: usize, kv_heads: usize, cap: usize, dh: usize) -> Result<CpuKv> {
        let n = rows * kv_heads * cap * dh;
        Ok(CpuKv {
            k: vec![0f32; n],
            v: vec![0f32; n],
            rows,
            kv_heads,
            cap,
            dh,
        })
    }

    fn inputs(&self, pos: &[usize], mask: &[bool]) -> Result<CpuInputs> {
        Ok(CpuInputs {
            pos: pos.to_vec(),
            mask: mask.to_vec(),
        })
    }

    fn embedding(&self, table: &CpuLinear, ids: &[u32], c: usize) -> Result<Vec<f32>> {
        let HostLinear::Dense(w) = &table.w else {
            return Err(Error::Quant(
                "an NF4 embedding table cannot be read by rows".into(),
            ));
        };
        let mut x = vec![0f32; ids.len() * c];
        for (row, &id) in x.chunks_exact_mut(c.max(1)).zip(ids) {
            w.row_into(id as usize, row);
        }
        Ok(x)
    }

    fn rmsnorm(&self, x: &Vec<f32>, w: &Vec<f32>, c: usize, eps: f32) -> Result<Vec<f32>> {
        let mut y = x.clone();
        rmsnorm_inplace(&mut y, w, c, eps);
        Ok(y)
    }

    fn linear(&self, x: &Vec<f32>, l: &CpuLinear, m: usize) -> Result<Vec<f32>> {
        let mut y = vec![0f32; m * l.out];
        match &l.w {
            HostLinear::Dense(w) => w.forward(&mut y, x, l.b.as_deref(), m),
            HostLinear::Nf4(t) => {
                t.matmul(&mut y, x, m);
                if let Some(b) = &l.b {
                    for row in y.chunks_exact_mut(l.out.max(1)) {
                        row.iter_mut().zip(b.iter()).for_each(|(y, b)| *y += b);
                    }
                }
            }
        }
        Ok(y)
    }

    fn head_norm_rope(
        &self,
        x: &mut Vec<f32>,
        norm: Option<&Vec<f32>>,
        inv_freq: &Vec<f32>,
        inp: &CpuInputs,
        heads: usize,
        dh: usize,
        eps: f32,
    ) -> Result<()> {
        for (head, i) in x.chunks_exact_mut(dh).zip(0..) {
            if let Some(w) = norm {
                rmsnorm_inplace(head, w, dh, eps);
            }
            rope_forward(head, inv_freq, inp.pos[i / heads]);
        }
        Ok(())
    }

    fn kv_write(
        &self,
        cache: &mut CpuKv,
        k: &Vec<f32>,
        v: &Vec<f32>,
        t: usize,
        past: usize,
    ) -> Result<()> {
        let CpuKv {
            rows,
            kv_heads: kv,
            cap,
            dh,
            ..
        } = *cache;
        let per = kv * cap * dh;
        for ri in 0..rows {
            for ti in 0..t {
                let i = ri * t + ti;
                for g in 0..kv {
                    let dst = ri * per + (g * cap + past + ti) * dh;
                    let src = (i * kv + g) * dh;
                    cache.k[dst..dst + dh].copy_from_slice(&k[src..src + dh]);
                    cache.v[dst..dst + dh].copy_from_slice(&v[src..src + dh]);
                }
            }
        }
        Ok(())
    }

    fn attention(
        &self,
        q: &Vec<f32>,
        cache: &CpuKv,
        inp: &CpuInputs,
        s: &AttnShape,
        past: usize,
        scale: f32,
    ) -> Result<Vec<f32>> {
        let (rows, cap) = (cache.rows, cache.cap);
        let per = cache.kv_heads * cap * cache.dh;
        let row = s.t * s.h * s.dh;
        let mut out = vec![0f32; rows * row];
        for ri in 0..rows {
            attention_forward(
                &mut out[ri * row..(ri + 1) * row],
                &q[ri * row..(ri + 1) * row],
                &cache.k[ri * per..(ri + 1) * per],
                &cache.v[ri * per..(ri + 1) * per],
                s,
                Some(past),
                Some(&inp.mask[ri * cap..ri * cap + s.len]),
                scale,
            );
        }
        Ok(out)
    }

    fn cross_attention(
        &self,
        q: &Vec<f32>,
        kv: &CpuKv,
        inp: &CpuInputs,
        items: &[usize],
        s: &AttnShape,
        scale: f32,
    ) -> Result<Vec<f32>> {
        if items.iter().any(|&i| i >= kv.rows) {
            return Err(Error::Generation(
                "cross-attention row refers to a missing sequence".into(),
            ));
        }
        let cap = kv.cap;
        let per = kv.kv_heads * cap * kv.dh;
        let row = s.t * s.h * s.dh;
        let mut out = vec![0f32; items.len() * row];
        for (ri, &bi) in items.iter().enumerate() {
            attention_forward(
                &mut out[ri * row..(ri + 1) * row],
                &q[ri * row..(ri + 1) * row],
                &kv.k[bi * per..(bi + 1) * per],
                &kv.v[bi * per..(bi + 1) * per],
                s,
                None,
                Some(&inp.mask[bi * cap..bi * cap + s.len]),
                scale,
            );
        }
        Ok(out)
    }

    fn add(&self, x: &mut Vec<f32>, y: &Vec<f32>) -> Result<()> {
        x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
        Ok(())
    }

    fn scale(&self, x: &mut Vec<f32>, s: f32) -> Result<()> {
        x.iter_mut().for_each(|a| *a *= s);
        Ok(())
    }

    fn layernorm(
        &self,
        x: &mut Vec<f32>,
        w: &Vec<f32>,
        b: &Vec<f32>,
        c: usize,
        eps: f32,
    ) -> Result<()> {
        layernorm_inplace(x, w, b, c, eps);
        Ok(())
    }

    fn act(&self, x: &mut Vec<f32>, act: Activation) -> Result<()> {
        act.forward_inplace(x);
        Ok(())
    }

    fn glu(&self, gate: &mut Vec<f32>, up: &Vec<f32>, act: Activation) -> Result<()> {
        // Not `ops::activation::glu_forward`, whose SwiGLU training path uses `exp_fast`:
        // inference keeps libm's expf, as `Activation::forward_inplace` computes it.
        act.forward_inplace(gate);
        gate.iter_mut().zip(up).for_each(|(g, u)| *g *= u);
        Ok(())
    }

    fn last_positions(&self, x: Vec<f32>, rows: usize, t: usize, c: usize) -> Result<Vec<f32>> {
        if t == 1 {
            return Ok(x);
        }
        Ok((0..rows)
            .flat_map(|ri| x[(ri * t + t - 1) * c..(ri * t + t) * c].iter().copied())
            .collect())
    }

    fn to_host(&self, x: Vec<f32>) -> Result<Vec<f32>> {
        Ok(x)
    }

    fn reorder(&self, cache: &mut CpuKv, idx: &[usize]) -> Result<()> {
        let per = cache.kv_heads * cache.cap * cache.dh;
        for c in [&mut cache.k, &mut cache.v] {
            let mut next = vec![0f32; idx.len() * per];
            for (r, &src) in idx.iter().enumerate() {
                next[r * per..(r + 1) * per].copy_from_slice(&c[src * per..(src + 1) * per]);
            }
            *c = next;
        }
        cache.rows = idx.len();
        Ok(())
    }
}
