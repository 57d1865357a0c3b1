//! Global gradient-norm clipping with `torch.nn.utils.clip_grad_norm_` semantics: the total
//! is the L2 norm of the per-parameter L2 norms, every gradient is multiplied by
//! `min(1, max_norm / (total + 1e-6))`, and the norm before clipping is what gets logged.

use super::Param;

/// L2 norm of all gradients together (each param's norm in f64, rounded to f32 as torch
/// returns per-tensor f32 norms).
pub fn grad_norm(params: &[&mut Param]) -> f32 {
    let norms: f64 = params
        .iter()
        .map(|p| {
            let n = p
                .grad
                .iter()
                .map(|&g| g as f64 * g as f64)
                .sum::<f64>()
                .sqrt() as f32;
            n as f64 * n as f64
        })
        .sum();
    norms.sqrt() as f32
}

/// Clip in place to `max_norm`; returns the norm before clipping (NaN/inf pass through so
/// the caller can stop).
pub fn clip_grad_norm(params: &mut [&mut Param], max_norm: f32) -> f32 {
    let total = grad_norm(params);
    let coef = (max_norm / (total + 1e-6)).min(1.0);
    if total.is_finite() {
        for p in params.iter_mut() {
            p.grad.iter_mut().for_each(|g| *g *= coef);
        }
    }
    total
}
