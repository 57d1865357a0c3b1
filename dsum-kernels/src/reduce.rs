//! Column sums (`kernels/reduce.cu`): the deterministic `+=` over rows of the CPU backward passes.

use cudarc::driver::{CudaSlice, PushKernelArg};

use crate::error::{check_len, Result};
use crate::gpu::Gpu;
use crate::launch::per_element;
use crate::sources::REDUCE;

/// out[C] += Σ_r inp[r, :].
pub fn sum_rows_acc(
    gpu: &Gpu,
    out: &mut CudaSlice<f32>,
    inp: &CudaSlice<f32>,
    rows: usize,
    c: usize,
) -> Result<()> {
    check_len("sum_rows_acc", "out", out.len(), c)?;
    check_len("sum_rows_acc", "inp", inp.len(), rows * c)?;
    if c == 0 {
        return Ok(());
    }
    let f = gpu.function(&REDUCE, "sum_rows_acc_f32")?;
    let (r, ci) = (rows as i32, c as i32);
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(out).arg(inp).arg(&r).arg(&ci);
    // SAFETY: lengths checked above.
    unsafe { b.launch(per_element(c)) }?;
    Ok(())
}
