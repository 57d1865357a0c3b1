//! LayerNorm forward/backward (`kernels/layernorm.cu`), mirrors `dsum_core::ops::layernorm`
//! (`layernorm_forward_train`, `layernorm_backward`). The CPU's per-row `(mean, rstd)` pairs are
//! two buffers here, `mean[R]` and `rstd[R]`.

use cudarc::driver::{CudaSlice, PushKernelArg};

use crate::error::{check_i32, check_len, Result};
use crate::gpu::Gpu;
use crate::launch::per_row;
use crate::reduce::sum_rows_acc;
use crate::sources::LAYERNORM;

/// out[R,C] = (inp - mean) / sqrt(var + eps) * weight + bias; fills mean[R] and rstd[R] when
/// given (both are needed by [`layernorm_backward`]).
pub fn layernorm_forward(
    gpu: &Gpu,
    out: &mut CudaSlice<f32>,
    mean: Option<&mut CudaSlice<f32>>,
    rstd: Option<&mut CudaSlice<f32>>,
    inp: &CudaSlice<f32>,
    weight: &CudaSlice<f32>,
    bias: &CudaSlice<f32>,
    rows: usize,
    c: usize,
    eps: f32,
) -> Result<()> {
    let op = "layernorm_forward";
    check_len(op, "out", out.len(), rows * c)?;
    check_len(op, "inp", inp.len(), rows * c)?;
    check_len(op, "weight", weight.len(), c)?;
    check_len(op, "bias", bias.len(), c)?;
    if let Some(m) = mean.as_deref() {
        check_len(op, "mean", m.len(), rows)?;
    }
    if let Some(s) = rstd.as_deref() {
        check_len(op, "rstd", s.len(), rows)?;
    }
    if rows == 0 || c == 0 {
        return Ok(());
    }
    let f = gpu.function(&LAYERNORM, "layernorm_forward_f32")?;
    let (r, ci) = (check_i32(op, "rows", rows)?, check_i32(op, "c", c)?);
    let null = 0u64;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(out);
    match mean {
        Some(m) => b.arg(m),
        None => b.arg(&null),
    };
    match rstd {
        Some(s) => b.arg(s),
        None => b.arg(&null),
    };
    b.arg(inp).arg(weight).arg(bias).arg(&r).arg(&ci).arg(&eps);
    // SAFETY: lengths checked above; the kernel reads/writes rows*c elements and rows statistics.
    unsafe { b.launch(per_row(rows, c)) }?;
    Ok(())
}

/// dinp += d/dinp (accumulates, as the CPU does). With `Some((dweight, dbias, scratch))`,
/// dweight[C] += Σ_r dout·x̂ and dbias[C] += Σ_r dout; `scratch` needs rows*c floats.
pub fn layernorm_backward(
    gpu: &Gpu,
    dinp: &mut CudaSlice<f32>,
    dweight_dbias: Option<(
        &mut CudaSlice<f32>,
        &mut CudaSlice<f32>,
        &mut CudaSlice<f32>,
    )>,
    dout: &CudaSlice<f32>,
    inp: &CudaSlice<f32>,
    mean: &CudaSlice<f32>,
    rstd: &CudaSlice<f32>,
    weight: &CudaSlice<f32>,
    rows: usize,
    c: usize,
) -> Result<()> {
    let op = "layernorm_backward";
    check_len(op, "dinp", dinp.len(), rows * c)?;
    check_len(op, "dout", dout.len(), rows * c)?;
    check_len(op, "inp", inp.len(), rows * c)?;
    check_len(op, "mean", mean.len(), rows)?;
    check_len(op, "rstd", rstd.len(), rows)?;
    check_len(op, "weight", weight.len(), c)?;
    let (dw, db, mut scratch) = match dweight_dbias {
        Some((dw, db, scratch)) => {
            check_len(op, "dweight", dw.len(), c)?;
            check_len(op, "dbias", db.len(), c)?;
            check_len(op, "scratch", scratch.len(), rows * c)?;
            (Some(dw), Some(db), Some(scratch))
        }
        None => (None, None, None),
    };
    if rows == 0 || c == 0 {
        return Ok(());
    }
    let f = gpu.function(&LAYERNORM, "layernorm_backward_f32")?;
    let (r, ci) = (check_i32(op, "rows", rows)?, check_i32(op, "c", c)?);
    let null = 0u64;
    {
        let mut b = gpu.stream().launch_builder(&f);
        b.arg(&mut *dinp);
        match scratch.as_deref_mut() {
            Some(s) => b.arg(s),
            None => b.arg(&null),
        };
        b.arg(dout)
            .arg(inp)
            .arg(mean)
            .arg(rstd)
            .arg(weight)
            .arg(&r)
            .arg(&ci);
        // SAFETY: lengths checked above.
        unsafe { b.launch(per_row(rows, c)) }?;
    }
    if let (Some(dw), Some(s)) = (dw, scratch.as_deref()) {
        sum_rows_acc(gpu, dw, s, rows, c)?;
    }
    // dbias is the column sum of dout itself: no per-row buffer needed.
    if let Some(db) = db {
        sum_rows_acc(gpu, db, dout, rows, c)?;
    }
    Ok(())
}
