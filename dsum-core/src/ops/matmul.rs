//! Linear layers `out = inp · Wᵀ + b` with PyTorch's weight layout (W is `[N, K]`).
//!
//! Two fast paths: few rows (decoding: batch × beams) reads every weight row once and dots it
//! with all input rows while it sits in L1 — the step is bound by memory bandwidth, and
//! packing W for a GEMM would triple the traffic; many rows (encoder, prompts) go to the
//! `gemm` crate, or in the browser (wasm32 + simd128, which `gemm` has no kernel for) to
//! `ops::packed_gemm`. `linear_naive` is the obviously-correct reference all are tested against.

/// Rows at or below this use the weight-streaming kernel.
const SMALL_M: usize = 16;

/// out[M,N] = inp[M,K] · weight[N,K]ᵀ (+ bias[N]).
pub fn linear_forward(
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
        "linear_forward: bad sizes"
    );
    if let Some(b) = bias {
        assert_eq!(b.len(), n);
    }
    if m == 0 || n == 0 {
        return;
    }
    if m <= SMALL_M || k == 0 {
        linear_small_m(out, inp, weight, bias, m, k, n);
    } else {
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        super::packed_gemm::linear_packed::<super::packed_gemm::Simd128>(
            out, inp, weight, bias, m, k, n,
        );
        #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
        linear_gemm(out, inp, weight, bias, m, k, n);
    }
}

/// Reference implementation: a plain triple loop in f64.
pub fn linear_naive(
    out: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = bias.map(|b| b[j] as f64).unwrap_or(0.0);
            for p in 0..k {
                acc += inp[i * k + p] as f64 * weight[j * k + p] as f64;
            }
            out[i * n + j] = acc as f32;
        }
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn linear_gemm(
    out: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
) {
    if let Some(b) = bias {
        for row in out.chunks_exact_mut(n) {
            row.copy_from_slice(b);
        }
    }
    #[cfg(feature = "rayon")]
    let par = if m * n * k >= 1 << 18 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    #[cfg(not(feature = "rayon"))]
    let par = gemm::Parallelism::None;
    // SAFETY: the pointers cover exactly m×n, m×k and n×k elements (asserted by the caller);
    // dst is [m,n] row-major, lhs [m,k] row-major, rhs is Wᵀ viewed through strides.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            bias.is_some(),
            inp.as_ptr(),
            1,
            k as isize,
            weight.as_ptr(),
            k as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

fn linear_small_m(
    out: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
) {
    // Work on blocks of output features; each block writes a column strip of `out`, so
    // results are gathered per block ([j][i] order) and scattered afterwards. Blocks are
    // large enough that a thread streams a good stretch of W between synchronizations.
    const BLOCK: usize = 96;
    let nblocks = n.div_ceil(BLOCK);
    let run_block = |bi: usize, buf: &mut [f32]| {
        let j0 = bi * BLOCK;
        let j1 = (j0 + BLOCK).min(n);
        gemv_block(buf, inp, weight, m, k, j0, j1);
        if let Some(b) = bias {
            for j in j0..j1 {
                for i in 0..m {
                    buf[(j - j0) * m + i] += b[j];
                }
            }
        }
    };
    let mut tmp = vec![0f32; nblocks * BLOCK * m];
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        if n * k >= 1 << 17 {
            tmp.par_chunks_mut(BLOCK * m)
                .enumerate()
                .for_each(|(bi, buf)| run_block(bi, buf));
        } else {
            tmp.chunks_mut(BLOCK * m)
                .enumerate()
                .for_each(|(bi, buf)| run_block(bi, buf));
        }
    }
    #[cfg(not(feature = "rayon"))]
    tmp.chunks_mut(BLOCK * m)
        .enumerate()
        .for_each(|(bi, buf)| run_block(bi, buf));
    for j in 0..n {
        for i in 0..m {
            out[i * n + j] = tmp[j * m + i];
        }
    }
}

/// buf[(j - j0) * m + i] = inp[i] · weight[j] for j in j0..j1, every input row i.
fn gemv_block(
    buf: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    m: usize,
    k: usize,
    j0: usize,
    j1: usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            unsafe { gemv_block_avx512(buf, inp, weight, m, k, j0, j1) };
            return;
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe { gemv_block_avx2(buf, inp, weight, m, k, j0, j1) };
            return;
        }
    }
    for j in j0..j1 {
        let w = &weight[j * k..(j + 1) * k];
        for i in 0..m {
            buf[(j - j0) * m + i] = dot_portable(&inp[i * k..(i + 1) * k], w);
        }
    }
}

/// Register-blocked GEMV kernels: NJ weight rows × MI=4 input rows per pass, so every weight
/// vector loaded from memory feeds 4 FMAs and every input vector NJ. AVX2: 3 × 4 accumulators
/// + 4 operands fill the 16 ymm registers; AVX-512: 4 × 4 + 5 of the 32 zmm registers.
macro_rules! gemv_kernel {
    ($name:ident, $feature:literal, $lanes:expr, $nj:expr, $vec:ty, $zero:ident, $load:ident, $fma:ident, $hsum:ident) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feature)]
        unsafe fn $name(
            buf: &mut [f32],
            inp: &[f32],
            weight: &[f32],
            m: usize,
            k: usize,
            j0: usize,
            j1: usize,
        ) {
            use std::arch::x86_64::*;
            const NJ: usize = $nj;
            const MI: usize = 4;
            let kv = k / $lanes * $lanes;
            let mut j = j0;
            while j < j1 {
                let nj = NJ.min(j1 - j);
                // Rows past the end repeat the last one; their results are not stored.
                let w: [&[f32]; NJ] = core::array::from_fn(|t| {
                    let r = j + t.min(nj - 1);
                    &weight[r * k..(r + 1) * k]
                });
                let mut i = 0;
                while i < m {
                    let mi = MI.min(m - i);
                    let x: [&[f32]; MI] = core::array::from_fn(|t| {
                        let r = i + t.min(mi - 1);
                        &inp[r * k..(r + 1) * k]
                    });
                    let mut acc: [[$vec; NJ]; MI] = [[$zero(); NJ]; MI];
                    let mut p = 0;
                    while p < kv {
                        let wv: [$vec; NJ] = core::array::from_fn(|t| $load(w[t].as_ptr().add(p)));
                        for a in 0..MI {
                            let xv = $load(x[a].as_ptr().add(p));
                            for t in 0..NJ {
                                acc[a][t] = $fma(xv, wv[t], acc[a][t]);
                            }
                        }
                        p += $lanes;
                    }
                    for a in 0..mi {
                        for t in 0..nj {
                            let mut s = $hsum(acc[a][t]);
                            for q in kv..k {
                                s = x[a][q].mul_add(w[t][q], s);
                            }
                            buf[(j + t - j0) * m + i + a] = s;
                        }
                    }
                    i += MI;
                }
                j += NJ;
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum256(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
}

gemv_kernel!(
    gemv_block_avx2,
    "avx2,fma",
    8,
    3,
    __m256,
    _mm256_setzero_ps,
    _mm256_loadu_ps,
    _mm256_fmadd_ps,
    hsum256
);
gemv_kernel!(
    gemv_block_avx512,
    "avx512f",
    16,
    4,
    __m512,
    _mm512_setzero_ps,
    _mm512_loadu_ps,
    _mm512_fmadd_ps,
    _mm512_reduce_add_ps
);

/// Dot product with 16 independent accumulators so the compiler can vectorize it.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the enabled features (checked just above).
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_portable(a, b)
}

macro_rules! dot_body {
    ($a:expr, $b:expr, $fma:expr) => {{
        let (a, b) = ($a, $b);
        let n = a.len().min(b.len());
        let mut acc = [0f32; 16];
        let chunks = n / 16;
        for c in 0..chunks {
            let x = &a[c * 16..c * 16 + 16];
            let y = &b[c * 16..c * 16 + 16];
            for l in 0..16 {
                acc[l] = $fma(x[l], y[l], acc[l]);
            }
        }
        let mut s = 0f32;
        for p in chunks * 16..n {
            s = $fma(a[p], b[p], s);
        }
        let mut t = [0f32; 8];
        for l in 0..8 {
            t[l] = acc[l] + acc[l + 8];
        }
        ((t[0] + t[4]) + (t[1] + t[5])) + ((t[2] + t[6]) + (t[3] + t[7])) + s
    }};
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_body!(a, b, |x: f32, y: f32, z: f32| x.mul_add(y, z))
}

fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    dot_body!(a, b, |x: f32, y: f32, z: f32| x * y + z)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every kernel this CPU can run, not only the one `linear_forward` picks.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn each_simd_kernel_matches_naive() {
        for (m, k, n) in [
            (1, 7, 5),
            (4, 16, 9),
            (5, 37, 13),
            (11, 64, 7),
            (16, 129, 10),
        ] {
            let inp: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7919 % 101) as f32 - 50.0) / 37.0)
                .collect();
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i * 104729 % 97) as f32 - 48.0) / 41.0)
                .collect();
            let mut want = vec![0f32; m * n];
            linear_naive(&mut want, &inp, &w, None, m, k, n);
            let check = |buf: &[f32], what: &str| {
                for j in 0..n {
                    for i in 0..m {
                        let (g, e) = (buf[j * m + i], want[i * n + j]);
                        assert!(
                            (g - e).abs() <= 1e-5 * (1.0 + e.abs()),
                            "{what} {m}x{k}x{n}: {g} vs {e}"
                        );
                    }
                }
            };
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                let mut buf = vec![0f32; n * m];
                // SAFETY: feature checked above.
                unsafe { gemv_block_avx2(&mut buf, &inp, &w, m, k, 0, n) };
                check(&buf, "avx2");
            }
            if std::is_x86_feature_detected!("avx512f") {
                let mut buf = vec![0f32; n * m];
                // SAFETY: feature checked above.
                unsafe { gemv_block_avx512(&mut buf, &inp, &w, m, k, 0, n) };
                check(&buf, "avx512");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn fast_paths_match_naive(m in 1usize..40, k in 0usize..70, n in 1usize..90, seed in 0u64..1000, with_bias: bool) {
            let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let mut rnd = || { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5 };
            let inp: Vec<f32> = (0..m * k).map(|_| rnd()).collect();
            let w: Vec<f32> = (0..n * k).map(|_| rnd()).collect();
            let b: Vec<f32> = (0..n).map(|_| rnd()).collect();
            let bias = if with_bias { Some(b.as_slice()) } else { None };
            let mut want = vec![0f32; m * n];
            linear_naive(&mut want, &inp, &w, bias, m, k, n);
            let mut got = vec![0f32; m * n];
            linear_forward(&mut got, &inp, &w, bias, m, k, n);
            for (g, w) in got.iter().zip(&want) {
                prop_assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{g} vs {w}");
            }
        }
    }
}

// ---- backward ---------------------------------------------------------------------------

/// dst[M,N] += lhs[M,K] · rhs[K,N], each operand addressed through (row, column) strides so
/// transposed views cost nothing. The workhorse of every backward pass.
#[allow(clippy::too_many_arguments)]
pub fn matmul_acc(
    dst: &mut [f32],
    (dst_rs, dst_cs): (usize, usize),
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
    m: usize,
    k: usize,
    n: usize,
) {
    #[cfg(feature = "rayon")]
    let par = if m * n * k >= 1 << 18 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    #[cfg(not(feature = "rayon"))]
    let par = gemm::Parallelism::None;
    gemm_acc(
        dst,
        (dst_rs, dst_cs),
        lhs,
        (lhs_rs, lhs_cs),
        rhs,
        (rhs_rs, rhs_cs),
        m,
        k,
        n,
        par,
    );
}

/// [`matmul_acc`] on the calling thread only: for callers that already run one task per
/// thread (attention heads), where splitting each small product again only adds overhead.
#[allow(clippy::too_many_arguments)]
pub fn matmul_acc_seq(
    dst: &mut [f32],
    dst_strides: (usize, usize),
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
    m: usize,
    k: usize,
    n: usize,
) {
    gemm_acc(
        dst,
        dst_strides,
        lhs,
        lhs_strides,
        rhs,
        rhs_strides,
        m,
        k,
        n,
        gemm::Parallelism::None,
    );
}

#[allow(clippy::too_many_arguments)]
fn gemm_acc(
    dst: &mut [f32],
    (dst_rs, dst_cs): (usize, usize),
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
    m: usize,
    k: usize,
    n: usize,
    par: gemm::Parallelism,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let last = |rs: usize, cs: usize, r: usize, c: usize| (r - 1) * rs + (c - 1) * cs;
    assert!(
        last(dst_rs, dst_cs, m, n) < dst.len()
            && last(lhs_rs, lhs_cs, m, k) < lhs.len()
            && last(rhs_rs, rhs_cs, k, n) < rhs.len(),
        "matmul_acc: operand too small"
    );
    // SAFETY: the assert above bounds the last element each view touches.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            true,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// Backward of [`linear_forward`]: given dout[M,N], accumulate
/// dinp[M,K] += dout · W, dweight[N,K] += doutᵀ · inp, dbias[N] += Σ_rows dout.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    dinp: Option<&mut [f32]>,
    dweight: Option<&mut [f32]>,
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    m: usize,
    k: usize,
    n: usize,
) {
    if let Some(dx) = dinp {
        matmul_acc(dx, (k, 1), dout, (n, 1), weight, (k, 1), m, n, k);
    }
    if let Some(dw) = dweight {
        matmul_acc(dw, (k, 1), dout, (1, n), inp, (k, 1), n, m, k);
    }
    if let Some(db) = dbias {
        for row in dout.chunks_exact(n) {
            db.iter_mut().zip(row).for_each(|(a, b)| *a += b);
        }
    }
}

#[cfg(test)]
mod backward_tests {
    use super::*;
    use crate::ops::gradcheck::{check, rand_vec};

    #[test]
    fn linear_backward_matches_finite_differences() {
        let (m, k, n) = (3, 5, 4);
        let x = rand_vec(m * k, 1);
        let w = rand_vec(n * k, 2);
        let b = rand_vec(n, 3);
        let dout = rand_vec(m * n, 4);
        let loss = |x: &[f32], w: &[f32], b: &[f32]| {
            let mut y = vec![0f32; m * n];
            linear_naive(&mut y, x, w, Some(b), m, k, n);
            y.iter()
                .zip(&dout)
                .map(|(a, g)| (a * g) as f64)
                .sum::<f64>()
        };
        let (mut dx, mut dw, mut db) = (vec![0f32; m * k], vec![0f32; n * k], vec![0f32; n]);
        linear_backward(
            Some(&mut dx),
            Some(&mut dw),
            Some(&mut db),
            &dout,
            &x,
            &w,
            m,
            k,
            n,
        );
        check("dx", &x, &dx, |v| loss(v, &w, &b));
        check("dw", &w, &dw, |v| loss(&x, v, &b));
        check("db", &b, &db, |v| loss(&x, &w, v));
    }

    #[test]
    fn matmul_acc_accumulates_large_shapes() {
        // Big enough for gemm's blocked (and threaded) path.
        let (m, k, n) = (70, 65, 90);
        let a = rand_vec(m * k, 5);
        let b = rand_vec(n * k, 6);
        let mut want = vec![0f32; m * n];
        linear_naive(&mut want, &a, &b, None, m, k, n);
        let mut got = vec![1f32; m * n];
        // b viewed as bᵀ [K,N] through strides.
        matmul_acc(&mut got, (n, 1), &a, (k, 1), &b, (1, k), m, k, n);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - 1.0 - w).abs() < 1e-4, "{g} vs {w}");
        }
    }
}
