//! RMSNorm forward/backward (`kernels/rmsnorm.cu`), mirrors `dsum_core::ops::rmsnorm`.

use cudarc::driver::{CudaSlice, PushKernelArg};

use crate::error::{check_len, Result};
use crate::gpu::Gpu;
use crate::launch::per_row;
use crate::reduce::sum_rows_acc;
use crate::sources::RMSNORM;

/// out[R,C] = RMSNorm(inp) * weight; fills rstd[R] (1/rms) when given.
pub fn rmsnorm_forward(
    gpu: &Gpu,
    out: &mut CudaSlice<f32>,
    rstd: Option<&mut CudaSlice<f32>>,
    inp: &CudaSlice<f32>,
    weight: &CudaSlice<f32>,
    rows: usize,
    c: usize,
    eps: f32,
) -> Result<()> {
    check_len("rmsnorm_forward", "out", out.len(), rows * c)?;
    check_len("rmsnorm_forward", "inp", inp.len(), rows * c)?;
    check_len("rmsnorm_forward", "weight", weight.len(), c)?;
    if rows == 0 || c == 0 {
        return Ok(());
    }
    let f = gpu.function(&RMSNORM, "rmsnorm_forward_f32")?;
    let (r, ci) = (rows as i32, c as i32);
    let null = 0u64;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(out);
    match rstd {
        Some(s) => {
            check_len("rmsnorm_forward", "rstd", s.len(), rows)?;
            b.arg(s)
        }
        None => b.arg(&null),
    };
    b.arg(inp).arg(weight).arg(&r).arg(&ci).arg(&eps);
    // SAFETY: lengths checked above; the kernel reads/writes rows*c elements.
    unsafe { b.launch(per_row(rows, c)) }?;
    Ok(())
}

/// dinp += d/dinp; dweight += d/dweight when given (`scratch` needs rows*c floats then).
pub fn rmsnorm_backward(
    gpu: &Gpu,
    dinp: &mut CudaSlice<f32>,
    dweight: Option<(&mut CudaSlice<f32>, &mut CudaSlice<f32>)>,
    dout: &CudaSlice<f32>,
    inp: &CudaSlice<f32>,
    rstd: &CudaSlice<f32>,
    weight: &CudaSlice<f32>,
    rows: usize,
    c: usize,
) -> Result<()> {
    let op = "rmsnorm_backward";
    check_len(op, "dinp", dinp.len(), rows * c)?;
    check_len(op, "dout", dout.len(), rows * c)?;
    check_len(op, "inp", inp.len(), rows * c)?;
    check_len(op, "rstd", rstd.len(), rows)?;
    check_len(op, "weight", weight.len(), c)?;
    if rows == 0 || c == 0 {
        return Ok(());
    }
    let f = gpu.function(&RMSNORM, "rmsnorm_backward_f32")?;
    let (r, ci) = (rows as i32, c as i32);
    let null = 0u64;
    let (dw, mut scratch) = match dweight {
        Some((dw, scratch)) => {
            check_len(op, "dweight", dw.len(), c)?;
            check_len(op, "scratch", scratch.len(), rows * c)?;
            (Some(dw), Some(scratch))
        }
        None => (None, None),
    };
    {
        let mut b = gpu.stream().launch_builder(&f);
        b.arg(&mut *dinp);
        match scratch.as_deref_mut() {
            Some(s) => b.arg(s),
            None => b.arg(&null),
        };
        b.arg(dout).arg(inp).arg(rstd).arg(weight).arg(&r).arg(&ci);
        // SAFETY: lengths checked above.
        unsafe { b.launch(per_row(rows, c)) }?;
    }
    if let (Some(dw), Some(s)) = (dw, scratch.as_deref()) {
        sum_rows_acc(gpu, dw, s, rows, c)?;
    }
    Ok(())
}
