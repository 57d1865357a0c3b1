//! rope.cu against dsum_core::ops::rope, applied head by head.

use dsum_core::ops::rope::{inv_freq, rope_backward, rope_forward};
use dsum_kernels::rope as k;
use dsum_kernels::tolerance::{check, F32};
use dsum_kernels::Gpu;
use proptest::prelude::*;

use super::{prop, rand_vec};
use crate::GpuTest;

pub const TESTS: &[GpuTest] = &[("rope_forward", forward), ("rope_backward", backward)];

/// (n_tok, heads, dh, seed): dh/2 covers 1, odd pair counts and the usual 32 / 64.
fn shapes() -> impl Strategy<Value = (usize, usize, usize, u64)> {
    let half = prop_oneof![
        prop::sample::select(vec![1usize, 31, 32, 33, 64]),
        1usize..80
    ];
    (1usize..70, 1usize..9, half.prop_map(|h| 2 * h), 0u64..1000)
}

/// Positions up to 40k, so the angles need real range reduction.
fn positions(n: usize, seed: u64) -> Vec<i32> {
    rand_vec(n, seed)
        .iter()
        .map(|v| ((v + 1.0) * 20_000.0) as i32)
        .collect()
}

type CpuRope = fn(&mut [f32], &[f32], usize);
type GpuRope = fn(
    &Gpu,
    &mut cudarc::driver::CudaSlice<f32>,
    &cudarc::driver::CudaSlice<f32>,
    &cudarc::driver::CudaSlice<i32>,
    usize,
    usize,
    usize,
) -> dsum_kernels::Result<()>;

fn run(gpu: &Gpu, cpu: CpuRope, kernel: GpuRope) -> Result<(), String> {
    prop(shapes(), 24, |(n_tok, heads, dh, seed)| {
        let x = rand_vec(n_tok * heads * dh, seed);
        let pos = positions(n_tok, seed + 1);
        // Llama 2's and Llama 3's bases.
        let theta = if seed % 2 == 0 { 10_000.0 } else { 500_000.0 };
        let freq = inv_freq(dh, theta, None).map_err(|e| e.to_string())?;
        let mut want = x.clone();
        for (t, tok) in want.chunks_exact_mut(heads * dh).enumerate() {
            for head in tok.chunks_exact_mut(dh) {
                cpu(head, &freq, pos[t] as usize);
            }
        }
        let e = |e: dsum_kernels::KernelError| e.to_string();
        let mut gx = gpu.upload(&x).map_err(e)?;
        let (gf, gp) = (gpu.upload(&freq).map_err(e)?, gpu.upload(&pos).map_err(e)?);
        kernel(gpu, &mut gx, &gf, &gp, n_tok, heads, dh).map_err(e)?;
        check("x", &gpu.download(&gx).map_err(e)?, &want, F32)
    })
}

fn forward(gpu: &Gpu) -> Result<(), String> {
    run(gpu, rope_forward, k::rope_forward)
}

fn backward(gpu: &Gpu) -> Result<(), String> {
    run(gpu, rope_backward, k::rope_backward)
}
