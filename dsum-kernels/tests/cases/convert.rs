//! convert.cu against half::bf16 (the conversions the CPU side uses).

use dsum_kernels::convert as k;
use dsum_kernels::tolerance::{check, EXACT};
use dsum_kernels::{Gpu, KernelError};
use half::bf16;

use super::{prop, rand_vec};
use crate::GpuTest;

pub const TESTS: &[GpuTest] = &[("to_bf16", to_bf16), ("from_bf16", from_bf16)];

fn e(e: KernelError) -> String {
    e.to_string()
}

/// Random values over many magnitudes plus the cases rounding can get wrong: ties, the largest
/// finite values, subnormals, infinities, NaN.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let special = [
        0.0,
        -0.0,
        1.0 + f32::EPSILON * 32768.0, // exactly halfway between two bf16 values
        1.0 + f32::EPSILON * 98304.0, // halfway, odd lower neighbour: rounds up
        f32::MAX,
        -f32::MAX,
        f32::MIN_POSITIVE / 3.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ];
    rand_vec(n, seed)
        .iter()
        .enumerate()
        .map(|(i, v)| v * 10f32.powi((i % 40) as i32 - 20))
        .chain(special)
        .collect()
}

fn to_bf16(gpu: &Gpu) -> Result<(), String> {
    prop((0usize..3000, 0u64..1000), 16, |(n, seed)| {
        let v = values(n, seed);
        let want: Vec<f32> = v
            .iter()
            .map(|&x| f32::from(bf16::from_f32(x).to_bits()))
            .collect();
        let gv = gpu.upload(&v).map_err(e)?;
        let mut out = gpu.zeros::<u16>(v.len()).map_err(e)?;
        k::to_bf16(gpu, &mut out, &gv, v.len()).map_err(e)?;
        let got: Vec<f32> = gpu
            .download(&out)
            .map_err(e)?
            .into_iter()
            .map(f32::from)
            .collect();
        // Compared as bit patterns (exactly representable in f32), so NaN payloads count too.
        check("bits", &got, &want, EXACT)
    })
}

fn from_bf16(gpu: &Gpu) -> Result<(), String> {
    prop((0usize..3000, 0u64..1000), 16, |(n, seed)| {
        let bits: Vec<u16> = values(n, seed)
            .iter()
            .map(|&x| bf16::from_f32(x).to_bits())
            .collect();
        let want: Vec<f32> = bits.iter().map(|&b| bf16::from_bits(b).to_f32()).collect();
        let gb = gpu.upload(&bits).map_err(e)?;
        let mut out = gpu.zeros::<f32>(bits.len()).map_err(e)?;
        k::from_bf16(gpu, &mut out, &gb, bits.len()).map_err(e)?;
        check("out", &gpu.download(&out).map_err(e)?, &want, EXACT)
    })
}
