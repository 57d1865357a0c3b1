//! `dsum-cli merge`: a base model folder plus a PEFT LoRA adapter in, a full model folder
//! out (`model.safetensors` with W += scaling·B·A, config, generation config and
//! tokenizer files) — peft's `merge_and_unload().save_pretrained()`, each tensor in the
//! base's dtype unless `--dtype` says otherwise. The output folder appears atomically.

use std::path::PathBuf;

use anyhow::{Context, Result};
use argh::FromArgs;
use dsum_core::io::checkpoint::Checkpoint;
use dsum_core::io::convert::convert_with;
use dsum_core::io::pytorch::{has_pytorch_weights, PtCheckpoint};
use dsum_core::io::raw_tensor::TensorSource;
use dsum_core::lora::adapter::Adapter;
use dsum_core::lora::merge::{merge_source, MergeDtype};

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
    /// dtype of the written tensors: base (each as the base stores it; default), f32, bf16, f16
    #[argh(option, default = "String::from(\"base\")")]
    pub dtype: String,
}

pub fn run(args: MergeArgs) -> Result<()> {
    let dir = resolve_model_arg(&args.model, false)?;
    anyhow::ensure!(
        dir.is_dir(),
        "--model must be a model folder, not the file {}",
        dir.display()
    );
    let dtype = MergeDtype::parse(&args.dtype)
        .with_context(|| format!("--dtype {}: expected base, f32, bf16 or f16", args.dtype))?;
    let adapter = Adapter::load(&args.adapter)
        .with_context(|| format!("cannot load the adapter in {}", args.adapter.display()))?;
    let st = dir.join("model.safetensors").is_file()
        || dir.join("model.safetensors.index.json").is_file();
    let base: Box<dyn TensorSource> = if !st && has_pytorch_weights(&dir) {
        Box::new(PtCheckpoint::open_dir(&dir)?)
    } else {
        Box::new(Checkpoint::open_dir(&dir)?)
    };
    let merged = merge_source(&*base, &adapter, &args.adapter.display().to_string(), dtype)?;
    let s = convert_with(&merged, &dir, &args.output)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    let how = match dtype {
        MergeDtype::Base => "in the base's dtypes",
        MergeDtype::F32 => "in float32",
        MergeDtype::Bf16 => "in bfloat16",
        MergeDtype::F16 => "in float16",
    };
    eprintln!(
        "merged {} adapted modules (r {}, scaling {}) into {} tensors; wrote {} ({how}) and {}",
        adapter.modules.len(),
        adapter.config.r,
        adapter.config.scaling(),
        s.tensors,
        args.output.join("model.safetensors").display(),
        s.copied.join(", ")
    );
    Ok(())
}
