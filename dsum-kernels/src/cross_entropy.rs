//! Token cross-entropy (`kernels/cross_entropy.cu`), mirrors `dsum_core::ops::cross_entropy`:
//! per-row losses, the fused backward that overwrites the logits with their gradient, and the
//! deterministic total `(Σ loss, rows counted)` the CPU functions return.

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use crate::error::{check_len, KernelError, Result};
use crate::gpu::Gpu;
use crate::launch::per_row;
use crate::sources::CROSS_ENTROPY;

/// Label value that is skipped (PyTorch's `ignore_index`), as in dsum-core.
pub const IGNORE_INDEX: i64 = -100;

/// Length of the statistics buffer of [`cross_entropy_sum`].
pub const STATS_LEN: usize = 4;

fn dims(op: &'static str, rows: usize, v: usize) -> Result<(i32, i32)> {
    let int = |name: &str, x: usize| {
        i32::try_from(x).map_err(|_| KernelError::Shape {
            op,
            what: format!("{name} = {x} does not fit a 32-bit int"),
        })
    };
    Ok((int("rows", rows)?, int("v", v)?))
}

/// losses[N] = logsumexp(logits row) - logits[target] for logits [N,V]; 0 where the target is
/// [`IGNORE_INDEX`], NaN where it is outside 0..V (reported by [`cross_entropy_sum`]).
pub fn cross_entropy_forward(
    gpu: &Gpu,
    losses: &mut CudaSlice<f32>,
    logits: &CudaSlice<f32>,
    targets: &CudaSlice<i64>,
    rows: usize,
    v: usize,
) -> Result<()> {
    let op = "cross_entropy_forward";
    check_len(op, "losses", losses.len(), rows)?;
    check_len(op, "logits", logits.len(), rows * v)?;
    check_len(op, "targets", targets.len(), rows)?;
    if rows == 0 {
        return Ok(());
    }
    let (r, vi) = dims(op, rows, v)?;
    let f = gpu.function(&CROSS_ENTROPY, "cross_entropy_forward_f32")?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(losses).arg(logits).arg(targets).arg(&r).arg(&vi);
    // SAFETY: lengths checked above; a target is used as an index only when inside 0..V.
    unsafe { b.launch(per_row(rows, v)) }?;
    Ok(())
}

/// Fused forward and backward (`cross_entropy_backward` of dsum-core): losses as in
/// [`cross_entropy_forward`], and the logits are overwritten by
/// d(scale · Σ loss)/dlogits = scale · (softmax - onehot) on counted rows, 0 on ignored rows
/// (NaN on rows whose label is outside 0..V).
pub fn cross_entropy_backward(
    gpu: &Gpu,
    logits: &mut CudaSlice<f32>,
    losses: &mut CudaSlice<f32>,
    targets: &CudaSlice<i64>,
    rows: usize,
    v: usize,
    scale: f32,
) -> Result<()> {
    let op = "cross_entropy_backward";
    check_len(op, "logits", logits.len(), rows * v)?;
    check_len(op, "losses", losses.len(), rows)?;
    check_len(op, "targets", targets.len(), rows)?;
    if rows == 0 {
        return Ok(());
    }
    let (r, vi) = dims(op, rows, v)?;
    let f = gpu.function(&CROSS_ENTROPY, "cross_entropy_backward_f32")?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(logits)
        .arg(losses)
        .arg(targets)
        .arg(&r)
        .arg(&vi)
        .arg(&scale);
    // SAFETY: lengths checked above; a target is used as an index only when inside 0..V.
    unsafe { b.launch(per_row(rows, v)) }?;
    Ok(())
}

/// stats[4] <- (Σ losses of the counted rows in f64, rows counted, first row whose label is
/// outside 0..V or -1, its label), on the device and deterministic (one block, fixed order).
/// [`cross_entropy_total`] reads it back as the CPU's result.
pub fn cross_entropy_sum(
    gpu: &Gpu,
    stats: &mut CudaSlice<f64>,
    losses: &CudaSlice<f32>,
    targets: &CudaSlice<i64>,
    rows: usize,
    v: usize,
) -> Result<()> {
    let op = "cross_entropy_sum";
    check_len(op, "stats", stats.len(), STATS_LEN)?;
    check_len(op, "losses", losses.len(), rows)?;
    check_len(op, "targets", targets.len(), rows)?;
    let (r, vi) = dims(op, rows, v)?;
    let f = gpu.function(&CROSS_ENTROPY, "cross_entropy_sum_f32")?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(stats).arg(losses).arg(targets).arg(&r).arg(&vi);
    let cfg = LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (1024, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: lengths checked above; one block writes stats[0..4].
    unsafe { b.launch(cfg) }?;
    Ok(())
}

/// Downloads the statistics of [`cross_entropy_sum`] (waits for the stream): `(Σ loss, rows
/// counted)` as dsum-core returns them, or its error for a label outside the vocabulary.
pub fn cross_entropy_total(gpu: &Gpu, stats: &CudaSlice<f64>, v: usize) -> Result<(f64, usize)> {
    check_len("cross_entropy_total", "stats", stats.len(), STATS_LEN)?;
    let s = gpu.download(stats)?;
    if s[2] >= 0.0 {
        return Err(KernelError::Shape {
            op: "cross_entropy",
            what: format!("label {} is outside the vocabulary ({v})", s[3] as i64),
        });
    }
    Ok((s[0], s[1] as usize))
}
