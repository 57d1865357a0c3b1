//! Finite-difference checks for the hand-written backward passes (tests only).

/// Deterministic values in [-1, 1) (an LCG; tests need no RNG crate).
pub fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Compare `analytic` with central differences of the scalar `loss` around `x`. The loss is
/// evaluated in f32 arithmetic, so h = 1e-2 balances truncation against rounding; the bound
/// is relative to the largest gradient entry.
pub fn check(what: &str, x: &[f32], analytic: &[f32], loss: impl Fn(&[f32]) -> f64) {
    assert_eq!(x.len(), analytic.len(), "{what}: gradient size");
    let h = 1e-2f32;
    let scale = analytic.iter().fold(1e-3f32, |m, g| m.max(g.abs()));
    let mut v = x.to_vec();
    for i in 0..x.len() {
        v[i] = x[i] + h;
        let up = loss(&v);
        v[i] = x[i] - h;
        let down = loss(&v);
        v[i] = x[i];
        let fd = ((up - down) / (2.0 * h as f64)) as f32;
        let err = (fd - analytic[i]).abs() / scale;
        assert!(
            err < 2e-2,
            "{what}[{i}]: finite difference {fd} vs analytic {} (rel err {err})",
            analytic[i]
        );
    }
}
