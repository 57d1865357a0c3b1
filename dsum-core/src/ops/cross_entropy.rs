//! Token cross-entropy with ignored labels, fused with its backward (llm.c style): the
//! logits buffer is overwritten by d(scale · Σ CE)/dlogits.

/// Label value that is skipped (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// For each row r of logits [N, V] with target `targets[r]` (IGNORE_INDEX skips the row):
/// loss_r = logsumexp(row) - row[target]. Returns (Σ loss_r, rows counted); the logits
/// become `scale · (softmax - onehot)` on counted rows and 0 elsewhere. A target outside
/// 0..V is an error (PyTorch raises too). Rows run in parallel with the `rayon` feature
/// (the vocabulary makes this the largest elementwise pass of a training step).
pub fn cross_entropy_backward(
    logits: &mut [f32],
    targets: &[i64],
    v: usize,
    scale: f32,
) -> Result<(f64, usize), String> {
    let rows = logits.len().checked_div(v).unwrap_or(0).min(targets.len());
    let (logits, targets) = (&mut logits[..rows * v], &targets[..rows]);
    if let Some(&bad) = targets
        .iter()
        .find(|&&t| t != IGNORE_INDEX && (t < 0 || t as usize >= v))
    {
        return Err(format!("label {bad} is outside the vocabulary ({v})"));
    }
    let counted = targets.iter().filter(|&&t| t != IGNORE_INDEX).count();
    if v == 0 {
        return Ok((0.0, counted));
    }
    let row_loss = |(row, &tgt): (&mut [f32], &i64)| -> f64 {
        if tgt == IGNORE_INDEX {
            row.iter_mut().for_each(|x| *x = 0.0);
            return 0.0;
        }
        let target_logit = row[tgt as usize];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        // row <- exp(row - max), z = Σ; then softmax = row / z.
        let z = super::softmax::exp_sub_sum(row, max) as f64;
        let k = (scale as f64 / z) as f32;
        row.iter_mut().for_each(|x| *x *= k);
        row[tgt as usize] -= scale;
        max as f64 + z.ln() - target_logit as f64
    };
    // Rows in parallel, their losses summed in row order: rayon's `sum` groups the terms as
    // the work happens to split, so the loss would change in its last bits run to run.
    #[cfg(feature = "rayon")]
    let sum: f64 = {
        use rayon::prelude::*;
        let losses: Vec<f64> = logits
            .par_chunks_mut(v)
            .zip(targets.par_iter())
            .map(row_loss)
            .collect();
        losses.into_iter().sum()
    };
    #[cfg(not(feature = "rayon"))]
    let sum: f64 = logits.chunks_exact_mut(v).zip(targets).map(row_loss).sum();
    Ok((sum, counted))
}

/// Loss only (evaluation).
pub fn cross_entropy_loss(
    logits: &[f32],
    targets: &[i64],
    v: usize,
) -> Result<(f64, usize), String> {
    let mut buf = logits.to_vec();
    cross_entropy_backward(&mut buf, targets, v, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{check, rand_vec};

    #[test]
    fn cross_entropy_backward_matches_finite_differences() {
        let v = 7;
        let logits: Vec<f32> = rand_vec(3 * v, 81).iter().map(|x| x * 3.0).collect();
        let targets = [2i64, IGNORE_INDEX, 6];
        let loss = |l: &[f32]| cross_entropy_loss(l, &targets, v).unwrap().0 * 0.5;
        let mut d = logits.clone();
        let (_, n) = cross_entropy_backward(&mut d, &targets, v, 0.5).unwrap();
        assert_eq!(n, 2);
        assert!(d[v..2 * v].iter().all(|&x| x == 0.0));
        check("dlogits", &logits, &d, loss);
        assert!(cross_entropy_loss(&logits, &[7, 0, 0], v).is_err());
    }

    /// The loss of many rows is their row losses summed in row order, every time (rayon's
    /// `sum` regrouped the terms as the work split and changed the last bits run to run).
    #[test]
    fn the_loss_sums_rows_in_order() {
        let (rows, v) = (3000, 5);
        let logits: Vec<f32> = rand_vec(rows * v, 7).iter().map(|x| x * 4.0).collect();
        let targets: Vec<i64> = (0..rows as i64).map(|r| r % v as i64).collect();
        let in_order: f64 = (0..rows)
            .map(|r| {
                let row = &logits[r * v..(r + 1) * v];
                cross_entropy_loss(row, &targets[r..r + 1], v).unwrap().0
            })
            .sum();
        for _ in 0..20 {
            let (sum, n) = cross_entropy_loss(&logits, &targets, v).unwrap();
            assert_eq!(n, rows);
            assert_eq!(sum.to_bits(), in_order.to_bits());
        }
    }
}
