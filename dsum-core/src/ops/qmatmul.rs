//! Linear layers straight from ggml-quantized weights (GGUF Q4_0, Q4_1, Q8_0) borrowed from
//! the mapped file, so a decoding step streams 4.5-8.5 bits per weight instead of 32.
//!
//! The idea is llama.cpp's (decode inside the dot product, block by block), not its
//! arithmetic: ggml also quantizes the activations to 8 bits, while here every weight is
//! decoded to exactly the f32 value `io::gguf::quant` gives (same operations, same rounding,
//! no fused multiply-add) and multiplied in f32, so results differ from dequantizing at load
//! only by summation order. Few rows (decoding): each weight row is decoded in registers and
//! dotted with up to 4 input rows (AVX-512 or AVX2+FMA, detected at run time; a portable
//! path otherwise). Many rows (prompts): tiles of rows are decoded and handed to `gemm`, or
//! in the browser (wasm32 + simd128) decoded into `ops::packed_gemm`'s panels.
//! llama.cpp's Q/K row interleaving is undone by reading rows through an index map.
//! `qlinear_naive` (dequantize, then `linear_naive`) is the reference every path is tested against.

use std::sync::Arc;

use crate::io::gguf::quant::{self, GgmlType};
use crate::ops::matmul::{linear_forward, linear_naive};
use crate::tensor::{SharedBytes, Weight};

/// Rows at or below this use the row-streaming kernels (as `ops::matmul`).
const SMALL_M: usize = 16;

/// A `[rows, cols]` weight of a ggml block type, borrowed from the file's bytes.
#[derive(Clone)]
pub struct QMatrix {
    ty: GgmlType,
    shape: [usize; 2],
    row_bytes: usize,
    bytes: SharedBytes,
    offset: usize,
    /// Row `j` (Hugging Face order) is stored row `perm[j]`.
    perm: Option<Arc<[u32]>>,
}

impl QMatrix {
    /// Types with fused kernels; the others are dequantized at load.
    pub fn supports(ty: GgmlType) -> bool {
        matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0)
    }

    /// `rows × cols` values of `ty` at byte `offset` of `bytes`, rows read through `perm`.
    pub fn new(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        bytes: SharedBytes,
        offset: usize,
        perm: Option<Vec<u32>>,
    ) -> Result<Self, String> {
        if !Self::supports(ty) {
            return Err(format!("no fused kernel for tensor type {ty:?}"));
        }
        let (bs, bb) = ty
            .block()
            .map(|(a, b)| (a as usize, b as usize))
            .unwrap_or((1, 0));
        if cols == 0 || !cols.is_multiple_of(bs) {
            return Err(format!(
                "rows of {cols} values are not a whole number of {ty:?} blocks"
            ));
        }
        let row_bytes = cols / bs * bb;
        let end = rows
            .checked_mul(row_bytes)
            .and_then(|n| n.checked_add(offset));
        if end.is_none_or(|e| e > (*bytes).as_ref().len()) {
            return Err(format!(
                "{rows} rows of {row_bytes} bytes at offset {offset} lie beyond the data"
            ));
        }
        if let Some(p) = &perm {
            if p.len() != rows || p.iter().any(|&r| r as usize >= rows) {
                return Err(format!("row order of length {} for {rows} rows", p.len()));
            }
        }
        Ok(QMatrix {
            ty,
            shape: [rows, cols],
            row_bytes,
            bytes,
            offset,
            perm: perm.map(Arc::from),
        })
    }

    pub fn ty(&self) -> GgmlType {
        self.ty
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn rows(&self) -> usize {
        self.shape[0]
    }
    pub fn cols(&self) -> usize {
        self.shape[1]
    }
    pub fn numel(&self) -> usize {
        self.shape[0] * self.shape[1]
    }

    /// The encoded bytes of every row, in stored order, and the bytes per row.
    #[inline]
    fn stored_rows(&self) -> (&[u8], usize) {
        let end = self.offset + self.shape[0] * self.row_bytes;
        (&(*self.bytes).as_ref()[self.offset..end], self.row_bytes)
    }

    /// Where row `j` (Hugging Face order) is stored.
    #[inline]
    fn stored_index(&self, j: usize) -> usize {
        self.perm.as_ref().map_or(j, |p| p[j] as usize)
    }

    /// The encoded bytes of row `j` (Hugging Face order).
    pub fn row(&self, j: usize) -> &[u8] {
        let ((all, rb), r) = (self.stored_rows(), self.stored_index(j));
        &all[r * rb..(r + 1) * rb]
    }

    /// Row `j` as f32, exactly as `io::gguf::quant` decodes it.
    pub fn dequantize_row(&self, j: usize, out: &mut [f32]) {
        let decode: fn(&mut [f32], &[u8]) = match self.ty {
            GgmlType::Q4_0 => quant::dequant_q4_0,
            GgmlType::Q4_1 => quant::dequant_q4_1,
            _ => quant::dequant_q8_0,
        };
        decode(out, self.row(j));
    }

    /// The whole matrix as f32, rows in Hugging Face order.
    pub fn dequantize(&self) -> Vec<f32> {
        let c = self.cols();
        let mut out = vec![0f32; self.numel()];
        for (j, row) in out.chunks_exact_mut(c).enumerate() {
            self.dequantize_row(j, row);
        }
        out
    }
}

impl core::fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "QMatrix<{:?}>{:?}", self.ty, self.shape)
    }
}

/// The weight of a linear layer (or an embedding table, read by rows): f32 or quantized.
#[derive(Debug)]
pub enum LinearWeight {
    F32(Weight),
    Quant(QMatrix),
}

impl LinearWeight {
    pub fn numel(&self) -> usize {
        match self {
            LinearWeight::F32(w) => w.len(),
            LinearWeight::Quant(q) => q.numel(),
        }
    }

    pub fn is_quantized(&self) -> bool {
        matches!(self, LinearWeight::Quant(_))
    }

    /// out[M,N] = inp[M,K] · Wᵀ (+ bias[N]) for the `[N, K]` weight.
    pub fn forward(&self, out: &mut [f32], inp: &[f32], bias: Option<&[f32]>, m: usize) {
        match self {
            LinearWeight::F32(w) => {
                let (n, k) = (w.shape[0], w.len() / w.shape[0].max(1));
                linear_forward(out, inp, w, bias, m, k, n)
            }
            LinearWeight::Quant(q) => qlinear_forward(out, inp, q, bias, m),
        }
    }

    /// Row `j` into `out` (an embedding lookup).
    pub fn row_into(&self, j: usize, out: &mut [f32]) {
        match self {
            LinearWeight::F32(w) => {
                let k = out.len();
                out.copy_from_slice(&w[j * k..(j + 1) * k]);
            }
            LinearWeight::Quant(q) => q.dequantize_row(j, out),
        }
    }
}

/// out[M,N] = inp[M,K] · Wᵀ (+ bias[N]) with W the `[N, K]` quantized matrix.
pub fn qlinear_forward(out: &mut [f32], inp: &[f32], w: &QMatrix, bias: Option<&[f32]>, m: usize) {
    let (n, k) = (w.rows(), w.cols());
    assert!(
        out.len() == m * n && inp.len() == m * k && bias.is_none_or(|b| b.len() == n),
        "qlinear_forward: bad sizes"
    );
    if m == 0 || n == 0 {
        return;
    }
    if m <= SMALL_M {
        qlinear_small_m(out, inp, w, bias, m, Isa::detect());
    } else {
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        qlinear_packed::<crate::ops::packed_gemm::Simd128>(out, inp, w, bias, m);
        #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
        qlinear_tiles(out, inp, w, bias, m);
    }
}

/// Reference: dequantize the whole matrix, then the f64 triple loop.
pub fn qlinear_naive(out: &mut [f32], inp: &[f32], w: &QMatrix, bias: Option<&[f32]>, m: usize) {
    linear_naive(out, inp, &w.dequantize(), bias, m, w.cols(), w.rows());
}

/// Which kernel family runs the few-rows path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    Portable,
    /// Four-lane vectors: simd128 in the browser; in the tests, the portable twin of it.
    #[cfg(any(test, all(target_arch = "wasm32", target_feature = "simd128")))]
    Lanes,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("f16c") {
                return Isa::Avx512;
            }
            if std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
                && std::is_x86_feature_detected!("f16c")
            {
                return Isa::Avx2;
            }
        }
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        return Isa::Lanes;
        #[allow(unreachable_code)]
        Isa::Portable
    }
}

fn qlinear_small_m(
    out: &mut [f32],
    inp: &[f32],
    w: &QMatrix,
    bias: Option<&[f32]>,
    m: usize,
    isa: Isa,
) {
    // As `matmul::linear_small_m`: blocks of output features, each gathered [j][i] and
    // scattered afterwards (for one input row the two layouts coincide).
    const BLOCK: usize = 64;
    let n = w.rows();
    let run_block = |bi: usize, buf: &mut [f32]| {
        let j0 = bi * BLOCK;
        let j1 = (j0 + BLOCK).min(n);
        qgemv_block(buf, inp, w, m, j0, j1, isa);
        if let Some(b) = bias {
            for j in j0..j1 {
                for i in 0..m {
                    buf[(j - j0) * m + i] += b[j];
                }
            }
        }
    };
    let mut tmp = if m == 1 {
        Vec::new()
    } else {
        vec![0f32; n * m]
    };
    let dst: &mut [f32] = if m == 1 { out } else { &mut tmp };
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        // 2^16 values ≈ 40 kB of Q4 data: enough work to pay for the fork.
        if n * w.cols() >= 1 << 16 {
            dst.par_chunks_mut(BLOCK * m)
                .enumerate()
                .for_each(|(bi, buf)| run_block(bi, buf));
        } else {
            dst.chunks_mut(BLOCK * m)
                .enumerate()
                .for_each(|(bi, buf)| run_block(bi, buf));
        }
    }
    #[cfg(not(feature = "rayon"))]
    dst.chunks_mut(BLOCK * m)
        .enumerate()
        .for_each(|(bi, buf)| run_block(bi, buf));
    if m > 1 {
        for j in 0..n {
            for i in 0..m {
                out[i * n + j] = tmp[j * m + i];
            }
        }
    }
}

/// buf[(j - j0) * m + i] = inp[i] · W[j] for j in j0..j1, every input row i.
fn qgemv_block(
    buf: &mut [f32],
    inp: &[f32],
    w: &QMatrix,
    m: usize,
    j0: usize,
    j1: usize,
    isa: Isa,
) {
    let k = w.cols();
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::detect` (or the test that picked it) checked the CPU features.
        Isa::Avx512 => unsafe { x86::gemv_avx512(buf, inp, w, m, j0, j1) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { x86::gemv_avx2(buf, inp, w, m, j0, j1) },
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        Isa::Lanes => lanes::gemv::<crate::ops::packed_gemm::Simd128>(buf, inp, w, m, j0, j1),
        #[cfg(all(test, not(all(target_arch = "wasm32", target_feature = "simd128"))))]
        Isa::Lanes => lanes::gemv::<crate::ops::packed_gemm::Portable>(buf, inp, w, m, j0, j1),
        Isa::Portable => {
            let mut row = vec![0f32; k];
            for j in j0..j1 {
                w.dequantize_row(j, &mut row);
                for i in 0..m {
                    buf[(j - j0) * m + i] = crate::ops::matmul::dot(&inp[i * k..(i + 1) * k], &row);
                }
            }
        }
    }
}

/// Many input rows: decode `TILE` weight rows at a time and multiply them with `gemm`; the
/// decoding is paid once per tile, not once per input row.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn qlinear_tiles(out: &mut [f32], inp: &[f32], w: &QMatrix, bias: Option<&[f32]>, m: usize) {
    const TILE: usize = 64;
    let (n, k) = (w.rows(), w.cols());
    let ntiles = n.div_ceil(TILE);
    let run_tile = |ti: usize| -> Vec<f32> {
        let (j0, j1) = (ti * TILE, ((ti + 1) * TILE).min(n));
        let nt = j1 - j0;
        let mut wt = vec![0f32; nt * k];
        for (jj, row) in wt.chunks_exact_mut(k).enumerate() {
            w.dequantize_row(j0 + jj, row);
        }
        let mut y = vec![0f32; m * nt];
        // SAFETY: y is [m, nt] row-major, inp [m, k] row-major, wt [nt, k] read as wtᵀ [k, nt]
        // through strides; every pointer covers exactly what the sizes address.
        unsafe {
            gemm::gemm(
                m,
                nt,
                k,
                y.as_mut_ptr(),
                1,
                nt as isize,
                false,
                inp.as_ptr(),
                1,
                k as isize,
                wt.as_ptr(),
                k as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        y
    };
    #[cfg(feature = "rayon")]
    let tiles: Vec<Vec<f32>> = {
        use rayon::prelude::*;
        (0..ntiles).into_par_iter().map(run_tile).collect()
    };
    #[cfg(not(feature = "rayon"))]
    let tiles: Vec<Vec<f32>> = (0..ntiles).map(run_tile).collect();
    for (ti, y) in tiles.iter().enumerate() {
        let j0 = ti * TILE;
        let nt = y.len() / m;
        for i in 0..m {
            let dst = &mut out[i * n + j0..i * n + j0 + nt];
            dst.copy_from_slice(&y[i * nt..(i + 1) * nt]);
            if let Some(b) = bias {
                dst.iter_mut()
                    .zip(&b[j0..j0 + nt])
                    .for_each(|(o, b)| *o += b);
            }
        }
    }
}

/// Many input rows in the browser: the same tiles, decoded straight into the weight panels of
/// `packed_gemm` (the `gemm` crate has no wasm SIMD kernel), each product added into its
/// column strip of `out`.
#[cfg(any(test, all(target_arch = "wasm32", target_feature = "simd128")))]
fn qlinear_packed<V: crate::ops::packed_gemm::F32x4>(
    out: &mut [f32],
    inp: &[f32],
    w: &QMatrix,
    bias: Option<&[f32]>,
    m: usize,
) {
    use crate::ops::packed_gemm::{fill_bias, gemm_packed, pack_rows, packed_len, NR};
    // A multiple of NR, so a shorter last tile packs into a prefix of the buffer.
    const TILE: usize = 8 * NR;
    let (n, k) = (w.rows(), w.cols());
    fill_bias(out, bias, n);
    let mut panels = vec![0f32; packed_len(TILE.min(n), k)];
    for j0 in (0..n).step_by(TILE) {
        let nt = TILE.min(n - j0);
        let panels = &mut panels[..packed_len(nt, k)];
        pack_rows(panels, nt, k, |jj, row| w.dequantize_row(j0 + jj, row));
        gemm_packed::<V>(&mut out[j0..], n, inp, panels, m, k, nt);
    }
}

/// The fused few-rows kernel of the browser, written once over four-lane vectors (simd128
/// there, the portable twin in the tests). As the x86 kernels below, each block is decoded
/// with the scalar code's operations (`quant::dequant_*`: the product rounded, then the sum),
/// so each weight equals the scalar one; only the f32 sums run in another order.
#[cfg(any(test, all(target_arch = "wasm32", target_feature = "simd128")))]
mod lanes {
    use super::QMatrix;
    use crate::io::gguf::quant::GgmlType;
    use crate::ops::packed_gemm::F32x4;

    /// [`F32x4`] plus the integer decoding of a block's packed values.
    pub(crate) trait QLanes: F32x4 {
        /// The 32 four-bit values in the 16 bytes at `p`, as f32: the low nibbles of bytes
        /// 0..16 (values 0..16 of the block), then the high nibbles (values 16..32).
        ///
        /// # Safety
        /// `p..p + 16` must be readable.
        unsafe fn nibbles(p: *const u8) -> [Self; 8];
        /// The 32 i8 values at `p`, as f32.
        ///
        /// # Safety
        /// `p..p + 32` must be readable.
        unsafe fn signed_bytes(p: *const u8) -> [Self; 8];
    }

    #[cfg(test)]
    impl QLanes for crate::ops::packed_gemm::Portable {
        unsafe fn nibbles(p: *const u8) -> [Self; 8] {
            // SAFETY: the caller guarantees 16 readable bytes.
            let b: [u8; 16] = unsafe { core::ptr::read_unaligned(p as *const [u8; 16]) };
            core::array::from_fn(|v| {
                let f = |l: usize| {
                    let byte = b[(v % 4) * 4 + l];
                    (if v < 4 { byte & 15 } else { byte >> 4 }) as f32
                };
                // SAFETY: four values on the stack.
                unsafe { Self::load([f(0), f(1), f(2), f(3)].as_ptr()) }
            })
        }
        unsafe fn signed_bytes(p: *const u8) -> [Self; 8] {
            // SAFETY: the caller guarantees 32 readable bytes.
            let b: [u8; 32] = unsafe { core::ptr::read_unaligned(p as *const [u8; 32]) };
            core::array::from_fn(|v| {
                let f = |l: usize| b[v * 4 + l] as i8 as f32;
                // SAFETY: four values on the stack.
                unsafe { Self::load([f(0), f(1), f(2), f(3)].as_ptr()) }
            })
        }
    }

    /// The 16 i8 lanes of `v` as four f32x4 vectors, in lane order. Nibbles (0..16) are
    /// non-negative, so the signed widening serves them too.
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    #[inline(always)]
    fn widen_i8(v: core::arch::wasm32::v128) -> [crate::ops::packed_gemm::Simd128; 4] {
        use core::arch::wasm32::*;
        let (l, h) = (i16x8_extend_low_i8x16(v), i16x8_extend_high_i8x16(v));
        [
            i32x4_extend_low_i16x8(l),
            i32x4_extend_high_i16x8(l),
            i32x4_extend_low_i16x8(h),
            i32x4_extend_high_i16x8(h),
        ]
        .map(|q| crate::ops::packed_gemm::Simd128(f32x4_convert_i32x4(q)))
    }

    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    impl QLanes for crate::ops::packed_gemm::Simd128 {
        #[inline(always)]
        unsafe fn nibbles(p: *const u8) -> [Self; 8] {
            use core::arch::wasm32::*;
            // SAFETY: the caller guarantees 16 readable bytes; v128.load is unaligned.
            let b = unsafe { v128_load(p as *const v128) };
            let (a, c) = (
                widen_i8(v128_and(b, u8x16_splat(15))),
                widen_i8(u8x16_shr(b, 4)),
            );
            [a[0], a[1], a[2], a[3], c[0], c[1], c[2], c[3]]
        }
        #[inline(always)]
        unsafe fn signed_bytes(p: *const u8) -> [Self; 8] {
            use core::arch::wasm32::*;
            // SAFETY: the caller guarantees 32 readable bytes; v128.load is unaligned.
            let (a, c) = unsafe {
                (
                    widen_i8(v128_load(p as *const v128)),
                    widen_i8(v128_load(p.add(16) as *const v128)),
                )
            };
            [a[0], a[1], a[2], a[3], c[0], c[1], c[2], c[3]]
        }
    }

    /// The f16 at `p` (two readable bytes), as f32.
    #[inline(always)]
    unsafe fn f16_at(p: *const u8) -> f32 {
        // SAFETY: the caller guarantees two readable bytes.
        half::f16::from_le_bytes(unsafe { [*p, *p.add(1)] }).to_f32()
    }

    /// One quantized row (`w`: whole blocks of `ty`) dotted with `x` (32 values per block).
    #[inline(always)]
    fn row_dot<V: QLanes>(ty: GgmlType, w: &[u8], x: &[f32]) -> f32 {
        let bb = match ty {
            GgmlType::Q4_1 => 20,
            GgmlType::Q4_0 => 18,
            _ => 34,
        };
        let nb = w.len() / bb;
        assert!(x.len() >= nb * 32, "row_dot: input shorter than the row");
        let (zero, one) = (V::zero(), V::splat(1.0));
        let mut acc = [zero; 8];
        for (b, blk) in w.chunks_exact(bb).enumerate() {
            let p = blk.as_ptr();
            // SAFETY: `blk` holds one whole block (bb bytes): the scales at 0..4 and the
            // packed values at 2..18, 4..20 or 2..34; `x` holds 32 values from b * 32.
            unsafe {
                let d = V::splat(f16_at(p));
                let v: [V; 8] = match ty {
                    // q * d + m
                    GgmlType::Q4_1 => {
                        let m = V::splat(f16_at(p.add(2)));
                        V::nibbles(p.add(4)).map(|q| m.mul_add(q, d))
                    }
                    // (q - 8) * d; q - 8 is exact
                    GgmlType::Q4_0 => {
                        let minus8 = V::splat(-8.0);
                        V::nibbles(p.add(2)).map(|q| zero.mul_add(minus8.mul_add(q, one), d))
                    }
                    // q * d
                    _ => V::signed_bytes(p.add(2)).map(|q| zero.mul_add(q, d)),
                };
                let xb = x.as_ptr().add(b * 32);
                for (t, a) in acc.iter_mut().enumerate() {
                    *a = a.mul_add(V::load(xb.add(4 * t)), v[t]);
                }
            }
        }
        let s = acc[1..].iter().fold(acc[0], |s, &a| s.mul_add(a, one));
        let l = s.to_array();
        (l[0] + l[1]) + (l[2] + l[3])
    }

    /// buf[(j - j0) * m + i] = inp[i] · W[j] for j in j0..j1 (`qgemv_block`'s contract).
    pub(super) fn gemv<V: QLanes>(
        buf: &mut [f32],
        inp: &[f32],
        w: &QMatrix,
        m: usize,
        j0: usize,
        j1: usize,
    ) {
        let (k, ty) = (w.cols(), w.ty());
        for j in j0..j1 {
            let row = w.row(j);
            for i in 0..m {
                buf[(j - j0) * m + i] = row_dot::<V>(ty, row, &inp[i * k..(i + 1) * k]);
            }
        }
    }
}

/// The fused x86 kernels. Every block is decoded with the scalar code's operations (a
/// product then a sum for Q4_1, each rounded; a product for Q4_0 and Q8_0), lane by lane,
/// so each weight equals `quant::dequant_*`'s; only the f32 sums run in another order.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::QMatrix;
    use crate::io::gguf::quant::GgmlType;
    use core::arch::x86_64::*;

    /// Input rows dotted with one decoded block (AVX-512 has registers for 4 rows × 2
    /// blocks in flight; AVX2 for 2 × 1).
    const MI_512: usize = 4;
    const MI_256: usize = 2;

    /// Runs `$body!(MI)` with MI the constant for `mi` (1..=$max), so each row count gets
    /// its own register-allocated kernel.
    macro_rules! by_mi {
        ($mi:expr, $f:ident, $($arg:expr),*) => {
            match $mi {
                1 => $f::<1>($($arg),*),
                2 => $f::<2>($($arg),*),
                3 => $f::<3>($($arg),*),
                _ => $f::<4>($($arg),*),
            }
        };
    }

    macro_rules! gemv_driver {
        ($name:ident, $feature:literal, $mi_max:expr, $rows:ident) => {
            #[target_feature(enable = $feature)]
            pub(super) unsafe fn $name(
                buf: &mut [f32],
                inp: &[f32],
                w: &QMatrix,
                m: usize,
                j0: usize,
                j1: usize,
            ) {
                let (k, ty) = (w.cols(), w.ty());
                let (all, rb) = w.stored_rows();
                if m == 1 {
                    // Decoding one sequence: nothing to regroup.
                    let x0 = &inp[..k];
                    let x = [x0, x0, x0, x0];
                    for j in j0..j1 {
                        let r = w.stored_index(j);
                        buf[j - j0] = $rows::<1>(ty, &all[r * rb..(r + 1) * rb], &x)[0];
                    }
                    return;
                }
                for j in j0..j1 {
                    let r = w.stored_index(j);
                    let row = &all[r * rb..(r + 1) * rb];
                    let mut i = 0;
                    while i < m {
                        let mi = ($mi_max).min(m - i);
                        // Rows past the last repeat it; their sums are not stored.
                        let at = |t: usize| (i + t.min(mi - 1)) * k;
                        let (a0, a1, a2, a3) = (at(0), at(1), at(2), at(3));
                        let x = [
                            &inp[a0..a0 + k],
                            &inp[a1..a1 + k],
                            &inp[a2..a2 + k],
                            &inp[a3..a3 + k],
                        ];
                        let s = by_mi!(mi, $rows, ty, row, &x);
                        buf[(j - j0) * m + i..(j - j0) * m + i + mi].copy_from_slice(&s[..mi]);
                        i += mi;
                    }
                }
            }
        };
    }
    gemv_driver!(gemv_avx512, "avx512f,f16c", MI_512, rows_avx512);
    gemv_driver!(gemv_avx2, "avx2,fma,f16c", MI_256, rows_avx2);

    /// One f16 at `p`, broadcast (f16 → f32 is exact, as `half` converts it).
    macro_rules! f16_at {
        ($p:expr) => {
            _mm_cvtph_ps(_mm_cvtsi32_si128(
                u16::from_le_bytes([*$p, *$p.add(1)]) as i32
            ))
        };
    }

    /// acc[set][row][v] += x[row][block v-th vector] * decoded[v], over every block of a
    /// row; SETS independent accumulator sets hide the FMA latency.
    macro_rules! fused_row {
        ($w:expr, $x:expr, $MI:ident, $bb:expr, $nv:expr, $sets:expr, $lanes:expr,
         $vec:ty, $zero:ident, $load:ident, $fma:ident, $add:ident, $hsum:ident,
         |$p:ident| $decode:expr) => {{
            let w: &[u8] = $w;
            let nb = w.len() / $bb;
            let mut acc: [[[$vec; $nv]; $MI]; $sets] = [[[$zero(); $nv]; $MI]; $sets];
            let mut bi = 0;
            while bi < nb {
                for s in 0..$sets {
                    if bi + s < nb {
                        let $p: *const u8 = w.as_ptr().add((bi + s) * $bb);
                        let v: [$vec; $nv] = $decode;
                        let off = (bi + s) * 32;
                        for a in 0..$MI {
                            for t in 0..$nv {
                                let xv = $load($x[a].as_ptr().add(off + t * $lanes));
                                acc[s][a][t] = $fma(xv, v[t], acc[s][a][t]);
                            }
                        }
                    }
                }
                bi += $sets;
            }
            let mut out = [0f32; 4];
            for a in 0..$MI {
                let mut sum = acc[0][a][0];
                for s in 0..$sets {
                    for t in 0..$nv {
                        if s + t > 0 {
                            sum = $add(sum, acc[s][a][t]);
                        }
                    }
                }
                out[a] = $hsum(sum);
            }
            out
        }};
    }

    /// Dot products of one quantized row with MI input rows (AVX-512: 16 lanes, a block is 2
    /// vectors). Q4: the 16 possible weights of a block are computed once into a register
    /// and picked by nibble with a permute.
    #[target_feature(enable = "avx512f,f16c")]
    unsafe fn rows_avx512<const MI: usize>(ty: GgmlType, w: &[u8], x: &[&[f32]; 4]) -> [f32; 4] {
        let iota = _mm512_setr_ps(
            0., 1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12., 13., 14., 15.,
        );
        macro_rules! row512 {
            ($bb:expr, |$p:ident| $decode:expr) => {
                fused_row!(
                    w,
                    x,
                    MI,
                    $bb,
                    2,
                    2,
                    16,
                    __m512,
                    _mm512_setzero_ps,
                    _mm512_loadu_ps,
                    _mm512_fmadd_ps,
                    _mm512_add_ps,
                    _mm512_reduce_add_ps,
                    |$p| $decode
                )
            };
        }
        match ty {
            GgmlType::Q4_1 => row512!(20, |p| {
                let d = _mm512_broadcastss_ps(f16_at!(p));
                let m = _mm512_broadcastss_ps(f16_at!(p.add(2)));
                // table[q] = q * d + m, two roundings as in dequant_q4_1.
                let table = _mm512_add_ps(_mm512_mul_ps(iota, d), m);
                let q = _mm512_cvtepu8_epi32(_mm_loadu_si128(p.add(4) as *const __m128i));
                // The permute reads the low 4 bits of each index: the low nibble as is.
                [
                    _mm512_permutexvar_ps(q, table),
                    _mm512_permutexvar_ps(_mm512_srli_epi32::<4>(q), table),
                ]
            }),
            GgmlType::Q4_0 => row512!(18, |p| {
                let d = _mm512_broadcastss_ps(f16_at!(p));
                // table[q] = (q - 8) * d, as in dequant_q4_0.
                let table = _mm512_mul_ps(_mm512_sub_ps(iota, _mm512_set1_ps(8.0)), d);
                let q = _mm512_cvtepu8_epi32(_mm_loadu_si128(p.add(2) as *const __m128i));
                [
                    _mm512_permutexvar_ps(q, table),
                    _mm512_permutexvar_ps(_mm512_srli_epi32::<4>(q), table),
                ]
            }),
            _ => row512!(34, |p| {
                let d = _mm512_broadcastss_ps(f16_at!(p));
                let lo = _mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(2) as *const __m128i));
                let hi = _mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(18) as *const __m128i));
                [
                    _mm512_mul_ps(_mm512_cvtepi32_ps(lo), d),
                    _mm512_mul_ps(_mm512_cvtepi32_ps(hi), d),
                ]
            }),
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum256(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
    }

    /// The same with 8 lanes (a block is 4 vectors); the nibbles are converted and scaled
    /// directly (a 16-entry table does not fit one AVX2 permute).
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn rows_avx2<const MI: usize>(ty: GgmlType, w: &[u8], x: &[&[f32]; 4]) -> [f32; 4] {
        macro_rules! row256 {
            ($bb:expr, |$p:ident| $decode:expr) => {
                fused_row!(
                    w,
                    x,
                    MI,
                    $bb,
                    4,
                    1,
                    8,
                    __m256,
                    _mm256_setzero_ps,
                    _mm256_loadu_ps,
                    _mm256_fmadd_ps,
                    _mm256_add_ps,
                    hsum256,
                    |$p| $decode
                )
            };
        }
        /// The 32 nibbles of 16 bytes at `p` as i32 lanes: low nibbles (values 0..16), then high.
        macro_rules! nibbles {
            ($p:expr) => {{
                let b = _mm_loadu_si128($p as *const __m128i);
                let a = _mm256_cvtepu8_epi32(b);
                let c = _mm256_cvtepu8_epi32(_mm_srli_si128::<8>(b));
                let f = _mm256_set1_epi32(0x0f);
                [
                    _mm256_and_si256(a, f),
                    _mm256_and_si256(c, f),
                    _mm256_srli_epi32::<4>(a),
                    _mm256_srli_epi32::<4>(c),
                ]
            }};
        }
        match ty {
            GgmlType::Q4_1 => row256!(20, |p| {
                let d = _mm256_broadcastss_ps(f16_at!(p));
                let m = _mm256_broadcastss_ps(f16_at!(p.add(2)));
                let q = nibbles!(p.add(4));
                core::array::from_fn(|t| {
                    _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(q[t]), d), m)
                })
            }),
            GgmlType::Q4_0 => row256!(18, |p| {
                let d = _mm256_broadcastss_ps(f16_at!(p));
                let q = nibbles!(p.add(2));
                let eight = _mm256_set1_epi32(8);
                core::array::from_fn(|t| {
                    _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q[t], eight)), d)
                })
            }),
            _ => row256!(34, |p| {
                let d = _mm256_broadcastss_ps(f16_at!(p));
                core::array::from_fn(|t| {
                    let q = _mm_loadl_epi64(p.add(2 + 8 * t) as *const __m128i);
                    _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d)
                })
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;
    use proptest::prelude::*;

    /// Every kernel family this CPU can run, not only the one `detect` picks.
    fn isas() -> Vec<Isa> {
        #[allow(unused_mut)]
        let mut v = vec![Isa::Portable, Isa::Lanes];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
                && std::is_x86_feature_detected!("f16c")
            {
                v.push(Isa::Avx2);
            }
            if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("f16c") {
                v.push(Isa::Avx512);
            }
        }
        v
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        /// Uniform in [-0.5, 0.5).
        fn f(&mut self) -> f32 {
            self.next() as f32 / (1u64 << 31) as f32 - 0.5
        }
    }

    /// Random blocks of `ty` for `rows × cols` values: random nibbles / bytes, f16 scales of
    /// realistic size (and Q4_1 minimums), so decoding exercises rounding.
    fn random_bytes(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
        let (_, bb) = ty.block().unwrap();
        let nblocks = rows * cols / 32;
        let mut v = Vec::with_capacity(nblocks * bb as usize);
        for _ in 0..nblocks {
            let scale = f16::from_f32(rng.f() * 0.2).to_le_bytes();
            v.extend(scale);
            if ty == GgmlType::Q4_1 {
                v.extend(f16::from_f32(rng.f()).to_le_bytes());
            }
            let nq = if ty == GgmlType::Q8_0 { 32 } else { 16 };
            v.extend((0..nq).map(|_| rng.next() as u8));
        }
        v
    }

    fn qmatrix(ty: GgmlType, n: usize, k: usize, permuted: bool, rng: &mut Rng) -> QMatrix {
        // A few bytes of padding in front: the matrix starts at an offset, as in a file.
        let mut bytes = vec![7u8; 3];
        bytes.extend(random_bytes(ty, n, k, rng));
        let perm = permuted.then(|| {
            let mut p: Vec<u32> = (0..n as u32).collect();
            for i in (1..n).rev() {
                p.swap(i, rng.next() as usize % (i + 1));
            }
            p
        });
        let shared: SharedBytes = Arc::new(bytes);
        QMatrix::new(ty, n, k, shared, 3, perm).unwrap()
    }

    const TYPES: [GgmlType; 3] = [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0];

    /// |got - want| within 1e-5 of the sum of |terms| (a reordered f32 sum can differ by
    /// that much, however much the terms cancel).
    fn close(got: &[f32], want: &[f32], inp: &[f32], w: &[f32], m: usize, k: usize, n: usize) {
        for i in 0..m {
            for j in 0..n {
                let mag: f32 = (0..k).map(|p| (inp[i * k + p] * w[j * k + p]).abs()).sum();
                let (g, e) = (got[i * n + j], want[i * n + j]);
                assert!(
                    (g - e).abs() <= 1e-5 * (1.0 + mag),
                    "[{i},{j}] {g} vs {e} (m {m}, k {k}, n {n})"
                );
            }
        }
    }

    #[test]
    fn dequantize_equals_quant_rs_through_the_row_order() {
        let mut rng = Rng(3);
        for ty in TYPES {
            let q = qmatrix(ty, 6, 64, true, &mut rng);
            let raw = &(*q.bytes).as_ref()[3..];
            let plain = quant::dequantize(ty, raw, 6 * 64).unwrap();
            let perm = q.perm.clone().unwrap();
            let got = q.dequantize();
            for j in 0..6 {
                let src = perm[j] as usize;
                assert_eq!(
                    got[j * 64..(j + 1) * 64]
                        .iter()
                        .map(|x| x.to_bits())
                        .collect::<Vec<_>>(),
                    plain[src * 64..(src + 1) * 64]
                        .iter()
                        .map(|x| x.to_bits())
                        .collect::<Vec<_>>(),
                    "{ty:?} row {j}"
                );
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let b: SharedBytes = Arc::new(vec![0u8; 40]);
        assert!(QMatrix::new(GgmlType::Q4_1, 2, 32, b.clone(), 0, None).is_ok());
        assert!(QMatrix::new(GgmlType::Q4_1, 2, 32, b.clone(), 1, None).is_err());
        assert!(QMatrix::new(GgmlType::Q4_1, 1, 33, b.clone(), 0, None).is_err());
        assert!(QMatrix::new(GgmlType::Q4K, 1, 256, b.clone(), 0, None).is_err());
        assert!(QMatrix::new(GgmlType::Q4_1, 2, 32, b.clone(), 0, Some(vec![0, 2])).is_err());
        assert!(QMatrix::new(GgmlType::Q4_1, usize::MAX, 32, b, 0, None).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Each few-rows kernel (every ISA this CPU has) against dequantize + linear_naive.
        #[test]
        fn each_fused_kernel_matches_naive(
            t in 0usize..3, m in 1usize..11, kb in 1usize..7, n in 1usize..40,
            permuted: bool, seed in 0u64..1000,
        ) {
            let (ty, k) = (TYPES[t], kb * 32);
            let mut rng = Rng(seed);
            let q = qmatrix(ty, n, k, permuted, &mut rng);
            let inp: Vec<f32> = (0..m * k).map(|_| rng.f()).collect();
            let mut want = vec![0f32; m * n];
            qlinear_naive(&mut want, &inp, &q, None, m);
            let wf = q.dequantize();
            for isa in isas() {
                let mut got = vec![f32::NAN; m * n];
                qlinear_small_m(&mut got, &inp, &q, None, m, isa);
                close(&got, &want, &inp, &wf, m, k, n);
            }
        }

        /// The public entry (few rows and the tiled gemm path for many), with bias.
        #[test]
        fn qlinear_forward_matches_naive(
            t in 0usize..3, m in 1usize..40, kb in 1usize..5, n in 1usize..150,
            permuted: bool, with_bias: bool, seed in 0u64..1000,
        ) {
            let (ty, k) = (TYPES[t], kb * 32);
            let mut rng = Rng(seed);
            let q = qmatrix(ty, n, k, permuted, &mut rng);
            let inp: Vec<f32> = (0..m * k).map(|_| rng.f()).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.f()).collect();
            let bias = with_bias.then_some(b.as_slice());
            let mut want = vec![0f32; m * n];
            qlinear_naive(&mut want, &inp, &q, bias, m);
            let mut got = vec![f32::NAN; m * n];
            qlinear_forward(&mut got, &inp, &q, bias, m);
            close(&got, &want, &inp, &q.dequantize(), m, k, n);
            // The enum dispatches to the same kernel; its row lookup is the dequantized row.
            let lw = LinearWeight::Quant(q.clone());
            let mut again = vec![0f32; m * n];
            lw.forward(&mut again, &inp, bias, m);
            prop_assert_eq!(&again, &got);
            let mut row = vec![0f32; k];
            lw.row_into(n - 1, &mut row);
            prop_assert_eq!(&row[..], &q.dequantize()[(n - 1) * k..]);
        }

        /// The browser's many-rows path, through the portable twin of its simd128 kernel.
        #[test]
        fn qlinear_packed_matches_naive(
            t in 0usize..3, m in 1usize..40, kb in 1usize..12, n in 1usize..150,
            permuted: bool, with_bias: bool, seed in 0u64..1000,
        ) {
            let (ty, k) = (TYPES[t], kb * 32);
            let mut rng = Rng(seed);
            let q = qmatrix(ty, n, k, permuted, &mut rng);
            let inp: Vec<f32> = (0..m * k).map(|_| rng.f()).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.f()).collect();
            let bias = with_bias.then_some(b.as_slice());
            let mut want = vec![0f32; m * n];
            qlinear_naive(&mut want, &inp, &q, bias, m);
            let mut got = vec![f32::NAN; m * n];
            qlinear_packed::<crate::ops::packed_gemm::Portable>(&mut got, &inp, &q, bias, m);
            close(&got, &want, &inp, &q.dequantize(), m, k, n);
        }
    }
}
