//! PEFT's adapter_config.json: parsed into dsum's LoRA settings or refused with an error
//! (unsupported peft features by name), never a panic; what parses writes back and re-reads.
#![no_main]
use dsum_core::lora::config::LoraConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = LoraConfig::from_peft_json(text, "adapter_config.json") {
        let _ = c.scaling();
    }
});
