//! grad_norm.cu against dsum_core::train::clip (torch's clip_grad_norm_).

use dsum_core::train::clip::{clip_grad_norm, grad_norm};
use dsum_core::train::Param;
use dsum_kernels::grad_norm as k;
use dsum_kernels::tolerance::{check, F32};
use dsum_kernels::Gpu;
use proptest::prelude::*;

use super::{prop, rand_vec};
use crate::GpuTest;

pub const TESTS: &[GpuTest] = &[("grad_norm_clip", norm_and_clip)];

/// (tensor sizes, magnitude, max_norm, seed). Sizes up to past 1024 blocks of 256 (the
/// grid-stride loop); magnitude 1e20 squares past f32's range, which the f64 sums must absorb.
fn cases() -> impl Strategy<Value = (Vec<usize>, f32, f32, u64)> {
    (
        proptest::collection::vec(
            prop_oneof![
                Just(1usize),
                Just(31),
                Just(33),
                Just(257),
                Just(1025),
                1usize..2000,
                1usize..600_000
            ],
            1..7,
        ),
        prop_oneof![Just(1.0f32), Just(1e-3), Just(1e3), Just(1e20)],
        prop_oneof![Just(1.0f32), Just(0.3), Just(1e38)],
        any::<u64>(),
    )
}

fn norm_and_clip(gpu: &Gpu) -> Result<(), String> {
    prop(cases(), 24, |(sizes, mag, max_norm, seed)| {
        let grads: Vec<Vec<f32>> = sizes
            .iter()
            .enumerate()
            .map(|(t, &n)| {
                let v = rand_vec(n, seed.wrapping_add(t as u64));
                v.into_iter().map(|x| x * mag).collect()
            })
            .collect();
        let mut params: Vec<Param> = grads
            .iter()
            .enumerate()
            .map(|(t, g)| {
                let mut p = Param::new(format!("p{t}"), vec![g.len()], vec![0.0; g.len()]);
                p.grad.clone_from(g);
                p
            })
            .collect();
        let mut refs: Vec<&mut Param> = params.iter_mut().collect();
        let want_norm = grad_norm(&refs);
        let want_total = clip_grad_norm(&mut refs, max_norm);

        let e = |e: dsum_kernels::KernelError| e.to_string();
        let mut dev = Vec::new();
        for g in &grads {
            dev.push(gpu.upload(g).map_err(e)?);
        }
        let mut scratch = gpu
            .zeros::<f32>(k::grad_norm_scratch_len(&sizes))
            .map_err(e)?;
        let views: Vec<_> = dev.iter().collect();
        let norm = k::global_grad_norm(gpu, &views, &mut scratch).map_err(e)?;
        check("norm", &[norm], &[want_norm], F32)?;
        let again = k::global_grad_norm(gpu, &views, &mut scratch).map_err(e)?;
        if again.to_bits() != norm.to_bits() {
            return Err(format!("not deterministic: {norm} then {again}"));
        }
        let mut muts: Vec<_> = dev.iter_mut().collect();
        let total = k::clip_grad_norm(gpu, &mut muts, max_norm, &mut scratch).map_err(e)?;
        check("total", &[total], &[want_total], F32)?;
        for (t, (d, p)) in dev.iter().zip(&params).enumerate() {
            check(
                &format!("grad {t}"),
                &gpu.download(d).map_err(e)?,
                &p.grad,
                F32,
            )?;
        }
        Ok(())
    })
}
