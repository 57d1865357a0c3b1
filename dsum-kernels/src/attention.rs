//! Attention (`kernels/attention.cu`), mirrors `dsum_core::ops::attention`: inference against a
//! KV cache (`attention_forward`, `kv_write`) and training forward/backward with saved
//! probabilities (`attention_train_forward`, `attention_backward`), for R sequences at once.

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use crate::error::{check_len, KernelError, Result};
use crate::gpu::Gpu;
use crate::launch::{per_element, row_threads};
use crate::sources::ATTENTION;

/// Shape of inference attention over R rows (`AttnShape` of dsum-core plus `rows`).
#[derive(Clone, Copy, Debug)]
pub struct AttnDims {
    pub rows: usize,
    /// New query tokens per row.
    pub t: usize,
    /// Query heads.
    pub h: usize,
    /// Key/value heads (query head i reads kv head i / (h / kv_h)).
    pub kv_h: usize,
    pub dh: usize,
    /// Positions the caches hold; the first `len` are valid.
    pub cap: usize,
    pub len: usize,
}

/// Shape of training attention over R rows (`TrainAttn` of dsum-core plus `rows`).
#[derive(Clone, Copy, Debug)]
pub struct TrainDims {
    pub rows: usize,
    /// Queries per row.
    pub t: usize,
    /// Keys per row (s == t for self-attention).
    pub s: usize,
    pub h: usize,
    pub kv_h: usize,
    pub dh: usize,
    /// Query t sees keys 0..=t.
    pub causal: bool,
    pub scale: f32,
}

/// Dimensions go to the kernels as `int`: refuse what does not fit instead of wrapping.
fn int(op: &'static str, name: &str, x: usize) -> Result<i32> {
    i32::try_from(x).map_err(|_| KernelError::Shape {
        op,
        what: format!("{name} = {x} does not fit a 32-bit int"),
    })
}

fn check_heads(op: &'static str, h: usize, kv_h: usize) -> Result<()> {
    if kv_h == 0 || !h.is_multiple_of(kv_h) {
        return Err(KernelError::Shape {
            op,
            what: format!("{h} query heads cannot be grouped over {kv_h} key/value heads"),
        });
    }
    Ok(())
}

/// A grid of `blocks` blocks (checked to fit the grid's x dimension).
fn grid(op: &'static str, blocks: usize, threads: u32, shared: usize) -> Result<LaunchConfig> {
    Ok(LaunchConfig {
        grid_dim: (int(op, "blocks", blocks)? as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: shared as u32,
    })
}

/// Dynamic shared memory a block may use without opting in on every device.
const SHARED_MAX: usize = 48 * 1024;

/// out[R,T,H,dh] = softmax(q·kᵀ·scale + mask)·v against the caches k, v [R,KV,cap,dh]
/// (first `len` positions valid). Causal (`Some(past)`): query ti sees keys
/// 0..min(past + ti + 1, len); `mask` [R,cap] (1 = real key, 0 = padding) hides keys, e.g. the
/// padded encoder positions of cross-attention (`causal_past` None). A query that sees no key
/// gets 0, as on the CPU.
pub fn attention_forward(
    gpu: &Gpu,
    out: &mut CudaSlice<f32>,
    q: &CudaSlice<f32>,
    k: &CudaSlice<f32>,
    v: &CudaSlice<f32>,
    mask: Option<&CudaSlice<u8>>,
    dims: AttnDims,
    causal_past: Option<usize>,
    scale: f32,
) -> Result<()> {
    let op = "attention_forward";
    let AttnDims {
        rows,
        t,
        h,
        kv_h,
        dh,
        cap,
        len,
    } = dims;
    check_heads(op, h, kv_h)?;
    if len > cap {
        return Err(KernelError::Shape {
            op,
            what: format!("len {len} exceeds the cache capacity {cap}"),
        });
    }
    let qn = rows * t * h * dh;
    check_len(op, "out", out.len(), qn)?;
    check_len(op, "q", q.len(), qn)?;
    check_len(op, "k", k.len(), rows * kv_h * cap * dh)?;
    check_len(op, "v", v.len(), rows * kv_h * cap * dh)?;
    if let Some(m) = mask {
        check_len(op, "mask", m.len(), rows * cap)?;
    }
    if qn == 0 {
        return Ok(());
    }
    // Past + t must fit an int too (the kernel adds them); -1 means not causal.
    let past = match causal_past {
        Some(p) => int(op, "past + t", p + t).map(|_| p as i32)?,
        None => -1,
    };
    // A warp per 32 keys up to 8 warps: short caches (decoding the first tokens) need no more.
    let nwarps = len.div_ceil(32).clamp(1, 8);
    let shared = (dh + nwarps * dh + 2 * nwarps) * 4;
    if shared > SHARED_MAX {
        return Err(KernelError::Shape {
            op,
            what: format!(
                "head size {dh} needs {shared} bytes of shared memory (at most {SHARED_MAX})"
            ),
        });
    }
    let cfg = grid(op, rows * h * t, nwarps as u32 * 32, shared)?;
    let f = gpu.function(&ATTENTION, "attention_forward_f32")?;
    let dims_i = [rows, t, h, kv_h, dh, cap, len]
        .iter()
        .map(|&x| int(op, "dimension", x))
        .collect::<Result<Vec<i32>>>()?;
    let null = 0u64;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(out).arg(q).arg(k).arg(v);
    match mask {
        Some(m) => b.arg(m),
        None => b.arg(&null),
    };
    for d in &dims_i {
        b.arg(d);
    }
    b.arg(&past).arg(&scale);
    // SAFETY: every buffer length was checked above against the extents the kernel indexes.
    unsafe { b.launch(cfg) }?;
    Ok(())
}

/// Writes t new positions into a cache at past..past+t: cache[R,KV,cap,dh] <- new[R,T,KV,dh]
/// (the key or value projection output of the new tokens, heads interleaved).
pub fn kv_write(
    gpu: &Gpu,
    cache: &mut CudaSlice<f32>,
    new: &CudaSlice<f32>,
    rows: usize,
    t: usize,
    kv_h: usize,
    dh: usize,
    cap: usize,
    past: usize,
) -> Result<()> {
    let op = "kv_write";
    if past + t > cap {
        return Err(KernelError::Shape {
            op,
            what: format!(
                "positions {past}..{} exceed the cache capacity {cap}",
                past + t
            ),
        });
    }
    check_len(op, "cache", cache.len(), rows * kv_h * cap * dh)?;
    let n = rows * t * kv_h * dh;
    check_len(op, "new", new.len(), n)?;
    if n == 0 {
        return Ok(());
    }
    let f = gpu.function(&ATTENTION, "kv_write_f32")?;
    let dims_i = [rows, t, kv_h, dh, cap, past]
        .iter()
        .map(|&x| int(op, "dimension", x))
        .collect::<Result<Vec<i32>>>()?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(cache).arg(new);
    for d in &dims_i {
        b.arg(d);
    }
    // Grid-stride loop: cap the grid, the kernel covers the rest.
    let mut cfg = per_element(n);
    cfg.grid_dim.0 = cfg.grid_dim.0.min(65_535);
    // SAFETY: lengths checked above; past + t <= cap keeps every write inside the cache.
    unsafe { b.launch(cfg) }?;
    Ok(())
}

/// Checks shared by the training launchers; returns the kernel's int dimensions
/// [rows, t, s, h, kv_h, dh].
fn train_dims(op: &'static str, a: &TrainDims) -> Result<[i32; 6]> {
    check_heads(op, a.h, a.kv_h)?;
    Ok([
        int(op, "rows", a.rows)?,
        int(op, "t", a.t)?,
        int(op, "s", a.s)?,
        int(op, "h", a.h)?,
        int(op, "kv_h", a.kv_h)?,
        int(op, "dh", a.dh)?,
    ])
}

/// out = softmax(q·kᵀ·scale + mask)·v over R rows, with q/out [R·T, H·dh], k/v [R·S, KV·dh]
/// (projection outputs, heads interleaved) and `key_mask` [R,S] (1 = real key); probs
/// [R,H,T,S] receives the probabilities the backward pass needs (0 where hidden), like
/// `attention_train_forward_rows` returns them.
pub fn attention_train_forward(
    gpu: &Gpu,
    out: &mut CudaSlice<f32>,
    probs: &mut CudaSlice<f32>,
    q: &CudaSlice<f32>,
    k: &CudaSlice<f32>,
    v: &CudaSlice<f32>,
    key_mask: Option<&CudaSlice<u8>>,
    a: &TrainDims,
) -> Result<()> {
    let op = "attention_train_forward";
    let dims = train_dims(op, a)?;
    let TrainDims {
        rows,
        t,
        s,
        h,
        kv_h,
        dh,
        ..
    } = *a;
    check_len(op, "out", out.len(), rows * t * h * dh)?;
    check_len(op, "probs", probs.len(), rows * h * t * s)?;
    check_len(op, "q", q.len(), rows * t * h * dh)?;
    check_len(op, "k", k.len(), rows * s * kv_h * dh)?;
    check_len(op, "v", v.len(), rows * s * kv_h * dh)?;
    if let Some(m) = key_mask {
        check_len(op, "key_mask", m.len(), rows * s)?;
    }
    if rows * t * h == 0 {
        return Ok(());
    }
    if dh == 0 {
        // No scores at all: the CPU returns zero probabilities (and an empty output).
        gpu.stream()
            .memset_zeros(&mut probs.slice_mut(..rows * h * t * s))?;
        return Ok(());
    }
    let f = gpu.function(&ATTENTION, "attention_train_forward_f32")?;
    let causal = a.causal as i32;
    let null = 0u64;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(out).arg(probs).arg(q).arg(k).arg(v);
    match key_mask {
        Some(m) => b.arg(m),
        None => b.arg(&null),
    };
    for d in &dims {
        b.arg(d);
    }
    b.arg(&causal).arg(&a.scale);
    // Four warps: a warp per key for the scores, a thread per key / per dh entry after.
    let cfg = grid(op, rows * h * t, 128, 0)?;
    // SAFETY: every buffer length was checked above against the extents the kernel indexes.
    unsafe { b.launch(cfg) }?;
    Ok(())
}

/// Backward of [`attention_train_forward`]: dq, dk, dv accumulate (the heads of a GQA group
/// add into their shared key/value head), like `attention_backward_rows`. `ds` is scratch of
/// R·H·T·S floats (the score gradients). Deterministic: every gradient element is summed by
/// one thread in a fixed order.
pub fn attention_backward(
    gpu: &Gpu,
    dq: &mut CudaSlice<f32>,
    dk: &mut CudaSlice<f32>,
    dv: &mut CudaSlice<f32>,
    ds: &mut CudaSlice<f32>,
    dout: &CudaSlice<f32>,
    probs: &CudaSlice<f32>,
    q: &CudaSlice<f32>,
    k: &CudaSlice<f32>,
    v: &CudaSlice<f32>,
    a: &TrainDims,
) -> Result<()> {
    let op = "attention_backward";
    let dims = train_dims(op, a)?;
    let TrainDims {
        rows,
        t,
        s,
        h,
        kv_h,
        dh,
        ..
    } = *a;
    let (qn, kn, pn) = (rows * t * h * dh, rows * s * kv_h * dh, rows * h * t * s);
    check_len(op, "dq", dq.len(), qn)?;
    check_len(op, "dk", dk.len(), kn)?;
    check_len(op, "dv", dv.len(), kn)?;
    check_len(op, "ds", ds.len(), pn)?;
    check_len(op, "dout", dout.len(), qn)?;
    check_len(op, "probs", probs.len(), pn)?;
    check_len(op, "q", q.len(), qn)?;
    check_len(op, "k", k.len(), kn)?;
    check_len(op, "v", v.len(), kn)?;
    if qn == 0 || kn == 0 {
        return Ok(());
    }
    let causal = a.causal as i32;
    let f = gpu.function(&ATTENTION, "attention_backward_dq_f32")?;
    {
        let mut b = gpu.stream().launch_builder(&f);
        b.arg(&mut *dq)
            .arg(&mut *ds)
            .arg(dout)
            .arg(probs)
            .arg(k)
            .arg(v);
        for d in &dims {
            b.arg(d);
        }
        b.arg(&causal).arg(&a.scale);
        let cfg = grid(op, rows * h * t, 128, 0)?;
        // SAFETY: lengths checked above.
        unsafe { b.launch(cfg) }?;
    }
    let f = gpu.function(&ATTENTION, "attention_backward_dkv_f32")?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(dk).arg(dv).arg(&*ds).arg(probs).arg(q).arg(dout);
    for d in &dims {
        b.arg(d);
    }
    b.arg(&causal);
    let cfg = grid(op, rows * kv_h * s, row_threads(dh), 0)?;
    // SAFETY: lengths checked above; runs after the first kernel on the same stream.
    unsafe { b.launch(cfg) }?;
    Ok(())
}
