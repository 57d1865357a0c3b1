//! [`TrainBackend`] on the CPU: the host [`Slot`]s and [`TrainLinear`]s are the weights, and
//! each step is the `ops` function the Llama training pass has always called (the fixtures'
//! losses and gradients are bit-for-bit what they were before the backend existed).

use super::train::TrainBackend;
use super::Cpu;
use crate::error::{Error, Result};
use crate::ops::activation::{glu_backward, glu_forward, Activation};
use crate::ops::attention::{attention_backward_rows, attention_train_forward_rows, TrainAttn};
use crate::ops::cross_entropy::{cross_entropy_backward, cross_entropy_loss};
use crate::ops::dropout::dropout_inplace;
use crate::ops::embedding::{embedding_backward, embedding_forward};
use crate::ops::layernorm::{layernorm_backward, layernorm_forward_train};
use crate::ops::matmul::{linear_backward, linear_forward};
use crate::ops::rmsnorm::{rmsnorm_backward, rmsnorm_forward_train};
use crate::ops::rope::{rope_backward, rope_forward};
use crate::train::linear::{LinearCache, Slot, TrainLinear};

/// Token ids on the CPU, in rows of `cols`.
pub struct CpuIds {
    ids: Vec<u32>,
    cols: usize,
}

/// Rows of the MLP's elementwise passes per parallel task.
const GLU_ROWS: usize = 32;

/// [`glu_forward`] over row blocks, in parallel with the `rayon` feature (it evaluates an
/// exp per element of the [N, F] intermediate: serial, it would idle the other cores).
fn glu_forward_rows(a: &mut [f32], g: &[f32], u: &[f32], f: usize, act: Activation) {
    let ch = GLU_ROWS * f.max(1);
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        a.par_chunks_mut(ch)
            .zip(g.par_chunks(ch).zip(u.par_chunks(ch)))
            .for_each(|(a, (g, u))| glu_forward(a, g, u, act));
    }
    #[cfg(not(feature = "rayon"))]
    a.chunks_mut(ch)
        .zip(g.chunks(ch).zip(u.chunks(ch)))
        .for_each(|(a, (g, u))| glu_forward(a, g, u, act));
}

/// [`glu_backward`] over row blocks, like [`glu_forward_rows`].
fn glu_backward_rows(
    dg: &mut [f32],
    du: &mut [f32],
    da: &[f32],
    (g, u): (&[f32], &[f32]),
    f: usize,
    act: Activation,
) {
    let ch = GLU_ROWS * f.max(1);
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        dg.par_chunks_mut(ch)
            .zip(du.par_chunks_mut(ch))
            .zip(
                da.par_chunks(ch)
                    .zip(g.par_chunks(ch).zip(u.par_chunks(ch))),
            )
            .for_each(|((dg, du), (da, (g, u)))| glu_backward(dg, du, da, g, u, act));
    }
    #[cfg(not(feature = "rayon"))]
    dg.chunks_mut(ch)
        .zip(du.chunks_mut(ch))
        .zip(da.chunks(ch).zip(g.chunks(ch).zip(u.chunks(ch))))
        .for_each(|((dg, du), (da, (g, u)))| glu_backward(dg, du, da, g, u, act));
}

/// A slot's values and, when it trains, its gradient (the backward reads the values while
/// it writes the gradient: a copy of the small norm vectors, as the loop always made).
fn split(s: &mut Slot) -> (Vec<f32>, Option<&mut [f32]>) {
    let w = s.data().to_vec();
    (w, s.grad_mut())
}

impl TrainBackend for Cpu {
    type T = Vec<f32>;
    type Slot = Slot;
    type Linear = TrainLinear;
    type LinCache = LinearCache;
    type Probs = Vec<Vec<f32>>;
    type LnStats = Vec<(f32, f32)>;
    type Ids = CpuIds;
    type Mask = Vec<bool>;
    type Targets = Vec<i64>;

    fn slot(&self, s: Slot) -> Result<Slot> {
        Ok(s)
    }
    fn linear(&self, l: TrainLinear) -> Result<TrainLinear> {
        Ok(l)
    }
    fn host_slot(s: &Slot) -> &Slot {
        s
    }
    fn host_slot_mut(s: &mut Slot) -> &mut Slot {
        s
    }
    fn host_linear(l: &TrainLinear) -> &TrainLinear {
        l
    }
    fn host_linear_mut(l: &mut TrainLinear) -> &mut TrainLinear {
        l
    }
    fn push_slot(&self, _: &mut Slot) -> Result<()> {
        Ok(())
    }
    fn push_linear(&self, _: &mut TrainLinear) -> Result<()> {
        Ok(())
    }
    fn pull_slot(&self, _: &mut Slot) -> Result<()> {
        Ok(())
    }
    fn pull_linear(&self, _: &mut TrainLinear) -> Result<()> {
        Ok(())
    }

    fn upload(&self, host: &[f32]) -> Result<Vec<f32>> {
        Ok(host.to_vec())
    }

    fn ids(&self, ids: &[u32], cols: usize) -> Result<CpuIds> {
        Ok(CpuIds {
            ids: ids.to_vec(),
            cols,
        })
    }

    fn positions(&self, n: usize, cols: usize, offset: usize) -> Result<CpuIds> {
        let ids = (0..n)
            .map(|i| u32::try_from(i % cols.max(1) + offset))
            .collect::<core::result::Result<Vec<u32>, _>>()
            .map_err(|_| Error::Generation("a position does not fit in u32".into()))?;
        Ok(CpuIds { ids, cols })
    }

    fn mask(&self, mask: &[bool]) -> Result<Vec<bool>> {
        Ok(mask.to_vec())
    }

    fn targets(&self, targets: &[i64]) -> Result<Vec<i64>> {
        Ok(targets.to_vec())
    }

    fn zeros(&self, n: usize) -> Result<Vec<f32>> {
        Ok(vec![0f32; n])
    }

    fn copy(&self, x: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(x.clone())
    }

    fn add(&self, x: &mut Vec<f32>, y: &Vec<f32>) -> Result<()> {
        x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
        Ok(())
    }

    fn add_rows(&self, x: &mut Vec<f32>, bias: &[f32], c: usize) -> Result<()> {
        for row in x.chunks_exact_mut(c) {
            row.iter_mut().zip(bias).for_each(|(a, b)| *a += b);
        }
        Ok(())
    }

    fn dropout(&self, x: &mut Vec<f32>, p: f32, seed: u64) -> Result<()> {
        dropout_inplace(x, p, seed);
        Ok(())
    }

    fn embedding(&self, table: &Slot, ids: &CpuIds, c: usize, scale: f32) -> Result<Vec<f32>> {
        let mut x = vec![0f32; ids.ids.len() * c];
        embedding_forward(&mut x, &ids.ids, table.data(), c, scale)?;
        Ok(x)
    }

    fn embedding_backward(
        &self,
        table: &mut Slot,
        dx: &Vec<f32>,
        ids: &CpuIds,
        c: usize,
        scale: f32,
    ) -> Result<()> {
        if let Some(de) = table.grad_mut() {
            embedding_backward(de, dx, &ids.ids, c, scale);
        }
        Ok(())
    }

    fn layernorm(
        &self,
        x: &Vec<f32>,
        w: &Slot,
        b: &Slot,
        c: usize,
        eps: f32,
    ) -> Result<(Vec<f32>, Vec<(f32, f32)>)> {
        let mut y = vec![0f32; x.len()];
        let st = layernorm_forward_train(&mut y, x, w.data(), b.data(), c, eps);
        Ok((y, st))
    }

    fn layernorm_backward(
        &self,
        w: &mut Slot,
        b: &mut Slot,
        dy: &Vec<f32>,
        x: &Vec<f32>,
        st: &Vec<(f32, f32)>,
        c: usize,
    ) -> Result<Vec<f32>> {
        let (wv, dw) = split(w);
        let mut dx = vec![0f32; x.len()];
        layernorm_backward(&mut dx, dw, b.grad_mut(), dy, x, st, &wv, c);
        Ok(dx)
    }

    fn act(&self, x: &mut Vec<f32>, act: Activation) -> Result<()> {
        act.forward_inplace(x);
        Ok(())
    }

    fn act_backward(&self, d: &mut Vec<f32>, x: &Vec<f32>, act: Activation) -> Result<()> {
        act.backward_inplace(d, x);
        Ok(())
    }

    fn rmsnorm(&self, x: &Vec<f32>, w: &Slot, c: usize, eps: f32) -> Result<(Vec<f32>, Vec<f32>)> {
        let mut y = vec![0f32; x.len()];
        let rstd = rmsnorm_forward_train(&mut y, x, w.data(), c, eps);
        Ok((y, rstd))
    }

    fn rmsnorm_backward(
        &self,
        dx: &mut Vec<f32>,
        w: &mut Slot,
        dy: &Vec<f32>,
        x: &Vec<f32>,
        rstd: &Vec<f32>,
        c: usize,
    ) -> Result<()> {
        let (wv, dw) = split(w);
        rmsnorm_backward(dx, dw, dy, x, rstd, &wv, c);
        Ok(())
    }

    fn linear_forward(
        &self,
        l: &TrainLinear,
        x: &Vec<f32>,
        m: usize,
        seed: Option<u64>,
    ) -> Result<(Vec<f32>, LinearCache)> {
        Ok(l.forward(x, m, seed))
    }

    fn linear_backward(
        &self,
        l: &mut TrainLinear,
        dx: Option<&mut Vec<f32>>,
        dy: &Vec<f32>,
        x: &Vec<f32>,
        cache: &LinearCache,
        m: usize,
    ) -> Result<()> {
        l.backward(dx.map(|d| &mut d[..]), dy, x, cache, m);
        Ok(())
    }

    fn tied_logits(
        &self,
        x: &Vec<f32>,
        table: &Slot,
        n: usize,
        c: usize,
        v: usize,
    ) -> Result<Vec<f32>> {
        let mut logits = vec![0f32; n * v];
        linear_forward(&mut logits, x, table.data(), None, n, c, v);
        Ok(logits)
    }

    fn tied_logits_backward(
        &self,
        dx: &mut Vec<f32>,
        table: &mut Slot,
        dlogits: &Vec<f32>,
        x: &Vec<f32>,
        n: usize,
        c: usize,
        v: usize,
    ) -> Result<()> {
        let (w, dw) = match table {
            Slot::Frozen(w) => (&**w, None),
            Slot::Train(p) => (&p.value[..], Some(&mut p.grad[..])),
        };
        linear_backward(Some(dx), dw, None, dlogits, x, w, n, c, v);
        Ok(())
    }

    fn rope(
        &self,
        x: &mut Vec<f32>,
        inv_freq: &Vec<f32>,
        ids: &CpuIds,
        heads: usize,
        dh: usize,
    ) -> Result<()> {
        for (i, head) in x.chunks_exact_mut(dh).enumerate() {
            rope_forward(head, inv_freq, (i / heads) % ids.cols);
        }
        Ok(())
    }

    fn rope_backward(
        &self,
        d: &mut Vec<f32>,
        inv_freq: &Vec<f32>,
        ids: &CpuIds,
        heads: usize,
        dh: usize,
    ) -> Result<()> {
        for (i, head) in d.chunks_exact_mut(dh).enumerate() {
            rope_backward(head, inv_freq, (i / heads) % ids.cols);
        }
        Ok(())
    }

    fn attention(
        &self,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        mask: Option<&Vec<bool>>,
        rows: usize,
        a: &TrainAttn,
    ) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
        let mut out = vec![0f32; rows * a.t * a.h * a.dh];
        let mask = mask.map(|m| &m[..]);
        let probs = attention_train_forward_rows(&mut out, q, k, v, mask, rows, a);
        Ok((out, probs))
    }

    fn attention_backward(
        &self,
        dout: &Vec<f32>,
        probs: &Vec<Vec<f32>>,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        _rows: usize,
        a: &TrainAttn,
    ) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        let (mut dq, mut dk, mut dv) = (
            vec![0f32; q.len()],
            vec![0f32; k.len()],
            vec![0f32; v.len()],
        );
        attention_backward_rows(&mut dq, &mut dk, &mut dv, dout, probs, q, k, v, a);
        Ok((dq, dk, dv))
    }

    fn glu(&self, g: &Vec<f32>, u: &Vec<f32>, f: usize, act: Activation) -> Result<Vec<f32>> {
        let mut a = vec![0f32; g.len()];
        glu_forward_rows(&mut a, g, u, f, act);
        Ok(a)
    }

    fn glu_backward(
        &self,
        da: &Vec<f32>,
        g: &Vec<f32>,
        u: &Vec<f32>,
        f: usize,
        act: Activation,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let (mut dg, mut du) = (vec![0f32; g.len()], vec![0f32; u.len()]);
        glu_backward_rows(&mut dg, &mut du, da, (g, u), f, act);
        Ok((dg, du))
    }

    fn cross_entropy_backward(
        &self,
        logits: &mut Vec<f32>,
        t: &Vec<i64>,
        v: usize,
        scale: f32,
    ) -> Result<(f64, usize)> {
        cross_entropy_backward(logits, t, v, scale).map_err(Error::Generation)
    }

    fn cross_entropy(&self, logits: &Vec<f32>, t: &Vec<i64>, v: usize) -> Result<(f64, usize)> {
        cross_entropy_loss(logits, t, v).map_err(Error::Generation)
    }
}
