//! NF4 weights on the GPU (`kernels/nf4.cu`), mirrors `dsum_core::quant::nf4` (`Nf4Tensor::
//! dequantize`, bit-exact) and `quant::nf4_matmul` (`Nf4Tensor::matmul`, `matmul_t`): the frozen
//! 4-bit base of QLoRA (Dettmers et al. 2023) in bitsandbytes' layout, uploaded as stored.
//!
//! A linear layer with few input rows (decoding) runs a fused GEMV that reads the 4-bit codes
//! once and never materializes W; with more rows W is dequantized to bf16 into a scratch buffer
//! and multiplied by cuBLAS (bf16 inputs, f32 accumulation), as bitsandbytes does on the GPU.

use cudarc::driver::{CudaSlice, LaunchArgs, LaunchConfig, PushKernelArg};

use crate::convert::to_bf16;
use crate::error::{check_i32, check_len, KernelError, Result};
use crate::gemm::{add_bias, linear_forward_bf16, matmul_bf16};
use crate::gpu::Gpu;
use crate::launch::per_element;
use crate::sources::NF4;

/// Block sizes bitsandbytes accepts for 4-bit weights (`NF4_BLOCKSIZES` in dsum-core); the
/// kernels rely on them being powers of two of at least 32.
const BLOCKSIZES: [usize; 8] = [32, 64, 128, 256, 512, 1024, 2048, 4096];

/// Weight rows per block and most input rows of the fused GEMV (`NF4_GEMV_ROWS`,
/// `NF4_GEMV_MAX_M` in nf4.cu).
const GEMV_ROWS: usize = 4;
pub const GEMV_MAX_M: usize = 4;

/// The per-block scales as stored: plain f32, or double-quantized (`DoubleQuant` in dsum-core:
/// `absmax[i] = nested_code[codes[i]] * nested_absmax[i / nested_blocksize] + offset`).
#[derive(Clone, Copy, Debug)]
pub enum Nf4Absmax<'a> {
    F32(&'a [f32]),
    Double {
        codes: &'a [u8],
        nested_absmax: &'a [f32],
        nested_code: &'a [f32],
        nested_blocksize: usize,
        offset: f32,
    },
}

/// A `[rows, cols]` NF4 weight as bitsandbytes stores it: `packed` holds `(rows·cols).div_ceil(2)`
/// bytes, two codes each, the first in the high nibble; blocks of `blocksize` values run over
/// the flat row-major tensor (across row ends), one scale each.
#[derive(Clone, Copy, Debug)]
pub struct Nf4Parts<'a> {
    pub packed: &'a [u8],
    pub absmax: Nf4Absmax<'a>,
    pub rows: usize,
    pub cols: usize,
    pub blocksize: usize,
}

enum Scales {
    F32(CudaSlice<f32>),
    Double {
        codes: CudaSlice<u8>,
        nested_absmax: CudaSlice<f32>,
        nested_code: CudaSlice<f32>,
        nested_blocksize: i32,
        offset: f32,
    },
}

/// An NF4 weight in device memory. Dimensions are checked at upload, so the launchers only
/// check the buffers they are given.
pub struct Nf4Weight {
    packed: CudaSlice<u8>,
    scales: Scales,
    rows: usize,
    cols: usize,
    blocksize: usize,
    /// The same as kernel arguments (all fit an `int`, checked at upload).
    numel_i: i32,
    rows_i: i32,
    cols_i: i32,
    blocksize_i: i32,
}

fn shape_err(what: String) -> KernelError {
    KernelError::Shape {
        op: "Nf4Weight::upload",
        what,
    }
}

impl Nf4Weight {
    /// Copy a weight to the device, checking every length against `rows`, `cols` and
    /// `blocksize` as `Nf4Tensor::from_parts` does.
    pub fn upload(gpu: &Gpu, parts: Nf4Parts<'_>) -> Result<Self> {
        let Nf4Parts {
            packed,
            absmax,
            rows,
            cols,
            blocksize,
        } = parts;
        if !BLOCKSIZES.contains(&blocksize) {
            return Err(shape_err(format!(
                "blocksize {blocksize} is not supported (expected a power of two from 32 to 4096)"
            )));
        }
        let numel = rows
            .checked_mul(cols)
            .filter(|&n| n > 0 && n <= i32::MAX as usize)
            .ok_or_else(|| {
                shape_err(format!(
                    "a {rows}x{cols} weight is empty or exceeds the kernels' int range"
                ))
            })?;
        if packed.len() != numel.div_ceil(2) {
            return Err(shape_err(format!(
                "a {rows}x{cols} weight needs {} packed bytes but there are {}",
                numel.div_ceil(2),
                packed.len()
            )));
        }
        let blocks = numel.div_ceil(blocksize);
        let count = |what: &str, got: usize, want: usize| {
            if got == want {
                Ok(())
            } else {
                Err(shape_err(format!(
                    "{rows}x{cols} in blocks of {blocksize}: {want} {what} needed, {got} given"
                )))
            }
        };
        let scales = match absmax {
            Nf4Absmax::F32(a) => {
                count("absmax values", a.len(), blocks)?;
                Scales::F32(gpu.upload(a)?)
            }
            Nf4Absmax::Double {
                codes,
                nested_absmax,
                nested_code,
                nested_blocksize,
                offset,
            } => {
                count("absmax codes", codes.len(), blocks)?;
                if nested_blocksize == 0 || nested_blocksize > i32::MAX as usize {
                    return Err(shape_err(format!(
                        "nested blocksize {nested_blocksize} is out of range"
                    )));
                }
                count(
                    "nested absmax values",
                    nested_absmax.len(),
                    blocks.div_ceil(nested_blocksize),
                )?;
                // Codes are bytes: 256 entries make every index valid.
                count("nested code values", nested_code.len(), 256)?;
                Scales::Double {
                    codes: gpu.upload(codes)?,
                    nested_absmax: gpu.upload(nested_absmax)?,
                    nested_code: gpu.upload(nested_code)?,
                    nested_blocksize: nested_blocksize as i32,
                    offset,
                }
            }
        };
        Ok(Nf4Weight {
            packed: gpu.upload(packed)?,
            scales,
            rows,
            cols,
            blocksize,
            numel_i: numel as i32,
            rows_i: rows as i32,
            cols_i: cols as i32,
            blocksize_i: blocksize as i32,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn blocksize(&self) -> usize {
        self.blocksize
    }

    pub fn numel(&self) -> usize {
        self.rows * self.cols
    }

    pub fn is_double_quant(&self) -> bool {
        matches!(self.scales, Scales::Double { .. })
    }

    /// Device bytes of the weight: packed codes plus scale statistics (what a kernel that uses
    /// the whole weight reads at least once).
    pub fn bytes(&self) -> usize {
        self.packed.len()
            + match &self.scales {
                Scales::F32(a) => a.len() * 4,
                Scales::Double {
                    codes,
                    nested_absmax,
                    nested_code,
                    ..
                } => codes.len() + nested_absmax.len() * 4 + nested_code.len() * 4,
            }
    }

    /// The packed codes and the six scale arguments every nf4.cu kernel takes.
    fn push_args<'a>(&'a self, b: &mut LaunchArgs<'a>) {
        b.arg(&self.packed);
        match &self.scales {
            Scales::F32(a) => {
                b.arg(a)
                    .arg(&0u64)
                    .arg(&0u64)
                    .arg(&0u64)
                    .arg(&1i32)
                    .arg(&0f32);
            }
            Scales::Double {
                codes,
                nested_absmax,
                nested_code,
                nested_blocksize,
                offset,
            } => {
                b.arg(&0u64)
                    .arg(codes)
                    .arg(nested_absmax)
                    .arg(nested_code)
                    .arg(nested_blocksize)
                    .arg(offset);
            }
        }
    }
}

/// Reusable device buffers for the cuBLAS path of [`nf4_linear`] and
/// [`nf4_linear_backward_input`]: the bf16 weight and the bf16 activations. They grow on demand
/// and are never shrunk; one scratch can serve every layer of a model.
#[derive(Default)]
pub struct Nf4Scratch {
    weight: Option<CudaSlice<u16>>,
    input: Option<CudaSlice<u16>>,
}

impl Nf4Scratch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Device bytes held.
    pub fn bytes(&self) -> usize {
        let len = |s: &Option<CudaSlice<u16>>| s.as_ref().map_or(0, |s| s.len());
        (len(&self.weight) + len(&self.input)) * 2
    }
}

/// `slot`, reallocated when it holds fewer than `n` elements.
fn grown<'s>(
    gpu: &Gpu,
    slot: &'s mut Option<CudaSlice<u16>>,
    n: usize,
) -> Result<&'s mut CudaSlice<u16>> {
    if slot.as_ref().is_none_or(|s| s.len() < n) {
        *slot = None; // free the old buffer first
        *slot = Some(gpu.zeros::<u16>(n.max(1))?);
    }
    slot.as_mut().ok_or_else(|| KernelError::Shape {
        op: "Nf4Scratch",
        what: "buffer missing after allocation".into(),
    })
}

/// out[..rows·cols] = the f32 weight, bit-exact with `Nf4Tensor::dequantize`.
pub fn nf4_dequantize(gpu: &Gpu, out: &mut CudaSlice<f32>, w: &Nf4Weight) -> Result<()> {
    check_len("nf4_dequantize", "out", out.len(), w.numel())?;
    let f = gpu.function(&NF4, "nf4_dequantize_f32")?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(out);
    w.push_args(&mut b);
    b.arg(&w.numel_i).arg(&w.blocksize_i);
    // SAFETY: out holds numel values; the weight's buffers were checked at upload. Thread t
    // writes elements 4t..4t+3 (t < numel/4) or, for t == numel/4, the 0-3 leftovers.
    unsafe { b.launch(dequantize_config(w.numel(), 4)) }?;
    Ok(())
}

/// out[..rows·cols] = the weight in bf16: each `Nf4Tensor::dequantize` value rounded to nearest
/// even (`u16` bits).
pub fn nf4_dequantize_bf16(gpu: &Gpu, out: &mut CudaSlice<u16>, w: &Nf4Weight) -> Result<()> {
    check_len("nf4_dequantize_bf16", "out", out.len(), w.numel())?;
    let f = gpu.function(&NF4, "nf4_dequantize_bf16")?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(out);
    w.push_args(&mut b);
    b.arg(&w.numel_i).arg(&w.blocksize_i);
    // SAFETY: as nf4_dequantize, with 16 values per thread.
    unsafe { b.launch(dequantize_config(w.numel(), 16)) }?;
    Ok(())
}

/// One thread per `group` values (nf4.cu's G: 4 for f32, 16 for bf16) plus one for the leftovers.
fn dequantize_config(numel: usize, group: usize) -> LaunchConfig {
    per_element(numel / group + 1)
}

/// y[m, rows] = x[m, cols] · Wᵀ (+ bias[rows]), like `Nf4Tensor::matmul` (which has no bias).
/// m <= [`GEMV_MAX_M`]: the fused GEMV, f32 throughout (W is never materialized). Larger m:
/// W is dequantized to bf16 into `scratch`, x rounded to bf16, and cuBLAS multiplies them with
/// f32 accumulation.
pub fn nf4_linear(
    gpu: &Gpu,
    y: &mut CudaSlice<f32>,
    x: &CudaSlice<f32>,
    w: &Nf4Weight,
    bias: Option<&CudaSlice<f32>>,
    m: usize,
    scratch: &mut Nf4Scratch,
) -> Result<()> {
    let op = "nf4_linear";
    let (rows, cols) = (w.rows, w.cols);
    check_len(op, "y", y.len(), m * rows)?;
    check_len(op, "x", x.len(), m * cols)?;
    if let Some(b) = bias {
        check_len(op, "bias", b.len(), rows)?;
    }
    let mi = check_i32(op, "m", m)?;
    if m == 0 || rows == 0 {
        return Ok(());
    }
    if m > GEMV_MAX_M {
        check_i32(op, "m*cols", m * cols)?;
        let Nf4Scratch { weight, input } = scratch;
        let wb = grown(gpu, weight, w.numel())?;
        nf4_dequantize_bf16(gpu, wb, w)?;
        let xb = grown(gpu, input, m * cols)?;
        to_bf16(gpu, xb, x, m * cols)?;
        linear_forward_bf16(gpu, y, xb, wb, m, cols, rows)?;
        if let Some(b) = bias {
            add_bias(gpu, y, b, m, rows)?;
        }
        return Ok(());
    }
    // Batch-1 decoding with columns in 32s (every real model): 16-byte weight loads.
    let wide = m == 1 && cols.is_multiple_of(32);
    let name = if wide {
        "nf4_linear32_m1_f32"
    } else {
        "nf4_linear_forward_f32"
    };
    let f = gpu.function(&NF4, name)?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(y).arg(x);
    w.push_args(&mut b);
    match bias {
        Some(bias) => b.arg(bias),
        None => b.arg(&0u64),
    };
    if !wide {
        b.arg(&mi);
    }
    b.arg(&w.rows_i).arg(&w.cols_i).arg(&w.blocksize_i);
    let cfg = LaunchConfig {
        grid_dim: (rows.div_ceil(GEMV_ROWS) as u32, 1, 1),
        block_dim: (gemv_threads(cols, wide), 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: y holds m·rows and x m·cols values (checked above), bias rows; block b writes
    // rows 4b..4b+3 (< rows) of each of the m <= 4 output rows.
    unsafe { b.launch(cfg) }?;
    Ok(())
}

/// Threads per GEMV block: the columns are taken 32 at a time (`wide`: nf4_linear32_m1_f32), else
/// 8 at a time (or 1 at a time when cols is not a multiple of 8), as nf4.cu does; a count that
/// divides that work evenly keeps every thread busy to the end.
fn gemv_threads(cols: usize, wide: bool) -> u32 {
    let work = if wide {
        cols / 32
    } else if cols.is_multiple_of(8) {
        cols / 8
    } else {
        cols
    };
    for t in [256, 128, 64] {
        if work >= t && work.is_multiple_of(t) {
            return t as u32;
        }
    }
    (work.div_ceil(32) * 32).clamp(32, 256) as u32
}

/// dx[m, cols] += dy[m, rows] · W: the backward of [`nf4_linear`] through the frozen base
/// (`Nf4Tensor::matmul_t`, accumulating). W is dequantized to bf16 into `scratch`, dy rounded
/// to bf16, and cuBLAS multiplies them with f32 accumulation.
pub fn nf4_linear_backward_input(
    gpu: &Gpu,
    dx: &mut CudaSlice<f32>,
    dy: &CudaSlice<f32>,
    w: &Nf4Weight,
    m: usize,
    scratch: &mut Nf4Scratch,
) -> Result<()> {
    let op = "nf4_linear_backward_input";
    let (rows, cols) = (w.rows, w.cols);
    check_len(op, "dx", dx.len(), m * cols)?;
    check_len(op, "dy", dy.len(), m * rows)?;
    check_i32(op, "m*rows", m * rows)?;
    if m == 0 {
        return Ok(());
    }
    let Nf4Scratch { weight, input } = scratch;
    let wb = grown(gpu, weight, w.numel())?;
    nf4_dequantize_bf16(gpu, wb, w)?;
    let db = grown(gpu, input, m * rows)?;
    to_bf16(gpu, db, dy, m * rows)?;
    matmul_bf16(gpu, dx, db, wb, m, cols, rows, false, false, 1.0, 1.0)
}

#[cfg(test)]
mod tests {
    /// The code table in nf4.cu, written as bit patterns, is dsum-core's `NF4_CODE`.
    #[test]
    fn kernel_code_table_is_dsum_cores() {
        let src = crate::sources::NF4.code;
        let table = src
            .split("NF4_CODE_BITS[16] = {")
            .nth(1)
            .and_then(|s| s.split('}').next())
            .expect("NF4_CODE_BITS in nf4.cu");
        let bits: Vec<u32> = table
            .split(',')
            .map(|v| {
                let v = v.trim().trim_start_matches("0x").trim_end_matches('u');
                u32::from_str_radix(v, 16).expect("hex literal")
            })
            .collect();
        let want: Vec<u32> = dsum_core::quant::NF4_CODE
            .iter()
            .map(|c| c.to_bits())
            .collect();
        assert_eq!(bits, want);
    }

    #[test]
    fn gemv_threads_divide_the_work() {
        use super::gemv_threads;
        assert_eq!(gemv_threads(3072, true), 96); // 96 groups of 32
        assert_eq!(gemv_threads(3072, false), 128); // 384 groups of 8
        assert_eq!(gemv_threads(8192, true), 256);
        assert_eq!(gemv_threads(8192, false), 256);
        assert_eq!(gemv_threads(1032, false), 160); // 129 groups of 8: 5 warps
        assert_eq!(gemv_threads(1024, true), 32);
        assert_eq!(gemv_threads(33, false), 64);
        assert_eq!(gemv_threads(1, false), 32);
        assert_eq!(gemv_threads(100_001, false), 256);
    }
}
