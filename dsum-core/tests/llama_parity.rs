//! Llama / Qwen2 / Qwen3 parity against transformers: tokenization, chat templates, logits
//! with left padding, and generated ids, for every case recorded by
//! tools/fixtures/make_llama_fixtures.py (tests/fixtures/llama).

mod common;

use common::{flat_f64, ids, tol, Models};
use dsum_core::backend::Device;
use dsum_core::chat::{ChatTemplate, Message};
use dsum_core::generation::GenerationConfig;
use dsum_core::models::llama::Llama;
use dsum_core::models::{LoadedModel, Model};

fn llama(m: &LoadedModel) -> &Llama {
    match &m.model {
        Model::Llama(l) => l,
        _ => panic!("{} is not a Llama-family model", m.dir.display()),
    }
}

#[test]
fn tokenizers_match_transformers() {
    let mut models = Models::new("llama");
    let cases = common::load_json("llama", "tokenize_cases.json");
    for c in cases.as_array().unwrap() {
        let tok = &models.get(c["tokenizer"].as_str().unwrap()).tokenizer;
        let text = c["text"].as_str().unwrap();
        common::check_tokenize_case(tok, c, 8, "ids_trunc8");
        assert_eq!(
            tok.encode_plain(text).unwrap(),
            ids(&c["ids_no_special"]),
            "plain ids of {text:?}"
        );
    }
}

#[test]
fn chat_templates_render_like_transformers() {
    let mut models = Models::new("llama");
    let cases = common::load_json("llama", "chat_cases.json");
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 10);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let m = models.get(c["model"].as_str().unwrap());
        let tok = &m.tokenizer;
        let src = tok
            .chat_template
            .as_deref()
            .expect("fixture models have a chat template");
        let t = ChatTemplate::new(
            src,
            tok.bos_token.as_deref().unwrap_or(""),
            tok.eos_token.as_deref().unwrap_or(""),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let messages: Vec<Message> = serde_json::from_value(c["messages"].clone()).unwrap();
        let rendered = t
            .render(
                &messages,
                c["add_generation_prompt"].as_bool().unwrap(),
                &c["template_kwargs"],
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            rendered,
            c["rendered"].as_str().unwrap(),
            "{name} ({})",
            c["model"]
        );
        assert_eq!(
            tok.encode_plain(&rendered).unwrap(),
            ids(&c["input_ids"]),
            "{name}: ids"
        );
    }
}

common::device_tests!(
    logits_match_transformers_with_left_padding_on: logits_match_transformers_with_left_padding,
    cuda_logits_match_transformers_with_left_padding
);

fn logits_match_transformers_with_left_padding_on(device: Device) {
    let mut models = Models::on("llama", device);
    let cases = common::load_json("llama", "logits_cases.json");
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 4);
    for c in cases {
        let name = c["model"].as_str().unwrap();
        let m = llama(models.get(name));
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
        // Logits at padding positions mean nothing (and transformers' differ by design).
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

common::device_tests!(
    generation_matches_transformers_on: generation_matches_transformers,
    cuda_generation_matches_transformers
);

fn generation_matches_transformers_on(device: Device) {
    let mut models = Models::on("llama", device);
    let cases = common::load_json("llama", "generate_cases.json");
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 20);
    let mut failures = Vec::new();
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let lm = models.get(c["model"].as_str().unwrap());
        let mut gen: GenerationConfig = lm.generation.clone();
        gen.apply_json(&c["kwargs"], name).unwrap();
        let user_max = c["kwargs"].get("max_length").is_some();
        // Rows are left-padded as fed to transformers; dsum pads itself, so strip the padding.
        let prompts: Vec<Vec<u32>> = c["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let ids = ids(&r["input_ids"]);
                let mask = r["attention_mask"].as_array().unwrap();
                ids.iter()
                    .zip(mask)
                    .filter(|(_, m)| m.as_u64() == Some(1))
                    .map(|(i, _)| *i)
                    .collect()
            })
            .collect();
        let out = llama(lm)
            .generate(&prompts, &gen, user_max)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
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
        "{} of {} cases differ on {device}:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn parameter_count_equals_the_checkpoint_tensors() {
    for name in ["llama-tied", "llama3-rope", "qwen2", "qwen3"] {
        let dir = common::fixtures("llama").join("models").join(name);
        let ck = dsum_core::io::checkpoint::Checkpoint::open_dir(&dir).unwrap();
        let in_file: usize = ck
            .names()
            .map(|n| ck.shape(n).unwrap().iter().product::<usize>())
            .sum();
        let m = LoadedModel::load(&dir).unwrap();
        assert_eq!(m.num_parameters(), in_file, "{name}");
    }
}
