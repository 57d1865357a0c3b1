//! Inputs the fuzz targets (fuzz/fuzz_targets/) found crashing, replayed as plain tests.
//! `tests/fixtures/fuzz/<target>/` holds the inputs; each runner below does what
//! its fuzz target does, so a file dropped there is a regression test without more code
//! (targets with no crash so far have no folder).

use std::path::PathBuf;
use std::sync::Arc;

use dsum_core::chat::{ChatTemplate, Message};
use dsum_core::generation::GenerationConfig;
use dsum_core::io::checkpoint::Checkpoint;
use dsum_core::io::csv::Table;
use dsum_core::io::gguf::{hf, tokenizer, GgufFile, GgufModel};
use dsum_core::io::pickle::{state_dict, unpickle};
use dsum_core::io::pytorch::PtCheckpoint;
use dsum_core::io::raw_tensor::TensorSource;
use dsum_core::models::bart::BartConfig;
use dsum_core::models::llama::LlamaConfig;
use dsum_core::rouge::{Flavor, MultiRef, Scorer, Tokenize};
use dsum_core::tokenizer::Tokenizer;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/fuzz")
        .join(target);
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| {
                    let p = e.path();
                    (p.display().to_string(), std::fs::read(&p).unwrap())
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Runs `f` on every saved input of `target`; a panic names the input file.
fn replay(target: &str, f: impl Fn(&[u8])) {
    for (name, data) in inputs(target) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&data)));
        assert!(r.is_ok(), "{target}: {name} panics again");
    }
}

fn safetensors(data: &[u8]) {
    let Ok(ck) = Checkpoint::from_files(vec![("fuzz.safetensors".into(), Arc::new(data.to_vec()))])
    else {
        return;
    };
    let names: Vec<String> = ck.names().map(String::from).collect();
    for name in names {
        let shape = ck.shape(&name).map(|s| s.to_vec()).unwrap_or_default();
        let _ = ck.get(&name, &shape);
        let _ = ck.get(&name, &[1]);
        let _ = ck.raw_tensor(&name);
    }
}

fn gguf(data: &[u8]) {
    let Ok(g) = GgufFile::parse("fuzz.gguf", Arc::new(data.to_vec())) else {
        return;
    };
    for t in &g.tensors {
        let _ = g.dequantize(t);
    }
    let _ = hf::config_json(&g);
    let _ = hf::chat_template(&g);
    let _ = tokenizer::from_gguf(&g);
    if let Ok(config) = hf::llama_config(&g) {
        let _ = hf::checkpoint(&g, &config);
    }
    let _ = GgufModel::from_file(&g);
}

fn config_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = BartConfig::from_json(text, "config.json");
    if let Ok(c) = LlamaConfig::from_json(text, "config.json") {
        let _ = (c.family(), c.kv_heads(), c.head_dim());
    }
    if let Ok(mut g) = GenerationConfig::from_json(text, "generation_config.json") {
        for prompt_len in [0, 7, usize::MAX / 2] {
            let _ = g.resolve(prompt_len, Some(64), false);
            let _ = g.resolve(prompt_len, None, true);
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
            let _ = g.apply_json(&v, "--generation-config");
            let _ = g.resolve(3, Some(16), true);
        }
    }
}

fn tokenizer_json(data: &[u8]) {
    let (json, config) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], std::str::from_utf8(&data[i + 1..]).ok()),
        None => (data, None),
    };
    let Ok(t) = Tokenizer::from_json(json, config, "tokenizer.json") else {
        return;
    };
    for text in [
        "#Person1#: 안녕하세요, hello world! 123",
        "",
        "\u{1F600}\0 <s></s>",
    ] {
        if let Ok(ids) = t.encode(text, Some(5)) {
            let _ = t.decode(&ids, true);
        }
        if let Ok(ids) = t.encode_plain(text) {
            let _ = t.decode(&ids, false);
            for id in ids {
                let _ = t.token_bytes(id);
            }
        }
    }
    let _ = t.decode(&[0, 1, 2, u32::MAX], false);
    let _ = (t.vocab_size(), t.special_ids(), t.token_bytes(u32::MAX));
}

fn chat_template(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let source = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    let messages: Vec<Message> = rest
        .chunks(2)
        .map(|c| Message::new(c[0], c.get(1).copied().unwrap_or_default()))
        .collect();
    let Ok(t) = ChatTemplate::new(source, "<s>", "</s>") else {
        return;
    };
    let extra = serde_json::json!({"enable_thinking": false, "tools": null});
    let _ = t.render(&messages, true, &extra);
    let _ = t.render(&messages, false, &serde_json::Value::Null);
}

fn csv(data: &[u8]) {
    let Ok(t) = Table::parse("fuzz.csv", data) else {
        return;
    };
    let width = t.headers().len();
    for col in 0..width {
        let _ = t.check_unique(col);
    }
    for row in t.rows() {
        for col in 0..=width {
            let _ = row.get(col);
        }
    }
}

fn rouge(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let hyp = parts.next().unwrap_or_default();
    let refs: Vec<&str> = parts.collect();
    let reference = refs.first().copied().unwrap_or_default();
    for flavor in [Flavor::Rouge, Flavor::RougeScore] {
        for tok in [
            Tokenize::Whitespace,
            Tokenize::Char,
            Tokenize::RougeScoreDefault,
        ] {
            let mut s = Scorer::new(flavor, tok);
            if let Ok(sc) = s.score(hyp, reference) {
                for m in [sc.rouge1, sc.rouge2, sc.rouge_l] {
                    assert!((0.0..=1.0).contains(&m.f), "{sc:?}");
                }
            }
            if !refs.is_empty() {
                let _ = s.score_multi(hyp, &refs, MultiRef::Max);
                let _ = s.score_multi(hyp, &refs, MultiRef::Mean);
            }
        }
    }
}

fn pytorch_bin(data: &[u8]) {
    let Ok(ck) = PtCheckpoint::from_bytes("pytorch_model.bin", Arc::new(data.to_vec())) else {
        return;
    };
    for name in ck.tensor_names() {
        if let Some(t) = ck.get(&name) {
            let _ = t.to_weight("pytorch_model.bin", &name);
        }
        let _ = ck.raw_tensor(&name);
    }
    let _ = ck.into_checkpoint();
}

fn pickle(data: &[u8]) {
    if let Ok(v) = unpickle(data, "data.pkl") {
        let _ = state_dict(&v, "data.pkl");
    }
}

/// The runner of a fuzz target, by the target's name (the folder name).
fn runner(target: &str) -> fn(&[u8]) {
    match target {
        "safetensors" => safetensors,
        "gguf" => gguf,
        "config_json" => config_json,
        "tokenizer_json" => tokenizer_json,
        "chat_template" => chat_template,
        "csv" => csv,
        "rouge" => rouge,
        "pytorch_bin" => pytorch_bin,
        "pickle" => pickle,
        other => panic!("tests/fixtures/fuzz/{other}: no runner for this target"),
    }
}

#[test]
fn every_saved_crash_input_is_handled() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/fuzz");
    let mut targets: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    targets.sort();
    let mut n = 0;
    for t in &targets {
        n += inputs(t).len();
        replay(t, runner(t));
    }
    assert!(n > 0, "no saved inputs under {}", root.display());
    eprintln!("{n} saved inputs of {} targets replayed", targets.len());
}
