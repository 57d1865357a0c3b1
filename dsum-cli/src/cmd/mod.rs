//! One module per verb.

pub mod common;
pub mod convert;
pub mod gen_flags;
pub mod generate;
pub mod morphs;
pub mod nf4;
pub mod score;
pub mod screen;
pub mod summarize;
