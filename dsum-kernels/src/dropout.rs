//! Inverted dropout (`kernels/dropout.cu`), mirrors `dsum_core::ops::dropout`: the same
//! (seed, flat index) hash decides, so a seeded GPU run drops exactly the CPU's elements.

use cudarc::driver::{CudaSlice, PushKernelArg};

use crate::error::{check_len, KernelError, Result};
use crate::gpu::Gpu;
use crate::launch::per_element;
use crate::sources::DROPOUT;

/// out[n] = dropout(inp) with probability `p` under `seed`, kept values scaled by 1/(1-p)
/// (`dropout_inplace`, out of place); `p <= 0` copies.
pub fn dropout_forward(
    gpu: &Gpu,
    out: &mut CudaSlice<f32>,
    inp: &CudaSlice<f32>,
    p: f32,
    seed: u64,
    n: usize,
) -> Result<()> {
    check_len("dropout_forward", "out", out.len(), n)?;
    check_len("dropout_forward", "inp", inp.len(), n)?;
    launch(gpu, "dropout_forward_f32", out, inp, p, seed, n)
}

/// dinp[n] += dropout(dout) with the forward's mask and scale: the backward of
/// [`dropout_forward`] under the same `p` and `seed`, accumulated into the input's gradient.
pub fn dropout_backward_acc(
    gpu: &Gpu,
    dinp: &mut CudaSlice<f32>,
    dout: &CudaSlice<f32>,
    p: f32,
    seed: u64,
    n: usize,
) -> Result<()> {
    check_len("dropout_backward_acc", "dinp", dinp.len(), n)?;
    check_len("dropout_backward_acc", "dout", dout.len(), n)?;
    launch(gpu, "dropout_backward_acc_f32", dinp, dout, p, seed, n)
}

fn launch(
    gpu: &Gpu,
    kernel: &'static str,
    dst: &mut CudaSlice<f32>,
    src: &CudaSlice<f32>,
    p: f32,
    seed: u64,
    n: usize,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let ni = i32::try_from(n).map_err(|_| KernelError::Shape {
        op: kernel,
        what: format!("{n} elements, at most {} supported", i32::MAX),
    })?;
    let f = gpu.function(&DROPOUT, kernel)?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(dst).arg(src).arg(&seed).arg(&p).arg(&ni);
    // SAFETY: lengths checked by the callers; one thread per element, bounds-checked.
    unsafe { b.launch(per_element(n)) }?;
    Ok(())
}
