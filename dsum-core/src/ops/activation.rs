//! Pointwise activations by their transformers `ACT2FN` names.

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU, 0.5·x·(1 + erf(x/√2)) (`gelu`).
    Gelu,
    /// Tanh approximation (`gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`).
    GeluTanh,
    Relu,
    /// x·sigmoid(x) (`silu`, `swish`).
    Silu,
}

impl Activation {
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            "silu" | "swish" => Activation::Silu,
            other => {
                return Err(Error::Generation(format!(
                    "unsupported activation function `{other}`"
                )))
            }
        })
    }

    pub fn forward_inplace(self, x: &mut [f32]) {
        match self {
            Activation::Gelu => x.iter_mut().for_each(|v| {
                *v = 0.5 * *v * (1.0 + libm::erff(*v * core::f32::consts::FRAC_1_SQRT_2))
            }),
            Activation::GeluTanh => x.iter_mut().for_each(|v| {
                let u = 0.797_884_6 * (*v + 0.044715 * *v * *v * *v);
                *v = 0.5 * *v * (1.0 + libm::tanhf(u));
            }),
            Activation::Relu => x.iter_mut().for_each(|v| *v = v.max(0.0)),
            Activation::Silu => x.iter_mut().for_each(|v| *v /= 1.0 + libm::expf(-*v)),
        }
    }

    /// Backward given the pre-activation input `x`: `d` holds dout on entry, dinp on exit.
    pub fn backward_inplace(self, d: &mut [f32], x: &[f32]) {
        for (g, &v) in d.iter_mut().zip(x) {
            *g *= self.derivative(v);
        }
    }

    fn derivative(self, v: f32) -> f32 {
        match self {
            // Φ(x) + x·φ(x)
            Activation::Gelu => {
                let cdf = 0.5 * (1.0 + libm::erff(v * core::f32::consts::FRAC_1_SQRT_2));
                let pdf = libm::expf(-0.5 * v * v) * 0.398_942_3;
                cdf + v * pdf
            }
            Activation::GeluTanh => {
                let u = 0.797_884_6 * (v + 0.044715 * v * v * v);
                let t = libm::tanhf(u);
                let du = 0.797_884_6 * (1.0 + 3.0 * 0.044715 * v * v);
                0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du
            }
            Activation::Relu => {
                if v > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            // σ(x)·(1 + x·(1 - σ(x)))
            Activation::Silu => {
                let s = 1.0 / (1.0 + libm::expf(-v));
                s * (1.0 + v * (1.0 - s))
            }
        }
    }
}

/// Gated MLP input of Llama-family models: out = act(gate) · up.
pub fn glu_forward(out: &mut [f32], gate: &[f32], up: &[f32], act: Activation) {
    if act == Activation::Silu {
        return swiglu::forward(out, gate, up);
    }
    out.copy_from_slice(gate);
    act.forward_inplace(out);
    out.iter_mut().zip(up).for_each(|(o, u)| *o *= u);
}

/// Backward of [`glu_forward`]: dgate = dout·up·act'(gate), dup = dout·act(gate) (overwritten).
pub fn glu_backward(
    dgate: &mut [f32],
    dup: &mut [f32],
    dout: &[f32],
    gate: &[f32],
    up: &[f32],
    act: Activation,
) {
    if act == Activation::Silu {
        return swiglu::backward(dgate, dup, dout, gate, up);
    }
    dup.copy_from_slice(gate);
    act.forward_inplace(dup);
    dup.iter_mut().zip(dout).for_each(|(a, d)| *a *= d);
    for i in 0..dgate.len() {
        dgate[i] = dout[i] * up[i] * act.derivative(gate[i]);
    }
}

/// SwiGLU (SiLU-gated GLU), the training hot path of Llama-family MLPs: one pass per
/// direction with `softmax::exp_fast` (within 2 ulp of exp; PyTorch's vectorized SiLU is
/// not libm-exact either), compiled for AVX2+FMA when the CPU has them so it runs 8 lanes
/// wide. Inference keeps `Activation::forward_inplace`.
mod swiglu {
    use crate::ops::softmax::exp_fast;

    macro_rules! dispatch {
        ($body:ident, $avx2:ident, ($($arg:ident: $ty:ty),*)) => {
            pub fn $body($($arg: $ty),*) {
                #[cfg(target_arch = "x86_64")]
                {
                    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
                        return unsafe { $avx2($($arg),*) };
                    }
                }
                imp::$body($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn $avx2($($arg: $ty),*) {
                imp::$body($($arg),*)
            }
        };
    }
    dispatch!(forward, forward_avx2, (out: &mut [f32], gate: &[f32], up: &[f32]));
    dispatch!(backward, backward_avx2, (dgate: &mut [f32], dup: &mut [f32], dout: &[f32], gate: &[f32], up: &[f32]));

    mod imp {
        use super::exp_fast;

        /// out = silu(g)·u, silu(g) = g·σ(g).
        #[inline(always)]
        pub fn forward(out: &mut [f32], gate: &[f32], up: &[f32]) {
            for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
                *o = g / (1.0 + exp_fast(-g)) * u;
            }
        }

        /// dgate = dout·u·σ(g)·(1 + g·(1 - σ(g))), dup = dout·silu(g).
        #[inline(always)]
        pub fn backward(
            dgate: &mut [f32],
            dup: &mut [f32],
            dout: &[f32],
            gate: &[f32],
            up: &[f32],
        ) {
            let n = dgate.len();
            let (dup, dout, gate, up) = (&mut dup[..n], &dout[..n], &gate[..n], &up[..n]);
            for i in 0..n {
                let (g, d) = (gate[i], dout[i]);
                let s = 1.0 / (1.0 + exp_fast(-g));
                dup[i] = d * g * s;
                dgate[i] = d * up[i] * s * (1.0 + g * (1.0 - s));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{check, rand_vec};

    #[test]
    fn activation_backward_matches_finite_differences() {
        let x: Vec<f32> = rand_vec(16, 41).iter().map(|v| v * 3.0).collect();
        let dout = rand_vec(16, 42);
        for act in [
            Activation::Gelu,
            Activation::GeluTanh,
            Activation::Relu,
            Activation::Silu,
        ] {
            let loss = |x: &[f32]| {
                let mut y = x.to_vec();
                act.forward_inplace(&mut y);
                y.iter()
                    .zip(&dout)
                    .map(|(a, g)| (a * g) as f64)
                    .sum::<f64>()
            };
            let mut d = dout.clone();
            act.backward_inplace(&mut d, &x);
            // Keep ReLU's kink out of the finite differences.
            if act == Activation::Relu && x.iter().any(|v| v.abs() < 2e-2) {
                continue;
            }
            check(&format!("{act:?}"), &x, &d, loss);
        }
    }

    #[test]
    fn swiglu_fast_path_matches_generic_silu() {
        let g: Vec<f32> = rand_vec(77, 46).iter().map(|v| v * 12.0).collect();
        let u = rand_vec(77, 47);
        let dout = rand_vec(77, 48);
        let (mut y, mut dg, mut du) = (vec![0f32; 77], vec![0f32; 77], vec![0f32; 77]);
        glu_forward(&mut y, &g, &u, Activation::Silu);
        glu_backward(&mut dg, &mut du, &dout, &g, &u, Activation::Silu);
        let mut s = g.clone();
        Activation::Silu.forward_inplace(&mut s);
        for i in 0..77 {
            let close = |a: f32, b: f32| (a - b).abs() <= 1e-6 * (1.0 + b.abs());
            assert!(close(y[i], s[i] * u[i]), "forward {i}");
            assert!(close(du[i], s[i] * dout[i]), "dup {i}");
            let want = dout[i] * u[i] * Activation::Silu.derivative(g[i]);
            assert!(close(dg[i], want), "dgate {i}: {} vs {want}", dg[i]);
        }
    }

    #[test]
    fn glu_backward_matches_finite_differences() {
        let g = rand_vec(12, 43);
        let u = rand_vec(12, 44);
        let dout = rand_vec(12, 45);
        let loss = |g: &[f32], u: &[f32]| {
            let mut y = vec![0f32; 12];
            glu_forward(&mut y, g, u, Activation::Silu);
            y.iter()
                .zip(&dout)
                .map(|(a, d)| (a * d) as f64)
                .sum::<f64>()
        };
        let (mut dg, mut du) = (vec![0f32; 12], vec![0f32; 12]);
        glu_backward(&mut dg, &mut du, &dout, &g, &u, Activation::Silu);
        check("dgate", &g, &dg, |v| loss(v, &u));
        check("dup", &u, &du, |v| loss(&g, v));
    }
}
