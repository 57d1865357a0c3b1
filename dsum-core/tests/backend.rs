//! The backend interface: `--device` parsing and the errors of a device that cannot be used,
//! then the tiny Llama / Qwen2 / Qwen3 fixtures (tools/fixtures/make_llama_fixtures.py) and
//! BART fixtures (tools/fixtures/make_bart_fixtures.py) run by one test body on every device
//! this machine has (candle's pattern): the CPU always, CUDA when dsum-core is built with it
//! and a GPU is present.

mod common;

use common::{flat_f64, ids, tol};
use dsum_core::backend::{Cuda, Device};
use dsum_core::generation::GenerationConfig;
use dsum_core::models::bart::EncoderBatch;
use dsum_core::models::{LoadOptions, LoadedModel, Model};
use dsum_core::Error;
use serde_json::Value;
use std::path::PathBuf;

/// The devices to run on, saying which are skipped and why.
fn devices() -> Vec<Device> {
    let mut all = vec![Device::Cpu];
    if Cuda::device_count() > 0 {
        all.push(Device::Cuda(0));
    } else if cfg!(feature = "dsum-kernels") {
        eprintln!("skipped: no CUDA device");
    } else {
        eprintln!("skipped: no CUDA device (dsum-core built without the `cuda` feature)");
    }
    all
}

fn load(name: &str, device: Device) -> LoadedModel {
    load_from("llama", name, device)
}

/// Fixture model `name` of `family` (`llama`, `bart`) on `device`.
fn load_from(family: &str, name: &str, device: Device) -> LoadedModel {
    let dir = common::fixtures(family).join("models").join(name);
    let opts = LoadOptions {
        device,
        ..Default::default()
    };
    LoadedModel::load_with(&dir, opts, Ok).unwrap_or_else(|e| panic!("{name} on {device}: {e}"))
}

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

#[test]
fn fixture_logits_match_transformers_on_every_device() {
    let cases = common::load_json("llama", "logits_cases.json");
    for device in devices() {
        for c in cases.as_array().unwrap() {
            let name = c["model"].as_str().unwrap();
            let lm = load(name, device);
            let Model::Llama(m) = &lm.model else {
                panic!("{name} is not a Llama-family model")
            };
            assert_eq!(m.device(), device);
            let rows: Vec<Vec<u32>> = c["input_ids"].as_array().unwrap().iter().map(ids).collect();
            let masks: Vec<Vec<bool>> = c["attention_mask"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    r.as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_u64() == Some(1))
                        .collect()
                })
                .collect();
            let t = rows[0].len();
            let mut st = m.start(&masks, t).unwrap();
            let logits = m.forward(&mut st, &rows.concat(), t, true).unwrap();
            let mut want = Vec::new();
            flat_f64(&c["logits"], &mut want);
            let v = m.vocab_size();
            let keep = |i: usize| masks[i / (t * v)][(i / v) % t];
            common::check_close(
                &logits,
                &want,
                &keep,
                tol(c["ref_f32_error"].as_f64()),
                &format!("{name} logits on {device}"),
            );
        }
    }
}

#[test]
fn fixture_generation_matches_transformers_on_every_device() {
    let cases = common::load_json("llama", "generate_cases.json");
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 20);
    for device in devices() {
        let mut models = std::collections::HashMap::new();
        let mut failures = Vec::new();
        for c in cases {
            let name = c["name"].as_str().unwrap();
            let model = c["model"].as_str().unwrap();
            let lm = models
                .entry(model.to_string())
                .or_insert_with(|| load(model, device));
            let mut gen: GenerationConfig = lm.generation.clone();
            gen.apply_json(&c["kwargs"], name).unwrap();
            let user_max = c["kwargs"].get("max_length").is_some();
            // The recorded rows are left-padded; dsum pads itself.
            let prompts: Vec<Vec<u32>> = c["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let mask = r["attention_mask"].as_array().unwrap();
                    ids(&r["input_ids"])
                        .into_iter()
                        .zip(mask)
                        .filter(|(_, m)| m.as_u64() == Some(1))
                        .map(|(i, _)| i)
                        .collect()
                })
                .collect();
            let out = lm
                .generate(&prompts, &gen, user_max)
                .unwrap_or_else(|e| panic!("{name} on {device}: {e}"));
            for (ri, (hyps, exp)) in out
                .iter()
                .zip(c["expected"].as_array().unwrap())
                .enumerate()
            {
                let want: Vec<Vec<u32>> = exp["sequences"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(ids)
                    .collect();
                let got: Vec<Vec<u32>> = hyps.iter().map(|h| h.tokens.clone()).collect();
                if got != want {
                    failures.push(format!("{name}: row {ri}\n  got  {got:?}\n  want {want:?}"));
                    continue;
                }
                if let Some(scores) = exp["sequence_scores"].as_array() {
                    for (h, s) in hyps.iter().zip(scores) {
                        let (g, w) = (h.score.unwrap() as f64, s.as_f64().unwrap());
                        if (g - w).abs() > common::F32_TOL {
                            failures.push(format!("{name}: row {ri} score {g} vs {w}"));
                        }
                    }
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{device}: {} of {} cases differ:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
        eprintln!(
            "{device}: {} generation cases match transformers",
            cases.len()
        );
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

/// NF4 linear weights run fused (never dequantized) and give the logits of the dequantized
/// weights, up to f32 summation order, on every device.
#[test]
fn nf4_folders_match_their_dequantized_weights_on_every_device() {
    for (name, double) in [("qwen2", true), ("qwen3", false)] {
        let tmp = tempfile::tempdir().unwrap();
        let (q, d) = nf4_and_dequantized(name, tmp.path(), double);
        for device in devices() {
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
            let worst = a
                .iter()
                .zip(&b)
                .enumerate()
                .filter(|(i, _)| masks[i / (9 * v)][(i / v) % 9])
                .map(|(_, (x, y))| (x - y).abs() / y.abs().max(1.0))
                .fold(0f32, f32::max);
            eprintln!("{name} NF4 vs dequantized on {device}: worst relative diff {worst:.1e}");
            assert!(worst < 1e-4, "{name} on {device}: {worst}");
        }
    }
}

/// The recorded rows of a BART case (right-padded, as the tokenizer pads) as one batch.
fn bart_batch(rows: &[Value]) -> EncoderBatch {
    let s = rows[0]["input_ids"].as_array().unwrap().len();
    let mut all = Vec::new();
    let mut mask = Vec::new();
    for r in rows {
        all.extend(ids(&r["input_ids"]));
        let m = r["attention_mask"].as_array().unwrap();
        mask.extend(m.iter().map(|x| x.as_u64() == Some(1)));
    }
    EncoderBatch {
        b: rows.len(),
        s,
        ids: all,
        mask,
    }
}

fn bart(lm: &LoadedModel) -> &dsum_core::models::bart::Bart {
    match &lm.model {
        Model::Bart(b) => b,
        _ => panic!("{} is not a BART model", lm.dir.display()),
    }
}

#[test]
fn bart_fixture_logits_match_transformers_on_every_device() {
    let cases = common::load_json("bart", "logits_cases.json");
    for device in devices() {
        for c in cases.as_array().unwrap() {
            let name = c["model"].as_str().unwrap();
            let lm = load_from("bart", name, device);
            let m = bart(&lm);
            assert_eq!(m.device(), device);
            let rows: Vec<Value> = c["input_ids"]
                .as_array()
                .unwrap()
                .iter()
                .zip(c["attention_mask"].as_array().unwrap())
                .map(|(i, a)| serde_json::json!({"input_ids": i, "attention_mask": a}))
                .collect();
            let e = bart_batch(&rows);
            let dec: Vec<Vec<u32>> = c["decoder_input_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(ids)
                .collect();
            let t = dec[0].len();
            let err = &c["ref_f32_error"];
            let enc = m.encode(&e.ids, &e.mask, e.b, e.s).unwrap();
            let mut want = Vec::new();
            flat_f64(&c["encoder_last_hidden_state"], &mut want);
            common::check_close(
                &enc.hidden,
                &want,
                &|_| true,
                tol(err["encoder_last_hidden_state"].as_f64()),
                &format!("{name} encoder hidden on {device}"),
            );
            let logits = m
                .forward(&e.ids, &e.mask, e.b, e.s, &dec.concat(), t)
                .unwrap();
            let mut want = Vec::new();
            flat_f64(&c["logits"], &mut want);
            common::check_close(
                &logits,
                &want,
                &|_| true,
                tol(err["logits"].as_f64()),
                &format!("{name} logits on {device}"),
            );
        }
    }
}

#[test]
fn bart_fixture_generation_matches_transformers_on_every_device() {
    let cases = common::load_json("bart", "generate_cases.json");
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 20);
    for device in devices() {
        let mut models = std::collections::HashMap::new();
        let mut failures = Vec::new();
        for c in cases {
            let name = c["name"].as_str().unwrap();
            let model = c["model"].as_str().unwrap();
            let lm = models
                .entry(model.to_string())
                .or_insert_with(|| load_from("bart", model, device));
            let mut gen: GenerationConfig = lm.generation.clone();
            gen.apply_json(&c["kwargs"], name).unwrap();
            let user_max = c["kwargs"].get("max_length").is_some();
            let out = bart(lm)
                .generate(&bart_batch(c["rows"].as_array().unwrap()), &gen, user_max)
                .unwrap_or_else(|e| panic!("{name} on {device}: {e}"));
            for (ri, (hyps, exp)) in out
                .iter()
                .zip(c["expected"].as_array().unwrap())
                .enumerate()
            {
                let want: Vec<Vec<u32>> = exp["sequences"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(ids)
                    .collect();
                let got: Vec<Vec<u32>> = hyps.iter().map(|h| h.tokens.clone()).collect();
                if got != want {
                    failures.push(format!("{name}: row {ri}\n  got  {got:?}\n  want {want:?}"));
                    continue;
                }
                if let Some(scores) = exp["sequence_scores"].as_array() {
                    let errs = exp["score_f32_error"].as_array();
                    for (i, (h, s)) in hyps.iter().zip(scores).enumerate() {
                        let (g, w) = (h.score.unwrap() as f64, s.as_f64().unwrap());
                        let t = tol(errs.and_then(|e| e.get(i)).and_then(|x| x.as_f64()));
                        if (g - w).abs() > t {
                            failures.push(format!("{name}: row {ri} score {g} vs {w}"));
                        }
                    }
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{device}: {} of {} BART cases differ:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
        eprintln!(
            "{device}: {} BART generation cases match transformers",
            cases.len()
        );
    }
}
