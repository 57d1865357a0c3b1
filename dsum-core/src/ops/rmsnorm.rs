//! RMSNorm over the last dimension, as transformers' LlamaRMSNorm (computed in f32).

/// x[R,C] <- x / sqrt(mean(x²) + eps) * weight, row by row.
pub fn rmsnorm_inplace(x: &mut [f32], weight: &[f32], c: usize, eps: f32) {
    for row in x.chunks_exact_mut(c) {
        let ms = row.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / c as f64;
        let r = (1.0 / (ms + eps as f64).sqrt()) as f32;
        for (v, w) in row.iter_mut().zip(weight) {
            *v = w * (*v * r);
        }
    }
}
