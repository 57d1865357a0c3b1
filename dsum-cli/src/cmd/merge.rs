//! `dsum-cli merge`: a base model folder plus a PEFT LoRA adapter in, a full model folder
//! out (`model.safetensors` with W += scaling·B·A, config, generation config and
//! tokenizer files) — peft's `merge_and_unload().save_pretrained()`. The output folder
//! appears atomically.

use std::path::PathBuf;

use anyhow::{Context, Result};
use argh::FromArgs;
use dsum_core::io::checkpoint::Checkpoint;
use dsum_core::io::convert::convert_with;
use dsum_core::io::pytorch::{has_pytorch_weights, PtCheckpoint};
use dsum_core::lora::adapter::Adapter;
use dsum_core::lora::merge::merge;

use super::common::resolve_model_arg;

/// merge a LoRA adapter into its base model and write a full model folder
#[derive(FromArgs)]
#[argh(subcommand, name = "merge")]
pub struct MergeArgs {
    /// base model folder, or Hub repo id `org/name[@revision]`
    #[argh(option)]
    pub model: PathBuf,
    /// PEFT adapter folder (adapter_config.json + adapter_model.safetensors)
    #[argh(option)]
    pub adapter: PathBuf,
    /// output folder (must not exist, or be empty)
    #[argh(option)]
    pub output: PathBuf,
}

pub fn run(args: MergeArgs) -> Result<()> {
    let dir = resolve_model_arg(&args.model, false)?;
    anyhow::ensure!(
        dir.is_dir(),
        "--model must be a model folder, not the file {}",
        dir.display()
    );
    let adapter = Adapter::load(&args.adapter)
        .with_context(|| format!("cannot load the adapter in {}", args.adapter.display()))?;
    let st = dir.join("model.safetensors").is_file()
        || dir.join("model.safetensors.index.json").is_file();
    let base = if !st && has_pytorch_weights(&dir) {
        PtCheckpoint::open_dir(&dir)?.into_checkpoint()?
    } else {
        Checkpoint::open_dir(&dir)?
    };
    let merged = merge(&base, &adapter, &args.adapter.display().to_string())?;
    let s = convert_with(&merged, &dir, &args.output)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    eprintln!(
        "merged {} adapted modules (r {}, scaling {}) into {} tensors; wrote {} (float32) and {}",
        adapter.modules.len(),
        adapter.config.r,
        adapter.config.scaling(),
        s.tensors,
        args.output.join("model.safetensors").display(),
        s.copied.join(", ")
    );
    Ok(())
}
