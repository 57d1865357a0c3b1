//! 4-bit NormalFloat (NF4) weights, byte-compatible with bitsandbytes (QLoRA, Dettmers et al.
//! 2023): quantize / dequantize exactly as `bitsandbytes.functional.quantize_4bit(quant_type="nf4")`
//! on CPU and its pure-torch dequantize, double quantization of the block statistics with its
//! signed 8-bit dynamic map, fused dequantizing matmuls, and the checkpoint layout transformers
//! writes for a 4-bit model (`W`, `W.absmax`, ..., `W.quant_state.bitsandbytes__nf4`).

pub mod bnb_state;
pub mod dynamic_map;
pub mod nf4;
pub mod nf4_matmul;

pub use nf4::{Absmax, Nf4Dtype, Nf4Tensor, NF4_BLOCKSIZES, NF4_CODE};
