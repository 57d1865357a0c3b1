//! Model families, one module each, and the model-folder loader that picks the family
//! from `config.json`'s `model_type`.

pub mod bart;
pub mod bart_train;
pub mod llama;
pub mod llama_train;

#[cfg(feature = "std")]
mod folder;
#[cfg(feature = "std")]
pub use folder::{LoadOptions, LoadedModel, Model};
