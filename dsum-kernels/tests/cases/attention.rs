//! attention.cu against dsum_core::ops::attention.

use dsum_core::ops::attention::{
    attention_backward_rows, attention_forward, attention_train_forward_rows, AttnShape, TrainAttn,
};
use dsum_kernels::attention::{self as k, AttnDims, TrainDims};
use dsum_kernels::cudarc::driver::{CudaSlice, DeviceRepr};
use dsum_kernels::tolerance::{check, EXACT, F32};
use dsum_kernels::{Gpu, KernelError};
use proptest::prelude::*;
use proptest::sample::select;

use super::{prop, rand_vec};
use crate::GpuTest;

pub const TESTS: &[GpuTest] = &[
    ("attention_forward", forward),
    ("attention_forward_long", forward_long),
    ("attention_forward_prefill", forward_prefill),
    ("kv_write", kv_write),
    ("attention_train_forward", train_forward),
    ("attention_train_forward_long", train_forward_long),
    ("attention_backward", backward),
    ("attention_backward_long", backward_long),
];

fn e(e: KernelError) -> String {
    e.to_string()
}

/// Upload, padded to one element: an empty cache (len = cap = 0) is a valid input, but CUDA
/// refuses zero-byte allocations. The launchers accept buffers longer than needed.
fn up<T: DeviceRepr + Default + Clone>(gpu: &Gpu, x: &[T]) -> Result<CudaSlice<T>, String> {
    if x.is_empty() {
        return gpu.upload(&[T::default()]).map_err(e);
    }
    gpu.upload(x).map_err(e)
}

/// (h, kv_h): h in {1,2,3,4,6} with every kv_h dividing it.
fn heads() -> impl Strategy<Value = (usize, usize)> {
    select(vec![
        (1, 1),
        (2, 1),
        (2, 2),
        (3, 1),
        (3, 3),
        (4, 1),
        (4, 2),
        (4, 4),
        (6, 1),
        (6, 2),
        (6, 3),
        (6, 6),
    ])
}

fn head_size() -> impl Strategy<Value = usize> {
    select(vec![1usize, 3, 8, 31, 64, 80])
}

/// Key masks [rows, n]: 0 none, 1 random, 2 random with row 0 fully masked, 3 random with key 0
/// always real.
fn key_mask(mode: u8, rows: usize, n: usize, seed: u64) -> Option<Vec<bool>> {
    if mode == 0 {
        return None;
    }
    let r = rand_vec(rows * n, seed);
    Some(
        (0..rows * n)
            .map(|i| match mode {
                2 if i < n => false,
                3 if i % n == 0 => true,
                _ => r[i] > -0.4,
            })
            .collect(),
    )
}

fn to_u8(m: &[bool]) -> Vec<u8> {
    m.iter().map(|&b| b as u8).collect()
}

#[derive(Debug, Clone, Copy)]
struct Infer {
    rows: usize,
    t: usize,
    heads: (usize, usize),
    dh: usize,
    len: usize,
    extra_cap: usize,
    /// None: not causal; Some(x): past = x mod (len + 1).
    past: Option<usize>,
    mask: u8,
    seed: u64,
}

/// GPU `attention_forward` against the CPU one, row by row.
fn run_infer(gpu: &Gpu, c: Infer) -> Result<(), String> {
    let Infer {
        rows,
        t,
        heads: (h, kv_h),
        dh,
        len,
        extra_cap,
        past,
        mask,
        seed,
    } = c;
    let cap = len + extra_cap;
    let past = past.map(|p| p % (len + 1));
    let (qn, kvn) = (t * h * dh, kv_h * cap * dh);
    let q = rand_vec(rows * qn, seed);
    let kc = rand_vec(rows * kvn, seed + 1);
    let vc = rand_vec(rows * kvn, seed + 2);
    let m = key_mask(mask, rows, cap, seed + 3);
    let scale = 1.0 / (dh as f32).sqrt();
    let shape = AttnShape {
        t,
        h,
        kv_h,
        dh,
        cap,
        len,
    };
    let mut want = vec![0f32; rows * qn];
    for r in 0..rows {
        attention_forward(
            &mut want[r * qn..(r + 1) * qn],
            &q[r * qn..(r + 1) * qn],
            &kc[r * kvn..(r + 1) * kvn],
            &vc[r * kvn..(r + 1) * kvn],
            &shape,
            past,
            m.as_ref().map(|m| &m[r * cap..(r + 1) * cap]),
            scale,
        );
    }
    let (gq, gk, gv) = (up(gpu, &q)?, up(gpu, &kc)?, up(gpu, &vc)?);
    let gm = match &m {
        Some(m) => Some(up(gpu, &to_u8(m))?),
        None => None,
    };
    // Filled with NaN-free garbage: every output element must be written.
    let mut out = up(gpu, &vec![7f32; rows * qn])?;
    let dims = AttnDims {
        rows,
        t,
        h,
        kv_h,
        dh,
        cap,
        len,
    };
    k::attention_forward(gpu, &mut out, &gq, &gk, &gv, gm.as_ref(), dims, past, scale)
        .map_err(e)?;
    check("out", &gpu.download(&out).map_err(e)?, &want, F32)
}

fn forward(gpu: &Gpu) -> Result<(), String> {
    let s = (
        (1usize..4, 1usize..9, heads(), head_size()),
        (
            0usize..300,
            0usize..5,
            any::<Option<usize>>(),
            0u8..4,
            0u64..1000,
        ),
    );
    prop(
        s,
        48,
        |((rows, t, heads, dh), (len, extra_cap, past, mask, seed))| {
            run_infer(
                gpu,
                Infer {
                    rows,
                    t,
                    heads,
                    dh,
                    len,
                    extra_cap,
                    past,
                    mask,
                    seed,
                },
            )
        },
    )
}

/// Caches of thousands of positions and heads up to 256 wide.
fn forward_long(gpu: &Gpu) -> Result<(), String> {
    let s = (
        1usize..3,
        1usize..4,
        heads(),
        select(vec![64usize, 128, 256]),
        1000usize..5000,
        any::<Option<usize>>(),
        0u8..4,
        0u64..1000,
    );
    prop(s, 8, |(rows, t, heads, dh, len, past, mask, seed)| {
        run_infer(
            gpu,
            Infer {
                rows,
                t,
                heads,
                dh,
                len,
                extra_cap: 3,
                past,
                mask,
                seed,
            },
        )
    })
}

/// Prompts (t >= 16), where the CPU takes its gemm path: past = len - t.
fn forward_prefill(gpu: &Gpu) -> Result<(), String> {
    let s = (
        1usize..3,
        16usize..40,
        heads(),
        head_size(),
        0usize..20,
        0u8..4,
        0u64..1000,
    );
    prop(s, 12, |(rows, t, heads, dh, extra, mask, seed)| {
        let len = t + extra;
        run_infer(
            gpu,
            Infer {
                rows,
                t,
                heads,
                dh,
                len,
                extra_cap: 2,
                past: Some(len - t),
                mask,
                seed,
            },
        )
    })
}

/// kv_write has no CPU function to mirror: the CPU models copy the new positions inline
/// (`models/llama.rs`, `split_heads_into` in `models/bart.rs`); this is that copy.
fn kv_write(gpu: &Gpu) -> Result<(), String> {
    let s = (
        1usize..4,
        1usize..9,
        1usize..5,
        head_size(),
        0usize..40,
        0usize..5,
        0u64..1000,
    );
    prop(s, 32, |(rows, t, kv_h, dh, past, extra, seed)| {
        let cap = past + t + extra;
        let cache = rand_vec(rows * kv_h * cap * dh, seed);
        let new = rand_vec(rows * t * kv_h * dh, seed + 1);
        let mut want = cache.clone();
        for r in 0..rows {
            for ti in 0..t {
                for g in 0..kv_h {
                    let dst = ((r * kv_h + g) * cap + past + ti) * dh;
                    let src = ((r * t + ti) * kv_h + g) * dh;
                    want[dst..dst + dh].copy_from_slice(&new[src..src + dh]);
                }
            }
        }
        let mut gc = up(gpu, &cache)?;
        let gn = up(gpu, &new)?;
        k::kv_write(gpu, &mut gc, &gn, rows, t, kv_h, dh, cap, past).map_err(e)?;
        check("cache", &gpu.download(&gc).map_err(e)?, &want, EXACT)?;
        // Past the capacity is an error, not a write.
        match k::kv_write(gpu, &mut gc, &gn, rows, t, kv_h, dh, cap, past + extra + 1) {
            Err(KernelError::Shape { .. }) => Ok(()),
            other => Err(format!("writing past the capacity gave {other:?}")),
        }
    })
}

#[derive(Debug, Clone, Copy)]
struct Train {
    rows: usize,
    t: usize,
    /// Keys of cross-attention (ignored when causal: s = t).
    s: usize,
    heads: (usize, usize),
    dh: usize,
    causal: bool,
    mask: u8,
    seed: u64,
}

impl Train {
    fn attn(&self) -> TrainAttn {
        TrainAttn {
            t: self.t,
            s: if self.causal { self.t } else { self.s },
            h: self.heads.0,
            kv_h: self.heads.1,
            dh: self.dh,
            causal: self.causal,
            scale: 1.0 / (self.dh as f32).sqrt(),
        }
    }

    fn dims(&self) -> TrainDims {
        let a = self.attn();
        TrainDims {
            rows: self.rows,
            t: a.t,
            s: a.s,
            h: a.h,
            kv_h: a.kv_h,
            dh: a.dh,
            causal: a.causal,
            scale: a.scale,
        }
    }
}

fn train_shapes(t: std::ops::Range<usize>) -> impl Strategy<Value = Train> {
    (
        (1usize..4, t, 1usize..20, heads(), head_size()),
        (any::<bool>(), 0u8..4, 0u64..1000),
    )
        .prop_map(|((rows, t, s, heads, dh), (causal, mask, seed))| Train {
            rows,
            t,
            s,
            heads,
            dh,
            causal,
            mask,
            seed,
        })
}

struct TrainData {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    mask: Option<Vec<bool>>,
}

fn train_data(c: &Train) -> TrainData {
    let a = c.attn();
    let (qn, kn) = (c.rows * a.t * a.h * a.dh, c.rows * a.s * a.kv_h * a.dh);
    TrainData {
        q: rand_vec(qn, c.seed),
        k: rand_vec(kn, c.seed + 1),
        v: rand_vec(kn, c.seed + 2),
        mask: key_mask(c.mask, c.rows, a.s, c.seed + 3),
    }
}

fn run_train_forward(gpu: &Gpu, c: Train) -> Result<(), String> {
    let a = c.attn();
    let x = train_data(&c);
    let mut want = vec![0f32; x.q.len()];
    let want_p: Vec<f32> =
        attention_train_forward_rows(&mut want, &x.q, &x.k, &x.v, x.mask.as_deref(), c.rows, &a)
            .concat();
    let (gq, gk, gv) = (up(gpu, &x.q)?, up(gpu, &x.k)?, up(gpu, &x.v)?);
    let gm = match &x.mask {
        Some(m) => Some(up(gpu, &to_u8(m))?),
        None => None,
    };
    // Garbage in both outputs: every element must be written.
    let mut out = up(gpu, &vec![7f32; x.q.len()])?;
    let mut probs = up(gpu, &vec![7f32; want_p.len()])?;
    k::attention_train_forward(
        gpu,
        &mut out,
        &mut probs,
        &gq,
        &gk,
        &gv,
        gm.as_ref(),
        &c.dims(),
    )
    .map_err(e)?;
    check("out", &gpu.download(&out).map_err(e)?, &want, F32)?;
    check("probs", &gpu.download(&probs).map_err(e)?, &want_p, F32)
}

fn train_forward(gpu: &Gpu) -> Result<(), String> {
    prop(train_shapes(1..9), 48, |c| run_train_forward(gpu, c))
}

/// Past the CPU's causal block of 64 queries.
fn train_forward_long(gpu: &Gpu) -> Result<(), String> {
    prop(train_shapes(60..80), 6, |c| run_train_forward(gpu, c))
}

fn run_backward(gpu: &Gpu, c: Train) -> Result<(), String> {
    let a = c.attn();
    let x = train_data(&c);
    let mut out = vec![0f32; x.q.len()];
    let probs: Vec<Vec<f32>> =
        attention_train_forward_rows(&mut out, &x.q, &x.k, &x.v, x.mask.as_deref(), c.rows, &a);
    let dout = rand_vec(x.q.len(), c.seed + 4);
    // The gradients accumulate: start from something.
    let (dq0, dk0, dv0) = (
        rand_vec(x.q.len(), c.seed + 5),
        rand_vec(x.k.len(), c.seed + 6),
        rand_vec(x.v.len(), c.seed + 7),
    );
    let (mut dq, mut dk, mut dv) = (dq0.clone(), dk0.clone(), dv0.clone());
    attention_backward_rows(
        &mut dq, &mut dk, &mut dv, &dout, &probs, &x.q, &x.k, &x.v, &a,
    );
    let p = probs.concat();
    let (mut gdq, mut gdk, mut gdv) = (up(gpu, &dq0)?, up(gpu, &dk0)?, up(gpu, &dv0)?);
    let mut ds = up(gpu, &vec![7f32; p.len()])?;
    let (gdo, gp, gq, gk, gv) = (
        up(gpu, &dout)?,
        up(gpu, &p)?,
        up(gpu, &x.q)?,
        up(gpu, &x.k)?,
        up(gpu, &x.v)?,
    );
    k::attention_backward(
        gpu,
        &mut gdq,
        &mut gdk,
        &mut gdv,
        &mut ds,
        &gdo,
        &gp,
        &gq,
        &gk,
        &gv,
        &c.dims(),
    )
    .map_err(e)?;
    check("dq", &gpu.download(&gdq).map_err(e)?, &dq, F32)?;
    check("dk", &gpu.download(&gdk).map_err(e)?, &dk, F32)?;
    check("dv", &gpu.download(&gdv).map_err(e)?, &dv, F32)
}

fn backward(gpu: &Gpu) -> Result<(), String> {
    prop(train_shapes(1..9), 48, |c| run_backward(gpu, c))
}

fn backward_long(gpu: &Gpu) -> Result<(), String> {
    prop(train_shapes(60..80), 6, |c| run_backward(gpu, c))
}
