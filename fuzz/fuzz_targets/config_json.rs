//! config.json (BART, Llama family) and generation_config.json: parse, validate and resolve
//! against a prompt without a panic (overflowing lengths, zero heads, odd head dims...).
#![no_main]
use dsum_core::generation::GenerationConfig;
use dsum_core::models::bart::BartConfig;
use dsum_core::models::llama::LlamaConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = BartConfig::from_json(text, "config.json") {
        let _ = format!("{c:?}");
    }
    if let Ok(c) = LlamaConfig::from_json(text, "config.json") {
        let _ = (c.family(), c.kv_heads(), c.head_dim());
    }
    if let Ok(mut g) = GenerationConfig::from_json(text, "generation_config.json") {
        for prompt_len in [0, 7, usize::MAX / 2] {
            let _ = g.resolve(prompt_len, Some(64), false);
            let _ = g.resolve(prompt_len, None, true);
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
            let _ = g.apply_json(&v, "--generation-config");
            let _ = g.resolve(3, Some(16), true);
        }
    }
});
