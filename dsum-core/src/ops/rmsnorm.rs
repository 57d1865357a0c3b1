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

// ---- training ------------------------------------------------------------------------------

/// out[R,C] = RMSNorm(inp); returns each row's 1/rms for the backward pass.
pub fn rmsnorm_forward_train(
    out: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    c: usize,
    eps: f32,
) -> Vec<f32> {
    out.copy_from_slice(inp);
    let mut rstd = Vec::with_capacity(inp.len() / c.max(1));
    for row in out.chunks_exact_mut(c) {
        let ms = row.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / c as f64;
        let r = (1.0 / (ms + eps as f64).sqrt()) as f32;
        for (v, w) in row.iter_mut().zip(weight) {
            *v = w * (*v * r);
        }
        rstd.push(r);
    }
    rstd
}

/// Backward of RMSNorm. With g = dout·w: dx = r·g - x·r³·mean(g·x); dw += Σ dout·x·r.
/// `dinp` accumulates.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward(
    dinp: &mut [f32],
    mut dweight: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    rstd: &[f32],
    weight: &[f32],
    c: usize,
) {
    for (((dx, dy), x), &r) in dinp
        .chunks_exact_mut(c)
        .zip(dout.chunks_exact(c))
        .zip(inp.chunks_exact(c))
        .zip(rstd)
    {
        let mgx = (0..c)
            .map(|i| (dy[i] * weight[i] * x[i]) as f64)
            .sum::<f64>()
            / c as f64;
        let k = r * r * r * mgx as f32;
        for i in 0..c {
            dx[i] += r * dy[i] * weight[i] - x[i] * k;
            if let Some(dw) = dweight.as_deref_mut() {
                dw[i] += dy[i] * x[i] * r;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{check, rand_vec};

    #[test]
    fn rmsnorm_backward_matches_finite_differences() {
        let (r, c) = (3, 8);
        let x = rand_vec(r * c, 21);
        let w = rand_vec(c, 22);
        let dout = rand_vec(r * c, 23);
        let loss = |x: &[f32], w: &[f32]| {
            let mut y = x.to_vec();
            rmsnorm_inplace(&mut y, w, c, 1e-6);
            y.iter()
                .zip(&dout)
                .map(|(a, g)| (a * g) as f64)
                .sum::<f64>()
        };
        let mut y = vec![0f32; r * c];
        let rstd = rmsnorm_forward_train(&mut y, &x, &w, c, 1e-6);
        let (mut dx, mut dw) = (vec![0f32; r * c], vec![0f32; c]);
        rmsnorm_backward(&mut dx, Some(&mut dw), &dout, &x, &rstd, &w, c);
        check("dx", &x, &dx, |v| loss(v, &w));
        check("dw", &w, &dw, |v| loss(&x, v));
    }
}
