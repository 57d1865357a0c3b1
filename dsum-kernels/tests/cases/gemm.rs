//! gemm.rs (cuBLAS) and gemm.cu against dsum_core::ops::matmul.

use dsum_core::ops::matmul::{linear_backward, linear_forward, matmul_acc};
use dsum_kernels::gemm::{self as k, Math};
use dsum_kernels::tolerance::{check, Tol, BF16, F32};
use dsum_kernels::{Gpu, KernelError};
use half::bf16;
use proptest::prelude::*;

use super::{prop, rand_vec};
use crate::GpuTest;

pub const TESTS: &[GpuTest] = &[
    ("linear_forward_f32", forward_f32),
    ("linear_forward_tf32", forward_tf32),
    ("matmul", matmul),
    ("linear_backward_f32", backward_f32),
    ("linear_backward_tf32", backward_tf32),
    ("linear_forward_bf16", forward_bf16),
    ("matmul_bf16", matmul_bf16),
    ("gemm_rejects_short_buffers", rejects_short_buffers),
];

fn e(e: KernelError) -> String {
    e.to_string()
}

/// (m, k, n, seed): odd sizes, sizes past cuBLAS tile edges, and k = 0 (an empty product).
/// TF32 rounds inputs to 10 mantissa bits: its cases keep k small enough that the rounding
/// error of a sum stays well inside the BF16 tolerance even where the sum itself is near 0.
fn shapes(max_k: usize) -> impl Strategy<Value = (usize, usize, usize, u64)> {
    (1usize..70, 0usize..max_k, 1usize..150, 0u64..1000)
}

fn forward(gpu: &Gpu, math: Math, max_k: usize, tol: Tol) -> Result<(), String> {
    prop(
        (shapes(max_k), any::<bool>()),
        32,
        |((m, kk, n, seed), with_bias)| {
            let x = rand_vec(m * kk, seed);
            let w = rand_vec(n * kk, seed + 1);
            let b = rand_vec(n, seed + 2);
            let mut want = vec![0f32; m * n];
            linear_forward(&mut want, &x, &w, with_bias.then_some(&b[..]), m, kk, n);
            let (gx, gw, gb) = (
                gpu.upload(&x).map_err(e)?,
                gpu.upload(&w).map_err(e)?,
                gpu.upload(&b).map_err(e)?,
            );
            // Garbage in y: linear_forward overwrites.
            let mut y = gpu.upload(&vec![f32::NAN; m * n]).map_err(e)?;
            k::linear_forward(
                gpu,
                &mut y,
                &gx,
                &gw,
                with_bias.then_some(&gb),
                m,
                kk,
                n,
                math,
            )
            .map_err(e)?;
            check("y", &gpu.download(&y).map_err(e)?, &want, tol)
        },
    )
}

fn forward_f32(gpu: &Gpu) -> Result<(), String> {
    forward(gpu, Math::F32, 600, F32)
}

fn forward_tf32(gpu: &Gpu) -> Result<(), String> {
    forward(gpu, Math::Tf32, 64, BF16)
}

/// Every transpose combination and alpha/beta against `matmul_acc` on strided views.
fn matmul(gpu: &Gpu) -> Result<(), String> {
    let cases = (
        shapes(300),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just(1.0f32), Just(-0.5f32)],
        prop_oneof![Just(0.0f32), Just(1.0f32), Just(0.25f32)],
    );
    prop(cases, 48, |((m, kk, n, seed), ta, tb, alpha, beta)| {
        let a = rand_vec(m * kk, seed);
        let b = rand_vec(kk * n, seed + 1);
        let c0 = rand_vec(m * n, seed + 2);
        // A is [m,k] or, transposed, stored [k,m]; likewise B [k,n] or [n,k].
        let sa = if ta { (1, m) } else { (kk, 1) };
        let sb = if tb { (1, kk) } else { (n, 1) };
        let mut prod = vec![0f32; m * n];
        matmul_acc(&mut prod, (n, 1), &a, sa, &b, sb, m, kk, n);
        let want: Vec<f32> = prod
            .iter()
            .zip(&c0)
            .map(|(p, c)| alpha * p + beta * c)
            .collect();
        let (ga, gb) = (gpu.upload(&a).map_err(e)?, gpu.upload(&b).map_err(e)?);
        let mut gc = gpu.upload(&c0).map_err(e)?;
        k::matmul(
            gpu,
            &mut gc,
            &ga,
            &gb,
            m,
            n,
            kk,
            ta,
            tb,
            alpha,
            beta,
            Math::F32,
        )
        .map_err(e)?;
        check("c", &gpu.download(&gc).map_err(e)?, &want, F32)
    })
}

fn backward(gpu: &Gpu, math: Math, max_k: usize, tol: Tol) -> Result<(), String> {
    let cases = (shapes(max_k), any::<bool>(), any::<bool>(), any::<bool>());
    prop(
        cases,
        32,
        |((m, kk, n, seed), with_dx, with_dw, with_db)| {
            let x = rand_vec(m * kk, seed);
            let w = rand_vec(n * kk, seed + 1);
            let dy = rand_vec(m * n, seed + 2);
            let (dx0, dw0, db0) = (
                rand_vec(m * kk, seed + 3),
                rand_vec(n * kk, seed + 4),
                rand_vec(n, seed + 5),
            );
            let (mut dx, mut dw, mut db) = (dx0.clone(), dw0.clone(), db0.clone());
            linear_backward(
                with_dx.then_some(&mut dx[..]),
                with_dw.then_some(&mut dw[..]),
                with_db.then_some(&mut db[..]),
                &dy,
                &x,
                &w,
                m,
                kk,
                n,
            );
            let up = |v: &[f32]| gpu.upload(v).map_err(e);
            let (gx, gw, gdy) = (up(&x)?, up(&w)?, up(&dy)?);
            let (mut gdx, mut gdw, mut gdb) = (up(&dx0)?, up(&dw0)?, up(&db0)?);
            k::linear_backward(
                gpu,
                with_dx.then_some(&mut gdx),
                with_dw.then_some(&mut gdw),
                with_db.then_some(&mut gdb),
                &gdy,
                &gx,
                &gw,
                m,
                kk,
                n,
                math,
            )
            .map_err(e)?;
            check("dx", &gpu.download(&gdx).map_err(e)?, &dx, tol)?;
            check("dw", &gpu.download(&gdw).map_err(e)?, &dw, tol)?;
            // dbias is a column sum, never a tensor-core product.
            check("dbias", &gpu.download(&gdb).map_err(e)?, &db, F32)
        },
    )
}

fn backward_f32(gpu: &Gpu) -> Result<(), String> {
    backward(gpu, Math::F32, 600, F32)
}

fn backward_tf32(gpu: &Gpu) -> Result<(), String> {
    backward(gpu, Math::Tf32, 64, BF16)
}

/// bf16 bits of each value, and the f32 values those bits hold.
fn to_bf16(v: &[f32]) -> (Vec<u16>, Vec<f32>) {
    v.iter()
        .map(|&x| {
            let h = bf16::from_f32(x);
            (h.to_bits(), h.to_f32())
        })
        .unzip()
}

/// Products of bf16 values are exact in f32, so the f32 reference on the rounded operands
/// differs only by summation order (and tensor-core accumulation).
fn forward_bf16(gpu: &Gpu) -> Result<(), String> {
    prop(shapes(600), 32, |(m, kk, n, seed)| {
        let (xb, x) = to_bf16(&rand_vec(m * kk, seed));
        let (wb, w) = to_bf16(&rand_vec(n * kk, seed + 1));
        let mut want = vec![0f32; m * n];
        linear_forward(&mut want, &x, &w, None, m, kk, n);
        let (gx, gw) = (gpu.upload(&xb).map_err(e)?, gpu.upload(&wb).map_err(e)?);
        let mut y = gpu.upload(&vec![f32::NAN; m * n]).map_err(e)?;
        k::linear_forward_bf16(gpu, &mut y, &gx, &gw, m, kk, n).map_err(e)?;
        check("y", &gpu.download(&y).map_err(e)?, &want, BF16)
    })
}

fn matmul_bf16(gpu: &Gpu) -> Result<(), String> {
    let cases = (shapes(300), any::<bool>(), any::<bool>());
    prop(cases, 32, |((m, kk, n, seed), ta, tb)| {
        let (ab, a) = to_bf16(&rand_vec(m * kk, seed));
        let (bb, b) = to_bf16(&rand_vec(kk * n, seed + 1));
        let c0 = rand_vec(m * n, seed + 2);
        let sa = if ta { (1, m) } else { (kk, 1) };
        let sb = if tb { (1, kk) } else { (n, 1) };
        let mut want = c0.clone();
        matmul_acc(&mut want, (n, 1), &a, sa, &b, sb, m, kk, n);
        let (ga, gb) = (gpu.upload(&ab).map_err(e)?, gpu.upload(&bb).map_err(e)?);
        let mut gc = gpu.upload(&c0).map_err(e)?;
        k::matmul_bf16(gpu, &mut gc, &ga, &gb, m, n, kk, ta, tb, 1.0, 1.0).map_err(e)?;
        check("c", &gpu.download(&gc).map_err(e)?, &want, BF16)
    })
}

fn rejects_short_buffers(gpu: &Gpu) -> Result<(), String> {
    let (m, kk, n) = (3, 5, 4);
    let z = |len: usize| gpu.zeros::<f32>(len).map_err(e);
    let (x, w, b) = (z(m * kk)?, z(n * kk)?, z(n)?);
    let (short_x, short_w, short_b) = (z(m * kk - 1)?, z(n * kk - 1)?, z(n - 1)?);
    let mut y = z(m * n)?;
    let mut short_y = z(m * n - 1)?;
    let f32m = Math::F32;
    let bad = [
        k::linear_forward(gpu, &mut short_y, &x, &w, None, m, kk, n, f32m),
        k::linear_forward(gpu, &mut y, &short_x, &w, None, m, kk, n, f32m),
        k::linear_forward(gpu, &mut y, &x, &short_w, None, m, kk, n, f32m),
        k::linear_forward(gpu, &mut y, &x, &w, Some(&short_b), m, kk, n, f32m),
        k::linear_backward(
            gpu,
            None,
            None,
            Some(&mut z(n)?),
            &z(m * n - 1)?,
            &x,
            &w,
            m,
            kk,
            n,
            f32m,
        ),
    ];
    if let Some(i) = bad.iter().position(|r| r.is_ok()) {
        return Err(format!("case {i}: a short buffer was accepted"));
    }
    k::linear_forward(gpu, &mut y, &x, &w, Some(&b), m, kk, n, f32m).map_err(e)
}
