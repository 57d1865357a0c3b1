//! GGUF header, metadata, tensor infos and everything built from them (config, tokenizer,
//! chat template, dequantized weights, the whole model): never a panic, bounded memory.
#![no_main]
use std::sync::Arc;

use dsum_core::io::gguf::{hf, tokenizer, GgufFile, GgufModel};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(g) = GgufFile::parse("fuzz.gguf", Arc::new(data.to_vec())) else {
        return;
    };
    for t in &g.tensors {
        let _ = g.dequantize(t);
    }
    let _ = hf::config_json(&g);
    let _ = hf::chat_template(&g);
    let _ = tokenizer::from_gguf(&g);
    if let Ok(config) = hf::llama_config(&g) {
        let _ = hf::checkpoint(&g, &config);
    }
    let _ = GgufModel::from_file(&g);
});
