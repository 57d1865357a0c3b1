//! cross_entropy.cu against dsum_core::ops::cross_entropy.

use dsum_core::ops::cross_entropy::{cross_entropy_backward, cross_entropy_loss, IGNORE_INDEX};
use dsum_kernels::cross_entropy::{self as k, STATS_LEN};
use dsum_kernels::tolerance::{check, F32};
use dsum_kernels::{Gpu, KernelError};
use proptest::prelude::*;
use proptest::sample::select;

use super::{prop, rand_vec};
use crate::GpuTest;

pub const TESTS: &[GpuTest] = &[
    ("cross_entropy_forward", forward),
    ("cross_entropy_backward", backward),
    ("cross_entropy_backward_qwen_vocab", backward_qwen),
    ("cross_entropy_bad_label", bad_label),
];

fn e(e: KernelError) -> String {
    e.to_string()
}

/// Logits [rows, v] spread over [-8, 8) and labels with about one in four ignored
/// (`ignore` = 2: every label ignored).
fn inputs(rows: usize, v: usize, ignore: u8, seed: u64) -> (Vec<f32>, Vec<i64>) {
    let logits = rand_vec(rows * v, seed).iter().map(|x| x * 8.0).collect();
    let r = rand_vec(rows, seed + 1);
    let targets = r
        .iter()
        .map(|&x| {
            if ignore == 2 || (ignore == 1 && x < -0.5) {
                IGNORE_INDEX
            } else {
                (((x + 1.0) * 0.5 * v as f32) as i64).min(v as i64 - 1)
            }
        })
        .collect();
    (logits, targets)
}

fn shapes() -> impl Strategy<Value = (usize, usize, u8, u64)> {
    (
        1usize..20,
        select(vec![1usize, 2, 31, 33, 257, 1025, 4099]),
        0u8..3,
        0u64..1000,
    )
}

/// Per-row losses (each row through the CPU on its own) and the total, against the CPU.
fn check_losses(
    gpu: &Gpu,
    losses: &dsum_kernels::cudarc::driver::CudaSlice<f32>,
    gt: &dsum_kernels::cudarc::driver::CudaSlice<i64>,
    logits: &[f32],
    targets: &[i64],
    v: usize,
) -> Result<(), String> {
    let rows = targets.len();
    let want: Vec<f32> = (0..rows)
        .map(|r| cross_entropy_loss(&logits[r * v..(r + 1) * v], &targets[r..r + 1], v))
        .map(|x| x.map(|(sum, _)| sum as f32))
        .collect::<Result<_, _>>()?;
    check("losses", &gpu.download(losses).map_err(e)?, &want, F32)?;
    let (want_sum, want_n) = cross_entropy_loss(logits, targets, v)?;
    let mut stats = gpu.zeros::<f64>(STATS_LEN).map_err(e)?;
    k::cross_entropy_sum(gpu, &mut stats, losses, gt, rows, v).map_err(e)?;
    let (sum, n) = k::cross_entropy_total(gpu, &stats, v).map_err(e)?;
    if n != want_n {
        return Err(format!("{n} rows counted, {want_n} expected"));
    }
    check("sum", &[sum as f32], &[want_sum as f32], F32)
}

fn forward(gpu: &Gpu) -> Result<(), String> {
    prop(shapes(), 32, |(rows, v, ignore, seed)| {
        let (logits, targets) = inputs(rows, v, ignore, seed);
        let gl = gpu.upload(&logits).map_err(e)?;
        let gt = gpu.upload(&targets).map_err(e)?;
        let mut losses = gpu.upload(&vec![7f32; rows]).map_err(e)?;
        k::cross_entropy_forward(gpu, &mut losses, &gl, &gt, rows, v).map_err(e)?;
        check_losses(gpu, &losses, &gt, &logits, &targets, v)
    })
}

fn run_backward(gpu: &Gpu, rows: usize, v: usize, ignore: u8, seed: u64) -> Result<(), String> {
    let (logits, targets) = inputs(rows, v, ignore, seed);
    let scale = 1.0 / (rows as f32 + 0.5);
    let mut want = logits.clone();
    cross_entropy_backward(&mut want, &targets, v, scale)?;
    let mut gl = gpu.upload(&logits).map_err(e)?;
    let gt = gpu.upload(&targets).map_err(e)?;
    let mut losses = gpu.upload(&vec![7f32; rows]).map_err(e)?;
    k::cross_entropy_backward(gpu, &mut gl, &mut losses, &gt, rows, v, scale).map_err(e)?;
    check("dlogits", &gpu.download(&gl).map_err(e)?, &want, F32)?;
    check_losses(gpu, &losses, &gt, &logits, &targets, v)
}

fn backward(gpu: &Gpu) -> Result<(), String> {
    prop(shapes(), 32, |(rows, v, ignore, seed)| {
        run_backward(gpu, rows, v, ignore, seed)
    })
}

/// Qwen2's vocabulary (151,936), far more than one block's threads.
fn backward_qwen(gpu: &Gpu) -> Result<(), String> {
    prop((1usize..4, 0u64..1000), 3, |(rows, seed)| {
        run_backward(gpu, rows, 151_936, 1, seed)
    })
}

/// A label outside the vocabulary: the CPU's error, from the statistics.
fn bad_label(gpu: &Gpu) -> Result<(), String> {
    prop(
        (2usize..20, 1usize..300, 0u64..1000),
        8,
        |(rows, v, seed)| {
            let (logits, mut targets) = inputs(rows, v, 1, seed);
            targets[rows / 2] = v as i64 + (seed % 3) as i64;
            targets[rows - 1] = -1;
            let want = cross_entropy_loss(&logits, &targets, v)
                .err()
                .ok_or("the CPU accepted a bad label")?;
            let gl = gpu.upload(&logits).map_err(e)?;
            let gt = gpu.upload(&targets).map_err(e)?;
            let mut losses = gpu.zeros::<f32>(rows).map_err(e)?;
            k::cross_entropy_forward(gpu, &mut losses, &gl, &gt, rows, v).map_err(e)?;
            let mut stats = gpu.zeros::<f64>(STATS_LEN).map_err(e)?;
            k::cross_entropy_sum(gpu, &mut stats, &losses, &gt, rows, v).map_err(e)?;
            match k::cross_entropy_total(gpu, &stats, v) {
                Err(got) if got.to_string().ends_with(&want) => Ok(()),
                other => Err(format!("{other:?}, expected the error {want:?}")),
            }
        },
    )
}
