//! f32 <-> bf16 (`kernels/convert.cu`), as `half::bf16::from_f32` / `to_f32` do it: the inputs
//! of bf16 cuBLAS GEMMs. bf16 values travel as their `u16` bits.

use cudarc::driver::{CudaSlice, PushKernelArg};

use crate::error::{check_i32, check_len, Result};
use crate::gpu::Gpu;
use crate::launch::per_element;
use crate::sources::CONVERT;

/// out[..n] = bf16(inp[..n]), round to nearest even.
pub fn to_bf16(gpu: &Gpu, out: &mut CudaSlice<u16>, inp: &CudaSlice<f32>, n: usize) -> Result<()> {
    check_len("to_bf16", "out", out.len(), n)?;
    check_len("to_bf16", "inp", inp.len(), n)?;
    let ni = check_i32("to_bf16", "n", n)?;
    if n == 0 {
        return Ok(());
    }
    let f = gpu.function(&CONVERT, "to_bf16_f32")?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(out).arg(inp).arg(&ni);
    // SAFETY: lengths checked above; one thread per element, each checks i < n.
    unsafe { b.launch(per_element(n)) }?;
    Ok(())
}

/// out[..n] = f32(inp[..n]) (exact).
pub fn from_bf16(
    gpu: &Gpu,
    out: &mut CudaSlice<f32>,
    inp: &CudaSlice<u16>,
    n: usize,
) -> Result<()> {
    check_len("from_bf16", "out", out.len(), n)?;
    check_len("from_bf16", "inp", inp.len(), n)?;
    let ni = check_i32("from_bf16", "n", n)?;
    if n == 0 {
        return Ok(());
    }
    let f = gpu.function(&CONVERT, "from_bf16_f32")?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(out).arg(inp).arg(&ni);
    // SAFETY: lengths checked above; one thread per element, each checks i < n.
    unsafe { b.launch(per_element(n)) }?;
    Ok(())
}
