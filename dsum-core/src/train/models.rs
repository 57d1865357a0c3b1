//! From a model on disk to a [`Trainable`]: BART or a Llama-family model, per `config.json`
//! (or GGUF metadata), with weights made trainable as the [`Setup`] says.

use std::path::Path;

use super::method::{MethodKind, MethodSpec};
use super::setup::{Kind, Quantizer, Setup};
use super::Trainable;
use crate::backend::Device;
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

/// Load `path` (a model folder or a Llama-family `.gguf`) for training on the CPU.
pub fn build(path: &Path, setup: &Setup) -> Result<Box<dyn Trainable>> {
    build_on(path, setup, Device::Cpu, false)
}

/// Load `path` for training on `device` (`tf32`: TF32 tensor-core matmuls on a GPU).
pub fn build_on(
    path: &Path,
    setup: &Setup,
    device: Device,
    tf32: bool,
) -> Result<Box<dyn Trainable>> {
    if is_gguf(path) {
        let g = crate::io::gguf::GgufFile::open(path)?;
        let config = crate::io::gguf::hf::llama_config(&g)?;
        let ck = crate::io::gguf::hf::checkpoint(&g, &config)?;
        return load(Config::Llama(config), &ck, setup, device, tf32);
    }
    let (arch, text) = inspect(path)?;
    let cfg_path = path.join("config.json").display().to_string();
    let ck = Checkpoint::open_dir(path)?;
    let config = match arch {
        Arch::Bart => Config::Bart(BartConfig::from_json(&text, &cfg_path)?),
        Arch::Causal => Config::Llama(LlamaConfig::from_json(&text, &cfg_path)?),
    };
    load(config, &ck, setup, device, tf32)
}

/// A model's parsed config.
enum Config {
    Bart(BartConfig),
    Llama(LlamaConfig),
}

fn load(
    config: Config,
    ck: &Checkpoint,
    setup: &Setup,
    device: Device,
    tf32: bool,
) -> Result<Box<dyn Trainable>> {
    match device {
        Device::Cpu => Ok(match config {
            Config::Bart(c) => Box::new(BartTrain::load(c, ck, setup)?),
            Config::Llama(c) => Box::new(LlamaTrain::load(c, ck, setup)?),
        }),
        Device::Cuda(n) => load_cuda(config, ck, setup, n, tf32),
    }
}

#[cfg(feature = "dsum-kernels")]
fn load_cuda(
    config: Config,
    ck: &Checkpoint,
    setup: &Setup,
    ordinal: usize,
    tf32: bool,
) -> Result<Box<dyn Trainable>> {
    let cuda = crate::backend::Cuda::open(ordinal)?.with_tf32(tf32);
    Ok(match config {
        Config::Bart(c) => Box::new(BartTrain::load_on(cuda, c, ck, setup)?),
        Config::Llama(c) => Box::new(LlamaTrain::load_on(cuda, c, ck, setup)?),
    })
}

#[cfg(not(feature = "dsum-kernels"))]
fn load_cuda(
    _: Config,
    _: &Checkpoint,
    _: &Setup,
    _: usize,
    _: bool,
) -> Result<Box<dyn Trainable>> {
    Err(Error::NotCompiledWithCuda)
}

/// [`build_on`] from a finetune config's `[method]`; `seed` initializes fresh LoRA A matrices.
pub fn build_method(
    path: &Path,
    method: &MethodSpec,
    seed: u64,
    device: Device,
    tf32: bool,
) -> Result<Box<dyn Trainable>> {
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
    build_on(path, &setup, device, tf32)
}
