//! activation.cu against dsum_core::ops::activation, for every activation.

use dsum_core::ops::activation::{glu_backward, glu_forward, Activation};
use dsum_kernels::activation::{self as k, Act};
use dsum_kernels::tolerance::{check, F32};
use dsum_kernels::Gpu;
use proptest::prelude::*;

use super::{prop, rand_vec};
use crate::GpuTest;

pub const TESTS: &[GpuTest] = &[
    ("activation_forward", forward),
    ("activation_backward", backward),
    ("glu_forward", glu_fwd),
    ("glu_backward", glu_bwd),
];

/// Every activation, as (GPU, CPU) pairs found through the same transformers name.
fn acts() -> Vec<(Act, Activation)> {
    ["gelu", "gelu_new", "relu", "silu"]
        .iter()
        .map(|n| {
            (
                Act::from_name(n).unwrap(),
                Activation::from_name(n).unwrap(),
            )
        })
        .collect()
}

/// (n, seed): n around the 256-thread block and a few blocks.
fn shapes() -> impl Strategy<Value = (usize, u64)> {
    let n = prop_oneof![
        prop::sample::select(vec![1usize, 31, 33, 255, 256, 257, 1025]),
        1usize..3000,
    ];
    (n, 0u64..1000)
}

/// Pre-activations in [-8, 8): the tails of every activation as well as the middle.
fn pre(n: usize, seed: u64) -> Vec<f32> {
    rand_vec(n, seed).iter().map(|v| 8.0 * v).collect()
}

fn forward(gpu: &Gpu) -> Result<(), String> {
    prop(shapes(), 16, |(n, seed)| {
        let x = pre(n, seed);
        let e = |e: dsum_kernels::KernelError| e.to_string();
        for (act, cpu) in acts() {
            let mut want = x.clone();
            cpu.forward_inplace(&mut want);
            let mut gx = gpu.upload(&x).map_err(e)?;
            k::act_forward(gpu, &mut gx, act, n).map_err(e)?;
            check(
                &format!("{act:?}"),
                &gpu.download(&gx).map_err(e)?,
                &want,
                F32,
            )?;
        }
        Ok(())
    })
}

fn backward(gpu: &Gpu) -> Result<(), String> {
    prop(shapes(), 16, |(n, seed)| {
        let x = pre(n, seed);
        let dout = rand_vec(n, seed + 1);
        let e = |e: dsum_kernels::KernelError| e.to_string();
        for (act, cpu) in acts() {
            let mut want = dout.clone();
            cpu.backward_inplace(&mut want, &x);
            let mut gd = gpu.upload(&dout).map_err(e)?;
            let gx = gpu.upload(&x).map_err(e)?;
            k::act_backward(gpu, &mut gd, &gx, act, n).map_err(e)?;
            check(
                &format!("{act:?}"),
                &gpu.download(&gd).map_err(e)?,
                &want,
                F32,
            )?;
        }
        Ok(())
    })
}

fn glu_fwd(gpu: &Gpu) -> Result<(), String> {
    prop(shapes(), 16, |(n, seed)| {
        let gate = pre(n, seed);
        let up = rand_vec(n, seed + 1);
        let e = |e: dsum_kernels::KernelError| e.to_string();
        let (gg, gu) = (gpu.upload(&gate).map_err(e)?, gpu.upload(&up).map_err(e)?);
        for (act, cpu) in acts() {
            let mut want = vec![0f32; n];
            glu_forward(&mut want, &gate, &up, cpu);
            // Start from garbage: the output is overwritten.
            let mut out = gpu.upload(&rand_vec(n, seed + 2)).map_err(e)?;
            k::glu_forward(gpu, &mut out, &gg, &gu, act, n).map_err(e)?;
            check(
                &format!("{act:?}"),
                &gpu.download(&out).map_err(e)?,
                &want,
                F32,
            )?;
        }
        Ok(())
    })
}

fn glu_bwd(gpu: &Gpu) -> Result<(), String> {
    prop(shapes(), 16, |(n, seed)| {
        let gate = pre(n, seed);
        let up = rand_vec(n, seed + 1);
        let dout = rand_vec(n, seed + 2);
        let e = |e: dsum_kernels::KernelError| e.to_string();
        let (gg, gu, gdo) = (
            gpu.upload(&gate).map_err(e)?,
            gpu.upload(&up).map_err(e)?,
            gpu.upload(&dout).map_err(e)?,
        );
        for (act, cpu) in acts() {
            let (mut want_dg, mut want_du) = (vec![0f32; n], vec![0f32; n]);
            glu_backward(&mut want_dg, &mut want_du, &dout, &gate, &up, cpu);
            // Both gradients are overwritten, not accumulated, as on the CPU.
            let mut dg = gpu.upload(&rand_vec(n, seed + 3)).map_err(e)?;
            let mut du = gpu.upload(&rand_vec(n, seed + 4)).map_err(e)?;
            k::glu_backward(gpu, &mut dg, &mut du, &gdo, &gg, &gu, act, n).map_err(e)?;
            check(
                &format!("{act:?} dgate"),
                &gpu.download(&dg).map_err(e)?,
                &want_dg,
                F32,
            )?;
            check(
                &format!("{act:?} dup"),
                &gpu.download(&du).map_err(e)?,
                &want_du,
                F32,
            )?;
        }
        Ok(())
    })
}
