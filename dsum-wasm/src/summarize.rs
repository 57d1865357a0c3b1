//! The Summarize tab: a model loaded from in-memory files (a folder's files or one GGUF),
//! and one dialogue summarized the way `dsum-cli summarize` does it (BART: the dialogue
//! truncated to the encoder length; causal LMs: the prompt preset rendered through the
//! model's chat template), with each greedy token reported as it is chosen.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use dsum_core::chat::Message;
use dsum_core::models::{LoadedModel, Model};
use dsum_core::prompt::{
    clean_answer, PromptBuilder, DEFAULT_SYSTEM_PROMPT, DEFAULT_USER_TEMPLATE,
    ENGLISH_SYSTEM_PROMPT, ENGLISH_USER_TEMPLATE,
};
use dsum_core::tensor::SharedBytes;
use serde::Deserialize;
use serde_json::{json, Value};

/// The tokens `dsum-cli summarize` removes from BART summaries by default.
const REMOVE_TOKENS: [&str; 4] = ["<usr>", "<s>", "</s>", "<pad>"];

/// Loads a model from `(file name, bytes)` pairs: one `.gguf` file, or the files of a
/// Hugging Face folder (`config.json`, `tokenizer.json`, `model.safetensors`...).
/// `name` is what error messages call the model.
pub fn load(name: &str, files: Vec<(String, Vec<u8>)>) -> Result<LoadedModel> {
    if files.is_empty() {
        bail!("{name}: no files given");
    }
    let gguf: Vec<usize> = (0..files.len())
        .filter(|&i| files[i].0.to_ascii_lowercase().ends_with(".gguf"))
        .collect();
    if let [i] = gguf[..] {
        let (file, bytes) = files.into_iter().nth(i).context("the GGUF file")?;
        let shared: SharedBytes = Arc::new(bytes);
        return Ok(LoadedModel::from_gguf_bytes(&file, shared)?);
    }
    if gguf.len() > 1 {
        bail!("{name}: pick one .gguf file, not {}", gguf.len());
    }
    // A folder picked in the browser gives paths like `tiny-c/config.json`: keep the base name.
    let mut map: HashMap<String, SharedBytes> = HashMap::new();
    for (file, bytes) in files {
        let base = file.rsplit(['/', '\\']).next().unwrap_or(&file).to_string();
        map.insert(base, Arc::new(bytes));
    }
    if !map.contains_key("config.json") {
        let mut names: Vec<&String> = map.keys().collect();
        names.sort();
        bail!(
            "{name}: missing config.json (a model is one .gguf file, or a folder with \
             config.json, tokenizer.json and model.safetensors); got: {}",
            names
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(LoadedModel::from_files(name, &map)?)
}

/// The rows of a dialogues CSV (`fname`, `dialogue`, as `dsum-cli summarize --input`),
/// as a JSON list of `{fname, dialogue}`.
pub fn read_dialogues(name: &str, bytes: &[u8]) -> Result<Value> {
    let t = dsum_core::io::csv::Table::parse(name, bytes)?;
    let (fi, di) = (t.column("fname")?, t.column("dialogue")?);
    if t.is_empty() {
        bail!("{name}: no rows (only a header)");
    }
    let rows = t
        .rows()
        .map(|r| json!({"fname": r.get(fi), "dialogue": r.get(di)}));
    Ok(Value::Array(rows.collect()))
}

/// The page's settings: transformers' `generate` kwargs (`num_beams`, `max_new_tokens`...,
/// as the CLI's generation flags) plus the prompt settings.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct SummarizeOptions {
    /// transformers' generation kwargs, overlaid on the model's generation_config.json.
    pub generation: serde_json::Map<String, Value>,
    /// `ko` (default) or `en`.
    pub prompt_preset: Option<String>,
    pub system_prompt: Option<String>,
    pub prompt_template: Option<String>,
    pub no_chat_template: bool,
    /// Truncate a BART input to this many tokens (default 512, capped by the model).
    pub encoder_max_length: Option<usize>,
}

/// A short description of the loaded model for the page.
pub fn info(m: &LoadedModel) -> Value {
    let (family, vocab) = match &m.model {
        Model::Bart(b) => ("bart", b.vocab_size()),
        Model::Llama(l) => ("causal-lm", l.vocab_size()),
    };
    json!({
        "name": m.dir.display().to_string(),
        "family": family,
        "parameters": m.num_parameters(),
        "vocab_size": vocab,
        "max_input_tokens": m.max_input_tokens(),
        "chat_template": m.tokenizer.chat_template.is_some(),
        "generation": {
            "num_beams": m.generation.num_beams,
            "max_new_tokens": m.generation.max_new_tokens,
            "max_length": m.generation.max_length,
            "no_repeat_ngram_size": m.generation.no_repeat_ngram_size,
        },
    })
}

fn prompt_builder(m: &LoadedModel, o: &SummarizeOptions) -> Result<Option<PromptBuilder>> {
    if !matches!(m.model, Model::Llama(_)) {
        return Ok(None);
    }
    let (system, user) = match o.prompt_preset.as_deref().unwrap_or("ko") {
        "ko" => (DEFAULT_SYSTEM_PROMPT, DEFAULT_USER_TEMPLATE),
        "en" => (ENGLISH_SYSTEM_PROMPT, ENGLISH_USER_TEMPLATE),
        other => bail!("prompt preset must be ko or en, not `{other}`"),
    };
    let b = PromptBuilder::new(
        &m.tokenizer,
        Some(o.system_prompt.as_deref().unwrap_or(system)),
        o.prompt_template.as_deref().unwrap_or(user),
        !o.no_chat_template,
        Value::Null,
    )?;
    if !b.has_chat_template() && !o.no_chat_template {
        bail!(
            "{} has no chat template (no `chat_template` in tokenizer_config.json or the GGUF \
             metadata); tick \"plain-text prompt\" to use one without it",
            m.dir.display()
        );
    }
    Ok(Some(b))
}

/// Summarizes one dialogue; `on_token(id, text so far)` is called for each greedy token.
/// Returns the prompt (causal LMs), `input_ids`, `sequences` and `texts` as `dsum-cli
/// generate` writes them, and `summary` as `dsum-cli summarize` writes it.
pub fn summarize(
    m: &LoadedModel,
    dialogue: &str,
    o: &SummarizeOptions,
    on_token: &mut dyn FnMut(u32, &str),
) -> Result<Value> {
    if dialogue.trim().is_empty() {
        bail!("the dialogue is empty");
    }
    let mut gen = m.generation.clone();
    gen.apply_json(&Value::Object(o.generation.clone()), "generation settings")?;
    gen.resolve(1, None, true)
        .context("invalid generation settings")?;
    let user_max = o.generation.contains_key("max_length");
    let prompts = prompt_builder(m, o)?;
    let (ids, messages, prompt, truncated) = match &prompts {
        Some(p) => {
            let messages: Vec<Message> = p.messages(dialogue);
            let text = p.render(&messages)?;
            // The rendered chat prompt already holds its special tokens.
            let ids = m.tokenizer.encode_plain(&text)?;
            (ids, Some(messages), Some(text), false)
        }
        None => {
            let max_in = o
                .encoder_max_length
                .unwrap_or(512)
                .min(m.max_input_tokens());
            if max_in == 0 {
                bail!("the encoder max length must be at least 1");
            }
            let full = m.tokenizer.encode(dialogue, None)?.len();
            (
                m.tokenizer.encode(dialogue, Some(max_in))?,
                None,
                None,
                full > max_in,
            )
        }
    };
    if ids.len() > m.max_input_tokens() {
        bail!(
            "the prompt has {} tokens, more than the model's {} positions",
            ids.len(),
            m.max_input_tokens()
        );
    }
    let mut streamed: Vec<u32> = Vec::new();
    let mut report = |_row: usize, id: u32| {
        streamed.push(id);
        let text = m.tokenizer.decode(&streamed, true).unwrap_or_default();
        on_token(id, &text);
    };
    let hyps = m.generate_streaming(std::slice::from_ref(&ids), &gen, user_max, &mut report)?;
    let row = hyps.into_iter().next().unwrap_or_default();
    let seqs: Vec<&[u32]> = row.iter().map(|h| h.tokens.as_slice()).collect();
    let texts = seqs
        .iter()
        .map(|s| m.tokenizer.decode(s, true))
        .collect::<Result<Vec<_>, _>>()?;
    let best = seqs.first().copied().unwrap_or(&[]);
    let summary = if prompts.is_some() {
        clean_answer(&m.tokenizer.decode(best, true)?)
    } else {
        let mut s = m.tokenizer.decode(best, false)?;
        for r in REMOVE_TOKENS {
            s = s.replace(r, "");
        }
        s.trim().to_string()
    };
    let mut out = json!({
        "input_ids": ids,
        "sequences": seqs,
        "texts": texts,
        "summary": summary,
        "streamed": streamed,
        "truncated": truncated,
        "new_tokens": best.len(),
    });
    if let Some(p) = prompt {
        out["prompt"] = json!(p);
    }
    if let Some(msgs) = messages {
        out["messages"] = serde_json::to_value(msgs)?;
    }
    if row.iter().any(|h| h.score.is_some()) {
        out["sequence_scores"] = json!(row.iter().map(|h| h.score).collect::<Vec<_>>());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn folder(rel: &str) -> Vec<(String, Vec<u8>)> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(rel);
        let mut files = Vec::new();
        for e in std::fs::read_dir(&dir).expect("fixture folder") {
            let p = e.expect("entry").path();
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_string();
            files.push((name, std::fs::read(&p).expect("read")));
        }
        files
    }

    /// The in-memory loader and the folder loader give the same generation.
    #[test]
    fn in_memory_bart_equals_the_folder_loader() {
        let rel = "tests/fixtures/bart/models/tiny-c";
        let mem = load("tiny-c", folder(rel)).expect("load");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(rel);
        let disk = LoadedModel::load(&dir).expect("load");
        let text = "#Person1#: 안녕하세요. #Person2#: 네, 반갑습니다.";
        let ids = disk.tokenizer.encode(text, Some(512)).expect("encode");
        let want = disk.generate(&[ids], &disk.generation, false).expect("gen");
        let got =
            summarize(&mem, text, &SummarizeOptions::default(), &mut |_, _| {}).expect("summarize");
        assert_eq!(got["sequences"][0], json!(want[0][0].tokens));
    }

    /// Streamed tokens are exactly the greedy sequence, in order.
    #[test]
    fn llama_streams_its_greedy_tokens() {
        let m = load(
            "llama-tied",
            folder("tests/fixtures/llama/models/llama-tied"),
        )
        .expect("load");
        let mut seen = Vec::new();
        let got = summarize(
            &m,
            "hello there",
            &SummarizeOptions::default(),
            &mut |id, _| seen.push(id),
        )
        .expect("summarize");
        assert!(!seen.is_empty());
        assert_eq!(got["sequences"][0], json!(seen));
        assert_eq!(got["streamed"], json!(seen));
    }

    #[test]
    fn a_folder_missing_its_weights_is_a_clear_error() {
        let files: Vec<_> = folder("tests/fixtures/llama/models/llama-tied")
            .into_iter()
            .filter(|(n, _)| n != "model.safetensors")
            .collect();
        let e = load("llama-tied", files).err().expect("must fail");
        let msg = format!("{e:#}");
        assert!(
            msg.contains("model.safetensors") && msg.contains("missing"),
            "{msg}"
        );
    }

    #[test]
    fn dialogues_csv_needs_its_columns() {
        let ok = read_dialogues("d.csv", b"fname,dialogue\na,hello\n").expect("rows");
        assert_eq!(ok, json!([{"fname": "a", "dialogue": "hello"}]));
        let e = read_dialogues("d.csv", b"fname,summary\na,hello\n").expect_err("must fail");
        assert!(format!("{e:#}").contains("d.csv") && format!("{e:#}").contains("dialogue"));
    }

    #[test]
    fn garbage_gguf_is_a_clear_error() {
        let e = load(
            "x",
            vec![("x.gguf".into(), b"GGUF\x03\x00\x00\x00junk".to_vec())],
        )
        .err()
        .expect("must fail");
        assert!(format!("{e:#}").contains("x.gguf"), "{e:#}");
    }
}
