//! Global gradient-norm clipping (`kernels/grad_norm.cu`), mirrors `dsum_core::train::clip`
//! (`torch.nn.utils.clip_grad_norm_`): the L2 norm of all gradients together, and every
//! gradient scaled by `min(1, max_norm / (norm + 1e-6))` when the norm is finite.

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use crate::elementwise::scale_inplace;
use crate::error::{check_len, KernelError, Result};
use crate::gpu::Gpu;
use crate::sources::GRAD_NORM;

/// Threads per block of both reduction passes (`GRAD_NORM_THREADS` in the kernel).
const THREADS: usize = 256;
/// Blocks per tensor in pass 1; larger tensors are covered by a grid-stride loop.
const MAX_BLOCKS: usize = 1024;

fn blocks(n: usize) -> usize {
    n.div_ceil(THREADS).min(MAX_BLOCKS)
}

/// The `scratch` length [`global_grad_norm`] and [`clip_grad_norm`] need for gradients of
/// these lengths: one partial per pass-1 block, plus the slot of the total.
pub fn grad_norm_scratch_len(lens: &[usize]) -> usize {
    lens.iter().map(|&n| blocks(n)).sum::<usize>() + 1
}

/// L2 norm of all `grads` together (`clip::grad_norm`). Deterministic: the same inputs give
/// the same bits on every run. Waits for the GPU (the norm comes back to the host).
pub fn global_grad_norm(
    gpu: &Gpu,
    grads: &[&CudaSlice<f32>],
    scratch: &mut CudaSlice<f32>,
) -> Result<f32> {
    let op = "global_grad_norm";
    let lens: Vec<usize> = grads.iter().map(|g| g.len()).collect();
    let count = grad_norm_scratch_len(&lens) - 1;
    check_len(op, "scratch", scratch.len(), count + 1)?;
    let ints = |v: usize| {
        i32::try_from(v).map_err(|_| KernelError::Shape {
            op,
            what: format!("{v} elements, at most {} supported", i32::MAX),
        })
    };
    for &n in &lens {
        ints(n)?;
    }
    let count_i = ints(count)?;
    let partial = gpu.function(&GRAD_NORM, "grad_norm_partial_f32")?;
    let mut offset = 0;
    for g in grads {
        let (n, nb) = (g.len(), blocks(g.len()));
        if nb == 0 {
            continue;
        }
        let ni = n as i32;
        let mut dst = scratch.slice_mut(offset..offset + nb);
        let mut b = gpu.stream().launch_builder(&partial);
        b.arg(&mut dst).arg(*g).arg(&ni);
        let cfg = LaunchConfig {
            grid_dim: (nb as u32, 1, 1),
            block_dim: (THREADS as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: `dst` holds one slot per block; the kernel reads g[0..n] only.
        unsafe { b.launch(cfg) }?;
        offset += nb;
    }
    let total = gpu.function(&GRAD_NORM, "grad_norm_total_f32")?;
    let mut b = gpu.stream().launch_builder(&total);
    b.arg(&mut *scratch).arg(&count_i);
    let cfg = LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (THREADS as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: scratch holds count + 1 floats (checked above); one block of THREADS threads,
    // as the kernel's reduction assumes.
    unsafe { b.launch(cfg) }?;
    let mut norm = [0f32];
    gpu.stream()
        .memcpy_dtoh(&scratch.slice(count..count + 1), &mut norm)?;
    gpu.synchronize()?;
    Ok(norm[0])
}

/// Clip all `grads` in place to a total norm of `max_norm` (`clip::clip_grad_norm`); returns
/// the norm before clipping. A NaN or infinite norm leaves the gradients alone so the caller
/// can stop.
pub fn clip_grad_norm(
    gpu: &Gpu,
    grads: &mut [&mut CudaSlice<f32>],
    max_norm: f32,
    scratch: &mut CudaSlice<f32>,
) -> Result<f32> {
    let total = {
        let views: Vec<&CudaSlice<f32>> = grads.iter().map(|g| &**g).collect();
        global_grad_norm(gpu, &views, scratch)?
    };
    let coef = (max_norm / (total + 1e-6)).min(1.0);
    // coef == 1 multiplies by one: nothing to launch.
    if total.is_finite() && coef != 1.0 {
        for g in grads.iter_mut() {
            let n = g.len();
            scale_inplace(gpu, g, coef, n)?;
        }
    }
    Ok(total)
}
