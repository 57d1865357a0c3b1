//! The page's work run natively, for the browser-vs-native numbers in BENCHMARKS.md: the same
//! dsum-wasm functions (same code path, one thread, no mmap) on the same inputs.
//!   native_bench summarize MODEL.gguf DIALOGUES.csv MAX_NEW_TOKENS   (first row, en preset)
//!   native_bench score PRED.csv REF.csv [MECAB_DIC_DIR]
use std::time::Instant;

use anyhow::{bail, Context, Result};
use dsum_wasm::{score, summarize};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["summarize", model, csv, max_new] => {
            let bytes = std::fs::read(model).with_context(|| model.to_string())?;
            let t0 = Instant::now();
            let m = summarize::load(model, vec![(model.to_string(), bytes)])?;
            let load_ms = t0.elapsed().as_secs_f64() * 1e3;
            let rows = summarize::read_dialogues(csv, &std::fs::read(csv)?)?;
            let dialogue = rows[0]["dialogue"].as_str().unwrap_or_default().to_string();
            let opts: summarize::SummarizeOptions = serde_json::from_value(serde_json::json!({
                "prompt_preset": "en", "generation": {"max_new_tokens": max_new.parse::<usize>()?}
            }))?;
            let t0 = Instant::now();
            let mut first = None; // the prompt's prefill plus one step
            let out = summarize::summarize(&m, &dialogue, &opts, &mut |_, _| {
                first.get_or_insert(t0.elapsed().as_secs_f64() * 1e3);
            })?;
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            println!(
                "{}",
                serde_json::json!({"load_ms": load_ms, "ms": ms, "first_token_ms": first, "new_tokens": out["new_tokens"],
                    "prompt_tokens": out["input_ids"].as_array().map(|a| a.len()),
                    "sequences": out["sequences"]})
            );
        }
        ["score", pred, reference, ref mecab @ ..] => {
            let (p, r) = (std::fs::read(pred)?, std::fs::read(reference)?);
            let mecab = match mecab {
                [dir] => {
                    let m = dsum_core::mecab::Mecab::load(std::path::Path::new(dir))?;
                    Some(dsum_core::rouge::Tokenize::custom(move |t| m.morphs(t)))
                }
                _ => None,
            };
            let opts = score::ScoreOptions {
                tokenize: if mecab.is_some() {
                    "mecab"
                } else {
                    "whitespace"
                }
                .into(),
                ..Default::default()
            };
            let t0 = Instant::now();
            let v = score::score_csv(pred, &p, reference, &r, &opts, mecab)?;
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            let n = v["count"].as_f64().unwrap_or(0.0);
            println!(
                "{}",
                serde_json::json!({"pairs": n, "ms": ms, "pairs_per_s": n / ms * 1e3})
            );
        }
        _ => bail!("usage: native_bench summarize MODEL CSV MAX_NEW | score PRED REF [MECAB_DIC]"),
    }
    Ok(())
}
