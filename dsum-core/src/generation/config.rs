//! `generation_config.json` and its resolution into concrete settings, with transformers'
//! precedence: explicit overrides > generation_config.json > config.json > library defaults.

use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};

/// `early_stopping`: true, false, or "never".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EarlyStopping {
    True,
    #[default]
    False,
    Never,
}

impl EarlyStopping {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "true" | "True" => Ok(EarlyStopping::True),
            "false" | "False" => Ok(EarlyStopping::False),
            "never" => Ok(EarlyStopping::Never),
            _ => Err(Error::Generation(format!(
                "early_stopping must be true, false or never, not `{s}`"
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for EarlyStopping {
    fn deserialize<D: Deserializer<'de>>(d: D) -> core::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            B(bool),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::B(true) => Ok(EarlyStopping::True),
            Raw::B(false) => Ok(EarlyStopping::False),
            Raw::S(s) => EarlyStopping::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// One id or a list of ids (`eos_token_id`, `forced_eos_token_id`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ids(pub Vec<u32>);

impl<'de> Deserialize<'de> for Ids {
    fn deserialize<D: Deserializer<'de>>(d: D) -> core::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(u32),
            Many(Vec<u32>),
        }
        Ok(Ids(match Raw::deserialize(d)? {
            Raw::One(x) => vec![x],
            Raw::Many(v) => v,
        }))
    }
}

/// Every generation setting dsum understands; `None` means "not set at this level".
#[derive(Clone, Debug, Default, Deserialize)]
pub struct GenerationConfig {
    pub max_length: Option<usize>,
    pub max_new_tokens: Option<usize>,
    pub min_length: Option<usize>,
    pub min_new_tokens: Option<usize>,
    pub num_beams: Option<usize>,
    pub num_return_sequences: Option<usize>,
    pub length_penalty: Option<f32>,
    pub early_stopping: Option<EarlyStopping>,
    pub no_repeat_ngram_size: Option<usize>,
    pub repetition_penalty: Option<f32>,
    pub bad_words_ids: Option<Vec<Vec<u32>>>,
    pub suppress_tokens: Option<Vec<u32>>,
    pub begin_suppress_tokens: Option<Vec<u32>>,
    pub forced_bos_token_id: Option<u32>,
    pub forced_eos_token_id: Option<Ids>,
    pub eos_token_id: Option<Ids>,
    pub pad_token_id: Option<u32>,
    pub bos_token_id: Option<u32>,
    pub decoder_start_token_id: Option<u32>,
    pub do_sample: Option<bool>,
}

macro_rules! fields {
    ($($f:ident),*) => {
        impl GenerationConfig {
            /// The settings dsum reads (transformers' names).
            pub const FIELDS: &'static [&'static str] = &[$(stringify!($f)),*];
            fn clear(&mut self, key: &str) {
                match key { $( stringify!($f) => self.$f = None, )* _ => {} }
            }

            /// Fields set in `other` replace ours.
            pub fn overlay(&mut self, other: &GenerationConfig) {
                $( if other.$f.is_some() { self.$f = other.$f.clone(); } )*
            }
        }
    };
}

fields!(
    max_length,
    max_new_tokens,
    min_length,
    min_new_tokens,
    num_beams,
    num_return_sequences,
    length_penalty,
    early_stopping,
    no_repeat_ngram_size,
    repetition_penalty,
    bad_words_ids,
    suppress_tokens,
    begin_suppress_tokens,
    forced_bos_token_id,
    forced_eos_token_id,
    eos_token_id,
    pad_token_id,
    bos_token_id,
    decoder_start_token_id,
    do_sample
);

impl GenerationConfig {
    pub fn from_json(text: &str, path: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| Error::config(path, format!("{e}")))
    }

    /// Apply a JSON object of transformers `generate` kwargs: a `null` value clears the
    /// setting (e.g. `"forced_bos_token_id": null` turns the processor off), unknown keys are
    /// an error so a typo is never silently ignored.
    pub fn apply_json(&mut self, kwargs: &serde_json::Value, what: &str) -> Result<()> {
        let obj = kwargs
            .as_object()
            .ok_or_else(|| Error::config(what, "generation settings must be a JSON object"))?;
        for (k, v) in obj {
            if !Self::FIELDS.contains(&k.as_str()) {
                return Err(Error::config(
                    what,
                    format!("unknown generation setting `{k}`"),
                ));
            }
            if v.is_null() {
                self.clear(k);
            } else {
                let mut one = serde_json::Map::new();
                one.insert(k.clone(), v.clone());
                let g: GenerationConfig = serde_json::from_value(serde_json::Value::Object(one))
                    .map_err(|e| Error::config(what, format!("`{k}`: {e}")))?;
                self.overlay(&g);
            }
        }
        Ok(())
    }

    /// Fill fields still unset from `other` (config.json's generation attributes).
    pub fn fill_from(&mut self, other: &GenerationConfig) {
        let mut base = other.clone();
        base.overlay(self);
        *self = base;
    }
}

/// Concrete settings for one `generate` call.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    /// Total decoder length (prompt included).
    pub max_length: usize,
    pub min_length: usize,
    pub min_new_tokens: usize,
    pub num_beams: usize,
    pub num_return_sequences: usize,
    pub length_penalty: f32,
    pub early_stopping: EarlyStopping,
    pub no_repeat_ngram_size: usize,
    pub repetition_penalty: f32,
    pub bad_words_ids: Vec<Vec<u32>>,
    pub suppress_tokens: Vec<u32>,
    pub begin_suppress_tokens: Vec<u32>,
    pub forced_bos_token_id: Option<u32>,
    pub forced_eos_token_id: Vec<u32>,
    pub eos_token_id: Vec<u32>,
    pub pad_token_id: u32,
    pub decoder_start_token_id: Option<u32>,
    pub prompt_len: usize,
}

/// Largest beam count accepted (real use is 1 to 16).
pub const MAX_BEAMS: usize = 1024;

/// transformers' default `max_length` (20): when it is left at that value the prompt is added.
const DEFAULT_MAX_LENGTH: usize = 20;

impl GenerationConfig {
    /// Resolve against the decoder prompt length, as `generate` does before decoding.
    /// `user_set_max_length`: max_length came from the caller, not from a file default.
    pub fn resolve(
        &self,
        prompt_len: usize,
        max_positions: Option<usize>,
        user_set_max_length: bool,
    ) -> Result<Resolved> {
        if self.do_sample == Some(true) {
            return Err(Error::Generation(
                "sampling (do_sample=true) is not supported; dsum decodes deterministically".into(),
            ));
        }
        let mut max_length = self.max_length.unwrap_or(DEFAULT_MAX_LENGTH);
        let too_big = |what: &str, n: usize| {
            Error::Generation(format!(
                "{what} {n} is too large (with a {prompt_len}-token prompt)"
            ))
        };
        if let Some(n) = self.max_new_tokens {
            max_length = n
                .checked_add(prompt_len)
                .ok_or_else(|| too_big("max_new_tokens", n))?;
        } else if !user_set_max_length && max_length == DEFAULT_MAX_LENGTH {
            max_length = max_length.saturating_add(prompt_len);
            if let Some(p) = max_positions {
                max_length = max_length.min(p);
            }
        }
        let mut min_length = self.min_length.unwrap_or(0);
        if let Some(n) = self.min_new_tokens {
            min_length = n
                .checked_add(prompt_len)
                .ok_or_else(|| too_big("min_new_tokens", n))?;
        }
        let num_beams = self.num_beams.unwrap_or(1);
        let num_return_sequences = self.num_return_sequences.unwrap_or(1);
        if num_beams == 0 {
            return Err(Error::Generation("num_beams must be at least 1".into()));
        }
        // Each beam holds a row of logits and a K/V cache: a huge count would abort on
        // allocation instead of failing with a message.
        if num_beams > MAX_BEAMS {
            return Err(Error::Generation(format!(
                "num_beams {num_beams} is over the supported {MAX_BEAMS}"
            )));
        }
        if num_return_sequences == 0 || num_return_sequences > num_beams {
            return Err(Error::Generation(format!(
                "num_return_sequences ({num_return_sequences}) must be between 1 and num_beams ({num_beams})"
            )));
        }
        let eos_token_id = self.eos_token_id.clone().map(|i| i.0).unwrap_or_default();
        let pad_token_id = match (self.pad_token_id, eos_token_id.first()) {
            (Some(p), _) => p,
            (None, Some(&e)) => e,
            (None, None) => 0,
        };
        let rp = self.repetition_penalty.unwrap_or(1.0);
        if rp.is_nan() || rp <= 0.0 {
            return Err(Error::Generation(format!(
                "repetition_penalty must be > 0, got {rp}"
            )));
        }
        let bad = self.bad_words_ids.clone().unwrap_or_default();
        if bad.iter().any(|w| w.is_empty()) {
            return Err(Error::Generation(
                "bad_words_ids must not contain an empty list".into(),
            ));
        }
        Ok(Resolved {
            max_length,
            min_length,
            min_new_tokens: self.min_new_tokens.unwrap_or(0),
            num_beams,
            num_return_sequences,
            length_penalty: self.length_penalty.unwrap_or(1.0),
            early_stopping: self.early_stopping.unwrap_or_default(),
            no_repeat_ngram_size: self.no_repeat_ngram_size.unwrap_or(0),
            repetition_penalty: rp,
            bad_words_ids: bad,
            suppress_tokens: self.suppress_tokens.clone().unwrap_or_default(),
            begin_suppress_tokens: self.begin_suppress_tokens.clone().unwrap_or_default(),
            forced_bos_token_id: self.forced_bos_token_id,
            forced_eos_token_id: self
                .forced_eos_token_id
                .clone()
                .map(|i| i.0)
                .unwrap_or_default(),
            eos_token_id,
            pad_token_id,
            decoder_start_token_id: self.decoder_start_token_id,
            prompt_len,
        })
    }
}
