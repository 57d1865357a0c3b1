//! tokenizer.json through the `tokenizers` crate.
