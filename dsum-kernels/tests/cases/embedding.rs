//! embedding.cu against dsum_core::ops::embedding. Both directions are bit-identical to the CPU
//! (one multiply per element forward; the backward adds in token order without FMA).

use dsum_core::ops::embedding::{embedding_backward, embedding_forward};
use dsum_kernels::embedding as k;
use dsum_kernels::tolerance::{check, EXACT};
use dsum_kernels::Gpu;
use proptest::prelude::*;

use super::{prop, rand_vec};
use crate::GpuTest;

pub const TESTS: &[GpuTest] = &[
    ("embedding_forward", forward),
    ("embedding_forward_bad_ids", forward_bad_ids),
    ("embedding_backward", backward),
];

/// (n, c, vocab, seed). A small vocab makes repeated ids (which add up) common.
fn shapes() -> impl Strategy<Value = (usize, usize, usize, u64)> {
    let c = prop_oneof![
        prop::sample::select(vec![1usize, 31, 33, 255, 257, 1025]),
        1usize..1100,
    ];
    (1usize..120, c, 1usize..50, 0u64..1000)
}

fn ids(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    rand_vec(n, seed)
        .iter()
        .map(|v| (((v + 1.0) * 0.5 * vocab as f32) as u32).min(vocab as u32 - 1))
        .collect()
}

fn forward(gpu: &Gpu) -> Result<(), String> {
    prop(shapes(), 24, |(n, c, vocab, seed)| {
        let table = rand_vec(vocab * c, seed);
        let id = ids(n, vocab, seed + 1);
        let scale = 1.0 + (seed % 7) as f32 * 0.37;
        let mut want = vec![0f32; n * c];
        embedding_forward(&mut want, &id, &table, c, scale).map_err(|e| e.to_string())?;
        let e = |e: dsum_kernels::KernelError| e.to_string();
        let (gt, gi) = (gpu.upload(&table).map_err(e)?, gpu.upload(&id).map_err(e)?);
        let mut out = gpu.upload(&rand_vec(n * c, seed + 2)).map_err(e)?;
        k::embedding_forward(gpu, &mut out, &gt, &gi, n, c, vocab, scale).map_err(e)?;
        check("out", &gpu.download(&out).map_err(e)?, &want, EXACT)
    })
}

/// Ids >= vocab (which the CPU rejects) read nothing and give zero rows; the others are looked
/// up as usual.
fn forward_bad_ids(gpu: &Gpu) -> Result<(), String> {
    prop(shapes(), 16, |(n, c, vocab, seed)| {
        let table = rand_vec(vocab * c, seed);
        let mut id = ids(n, vocab, seed + 1);
        for (i, v) in id.iter_mut().enumerate() {
            if i % 3 == 1 {
                *v = if i % 2 == 0 { vocab as u32 } else { u32::MAX };
            }
        }
        let mut want = vec![0f32; n * c];
        for (i, &v) in id.iter().enumerate() {
            if (v as usize) < vocab {
                embedding_forward(&mut want[i * c..(i + 1) * c], &[v], &table, c, 1.0)
                    .map_err(|e| e.to_string())?;
            }
        }
        let e = |e: dsum_kernels::KernelError| e.to_string();
        let (gt, gi) = (gpu.upload(&table).map_err(e)?, gpu.upload(&id).map_err(e)?);
        let mut out = gpu.upload(&rand_vec(n * c, seed + 2)).map_err(e)?;
        k::embedding_forward(gpu, &mut out, &gt, &gi, n, c, vocab, 1.0).map_err(e)?;
        check("out", &gpu.download(&out).map_err(e)?, &want, EXACT)
    })
}

fn backward(gpu: &Gpu) -> Result<(), String> {
    prop(shapes(), 24, |(n, c, vocab, seed)| {
        let dtable0 = rand_vec(vocab * c, seed);
        let dout = rand_vec(n * c, seed + 1);
        let id = ids(n, vocab, seed + 2);
        let scale = 1.0 + (seed % 7) as f32 * 0.37;
        let mut want = dtable0.clone();
        embedding_backward(&mut want, &dout, &id, c, scale);
        let e = |e: dsum_kernels::KernelError| e.to_string();
        let mut gt = gpu.upload(&dtable0).map_err(e)?;
        let (gd, gi) = (gpu.upload(&dout).map_err(e)?, gpu.upload(&id).map_err(e)?);
        k::embedding_backward(gpu, &mut gt, &gd, &gi, n, c, vocab, scale).map_err(e)?;
        check("dtable", &gpu.download(&gt).map_err(e)?, &want, EXACT)
    })
}
