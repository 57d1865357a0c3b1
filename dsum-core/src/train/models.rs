//! From a model on disk to a [`Trainable`]: BART or a Llama-family model, per `config.json`
//! (or GGUF metadata), with weights made trainable as the [`Setup`] says.

use std::path::Path;

use super::method::{MethodKind, MethodSpec};
use super::setup::{Kind, Quantizer, Setup};
use super::Trainable;
use crate::error::{Error, Result};
use crate::io::checkpoint::Checkpoint;
use crate::models::bart::BartConfig;
use crate::models::bart_train::BartTrain;
use crate::models::llama::LlamaConfig;
use crate::models::llama_train::LlamaTrain;

/// Which family a model folder holds (for data preparation and export).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Bart,
    Causal,
}

/// The model's `config.json` text (GGUF: rebuilt from the metadata) and its family.
pub fn inspect(path: &Path) -> Result<(Arch, String)> {
    if is_gguf(path) {
        let g = crate::io::gguf::GgufFile::open(path)?;
        let json = crate::io::gguf::hf::config_json(&g)?;
        return Ok((Arch::Causal, json.to_string()));
    }
    let cfg = path.join("config.json");
    let text =
        std::fs::read_to_string(&cfg).map_err(|e| Error::io(cfg.display().to_string(), e))?;
    let raw: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::config(cfg.display().to_string(), format!("invalid JSON: {e}")))?;
    let arch = match raw.get("model_type").and_then(|v| v.as_str()) {
        Some("bart") => Arch::Bart,
        Some("llama" | "qwen2" | "qwen3") => Arch::Causal,
        other => {
            return Err(Error::config(
                cfg.display().to_string(),
                format!("model_type {other:?} cannot be fine-tuned (bart, llama, qwen2, qwen3)"),
            ))
        }
    };
    Ok((arch, text))
}

fn is_gguf(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// Load `path` (a model folder or a Llama-family `.gguf`) for training.
pub fn build(path: &Path, setup: &Setup) -> Result<Box<dyn Trainable>> {
    if is_gguf(path) {
        let g = crate::io::gguf::GgufFile::open(path)?;
        let config = crate::io::gguf::hf::llama_config(&g)?;
        let ck = crate::io::gguf::hf::checkpoint(&g, &config)?;
        return Ok(Box::new(LlamaTrain::load(config, &ck, setup)?));
    }
    let (arch, text) = inspect(path)?;
    let cfg_path = path.join("config.json").display().to_string();
    let ck = Checkpoint::open_dir(path)?;
    Ok(match arch {
        Arch::Bart => Box::new(BartTrain::load(
            BartConfig::from_json(&text, &cfg_path)?,
            &ck,
            setup,
        )?),
        Arch::Causal => Box::new(LlamaTrain::load(
            LlamaConfig::from_json(&text, &cfg_path)?,
            &ck,
            setup,
        )?),
    })
}

/// [`build`] from a finetune config's `[method]`; `seed` initializes fresh LoRA A matrices.
pub fn build_method(path: &Path, method: &MethodSpec, seed: u64) -> Result<Box<dyn Trainable>> {
    let init_adapter = match &method.init_adapter {
        Some(dir) => {
            let f = dir.join("adapter_model.safetensors");
            let bytes = crate::io::checkpoint::read_shared(&f)?;
            Some(Checkpoint::from_files(vec![(
                f.display().to_string(),
                bytes,
            )])?)
        }
        None => None,
    };
    let l = &method.lora;
    let setup = Setup {
        kind: match method.kind {
            MethodKind::Lora => Kind::Lora,
            MethodKind::Qlora => Kind::Qlora,
            MethodKind::Full => Kind::Full,
        },
        r: l.r,
        alpha: l.alpha,
        dropout: l.dropout,
        targets: match &l.targets {
            crate::lora::config::Targets::AllLinear => vec!["all-linear".to_string()],
            crate::lora::config::Targets::Names(n) => n.clone(),
        },
        use_rslora: l.use_rslora,
        init_adapter,
        nf4_blocksize: method.nf4_blocksize,
        double_quant: method.double_quant,
        quantizer: Some(super::setup::nf4_quantizer as Quantizer),
        seed,
    };
    build(path, &setup)
}
