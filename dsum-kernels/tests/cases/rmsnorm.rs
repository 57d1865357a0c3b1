//! rmsnorm.cu against dsum_core::ops::rmsnorm.

use dsum_core::ops::rmsnorm::{rmsnorm_backward, rmsnorm_forward_train};
use dsum_kernels::rmsnorm as k;
use dsum_kernels::tolerance::{check, F32};
use dsum_kernels::Gpu;

use super::{prop, rand_vec};
use crate::GpuTest;

pub const TESTS: &[GpuTest] = &[("rmsnorm_forward", forward), ("rmsnorm_backward", backward)];

fn shapes() -> impl proptest::strategy::Strategy<Value = (usize, usize, u64)> {
    (1usize..40, 1usize..1500, 0u64..1000)
}

fn forward(gpu: &Gpu) -> Result<(), String> {
    prop(shapes(), 24, |(rows, c, seed)| {
        let x = rand_vec(rows * c, seed);
        let w = rand_vec(c, seed + 1);
        let mut want = vec![0f32; rows * c];
        let want_rstd = rmsnorm_forward_train(&mut want, &x, &w, c, 1e-6);
        let e = |e: dsum_kernels::KernelError| e.to_string();
        let (dx, dw) = (gpu.upload(&x).map_err(e)?, gpu.upload(&w).map_err(e)?);
        let mut out = gpu.zeros::<f32>(rows * c).map_err(e)?;
        let mut rstd = gpu.zeros::<f32>(rows).map_err(e)?;
        k::rmsnorm_forward(gpu, &mut out, Some(&mut rstd), &dx, &dw, rows, c, 1e-6).map_err(e)?;
        check("out", &gpu.download(&out).map_err(e)?, &want, F32)?;
        check("rstd", &gpu.download(&rstd).map_err(e)?, &want_rstd, F32)
    })
}

fn backward(gpu: &Gpu) -> Result<(), String> {
    prop(shapes(), 24, |(rows, c, seed)| {
        let x = rand_vec(rows * c, seed);
        let w = rand_vec(c, seed + 1);
        let dy = rand_vec(rows * c, seed + 2);
        let dx0 = rand_vec(rows * c, seed + 3);
        let mut y = vec![0f32; rows * c];
        let rstd = rmsnorm_forward_train(&mut y, &x, &w, c, 1e-6);
        let (mut want_dx, mut want_dw) = (dx0.clone(), vec![0.5f32; c]);
        rmsnorm_backward(&mut want_dx, Some(&mut want_dw), &dy, &x, &rstd, &w, c);
        let e = |e: dsum_kernels::KernelError| e.to_string();
        let mut ddx = gpu.upload(&dx0).map_err(e)?;
        let mut ddw = gpu.upload(&vec![0.5f32; c]).map_err(e)?;
        let mut scratch = gpu.zeros::<f32>(rows * c).map_err(e)?;
        let (gx, gw, gdy, gr) = (
            gpu.upload(&x).map_err(e)?,
            gpu.upload(&w).map_err(e)?,
            gpu.upload(&dy).map_err(e)?,
            gpu.upload(&rstd).map_err(e)?,
        );
        k::rmsnorm_backward(
            gpu,
            &mut ddx,
            Some((&mut ddw, &mut scratch)),
            &gdy,
            &gx,
            &gr,
            &gw,
            rows,
            c,
        )
        .map_err(e)?;
        check("dinp", &gpu.download(&ddx).map_err(e)?, &want_dx, F32)?;
        check("dweight", &gpu.download(&ddw).map_err(e)?, &want_dw, F32)
    })
}
