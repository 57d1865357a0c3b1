//! Generation flags shared by `summarize` and `generate`: transformers' `generate` kwarg
//! names in kebab case, turned into the same JSON kwargs object the parity tests use.

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

/// Declares a verb's argument struct with the generation flags appended.
macro_rules! with_generation_flags {
    ($(#[$m:meta])* pub struct $name:ident { $($body:tt)* }) => {
        $(#[$m])*
        pub struct $name {
            $($body)*
            /// beam count (`num_beams`); 1 is greedy
            #[argh(option)]
            pub num_beams: Option<usize>,
            /// new tokens at most (`max_new_tokens`)
            #[argh(option)]
            pub max_new_tokens: Option<usize>,
            /// new tokens at least before eos is allowed (`min_new_tokens`)
            #[argh(option)]
            pub min_new_tokens: Option<usize>,
            /// total decoder length at most, start token included (`max_length`)
            #[argh(option)]
            pub max_length: Option<usize>,
            /// total decoder length at least (`min_length`)
            #[argh(option)]
            pub min_length: Option<usize>,
            /// forbid repeating n-grams of this size (`no_repeat_ngram_size`)
            #[argh(option)]
            pub no_repeat_ngram_size: Option<usize>,
            /// exponent of the length normalization in beam search (`length_penalty`)
            #[argh(option)]
            pub length_penalty: Option<f32>,
            /// beam stopping rule: true, false or never (`early_stopping`)
            #[argh(option)]
            pub early_stopping: Option<String>,
            /// sequences returned per input (`num_return_sequences`)
            #[argh(option)]
            pub num_return_sequences: Option<usize>,
            /// penalty on tokens already generated (`repetition_penalty`)
            #[argh(option)]
            pub repetition_penalty: Option<f32>,
            /// token ids never generated, comma separated (`suppress_tokens`)
            #[argh(option)]
            pub suppress_tokens: Option<String>,
            /// token sequences never generated, JSON like '[[12],[40,41]]' (`bad_words_ids`)
            #[argh(option)]
            pub bad_words_ids: Option<String>,
            /// end-of-sequence ids, comma separated (`eos_token_id`)
            #[argh(option)]
            pub eos_token_id: Option<String>,
            /// first decoder token (`decoder_start_token_id`)
            #[argh(option)]
            pub decoder_start_token_id: Option<u32>,
            /// token forced after the start token, or `none` (`forced_bos_token_id`)
            #[argh(option)]
            pub forced_bos_token_id: Option<String>,
            /// token(s) forced at max length, comma separated, or `none` (`forced_eos_token_id`)
            #[argh(option)]
            pub forced_eos_token_id: Option<String>,
            /// a JSON file of generation settings applied before these flags
            #[argh(option)]
            pub generation_config: Option<std::path::PathBuf>,
            /// only let the model write these scripts, e.g. hangul,latin,digits,punct (builds suppress_tokens)
            #[argh(option)]
            pub allow_scripts: Option<String>,
            /// causal LMs: prompt defaults, ko (Korean instruction, the default) or en
            #[argh(option)]
            pub prompt_preset: Option<String>,
            /// causal LMs: system prompt (default: from --prompt-preset; "" for none)
            #[argh(option)]
            pub system_prompt: Option<String>,
            /// causal LMs: user message template containing {dialogue}
            #[argh(option)]
            pub prompt_template: Option<String>,
            /// causal LMs: plain prompt text instead of the model's chat template
            #[argh(switch)]
            pub no_chat_template: bool,
            /// causal LMs: extra chat-template variables as JSON, e.g. '{"enable_thinking": false}'
            #[argh(option)]
            pub template_kwargs: Option<String>,
            /// GGUF: decode all weights to f32 at load instead of reading Q4_0/Q4_1/Q8_0 quantized (same values, 4-7x the memory, slower)
            #[argh(switch)]
            pub dequantize: bool,
            /// where the model runs: cpu (default), cuda (GPU 0) or cuda:N
            #[argh(option)]
            pub device: Option<String>,
            /// CUDA: TF32 tensor-core matmuls for f32 weights (faster; results no longer match the CPU exactly)
            #[argh(switch)]
            pub tf32: bool,
        }

        impl $name {
            /// `--dequantize`, `--device`, `--tf32`.
            pub fn load_options(&self) -> anyhow::Result<dsum_core::models::LoadOptions> {
                $crate::cmd::common::load_options(self.dequantize, self.device.as_deref(), self.tf32)
            }

            pub fn prompt_flags(&self) -> $crate::cmd::gen_flags::PromptFlags<'_> {
                $crate::cmd::gen_flags::PromptFlags {
                    allow_scripts: self.allow_scripts.as_deref(),
                    prompt_preset: self.prompt_preset.as_deref(),
                    system_prompt: self.system_prompt.as_deref(),
                    prompt_template: self.prompt_template.as_deref(),
                    no_chat_template: self.no_chat_template,
                    template_kwargs: self.template_kwargs.as_deref(),
                }
            }

            pub fn generation_kwargs(&self) -> anyhow::Result<serde_json::Value> {
                $crate::cmd::gen_flags::build(&$crate::cmd::gen_flags::Flags {
                    num_beams: self.num_beams,
                    max_new_tokens: self.max_new_tokens,
                    min_new_tokens: self.min_new_tokens,
                    max_length: self.max_length,
                    min_length: self.min_length,
                    no_repeat_ngram_size: self.no_repeat_ngram_size,
                    length_penalty: self.length_penalty,
                    early_stopping: self.early_stopping.as_deref(),
                    num_return_sequences: self.num_return_sequences,
                    repetition_penalty: self.repetition_penalty,
                    suppress_tokens: self.suppress_tokens.as_deref(),
                    bad_words_ids: self.bad_words_ids.as_deref(),
                    eos_token_id: self.eos_token_id.as_deref(),
                    decoder_start_token_id: self.decoder_start_token_id,
                    forced_bos_token_id: self.forced_bos_token_id.as_deref(),
                    forced_eos_token_id: self.forced_eos_token_id.as_deref(),
                    generation_config: self.generation_config.as_deref(),
                })
            }
        }
    };
}
pub(crate) use with_generation_flags;

/// Flags about prompts and output scripts (causal LMs), shared like the generation flags.
pub struct PromptFlags<'a> {
    pub allow_scripts: Option<&'a str>,
    pub prompt_preset: Option<&'a str>,
    pub system_prompt: Option<&'a str>,
    pub prompt_template: Option<&'a str>,
    pub no_chat_template: bool,
    pub template_kwargs: Option<&'a str>,
}

pub struct Flags<'a> {
    pub num_beams: Option<usize>,
    pub max_new_tokens: Option<usize>,
    pub min_new_tokens: Option<usize>,
    pub max_length: Option<usize>,
    pub min_length: Option<usize>,
    pub no_repeat_ngram_size: Option<usize>,
    pub length_penalty: Option<f32>,
    pub early_stopping: Option<&'a str>,
    pub num_return_sequences: Option<usize>,
    pub repetition_penalty: Option<f32>,
    pub suppress_tokens: Option<&'a str>,
    pub bad_words_ids: Option<&'a str>,
    pub eos_token_id: Option<&'a str>,
    pub decoder_start_token_id: Option<u32>,
    pub forced_bos_token_id: Option<&'a str>,
    pub forced_eos_token_id: Option<&'a str>,
    pub generation_config: Option<&'a std::path::Path>,
}

fn id_list(flag: &str, s: &str) -> Result<Value> {
    let ids: Result<Vec<u32>> = s
        .split(',')
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<u32>()
                .with_context(|| format!("--{flag}: `{t}` is not a token id"))
        })
        .collect();
    Ok(json!(ids?))
}

fn none_or_ids(flag: &str, s: &str) -> Result<Value> {
    if s.eq_ignore_ascii_case("none") {
        Ok(Value::Null)
    } else {
        id_list(flag, s)
    }
}

/// The kwargs object: `--generation-config` file first, then each flag given.
pub fn build(f: &Flags) -> Result<Value> {
    let mut m = Map::new();
    if let Some(p) = f.generation_config {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: invalid JSON", p.display()))?;
        match v {
            Value::Object(o) => m.extend(o),
            _ => bail!("{}: generation settings must be a JSON object", p.display()),
        }
    }
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    if let Some(v) = f.num_beams {
        put("num_beams", json!(v));
    }
    if let Some(v) = f.max_new_tokens {
        put("max_new_tokens", json!(v));
    }
    if let Some(v) = f.min_new_tokens {
        put("min_new_tokens", json!(v));
    }
    if let Some(v) = f.max_length {
        put("max_length", json!(v));
    }
    if let Some(v) = f.min_length {
        put("min_length", json!(v));
    }
    if let Some(v) = f.no_repeat_ngram_size {
        put("no_repeat_ngram_size", json!(v));
    }
    if let Some(v) = f.length_penalty {
        put("length_penalty", json!(v));
    }
    if let Some(v) = f.early_stopping {
        let v = match v {
            "true" => json!(true),
            "false" => json!(false),
            "never" => json!("never"),
            other => bail!("--early-stopping must be true, false or never, not `{other}`"),
        };
        put("early_stopping", v);
    }
    if let Some(v) = f.num_return_sequences {
        put("num_return_sequences", json!(v));
    }
    if let Some(v) = f.repetition_penalty {
        put("repetition_penalty", json!(v));
    }
    if let Some(v) = f.suppress_tokens {
        put("suppress_tokens", id_list("suppress-tokens", v)?);
    }
    if let Some(v) = f.bad_words_ids {
        let parsed: Vec<Vec<u32>> = serde_json::from_str(v)
            .context("--bad-words-ids must be JSON like '[[12],[40,41]]'")?;
        put("bad_words_ids", json!(parsed));
    }
    if let Some(v) = f.eos_token_id {
        put("eos_token_id", id_list("eos-token-id", v)?);
    }
    if let Some(v) = f.decoder_start_token_id {
        put("decoder_start_token_id", json!(v));
    }
    if let Some(v) = f.forced_bos_token_id {
        let v = none_or_ids("forced-bos-token-id", v)?;
        let v = match v {
            Value::Array(a) if a.len() == 1 => a[0].clone(),
            Value::Null => Value::Null,
            _ => bail!("--forced-bos-token-id takes one token id or `none`"),
        };
        put("forced_bos_token_id", v);
    }
    if let Some(v) = f.forced_eos_token_id {
        put(
            "forced_eos_token_id",
            none_or_ids("forced-eos-token-id", v)?,
        );
    }
    Ok(Value::Object(m))
}
