//! Element-wise in-place updates (`kernels/elementwise.cu`): the slice loops of the models
//! (`x.iter_mut().zip(&o).for_each(|(a, b)| *a += b)` in `models/llama.rs` and `models/bart.rs`).
//! Their reference is the plain loop, kept in `tests/cases/elementwise.rs`.

use cudarc::driver::{CudaSlice, PushKernelArg};

use crate::error::{check_i32, check_len, Result};
use crate::gpu::Gpu;
use crate::launch::per_element;
use crate::sources::ELEMENTWISE;

/// x[N] += y[N] (residual connections, gradient accumulation).
pub fn add_inplace(gpu: &Gpu, x: &mut CudaSlice<f32>, y: &CudaSlice<f32>, n: usize) -> Result<()> {
    binary(gpu, "add_inplace", "add_inplace_f32", x, y, n)
}

/// x[N] *= y[N].
pub fn mul_inplace(gpu: &Gpu, x: &mut CudaSlice<f32>, y: &CudaSlice<f32>, n: usize) -> Result<()> {
    binary(gpu, "mul_inplace", "mul_inplace_f32", x, y, n)
}

/// x[N] *= s.
pub fn scale_inplace(gpu: &Gpu, x: &mut CudaSlice<f32>, s: f32, n: usize) -> Result<()> {
    let op = "scale_inplace";
    check_len(op, "x", x.len(), n)?;
    let ni = check_i32(op, "n", n)?;
    if n == 0 {
        return Ok(());
    }
    let f = gpu.function(&ELEMENTWISE, "scale_inplace_f32")?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(x).arg(&s).arg(&ni);
    // SAFETY: length checked above; every thread checks i < n.
    unsafe { b.launch(per_element(n)) }?;
    Ok(())
}

fn binary(
    gpu: &Gpu,
    op: &'static str,
    kernel: &str,
    x: &mut CudaSlice<f32>,
    y: &CudaSlice<f32>,
    n: usize,
) -> Result<()> {
    check_len(op, "x", x.len(), n)?;
    check_len(op, "y", y.len(), n)?;
    let ni = check_i32(op, "n", n)?;
    if n == 0 {
        return Ok(());
    }
    let f = gpu.function(&ELEMENTWISE, kernel)?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(x).arg(y).arg(&ni);
    // SAFETY: lengths checked above; every thread checks i < n.
    unsafe { b.launch(per_element(n)) }?;
    Ok(())
}
