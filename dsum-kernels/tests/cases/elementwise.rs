//! elementwise.cu against the plain loops below, which are the reference: no CPU module holds
//! these updates, the models write them inline (`x.iter_mut().zip(&o).for_each(|(a, b)| *a += b)`).
//! One IEEE operation per element on both sides, so the results are bit-identical.

use dsum_kernels::elementwise as k;
use dsum_kernels::tolerance::{check, EXACT};
use dsum_kernels::Gpu;
use proptest::prelude::*;

use super::{prop, rand_vec};
use crate::GpuTest;

pub const TESTS: &[GpuTest] = &[
    ("add_inplace", add),
    ("mul_inplace", mul),
    ("scale_inplace", scale),
];

fn reference_add(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}

fn reference_mul(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a *= b);
}

fn reference_scale(x: &mut [f32], s: f32) {
    x.iter_mut().for_each(|a| *a *= s);
}

/// (n, seed): n around the 256-thread block and a few blocks.
fn shapes() -> impl Strategy<Value = (usize, u64)> {
    let n = prop_oneof![
        prop::sample::select(vec![1usize, 31, 33, 255, 256, 257, 1025]),
        1usize..5000,
    ];
    (n, 0u64..1000)
}

type GpuBinary = fn(
    &Gpu,
    &mut cudarc::driver::CudaSlice<f32>,
    &cudarc::driver::CudaSlice<f32>,
    usize,
) -> dsum_kernels::Result<()>;

fn binary(gpu: &Gpu, reference: fn(&mut [f32], &[f32]), kernel: GpuBinary) -> Result<(), String> {
    prop(shapes(), 16, |(n, seed)| {
        let x = rand_vec(n, seed);
        let y = rand_vec(n, seed + 1);
        let mut want = x.clone();
        reference(&mut want, &y);
        let e = |e: dsum_kernels::KernelError| e.to_string();
        let mut gx = gpu.upload(&x).map_err(e)?;
        let gy = gpu.upload(&y).map_err(e)?;
        kernel(gpu, &mut gx, &gy, n).map_err(e)?;
        check("x", &gpu.download(&gx).map_err(e)?, &want, EXACT)
    })
}

fn add(gpu: &Gpu) -> Result<(), String> {
    binary(gpu, reference_add, k::add_inplace)
}

fn mul(gpu: &Gpu) -> Result<(), String> {
    binary(gpu, reference_mul, k::mul_inplace)
}

fn scale(gpu: &Gpu) -> Result<(), String> {
    prop(shapes(), 16, |(n, seed)| {
        let x = rand_vec(n, seed);
        let s = 0.1 + (seed % 13) as f32 * 0.77;
        let mut want = x.clone();
        reference_scale(&mut want, s);
        let e = |e: dsum_kernels::KernelError| e.to_string();
        let mut gx = gpu.upload(&x).map_err(e)?;
        k::scale_inplace(gpu, &mut gx, s, n).map_err(e)?;
        check("x", &gpu.download(&gx).map_err(e)?, &want, EXACT)
    })
}
