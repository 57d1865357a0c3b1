//! NF4 kernel bandwidth on the weight matrices of Llama-3.2-3B (hidden 3072, intermediate 8192,
//! 8 KV heads of 128; blocksize 64), against a device-to-device copy moving the same bytes
//! (issue 9: dequantize at >= 90% of copy bandwidth).
//!
//!   cargo run --release -p dsum-kernels --example bench_nf4 [-- --iters N]
//!
//! Dequantize: (bytes read + bytes written) / time. GEMV (`nf4_linear`, m = 1 and 4): weight
//! bytes read per call / time. Copy: 2 · bytes copied / time, for a copy of half the dequantize
//! traffic (or of the weight bytes, for the GEMV). Every measurement cycles through enough
//! distinct buffers (>= 256 MiB) that the 50 MiB L2 cache cannot serve repeated calls.
//! Without a CUDA device it says so and exits 0.

use std::process::ExitCode;

use dsum_core::quant::dynamic_map::dynamic_map_signed;
use dsum_kernels::cudarc::driver::sys::CUevent_flags;
use dsum_kernels::cudarc::driver::CudaSlice;
use dsum_kernels::nf4::{self, Nf4Absmax, Nf4Parts, Nf4Scratch, Nf4Weight};
use dsum_kernels::{Gpu, Result};

const BLOCKSIZE: usize = 64;
/// Bytes each measurement cycles through: beyond an H100/H200 L2 (50 MiB) several times.
const ROTATE_BYTES: usize = 256 << 20;

/// (name, rows, cols) of one decoder layer's linear weights.
const SHAPES: [(&str, usize, usize); 7] = [
    ("q_proj", 3072, 3072),
    ("k_proj", 1024, 3072),
    ("v_proj", 1024, 3072),
    ("o_proj", 3072, 3072),
    ("gate_proj", 8192, 3072),
    ("up_proj", 8192, 3072),
    ("down_proj", 3072, 8192),
];

fn main() -> ExitCode {
    let mut iters = 100usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next().and_then(|v| v.parse().ok())) {
            ("--iters", Some(n)) if n > 0 => iters = n,
            _ => {
                eprintln!("usage: bench_nf4 [--iters N]");
                return ExitCode::from(2);
            }
        }
    }
    if dsum_kernels::device_count() == 0 {
        println!("bench_nf4: no CUDA device here (no driver or no GPU); nothing measured");
        return ExitCode::SUCCESS;
    }
    match run(iters) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_nf4: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(iters: usize) -> Result<()> {
    let gpu = Gpu::open(0)?;
    println!(
        "bench_nf4 on {} ({}), blocksize {BLOCKSIZE}, {iters} calls per measurement, \
         buffers rotated over >= {} MiB",
        gpu.name()?,
        gpu.arch(),
        ROTATE_BYTES >> 20
    );
    println!(
        "{:<10} {:<6} {:>24} {:>24} {:>10} {:>24} {:>24}",
        "weight",
        "absmax",
        "dequant f32 GB/s (copy)",
        "dequant bf16 GB/s (copy)",
        "goal 90%",
        "GEMV m=1 GB/s (copy)",
        "GEMV m=4 GB/s (copy)"
    );
    let mut worst = f64::INFINITY;
    for (name, rows, cols) in SHAPES {
        for double in [false, true] {
            let host = HostWeight::random(rows, cols, double, (rows * 31 + cols) as u64);
            let numel = rows * cols;
            let one = Nf4Weight::upload(&gpu, host.parts())?;
            let wbytes = one.bytes();
            drop(one);

            // Dequantize to f32 and to bf16: weights and outputs rotated together.
            let f32_traffic = wbytes + numel * 4;
            let copies = ROTATE_BYTES.div_ceil(f32_traffic).max(2);
            let ws = (0..copies)
                .map(|_| Nf4Weight::upload(&gpu, host.parts()))
                .collect::<Result<Vec<_>>>()?;
            let mut outs = (0..copies)
                .map(|_| gpu.zeros::<f32>(numel))
                .collect::<Result<Vec<_>>>()?;
            let mut i = 0;
            let t = time_ms(&gpu, iters, || {
                i = (i + 1) % copies;
                nf4::nf4_dequantize(&gpu, &mut outs[i], &ws[i])
            })?;
            drop(outs);
            let deq_f32 = gbps(f32_traffic, t);
            let copy_f32 = copy_gbps(&gpu, f32_traffic, iters)?;

            let bf16_traffic = wbytes + numel * 2;
            let mut outs = (0..copies)
                .map(|_| gpu.zeros::<u16>(numel))
                .collect::<Result<Vec<_>>>()?;
            let t = time_ms(&gpu, iters, || {
                i = (i + 1) % copies;
                nf4::nf4_dequantize_bf16(&gpu, &mut outs[i], &ws[i])
            })?;
            drop((outs, ws));
            let deq_bf16 = gbps(bf16_traffic, t);
            let copy_bf16 = copy_gbps(&gpu, bf16_traffic, iters)?;
            let ratio = (deq_f32 / copy_f32).min(deq_bf16 / copy_bf16);
            worst = worst.min(ratio);

            // Fused GEMV: only the weights are rotated (x and y are small and stay cached, as
            // they do in a decoding step).
            let copies = ROTATE_BYTES.div_ceil(wbytes).max(2);
            let ws = (0..copies)
                .map(|_| Nf4Weight::upload(&gpu, host.parts()))
                .collect::<Result<Vec<_>>>()?;
            let copy_w = copy_gbps(&gpu, wbytes, iters)?;
            let mut gemv = Vec::new();
            for m in [1, nf4::GEMV_MAX_M] {
                let x = gpu.upload(&vec![0.5f32; m * cols])?;
                let mut y = gpu.zeros::<f32>(m * rows)?;
                let mut scratch = Nf4Scratch::new();
                let t = time_ms(&gpu, iters, || {
                    i = (i + 1) % copies;
                    nf4::nf4_linear(&gpu, &mut y, &x, &ws[i], None, m, &mut scratch)
                })?;
                gemv.push(gbps(wbytes, t));
            }
            println!(
                "{:<10} {:<6} {:>24} {:>24} {:>9.0}% {:>24} {:>24}",
                name,
                if double { "double" } else { "f32" },
                format!("{deq_f32:.0} ({copy_f32:.0})"),
                format!("{deq_bf16:.0} ({copy_bf16:.0})"),
                100.0 * ratio,
                format!("{:.0} ({copy_w:.0})", gemv[0]),
                format!("{:.0} ({copy_w:.0})", gemv[1]),
            );
        }
    }
    println!(
        "worst dequantize / copy ratio: {:.0}% (goal 90%)",
        100.0 * worst
    );
    Ok(())
}

/// A random weight in bitsandbytes' layout (the bytes do not change the kernels' work).
struct HostWeight {
    rows: usize,
    cols: usize,
    packed: Vec<u8>,
    absmax: Vec<f32>,
    codes: Vec<u8>,
    nested_absmax: Vec<f32>,
    nested_code: Vec<f32>,
    double: bool,
}

impl HostWeight {
    fn random(rows: usize, cols: usize, double: bool, seed: u64) -> Self {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let numel = rows * cols;
        let blocks = numel.div_ceil(BLOCKSIZE);
        let packed = (0..numel.div_ceil(2)).map(|_| next() as u8).collect();
        let absmax = (0..blocks)
            .map(|_| (next() >> 40) as f32 / (1u64 << 24) as f32)
            .collect();
        let codes = (0..blocks).map(|_| next() as u8).collect();
        let nested_absmax = vec![0.05f32; blocks.div_ceil(256)];
        HostWeight {
            rows,
            cols,
            packed,
            absmax,
            codes,
            nested_absmax,
            nested_code: dynamic_map_signed().to_vec(),
            double,
        }
    }

    fn parts(&self) -> Nf4Parts<'_> {
        let absmax = if self.double {
            Nf4Absmax::Double {
                codes: &self.codes,
                nested_absmax: &self.nested_absmax,
                nested_code: &self.nested_code,
                nested_blocksize: 256,
                offset: 0.02,
            }
        } else {
            Nf4Absmax::F32(&self.absmax)
        };
        Nf4Parts {
            packed: &self.packed,
            absmax,
            rows: self.rows,
            cols: self.cols,
            blocksize: BLOCKSIZE,
        }
    }
}

/// Milliseconds per call of `f`, between CUDA events around `iters` calls after two warm-up
/// calls (the first compiles the kernels).
fn time_ms(gpu: &Gpu, iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    f()?;
    gpu.synchronize()?;
    let flags = Some(CUevent_flags::CU_EVENT_DEFAULT);
    let start = gpu.stream().record_event(flags)?;
    for _ in 0..iters {
        f()?;
    }
    let end = gpu.stream().record_event(flags)?;
    Ok(start.elapsed_ms(&end)? as f64 / iters as f64)
}

fn gbps(bytes: usize, ms: f64) -> f64 {
    bytes as f64 / (ms * 1e6)
}

/// Bandwidth of `stream.memcpy_dtod` moving `traffic` bytes (reading half, writing half).
fn copy_gbps(gpu: &Gpu, traffic: usize, iters: usize) -> Result<f64> {
    let n = (traffic / 2).max(1);
    let copies = ROTATE_BYTES.div_ceil(traffic).max(2);
    let srcs = (0..copies)
        .map(|_| gpu.zeros::<u8>(n))
        .collect::<Result<Vec<CudaSlice<u8>>>>()?;
    let mut dsts = (0..copies)
        .map(|_| gpu.zeros::<u8>(n))
        .collect::<Result<Vec<CudaSlice<u8>>>>()?;
    let mut i = 0;
    let t = time_ms(gpu, iters, || {
        i = (i + 1) % copies;
        Ok(gpu.stream().memcpy_dtod(&srcs[i], &mut dsts[i])?)
    })?;
    Ok(gbps(2 * n, t))
}
