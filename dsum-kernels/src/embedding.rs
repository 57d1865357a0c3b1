//! Token embedding lookup and its backward (`kernels/embedding.cu`), mirrors
//! `dsum_core::ops::embedding`.
//!
//! Token ids live on the device, where the launcher cannot check them: **callers validate ids on
//! the host** (`id < vocab`, as the CPU `embedding_forward` does before it reads). The kernels
//! stay in bounds regardless: an out-of-range id gives a zero row in the forward pass and is
//! skipped in the backward pass, instead of the CPU's error.

use cudarc::driver::{CudaSlice, PushKernelArg};

use crate::error::{check_i32, check_len, Result};
use crate::gpu::Gpu;
use crate::launch::per_element;
use crate::sources::EMBEDDING;

/// out[N, C] = table[ids] · scale, with table [vocab, C] and ids [N].
pub fn embedding_forward(
    gpu: &Gpu,
    out: &mut CudaSlice<f32>,
    table: &CudaSlice<f32>,
    ids: &CudaSlice<u32>,
    n: usize,
    c: usize,
    vocab: usize,
    scale: f32,
) -> Result<()> {
    let op = "embedding_forward";
    check_len(op, "out", out.len(), n * c)?;
    check_len(op, "table", table.len(), vocab * c)?;
    check_len(op, "ids", ids.len(), n)?;
    let (ni, ci, vi) = (
        check_i32(op, "n", n)?,
        check_i32(op, "c", c)?,
        check_i32(op, "vocab", vocab)?,
    );
    if n == 0 || c == 0 {
        return Ok(());
    }
    let f = gpu.function(&EMBEDDING, "embedding_forward_f32")?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(out)
        .arg(table)
        .arg(ids)
        .arg(&ni)
        .arg(&ci)
        .arg(&vi)
        .arg(&scale);
    // SAFETY: lengths checked above; the kernel reads table rows only for ids < vocab.
    unsafe { b.launch(per_element(n * c)) }?;
    Ok(())
}

/// dtable[ids[i]] += dout[i] · scale (repeated ids add up, in token order: deterministic and
/// bit-identical to the CPU). dtable is [vocab, C], dout [N, C].
pub fn embedding_backward(
    gpu: &Gpu,
    dtable: &mut CudaSlice<f32>,
    dout: &CudaSlice<f32>,
    ids: &CudaSlice<u32>,
    n: usize,
    c: usize,
    vocab: usize,
    scale: f32,
) -> Result<()> {
    let op = "embedding_backward";
    check_len(op, "dtable", dtable.len(), vocab * c)?;
    check_len(op, "dout", dout.len(), n * c)?;
    check_len(op, "ids", ids.len(), n)?;
    let (ni, ci, vi) = (
        check_i32(op, "n", n)?,
        check_i32(op, "c", c)?,
        check_i32(op, "vocab", vocab)?,
    );
    if n == 0 || c == 0 {
        return Ok(());
    }
    let f = gpu.function(&EMBEDDING, "embedding_backward_f32")?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(dtable)
        .arg(dout)
        .arg(ids)
        .arg(&ni)
        .arg(&ci)
        .arg(&vi)
        .arg(&scale);
    // SAFETY: lengths checked above; one thread per column, rows written only for ids < vocab.
    unsafe { b.launch(per_element(c)) }?;
    Ok(())
}
