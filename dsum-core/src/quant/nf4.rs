//! NF4 quantize / dequantize with bitsandbytes' exact float32 arithmetic (its CPU
//! `quantize_4bit`, backends/default/ops.py, and the pure-torch `_dequantize_4bit_compute`).
//!
//! The tensor is flattened row-major and cut into blocks of `blocksize` values that run across
//! row boundaries (the last block may be partial). Each block keeps its float32 absmax; each
//! value becomes the index of the nearest of the 16 NF4 codes after scaling by 1/absmax (a
//! value exactly between two codes takes the lower index). Two indices share a byte, the first
//! in the high nibble; an odd count is padded with the code of 0.0.

use std::string::ToString;
use std::vec::Vec;

use super::dynamic_map::DoubleQuant;
use crate::error::{Error, Result};

/// The 16 NF4 values (`bitsandbytes.functional.get_4bit_type("nf4")`), sorted.
pub const NF4_CODE: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// Block sizes bitsandbytes accepts for 4-bit quantization.
pub const NF4_BLOCKSIZES: [usize; 8] = [32, 64, 128, 256, 512, 1024, 2048, 4096];

/// What bitsandbytes clamps a block's absmax to before dividing (`clamp(min=1e-38)`); a partial
/// last block also *stores* the clamped value.
const MIN_ABSMAX: f32 = 1e-38_f64 as f32;

/// The dtype the original tensor had: bitsandbytes records it in the quant_state and
/// dequantizes into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nf4Dtype {
    F32,
    F16,
    BF16,
}

impl Nf4Dtype {
    /// The name bitsandbytes writes (`str(dtype).strip("torch.")`).
    pub fn name(self) -> &'static str {
        match self {
            Nf4Dtype::F32 => "float32",
            Nf4Dtype::F16 => "float16",
            Nf4Dtype::BF16 => "bfloat16",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "float32" => Some(Nf4Dtype::F32),
            "float16" => Some(Nf4Dtype::F16),
            "bfloat16" => Some(Nf4Dtype::BF16),
            _ => None,
        }
    }
}

/// The per-block scales: plain float32, or double-quantized to 8 bits.
#[derive(Debug, Clone, PartialEq)]
pub enum Absmax {
    Plain(Vec<f32>),
    Double(DoubleQuant),
}

impl Absmax {
    /// The float32 scale of every block.
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Absmax::Plain(v) => v.clone(),
            Absmax::Double(d) => d.dequantize(),
        }
    }

    /// Number of blocks these statistics describe.
    pub fn len(&self) -> usize {
        match self {
            Absmax::Plain(v) => v.len(),
            Absmax::Double(d) => d.codes.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An NF4-quantized tensor, bitsandbytes' layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Nf4Tensor {
    /// The logical shape (`[n, k]` for a linear weight).
    shape: Vec<usize>,
    /// Product of `shape`.
    numel: usize,
    blocksize: usize,
    /// `numel.div_ceil(2)` bytes, two codes each, first in the high nibble.
    packed: Vec<u8>,
    /// `numel.div_ceil(blocksize)` scales.
    absmax: Absmax,
    dtype: Nf4Dtype,
}

/// The 15 bucket bounds `(code[i] + code[i+1]) / 2` that `torch.bucketize` searches.
fn bounds() -> [f32; 15] {
    let mut b = [0f32; 15];
    for (i, b) in b.iter_mut().enumerate() {
        *b = (NF4_CODE[i] + NF4_CODE[i + 1]) / 2.0;
    }
    b
}

/// `torch.bucketize(x, bounds, right=False)`: the number of bounds strictly below `x`, i.e. the
/// nearest code with ties to the lower index.
#[inline]
fn nearest_code(x: f32, bounds: &[f32; 15]) -> u8 {
    bounds.iter().filter(|&&b| b < x).count() as u8
}

/// Checks that `blocksize` is one bitsandbytes accepts.
pub fn check_blocksize(blocksize: usize) -> Result<()> {
    if NF4_BLOCKSIZES.contains(&blocksize) {
        Ok(())
    } else {
        Err(Error::Quant(format!(
            "blocksize {blocksize} is not supported (expected a power of two from 32 to 4096)"
        )))
    }
}

/// The element count of `shape`, or an error if it overflows.
pub(crate) fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

impl Nf4Tensor {
    /// Quantize `data` (row-major, `shape`) like `bitsandbytes.functional.quantize_4bit(A,
    /// blocksize, compress_statistics=double_quant, quant_type="nf4")` on CPU.
    pub fn quantize(
        data: &[f32],
        shape: Vec<usize>,
        blocksize: usize,
        double_quant: bool,
    ) -> Result<Self> {
        check_blocksize(blocksize)?;
        let numel = checked_numel(&shape)
            .ok_or_else(|| Error::Quant(format!("shape {shape:?} overflows")))?;
        if numel != data.len() {
            return Err(Error::Quant(format!(
                "shape {shape:?} holds {numel} values but {} were given",
                data.len()
            )));
        }
        if numel == 0 {
            return Err(Error::Quant(format!(
                "cannot quantize an empty tensor (shape {shape:?})"
            )));
        }
        if let Some(i) = data.iter().position(|x| !x.is_finite()) {
            return Err(Error::Quant(format!(
                "value {} at flat index {i} is not finite; NF4 cannot represent it",
                data[i]
            )));
        }
        let bounds = bounds();
        let mut codes = Vec::with_capacity(numel + 1);
        let mut absmax = Vec::with_capacity(numel.div_ceil(blocksize));
        let full = numel - numel % blocksize;
        for block in data[..full].chunks_exact(blocksize) {
            // Full blocks: x * (1 / max(absmax, 1e-38)); the stored absmax is not clamped.
            let m = block.iter().fold(0f32, |m, x| m.max(x.abs()));
            absmax.push(m);
            let inv = 1.0 / m.max(MIN_ABSMAX);
            codes.extend(
                block
                    .iter()
                    .map(|x| nearest_code((x * inv).clamp(-1.0, 1.0), &bounds)),
            );
        }
        if full < numel {
            // The partial last block divides instead, and stores the clamped absmax.
            let block = &data[full..];
            let m = block
                .iter()
                .fold(0f32, |m, x| m.max(x.abs()))
                .max(MIN_ABSMAX);
            absmax.push(m);
            codes.extend(
                block
                    .iter()
                    .map(|x| nearest_code((x / m).clamp(-1.0, 1.0), &bounds)),
            );
        }
        if codes.len() % 2 == 1 {
            codes.push(nearest_code(0.0, &bounds));
        }
        let packed = codes.chunks_exact(2).map(|p| (p[0] << 4) | p[1]).collect();
        let absmax = if double_quant {
            Absmax::Double(DoubleQuant::quantize(&absmax))
        } else {
            Absmax::Plain(absmax)
        };
        Ok(Nf4Tensor {
            shape,
            numel,
            blocksize,
            packed,
            absmax,
            dtype: Nf4Dtype::F32,
        })
    }

    /// Assemble a tensor from stored parts (a checkpoint), checking every size against `shape`.
    pub fn from_parts(
        shape: Vec<usize>,
        blocksize: usize,
        packed: Vec<u8>,
        absmax: Absmax,
        dtype: Nf4Dtype,
    ) -> Result<Self> {
        check_blocksize(blocksize)?;
        let numel = checked_numel(&shape)
            .ok_or_else(|| Error::Quant(format!("shape {shape:?} overflows")))?;
        if packed.len() != numel.div_ceil(2) {
            return Err(Error::Quant(format!(
                "shape {shape:?} needs {} packed bytes but there are {}",
                numel.div_ceil(2),
                packed.len()
            )));
        }
        let blocks = numel.div_ceil(blocksize);
        if absmax.len() != blocks {
            return Err(Error::Quant(format!(
                "shape {shape:?} with blocksize {blocksize} has {blocks} blocks but there are {} absmax values",
                absmax.len()
            )));
        }
        if let Absmax::Double(d) = &absmax {
            if d.nested_blocksize == 0 {
                return Err(Error::Quant("nested blocksize 0".to_string()));
            }
            let nested = d.codes.len().div_ceil(d.nested_blocksize);
            if d.nested_absmax.len() != nested {
                return Err(Error::Quant(format!(
                    "{} absmax codes in nested blocks of {} need {nested} nested absmax values but there are {}",
                    d.codes.len(),
                    d.nested_blocksize,
                    d.nested_absmax.len()
                )));
            }
            if d.nested_code.len() != 256 {
                return Err(Error::Quant(format!(
                    "the nested quant map has {} values (expected 256)",
                    d.nested_code.len()
                )));
            }
        }
        Ok(Nf4Tensor {
            shape,
            numel,
            blocksize,
            packed,
            absmax,
            dtype,
        })
    }

    /// Dequantize to float32 exactly as bitsandbytes' pure-torch path:
    /// `NF4_CODE[q] * absmax[i / blocksize]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let absmax = self.absmax.to_f32();
        let mut out = std::vec![0f32; self.numel];
        self.dequantize_range(&absmax, 0, &mut out);
        out
    }

    /// Obviously-correct reference for [`Self::dequantize`] and the fused kernels: one value at
    /// a time, nibble by nibble.
    pub fn dequant_ref(&self) -> Vec<f32> {
        let absmax = self.absmax.to_f32();
        (0..self.numel)
            .map(|i| {
                let byte = self.packed[i / 2];
                let q = if i % 2 == 0 { byte >> 4 } else { byte & 0x0f };
                NF4_CODE[q as usize] * absmax[i / self.blocksize]
            })
            .collect()
    }

    /// Dequantize flat elements `start..start + out.len()` given the float32 `absmax`.
    #[inline]
    pub(crate) fn dequantize_range(&self, absmax: &[f32], start: usize, out: &mut [f32]) {
        let end = start + out.len();
        let mut i = start;
        while i < end {
            // One run of constant scale: up to the end of this block.
            let block = i / self.blocksize;
            let run_end = ((block + 1) * self.blocksize).min(end);
            let scale = absmax[block];
            let mut j = i;
            if j % 2 == 1 && j < run_end {
                out[j - start] = NF4_CODE[(self.packed[j / 2] & 0x0f) as usize] * scale;
                j += 1;
            }
            while j + 1 < run_end {
                let byte = self.packed[j / 2];
                out[j - start] = NF4_CODE[(byte >> 4) as usize] * scale;
                out[j + 1 - start] = NF4_CODE[(byte & 0x0f) as usize] * scale;
                j += 2;
            }
            if j < run_end {
                out[j - start] = NF4_CODE[(self.packed[j / 2] >> 4) as usize] * scale;
                j += 1;
            }
            i = j;
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn numel(&self) -> usize {
        self.numel
    }

    pub fn blocksize(&self) -> usize {
        self.blocksize
    }

    /// The packed codes, bitsandbytes' `W` tensor (`[numel.div_ceil(2), 1]` uint8).
    pub fn packed(&self) -> &[u8] {
        &self.packed
    }

    pub fn absmax(&self) -> &Absmax {
        &self.absmax
    }

    pub fn is_double_quant(&self) -> bool {
        matches!(self.absmax, Absmax::Double(_))
    }

    /// The dtype recorded in the quant_state (what bitsandbytes dequantizes into).
    pub fn dtype(&self) -> Nf4Dtype {
        self.dtype
    }

    /// Record the original dtype (for a float16 / bfloat16 source tensor).
    pub fn with_dtype(mut self, dtype: Nf4Dtype) -> Self {
        self.dtype = dtype;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_blocksizes_are_errors() {
        for bs in [0, 1, 16, 48, 100, 8192] {
            assert!(matches!(
                Nf4Tensor::quantize(&[1.0; 64], std::vec![64], bs, false),
                Err(Error::Quant(_))
            ));
        }
    }

    #[test]
    fn shape_mismatch_overflow_and_nan_are_errors() {
        assert!(Nf4Tensor::quantize(&[1.0; 10], std::vec![3, 3], 64, false).is_err());
        assert!(Nf4Tensor::quantize(&[1.0; 10], std::vec![usize::MAX, 2], 64, false).is_err());
        assert!(Nf4Tensor::quantize(&[], std::vec![0], 64, false).is_err());
        assert!(Nf4Tensor::quantize(&[1.0, f32::NAN], std::vec![2], 64, false).is_err());
    }

    #[test]
    fn codes_round_trip_exactly_and_pack_high_nibble_first() {
        let data: Vec<f32> = NF4_CODE.iter().rev().copied().chain([0.5]).collect();
        let t = Nf4Tensor::quantize(&data, std::vec![17], 64, false).unwrap();
        assert_eq!(t.packed()[0], 0xfe);
        // 17 values: the pad nibble is the code of 0.0 (index 7).
        assert_eq!(t.packed()[8] & 0x0f, 7);
        assert_eq!(&t.dequantize()[..16], &data[..16]);
        assert_eq!(t.dequantize(), t.dequant_ref());
    }
}
