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
pub(crate) fn moments(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x
        .iter()
        .map(|&v| (v as f64 - mean) * (v as f64 - mean))
        .sum::<f64>()
        / n;
    (mean as f32, (1.0 / (var + eps as f64).sqrt()) as f32)
}

// ---- training: forward that keeps its statistics, and backward -------------------------

/// [`layernorm_forward`] that also returns each row's (mean, rstd) for the backward pass.
pub fn layernorm_forward_train(
    out: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: &[f32],
    c: usize,
    eps: f32,
) -> Vec<(f32, f32)> {
    let mut stats = Vec::with_capacity(inp.len() / c.max(1));
    for (o, x) in out.chunks_exact_mut(c).zip(inp.chunks_exact(c)) {
        let (mean, rstd) = moments(x, eps);
        for i in 0..c {
            o[i] = (x[i] - mean) * rstd * weight[i] + bias[i];
        }
        stats.push((mean, rstd));
    }
    stats
}

/// Backward of LayerNorm. With x̂ = (x - mean)·rstd and g = dout·w:
/// dx = rstd·(g - mean(g) - x̂·mean(g·x̂)); dw += Σ dout·x̂; db += Σ dout. `dinp` accumulates.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    dinp: &mut [f32],
    mut dweight: Option<&mut [f32]>,
    mut dbias: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    stats: &[(f32, f32)],
    weight: &[f32],
    c: usize,
) {
    for (((dx, dy), x), &(mean, rstd)) in dinp
        .chunks_exact_mut(c)
        .zip(dout.chunks_exact(c))
        .zip(inp.chunks_exact(c))
        .zip(stats)
    {
        let (mut mg, mut mgx) = (0f64, 0f64);
        for i in 0..c {
            let xh = (x[i] - mean) * rstd;
            let g = dy[i] * weight[i];
            mg += g as f64;
            mgx += (g * xh) as f64;
        }
        let (mg, mgx) = ((mg / c as f64) as f32, (mgx / c as f64) as f32);
        for i in 0..c {
            let xh = (x[i] - mean) * rstd;
            dx[i] += rstd * (dy[i] * weight[i] - mg - xh * mgx);
            if let Some(dw) = dweight.as_deref_mut() {
                dw[i] += dy[i] * xh;
            }
            if let Some(db) = dbias.as_deref_mut() {
                db[i] += dy[i];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{check, rand_vec};

    #[test]
    fn layernorm_backward_matches_finite_differences() {
        let (r, c) = (3, 6);
        let x = rand_vec(r * c, 11);
        let w = rand_vec(c, 12);
        let b = rand_vec(c, 13);
        let dout = rand_vec(r * c, 14);
        let loss = |x: &[f32], w: &[f32], b: &[f32]| {
            let mut y = vec![0f32; r * c];
            layernorm_forward(&mut y, x, w, b, c, 1e-5);
            y.iter()
                .zip(&dout)
                .map(|(a, g)| (a * g) as f64)
                .sum::<f64>()
        };
        let mut y = vec![0f32; r * c];
        let stats = layernorm_forward_train(&mut y, &x, &w, &b, c, 1e-5);
        let (mut dx, mut dw, mut db) = (vec![0f32; r * c], vec![0f32; c], vec![0f32; c]);
        layernorm_backward(
            &mut dx,
            Some(&mut dw),
            Some(&mut db),
            &dout,
            &x,
            &stats,
            &w,
            c,
        );
        check("dx", &x, &dx, |v| loss(v, &w, &b));
        check("dw", &w, &dw, |v| loss(&x, v, &b));
        check("db", &b, &db, |v| loss(&x, &w, v));
    }
}
