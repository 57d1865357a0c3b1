//! Double quantization of NF4 block statistics, as bitsandbytes does it on CPU: the per-block
//! absmax values minus their mean, quantized in blocks of 256 with the signed 8-bit dynamic map
//! (`create_dynamic_map(signed=True)`, Dettmers 2015 "8-Bit Approximations for Parallelism").
//!
//! Each step copies the float32 arithmetic of the reference so the bytes match: torch's
//! `linspace` and cascade `sum`, and bitsandbytes' native quantizer, which rounds through a
//! 65536-entry lookup table rather than searching for the nearest code.

use std::vec::Vec;

/// The block size bitsandbytes uses for the nested (8-bit) statistics of a 4-bit weight.
pub const NESTED_BLOCKSIZE: usize = 256;

/// Entries of bitsandbytes' quantization lookup table (`kLUTSize` in csrc/cpu_ops.cpp).
const LUT_SIZE: usize = 65536;

/// `torch.linspace(start, end, steps, dtype=float32)`: the first half counts up from `start`,
/// the second half down from `end`, each value one fused multiply-add.
fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                libm::fmaf(step, i as f32, start)
            } else {
                libm::fmaf(-step, (steps - i - 1) as f32, end)
            }
        })
        .collect()
}

/// `bitsandbytes.functional.create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)`:
/// 127 positive and 127 negative values over seven decades, 0 and 1, sorted.
pub fn dynamic_map_signed() -> [f32; 256] {
    // 10 ** (-(7 - 1) + i) as Python computes it, then cast to float32 by torch.
    const DECADES: [f64; 7] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0];
    let mut data = Vec::with_capacity(256);
    for (i, decade) in DECADES.iter().enumerate() {
        let bounds = linspace_f32(0.1, 1.0, (1 << i) + 1);
        let scale = *decade as f32;
        for w in bounds.windows(2) {
            let mean = (w[0] + w[1]) / 2.0;
            data.push(scale * mean);
            data.push(-scale * mean);
        }
    }
    data.push(0.0);
    data.push(1.0);
    data.sort_by(f32::total_cmp);
    let mut out = [0f32; 256];
    out.copy_from_slice(&data);
    out
}

/// bitsandbytes' `build_quantize_lut`: for each of 65536 evenly spaced points of [-1, 1], the
/// nearest code (a point exactly on a midpoint keeps the lower index).
fn build_lut(code: &[f32; 256]) -> Vec<u8> {
    let mid: Vec<f32> = code.windows(2).map(|w| 0.5 * (w[0] + w[1])).collect();
    let mut lut = Vec::with_capacity(LUT_SIZE);
    let mut idx = 0usize;
    for i in 0..LUT_SIZE {
        let val = -1.0f32 + (2.0f32 * i as f32) / (LUT_SIZE - 1) as f32;
        while idx < mid.len() && mid[idx] < val {
            idx += 1;
        }
        lut.push(idx as u8);
    }
    lut
}

/// bitsandbytes' `norm_to_lut_index`.
#[inline]
fn lut_index(v: f32) -> usize {
    let v = v.clamp(-1.0, 1.0);
    ((v + 1.0) * 0.5 * (LUT_SIZE - 1) as f32 + 0.5) as usize
}

/// `quantize_blockwise(data, code, blocksize)` on CPU: per block the absmax (0 for an all-zero
/// block, whose codes are then all 0) and one code index per value.
pub fn quantize_blockwise(
    data: &[f32],
    code: &[f32; 256],
    blocksize: usize,
) -> (Vec<u8>, Vec<f32>) {
    let lut = build_lut(code);
    let mut codes = Vec::with_capacity(data.len());
    let mut absmax = Vec::with_capacity(data.len().div_ceil(blocksize));
    for block in data.chunks(blocksize) {
        let m = block.iter().fold(0f32, |m, x| m.max(x.abs()));
        absmax.push(m);
        if m == 0.0 {
            codes.extend(core::iter::repeat_n(0u8, block.len()));
            continue;
        }
        let inv = 1.0 / m;
        codes.extend(block.iter().map(|x| lut[lut_index(x * inv)]));
    }
    (codes, absmax)
}

/// `dequantize_blockwise`: `code[q] * absmax[block]`.
pub fn dequantize_blockwise(
    codes: &[u8],
    absmax: &[f32],
    code: &[f32],
    blocksize: usize,
) -> Vec<f32> {
    codes
        .iter()
        .enumerate()
        .map(|(i, &q)| code[q as usize] * absmax[i / blocksize])
        .collect()
}

/// Float32 lanes of torch's vectorized CPU sum (measured: AVX2 and AVX-512 builds both use 8).
const SUM_LANES: usize = 8;

/// `torch.sum` of a contiguous float32 vector on one CPU thread (aten/src/ATen/native/cpu/
/// SumKernel.cpp, `cascade_sum`): 8-lane vectors summed with 4-way ILP and a 4-level cascade,
/// the scalar tail, then the lanes in order. Torch splits inputs longer than 32768 between its
/// threads, so there it matches a single-threaded torch (`torch.set_num_threads(1)`) only.
pub fn torch_sum_f32(x: &[f32]) -> f32 {
    let n = x.len();
    if n < SUM_LANES {
        return 0.0 + row_sum(n, 0f32, |i| x[i], |a, b| a + b);
    }
    let vecs = n / SUM_LANES;
    let load = |i: usize| -> [f32; SUM_LANES] {
        let mut v = [0f32; SUM_LANES];
        v.copy_from_slice(&x[i * SUM_LANES..(i + 1) * SUM_LANES]);
        v
    };
    let add = |mut a: [f32; SUM_LANES], b: [f32; SUM_LANES]| {
        for (a, b) in a.iter_mut().zip(b) {
            *a += b;
        }
        a
    };
    let lanes = row_sum(vecs, [0f32; SUM_LANES], load, add);
    let mut acc = 0f32;
    for v in &x[vecs * SUM_LANES..] {
        acc += v;
    }
    for v in lanes {
        acc += v;
    }
    0.0 + acc
}

/// `torch.mean` of a float32 vector: the sum above divided by the count in float32.
pub fn torch_mean_f32(x: &[f32]) -> f32 {
    torch_sum_f32(x) / x.len() as f32
}

/// torch's `row_sum`: four interleaved partial sums (`multi_row_sum`), the leftovers into the
/// first, then the four added in order.
fn row_sum<T: Copy>(size: usize, zero: T, load: impl Fn(usize) -> T, add: impl Fn(T, T) -> T) -> T {
    const ILP: usize = 4;
    let size_ilp = size / ILP;
    let mut p = multi_row_sum::<T, ILP>(size_ilp, zero, |i, k| load(i * ILP + k), &add);
    for i in size_ilp * ILP..size {
        p[0] = add(p[0], load(i));
    }
    for k in 1..ILP {
        p[0] = add(p[0], p[k]);
    }
    p[0]
}

/// torch's `multi_row_sum`: `R` running sums, each a 4-level cascade so that only values of
/// similar magnitude are added together.
fn multi_row_sum<T: Copy, const R: usize>(
    size: usize,
    zero: T,
    load: impl Fn(usize, usize) -> T,
    add: &impl Fn(T, T) -> T,
) -> [T; R] {
    const LEVELS: usize = 4;
    let ceil_log2 = if size <= 2 {
        1
    } else {
        (usize::BITS - (size - 1).leading_zeros()) as usize
    };
    let level_power = (ceil_log2 / LEVELS).max(4);
    let level_step = 1usize << level_power;
    let level_mask = level_step - 1;
    let mut acc = [[zero; R]; LEVELS];
    let mut i = 0usize;
    while i + level_step <= size {
        for _ in 0..level_step {
            for (k, a) in acc[0].iter_mut().enumerate() {
                *a = add(*a, load(i, k));
            }
            i += 1;
        }
        for j in 1..LEVELS {
            let (lower, upper) = acc.split_at_mut(j);
            for (hi, lo) in upper[0].iter_mut().zip(lower[j - 1].iter_mut()) {
                *hi = add(*hi, *lo);
                *lo = zero;
            }
            if i & (level_mask << (j * level_power)) != 0 {
                break;
            }
        }
    }
    while i < size {
        for (k, a) in acc[0].iter_mut().enumerate() {
            *a = add(*a, load(i, k));
        }
        i += 1;
    }
    let (first, rest) = acc.split_at_mut(1);
    for level in rest.iter() {
        for (a, b) in first[0].iter_mut().zip(level) {
            *a = add(*a, *b);
        }
    }
    first[0]
}

/// Double-quantized block statistics: `absmax[i] = nested_code[codes[i]] *
/// nested_absmax[i / nested_blocksize] + offset`.
#[derive(Debug, Clone, PartialEq)]
pub struct DoubleQuant {
    /// One 8-bit code per 4-bit block (stored as `W.absmax`, uint8).
    pub codes: Vec<u8>,
    /// Float32 absmax of each nested block (`W.nested_absmax`).
    pub nested_absmax: Vec<f32>,
    /// The 256-entry map the codes index (`W.nested_quant_map`).
    pub nested_code: Vec<f32>,
    pub nested_blocksize: usize,
    /// The mean subtracted before quantizing (`nested_offset` in the quant_state JSON).
    pub offset: f32,
}

impl DoubleQuant {
    /// `quantize_blockwise(absmax - absmax.mean(), blocksize=256)` as `quantize_4bit(...,
    /// compress_statistics=True)` calls it. `absmax` must not be empty.
    pub fn quantize(absmax: &[f32]) -> Self {
        let offset = torch_mean_f32(absmax);
        let centered: Vec<f32> = absmax.iter().map(|a| a - offset).collect();
        let code = dynamic_map_signed();
        let (codes, nested_absmax) = quantize_blockwise(&centered, &code, NESTED_BLOCKSIZE);
        DoubleQuant {
            codes,
            nested_absmax,
            nested_code: code.to_vec(),
            nested_blocksize: NESTED_BLOCKSIZE,
            offset,
        }
    }

    /// The float32 absmax values, as bitsandbytes' `dequantize_4bit` recovers them.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = dequantize_blockwise(
            &self.codes,
            &self.nested_absmax,
            &self.nested_code,
            self.nested_blocksize,
        );
        for a in &mut out {
            *a += self.offset;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_map_is_sorted_and_spans_minus_one_to_one() {
        let m = dynamic_map_signed();
        assert!(m.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(m[255], 1.0);
        assert!(m[0] > -1.0 && m[0] < -0.99);
        assert!(m.contains(&0.0));
    }

    #[test]
    fn sum_of_small_vectors_is_the_plain_sum_when_exact() {
        let x: Vec<f32> = (1..=100).map(|i| i as f32).collect();
        assert_eq!(torch_sum_f32(&x), 5050.0);
        assert_eq!(torch_mean_f32(&x[..3]), 2.0);
    }

    #[test]
    fn lut_maps_codes_to_themselves() {
        let code = dynamic_map_signed();
        let lut = build_lut(&code);
        for (i, c) in code.iter().enumerate().skip(1) {
            // Codes far enough apart to own at least one LUT bin.
            if i > 200 {
                assert_eq!(lut[lut_index(*c)] as usize, i, "code {i}");
            }
        }
    }
}
