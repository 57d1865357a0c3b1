//! BART parity against transformers: tokenization, logits, and generated ids for every
//! case recorded by tools/fixtures/make_bart_fixtures.py (tests/fixtures/bart).

mod common;

use common::{flat_f64, ids, tol, Models};
use dsum_core::backend::Device;
use dsum_core::generation::GenerationConfig;
use dsum_core::models::bart::EncoderBatch;
use dsum_core::models::{LoadedModel, Model};
use serde_json::Value;

fn fixtures() -> std::path::PathBuf {
    common::fixtures("bart")
}

fn load_json(name: &str) -> Value {
    common::load_json("bart", name)
}

fn bart(m: &LoadedModel) -> &dsum_core::models::bart::Bart {
    match &m.model {
        Model::Bart(b) => b,
        _ => panic!("{} is not a BART model", m.dir.display()),
    }
}

fn batch(rows: &[Value]) -> EncoderBatch {
    let b = rows.len();
    let s = rows[0]["input_ids"].as_array().unwrap().len();
    let mut all = Vec::new();
    let mut mask = Vec::new();
    for r in rows {
        all.extend(ids(&r["input_ids"]));
        mask.extend(
            r["attention_mask"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64() == Some(1)),
        );
    }
    EncoderBatch {
        b,
        s,
        ids: all,
        mask,
    }
}

#[test]
fn tokenizer_matches_transformers() {
    let mut models = Models::new("bart");
    let tok = &models.get("tiny-a").tokenizer;
    let cases = load_json("tokenize_cases.json");
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 10);
    for c in cases {
        common::check_tokenize_case(tok, c, 16, "ids_trunc16");
    }
}

common::device_tests!(
    logits_match_transformers_on: logits_match_transformers,
    cuda_logits_match_transformers
);

fn logits_match_transformers_on(device: Device) {
    let mut models = Models::on("bart", device);
    let cases = load_json("logits_cases.json");
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 3);
    for c in cases {
        let name = c["model"].as_str().unwrap();
        let m = bart(models.get(name));
        let rows: Vec<Vec<u32>> = c["input_ids"].as_array().unwrap().iter().map(ids).collect();
        let mask: Vec<bool> = c["attention_mask"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64() == Some(1))
                    .collect::<Vec<_>>()
            })
            .collect();
        let dec: Vec<Vec<u32>> = c["decoder_input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(ids)
            .collect();
        let (b, s, t) = (rows.len(), rows[0].len(), dec[0].len());
        let flat: Vec<u32> = rows.concat();
        let enc = m.encode(&flat, &mask, b, s).unwrap();
        let mut want = Vec::new();
        flat_f64(&c["encoder_last_hidden_state"], &mut want);
        let err = &c["ref_f32_error"];
        common::check_close(
            &enc.hidden,
            &want,
            &|_| true,
            tol(err["encoder_last_hidden_state"].as_f64()),
            &format!("{name} encoder hidden on {device}"),
        );
        let logits = m.forward(&flat, &mask, b, s, &dec.concat(), t).unwrap();
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

common::device_tests!(
    generation_matches_transformers_on: generation_matches_transformers,
    cuda_generation_matches_transformers
);

fn generation_matches_transformers_on(device: Device) {
    let mut models = Models::on("bart", device);
    let cases = load_json("generate_cases.json");
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 20);
    let mut failures = Vec::new();
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let lm = models.get(c["model"].as_str().unwrap());
        let mut gen: GenerationConfig = lm.generation.clone();
        gen.apply_json(&c["kwargs"], name).unwrap();
        let user_max = c["kwargs"].get("max_length").is_some();
        let rows = c["rows"].as_array().unwrap();
        let out = bart(lm)
            .generate(&batch(rows), &gen, user_max)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected = c["expected"].as_array().unwrap();
        assert_eq!(out.len(), expected.len(), "{name}: rows");
        for (ri, (hyps, exp)) in out.iter().zip(expected).enumerate() {
            let seqs: Vec<Vec<u32>> = exp["sequences"]
                .as_array()
                .unwrap()
                .iter()
                .map(ids)
                .collect();
            let got: Vec<Vec<u32>> = hyps.iter().map(|h| h.tokens.clone()).collect();
            if got != seqs {
                failures.push(format!("{name}: row {ri}\n  got  {got:?}\n  want {seqs:?}"));
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
        "{} of {} cases differ on {device}:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn parameter_count_equals_the_checkpoint_tensors() {
    for name in ["tiny-a", "tiny-b", "tiny-c"] {
        let dir = fixtures().join("models").join(name);
        let ck = dsum_core::io::checkpoint::Checkpoint::open_dir(&dir).unwrap();
        // Tied embeddings are stored once; final_logits_bias is a buffer, not a parameter.
        let in_file: usize = ck
            .names()
            .filter(|n| *n != "final_logits_bias")
            .map(|n| ck.shape(n).unwrap().iter().product::<usize>())
            .sum();
        let m = LoadedModel::load(&dir).unwrap();
        assert_eq!(m.num_parameters(), in_file, "{name}");
    }
}
