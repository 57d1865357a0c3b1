//! Inverted dropout with masks that are a pure function of (seed, element index), so the
//! backward pass regenerates the mask instead of storing it, and a seeded run repeats
//! exactly (PyTorch's RNG stream is not reproduced: dropout never enters parity tests).

/// True if element `i` survives dropout with probability `p` under `seed` (splitmix64).
#[inline]
pub fn keep(seed: u64, i: usize, p: f32) -> bool {
    let mut z = seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 40) as f32 / (1u64 << 24) as f32) >= p
}

/// x ← mask·x/(1-p). Also the backward: the same call on the gradient.
pub fn dropout_inplace(x: &mut [f32], p: f32, seed: u64) {
    if p <= 0.0 {
        return;
    }
    let scale = 1.0 / (1.0 - p);
    for (i, v) in x.iter_mut().enumerate() {
        *v = if keep(seed, i, p) { *v * scale } else { 0.0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_about_p_and_rescales() {
        let mut x = vec![1f32; 100_000];
        dropout_inplace(&mut x, 0.1, 42);
        let kept = x.iter().filter(|&&v| v != 0.0).count() as f64 / 1e5;
        assert!((kept - 0.9).abs() < 0.01, "{kept}");
        assert!(x.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.9).abs() < 1e-6));
        let mut y = vec![1f32; 100_000];
        dropout_inplace(&mut y, 0.1, 42);
        assert_eq!(x, y, "same seed, same mask");
    }
}
