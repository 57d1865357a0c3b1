//! Model folder conversion to safetensors: every tensor of a [`TensorSource`] (`.bin`,
//! safetensors, or a [`Checkpoint`] another reader filled) written in its stored dtype,
//! bytes untouched, plus the config and tokenizer files. The output folder appears
//! all at once: it is built under a temporary name beside the target, then renamed.

use std::path::{Path, PathBuf};
use std::string::{String, ToString};
use std::vec::Vec;

use super::checkpoint::Checkpoint;
use super::pytorch::{has_pytorch_weights, PtCheckpoint};
use super::raw_tensor::{RawTensor, TensorSource};
use crate::error::{Error, Result};

/// Files carried over unchanged when they exist.
pub const CARRIED_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
];

/// What a conversion did.
#[derive(Debug)]
pub struct ConvertSummary {
    /// The weights that were read.
    pub source: String,
    pub tensors: usize,
    pub bytes: u64,
    pub copied: Vec<String>,
}

/// The weights of a model folder: safetensors when present, else `pytorch_model.bin` (+ index).
pub fn open_source(dir: &Path) -> Result<Box<dyn TensorSource>> {
    let safetensors = dir.join("model.safetensors").is_file()
        || dir.join("model.safetensors.index.json").is_file();
    if !safetensors && has_pytorch_weights(dir) {
        return Ok(Box::new(PtCheckpoint::open_dir(dir)?));
    }
    if !safetensors {
        return Err(Error::checkpoint(
            dir.display().to_string(),
            "no weights here (expected model.safetensors, pytorch_model.bin or their .index.json)",
        ));
    }
    Ok(Box::new(Checkpoint::open_dir(dir)?))
}

/// Write every tensor of `src` to one safetensors file at `path` (atomically), with the
/// `{"format": "pt"}` metadata transformers expects. Returns (tensors, data bytes).
pub fn write_safetensors(src: &dyn TensorSource, path: &Path) -> Result<(usize, u64)> {
    let mut tensors: Vec<(String, RawTensor)> = Vec::new();
    for name in src.tensor_names() {
        let t = src.raw_tensor(&name)?;
        tensors.push((name, t));
    }
    let bytes = tensors.iter().map(|(_, t)| t.bytes().len() as u64).sum();
    let views: Vec<(&str, &RawTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let tmp = super::atomic::temp_path(path);
    safetensors::tensor::serialize_to_file(views, Some(meta), &tmp).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path.display().to_string(), e)
    })?;
    super::atomic::commit(&tmp, path)?;
    Ok((tensors.len(), bytes))
}

/// Convert the model folder `dir` into `out` (`model.safetensors` + the [`CARRIED_FILES`]).
/// `out` must not exist or be an empty folder.
pub fn convert_dir(dir: &Path, out: &Path) -> Result<ConvertSummary> {
    convert_with(&*open_source(dir)?, dir, out)
}

/// Convert from any tensor source (a GGUF reader hands its [`Checkpoint`] here), carrying the
/// side files of `dir`.
pub fn convert_with(src: &dyn TensorSource, dir: &Path, out: &Path) -> Result<ConvertSummary> {
    let mut side = Vec::new();
    for f in CARRIED_FILES {
        let from = dir.join(f);
        if from.is_file() {
            let bytes =
                std::fs::read(&from).map_err(|e| Error::io(from.display().to_string(), e))?;
            side.push((f.to_string(), bytes));
        }
    }
    write_folder(src, side, out)
}

/// A Llama-family `.gguf` file as a transformers model folder: weights dequantized to f32
/// under their Hugging Face names (as transformers' `gguf_file=` loads them), `config.json`
/// and the tokenizer files rebuilt from the metadata (chat template included).
pub fn convert_gguf(path: &Path, out: &Path) -> Result<ConvertSummary> {
    use super::gguf::{hf, tokenizer, GgufFile};
    let g = GgufFile::open(path)?;
    let config = hf::llama_config(&g)?;
    let ck = hf::checkpoint(&g, &config)?;
    let tok = tokenizer::from_gguf(&g)?;
    let pretty =
        |v: &serde_json::Value| serde_json::to_vec_pretty(v).expect("JSON values always serialize");
    let mut generation = serde_json::Map::new();
    for (k, v) in [
        ("bos_token_id", tok.bos_token_id),
        ("eos_token_id", tok.eos_token_id),
        ("pad_token_id", tok.pad_token_id),
    ] {
        if let Some(v) = v {
            generation.insert(k.to_string(), v.into());
        }
    }
    let side = vec![
        ("config.json".to_string(), pretty(&hf::config_json(&g)?)),
        (
            "generation_config.json".to_string(),
            pretty(&generation.into()),
        ),
        ("tokenizer.json".to_string(), tok.json.into_bytes()),
        ("tokenizer_config.json".to_string(), tok.config.into_bytes()),
    ];
    write_folder(&ck, side, out)
}

/// Write `model.safetensors` from `src` plus the `side` files into `out`, all or nothing.
fn write_folder(
    src: &dyn TensorSource,
    side: Vec<(String, Vec<u8>)>,
    out: &Path,
) -> Result<ConvertSummary> {
    let shown = out.display().to_string();
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .map_err(|e| Error::io(shown.clone(), e))?
            .next()
            .is_none();
        if !empty {
            return Err(Error::io(
                shown,
                "already exists and is not empty; choose a new output folder",
            ));
        }
    }
    let tmp = partial_dir(out);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(tmp.display().to_string(), e))?;
    let built = (|| -> Result<ConvertSummary> {
        let (tensors, bytes) = write_safetensors(src, &tmp.join("model.safetensors"))?;
        let mut copied = Vec::new();
        for (f, bytes) in &side {
            let to = tmp.join(f);
            std::fs::write(&to, bytes).map_err(|e| Error::io(to.display().to_string(), e))?;
            copied.push(f.clone());
        }
        Ok(ConvertSummary {
            source: src.source_path(),
            tensors,
            bytes,
            copied,
        })
    })();
    let summary = match built {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if out.exists() {
        std::fs::remove_dir(out).map_err(|e| Error::io(shown.clone(), e))?;
    }
    std::fs::rename(&tmp, out).map_err(|e| {
        let _ = std::fs::remove_dir_all(&tmp);
        Error::io(shown, e)
    })?;
    Ok(summary)
}

fn partial_dir(out: &Path) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".partial");
    out.with_file_name(name)
}
