//! LayerNorm over the last dimension, as `torch.nn.LayerNorm` (biased variance).

/// out[R,C] = (inp - mean) / sqrt(var + eps) * weight + bias, row by row. `out` may alias
/// nothing; use `layernorm_inplace` to normalize a buffer in place.
pub fn layernorm_forward(
    out: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: &[f32],
    c: usize,
    eps: f32,
) {
    for (o, x) in out.chunks_exact_mut(c).zip(inp.chunks_exact(c)) {
        let (mean, rstd) = moments(x, eps);
        for i in 0..c {
            o[i] = (x[i] - mean) * rstd * weight[i] + bias[i];
        }
    }
}

pub fn layernorm_inplace(x: &mut [f32], weight: &[f32], bias: &[f32], c: usize, eps: f32) {
    for row in x.chunks_exact_mut(c) {
        let (mean, rstd) = moments(row, eps);
        for i in 0..c {
            row[i] = (row[i] - mean) * rstd * weight[i] + bias[i];
        }
    }
}

/// Mean and 1/sqrt(var+eps), accumulated in f64 so the result does not depend on C.
fn moments(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x
        .iter()
        .map(|&v| (v as f64 - mean) * (v as f64 - mean))
        .sum::<f64>()
        / n;
    (mean as f32, (1.0 / (var + eps as f64).sqrt()) as f32)
}
