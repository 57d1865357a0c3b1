//! LoRA on cuBLAS (+ dropout.cu) against dsum_core::train::linear::TrainLinear with a zero
//! base weight, so y and dx are the adapter's part alone.

use dsum_core::lora::config::LoraConfig;
use dsum_core::tensor::Weight;
use dsum_core::train::linear::{Base, Lora, Slot, TrainLinear};
use dsum_core::train::Param;
use dsum_kernels::dropout::{dropout_backward_acc, dropout_forward};
use dsum_kernels::lora as k;
use dsum_kernels::tolerance::{check, F32};
use dsum_kernels::Gpu;
use proptest::prelude::*;

use super::{prop, rand_vec};
use crate::GpuTest;

pub const TESTS: &[GpuTest] = &[("lora_forward_backward", forward_backward)];

#[derive(Debug, Clone)]
struct Case {
    m: usize,
    in_f: usize,
    out_f: usize,
    r: usize,
    alpha: f64,
    rslora: bool,
    dropout: f32,
    seed: u64,
}

fn dim(max: usize) -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), Just(31), Just(33), Just(257), 1..max]
}

fn cases() -> impl Strategy<Value = Case> {
    (
        (1usize..70, dim(1100), dim(400)),
        prop_oneof![Just(1usize), Just(8), Just(16), Just(33), 1usize..40],
        (0.5f64..4.0, any::<bool>()),
        prop_oneof![Just(0.0f32), Just(0.1), 0.0f32..0.6],
        any::<u64>(),
    )
        .prop_map(
            |((m, in_f, out_f), r, (alpha, rslora), dropout, seed)| Case {
                m,
                in_f,
                out_f,
                r,
                alpha,
                rslora,
                dropout,
                seed,
            },
        )
}

/// `v` scaled by `1/sqrt(fan)`: keeps every product O(1), so F32 compares rounding, not range.
fn scaled(v: Vec<f32>, fan: usize) -> Vec<f32> {
    let s = 1.0 / (fan as f32).sqrt();
    v.into_iter().map(|x| x * s).collect()
}

fn forward_backward(gpu: &Gpu) -> Result<(), String> {
    prop(cases(), 24, |c: Case| {
        let Case {
            m,
            in_f,
            out_f,
            r,
            seed,
            ..
        } = c;
        let cfg = LoraConfig {
            r,
            alpha: c.alpha,
            dropout: c.dropout,
            use_rslora: c.rslora,
            ..LoraConfig::default()
        };
        let scaling = cfg.scaling();
        // No exact zeros in x: where x is 0 the CPU backward cannot tell a dropped element
        // from a kept one (it reads the mask back from x_drop) and lets the gradient through.
        let x: Vec<f32> = rand_vec(m * in_f, seed)
            .into_iter()
            .map(|v| if v == 0.0 { 0.5 } else { v })
            .collect();
        let a = scaled(rand_vec(r * in_f, seed + 1), in_f);
        let b = scaled(rand_vec(out_f * r, seed + 2), r);
        let dy = scaled(rand_vec(m * out_f, seed + 3), out_f);
        let dx0 = rand_vec(m * in_f, seed + 4);
        let da0 = rand_vec(r * in_f, seed + 5);
        let db0 = rand_vec(out_f * r, seed + 6);
        let drop_seed = seed.rotate_left(17) ^ 0x5EED;
        let with_dx = seed % 4 != 0;

        // CPU: the real training layer.
        let mut lora = Lora {
            a: Param::new("lora_A.weight", vec![r, in_f], a.clone()),
            b: Param::new("lora_B.weight", vec![out_f, r], b.clone()),
            scaling,
            dropout: c.dropout,
        };
        lora.a.grad = da0.clone();
        lora.b.grad = db0.clone();
        let mut lin = TrainLinear {
            base: Base::Dense(Slot::Frozen(Weight::from_vec(
                vec![out_f, in_f],
                vec![0.0; out_f * in_f],
            ))),
            bias: None,
            lora: Some(lora),
            inp: in_f,
            out: out_f,
        };
        let (want_y, cache) = lin.forward(&x, m, Some(drop_seed));
        let mut want_dx = dx0.clone();
        lin.backward(with_dx.then_some(&mut want_dx[..]), &dy, &x, &cache, m);
        let lora = lin.lora.as_ref().ok_or("no lora")?;

        // GPU: dropout, then the adapter; backward in the reverse order.
        let e = |e: dsum_kernels::KernelError| e.to_string();
        let gx = gpu.upload(&x).map_err(e)?;
        let (ga, gb, gdy) = (
            gpu.upload(&a).map_err(e)?,
            gpu.upload(&b).map_err(e)?,
            gpu.upload(&dy).map_err(e)?,
        );
        let mut gxd = gpu.zeros::<f32>(m * in_f).map_err(e)?;
        dropout_forward(gpu, &mut gxd, &gx, c.dropout, drop_seed, m * in_f).map_err(e)?;
        let mut gy = gpu.zeros::<f32>(m * out_f).map_err(e)?;
        let mut tmp = gpu.zeros::<f32>(m * r).map_err(e)?;
        k::lora_forward(
            gpu, &mut gy, &gxd, &ga, &gb, &mut tmp, scaling, m, in_f, out_f, r,
        )
        .map_err(e)?;
        check("y", &gpu.download(&gy).map_err(e)?, &want_y, F32)?;

        let mut gdx = gpu.upload(&dx0).map_err(e)?;
        let mut gdxd = gpu.zeros::<f32>(m * in_f).map_err(e)?;
        let mut gda = gpu.upload(&da0).map_err(e)?;
        let mut gdb = gpu.upload(&db0).map_err(e)?;
        let mut scratch = gpu.zeros::<f32>(m * r).map_err(e)?;
        k::lora_backward(
            gpu,
            with_dx.then_some(&mut gdxd),
            &mut gda,
            &mut gdb,
            &gdy,
            &gxd,
            &ga,
            &gb,
            &tmp,
            scaling,
            m,
            in_f,
            out_f,
            r,
            &mut scratch,
        )
        .map_err(e)?;
        if with_dx {
            dropout_backward_acc(gpu, &mut gdx, &gdxd, c.dropout, drop_seed, m * in_f)
                .map_err(e)?;
            check("dx", &gpu.download(&gdx).map_err(e)?, &want_dx, F32)?;
        }
        check("dA", &gpu.download(&gda).map_err(e)?, &lora.a.grad, F32)?;
        check("dB", &gpu.download(&gdb).map_err(e)?, &lora.b.grad, F32)
    })
}
