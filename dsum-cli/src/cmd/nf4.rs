//! `dsum-cli nf4 quantize|dequantize`: safetensors files to and from bitsandbytes' 4-bit NF4
//! layout (what transformers saves for a `load_in_4bit` model). The work is
//! `dsum_core::quant::bnb_state`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use argh::FromArgs;

/// NF4 4-bit quantization of safetensors files, byte-compatible with bitsandbytes
#[derive(FromArgs)]
#[argh(subcommand, name = "nf4")]
pub struct Nf4Args {
    #[argh(subcommand)]
    pub verb: Nf4Verb,
}

#[derive(FromArgs)]
#[argh(subcommand)]
pub enum Nf4Verb {
    Quantize(QuantizeArgs),
    Dequantize(DequantizeArgs),
}

/// quantize every floating tensor of a safetensors file to NF4 (bitsandbytes layout)
#[derive(FromArgs)]
#[argh(subcommand, name = "quantize")]
pub struct QuantizeArgs {
    /// input .safetensors file
    #[argh(option)]
    pub input: PathBuf,
    /// output .safetensors file (written atomically)
    #[argh(option)]
    pub output: PathBuf,
    /// values per absmax block: 32, 64 (default), 128, ..., 4096
    #[argh(option, default = "64")]
    pub blocksize: usize,
    /// also quantize the block absmax values to 8 bits (bnb_4bit_use_double_quant)
    #[argh(switch)]
    pub double_quant: bool,
    /// copy tensors whose name contains this text unchanged (repeatable); for a transformers
    /// checkpoint: --exclude embed_tokens --exclude lm_head --exclude norm
    #[argh(option)]
    pub exclude: Vec<String>,
    /// no summary line
    #[argh(switch)]
    pub quiet: bool,
}

/// dequantize every NF4 weight of a safetensors file back to its recorded dtype
#[derive(FromArgs)]
#[argh(subcommand, name = "dequantize")]
pub struct DequantizeArgs {
    /// input .safetensors file with bitsandbytes 4-bit weights
    #[argh(option)]
    pub input: PathBuf,
    /// output .safetensors file (written atomically)
    #[argh(option)]
    pub output: PathBuf,
    /// no summary line
    #[argh(switch)]
    pub quiet: bool,
}

pub fn run(args: Nf4Args) -> Result<()> {
    match args.verb {
        Nf4Verb::Quantize(a) => {
            let s = dsum_core::quant::bnb_state::quantize_file(
                &a.input,
                &a.output,
                a.blocksize,
                a.double_quant,
                &a.exclude,
            )
            .with_context(|| format!("cannot quantize {}", a.input.display()))?;
            if !a.quiet {
                eprintln!(
                    "{}: {} tensors quantized to NF4 (blocksize {}{}), {} copied -> {}",
                    a.input.display(),
                    s.converted,
                    a.blocksize,
                    if a.double_quant { ", double quant" } else { "" },
                    s.copied,
                    a.output.display()
                );
            }
        }
        Nf4Verb::Dequantize(a) => {
            let s = dsum_core::quant::bnb_state::dequantize_file(&a.input, &a.output)
                .with_context(|| format!("cannot dequantize {}", a.input.display()))?;
            if !a.quiet {
                eprintln!(
                    "{}: {} NF4 tensors dequantized, {} copied -> {}",
                    a.input.display(),
                    s.converted,
                    s.copied,
                    a.output.display()
                );
            }
        }
    }
    Ok(())
}
