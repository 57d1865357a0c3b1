//! The backend interface: `--device` parsing, the errors of a device that cannot be used, and
//! NF4 folders on every device. The fixture logits and generation cases run on every device
//! in llama_parity.rs and bart_parity.rs, the CUDA runs as `cuda_*` tests (listed as ignored
//! without the `cuda` feature).

mod common;

use dsum_core::backend::{Cuda, Device};
use dsum_core::models::{LoadOptions, LoadedModel, Model};
use dsum_core::Error;
use std::path::PathBuf;

#[test]
fn devices_parse_and_print() {
    for (s, d) in [
        ("cpu", Device::Cpu),
        ("cuda", Device::Cuda(0)),
        ("cuda:0", Device::Cuda(0)),
        ("cuda:3", Device::Cuda(3)),
    ] {
        assert_eq!(s.parse::<Device>().unwrap(), d, "{s}");
    }
    assert_eq!(Device::Cuda(2).to_string(), "cuda:2");
    assert_eq!(Device::Cpu.to_string(), "cpu");
    assert_eq!(Device::default(), Device::Cpu);
    for s in [
        "", "gpu", "cuda:", "cuda:x", "cuda:+1", "cuda:-1", "CPU", "cuda:1:2", " cpu",
    ] {
        match s.parse::<Device>() {
            Err(e @ Error::InvalidDevice(_)) => {
                let m = e.to_string();
                assert!(m.contains(&format!("`{s}`")) && m.contains("cuda:N"), "{m}");
            }
            other => panic!("{s:?}: {:?}", other.map(|d| d.to_string())),
        }
    }
}

#[test]
fn a_device_that_cannot_be_used_is_a_clear_error() {
    let dir = common::fixtures("llama").join("models").join("qwen2");
    let opts = LoadOptions {
        device: Device::Cuda(0),
        ..Default::default()
    };
    let r = LoadedModel::load_with(&dir, opts, Ok);
    if !cfg!(feature = "dsum-kernels") {
        let e = r.err().expect("a build without CUDA cannot load on cuda");
        assert!(matches!(e, Error::NotCompiledWithCuda), "{e}");
        let m = e.to_string();
        assert!(
            m.contains("built without CUDA") && m.contains("--features cuda"),
            "{m}"
        );
    } else if Cuda::device_count() == 0 {
        let e = r.err().expect("no GPU here");
        eprintln!("no GPU: {e}");
        assert!(e.to_string().starts_with("CUDA: "), "{e}");
    } else {
        let bart = common::fixtures("bart").join("models").join("tiny-a");
        let lm = LoadedModel::load_with(&bart, opts, Ok).expect("BART runs on CUDA");
        let Model::Bart(m) = &lm.model else {
            panic!("tiny-a is not BART")
        };
        assert_eq!(m.device(), Device::Cuda(0));
    }
}

/// A fixture folder with its linear weights quantized to NF4 (`dsum-cli nf4 quantize`, the
/// embedding, lm_head and norms kept), and the same folder dequantized back to f32.
fn nf4_and_dequantized(name: &str, tmp: &std::path::Path, double: bool) -> (PathBuf, PathBuf) {
    use dsum_core::quant::bnb_state::{dequantize_file, quantize_file};
    let src = common::fixtures("llama").join("models").join(name);
    let (q, d) = (tmp.join("nf4"), tmp.join("f32"));
    for dir in [&q, &d] {
        std::fs::create_dir_all(dir).unwrap();
        for e in std::fs::read_dir(&src).unwrap() {
            let e = e.unwrap();
            if e.file_name() != "model.safetensors" {
                std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
            }
        }
    }
    let keep = ["embed_tokens", "lm_head", "norm"].map(String::from);
    let qf = q.join("model.safetensors");
    quantize_file(&src.join("model.safetensors"), &qf, 64, double, &keep).unwrap();
    dequantize_file(&qf, &d.join("model.safetensors")).unwrap();
    (q, d)
}

// NF4 linear weights run without a dequantized copy of the model and give the logits of the
// dequantized weights: on the CPU up to f32 summation order (fused f32 kernels); on CUDA up to
// bf16 rounding, since the prompt's products there multiply bf16 operands, as bitsandbytes does.
common::device_tests!(
    nf4_folders_match_their_dequantized_weights_on: nf4_folders_match_their_dequantized_weights,
    cuda_nf4_folders_match_their_dequantized_weights
);

fn nf4_folders_match_their_dequantized_weights_on(device: Device) {
    for (name, double) in [("qwen2", true), ("qwen3", false)] {
        let tmp = tempfile::tempdir().unwrap();
        let (q, d) = nf4_and_dequantized(name, tmp.path(), double);
        {
            let opts = LoadOptions {
                device,
                ..Default::default()
            };
            let (lq, ld) = (
                LoadedModel::load_with(&q, opts, Ok).unwrap(),
                LoadedModel::load_with(&d, opts, Ok).unwrap(),
            );
            let (Model::Llama(mq), Model::Llama(md)) = (&lq.model, &ld.model) else {
                panic!("{name} is not a Llama-family model")
            };
            assert_eq!(mq.quantized_matrices(), 7 * mq.config.num_hidden_layers);
            assert_eq!(md.quantized_matrices(), 0);
            assert_eq!(mq.num_parameters(), md.num_parameters());
            let masks = vec![[vec![false; 2], vec![true; 7]].concat(), vec![true; 9]];
            let ids: Vec<u32> = (0..18u32).map(|i| (i * 97 + 5) % 1000).collect();
            let run = |m: &dsum_core::models::llama::Llama| {
                let mut st = m.start(&masks, 9).unwrap();
                m.forward(&mut st, &ids, 9, true).unwrap()
            };
            let (a, b) = (run(mq), run(md));
            let v = mq.vocab_size();
            let pairs = || {
                a.iter()
                    .zip(&b)
                    .enumerate()
                    .filter(|(i, _)| masks[i / (9 * v)][(i / v) % 9])
                    .map(|(_, p)| p)
            };
            if device == Device::Cpu {
                let worst = pairs()
                    .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
                    .fold(0f32, f32::max);
                eprintln!("{name} NF4 vs dequantized on {device}: worst relative diff {worst:.1e}");
                assert!(worst < 1e-4, "{name} on {device}: {worst}");
            } else {
                // Relative to the largest logit: single logits near 0 carry the rounding of
                // the whole sum. transformers with bf16-rounded linear operands (f32 sums)
                // moves these fixtures' logits by 1.3e-2 (qwen2) and 1.1e-2 (qwen3) of it
                // (tools/fixtures/bf16_linear_drift.py).
                let scale = pairs().map(|(_, y)| y.abs()).fold(0f32, f32::max);
                let worst = pairs().map(|(x, y)| (x - y).abs()).fold(0f32, f32::max) / scale;
                eprintln!("{name} NF4 vs dequantized on {device}: max diff {worst:.1e} of the largest logit");
                assert!(worst < 3e-2, "{name} on {device}: {worst}");
            }
        }
    }
}
