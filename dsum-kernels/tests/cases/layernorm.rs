//! layernorm.cu against dsum_core::ops::layernorm.

use dsum_core::ops::layernorm::{layernorm_backward, layernorm_forward_train};
use dsum_kernels::layernorm as k;
use dsum_kernels::tolerance::{check, F32};
use dsum_kernels::Gpu;
use proptest::prelude::*;

use super::{prop, rand_vec};
use crate::GpuTest;

pub const TESTS: &[GpuTest] = &[
    ("layernorm_forward", forward),
    ("layernorm_backward", backward),
];

/// (rows, c, seed); c covers 1, one warp ± 1, one block ± 1 and more than one full block.
fn shapes() -> impl Strategy<Value = (usize, usize, u64)> {
    let c = prop_oneof![
        prop::sample::select(vec![1usize, 2, 31, 32, 33, 257, 1023, 1024, 1025, 2049]),
        1usize..1500,
    ];
    (1usize..40, c, 0u64..1000)
}

/// Inputs with a non-zero mean, so the variance is taken around something.
fn input(n: usize, seed: u64) -> Vec<f32> {
    rand_vec(n, seed).iter().map(|v| 2.0 * v + 0.5).collect()
}

fn forward(gpu: &Gpu) -> Result<(), String> {
    prop(shapes(), 24, |(rows, c, seed)| {
        let x = input(rows * c, seed);
        let w = rand_vec(c, seed + 1);
        let bias = rand_vec(c, seed + 2);
        let mut want = vec![0f32; rows * c];
        let stats = layernorm_forward_train(&mut want, &x, &w, &bias, c, 1e-5);
        let want_mean: Vec<f32> = stats.iter().map(|s| s.0).collect();
        let want_rstd: Vec<f32> = stats.iter().map(|s| s.1).collect();
        let e = |e: dsum_kernels::KernelError| e.to_string();
        let (gx, gw, gb) = (
            gpu.upload(&x).map_err(e)?,
            gpu.upload(&w).map_err(e)?,
            gpu.upload(&bias).map_err(e)?,
        );
        let mut out = gpu.zeros::<f32>(rows * c).map_err(e)?;
        let mut mean = gpu.zeros::<f32>(rows).map_err(e)?;
        let mut rstd = gpu.zeros::<f32>(rows).map_err(e)?;
        k::layernorm_forward(
            gpu,
            &mut out,
            Some(&mut mean),
            Some(&mut rstd),
            &gx,
            &gw,
            &gb,
            rows,
            c,
            1e-5,
        )
        .map_err(e)?;
        check("out", &gpu.download(&out).map_err(e)?, &want, F32)?;
        check("mean", &gpu.download(&mean).map_err(e)?, &want_mean, F32)?;
        check("rstd", &gpu.download(&rstd).map_err(e)?, &want_rstd, F32)?;
        // Without the statistics: same output.
        let mut out2 = gpu.zeros::<f32>(rows * c).map_err(e)?;
        k::layernorm_forward(gpu, &mut out2, None, None, &gx, &gw, &gb, rows, c, 1e-5)
            .map_err(e)?;
        check(
            "out (no stats)",
            &gpu.download(&out2).map_err(e)?,
            &want,
            F32,
        )
    })
}

fn backward(gpu: &Gpu) -> Result<(), String> {
    prop(shapes(), 24, |(rows, c, seed)| {
        let x = input(rows * c, seed);
        let w = rand_vec(c, seed + 1);
        let bias = rand_vec(c, seed + 2);
        let dy = rand_vec(rows * c, seed + 3);
        let dx0 = rand_vec(rows * c, seed + 4);
        let mut y = vec![0f32; rows * c];
        let stats = layernorm_forward_train(&mut y, &x, &w, &bias, c, 1e-5);
        let mean: Vec<f32> = stats.iter().map(|s| s.0).collect();
        let rstd: Vec<f32> = stats.iter().map(|s| s.1).collect();
        // dinp, dweight and dbias all accumulate: start from non-zero values.
        let (mut want_dx, mut want_dw, mut want_db) =
            (dx0.clone(), vec![0.5f32; c], vec![-0.25f32; c]);
        layernorm_backward(
            &mut want_dx,
            Some(&mut want_dw),
            Some(&mut want_db),
            &dy,
            &x,
            &stats,
            &w,
            c,
        );
        let e = |e: dsum_kernels::KernelError| e.to_string();
        let mut ddx = gpu.upload(&dx0).map_err(e)?;
        let mut ddw = gpu.upload(&vec![0.5f32; c]).map_err(e)?;
        let mut ddb = gpu.upload(&vec![-0.25f32; c]).map_err(e)?;
        let mut scratch = gpu.zeros::<f32>(rows * c).map_err(e)?;
        let (gx, gw, gdy, gm, gr) = (
            gpu.upload(&x).map_err(e)?,
            gpu.upload(&w).map_err(e)?,
            gpu.upload(&dy).map_err(e)?,
            gpu.upload(&mean).map_err(e)?,
            gpu.upload(&rstd).map_err(e)?,
        );
        k::layernorm_backward(
            gpu,
            &mut ddx,
            Some((&mut ddw, &mut ddb, &mut scratch)),
            &gdy,
            &gx,
            &gm,
            &gr,
            &gw,
            rows,
            c,
        )
        .map_err(e)?;
        check("dinp", &gpu.download(&ddx).map_err(e)?, &want_dx, F32)?;
        check("dweight", &gpu.download(&ddw).map_err(e)?, &want_dw, F32)?;
        check("dbias", &gpu.download(&ddb).map_err(e)?, &want_db, F32)?;
        // Without parameter gradients: dinp accumulates once more, by the same amount.
        let mut want_dx2 = want_dx.clone();
        layernorm_backward(&mut want_dx2, None, None, &dy, &x, &stats, &w, c);
        k::layernorm_backward(gpu, &mut ddx, None, &gdy, &gx, &gm, &gr, &gw, rows, c).map_err(e)?;
        check(
            "dinp (no dw/db)",
            &gpu.download(&ddx).map_err(e)?,
            &want_dx2,
            F32,
        )
    })
}
