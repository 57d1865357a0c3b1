//! Input/output formats: safetensors checkpoints, model folders, competition CSVs, atomic
//! output files.

pub mod checkpoint;

#[cfg(feature = "std")]
pub mod atomic;
#[cfg(feature = "std")]
pub mod csv;
