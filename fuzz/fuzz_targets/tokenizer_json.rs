//! tokenizer.json (+ tokenizer_config.json after a NUL byte) loading, then encode, truncate,
//! decode and token bytes on a fixed text: never a panic.
#![no_main]
use dsum_core::tokenizer::Tokenizer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (json, config) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], std::str::from_utf8(&data[i + 1..]).ok()),
        None => (data, None),
    };
    let Ok(t) = Tokenizer::from_json(json, config, "tokenizer.json") else {
        return;
    };
    for text in [
        "#Person1#: 안녕하세요, hello world! 123",
        "",
        "\u{1F600}\0 <s></s>",
    ] {
        if let Ok(ids) = t.encode(text, Some(5)) {
            let _ = t.decode(&ids, true);
        }
        if let Ok(ids) = t.encode_plain(text) {
            let _ = t.decode(&ids, false);
            for id in ids {
                let _ = t.token_bytes(id);
            }
        }
    }
    let _ = t.decode(&[0, 1, 2, u32::MAX], false);
    let _ = (t.vocab_size(), t.special_ids(), t.token_bytes(u32::MAX));
});
