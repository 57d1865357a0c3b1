//! One module per verb.

pub mod common;
pub mod convert;
pub mod finetune;
pub mod gen_flags;
pub mod generate;
pub mod merge;
pub mod morphs;
pub mod nf4;
pub mod score;
pub mod screen;
pub mod summarize;
