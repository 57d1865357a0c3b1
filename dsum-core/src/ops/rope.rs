//! Rotary position embeddings in the "rotate half" layout transformers uses for Llama,
//! Qwen2 and Qwen3: dimension i pairs with i + d/2. Frequencies follow
//! `ROPE_INIT_FUNCTIONS` for the `default` and `llama3` rope types.

use crate::error::{Error, Result};

/// `rope_scaling` of config.json.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct RopeScaling {
    #[serde(default, alias = "type")]
    pub rope_type: Option<String>,
    #[serde(default)]
    pub factor: Option<f64>,
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    #[serde(default)]
    pub original_max_position_embeddings: Option<f64>,
}

/// Inverse frequencies [d/2] for head size `d`.
pub fn inv_freq(d: usize, theta: f64, scaling: Option<&RopeScaling>) -> Result<Vec<f32>> {
    // transformers computes these in f32: base ** (arange(0, d, 2) / d).
    let base: Vec<f32> = (0..d / 2)
        .map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / d as f32))
        .collect();
    let Some(s) = scaling else { return Ok(base) };
    match s.rope_type.as_deref().unwrap_or("default") {
        "default" => Ok(base),
        "linear" => {
            let f = s.factor.unwrap_or(1.0) as f32;
            Ok(base.iter().map(|x| x / f).collect())
        }
        "llama3" => {
            let get = |v: Option<f64>, name: &str| {
                v.ok_or_else(|| Error::Generation(format!("rope_scaling llama3 needs `{name}`")))
            };
            let factor = get(s.factor, "factor")? as f32;
            let low = get(s.low_freq_factor, "low_freq_factor")? as f32;
            let high = get(s.high_freq_factor, "high_freq_factor")? as f32;
            let old = get(
                s.original_max_position_embeddings,
                "original_max_position_embeddings",
            )? as f32;
            let low_wavelen = old / low;
            let high_wavelen = old / high;
            Ok(base
                .iter()
                .map(|&f| {
                    let wavelen = 2.0 * core::f32::consts::PI / f;
                    let scaled = if wavelen > low_wavelen { f / factor } else { f };
                    if wavelen >= high_wavelen && wavelen <= low_wavelen {
                        let smooth = (old / wavelen - low) / (high - low);
                        (1.0 - smooth) * scaled / factor + smooth * scaled
                    } else {
                        scaled
                    }
                })
                .collect())
        }
        other => Err(Error::Generation(format!(
            "rope_scaling type `{other}` is not supported (default, linear, llama3)"
        ))),
    }
}

/// Rotate one head vector `x` [d] in place at position `pos`.
pub fn rope_forward(x: &mut [f32], inv_freq: &[f32], pos: usize) {
    let half = inv_freq.len();
    for i in 0..half {
        let angle = pos as f32 * inv_freq[i];
        let (sin, cos) = (angle.sin(), angle.cos());
        let (a, b) = (x[i], x[i + half]);
        x[i] = a * cos - b * sin;
        x[i + half] = b * cos + a * sin;
    }
}

/// Backward of [`rope_forward`]: the rotation is orthogonal, so the gradient rotates back
/// by the same angle (dx = R(-θ)·dy), in place.
pub fn rope_backward(dx: &mut [f32], inv_freq: &[f32], pos: usize) {
    let half = inv_freq.len();
    for i in 0..half {
        let angle = pos as f32 * inv_freq[i];
        let (sin, cos) = (angle.sin(), angle.cos());
        let (a, b) = (dx[i], dx[i + half]);
        dx[i] = a * cos + b * sin;
        dx[i + half] = b * cos - a * sin;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{check, rand_vec};

    #[test]
    fn rope_backward_matches_finite_differences() {
        let d = 8;
        let freq = inv_freq(d, 10000.0, None).unwrap();
        let x = rand_vec(d, 31);
        let dout = rand_vec(d, 32);
        let loss = |x: &[f32]| {
            let mut y = x.to_vec();
            rope_forward(&mut y, &freq, 7);
            y.iter()
                .zip(&dout)
                .map(|(a, g)| (a * g) as f64)
                .sum::<f64>()
        };
        let mut dx = dout.clone();
        rope_backward(&mut dx, &freq, 7);
        check("dx", &x, &dx, loss);
    }
}
