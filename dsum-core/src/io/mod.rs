//! Input/output formats: safetensors checkpoints, model folders, competition CSVs.

pub mod checkpoint;

#[cfg(feature = "std")]
pub mod csv;
