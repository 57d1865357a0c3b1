//! One module per verb.

pub mod generate;
pub mod morphs;
pub mod score;
pub mod summarize;
