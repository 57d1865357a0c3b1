//! `tokenizer.json` through the `tokenizers` crate, plus the parts of transformers'
//! `PreTrainedTokenizerFast` that live outside it: truncation to a max length with the
//! post-processor's special tokens counted, and `clean_up_tokenization_spaces` on decode.

use tokenizers::{
    Tokenizer as HfTokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

use crate::error::{Error, Result};

/// A token's byte range in the encoded text.
pub type Span = (usize, usize);

pub struct Tokenizer {
    inner: HfTokenizer,
    path: String,
    clean_up_spaces: bool,
    /// `chat_template` of tokenizer_config.json (the default one when it lists several).
    pub chat_template: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
}

/// A special token in tokenizer_config.json: a string or an AddedToken object.
fn token_str(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(String::from),
        _ => None,
    }
}

/// `chat_template` is a string, or a list of `{name, template}` where `default` wins.
fn chat_template_of(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(a) => {
            let named = |n: &str| {
                a.iter()
                    .find(|t| t.get("name").and_then(|x| x.as_str()) == Some(n))
            };
            named("default")
                .or_else(|| a.first())?
                .get("template")?
                .as_str()
                .map(String::from)
        }
        _ => None,
    }
}

impl Tokenizer {
    /// `json` is the content of tokenizer.json; `config` of tokenizer_config.json, if any.
    pub fn from_json(json: &[u8], config: Option<&str>, path: &str) -> Result<Self> {
        check_untrusted(json).map_err(|message| Error::Tokenizer {
            path: path.into(),
            message,
        })?;
        let inner = HfTokenizer::from_bytes(json).map_err(|e| Error::Tokenizer {
            path: path.into(),
            message: e.to_string(),
        })?;
        let mut t = Tokenizer {
            inner,
            path: path.into(),
            clean_up_spaces: false,
            chat_template: None,
            bos_token: None,
            eos_token: None,
        };
        if let Some(cfg) = config {
            let v: serde_json::Value = serde_json::from_str(cfg).map_err(|e| Error::Tokenizer {
                path: path.into(),
                message: format!("tokenizer_config.json: {e}"),
            })?;
            t.clean_up_spaces = v
                .get("clean_up_tokenization_spaces")
                .and_then(|b| b.as_bool())
                .unwrap_or(false);
            t.chat_template = chat_template_of(v.get("chat_template"));
            t.bos_token = token_str(v.get("bos_token"));
            t.eos_token = token_str(v.get("eos_token"));
        }
        Ok(t)
    }

    #[cfg(feature = "std")]
    pub fn from_dir(dir: &std::path::Path) -> Result<Self> {
        let p = dir.join("tokenizer.json");
        let json = std::fs::read(&p).map_err(|e| Error::io(p.display().to_string(), e))?;
        let cp = dir.join("tokenizer_config.json");
        let cfg = if cp.is_file() {
            Some(std::fs::read_to_string(&cp).map_err(|e| Error::io(cp.display().to_string(), e))?)
        } else {
            None
        };
        Self::from_json(&json, cfg.as_deref(), &p.display().to_string())
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The largest id the tokenizer can produce (added tokens may sit far past the base
    /// vocabulary); the model's embedding must have a row for it.
    pub fn max_id(&self) -> Option<u32> {
        self.inner.get_vocab(true).into_values().max()
    }

    /// The file the chat template was read from: tokenizer_config.json beside
    /// tokenizer.json, or the file itself (a .gguf) when the tokenizer came from one.
    pub fn chat_template_origin(&self) -> String {
        match self.path.strip_suffix("tokenizer.json") {
            Some(dir) => format!("{dir}tokenizer_config.json"),
            None => self.path.clone(),
        }
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// `tokenizer(text, max_length=.., truncation=True)["input_ids"]`: special tokens of the
    /// post-processor added, the text truncated on the right so the total fits.
    pub fn encode(&self, text: &str, max_length: Option<usize>) -> Result<Vec<u32>> {
        let err = |e: tokenizers::Error| Error::Tokenizer {
            path: self.path.clone(),
            message: e.to_string(),
        };
        let enc = match max_length {
            None => self.inner.encode(text, true).map_err(err)?,
            Some(max) => {
                let mut t = self.inner.clone();
                t.with_truncation(Some(TruncationParams {
                    max_length: max,
                    strategy: TruncationStrategy::LongestFirst,
                    stride: 0,
                    direction: TruncationDirection::Right,
                }))
                .map_err(err)?;
                t.encode(text, true).map_err(err)?
            }
        };
        Ok(enc.get_ids().to_vec())
    }

    /// `tokenizer(text, add_special_tokens=False)["input_ids"]`, e.g. for a rendered chat
    /// prompt that already holds its special tokens.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// `encode_plain` with each token's byte span in `text` (`return_offsets_mapping`), for
    /// cutting a text at a token boundary.
    pub fn encode_plain_offsets(&self, text: &str) -> Result<(Vec<u32>, Vec<Span>)> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
    }

    /// Ids of added tokens flagged special (`<s>`, `<|im_end|>`, ...).
    pub fn special_ids(&self) -> Vec<u32> {
        self.inner
            .get_added_tokens_decoder()
            .iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The raw bytes token `id` stands for: byte-level BPE tokens mapped back through the
    /// GPT-2 byte alphabet, `<0xNN>` byte-fallback tokens to their byte, sentencepiece `▁`
    /// to a space. `None` for unknown ids.
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        let tok = self.inner.id_to_token(id)?;
        if tok.len() == 6 && tok.starts_with("<0x") && tok.ends_with('>') {
            if let Ok(b) = u8::from_str_radix(&tok[3..5], 16) {
                return Some(vec![b]);
            }
        }
        let byte_level = matches!(
            self.inner.get_decoder(),
            Some(tokenizers::DecoderWrapper::ByteLevel(_))
        );
        let is_added = self.inner.get_added_tokens_decoder().contains_key(&id);
        if byte_level && !is_added {
            let inv = byte_level_inverse();
            if let Some(bytes) = tok
                .chars()
                .map(|c| inv.get(&c).copied())
                .collect::<Option<Vec<u8>>>()
            {
                return Some(bytes);
            }
        }
        Some(tok.replace('\u{2581}', " ").into_bytes())
    }

    /// `tokenizer.decode(ids, skip_special_tokens=..)`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let s = self
            .inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        Ok(if self.clean_up_spaces {
            clean_up_tokenization(&s)
        } else {
            s
        })
    }
}

/// What the `tokenizers` crate's deserializer would panic on instead of erroring (found by
/// fuzzing 0.22): JSON syntax errors inside `decoder` (`.expect("Helper")`), and the
/// `Precompiled` normalizer, whose sentencepiece charsmap is trusted blindly (an unchecked
/// allocation size, unchecked trie indices). No model family dsum runs uses `Precompiled`.
fn check_untrusted(json: &[u8]) -> core::result::Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("invalid JSON: {e}"))?;
    fn has_precompiled(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Object(o) => {
                o.get("type").and_then(|t| t.as_str()) == Some("Precompiled")
                    || o.values().any(has_precompiled)
            }
            serde_json::Value::Array(a) => a.iter().any(has_precompiled),
            _ => false,
        }
    }
    if v.get("normalizer").is_some_and(has_precompiled) {
        return Err(
            "the `Precompiled` normalizer (a sentencepiece charsmap) is not supported".into(),
        );
    }
    if let Some(p) = v.get("post_processor") {
        check_template_processing(p)?;
    }
    Ok(())
}

/// `TemplateProcessing` is deserialized without the checks its builder makes, and encoding then
/// panics on what they would have refused: a special token the template names but
/// `special_tokens` lacks, sequence B in the single-sequence template, or a special token whose
/// `ids` and `tokens` differ in length.
fn check_template_processing(p: &serde_json::Value) -> core::result::Result<(), String> {
    use serde_json::Value;
    if let Some(Value::Array(ps)) = p.get("processors") {
        return ps.iter().try_for_each(check_template_processing);
    }
    if p.get("type").and_then(Value::as_str) != Some("TemplateProcessing") {
        return Ok(());
    }
    let specials = p.get("special_tokens").and_then(Value::as_object);
    for (name, t) in specials.into_iter().flatten() {
        let len = |k: &str| t.get(k).and_then(Value::as_array).map(|a| a.len());
        if len("ids") != len("tokens") {
            return Err(format!(
                "post_processor special token {name:?}: `ids` and `tokens` differ in length"
            ));
        }
    }
    for key in ["single", "pair"] {
        for piece in p.get(key).and_then(Value::as_array).into_iter().flatten() {
            if let Some(id) = piece
                .get("SpecialToken")
                .and_then(|t| t.get("id"))
                .and_then(Value::as_str)
            {
                if !specials.is_some_and(|m| m.contains_key(id)) {
                    return Err(format!(
                        "post_processor template `{key}` uses special token {id:?}, which is not \
                         in its `special_tokens`"
                    ));
                }
            }
            let seq = piece
                .get("Sequence")
                .and_then(|t| t.get("id"))
                .and_then(Value::as_str);
            if key == "single" && seq == Some("B") {
                return Err("post_processor template `single` uses sequence B".into());
            }
        }
    }
    Ok(())
}

/// GPT-2's byte-to-unicode alphabet, inverted: printable bytes map to themselves, the others
/// to U+0100 upwards in byte order.
fn byte_level_inverse() -> std::collections::HashMap<char, u8> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut map = std::collections::HashMap::new();
    let mut extra = 0u32;
    for b in 0u32..256 {
        let c = if printable.contains(&b) {
            b
        } else {
            extra += 1;
            255 + extra
        };
        if let Some(ch) = char::from_u32(c) {
            map.insert(ch, b as u8);
        }
    }
    map
}

/// transformers' `clean_up_tokenization`: drop spaces before punctuation and English contractions.
pub fn clean_up_tokenization(s: &str) -> String {
    s.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}
