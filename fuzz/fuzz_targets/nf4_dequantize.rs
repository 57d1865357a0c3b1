//! NF4 from arbitrary bytes: a shape, a blocksize, packed codes and absmax values read from
//! the input must either be refused with an error or dequantize and multiply without a panic.
#![no_main]
use dsum_core::quant::nf4::{Absmax, Nf4Dtype, Nf4Tensor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let (n, k) = (data[0] as usize % 48 + 1, data[1] as usize % 48 + 1);
    // Mostly valid blocksizes, sometimes not (32..4096 powers of two are valid).
    let blocksize = [32, 64, 128, 256, 4096, 0, 48, 1 << 20][data[2] as usize % 8];
    let rest = &data[3..];
    let packed_len = (n * k).div_ceil(2).min(rest.len());
    let packed = rest[..packed_len].to_vec();
    let absmax: Vec<f32> = rest[packed_len..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let Ok(t) = Nf4Tensor::from_parts(vec![n, k], blocksize, packed, Absmax::Plain(absmax), Nf4Dtype::F32)
    else {
        return;
    };
    let w = t.dequantize();
    assert_eq!(w.len(), n * k);
    let x = vec![0.5f32; 2 * k];
    let mut y = vec![0f32; 2 * n];
    t.matmul(&mut y, &x, 2);
    let mut dx = vec![0f32; 2 * k];
    t.matmul_t(&mut dx, &y, 2);
});
