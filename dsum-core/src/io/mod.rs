//! Input/output formats: safetensors checkpoints, model folders, competition CSVs.

#[cfg(feature = "std")]
pub mod csv;
