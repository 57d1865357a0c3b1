//! dropout.cu against dsum_core::ops::dropout: the same elements dropped, the same bits kept.

use dsum_core::ops::dropout::dropout_inplace;
use dsum_kernels::dropout as k;
use dsum_kernels::tolerance::{check, EXACT};
use dsum_kernels::Gpu;
use proptest::prelude::*;

use super::{prop, rand_vec};
use crate::GpuTest;

pub const TESTS: &[GpuTest] = &[
    ("dropout_forward", forward),
    ("dropout_backward_acc", backward_acc),
];

/// (n, p, seed): odd sizes and sizes across many 256-thread blocks; p = 0 (identity) and a
/// negative p (the CPU leaves x alone) included.
fn cases() -> impl Strategy<Value = (usize, f32, u64)> {
    (
        prop_oneof![
            Just(1usize),
            Just(31),
            Just(33),
            Just(257),
            Just(1025),
            1usize..70_000
        ],
        prop_oneof![
            Just(0.0f32),
            Just(-0.25),
            Just(0.1),
            Just(0.5),
            0.0f32..0.95
        ],
        any::<u64>(),
    )
}

fn forward(gpu: &Gpu) -> Result<(), String> {
    prop(cases(), 32, |(n, p, seed)| {
        let x = rand_vec(n, seed);
        let mut want = x.clone();
        dropout_inplace(&mut want, p, seed);
        let e = |e: dsum_kernels::KernelError| e.to_string();
        let gx = gpu.upload(&x).map_err(e)?;
        let mut out = gpu.zeros::<f32>(n).map_err(e)?;
        k::dropout_forward(gpu, &mut out, &gx, p, seed, n).map_err(e)?;
        check("out", &gpu.download(&out).map_err(e)?, &want, EXACT)
    })
}

fn backward_acc(gpu: &Gpu) -> Result<(), String> {
    prop(cases(), 32, |(n, p, seed)| {
        let dout = rand_vec(n, seed);
        let dinp0 = rand_vec(n, seed ^ 1);
        // The backward of dropout is dropout of the gradient (same seed), added to dinp.
        let mut g = dout.clone();
        dropout_inplace(&mut g, p, seed);
        let want: Vec<f32> = dinp0.iter().zip(&g).map(|(a, b)| a + b).collect();
        let e = |e: dsum_kernels::KernelError| e.to_string();
        let gdout = gpu.upload(&dout).map_err(e)?;
        let mut dinp = gpu.upload(&dinp0).map_err(e)?;
        k::dropout_backward_acc(gpu, &mut dinp, &gdout, p, seed, n).map_err(e)?;
        check("dinp", &gpu.download(&dinp).map_err(e)?, &want, EXACT)
    })
}
