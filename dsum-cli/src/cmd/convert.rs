//! `dsum-cli convert`: a model folder (or Hub repo id) with `pytorch_model.bin` or safetensors
//! weights to a new folder with `model.safetensors` (tensors bit-exact, dtypes kept) and the
//! config and tokenizer files. The work is `dsum_core::io::convert`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use argh::FromArgs;

use super::common::resolve_model_arg;

/// convert a model's weights (pytorch_model.bin, sharded or not, or a .gguf file) to a
/// model.safetensors folder
#[derive(FromArgs)]
#[argh(subcommand, name = "convert")]
pub struct ConvertArgs {
    /// model folder, or Hub repo id `org/name[@revision]`
    #[argh(option)]
    pub model: PathBuf,
    /// output folder (must not exist, or be empty); written atomically
    #[argh(option)]
    pub output: PathBuf,
    /// no progress output
    #[argh(switch)]
    pub quiet: bool,
}

pub fn run(args: ConvertArgs) -> Result<()> {
    let dir = resolve_model_arg(&args.model, args.quiet)?;
    let gguf = dir.is_file()
        && dir
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    let converted = if gguf {
        dsum_core::io::convert::convert_gguf(&dir, &args.output)
    } else {
        dsum_core::io::convert::convert_dir(&dir, &args.output)
    };
    let s = converted.with_context(|| {
        format!(
            "cannot convert {} into {}",
            dir.display(),
            args.output.display()
        )
    })?;
    if !args.quiet {
        eprintln!(
            "{}: {} tensors ({:.1} MB) -> {}/model.safetensors; copied {}",
            s.source,
            s.tensors,
            s.bytes as f64 / 1e6,
            args.output.display(),
            if s.copied.is_empty() {
                "no side files".to_string()
            } else {
                s.copied.join(", ")
            }
        );
    }
    Ok(())
}
