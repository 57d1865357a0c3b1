//! A Hugging Face model folder: `config.json`, `generation_config.json` (optional),
//! `tokenizer.json` (+ `tokenizer_config.json`) and safetensors weights.

use std::path::{Path, PathBuf};

use super::bart::{Bart, BartConfig};
use super::llama::{Llama, LlamaConfig};
use crate::error::{Error, Result};
use crate::generation::GenerationConfig;
use crate::io::checkpoint::Checkpoint;
use crate::tokenizer::Tokenizer;

pub enum Model {
    Bart(Box<Bart>),
    Llama(Box<Llama>),
}

pub struct LoadedModel {
    pub dir: PathBuf,
    pub model: Model,
    pub tokenizer: Tokenizer,
    /// Defaults from generation_config.json (or config.json), special tokens filled in.
    pub generation: GenerationConfig,
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path.display().to_string(), e))
}

/// safetensors first; a folder with only `pytorch_model.bin` (+ index) goes through the
/// restricted unpickler.
fn open_weights(dir: &Path) -> Result<Checkpoint> {
    use crate::io::pytorch::{has_pytorch_weights, PtCheckpoint};
    let st = dir.join("model.safetensors").is_file()
        || dir.join("model.safetensors.index.json").is_file();
    if !st && has_pytorch_weights(dir) {
        return PtCheckpoint::open_dir(dir)?.into_checkpoint();
    }
    Checkpoint::open_dir(dir)
}

impl LoadedModel {
    /// Load a model folder, or a `.gguf` file (see [`LoadedModel::load_gguf`]).
    pub fn load(dir: &Path) -> Result<Self> {
        if dir.is_file()
            && dir
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            return Self::load_gguf(dir);
        }
        if !dir.is_dir() {
            return Err(Error::io(
                dir.display().to_string(),
                "not a folder (expected a model folder with config.json)",
            ));
        }
        let cfg_path = dir.join("config.json");
        let cfg_text = read(&cfg_path)?;
        let cfg_str = cfg_path.display().to_string();
        let raw: serde_json::Value = serde_json::from_str(&cfg_text)
            .map_err(|e| Error::config(cfg_str.clone(), format!("invalid JSON: {e}")))?;
        let model_type = raw.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
        // Generation attributes that config.json may carry (older checkpoints keep them there).
        let from_model = GenerationConfig::from_json(&cfg_text, &cfg_str)?;
        let gen_path = dir.join("generation_config.json");
        let mut generation = if gen_path.is_file() {
            let mut g =
                GenerationConfig::from_json(&read(&gen_path)?, &gen_path.display().to_string())?;
            let specials = GenerationConfig {
                eos_token_id: from_model.eos_token_id.clone(),
                pad_token_id: from_model.pad_token_id,
                bos_token_id: from_model.bos_token_id,
                decoder_start_token_id: from_model.decoder_start_token_id,
                ..Default::default()
            };
            g.fill_from(&specials);
            g
        } else {
            from_model
        };
        let model = match model_type {
            "bart" => {
                let config = BartConfig::from_json(&cfg_text, &cfg_str)?;
                let ck = open_weights(dir)?;
                Model::Bart(Box::new(Bart::load(config, &ck)?))
            }
            "llama" | "mistral" | "qwen2" | "qwen3" => {
                let config = LlamaConfig::from_json(&cfg_text, &cfg_str)?;
                let ck = open_weights(dir)?;
                Model::Llama(Box::new(Llama::load(config, &ck)?))
            }
            "" => return Err(Error::config(cfg_str, "missing `model_type`")),
            other => {
                return Err(Error::config(
                    cfg_str,
                    format!(
                    "model_type `{other}` is not supported (supported: bart, llama, qwen2, qwen3)"
                ),
                ))
            }
        };
        if matches!(model, Model::Bart(_)) && generation.decoder_start_token_id.is_none() {
            generation.decoder_start_token_id = generation.bos_token_id;
        }
        let tokenizer = Tokenizer::from_dir(dir)?;
        let vocab = match &model {
            Model::Bart(b) => b.vocab_size(),
            Model::Llama(m) => m.vocab_size(),
        };
        // A smaller tokenizer is fine (transformers pads embeddings), an id past the
        // embedding is not: refuse it here rather than on the first dialogue that uses it.
        if let Some(max) = tokenizer.max_id().filter(|&m| m as usize >= vocab) {
            return Err(Error::Tokenizer {
                path: dir.join("tokenizer.json").display().to_string(),
                message: format!(
                    "token id {max} is past the model's embedding (vocab_size is {vocab})"
                ),
            });
        }
        if tokenizer.vocab_size() > vocab {
            return Err(Error::Tokenizer {
                path: dir.join("tokenizer.json").display().to_string(),
                message: format!(
                    "the tokenizer has {} tokens but the model's vocab_size is {vocab}",
                    tokenizer.vocab_size()
                ),
            });
        }
        Ok(LoadedModel {
            dir: dir.to_path_buf(),
            model,
            tokenizer,
            generation,
        })
    }

    /// A Llama-family GGUF file: weights dequantized to f32, config and tokenizer rebuilt
    /// from the metadata as transformers does with `gguf_file=`; the metadata's
    /// `tokenizer.chat_template` is `self.tokenizer.chat_template`.
    pub fn load_gguf(path: &Path) -> Result<Self> {
        let g = crate::io::gguf::GgufFile::open(path)?;
        let m = crate::io::gguf::GgufModel::from_file(&g)?;
        Ok(LoadedModel {
            dir: path.to_path_buf(),
            model: Model::Llama(Box::new(m.model)),
            tokenizer: m.tokenizer,
            generation: m.generation,
        })
    }
}

impl LoadedModel {
    /// Generate for a batch of unpadded token rows with `gen` settings (already overlaid on
    /// `self.generation`). Returns, per row, its `num_return_sequences` hypotheses.
    pub fn generate(
        &self,
        rows: &[Vec<u32>],
        gen: &GenerationConfig,
        user_set_max_length: bool,
    ) -> Result<Vec<Vec<crate::generation::Hypothesis>>> {
        match &self.model {
            Model::Bart(m) => {
                let pad = gen.pad_token_id.unwrap_or(0);
                let batch = super::bart::EncoderBatch::from_rows(rows, pad);
                m.generate(&batch, gen, user_set_max_length)
            }
            Model::Llama(m) => m.generate(rows, gen, user_set_max_length),
        }
    }

    pub fn num_parameters(&self) -> usize {
        match &self.model {
            Model::Bart(m) => m.num_parameters(),
            Model::Llama(m) => m.num_parameters(),
        }
    }

    /// Longest encoder input the model accepts.
    pub fn max_input_tokens(&self) -> usize {
        match &self.model {
            Model::Bart(m) => m.max_positions(),
            Model::Llama(m) => m.config.max_position_embeddings,
        }
    }
}
