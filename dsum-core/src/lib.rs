//! dsum-core: the embeddable engine of dsum.
//!
//! Hand-written BART (and later Llama-family) forward passes over safetensors weights,
//! transformers-exact generation, and ROUGE scoring. `default = []`: filesystem access
//! (`std`), memory maps (`mmap`) and threads (`rayon`) are opt-in, so the crate also
//! builds for `wasm32-unknown-unknown`.

pub mod backend;
pub mod chat;
pub mod error;
pub mod generation;
#[cfg(feature = "hub")]
pub mod hub;
pub mod io;
pub mod lora;
pub mod mecab;
pub mod models;
pub mod ops;
pub mod prompt;
pub mod quant;
pub mod rouge;
pub mod tensor;
pub mod tokenizer;
pub mod train;

pub use error::{Error, Result};
