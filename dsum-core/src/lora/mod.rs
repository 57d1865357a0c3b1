//! LoRA (Hu et al., 2021) as PEFT stores it: hyper-parameters and `adapter_config.json`
//! (`config`), the adapter tensors and which modules they attach to (`adapter`), and
//! merging an adapter into a base checkpoint (`merge`).

pub mod adapter;
pub mod config;
pub mod merge;
