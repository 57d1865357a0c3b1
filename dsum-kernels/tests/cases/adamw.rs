//! adamw.cu against dsum_core::train::optim::AdamW over several steps.

use dsum_core::train::optim::{AdamW, AdamWConfig};
use dsum_core::train::Param;
use dsum_kernels::adamw as k;
use dsum_kernels::tolerance::{check, F32};
use dsum_kernels::Gpu;
use proptest::prelude::*;

use super::{prop, rand_vec};
use crate::GpuTest;

pub const TESTS: &[GpuTest] = &[("adamw_step", steps)];

#[derive(Debug, Clone)]
struct Case {
    n: usize,
    steps: u64,
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
    name: &'static str,
    seed: u64,
}

fn cases() -> impl Strategy<Value = Case> {
    (
        prop_oneof![
            Just(1usize),
            Just(31),
            Just(33),
            Just(257),
            Just(1025),
            1usize..100_000
        ],
        1u64..7,
        // Large rates: the update must stand out of the F32 tolerance on O(1) values.
        0.01f64..0.5,
        prop_oneof![Just((0.9, 0.999)), Just((0.8, 0.95)), Just((0.0, 0.5))],
        prop_oneof![Just(1e-8), Just(1e-6), Just(1e-3)],
        prop_oneof![Just(0.0), Just(0.01), Just(0.3)],
        // A decayed weight and an exempt bias.
        prop_oneof![
            Just("model.layers.0.mlp.up_proj.weight"),
            Just("model.fc1.bias")
        ],
        any::<u64>(),
    )
        .prop_map(
            |(n, steps, lr, betas, eps, weight_decay, name, seed)| Case {
                n,
                steps,
                lr,
                betas,
                eps,
                weight_decay,
                name,
                seed,
            },
        )
}

fn steps(gpu: &Gpu) -> Result<(), String> {
    prop(cases(), 24, |c: Case| {
        let n = c.n;
        let value = rand_vec(n, c.seed);
        let mut p = Param::new(c.name, vec![n], value.clone());
        let config = AdamWConfig {
            betas: c.betas,
            eps: c.eps,
            weight_decay: c.weight_decay,
        };
        let mut opt = AdamW::new(config, &[&mut p]);
        let decay = if opt.decay[0] { c.weight_decay } else { 0.0 };

        let e = |e: dsum_kernels::KernelError| e.to_string();
        let mut gp = gpu.upload(&value).map_err(e)?;
        let mut gm = gpu.zeros::<f32>(n).map_err(e)?;
        let mut gv = gpu.zeros::<f32>(n).map_err(e)?;
        for s in 1..=c.steps {
            // Gradients of a few magnitudes, some exactly zero.
            let g: Vec<f32> = rand_vec(n, c.seed ^ (s * 7919))
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    if i % 13 == 0 {
                        0.0
                    } else {
                        v * (1 + i % 3) as f32
                    }
                })
                .collect();
            p.grad.clone_from(&g);
            opt.step(&mut [&mut p], c.lr);
            let gg = gpu.upload(&g).map_err(e)?;
            let (b1, b2) = c.betas;
            k::adamw_step(
                gpu, &mut gp, &gg, &mut gm, &mut gv, n, c.lr, b1, b2, c.eps, decay, opt.step,
            )
            .map_err(e)?;
        }
        let st = &opt.state[0];
        check("param", &gpu.download(&gp).map_err(e)?, &p.value, F32)?;
        check("exp_avg", &gpu.download(&gm).map_err(e)?, &st.exp_avg, F32)?;
        check(
            "exp_avg_sq",
            &gpu.download(&gv).map_err(e)?,
            &st.exp_avg_sq,
            F32,
        )
    })
}
