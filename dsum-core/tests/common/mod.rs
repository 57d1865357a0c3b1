//! Helpers shared by the parity tests: fixture paths, JSON access, tolerances.
#![allow(dead_code)]

use std::path::PathBuf;

use dsum_core::backend::Device;
use serde_json::Value;

/// Tolerance for f32 values recomputed with another summation order (logits, scores) on a
/// well-conditioned model.
pub const F32_TOL: f64 = 1e-4;
/// Sharp fixture models amplify rounding: transformers' own f32 result is off from f64 by
/// `ref_f32_error` (recorded per case by the fixture scripts) and dsum's by a similar amount
/// in another direction; beam scores sum such errors over every step. Their tolerance is a
/// multiple of the recorded error, while token ids must match exactly (every case has a
/// decision margin of at least 2e-3).
pub const REF_ERROR_FACTOR: f64 = 5.0;

pub fn tol(ref_error: Option<f64>) -> f64 {
    F32_TOL.max(REF_ERROR_FACTOR * ref_error.unwrap_or(0.0))
}

pub fn fixtures(family: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(family)
}

pub fn load_json(family: &str, name: &str) -> Value {
    let p = fixtures(family).join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

pub fn flat_f64(v: &Value, out: &mut Vec<f64>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| flat_f64(x, out)),
        x => out.push(x.as_f64().unwrap()),
    }
}

/// Compare, skipping positions where `keep` is false; returns the worst difference.
pub fn check_close(
    got: &[f32],
    want: &[f64],
    keep: &dyn Fn(usize) -> bool,
    tol: f64,
    what: &str,
) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: size");
    let mut worst = 0f64;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if !keep(i) {
            continue;
        }
        let d = (*g as f64 - w).abs();
        worst = worst.max(d);
        assert!(
            d <= tol,
            "{what}: element {i}: {g} vs {w} (diff {d}, tolerance {tol:.1e})"
        );
    }
    eprintln!("{what}: max abs diff {worst:.2e} (tolerance {tol:.1e})");
    worst
}

/// Fixture models of one family, each loaded once.
pub struct Models {
    family: &'static str,
    device: Device,
    loaded: std::collections::HashMap<String, dsum_core::models::LoadedModel>,
}

impl Models {
    pub fn new(family: &'static str) -> Self {
        Models::on(family, Device::Cpu)
    }

    /// The fixture models of `family`, loaded on `device`.
    pub fn on(family: &'static str, device: Device) -> Self {
        Models {
            family,
            device,
            loaded: Default::default(),
        }
    }

    pub fn get(&mut self, name: &str) -> &dsum_core::models::LoadedModel {
        let dir = fixtures(self.family).join("models").join(name);
        let opts = dsum_core::models::LoadOptions {
            device: self.device,
            ..Default::default()
        };
        let device = self.device;
        self.loaded.entry(name.to_string()).or_insert_with(|| {
            dsum_core::models::LoadedModel::load_with(&dir, opts, Ok)
                .unwrap_or_else(|e| panic!("loading {name} on {device}: {e}"))
        })
    }
}

/// The checks every tokenize fixture case shares: ids with special tokens, ids truncated to
/// `trunc` (recorded under `trunc_key`), and decoding with and without special tokens.
pub fn check_tokenize_case(
    tok: &dsum_core::tokenizer::Tokenizer,
    c: &Value,
    trunc: usize,
    trunc_key: &str,
) {
    let text = c["text"].as_str().unwrap();
    assert_eq!(
        tok.encode(text, None).unwrap(),
        ids(&c["ids"]),
        "ids of {text:?}"
    );
    assert_eq!(
        tok.encode(text, Some(trunc)).unwrap(),
        ids(&c[trunc_key]),
        "truncated ids of {text:?}"
    );
    let enc = ids(&c["ids"]);
    assert_eq!(
        tok.decode(&enc, true).unwrap(),
        c["decoded"].as_str().unwrap(),
        "decode of {text:?}"
    );
    assert_eq!(
        tok.decode(&enc, false).unwrap(),
        c["decoded_raw"].as_str().unwrap(),
        "raw decode of {text:?}"
    );
}

/// One test body as two tests: `$cpu` on the CPU, `$cuda` on CUDA device 0 (listed as ignored
/// in a build without the `cuda` feature, so a run shows what it did not check).
#[allow(unused_macros)]
macro_rules! device_tests {
    ($body:ident: $cpu:ident, $cuda:ident) => {
        #[test]
        fn $cpu() {
            $body(dsum_core::backend::Device::Cpu);
        }

        #[test]
        #[cfg_attr(
            not(feature = "dsum-kernels"),
            ignore = "needs dsum-core built with --features cuda (or cuda-13) and a GPU"
        )]
        fn $cuda() {
            $body(dsum_core::backend::Device::Cuda(0));
        }
    };
}
#[allow(unused_imports)]
pub(crate) use device_tests;
