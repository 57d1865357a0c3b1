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
}
