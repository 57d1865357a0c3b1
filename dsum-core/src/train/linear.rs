//! A linear layer as training sees it: a base weight that is frozen (LoRA), 4-bit (QLoRA)
//! or trainable (full fine-tuning), an optional bias, and an optional LoRA adapter
//! (peft semantics: y = x·Wᵀ + b + (dropout(x)·Aᵀ)·Bᵀ·scaling). Forward and backward side
//! by side; the backward accumulates into the layer's own `Param`s.

use super::Param;
use crate::ops::matmul::{linear_backward, linear_forward, matmul_acc};
use crate::tensor::Weight;

/// A weight that training either leaves alone or updates.
pub enum Slot {
    Frozen(Weight),
    Train(Param),
}

impl Slot {
    pub fn data(&self) -> &[f32] {
        match self {
            Slot::Frozen(w) => w,
            Slot::Train(p) => &p.value,
        }
    }
    pub fn grad_mut(&mut self) -> Option<&mut [f32]> {
        match self {
            Slot::Frozen(_) => None,
            Slot::Train(p) => Some(&mut p.grad),
        }
    }
    pub fn param(&self) -> Option<&Param> {
        match self {
            Slot::Train(p) => Some(p),
            Slot::Frozen(_) => None,
        }
    }
    pub fn param_mut(&mut self) -> Option<&mut Param> {
        match self {
            Slot::Train(p) => Some(p),
            Slot::Frozen(_) => None,
        }
    }
    /// The current values as a standalone weight (for export / evaluation models).
    pub fn to_weight(&self, shape: &[usize]) -> Weight {
        match self {
            Slot::Frozen(w) => w.clone_view(),
            Slot::Train(p) => Weight::from_vec(shape.to_vec(), p.value.clone()),
        }
    }
}

/// A frozen weight stored compressed (QLoRA's NF4), multiplied without materializing it.
pub trait QuantizedWeight: Send + Sync {
    /// out[M,N] = x[M,K] · Wᵀ
    fn matmul(&self, out: &mut [f32], x: &[f32], m: usize);
    /// dx[M,K] += dy[M,N] · W
    fn matmul_t_acc(&self, dx: &mut [f32], dy: &[f32], m: usize);
    fn dequantize(&self) -> Vec<f32>;
    /// The NF4 tensor behind this weight, for a backend that multiplies it natively.
    fn as_nf4(&self) -> Option<&crate::quant::nf4::Nf4Tensor> {
        None
    }
}

/// The base weight of a linear layer.
pub enum Base {
    Dense(Slot),
    Quantized(Box<dyn QuantizedWeight>),
}

/// LoRA factors: A `[r, in]`, B `[out, r]`.
pub struct Lora {
    pub a: Param,
    pub b: Param,
    pub scaling: f32,
    pub dropout: f32,
}

pub struct TrainLinear {
    pub base: Base,
    pub bias: Option<Slot>,
    pub lora: Option<Lora>,
    pub inp: usize,
    pub out: usize,
}

/// What the forward pass keeps for the backward pass (the input itself is kept by the
/// caller, who usually needs it anyway).
#[derive(Default)]
pub struct LinearCache {
    /// The dropped-out input fed to A when dropout is active ([M, in]), else None.
    x_drop: Option<Vec<f32>>,
    /// x_drop · Aᵀ  [M, r]
    h: Vec<f32>,
    /// The dropout seed of `x_drop`: the backward pass regenerates the mask from it.
    seed: u64,
}

impl TrainLinear {
    /// y[M, out] for x[M, in]; `dropout_seed` is Some while training with dropout on.
    pub fn forward(
        &self,
        x: &[f32],
        m: usize,
        dropout_seed: Option<u64>,
    ) -> (Vec<f32>, LinearCache) {
        let mut y = vec![0f32; m * self.out];
        let bias = self.bias.as_ref().map(|b| b.data());
        match &self.base {
            Base::Dense(w) => linear_forward(&mut y, x, w.data(), bias, m, self.inp, self.out),
            Base::Quantized(q) => {
                q.matmul(&mut y, x, m);
                if let Some(b) = bias {
                    for row in y.chunks_exact_mut(self.out) {
                        row.iter_mut().zip(b).for_each(|(a, b)| *a += b);
                    }
                }
            }
        }
        let mut cache = LinearCache::default();
        if let Some(l) = &self.lora {
            let r = l.a.shape[0];
            let x_drop = match dropout_seed {
                Some(seed) if l.dropout > 0.0 => {
                    let keep = 1.0 / (1.0 - l.dropout);
                    Some(
                        x.iter()
                            .enumerate()
                            .map(|(i, &v)| {
                                if crate::ops::dropout::keep(seed, i, l.dropout) {
                                    v * keep
                                } else {
                                    0.0
                                }
                            })
                            .collect::<Vec<f32>>(),
                    )
                }
                _ => None,
            };
            let xd = x_drop.as_deref().unwrap_or(x);
            let mut h = vec![0f32; m * r];
            linear_forward(&mut h, xd, &l.a.value, None, m, self.inp, r);
            // y += scaling · h · Bᵀ
            let hs: Vec<f32> = h.iter().map(|v| v * l.scaling).collect();
            matmul_acc(
                &mut y,
                (self.out, 1),
                &hs,
                (r, 1),
                &l.b.value,
                (1, r),
                m,
                r,
                self.out,
            );
            cache = LinearCache {
                x_drop,
                h,
                seed: dropout_seed.unwrap_or(0),
            };
        }
        (y, cache)
    }

    /// Accumulate gradients for dy[M, out]; dx[M, in] += dy·W_effᵀ when asked.
    pub fn backward(
        &mut self,
        dx: Option<&mut [f32]>,
        dy: &[f32],
        x: &[f32],
        cache: &LinearCache,
        m: usize,
    ) {
        let (inp, out) = (self.inp, self.out);
        if let Some(b) = self.bias.as_mut().and_then(|b| b.grad_mut()) {
            for row in dy.chunks_exact(out) {
                b.iter_mut().zip(row).for_each(|(a, g)| *a += g);
            }
        }
        let mut dx = dx;
        match &mut self.base {
            Base::Dense(slot) => {
                let (w, dw) = match slot {
                    Slot::Frozen(w) => (&**w, None),
                    Slot::Train(p) => (&p.value[..], Some(&mut p.grad[..])),
                };
                linear_backward(dx.as_deref_mut(), dw, None, dy, x, w, m, inp, out);
            }
            Base::Quantized(q) => {
                if let Some(dx) = dx.as_deref_mut() {
                    q.matmul_t_acc(dx, dy, m);
                }
            }
        }
        if let Some(l) = &mut self.lora {
            let r = l.a.shape[0];
            // dB += s·dyᵀ·h ; dh = s·dy·B ; dA += dhᵀ·x_drop ; dx += mask·(dh·A)/(1-p)
            let hs: Vec<f32> = cache.h.iter().map(|v| v * l.scaling).collect();
            matmul_acc(&mut l.b.grad, (r, 1), dy, (1, out), &hs, (r, 1), out, m, r);
            let mut dh = vec![0f32; m * r];
            matmul_acc(&mut dh, (r, 1), dy, (out, 1), &l.b.value, (r, 1), m, out, r);
            dh.iter_mut().for_each(|v| *v *= l.scaling);
            let xd = cache.x_drop.as_deref().unwrap_or(x);
            matmul_acc(
                &mut l.a.grad,
                (inp, 1),
                &dh,
                (1, r),
                xd,
                (inp, 1),
                r,
                m,
                inp,
            );
            if let Some(dx) = dx {
                // Without dropout dx_drop is dx: accumulate straight into it.
                if cache.x_drop.is_none() {
                    matmul_acc(dx, (inp, 1), &dh, (r, 1), &l.a.value, (inp, 1), m, r, inp);
                    return;
                }
                let mut dxd = vec![0f32; m * inp];
                matmul_acc(
                    &mut dxd,
                    (inp, 1),
                    &dh,
                    (r, 1),
                    &l.a.value,
                    (inp, 1),
                    m,
                    r,
                    inp,
                );
                // d(x_drop)/dx is the kept mask scaled by 1/(1-p). The mask is regenerated, not
                // read off x_drop's zeros: a kept element whose input is 0 still passes gradient.
                let keep = 1.0 / (1.0 - l.dropout);
                for (i, (a, g)) in dx.iter_mut().zip(&dxd).enumerate() {
                    if crate::ops::dropout::keep(cache.seed, i, l.dropout) {
                        *a += g * keep;
                    }
                }
            }
        }
    }

    /// W + scaling·B·A as a dense `[out, in]` matrix (merge for export and evaluation).
    pub fn merged_weight(&self) -> Weight {
        let mut w = match &self.base {
            Base::Dense(s) => s.data().to_vec(),
            Base::Quantized(q) => q.dequantize(),
        };
        if let Some(l) = &self.lora {
            let r = l.a.shape[0];
            let bs: Vec<f32> = l.b.value.iter().map(|v| v * l.scaling).collect();
            matmul_acc(
                &mut w,
                (self.inp, 1),
                &bs,
                (r, 1),
                &l.a.value,
                (self.inp, 1),
                self.out,
                r,
                self.inp,
            );
        }
        Weight::from_vec(vec![self.out, self.inp], w)
    }

    /// `{name}.weight` (LoRA merged) and `{name}.bias` for a full-model export.
    pub fn export(&self, name: &str, out: &mut Vec<(String, Weight)>) {
        out.push((format!("{name}.weight"), self.merged_weight()));
        if let Some(b) = &self.bias {
            out.push((format!("{name}.bias"), b.to_weight(&[self.out])));
        }
    }

    pub fn params(&self) -> Vec<&Param> {
        let mut v = Vec::new();
        if let Base::Dense(Slot::Train(p)) = &self.base {
            v.push(p);
        }
        if let Some(p) = self.bias.as_ref().and_then(|b| b.param()) {
            v.push(p);
        }
        if let Some(l) = &self.lora {
            v.push(&l.a);
            v.push(&l.b);
        }
        v
    }

    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut v = Vec::new();
        if let Base::Dense(Slot::Train(p)) = &mut self.base {
            v.push(p);
        }
        if let Some(p) = self.bias.as_mut().and_then(|b| b.param_mut()) {
            v.push(p);
        }
        if let Some(l) = &mut self.lora {
            v.push(&mut l.a);
            v.push(&mut l.b);
        }
        v
    }
}
