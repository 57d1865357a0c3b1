//! Rotary position embeddings (`kernels/rope.cu`), mirrors `dsum_core::ops::rope`: the CPU's
//! `rope_forward(x, inv_freq, pos)` on one head vector, applied here to every head of every token
//! at once. `inv_freq` comes from `dsum_core::ops::rope::inv_freq`, uploaded once.

use cudarc::driver::{CudaSlice, PushKernelArg};

use crate::error::{check_i32, check_len, KernelError, Result};
use crate::gpu::Gpu;
use crate::launch::per_element;
use crate::sources::ROPE;

/// x[T, H, dh] rotated in place: token t at position pos[t], pair (i, i + dh/2) by the angle
/// pos[t]·inv_freq[i]. `dh` must be even.
pub fn rope_forward(
    gpu: &Gpu,
    x: &mut CudaSlice<f32>,
    inv_freq: &CudaSlice<f32>,
    pos: &CudaSlice<i32>,
    n_tok: usize,
    heads: usize,
    dh: usize,
) -> Result<()> {
    launch(
        gpu,
        "rope_forward",
        "rope_forward_f32",
        x,
        inv_freq,
        pos,
        n_tok,
        heads,
        dh,
    )
}

/// Backward of [`rope_forward`], in place on dx[T, H, dh] (dout on entry, dinp on exit).
pub fn rope_backward(
    gpu: &Gpu,
    dx: &mut CudaSlice<f32>,
    inv_freq: &CudaSlice<f32>,
    pos: &CudaSlice<i32>,
    n_tok: usize,
    heads: usize,
    dh: usize,
) -> Result<()> {
    launch(
        gpu,
        "rope_backward",
        "rope_backward_f32",
        dx,
        inv_freq,
        pos,
        n_tok,
        heads,
        dh,
    )
}

fn launch(
    gpu: &Gpu,
    op: &'static str,
    kernel: &str,
    x: &mut CudaSlice<f32>,
    inv_freq: &CudaSlice<f32>,
    pos: &CudaSlice<i32>,
    n_tok: usize,
    heads: usize,
    dh: usize,
) -> Result<()> {
    if !dh.is_multiple_of(2) {
        return Err(KernelError::Shape {
            op,
            what: format!("head size {dh} is odd; rotate-half pairs need an even size"),
        });
    }
    check_len(op, "x", x.len(), n_tok * heads * dh)?;
    check_len(op, "inv_freq", inv_freq.len(), dh / 2)?;
    check_len(op, "pos", pos.len(), n_tok)?;
    let pairs = n_tok * heads * (dh / 2);
    if pairs == 0 {
        return Ok(());
    }
    let f = gpu.function(&ROPE, kernel)?;
    let t = check_i32(op, "n_tok", n_tok)?;
    let h = check_i32(op, "heads", heads)?;
    let d = check_i32(op, "dh", dh)?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(x).arg(inv_freq).arg(pos).arg(&t).arg(&h).arg(&d);
    // SAFETY: lengths checked above; one thread per pair, each bounds-checked in the kernel.
    unsafe { b.launch(per_element(pairs)) }?;
    Ok(())
}
