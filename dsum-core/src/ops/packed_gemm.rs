//! Register-blocked f32 products `out[M,N] += inp[M,K] · Wᵀ` over weights packed in panels,
//! for the target the `gemm` crate has no SIMD kernel for: wasm32 with simd128 (the browser's
//! prompt prefill). GotoBLAS-style blocking, much reduced: W is packed once into panels of
//! `NR` rows interleaved along K, so the micro-kernel reads one contiguous panel while an
//! `MR × NR` tile of `out` stays in registers (4 × 8 = 8 f32x4 accumulators, 12 of the 16
//! vector registers a wasm engine has on x86-64 or 32 on arm64).
//!
//! The kernel is generic over a 4-lane vector ([`F32x4`]): the simd128 `v128` in the browser,
//! and a portable `[f32; 4]` twin with the same operations (a product then a sum, each rounded,
//! in the same order; wasm simd128 has no fused multiply-add), so the twin gives the same bits
//! and the tests on the x86 build machine check the blocking the browser runs.

/// Output rows per micro-tile.
const MR: usize = 4;
/// Weight rows (output columns) per panel; two 4-lane vectors.
pub(crate) const NR: usize = 8;
/// K values per pass: a panel slice of KC × NR values (8 kB) stays in L1 across the row tiles.
const KC: usize = 256;

/// Four f32 lanes with the operations the micro-kernel needs.
pub(crate) trait F32x4: Copy {
    fn zero() -> Self;
    fn splat(x: f32) -> Self;
    /// Four values at `p` (any alignment).
    ///
    /// # Safety
    /// `p..p + 4` must be readable.
    unsafe fn load(p: *const f32) -> Self;
    /// `self + a * b`, the product rounded before the sum.
    fn mul_add(self, a: Self, b: Self) -> Self;
    fn to_array(self) -> [f32; 4];
}

/// The portable twin, for the tests on machines without simd128.
#[cfg(test)]
#[derive(Clone, Copy)]
pub(crate) struct Portable([f32; 4]);

#[cfg(test)]
impl F32x4 for Portable {
    #[inline(always)]
    fn zero() -> Self {
        Portable([0.0; 4])
    }
    #[inline(always)]
    fn splat(x: f32) -> Self {
        Portable([x; 4])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees four readable values at p.
        Portable(unsafe { core::ptr::read_unaligned(p as *const [f32; 4]) })
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        Portable(core::array::from_fn(|l| self.0[l] + a.0[l] * b.0[l]))
    }
    #[inline(always)]
    fn to_array(self) -> [f32; 4] {
        self.0
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) use simd128::Simd128;

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128 {
    use super::F32x4;
    use core::arch::wasm32::*;

    #[derive(Clone, Copy)]
    pub(crate) struct Simd128(pub(crate) v128);

    impl F32x4 for Simd128 {
        #[inline(always)]
        fn zero() -> Self {
            Simd128(f32x4_splat(0.0))
        }
        #[inline(always)]
        fn splat(x: f32) -> Self {
            Simd128(f32x4_splat(x))
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: the caller guarantees 16 readable bytes at p; v128.load is unaligned.
            Simd128(unsafe { v128_load(p as *const v128) })
        }
        #[inline(always)]
        fn mul_add(self, a: Self, b: Self) -> Self {
            Simd128(f32x4_add(self.0, f32x4_mul(a.0, b.0)))
        }
        #[inline(always)]
        fn to_array(self) -> [f32; 4] {
            [
                f32x4_extract_lane::<0>(self.0),
                f32x4_extract_lane::<1>(self.0),
                f32x4_extract_lane::<2>(self.0),
                f32x4_extract_lane::<3>(self.0),
            ]
        }
    }
}

/// Length of `n` weight rows of `k` values once packed (the last panel padded with zeros).
pub(crate) fn packed_len(n: usize, k: usize) -> usize {
    n.div_ceil(NR) * NR * k
}

/// Packs `n` rows of `k` values into `dst` (`packed_len(n, k)` long): panel `q` holds, for
/// each p in 0..k, `row(q·NR + c)[p]` for c in 0..NR, zero past row n. `row(j, buf)` writes
/// row j into `buf` (a copy of an f32 row, or a quantized row decoded).
pub(crate) fn pack_rows(
    dst: &mut [f32],
    n: usize,
    k: usize,
    mut row: impl FnMut(usize, &mut [f32]),
) {
    assert_eq!(dst.len(), packed_len(n, k), "pack_rows: bad size");
    if k == 0 {
        return; // nothing to pack (and `chunks_exact_mut(0)` would panic)
    }
    let mut buf = vec![0f32; k];
    for (q, panel) in dst.chunks_exact_mut(NR * k).enumerate() {
        for c in 0..NR {
            let j = q * NR + c;
            if j < n {
                row(j, &mut buf);
            } else {
                buf.fill(0.0);
            }
            for (p, &v) in buf.iter().enumerate() {
                panel[p * NR + c] = v;
            }
        }
    }
}

/// out[i·ldo + j] += Σ_p inp[i·k + p] · W[j][p] for i < m, j < n, with W packed by
/// [`pack_rows`]. `ldo` is out's row stride, so a caller can fill a column strip.
pub(crate) fn gemm_packed<V: F32x4>(
    out: &mut [f32],
    ldo: usize,
    inp: &[f32],
    packed: &[f32],
    m: usize,
    k: usize,
    n: usize,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    assert!(
        ldo >= n
            && out.len() >= (m - 1) * ldo + n
            && inp.len() == m * k
            && packed.len() == packed_len(n, k),
        "gemm_packed: bad sizes"
    );
    for p0 in (0..k).step_by(KC) {
        let kc = KC.min(k - p0);
        for (q, panel) in packed.chunks_exact(NR * k).enumerate() {
            let b = &panel[p0 * NR..(p0 + kc) * NR];
            let j0 = q * NR;
            let nj = NR.min(n - j0);
            for i0 in (0..m).step_by(MR) {
                let mi = MR.min(m - i0);
                // Rows past the end repeat the last one; their results are not stored.
                let a: [&[f32]; MR] = core::array::from_fn(|t| {
                    let r = i0 + t.min(mi - 1);
                    &inp[r * k + p0..r * k + p0 + kc]
                });
                let acc = micro::<V>(a, b, kc);
                for (t, acc) in acc.iter().enumerate().take(mi) {
                    let (lo, hi) = (acc[0].to_array(), acc[1].to_array());
                    let dst = &mut out[(i0 + t) * ldo + j0..(i0 + t) * ldo + j0 + nj];
                    for (c, o) in dst.iter_mut().enumerate() {
                        *o += if c < 4 { lo[c] } else { hi[c - 4] };
                    }
                }
            }
        }
    }
}

/// The MR × NR tile Σ_p a[t][p] · b[p·NR + c] for p in 0..kc, accumulated in registers.
#[inline(always)]
fn micro<V: F32x4>(a: [&[f32]; MR], b: &[f32], kc: usize) -> [[V; 2]; MR] {
    assert!(b.len() == kc * NR && a.iter().all(|r| r.len() == kc));
    let mut acc = [[V::zero(); 2]; MR];
    let bp = b.as_ptr();
    for p in 0..kc {
        // SAFETY: p < kc, and b holds kc × NR values (asserted above).
        let (b0, b1) = unsafe { (V::load(bp.add(p * NR)), V::load(bp.add(p * NR + 4))) };
        for (acc, a) in acc.iter_mut().zip(&a) {
            // SAFETY: p < kc = a.len() (asserted above).
            let x = V::splat(unsafe { *a.get_unchecked(p) });
            acc[0] = acc[0].mul_add(x, b0);
            acc[1] = acc[1].mul_add(x, b1);
        }
    }
    acc
}

/// out[M,N] = inp[M,K] · weight[N,K]ᵀ (+ bias[N]) through [`pack_rows`] + [`gemm_packed`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn linear_packed<V: F32x4>(
    out: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
) {
    assert!(
        out.len() == m * n && inp.len() == m * k && weight.len() == n * k,
        "linear_packed: bad sizes"
    );
    fill_bias(out, bias, n);
    let mut packed = vec![0f32; packed_len(n, k)];
    pack_rows(&mut packed, n, k, |j, buf| {
        buf.copy_from_slice(&weight[j * k..(j + 1) * k])
    });
    gemm_packed::<V>(out, n, inp, &packed, m, k, n);
}

/// Every row of out[·, N] set to bias (or zero), the starting value the products add to.
pub(crate) fn fill_bias(out: &mut [f32], bias: Option<&[f32]>, n: usize) {
    match bias {
        Some(b) => {
            assert_eq!(b.len(), n);
            out.chunks_exact_mut(n).for_each(|r| r.copy_from_slice(b));
        }
        None => out.fill(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::matmul::linear_naive;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The blocking the browser runs (through the portable twin, bit-identical to
        /// simd128) against the f64 reference; k up to 600 crosses the KC boundary twice.
        #[test]
        fn linear_packed_matches_naive(
            m in 1usize..23, k in 0usize..600, n in 1usize..40, seed in 0u64..1000, with_bias: bool,
        ) {
            let mut s = seed;
            let mut rnd = || {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            };
            let inp: Vec<f32> = (0..m * k).map(|_| rnd()).collect();
            let w: Vec<f32> = (0..n * k).map(|_| rnd()).collect();
            let b: Vec<f32> = (0..n).map(|_| rnd()).collect();
            let bias = with_bias.then_some(b.as_slice());
            let mut want = vec![0f32; m * n];
            linear_naive(&mut want, &inp, &w, bias, m, k, n);
            let mut got = vec![f32::NAN; m * n];
            linear_packed::<Portable>(&mut got, &inp, &w, bias, m, k, n);
            for i in 0..m {
                for j in 0..n {
                    // A sequential f32 sum: within 1e-5 of the sum of |terms| of the f64 one.
                    let mag: f32 = (0..k).map(|p| (inp[i * k + p] * w[j * k + p]).abs()).sum();
                    let (g, e) = (got[i * n + j], want[i * n + j]);
                    prop_assert!((g - e).abs() <= 1e-5 * (1.0 + mag), "[{i},{j}] {g} vs {e}");
                }
            }
        }
    }

    /// k = 0 (an empty product): the output is the bias, or zero. The proptest above draws
    /// k = 0 about one run in ten; this pins it.
    #[test]
    fn empty_products_are_the_bias() {
        let (m, n) = (3, 5);
        let b: Vec<f32> = (0..n).map(|j| j as f32 - 1.5).collect();
        for bias in [None, Some(b.as_slice())] {
            let mut got = vec![f32::NAN; m * n];
            linear_packed::<Portable>(&mut got, &[], &[], bias, m, 0, n);
            for row in got.chunks_exact(n) {
                assert_eq!(row, bias.unwrap_or(&[0.0; 5]));
            }
        }
    }

    /// A strip of a wider output: columns outside 2..2+n and rows' tails are left alone.
    #[test]
    fn gemm_packed_writes_only_its_strip() {
        let (m, k, n, ldo) = (5, 9, 3, 7);
        let inp: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.25).collect();
        let w: Vec<f32> = (0..n * k).map(|i| 1.0 - i as f32 * 0.125).collect();
        let mut packed = vec![0f32; packed_len(n, k)];
        pack_rows(&mut packed, n, k, |j, buf| {
            buf.copy_from_slice(&w[j * k..(j + 1) * k])
        });
        let mut out = vec![-1f32; m * ldo];
        gemm_packed::<Portable>(&mut out[2..], ldo, &inp, &packed, m, k, n);
        let mut want = vec![0f32; m * n];
        linear_naive(&mut want, &inp, &w, None, m, k, n);
        for i in 0..m {
            for c in 0..ldo {
                let e = if (2..2 + n).contains(&c) {
                    want[i * n + c - 2] - 1.0
                } else {
                    -1.0
                };
                assert_eq!(out[i * ldo + c], e, "[{i},{c}]");
            }
        }
    }
}
