//! The training references' data (tools/fixtures/make_train_fixtures.py, tests/fixtures/train)
//! replayed with dsum's own building blocks: the CSV reader, tokenizers, chat-template prompts
//! and `train::Batch::counted_tokens`. It pins the data pipeline of issue 5 (item 5) down to
//! token ids before any training code runs; the training tests compare losses and weights.

mod common;

use std::path::PathBuf;

use common::{ids, load_json};
use dsum_core::io::csv::Table;
use dsum_core::prompt::{PromptBuilder, DEFAULT_SYSTEM_PROMPT, DEFAULT_USER_TEMPLATE};
use dsum_core::tokenizer::Tokenizer;
use dsum_core::train::{Batch, IGNORE};
use serde_json::Value;

const CASES: [&str; 5] = [
    "lora-llama",
    "lora-qwen3",
    "lora-bart",
    "full-bart",
    "qlora-llama",
];

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

fn labels(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn usize_of(v: &Value) -> usize {
    v.as_u64().unwrap() as usize
}

struct Case {
    name: &'static str,
    config: Value,
    batches: Value,
    steps: Value,
    tok: Tokenizer,
    causal: bool,
}

fn load(name: &'static str) -> Case {
    let config = load_json("train", &format!("{name}/config.json"));
    let model = repo(config["model"]["path"].as_str().unwrap());
    let tok = Tokenizer::from_dir(&model).unwrap();
    let causal = model.to_string_lossy().contains("llama/");
    Case {
        name,
        batches: load_json("train", &format!("{name}/batches.json")),
        steps: load_json("train", &format!("{name}/steps.json")),
        config,
        tok,
        causal,
    }
}

/// The reference's per-row examples from the CSV through dsum's tokenizer and prompt builder.
#[test]
fn examples_match_dsum_tokenization() {
    for name in CASES {
        let c = load(name);
        let data = &c.config["data"];
        let (max_src, max_tgt) = (
            usize_of(&data["max_source_len"]),
            usize_of(&data["max_target_len"]),
        );
        let table = Table::read(&repo(data["train"].as_str().unwrap())).unwrap();
        let (fname, dialogue, summary) = (
            table.column("fname").unwrap(),
            table.column("dialogue").unwrap(),
            table.column("summary").unwrap(),
        );
        let examples = c.batches["examples"].as_array().unwrap();
        assert_eq!(examples.len(), table.len(), "{name}: one example per row");
        let prompts = PromptBuilder::new(
            &c.tok,
            Some(DEFAULT_SYSTEM_PROMPT),
            DEFAULT_USER_TEMPLATE,
            true,
            serde_json::json!({}),
        )
        .unwrap();
        assert_eq!(c.config["prompt"]["system"], DEFAULT_SYSTEM_PROMPT);
        assert_eq!(c.config["prompt"]["user"], DEFAULT_USER_TEMPLATE);
        let mut truncated = 0;
        for (row, ex) in table.rows().zip(examples) {
            assert_eq!(ex["fname"].as_str().unwrap(), row.get(fname), "{name}");
            let input_ids = ids(&ex["input_ids"]);
            let lab = labels(&ex["labels"]);
            if !c.causal {
                let src = c.tok.encode(row.get(dialogue), Some(max_src)).unwrap();
                let tgt = c.tok.encode(row.get(summary), Some(max_tgt)).unwrap();
                assert_eq!(input_ids, src, "{name} {}: input_ids", row.get(fname));
                assert_eq!(
                    lab,
                    tgt.iter().map(|&t| t as i64).collect::<Vec<_>>(),
                    "{name} {}: labels",
                    row.get(fname)
                );
                continue;
            }
            // The dialogue is cut after its first max_source_len tokens, at a token's end.
            let cut = ex["dialogue"].as_str().unwrap();
            let full_len = c.tok.encode_plain(row.get(dialogue)).unwrap().len();
            assert!(row.get(dialogue).starts_with(cut), "{name}: a prefix");
            assert_eq!(ex["dialogue_truncated"], full_len > max_src, "{name}");
            assert_eq!(cut == row.get(dialogue), full_len <= max_src, "{name}");
            truncated += usize::from(full_len > max_src);

            let prompt_text = prompts.render_dialogue(cut).unwrap();
            assert_eq!(prompt_text, ex["prompt_text"].as_str().unwrap(), "{name}");
            let prompt = c.tok.encode_plain(&prompt_text).unwrap();
            let close = usize_of(&c.batches["info"]["close_id"]) as u32;
            let want_close = ["<|eot_id|>", "<|im_end|>"]
                .iter()
                .find_map(|t| c.tok.token_to_id(t));
            assert_eq!(Some(close), want_close, "{name}: close token rule");
            let mut target = c.tok.encode_plain(row.get(summary)).unwrap();
            target.truncate(max_tgt);
            target.push(close);
            let mut want_ids = prompt.clone();
            want_ids.extend(&target);
            assert_eq!(input_ids, want_ids, "{name} {}: input_ids", row.get(fname));
            let mut want_labels = vec![IGNORE; prompt.len()];
            want_labels.extend(target.iter().map(|&t| t as i64));
            assert_eq!(lab, want_labels, "{name} {}: labels", row.get(fname));
        }
        if c.causal {
            // Both branches of the truncation rule are exercised.
            assert!(truncated > 0 && truncated < examples.len(), "{name}");
        }
    }
}

/// Padded micro-batches from the examples, and the counted tokens of every optimizer step.
#[test]
fn batches_and_counted_tokens() {
    for name in CASES {
        let c = load(name);
        let info = &c.batches["info"];
        let pad = usize_of(&info["pad_id"]) as u32;
        let examples = c.batches["examples"].as_array().unwrap();
        let bs = usize_of(&c.config["train"]["batch_size"]);
        let to_batch = |b: &Value| -> Batch {
            let rows = b["input_ids"].as_array().unwrap().len();
            let cols = b["input_ids"][0].as_array().unwrap().len();
            let flat =
                |k: &str| -> Vec<u32> { b[k].as_array().unwrap().iter().flat_map(ids).collect() };
            let lab: Vec<i64> = b["labels"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(labels)
                .collect();
            Batch {
                rows,
                cols,
                input_ids: flat("input_ids"),
                attention_mask: flat("attention_mask").iter().map(|&m| m == 1).collect(),
                dec_cols: if c.causal { 0 } else { lab.len() / rows },
                decoder_input_ids: if c.causal {
                    vec![]
                } else {
                    flat("decoder_input_ids")
                },
                labels: lab,
            }
        };
        for (key, size) in [("train_batches", bs), ("dev_batches", 4)] {
            let batches = c.batches[key].as_array().unwrap();
            assert_eq!(batches.len(), examples.len().div_ceil(size), "{name} {key}");
            for (bi, b) in batches.iter().enumerate() {
                let rows = &examples[bi * size..(bi * size + size).min(examples.len())];
                let batch = to_batch(b);
                let width = rows
                    .iter()
                    .map(|e| ids(&e["input_ids"]).len())
                    .max()
                    .unwrap();
                assert_eq!(batch.cols, width, "{name} {key} {bi}: longest row");
                let lw = if c.causal {
                    width
                } else {
                    rows.iter()
                        .map(|e| labels(&e["labels"]).len())
                        .max()
                        .unwrap()
                };
                for (r, e) in rows.iter().enumerate() {
                    let (x, l) = (ids(&e["input_ids"]), labels(&e["labels"]));
                    let mut want = x.clone();
                    want.resize(width, pad);
                    assert_eq!(
                        &batch.input_ids[r * width..(r + 1) * width],
                        &want[..],
                        "{name}"
                    );
                    let mask: Vec<bool> = (0..width).map(|t| t < x.len()).collect();
                    assert_eq!(&batch.attention_mask[r * width..(r + 1) * width], &mask[..]);
                    let mut wl = l.clone();
                    wl.resize(lw, IGNORE);
                    assert_eq!(&batch.labels[r * lw..(r + 1) * lw], &wl[..], "{name}");
                    if !c.causal {
                        // transformers' shift_tokens_right: start token, labels[..-1], -100 -> pad.
                        let start = usize_of(&info["decoder_start_token_id"]) as u32;
                        let mut dec = vec![start];
                        dec.extend(wl[..lw - 1].iter().map(|&t| {
                            if t == IGNORE {
                                pad
                            } else {
                                t as u32
                            }
                        }));
                        assert_eq!(
                            &batch.decoder_input_ids[r * lw..(r + 1) * lw],
                            &dec[..],
                            "{name}"
                        );
                    }
                }
            }
        }
        let train: Vec<Batch> = c.batches["train_batches"]
            .as_array()
            .unwrap()
            .iter()
            .map(to_batch)
            .collect();
        let steps = c.steps["steps"].as_array().unwrap();
        assert_eq!(steps.len(), usize_of(&c.steps["total_steps"]), "{name}");
        for s in steps {
            let n: usize = s["micro_batches"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| train[usize_of(i)].counted_tokens(c.causal))
                .sum();
            assert_eq!(n, usize_of(&s["tokens"]), "{name} step {}", s["step"]);
        }
        let dev: usize = c.batches["dev_batches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| to_batch(b).counted_tokens(c.causal))
            .sum();
        assert_eq!(dev, usize_of(&c.steps["dev_tokens"]), "{name}: dev tokens");
        eprintln!("{}: {} steps, tokens match", c.name, steps.len());
    }
}
