//! Input/output formats: safetensors checkpoints, model folders, competition CSVs.
