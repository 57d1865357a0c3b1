//! AdamW step (`kernels/adamw.cu`), mirrors `dsum_core::train::optim::AdamW::step` for one
//! parameter: the same f64 bias corrections and f32 per-element arithmetic in torch's order.

use cudarc::driver::{CudaSlice, PushKernelArg};

use crate::error::{check_len, KernelError, Result};
use crate::gpu::Gpu;
use crate::launch::per_element;
use crate::sources::ADAMW;

/// One update of param[n] with grad[n], moments m (`exp_avg`) and v (`exp_avg_sq`) in place.
/// `step` counts updates including this one (1 on the first call, as `AdamW::step` after its
/// increment). Pass `weight_decay = 0` for parameters that `optim::decays` exempts (biases,
/// norm weights).
pub fn adamw_step(
    gpu: &Gpu,
    param: &mut CudaSlice<f32>,
    grad: &CudaSlice<f32>,
    m: &mut CudaSlice<f32>,
    v: &mut CudaSlice<f32>,
    n: usize,
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    step: u64,
) -> Result<()> {
    let op = "adamw_step";
    check_len(op, "param", param.len(), n)?;
    check_len(op, "grad", grad.len(), n)?;
    check_len(op, "m", m.len(), n)?;
    check_len(op, "v", v.len(), n)?;
    if step == 0 {
        return Err(KernelError::Shape {
            op,
            what: "step counts from 1 (the bias corrections divide by 1 - beta^step)".into(),
        });
    }
    if n == 0 {
        return Ok(());
    }
    let ni = i32::try_from(n).map_err(|_| KernelError::Shape {
        op,
        what: format!("{n} elements, at most {} supported", i32::MAX),
    })?;
    // The scalars exactly as AdamW::step computes them (f64, then rounded to f32).
    let t = step as f64;
    let bc1 = 1.0 - beta1.powf(t);
    let bc2 = 1.0 - beta2.powf(t);
    let step_size = (lr / bc1) as f32;
    let bc2_sqrt = bc2.sqrt() as f32;
    let eps = eps as f32;
    let w1 = (1.0 - beta1) as f32;
    let (b2, w2) = (beta2 as f32, (1.0 - beta2) as f32);
    let shrink = if weight_decay != 0.0 {
        (1.0 - lr * weight_decay) as f32
    } else {
        1.0
    };
    let f = gpu.function(&ADAMW, "adamw_step_f32")?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(param).arg(grad).arg(m).arg(v).arg(&ni);
    b.arg(&step_size)
        .arg(&bc2_sqrt)
        .arg(&eps)
        .arg(&w1)
        .arg(&b2)
        .arg(&w2)
        .arg(&shrink);
    // SAFETY: lengths checked above; one thread per element, bounds-checked.
    unsafe { b.launch(per_element(n)) }?;
    Ok(())
}
