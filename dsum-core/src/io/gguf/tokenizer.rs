//! A tokenizers-crate `tokenizer.json` rebuilt from GGUF metadata the way transformers
//! 4.57 does it (`integrations/ggml.py`: `GGUFTokenizerSkeleton`, `GGUFLlamaConverter`,
//! `GGUFQwen2Converter`, then `LlamaTokenizerFast` / `Qwen2TokenizerFast` init), so ids equal
//! those of `AutoTokenizer.from_pretrained(dir, gguf_file=...)`.
//!
//! transformers picks the converter by architecture, not by `tokenizer.ggml.model`:
//! - `llama`/`mistral` + `llama` model (SentencePiece): BPE over the pieces with merges
//!   rebuilt from the scores, byte fallback, `▁` normalizer, `<bos>` prepended.
//! - `llama`/`mistral` + `gpt2` model (Llama-3, SmolLM2): the same BPE settings over the
//!   byte-level vocabulary and the file's merges, GPT-2 byte-level pre-tokenizer, and the
//!   *bos* token prepended (transformers ignores `tokenizer.ggml.add_bos_token`).
//! - `qwen2`/`qwen3`: transformers' Qwen2 tokenizer (NFC, Qwen regex, byte-level) over the
//!   file's vocabulary and merges, `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` special.
//!
//! `tokenizer.ggml.pre` is not used: transformers ignores it too (each converter has one
//! fixed pre-tokenizer).

use std::collections::{HashMap, HashSet};
use std::format;
use std::string::{String, ToString};
use std::vec::Vec;

use serde_json::{json, Map, Value as Json};

use super::GgufFile;
use crate::error::{Error, Result};

/// `tokenizer.ggml.token_type` value of control (special) tokens.
const CONTROL: i64 = 3;

const QWEN_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// What the tokenizer metadata says, plus what transformers derives from it.
#[derive(Clone, Debug)]
pub struct GgufTokenizer {
    /// The tokenizer.json text.
    pub json: String,
    /// A tokenizer_config.json for [`crate::tokenizer::Tokenizer::from_json`]
    /// (`clean_up_tokenization_spaces`, special tokens, `chat_template`).
    pub config: String,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
    pub unk_token_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token` as written in the file (informational: transformers
    /// ignores it and prepends bos for Llama-architecture files).
    pub add_bos_token: Option<bool>,
    /// `tokenizer.ggml.pre` as written in the file.
    pub pre: Option<String>,
    pub chat_template: Option<String>,
}

struct Meta<'a> {
    g: &'a GgufFile,
}

impl Meta<'_> {
    fn err(&self, m: String) -> Error {
        Error::Tokenizer {
            path: self.g.path.clone(),
            message: m,
        }
    }
    fn strings(&self, key: &str) -> Result<Option<Vec<String>>> {
        let Some(v) = self.g.get(key) else {
            return Ok(None);
        };
        let a = v
            .as_array()
            .ok_or_else(|| self.err(format!("metadata `{key}` should be an array of strings")))?;
        a.iter()
            .map(|x| {
                x.as_str()
                    .map(|s| s.to_string())
                    .ok_or_else(|| self.err(format!("metadata `{key}` holds a non-string")))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }
    fn numbers(&self, key: &str) -> Result<Option<Vec<f64>>> {
        let Some(v) = self.g.get(key) else {
            return Ok(None);
        };
        let a = v
            .as_array()
            .ok_or_else(|| self.err(format!("metadata `{key}` should be an array of numbers")))?;
        a.iter()
            .map(|x| {
                x.as_f64()
                    .ok_or_else(|| self.err(format!("metadata `{key}` holds a non-number")))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }
    fn id(&self, key: &str, n_tokens: usize) -> Result<Option<u32>> {
        match self.g.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(i) if (i as usize) < n_tokens => Ok(Some(i as u32)),
                _ => Err(self.err(format!(
                    "metadata `{key}` = {v:?} is not a token id (the vocabulary has {n_tokens} tokens)"
                ))),
            },
        }
    }
}

fn added(id: usize, content: &str) -> Json {
    json!({
        "id": id, "content": content, "single_word": false, "lstrip": false,
        "rstrip": false, "normalized": false, "special": true
    })
}

fn bos_template(bos: &str, bos_id: u32) -> Json {
    json!({
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            {"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
            {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}
        ],
        "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}
    })
}

/// `GGUFTokenizerSkeleton`'s merges for a SentencePiece vocabulary without merges: every
/// split of every piece into two known pieces, ranked by the piece's score (stable sorts,
/// as Python's `sorted(..., reverse=True)`).
pub fn merges_from_scores(tokens: &[String], scores: &[f64]) -> Vec<(String, String)> {
    // Python's dict keeps the last score of a duplicated token.
    let mut score: HashMap<&str, f64> = HashMap::new();
    for (t, &s) in tokens.iter().zip(scores) {
        score.insert(t.as_str(), s);
    }
    let known: HashSet<&str> = tokens.iter().map(|t| t.as_str()).collect();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut merges: Vec<(&str, &str, f64)> = Vec::new();
    for t in tokens {
        // dict iteration: each distinct key once, at its first position.
        if !seen.insert(t.as_str()) {
            continue;
        }
        let piece_score = score.get(t.as_str()).copied().unwrap_or(0.0);
        let mut local: Vec<(&str, &str, f64)> = Vec::new();
        for (i, _) in t.char_indices().skip(1) {
            let (l, r) = t.split_at(i);
            if known.contains(l) && known.contains(r) {
                local.push((l, r, piece_score));
            }
        }
        local.sort_by(|a, b| {
            let sc = |t: &str| score.get(t).copied().unwrap_or(0.0);
            let (ka, kb) = ((sc(a.0), sc(a.1)), (sc(b.0), sc(b.1)));
            kb.partial_cmp(&ka).unwrap_or(core::cmp::Ordering::Equal)
        });
        merges.extend(local);
    }
    merges.sort_by(|a, b| b.2.partial_cmp(&a.2).unwrap_or(core::cmp::Ordering::Equal));
    merges
        .into_iter()
        .map(|(l, r, _)| (l.to_string(), r.to_string()))
        .collect()
}

/// Rebuild the tokenizer of a Llama-family GGUF file.
pub fn from_gguf(g: &GgufFile) -> Result<GgufTokenizer> {
    let m = Meta { g };
    let arch = g.get_str("general.architecture")?;
    let model = g
        .get("tokenizer.ggml.model")
        .and_then(|v| v.as_str())
        .ok_or_else(|| m.err("metadata `tokenizer.ggml.model` is missing".into()))?
        .to_string();
    let tokens = m
        .strings("tokenizer.ggml.tokens")?
        .ok_or_else(|| m.err("metadata `tokenizer.ggml.tokens` is missing".into()))?;
    let n = tokens.len();
    let scores = m.numbers("tokenizer.ggml.scores")?;
    let types = m.numbers("tokenizer.ggml.token_type")?;
    for (k, len) in [
        ("scores", scores.as_ref().map(|s| s.len())),
        ("token_type", types.as_ref().map(|s| s.len())),
    ] {
        if let Some(len) = len {
            if len != n {
                return Err(m.err(format!(
                    "metadata `tokenizer.ggml.{k}` has {len} entries for {n} tokens"
                )));
            }
        }
    }
    let file_merges = m.strings("tokenizer.ggml.merges")?;
    let bos = m.id("tokenizer.ggml.bos_token_id", n)?;
    let eos = m.id("tokenizer.ggml.eos_token_id", n)?;
    let unk = m.id("tokenizer.ggml.unknown_token_id", n)?;
    let pad = m.id("tokenizer.ggml.padding_token_id", n)?;
    let add_prefix_space = g
        .get("tokenizer.ggml.add_space_prefix")
        .and_then(|v| v.as_bool())
        .unwrap_or(true);
    let tok = |i: Option<u32>| i.map(|i| tokens[i as usize].clone());

    let merges: Vec<(String, String)> = match &file_merges {
        Some(ms) => ms
            .iter()
            .map(|s| match s.split_once(' ') {
                // Python's `merge.split(" ")` into a 2-tuple: more spaces would fail there.
                Some((a, b)) if !b.contains(' ') => Ok((a.to_string(), b.to_string())),
                _ => Err(m.err(format!(
                    "merge `{s}` is not two tokens separated by a space"
                ))),
            })
            .collect::<Result<_>>()?,
        None => {
            let s = scores.as_ref().ok_or_else(|| {
                m.err("the metadata has neither merges nor scores to rebuild them from".into())
            })?;
            merges_from_scores(&tokens, s)
        }
    };
    let mut vocab = Map::new();
    for (i, t) in tokens.iter().enumerate() {
        vocab.insert(t.clone(), json!(i)); // later duplicates win, as in the Python dict
    }
    let merges_json: Vec<Json> = merges.iter().map(|(a, b)| json!([a, b])).collect();

    let (tokenizer, config) = match arch {
        "llama" | "mistral" => {
            let llama3 = model != "llama";
            let unk_tok = tok(unk);
            // transformers' converter reads the eos *string* from bos_token_id, and hands
            // bos and eos over swapped: both end up as the bos token.
            let bos_tok = tok(bos);
            let eos_tok = if eos.is_some() { tok(bos) } else { None };
            let mut specials: Vec<u32> = Vec::new();
            match &types {
                Some(ty) => specials.extend(
                    ty.iter()
                        .enumerate()
                        .filter(|(_, &t)| t as i64 == CONTROL)
                        .map(|(i, _)| i as u32),
                ),
                None => specials.extend([unk, bos, eos.and(bos)].into_iter().flatten()),
            }
            // LlamaTokenizerFast adds its unk/bos/eos tokens as special tokens too.
            specials.extend([unk, eos.and(bos), bos].into_iter().flatten());
            let mut added_tokens = Vec::new();
            let mut done = HashSet::new();
            for id in specials {
                let content = &tokens[id as usize];
                // An added token string maps to its vocabulary id (the last duplicate).
                let vid = vocab
                    .get(content.as_str())
                    .and_then(|v| v.as_u64())
                    .unwrap_or(id as u64) as usize;
                if done.insert(vid) {
                    added_tokens.push((vid, content.clone()));
                }
            }
            added_tokens.sort();
            let model_json = json!({
                "type": "BPE", "dropout": null, "unk_token": unk_tok,
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                "vocab": vocab, "merges": merges_json
            });
            let mut decoders = vec![
                json!({"type": "ByteFallback"}),
                json!({"type": "Fuse"}),
                json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
            ];
            if llama3 {
                decoders.push(json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}));
            }
            if add_prefix_space {
                decoders
                    .push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
            }
            let (normalizer, pre) = if llama3 {
                (
                    json!({"type": "Sequence", "normalizers": []}),
                    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true}),
                )
            } else {
                let mut ns = Vec::new();
                if add_prefix_space {
                    ns.push(json!({"type": "Prepend", "prepend": "\u{2581}"}));
                }
                ns.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}));
                (json!({"type": "Sequence", "normalizers": ns}), Json::Null)
            };
            let post = match (&bos_tok, bos) {
                (Some(b), Some(id)) => {
                    let vid = vocab
                        .get(b.as_str())
                        .and_then(|v| v.as_u64())
                        .unwrap_or(id as u64) as u32;
                    bos_template(b, vid)
                }
                _ => Json::Null,
            };
            let t = json!({
                "version": "1.0", "truncation": null, "padding": null,
                "added_tokens": added_tokens.iter().map(|(i, c)| added(*i, c)).collect::<Vec<_>>(),
                "normalizer": normalizer, "pre_tokenizer": pre, "post_processor": post,
                "decoder": {"type": "Sequence", "decoders": decoders},
                "model": model_json
            });
            let cfg = json!({
                "clean_up_tokenization_spaces": llama3,
                "bos_token": bos_tok, "eos_token": eos_tok, "unk_token": unk_tok,
                "add_bos_token": true
            });
            (t, cfg)
        }
        "qwen2" | "qwen3" => {
            let mut next = n;
            let mut added_tokens = Vec::new();
            for s in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] {
                let id = match vocab.get(s).and_then(|v| v.as_u64()) {
                    Some(i) => i as usize,
                    None => {
                        next += 1;
                        next - 1
                    }
                };
                added_tokens.push(added(id, s));
            }
            let model_json = json!({
                "type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": "", "end_of_word_suffix": "",
                "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": merges_json
            });
            let t = json!({
                "version": "1.0", "truncation": null, "padding": null,
                "added_tokens": added_tokens,
                "normalizer": {"type": "NFC"},
                "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": QWEN_PATTERN}, "behavior": "Isolated", "invert": false},
                    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
                ]},
                "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
                "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
                "model": model_json
            });
            let cfg = json!({
                "clean_up_tokenization_spaces": false,
                "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": null,
                "bos_token": null
            });
            (t, cfg)
        }
        other => {
            return Err(m.err(format!(
                "no tokenizer conversion for architecture `{other}` (supported: llama, mistral, qwen2, qwen3)"
            )))
        }
    };
    let chat_template = super::hf::chat_template(g);
    let mut config = config;
    if let (Some(t), Some(obj)) = (&chat_template, config.as_object_mut()) {
        obj.insert("chat_template".into(), json!(t));
    }
    Ok(GgufTokenizer {
        json: tokenizer.to_string(),
        config: config.to_string(),
        bos_token_id: bos,
        eos_token_id: eos,
        pad_token_id: pad,
        unk_token_id: unk,
        add_bos_token: g
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.as_bool()),
        pre: g
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.as_str())
            .map(|s| s.to_string()),
        chat_template,
    })
}
