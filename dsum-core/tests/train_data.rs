//! The fine-tuning data pipeline against the PyTorch reference
//! (tools/fixtures/make_lora_fixtures.py -> tests/fixtures/trainer/batches.json): BART
//! examples and DataCollatorForSeq2Seq batches (shift_tokens_right), and causal-LM
//! examples built from the chat template with the dialogue truncated at a token offset.

use std::path::PathBuf;

use dsum_core::prompt::{PromptBuilder, DEFAULT_SYSTEM_PROMPT, DEFAULT_USER_TEMPLATE};
use dsum_core::tokenizer::Tokenizer;
use dsum_core::train::data::{self, Builder, Collate, Example, Lengths};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn reference() -> Value {
    let p = root().join("tests/fixtures/trainer/batches.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn ints<T: TryFrom<i64>>(v: &Value) -> Vec<T>
where
    T::Error: std::fmt::Debug,
{
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| T::try_from(x.as_i64().unwrap()).unwrap())
        .collect()
}

fn flat<T: TryFrom<i64>>(v: &Value) -> Vec<T>
where
    T::Error: std::fmt::Debug,
{
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|r| ints::<T>(r))
        .collect()
}

fn check(case: &Value, built: &[Example], collate: Collate) {
    for (i, (e, want)) in built
        .iter()
        .zip(case["examples"].as_array().unwrap())
        .enumerate()
    {
        assert_eq!(
            e.input_ids,
            ints::<u32>(&want["input_ids"]),
            "example {i} input_ids"
        );
        assert_eq!(e.labels, ints::<i64>(&want["labels"]), "example {i} labels");
    }
    let bs = case["batch_size"].as_u64().unwrap() as usize;
    let refs: Vec<&Example> = built.iter().collect();
    let batches = case["batches"].as_array().unwrap();
    assert_eq!(batches.len(), built.len().div_ceil(bs));
    for (chunk, want) in refs.chunks(bs).zip(batches) {
        let b = data::collate(chunk, collate);
        assert_eq!(b.input_ids, flat::<u32>(&want["input_ids"]));
        let mask: Vec<bool> = flat::<i64>(&want["attention_mask"])
            .iter()
            .map(|&m| m == 1)
            .collect();
        assert_eq!(b.attention_mask, mask);
        assert_eq!(b.labels, flat::<i64>(&want["labels"]));
        if !collate.causal {
            assert_eq!(b.decoder_input_ids, flat::<u32>(&want["decoder_input_ids"]));
        }
    }
}

fn rows(n: usize) -> Vec<data::Row> {
    let all = data::read_rows(&root().join("tests/fixtures/data/dialogues.csv")).unwrap();
    all.into_iter().take(n).collect()
}

fn lengths(case: &Value) -> Lengths {
    Lengths {
        max_source_len: case["max_source_len"].as_u64().unwrap() as usize,
        max_target_len: case["max_target_len"].as_u64().unwrap() as usize,
    }
}

#[test]
fn bart_examples_and_batches_match_the_collator() {
    let r = reference();
    let case = &r["bart"];
    let tok = Tokenizer::from_dir(&root().join("tests/fixtures/bart/models/tiny-a")).unwrap();
    let n = case["examples"].as_array().unwrap().len();
    let built = data::examples(&tok, &rows(n), &Builder::Bart, lengths(case)).unwrap();
    // tiny-a: pad 3, decoder_start 1 (config.json).
    check(
        case,
        &built,
        Collate {
            causal: false,
            pad_id: 3,
            decoder_start_id: 1,
        },
    );
}

#[test]
fn causal_examples_and_batches_match_the_reference() {
    let r = reference();
    for (key, dir) in [("llama3", "llama3-rope"), ("qwen2", "qwen2")] {
        let case = &r[key];
        let tok =
            Tokenizer::from_dir(&root().join("tests/fixtures/llama/models").join(dir)).unwrap();
        let prompts = PromptBuilder::new(
            &tok,
            Some(DEFAULT_SYSTEM_PROMPT),
            DEFAULT_USER_TEMPLATE,
            true,
            Value::Null,
        )
        .unwrap();
        let close = data::close_token_id(&tok, None, None, "cfg").unwrap();
        assert_eq!(close as u64, case["close_id"].as_u64().unwrap());
        let n = case["examples"].as_array().unwrap().len();
        let rs = rows(n);
        let len = lengths(case);
        for (row, want) in rs
            .iter()
            .zip(case["truncated_dialogues"].as_array().unwrap())
        {
            let cut = data::truncate_dialogue(&tok, &row.dialogue, len.max_source_len).unwrap();
            assert_eq!(cut, want.as_str().unwrap(), "{key}");
        }
        let built = data::examples(
            &tok,
            &rs,
            &Builder::Causal {
                prompts: &prompts,
                close_id: close,
            },
            len,
        )
        .unwrap();
        let pad = case["pad_id"].as_u64().unwrap() as u32;
        check(
            case,
            &built,
            Collate {
                causal: true,
                pad_id: pad,
                decoder_start_id: 0,
            },
        );
    }
}

#[test]
fn bad_csvs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("dev.csv");
    std::fs::write(&p, "fname,dialogue,summary\n").unwrap();
    let e = data::read_rows(&p).unwrap_err().to_string();
    assert!(e.contains("dev.csv") && e.contains("no rows"), "{e}");
    std::fs::write(&p, "fname,dialogue\na,hi\n").unwrap();
    let e = data::read_rows(&p).unwrap_err().to_string();
    assert!(e.contains("missing column `summary`"), "{e}");
    std::fs::write(&p, "fname,dialogue,summary\na,hi,\n").unwrap();
    let e = data::read_rows(&p).unwrap_err().to_string();
    assert!(
        e.contains("line 2") && e.contains("summary of `a` is empty"),
        "{e}"
    );
}
