//! A Hugging Face model folder: `config.json`, `generation_config.json` (optional),
//! `tokenizer.json` (+ `tokenizer_config.json`) and safetensors weights.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::bart::{Bart, BartConfig};
use super::llama::{Llama, LlamaConfig};
use crate::backend::{Cuda, Device};
use crate::error::{Error, Result};
use crate::generation::GenerationConfig;
use crate::io::checkpoint::Checkpoint;
use crate::tensor::SharedBytes;
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

/// How to load a model.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// GGUF: decode every tensor to f32 at load instead of reading Q4_0 / Q4_1 / Q8_0
    /// matrices quantized (the same values; 4-7x the memory, decoding several times slower).
    pub dequantize: bool,
    /// Where the model computes (`--device`).
    pub device: Device,
    /// CUDA: TF32 tensor-core matmuls for f32 weights (faster, no longer bit-exact).
    pub tf32: bool,
}

impl LoadOptions {
    /// The CUDA device to load onto, opened (None: the CPU). Done before any weight is read,
    /// so a missing driver or a build without CUDA fails at once.
    fn open_device(&self) -> Result<Option<Cuda>> {
        match self.device {
            Device::Cpu => Ok(None),
            Device::Cuda(n) => Cuda::open(n).map(|c| Some(c.with_tf32(self.tf32))),
        }
    }
}

impl LoadedModel {
    /// Load a model folder, or a `.gguf` file (see [`LoadedModel::load_gguf`]).
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_with(dir, LoadOptions::default(), Ok)
    }

    /// [`LoadedModel::load`] with options, and the folder's checkpoint passed through
    /// `transform` first: a LoRA adapter merged in, or the weights of a model being trained.
    pub fn load_with(
        dir: &Path,
        opts: LoadOptions,
        transform: impl FnOnce(Checkpoint) -> Result<Checkpoint>,
    ) -> Result<Self> {
        if dir.is_file()
            && dir
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            return Self::load_gguf_with(dir, opts);
        }
        if !dir.is_dir() {
            return Err(Error::io(
                dir.display().to_string(),
                "not a folder (expected a model folder with config.json)",
            ));
        }
        let cfg_path = dir.join("config.json");
        let cfg_text = read(&cfg_path)?;
        let gen_path = dir.join("generation_config.json");
        let gen_text = if gen_path.is_file() {
            Some(read(&gen_path)?)
        } else {
            None
        };
        let mut m = Self::from_parts(
            &dir.display().to_string(),
            opts,
            &cfg_text,
            gen_text.as_deref(),
            || transform(open_weights(dir)?),
            || Tokenizer::from_dir(dir),
        )?;
        m.dir = dir.to_path_buf();
        Ok(m)
    }

    /// The model from the contents of its folder's files (the browser has no folders):
    /// `files` maps a file name (`config.json`, `model.safetensors`, shards...) to its bytes;
    /// `name` is what errors call the folder.
    pub fn from_files(name: &str, files: &HashMap<String, SharedBytes>) -> Result<Self> {
        let at = |f: &str| format!("{name}/{f}");
        let text = |f: &str| -> Result<Option<String>> {
            files
                .get(f)
                .map(|b| {
                    String::from_utf8((**b).as_ref().to_vec())
                        .map_err(|_| Error::io(at(f), "not UTF-8 text"))
                })
                .transpose()
        };
        let missing = |f: &str| Error::io(at(f), "missing (the model folder needs this file)");
        let cfg_text = text("config.json")?.ok_or_else(|| missing("config.json"))?;
        let gen_text = text("generation_config.json")?;
        let weights = || {
            let names = match text("model.safetensors.index.json")? {
                Some(index) => crate::io::checkpoint::shard_names_of(
                    &index,
                    &at("model.safetensors.index.json"),
                )?,
                None => vec![String::from("model.safetensors")],
            };
            let mut shards = Vec::new();
            for n in names {
                let bytes = files.get(&n).ok_or_else(|| missing(&n))?;
                shards.push((at(&n), bytes.clone()));
            }
            Checkpoint::from_files(shards)
        };
        let tokenizer = || {
            let json = files
                .get("tokenizer.json")
                .ok_or_else(|| missing("tokenizer.json"))?;
            let cfg = text("tokenizer_config.json")?;
            Tokenizer::from_json((**json).as_ref(), cfg.as_deref(), &at("tokenizer.json"))
        };
        let opts = LoadOptions::default();
        Self::from_parts(
            name,
            opts,
            &cfg_text,
            gen_text.as_deref(),
            weights,
            tokenizer,
        )
    }

    /// What the folder and in-memory loaders share: `config.json` and
    /// `generation_config.json` texts, then the weights and the tokenizer (opened only once
    /// the config is known to be usable).
    fn from_parts(
        name: &str,
        opts: LoadOptions,
        cfg_text: &str,
        gen_text: Option<&str>,
        weights: impl FnOnce() -> Result<Checkpoint>,
        tokenizer: impl FnOnce() -> Result<Tokenizer>,
    ) -> Result<Self> {
        let cfg_str = format!("{name}/config.json");
        let raw: serde_json::Value = serde_json::from_str(cfg_text)
            .map_err(|e| Error::config(cfg_str.clone(), format!("invalid JSON: {e}")))?;
        let model_type = raw.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
        let cuda = opts.open_device()?;
        // Generation attributes that config.json may carry (older checkpoints keep them there).
        let from_model = GenerationConfig::from_json(cfg_text, &cfg_str)?;
        let mut generation = if let Some(gen_text) = gen_text {
            let mut g =
                GenerationConfig::from_json(gen_text, &format!("{name}/generation_config.json"))?;
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
                let config = BartConfig::from_json(cfg_text, &cfg_str)?;
                let ck = weights()?;
                Model::Bart(Box::new(match cuda {
                    None => Bart::load(config, &ck)?,
                    Some(cuda) => Bart::load_cuda(config, &ck, cuda)?,
                }))
            }
            "llama" | "mistral" | "qwen2" | "qwen3" => {
                let config = LlamaConfig::from_json(cfg_text, &cfg_str)?;
                let ck = weights()?;
                Model::Llama(Box::new(match cuda {
                    None => Llama::load(config, &ck)?,
                    Some(cuda) => Llama::load_cuda(config, &ck, cuda)?,
                }))
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
        let tokenizer = tokenizer()?;
        let vocab = match &model {
            Model::Bart(b) => b.vocab_size(),
            Model::Llama(m) => m.vocab_size(),
        };
        // A smaller tokenizer is fine (transformers pads embeddings), an id past the
        // embedding is not: refuse it here rather than on the first dialogue that uses it.
        if let Some(max) = tokenizer.max_id().filter(|&m| m as usize >= vocab) {
            return Err(Error::Tokenizer {
                path: format!("{name}/tokenizer.json"),
                message: format!(
                    "token id {max} is past the model's embedding (vocab_size is {vocab})"
                ),
            });
        }
        if tokenizer.vocab_size() > vocab {
            return Err(Error::Tokenizer {
                path: format!("{name}/tokenizer.json"),
                message: format!(
                    "the tokenizer has {} tokens but the model's vocab_size is {vocab}",
                    tokenizer.vocab_size()
                ),
            });
        }
        Ok(LoadedModel {
            dir: PathBuf::from(name),
            model,
            tokenizer,
            generation,
        })
    }

    /// A Llama-family GGUF file: Q4_0 / Q4_1 / Q8_0 matrices read quantized from the mapped
    /// file, other weights dequantized to f32, config and tokenizer rebuilt from the
    /// metadata as transformers does with `gguf_file=`; the metadata's
    /// `tokenizer.chat_template` is `self.tokenizer.chat_template`.
    pub fn load_gguf(path: &Path) -> Result<Self> {
        Self::load_gguf_with(path, LoadOptions::default())
    }

    /// [`LoadedModel::load_gguf`] with options.
    pub fn load_gguf_with(path: &Path, opts: LoadOptions) -> Result<Self> {
        let g = crate::io::gguf::GgufFile::open(path)?;
        Self::from_gguf(&g, opts)
    }

    /// The same as [`LoadedModel::load_gguf`] for a file already in memory.
    pub fn from_gguf_bytes(name: &str, bytes: SharedBytes) -> Result<Self> {
        Self::from_gguf(
            &crate::io::gguf::GgufFile::parse(name, bytes)?,
            LoadOptions::default(),
        )
    }

    fn from_gguf(g: &crate::io::gguf::GgufFile, opts: LoadOptions) -> Result<Self> {
        let cuda = opts.open_device()?;
        let m = crate::io::gguf::GgufModel::from_file_on(g, opts.dequantize, cuda)?;
        Ok(LoadedModel {
            dir: PathBuf::from(&g.path),
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
        self.generate_streaming(rows, gen, user_set_max_length, &mut |_, _| {})
    }

    /// [`LoadedModel::generate`] reporting each greedy token `(row, id)` as it is chosen
    /// (the browser page streams them).
    pub fn generate_streaming(
        &self,
        rows: &[Vec<u32>],
        gen: &GenerationConfig,
        user_set_max_length: bool,
        on_token: &mut dyn FnMut(usize, u32),
    ) -> Result<Vec<Vec<crate::generation::Hypothesis>>> {
        match &self.model {
            Model::Bart(m) => {
                let pad = gen.pad_token_id.unwrap_or(0);
                let batch = super::bart::EncoderBatch::from_rows(rows, pad);
                m.generate_streaming(&batch, gen, user_set_max_length, on_token)
            }
            Model::Llama(m) => m.generate_streaming(rows, gen, user_set_max_length, on_token),
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
