//! Training against torch + peft (+ bitsandbytes): tests/fixtures/train, made by
//! tools/fixtures/make_train_fixtures.py. Each case's first optimizer step must give the
//! reference loss, pre-clip gradient norm and every parameter gradient.

use std::path::{Path, PathBuf};

use dsum_core::backend::Device;
use dsum_core::io::checkpoint::{read_shared, Checkpoint};
use dsum_core::models::bart::BartConfig;
use dsum_core::models::bart_train::BartTrain;
use dsum_core::models::llama::LlamaConfig;
use dsum_core::models::llama_train::LlamaTrain;
use dsum_core::train::setup::{Kind, Setup};
use dsum_core::train::{Batch, Trainable};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn case_dir(case: &str) -> PathBuf {
    root().join("tests/fixtures/train").join(case)
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn safetensors(path: &Path) -> Checkpoint {
    Checkpoint::from_files(vec![(
        path.display().to_string(),
        read_shared(path).unwrap(),
    )])
    .unwrap()
}

fn setup(cfg: &Value) -> Setup {
    let m = &cfg["method"];
    let kind = match m["kind"].as_str().unwrap() {
        "lora" => Kind::Lora,
        "qlora" => Kind::Qlora,
        _ => Kind::Full,
    };
    let init = m["init_adapter"]
        .as_str()
        .map(|p| safetensors(&root().join(p).join("adapter_model.safetensors")));
    Setup {
        kind,
        r: m["r"].as_u64().unwrap_or(8) as usize,
        alpha: m["alpha"].as_f64().unwrap_or(16.0),
        dropout: m["dropout"].as_f64().unwrap_or(0.0) as f32,
        targets: m["targets"]
            .as_array()
            .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
            .unwrap_or_default(),
        use_rslora: m["use_rslora"].as_bool().unwrap_or(false),
        init_adapter: init,
        nf4_blocksize: m["nf4_blocksize"].as_u64().unwrap_or(64) as usize,
        double_quant: m["double_quant"].as_bool().unwrap_or(true),
        quantizer: Some(dsum_core::train::setup::nf4_quantizer),
        seed: 0,
    }
}

fn model(case: &str) -> Box<dyn Trainable> {
    let cfg = json(&case_dir(case).join("config.json"));
    let dir = root().join(cfg["model"]["path"].as_str().unwrap());
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let ck = Checkpoint::open_dir(&dir).unwrap();
    let s = setup(&cfg);
    if text.contains("\"bart\"") {
        Box::new(
            BartTrain::load(
                BartConfig::from_json(&text, "config.json").unwrap(),
                &ck,
                &s,
            )
            .unwrap(),
        )
    } else {
        Box::new(
            LlamaTrain::load(
                LlamaConfig::from_json(&text, "config.json").unwrap(),
                &ck,
                &s,
            )
            .unwrap(),
        )
    }
}

fn ints<T: TryFrom<i64>>(v: &Value) -> (usize, usize, Vec<T>)
where
    T::Error: std::fmt::Debug,
{
    let rows = v.as_array().unwrap();
    let cols = rows[0].as_array().unwrap().len();
    let data = rows
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| T::try_from(x.as_i64().unwrap()).unwrap())
        })
        .collect();
    (rows.len(), cols, data)
}

fn batch(b: &Value) -> Batch {
    let (rows, cols, input_ids) = ints::<u32>(&b["input_ids"]);
    let (_, _, mask) = ints::<i64>(&b["attention_mask"]);
    let (_, dec_cols, labels) = ints::<i64>(&b["labels"]);
    let decoder_input_ids = if b.get("decoder_input_ids").is_some() {
        ints::<u32>(&b["decoder_input_ids"]).2
    } else {
        Vec::new()
    };
    Batch {
        rows,
        cols,
        input_ids,
        attention_mask: mask.iter().map(|&m| m != 0).collect(),
        dec_cols: if decoder_input_ids.is_empty() {
            0
        } else {
            dec_cols
        },
        decoder_input_ids,
        labels,
    }
}

/// Relative tolerance of the loss and gradient norm, and of each gradient against the
/// largest one.
#[derive(Clone, Copy)]
struct Tol {
    loss: f64,
    norm: f64,
    grad: f32,
}
const CPU: Tol = Tol {
    loss: 1e-5,
    norm: 1e-4,
    grad: 1e-4,
};
/// CUDA: other summation orders, and NF4 products in bf16 (dsum-kernels' `tolerance::BF16`).
const CUDA: Tol = Tol {
    loss: 2e-2,
    norm: 2e-2,
    grad: 2e-2,
};

fn first_step(case: &str) {
    let cfg = json(&case_dir(case).join("config.json"));
    let dir = root().join(cfg["model"]["path"].as_str().unwrap());
    let m = dsum_core::train::models::build_on(&dir, &setup(&cfg), Device::Cpu, false).unwrap();
    // The dispatching loader gives the model the direct loaders give.
    check_first_step(case, model(case), CPU);
    check_first_step(case, m, CPU);
}

/// The first step of a case on the GPU.
fn first_step_cuda(case: &str) {
    let cfg = json(&case_dir(case).join("config.json"));
    let dir = root().join(cfg["model"]["path"].as_str().unwrap());
    let m = dsum_core::train::models::build_on(&dir, &setup(&cfg), Device::Cuda(0), false)
        .unwrap_or_else(|e| panic!("{case}: cannot train on cuda:0: {e}"));
    check_first_step(case, m, CUDA);
}

fn check_first_step(case: &str, mut m: Box<dyn Trainable>, tol: Tol) {
    let dir = case_dir(case);
    let batches = json(&dir.join("batches.json"));
    let steps = json(&dir.join("steps.json"));
    let s0 = &steps["steps"][0];
    let tokens = s0["tokens"].as_u64().unwrap() as usize;
    let mut sum = 0f64;
    for mb in s0["micro_batches"].as_array().unwrap() {
        let b = batch(&batches["train_batches"][mb.as_u64().unwrap() as usize]);
        let l = m.accumulate(&b, 1.0 / tokens as f32).unwrap();
        sum += l.sum;
    }
    let loss = sum / tokens as f64;
    let want = s0["loss"].as_f64().unwrap();
    assert!(
        ((loss - want) / want).abs() < tol.loss,
        "{case}: loss {loss} vs {want}"
    );
    let norm = m
        .params()
        .iter()
        .map(|p| p.grad.iter().map(|g| (*g as f64).powi(2)).sum::<f64>())
        .sum::<f64>()
        .sqrt();
    let want = s0["grad_norm"].as_f64().unwrap();
    assert!(
        ((norm - want) / want).abs() < tol.norm,
        "{case}: grad norm {norm} vs {want}"
    );
    let grads = safetensors(&dir.join("grads0.safetensors"));
    let params = m.params();
    assert_eq!(
        params.len(),
        grads.names().count(),
        "{case}: parameter count"
    );
    let gmax = params
        .iter()
        .flat_map(|p| p.grad.iter())
        .fold(0f32, |a, g| a.max(g.abs()));
    for p in params {
        let r = grads.get(&p.name, &p.shape).unwrap();
        let worst = p
            .grad
            .iter()
            .zip(r.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= tol.grad * gmax,
            "{case}: {} gradient off by {worst} (max grad {gmax})",
            p.name
        );
    }
}

#[test]
fn lora_llama_first_step_matches_peft() {
    first_step("lora-llama");
}

#[test]
fn lora_qwen3_first_step_matches_peft() {
    first_step("lora-qwen3");
}

#[test]
fn lora_bart_first_step_matches_peft() {
    first_step("lora-bart");
}

#[test]
fn full_bart_first_step_matches_torch() {
    first_step("full-bart");
}

#[test]
fn qlora_llama_first_step_matches_peft_bitsandbytes() {
    first_step("qlora-llama");
}

#[test]
#[cfg_attr(
    not(feature = "dsum-kernels"),
    ignore = "needs dsum-core built with --features cuda (or cuda-13) and a GPU"
)]
fn cuda_lora_llama_first_step_matches_peft() {
    first_step_cuda("lora-llama");
}

#[test]
#[cfg_attr(
    not(feature = "dsum-kernels"),
    ignore = "needs dsum-core built with --features cuda (or cuda-13) and a GPU"
)]
fn cuda_lora_qwen3_first_step_matches_peft() {
    first_step_cuda("lora-qwen3");
}

#[test]
#[cfg_attr(
    not(feature = "dsum-kernels"),
    ignore = "needs dsum-core built with --features cuda (or cuda-13) and a GPU"
)]
fn cuda_lora_bart_first_step_matches_peft() {
    first_step_cuda("lora-bart");
}

#[test]
#[cfg_attr(
    not(feature = "dsum-kernels"),
    ignore = "needs dsum-core built with --features cuda (or cuda-13) and a GPU"
)]
fn cuda_full_bart_first_step_matches_torch() {
    first_step_cuda("full-bart");
}

#[test]
#[cfg_attr(
    not(feature = "dsum-kernels"),
    ignore = "needs dsum-core built with --features cuda (or cuda-13) and a GPU"
)]
fn cuda_qlora_llama_first_step_matches_peft_bitsandbytes() {
    first_step_cuda("qlora-llama");
}

#[test]
fn qlora_base_quantizes_to_the_bitsandbytes_bytes() {
    use dsum_core::quant::bnb_state::{from_bnb, nf4_weight_names};
    use dsum_core::quant::nf4::Nf4Tensor;
    let nf4 = safetensors(&case_dir("qlora-llama").join("nf4_base.safetensors"));
    let base =
        Checkpoint::open_dir(&root().join("tests/fixtures/llama/models/llama-tied")).unwrap();
    let names = nf4_weight_names(nf4.names());
    assert_eq!(names.len(), 14, "2 layers x 7 linear layers");
    for w in names {
        let theirs = from_bnb(&nf4, &w).unwrap();
        let shape = theirs.shape().to_vec();
        let data = base.get(&w, &shape).unwrap();
        let ours = Nf4Tensor::quantize(&data, shape, 64, true)
            .unwrap()
            .with_dtype(theirs.dtype());
        assert!(ours == theirs, "{w}: NF4 bytes differ from bitsandbytes");
    }
}
