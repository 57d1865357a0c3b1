//! Input/output formats: safetensors checkpoints, GGUF files, model folders, competition CSVs, atomic
//! output files.

pub mod checkpoint;
pub mod gguf;

#[cfg(feature = "std")]
pub mod atomic;
#[cfg(feature = "std")]
pub mod csv;
