//! Token embedding lookup and its backward (a scatter-add into the table's gradient).

use crate::error::{Error, Result};

/// out[N, C] = table[ids] · scale.
pub fn embedding_forward(
    out: &mut [f32],
    ids: &[u32],
    table: &[f32],
    c: usize,
    scale: f32,
) -> Result<()> {
    let rows = table.len() / c.max(1);
    for (o, &id) in out.chunks_exact_mut(c).zip(ids) {
        let id = id as usize;
        if id >= rows {
            return Err(Error::Generation(format!(
                "token id {id} is outside the embedding table ({rows} rows)"
            )));
        }
        o.iter_mut()
            .zip(&table[id * c..(id + 1) * c])
            .for_each(|(o, e)| *o = e * scale);
    }
    Ok(())
}

/// dtable[ids[i]] += dout[i] · scale (repeated ids add up; a tied lm_head adds into the same
/// gradient separately, so the table's gradient is counted once per use).
pub fn embedding_backward(dtable: &mut [f32], dout: &[f32], ids: &[u32], c: usize, scale: f32) {
    for (d, &id) in dout.chunks_exact(c).zip(ids) {
        let id = id as usize;
        dtable[id * c..(id + 1) * c]
            .iter_mut()
            .zip(d)
            .for_each(|(t, g)| *t += g * scale);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{check, rand_vec};

    #[test]
    fn embedding_backward_matches_finite_differences() {
        let (v, c) = (5, 3);
        let table = rand_vec(v * c, 71);
        let ids = [1u32, 3, 1, 0];
        let dout = rand_vec(ids.len() * c, 72);
        let loss = |tb: &[f32]| {
            let mut o = vec![0f32; ids.len() * c];
            embedding_forward(&mut o, &ids, tb, c, 1.5).unwrap();
            o.iter()
                .zip(&dout)
                .map(|(a, g)| (a * g) as f64)
                .sum::<f64>()
        };
        let mut d = vec![0f32; v * c];
        embedding_backward(&mut d, &dout, &ids, c, 1.5);
        check("dtable", &table, &d, loss);
        let mut o = vec![0f32; c];
        assert!(embedding_forward(&mut o, &[9], &table, c, 1.0).is_err());
    }
}
