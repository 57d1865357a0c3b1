//! NF4 parity with bitsandbytes (reference recorded by tools/fixtures/make_nf4_fixtures.py into
//! tests/fixtures/nf4): packed bytes, absmax, nested statistics and the quant_state JSON are
//! byte-identical, dequantized values match the pure-torch path; a tiny 4-bit Llama saved by
//! transformers is read back and re-made from its float32 weights; fused matmuls against
//! dequantize + the naive linear; round-trip bounds; bad input is a typed error.

use std::collections::HashMap;
use std::path::PathBuf;

use dsum_core::io::checkpoint::{read_shared, Checkpoint};
use dsum_core::io::raw_tensor::{RawTensor, TensorSource};
use dsum_core::ops::matmul::linear_naive;
use dsum_core::quant::bnb_state::{from_bnb, nf4_weight_names, to_bnb_tensors};
use dsum_core::quant::dynamic_map::{dynamic_map_signed, torch_mean_f32, torch_sum_f32};
use dsum_core::quant::{Nf4Dtype, Nf4Tensor, NF4_BLOCKSIZES, NF4_CODE};
use dsum_core::Error;
use proptest::prelude::*;
use safetensors::tensor::Dtype;
use serde_json::Value;

/// Dequantized float32 values: bitsandbytes multiplies code by absmax exactly as we do.
const DEQUANT_TOL: f32 = 1e-6;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/nf4")
}

fn open(rel: &str) -> Checkpoint {
    let p = dir().join(rel);
    Checkpoint::from_files(vec![(p.display().to_string(), read_shared(&p).unwrap())]).unwrap()
}

fn f32s(src: &dyn TensorSource, name: &str) -> Vec<f32> {
    let t = src.raw_tensor(name).unwrap();
    t.to_weight(&src.source_path(), name).unwrap().to_vec()
}

fn dtype_of(d: Dtype) -> Nf4Dtype {
    match d {
        Dtype::F16 => Nf4Dtype::F16,
        Dtype::BF16 => Nf4Dtype::BF16,
        _ => Nf4Dtype::F32,
    }
}

/// Every tensor dsum writes for `name` equals the reference's, and no reference tensor is missed.
fn assert_same_tensors(reference: &dyn TensorSource, name: &str, ours: &[(String, RawTensor)]) {
    let expected: Vec<String> = reference
        .tensor_names()
        .into_iter()
        .filter(|n| n == name || dsum_core::quant::bnb_state::is_state_of(n, name))
        .collect();
    let mut got: Vec<String> = ours.iter().map(|(n, _)| n.clone()).collect();
    got.sort();
    assert_eq!(got, expected, "{name}: tensor names");
    for (n, t) in ours {
        let r = reference.raw_tensor(n).unwrap();
        assert_eq!(t.dtype, r.dtype, "{n}: dtype");
        assert_eq!(t.shape, r.shape, "{n}: shape");
        if t.bytes() != r.bytes() {
            let diff = t.bytes().iter().zip(r.bytes()).position(|(a, b)| a != b);
            panic!(
                "{n}: bytes differ (first at {diff:?}); ours {:?} theirs {:?}",
                String::from_utf8_lossy(&t.bytes()[..t.bytes().len().min(200)]),
                String::from_utf8_lossy(&r.bytes()[..r.bytes().len().min(200)])
            );
        }
    }
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= DEQUANT_TOL, "{what}[{i}]: {a} vs {b}");
    }
}

#[test]
fn cases_are_byte_identical_to_bitsandbytes() {
    let ck = open("cases.safetensors");
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("cases.json")).unwrap()).unwrap();
    let cases = meta["cases"].as_array().unwrap();
    assert!(cases.len() >= 15);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let shape: Vec<usize> = case["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let bs = case["blocksize"].as_u64().unwrap() as usize;
        let dq = case["double_quant"].as_bool().unwrap();
        let input_name = format!("{name}.input");
        let dtype = dtype_of(ck.raw_tensor(&input_name).unwrap().dtype);
        let input = f32s(&ck, &input_name);
        let t = Nf4Tensor::quantize(&input, shape, bs, dq)
            .unwrap()
            .with_dtype(dtype);
        let weight = format!("{name}.weight");
        assert_same_tensors(&ck, &weight, &to_bnb_tensors(&weight, &t));
        let want = f32s(&ck, &format!("{name}.dequant"));
        assert_close(&t.dequantize(), &want, name);
        assert_eq!(
            t.dequantize(),
            t.dequant_ref(),
            "{name}: fast vs reference dequantize"
        );
        // Reading bitsandbytes' tensors gives back the same thing.
        let read = from_bnb(&ck, &weight).unwrap();
        assert_eq!(read, t, "{name}: read back");
    }
}

#[test]
fn dynamic_map_matches_bitsandbytes() {
    let ck = open("dynamic_map.safetensors");
    let want = f32s(&ck, "dynamic_map");
    let got = dynamic_map_signed();
    assert_eq!(
        got.map(f32::to_bits).to_vec(),
        want.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn torch_sum_and_mean_match_torch() {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("sums.json")).unwrap()).unwrap();
    let lengths: Vec<usize> = v["lengths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    let n = *lengths.iter().max().unwrap();
    // The same vector as the script's `sum_input`.
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000 + 1) as f32 / 997.0)
        .collect();
    for (j, &len) in lengths.iter().enumerate() {
        let sum = v["sums"][j].as_f64().unwrap() as f32;
        let mean = v["means"][j].as_f64().unwrap() as f32;
        assert_eq!(torch_sum_f32(&x[..len]), sum, "sum of {len}");
        assert_eq!(torch_mean_f32(&x[..len]), mean, "mean of {len}");
    }
}

#[test]
fn tiny_llama_saved_by_transformers_is_reproduced_and_read() {
    let f32_model = open("tiny-llama/model.safetensors");
    let nf4_model = open("tiny-llama-nf4/model.safetensors");
    let deq = open("tiny-llama-nf4-dequant.safetensors");
    let names = nf4_model.tensor_names();
    let weights = nf4_weight_names(names.iter().map(|s| s.as_str()));
    assert_eq!(weights.len(), 7, "the 7 linear layers of one decoder layer");
    for w in &weights {
        let stored = from_bnb(&nf4_model, w).unwrap();
        assert_close(&stored.dequantize(), &f32s(&deq, w), w);
        let src = f32s(&f32_model, w);
        let ours =
            Nf4Tensor::quantize(&src, stored.shape().to_vec(), stored.blocksize(), true).unwrap();
        assert_eq!(ours, stored, "{w}");
        assert_same_tensors(&nf4_model, w, &to_bnb_tensors(w, &ours));
    }
}

#[test]
fn transformers_loads_what_dsum_writes() {
    // Recorded by `make_nf4_fixtures.py --verify` (quantized by dsum-cli, loaded by transformers).
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("verify.json")).unwrap()).unwrap();
    assert_eq!(v["ok"], Value::Bool(true), "{v}");
    assert_eq!(v["tensors_identical"], Value::Bool(true));
    assert_eq!(v["loaded_4bit_modules"], 7);
}

/// A TensorSource over in-memory tensors, to feed the reader broken checkpoints.
/// dtype, shape, bytes.
type Stored = (Dtype, Vec<usize>, Vec<u8>);

struct Mem(HashMap<String, Stored>);

impl Mem {
    fn from(tensors: Vec<(String, RawTensor)>) -> Self {
        Mem(tensors
            .into_iter()
            .map(|(n, t)| (n, (t.dtype, t.shape.clone(), t.bytes().to_vec())))
            .collect())
    }
}

impl TensorSource for Mem {
    fn source_path(&self) -> String {
        "mem.safetensors".into()
    }
    fn tensor_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.0.keys().cloned().collect();
        v.sort();
        v
    }
    fn raw_tensor(&self, name: &str) -> dsum_core::Result<RawTensor> {
        let (d, s, b) = self
            .0
            .get(name)
            .ok_or_else(|| Error::checkpoint("mem.safetensors", format!("no tensor `{name}`")))?;
        Ok(RawTensor::owned(*d, s.clone(), b.clone()))
    }
}

#[test]
fn broken_bnb_tensors_are_errors_naming_the_file() {
    let data: Vec<f32> = (0..300).map(|i| (i as f32 * 0.37).sin()).collect();
    let t = Nf4Tensor::quantize(&data, vec![10, 30], 64, true).unwrap();
    let good = Mem::from(to_bnb_tensors("w", &t));
    assert_eq!(from_bnb(&good, "w").unwrap(), t);
    let state = "w.quant_state.bitsandbytes__nf4";
    let json = |s: &str| (Dtype::U8, vec![s.len()], s.as_bytes().to_vec());
    let breakers: Vec<(&str, Stored)> = vec![
        (state, json("garbage")),
        (state, json("{\"quant_type\": \"nf4\"}")),
        (state, (Dtype::F32, vec![1], vec![0; 4])),
        // The JSON says a bigger tensor than the packed bytes hold.
        (state, json("{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float32\", \"shape\": [1000000, 1000000], \"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": 0.5}")),
        (state, json("{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float32\", \"shape\": [18446744073709551615, 3], \"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": 0.5}")),
        ("w", (Dtype::U8, vec![149, 1], vec![0; 149])),
        ("w", (Dtype::F32, vec![150], vec![0; 600])),
        ("w.absmax", (Dtype::U8, vec![4], vec![0; 4])),
        ("w.absmax", (Dtype::F32, vec![5], vec![0; 20])),
        ("w.nested_absmax", (Dtype::F32, vec![2], vec![0; 8])),
        ("w.nested_quant_map", (Dtype::F32, vec![255], vec![0; 1020])),
        ("w.quant_map", (Dtype::F32, vec![15], vec![0; 60])),
    ];
    for (name, replacement) in breakers {
        let mut m = Mem(good.0.clone());
        m.0.insert(name.to_string(), replacement);
        let e = from_bnb(&m, "w").expect_err(name).to_string();
        assert!(e.contains("mem.safetensors"), "{name}: {e}");
    }
    let mut m = Mem(good.0.clone());
    m.0.remove("w.nested_absmax");
    assert!(from_bnb(&m, "w").is_err());
}

fn max_code_gap() -> f32 {
    NF4_CODE.windows(2).map(|w| w[1] - w[0]).fold(0.0, f32::max)
}

fn tensor_strategy() -> impl Strategy<Value = (Vec<f32>, Vec<usize>, usize, bool)> {
    (1usize..40, 1usize..70, 0usize..4, any::<bool>(), 0u32..4).prop_flat_map(
        |(r, c, bsi, dq, scale)| {
            let scale = [1e-3f32, 0.1, 1.0, 50.0][scale as usize];
            (
                proptest::collection::vec(-1.0f32..1.0, r * c)
                    .prop_map(move |v| v.iter().map(|x| x * scale).collect()),
                Just(vec![r, c]),
                Just(NF4_BLOCKSIZES[bsi]),
                Just(dq),
            )
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// |x - deq(q(x))| <= scale_of_block * (largest gap between adjacent codes) / 2, plus the
    /// error of a double-quantized scale.
    #[test]
    fn round_trip_error_is_bounded((data, shape, bs, dq) in tensor_strategy()) {
        let t = Nf4Tensor::quantize(&data, shape.clone(), bs, dq).unwrap();
        let back = t.dequantize();
        prop_assert_eq!(&back, &t.dequant_ref());
        let half_gap = max_code_gap() / 2.0;
        for (b, block) in data.chunks(bs).enumerate() {
            let absmax = block.iter().fold(0f32, |m, x| m.max(x.abs()));
            let stored = t.absmax().to_f32()[b];
            // A double-quantized scale is off by at most its own 8-bit rounding.
            let scale_err = (stored - absmax).abs();
            for (i, x) in block.iter().enumerate() {
                let y = back[b * bs + i];
                let bound = absmax * half_gap + scale_err + 1e-6 * absmax.max(1e-30);
                prop_assert!((x - y).abs() <= bound, "x={} y={} absmax={} bound={}", x, y, absmax, bound);
            }
        }
        // Serialization round trip.
        let m = Mem::from(to_bnb_tensors("w", &t));
        prop_assert_eq!(from_bnb(&m, "w").unwrap(), t);
    }

    #[test]
    fn fused_matmuls_match_dequantize_then_naive(
        (data, shape, bs, dq) in tensor_strategy(),
        m in prop_oneof![1usize..5, 15usize..40],
        seed in 0u32..1000,
    ) {
        let (n, k) = (shape[0], shape[1]);
        let t = Nf4Tensor::quantize(&data, shape, bs, dq).unwrap();
        let w = t.dequantize();
        let x: Vec<f32> = (0..m * k).map(|i| (((i as u32).wrapping_mul(2654435761u32) ^ seed) % 2001) as f32 / 1000.0 - 1.0).collect();
        let mut got = vec![0f32; m * n];
        let mut want = vec![0f32; m * n];
        t.matmul(&mut got, &x, m);
        linear_naive(&mut want, &x, &w, None, m, k, n);
        for i in 0..m {
            for j in 0..n {
                let scale: f32 = (0..k).map(|p| (x[i * k + p] * w[j * k + p]).abs()).sum();
                let (a, b) = (got[i * n + j], want[i * n + j]);
                prop_assert!((a - b).abs() <= 1e-5 * scale + 1e-30, "matmul [{},{}]: {} vs {}", i, j, a, b);
            }
        }
        // dx = dy · W: the naive reference with Wᵀ as the weight.
        let dy: Vec<f32> = (0..m * n).map(|i| (((i as u32).wrapping_mul(40503u32) ^ seed) % 1001) as f32 / 500.0 - 1.0).collect();
        let mut wt = vec![0f32; k * n];
        for j in 0..n {
            for p in 0..k {
                wt[p * n + j] = w[j * k + p];
            }
        }
        let mut dx = vec![f32::NAN; m * k];
        let mut dx_want = vec![0f32; m * k];
        t.matmul_t(&mut dx, &dy, m);
        linear_naive(&mut dx_want, &dy, &wt, None, m, n, k);
        for i in 0..m {
            for p in 0..k {
                let scale: f32 = (0..n).map(|j| (dy[i * n + j] * w[j * k + p]).abs()).sum();
                let (a, b) = (dx[i * k + p], dx_want[i * k + p]);
                prop_assert!((a - b).abs() <= 1e-5 * scale + 1e-30, "matmul_t [{},{}]: {} vs {}", i, p, a, b);
            }
        }
    }
}

#[test]
fn fused_matmul_on_a_larger_weight() {
    // Several gemm tiles (N > 128) and a K that straddles blocks.
    let (n, k, m) = (300, 70, 33);
    let data: Vec<f32> = (0..n * k)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.02)
        .collect();
    let t = Nf4Tensor::quantize(&data, vec![n, k], 64, true).unwrap();
    let w = t.dequantize();
    let x: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 / 6.0 - 1.0).collect();
    let mut got = vec![0f32; m * n];
    let mut want = vec![0f32; m * n];
    t.matmul(&mut got, &x, m);
    linear_naive(&mut want, &x, &w, None, m, k, n);
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
    }
}
