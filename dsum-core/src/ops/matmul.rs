//! Linear layers `out = inp · Wᵀ + b` with PyTorch's weight layout (W is `[N, K]`).
//!
//! Two fast paths: few rows (decoding: batch × beams) reads every weight row once and dots it
//! with all input rows while it sits in L1 — the step is bound by memory bandwidth, and
//! packing W for a GEMM would triple the traffic; many rows (encoder, prompts) go to the
//! `gemm` crate. `linear_naive` is the obviously-correct reference both are tested against.

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

/// Register-blocked kernel: 3 weight rows × 4 input rows per pass, so every weight vector
/// loaded from memory feeds 4 FMAs and every input vector 3 (12 accumulators + 4 operands
/// fill the 16 ymm registers).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gemv_block_avx2(
    buf: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    m: usize,
    k: usize,
    j0: usize,
    j1: usize,
) {
    use std::arch::x86_64::*;
    const NJ: usize = 3;
    const MI: usize = 4;
    let k8 = k / 8 * 8;
    let hsum = |v: __m256| -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    };
    let mut j = j0;
    while j < j1 {
        let nj = NJ.min(j1 - j);
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
            let mut acc = [[_mm256_setzero_ps(); NJ]; MI];
            let mut p = 0;
            while p < k8 {
                let wv: [__m256; NJ] =
                    core::array::from_fn(|t| _mm256_loadu_ps(w[t].as_ptr().add(p)));
                for a in 0..MI {
                    let xv = _mm256_loadu_ps(x[a].as_ptr().add(p));
                    for t in 0..NJ {
                        acc[a][t] = _mm256_fmadd_ps(xv, wv[t], acc[a][t]);
                    }
                }
                p += 8;
            }
            for a in 0..mi {
                for t in 0..nj {
                    let mut s = hsum(acc[a][t]);
                    for q in k8..k {
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

/// The AVX-512 variant of `gemv_block_avx2`: 4 weight rows × 4 input rows of 16 lanes
/// (16 accumulators + 5 operands of the 32 zmm registers).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gemv_block_avx512(
    buf: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    m: usize,
    k: usize,
    j0: usize,
    j1: usize,
) {
    use std::arch::x86_64::*;
    const NJ: usize = 4;
    const MI: usize = 4;
    let k16 = k / 16 * 16;
    let mut j = j0;
    while j < j1 {
        let nj = NJ.min(j1 - j);
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
            let mut acc = [[_mm512_setzero_ps(); NJ]; MI];
            let mut p = 0;
            while p < k16 {
                let wv: [__m512; NJ] =
                    core::array::from_fn(|t| _mm512_loadu_ps(w[t].as_ptr().add(p)));
                for a in 0..MI {
                    let xv = _mm512_loadu_ps(x[a].as_ptr().add(p));
                    for t in 0..NJ {
                        acc[a][t] = _mm512_fmadd_ps(xv, wv[t], acc[a][t]);
                    }
                }
                p += 16;
            }
            for a in 0..mi {
                for t in 0..nj {
                    let mut s = _mm512_reduce_add_ps(acc[a][t]);
                    for q in k16..k {
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
