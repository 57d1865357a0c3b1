//! Input/output formats: safetensors checkpoints, GGUF files, model folders, competition CSVs, atomic
//! output files.

pub mod checkpoint;
pub mod gguf;
pub mod pickle;
pub mod pytorch;
pub mod raw_tensor;
pub mod torch_zip;

#[cfg(feature = "std")]
pub mod atomic;
#[cfg(feature = "std")]
pub mod convert;
#[cfg(feature = "std")]
pub mod csv;
