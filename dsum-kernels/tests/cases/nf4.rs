//! nf4.cu against dsum_core::quant (Nf4Tensor::quantize / dequantize / matmul) and, for the
//! cuBLAS paths, dsum_core::ops::matmul on the same bf16-rounded operands.

use dsum_core::ops::matmul::{linear_backward, linear_forward};
use dsum_core::quant::{Absmax, Nf4Tensor};
use dsum_kernels::nf4::{self as k, Nf4Absmax, Nf4Parts, Nf4Scratch, Nf4Weight};
use dsum_kernels::tolerance::{check, BF16, EXACT, F32};
use dsum_kernels::{Gpu, KernelError};
use half::bf16;
use proptest::prelude::*;
use proptest::sample::select;

use super::{prop, rand_vec};
use crate::GpuTest;

pub const TESTS: &[GpuTest] = &[
    ("nf4_dequantize", dequantize),
    ("nf4_dequantize_bf16", dequantize_bf16),
    ("nf4_linear_gemv", linear_gemv),
    ("nf4_linear_gemm", linear_gemm),
    ("nf4_linear_backward_input", backward_input),
    ("nf4_upload_rejects_bad_lengths", rejects_bad_lengths),
];

fn e(e: KernelError) -> String {
    e.to_string()
}

/// (rows, cols, blocksize, double quant, seed). Columns multiples of 32 and of 8 (the
/// vectorized GEMV paths) and anything else: odd counts put row starts in low nibbles and blocks
/// across rows.
fn weights() -> impl Strategy<Value = (usize, usize, usize, bool, u64)> {
    (
        1usize..40,
        prop_oneof![
            (1usize..20).prop_map(|a| a * 32),
            (1usize..80).prop_map(|a| a * 8),
            1usize..600
        ],
        select(vec![32usize, 64, 128, 256, 4096]),
        any::<bool>(),
        0u64..1000,
    )
}

/// A random weight quantized by dsum-core, and its device copy.
fn quantized(
    gpu: &Gpu,
    (rows, cols, bs, double, seed): (usize, usize, usize, bool, u64),
) -> Result<(Nf4Tensor, Nf4Weight), String> {
    // Blocks of very different magnitudes, so every block's scale matters.
    let data: Vec<f32> = rand_vec(rows * cols, seed)
        .iter()
        .enumerate()
        .map(|(i, v)| v * (1 + (i / bs) % 5) as f32)
        .collect();
    let t = Nf4Tensor::quantize(&data, vec![rows, cols], bs, double).map_err(|e| e.to_string())?;
    let absmax = match t.absmax() {
        Absmax::Plain(a) => Nf4Absmax::F32(a),
        Absmax::Double(d) => Nf4Absmax::Double {
            codes: &d.codes,
            nested_absmax: &d.nested_absmax,
            nested_code: &d.nested_code,
            nested_blocksize: d.nested_blocksize,
            offset: d.offset,
        },
    };
    let parts = Nf4Parts {
        packed: t.packed(),
        absmax,
        rows,
        cols,
        blocksize: bs,
    };
    let w = Nf4Weight::upload(gpu, parts).map_err(e)?;
    Ok((t, w))
}

/// Each value rounded to bf16 and back, as `half` does it (nearest even).
fn round_bf16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect()
}

fn dequantize(gpu: &Gpu) -> Result<(), String> {
    prop(weights(), 48, |s| {
        let (t, w) = quantized(gpu, s)?;
        let mut out = gpu.zeros::<f32>(t.numel()).map_err(e)?;
        k::nf4_dequantize(gpu, &mut out, &w).map_err(e)?;
        check(
            "out",
            &gpu.download(&out).map_err(e)?,
            &t.dequantize(),
            EXACT,
        )
    })
}

fn dequantize_bf16(gpu: &Gpu) -> Result<(), String> {
    prop(weights(), 48, |s| {
        let (t, w) = quantized(gpu, s)?;
        let mut out = gpu.zeros::<u16>(t.numel()).map_err(e)?;
        k::nf4_dequantize_bf16(gpu, &mut out, &w).map_err(e)?;
        let got: Vec<f32> = gpu
            .download(&out)
            .map_err(e)?
            .into_iter()
            .map(|b| bf16::from_bits(b).to_f32())
            .collect();
        check("out", &got, &round_bf16(&t.dequantize()), EXACT)
    })
}

fn linear_gemv(gpu: &Gpu) -> Result<(), String> {
    let cases = (weights(), 1usize..=k::GEMV_MAX_M, any::<bool>());
    prop(cases, 64, |(s, m, with_bias)| {
        let (t, w) = quantized(gpu, s)?;
        let (rows, cols) = (s.0, s.1);
        let x = rand_vec(m * cols, s.4 + 1);
        let b = rand_vec(rows, s.4 + 2);
        let mut want = vec![0f32; m * rows];
        if with_bias {
            linear_forward(&mut want, &x, &t.dequantize(), Some(&b), m, cols, rows);
        } else {
            t.matmul(&mut want, &x, m);
        }
        let (gx, gb) = (gpu.upload(&x).map_err(e)?, gpu.upload(&b).map_err(e)?);
        let mut y = gpu.zeros::<f32>(m * rows).map_err(e)?;
        let mut scratch = Nf4Scratch::new();
        let bias = with_bias.then_some(&gb);
        k::nf4_linear(gpu, &mut y, &gx, &w, bias, m, &mut scratch).map_err(e)?;
        if scratch.bytes() != 0 {
            return Err("the GEMV path used the scratch buffers".into());
        }
        check("y", &gpu.download(&y).map_err(e)?, &want, F32)
    })
}

fn linear_gemm(gpu: &Gpu) -> Result<(), String> {
    let cases = (weights(), (k::GEMV_MAX_M + 1)..40, any::<bool>());
    // One scratch for every case: growing it between shapes is part of what is tested.
    let scratch = std::cell::RefCell::new(Nf4Scratch::new());
    prop(cases, 32, |(s, m, with_bias)| {
        let (t, w) = quantized(gpu, s)?;
        let (rows, cols) = (s.0, s.1);
        let x = rand_vec(m * cols, s.4 + 1);
        let b = rand_vec(rows, s.4 + 2);
        // cuBLAS multiplies bf16 operands exactly and accumulates in f32: the reference gets
        // the same rounded operands.
        let mut want = vec![0f32; m * rows];
        let bias = with_bias.then_some(b.as_slice());
        let wq = round_bf16(&t.dequantize());
        linear_forward(&mut want, &round_bf16(&x), &wq, bias, m, cols, rows);
        let (gx, gb) = (gpu.upload(&x).map_err(e)?, gpu.upload(&b).map_err(e)?);
        let mut y = gpu.zeros::<f32>(m * rows).map_err(e)?;
        let bias = with_bias.then_some(&gb);
        k::nf4_linear(gpu, &mut y, &gx, &w, bias, m, &mut scratch.borrow_mut()).map_err(e)?;
        check("y", &gpu.download(&y).map_err(e)?, &want, BF16)
    })
}

fn backward_input(gpu: &Gpu) -> Result<(), String> {
    let cases = (weights(), 1usize..40);
    prop(cases, 32, |(s, m)| {
        let (t, w) = quantized(gpu, s)?;
        let (rows, cols) = (s.0, s.1);
        let dy = rand_vec(m * rows, s.4 + 1);
        let dx0 = rand_vec(m * cols, s.4 + 2);
        let mut want = dx0.clone();
        let wq = round_bf16(&t.dequantize());
        linear_backward(
            Some(&mut want),
            None,
            None,
            &round_bf16(&dy),
            &[],
            &wq,
            m,
            cols,
            rows,
        );
        let gdy = gpu.upload(&dy).map_err(e)?;
        let mut dx = gpu.upload(&dx0).map_err(e)?;
        let mut scratch = Nf4Scratch::new();
        k::nf4_linear_backward_input(gpu, &mut dx, &gdy, &w, m, &mut scratch).map_err(e)?;
        check("dx", &gpu.download(&dx).map_err(e)?, &want, BF16)
    })
}

/// Every length `Nf4Tensor::from_parts` checks is checked at upload, and launchers refuse short
/// buffers: an error, never an out-of-bounds access.
fn rejects_bad_lengths(gpu: &Gpu) -> Result<(), String> {
    let (t, w) = quantized(gpu, (3, 40, 32, true, 7))?;
    let Absmax::Double(d) = t.absmax() else {
        return Err("expected double quantization".into());
    };
    let good = Nf4Parts {
        packed: t.packed(),
        absmax: Nf4Absmax::Double {
            codes: &d.codes,
            nested_absmax: &d.nested_absmax,
            nested_code: &d.nested_code,
            nested_blocksize: d.nested_blocksize,
            offset: d.offset,
        },
        rows: 3,
        cols: 40,
        blocksize: 32,
    };
    let plain = vec![1f32; 4];
    let bad = [
        (
            "short packed",
            Nf4Parts {
                packed: &t.packed()[1..],
                ..good
            },
        ),
        (
            "bad blocksize",
            Nf4Parts {
                blocksize: 48,
                ..good
            },
        ),
        ("empty", Nf4Parts { rows: 0, ..good }),
        ("more rows", Nf4Parts { rows: 4, ..good }),
        (
            "short absmax",
            Nf4Parts {
                absmax: Nf4Absmax::F32(&plain[..3]),
                ..good
            },
        ),
        (
            "short nested code",
            Nf4Parts {
                absmax: Nf4Absmax::Double {
                    codes: &d.codes,
                    nested_absmax: &d.nested_absmax,
                    nested_code: &d.nested_code[..255],
                    nested_blocksize: d.nested_blocksize,
                    offset: d.offset,
                },
                ..good
            },
        ),
        (
            "nested blocksize 0",
            Nf4Parts {
                absmax: Nf4Absmax::Double {
                    codes: &d.codes,
                    nested_absmax: &d.nested_absmax,
                    nested_code: &d.nested_code,
                    nested_blocksize: 0,
                    offset: d.offset,
                },
                ..good
            },
        ),
    ];
    for (what, parts) in bad {
        if Nf4Weight::upload(gpu, parts).is_ok() {
            return Err(format!("{what}: accepted"));
        }
    }
    Nf4Weight::upload(
        gpu,
        Nf4Parts {
            absmax: Nf4Absmax::F32(&plain),
            ..good
        },
    )
    .map_err(e)?;
    let mut short = gpu.zeros::<f32>(119).map_err(e)?;
    if k::nf4_dequantize(gpu, &mut short, &w).is_ok() {
        return Err("nf4_dequantize wrote 120 values into 119".into());
    }
    let x = gpu.zeros::<f32>(2 * 40 - 1).map_err(e)?;
    let mut y = gpu.zeros::<f32>(2 * 3).map_err(e)?;
    let mut scratch = Nf4Scratch::new();
    if k::nf4_linear(gpu, &mut y, &x, &w, None, 2, &mut scratch).is_ok() {
        return Err("nf4_linear read 80 values from 79".into());
    }
    Ok(())
}
