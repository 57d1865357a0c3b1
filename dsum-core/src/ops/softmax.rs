//! Softmax and log-softmax over a row, max-subtracted for stability.

/// exp(x) for softmax: Cephes-style range reduction (x = n·ln2 + r) and a degree-6
/// polynomial, branch-free so loops over it vectorize; relative error ~2e-7 (1-2 ulp), far
/// below the rounding of the sums it feeds. Inputs below -87.3 give exp(-87.3) ~ 1e-38.
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.7);
    let n = (x * core::f32::consts::LOG2_E).round();
    // Two-part ln2 keeps r exact.
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = 1.987_569_1e-4_f32;
    let p = p.mul_add(r, 1.398_199_9e-3);
    let p = p.mul_add(r, 8.333_452e-3);
    let p = p.mul_add(r, 4.166_579_6e-2);
    let p = p.mul_add(r, 1.666_666_5e-1);
    let p = p.mul_add(r, 5e-1);
    let p = p * r * r + r + 1.0;
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

pub fn softmax_inplace(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        // Everything masked: PyTorch yields NaN here; no caller relies on it, keep zeros.
        x.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    // Vectorized (and a real FMA in exp_fast): the scalar loop called libm's fmaf per step.
    let inv = 1.0 / exp_sub_sum(x, max);
    x.iter_mut().for_each(|v| *v *= inv);
}

/// log_softmax in place; the normalizer is summed in f64 to stay close to PyTorch's.
pub fn log_softmax_inplace(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = x
        .iter()
        .map(|&v| {
            if v == f32::NEG_INFINITY {
                0.0
            } else {
                exp_fast(v - max) as f64
            }
        })
        .sum();
    let lse = max + sum.ln() as f32;
    x.iter_mut().for_each(|v| *v -= lse);
}

/// row[j] <- exp(row[j] - max) (0 where row[j] is -inf); returns Σ row. The training hot
/// loops (attention softmax, cross-entropy over the vocabulary) run through here: compiled
/// for AVX2+FMA when the CPU has them, so `exp_fast` becomes 8-lane vector code.
pub fn exp_sub_sum(row: &mut [f32], max: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { exp_sub_sum_avx2(row, max) };
        }
    }
    exp_sub_sum_body(row, max)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_sub_sum_avx2(row: &mut [f32], max: f32) -> f32 {
    exp_sub_sum_body(row, max)
}

#[inline(always)]
fn exp_sub_sum_body(row: &mut [f32], max: f32) -> f32 {
    // 16 independent partial sums: the loop vectorizes without reassociating one sum.
    let mut acc = [0f32; 16];
    let mut chunks = row.chunks_exact_mut(16);
    for c in &mut chunks {
        for (x, a) in c.iter_mut().zip(acc.iter_mut()) {
            let e = exp_fast(*x - max);
            *x = if *x == f32::NEG_INFINITY { 0.0 } else { e };
            *a += *x;
        }
    }
    let mut tail = 0f32;
    for x in chunks.into_remainder() {
        *x = if *x == f32::NEG_INFINITY {
            0.0
        } else {
            exp_fast(*x - max)
        };
        tail += *x;
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::exp_fast;

    #[test]
    fn exp_fast_is_within_2e7_relative() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (exp_fast(x) as f64, (x as f64).exp());
            assert!(((a - b) / b).abs() < 2.5e-7, "{x}: {a} vs {b}");
            x += 0.0137;
        }
        assert!(exp_fast(-200.0) < 1e-37);
    }

    #[test]
    fn exp_sub_sum_matches_scalar_exp() {
        let row: Vec<f32> = (0..53)
            .map(|i| {
                if i % 7 == 3 {
                    f32::NEG_INFINITY
                } else {
                    (i as f32 * 0.37).sin() * 20.0
                }
            })
            .collect();
        let max = 19.5;
        let mut got = row.clone();
        let sum = super::exp_sub_sum(&mut got, max);
        let mut want_sum = 0f64;
        for (g, &x) in got.iter().zip(&row) {
            let w = if x == f32::NEG_INFINITY {
                0.0
            } else {
                ((x - max) as f64).exp()
            };
            want_sum += w;
            assert!((*g as f64 - w).abs() <= 2.5e-7 * w, "{g} vs {w}");
        }
        assert!((sum as f64 - want_sum).abs() <= 1e-6 * want_sum);
    }
}
