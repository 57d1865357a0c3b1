//! Chat-template rendering with both the template and the messages fuzzed. The input is
//! split on NUL bytes: template, then role/content pairs. The sandbox must hold: no panic,
//! no hang (the fuel limit stops loops and recursion), bounded output.
#![no_main]
use dsum_core::chat::{ChatTemplate, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let source = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    let messages: Vec<Message> = rest
        .chunks(2)
        .map(|c| Message::new(c[0], c.get(1).copied().unwrap_or_default()))
        .collect();
    let Ok(t) = ChatTemplate::new(source, "<s>", "</s>") else {
        return;
    };
    let extra = serde_json::json!({"enable_thinking": false, "tools": null});
    let _ = t.render(&messages, true, &extra);
    let _ = t.render(&messages, false, &serde_json::Value::Null);
});
