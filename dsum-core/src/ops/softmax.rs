//! Softmax and log-softmax over a row, max-subtracted for stability.

pub fn softmax_inplace(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        // Everything masked: PyTorch yields NaN here; no caller relies on it, keep zeros.
        x.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = libm::expf(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    x.iter_mut().for_each(|v| *v *= inv);
}

/// log_softmax in place; the normalizer is summed in f64 to stay close to PyTorch's.
pub fn log_softmax_inplace(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = x.iter().map(|&v| libm::expf(v - max) as f64).sum();
    let lse = max + sum.ln() as f32;
    x.iter_mut().for_each(|v| *v -= lse);
}
