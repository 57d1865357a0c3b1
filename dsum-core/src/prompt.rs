//! Prompts for causal LMs: a system prompt and a user template with `{dialogue}`, rendered
//! through the model's chat template (as `apply_chat_template(add_generation_prompt=True)`)
//! and then tokenized without adding special tokens again, so there is exactly one BOS.
//! The Korean defaults follow the seed's screening, whose scores only became sensible with
//! a chat template, a Korean instruction and a Korean system prompt.

use crate::chat::{ChatTemplate, Message};
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

pub const DEFAULT_SYSTEM_PROMPT: &str =
    "당신은 한국어 대화를 요약하는 전문가입니다. 대화의 핵심 내용을 한두 문장의 자연스러운 한국어로 간결하게 요약하세요.";
pub const DEFAULT_USER_TEMPLATE: &str = "다음 대화를 요약해 주세요.\n\n{dialogue}\n\n요약:";
/// English preset, for English-first models on English dialogues (DialogSum style).
pub const ENGLISH_SYSTEM_PROMPT: &str = "You are a helpful assistant that summarizes dialogues.";
pub const ENGLISH_USER_TEMPLATE: &str = "Summarize this dialogue in one sentence.\n\n{dialogue}";

pub struct PromptBuilder {
    template: Option<ChatTemplate>,
    system: Option<String>,
    user: String,
    template_kwargs: serde_json::Value,
}

impl PromptBuilder {
    /// `use_chat_template = false` (or a tokenizer without one) gives plain text:
    /// system prompt, blank line, user message.
    pub fn new(
        tok: &Tokenizer,
        system: Option<&str>,
        user_template: &str,
        use_chat_template: bool,
        template_kwargs: serde_json::Value,
    ) -> Result<Self> {
        if !user_template.contains("{dialogue}") {
            return Err(Error::Generation(
                "the prompt template must contain `{dialogue}`".into(),
            ));
        }
        let template = match (&tok.chat_template, use_chat_template) {
            (Some(src), true) => Some(ChatTemplate::new_named(
                src,
                tok.bos_token.as_deref().unwrap_or(""),
                tok.eos_token.as_deref().unwrap_or(""),
                &tok.chat_template_origin(),
            )?),
            _ => None,
        };
        Ok(PromptBuilder {
            template,
            system: system.filter(|s| !s.is_empty()).map(String::from),
            user: user_template.to_string(),
            template_kwargs,
        })
    }

    pub fn has_chat_template(&self) -> bool {
        self.template.is_some()
    }

    /// The messages for one dialogue.
    pub fn messages(&self, dialogue: &str) -> Vec<Message> {
        let mut m = Vec::new();
        if let Some(s) = &self.system {
            m.push(Message::new("system", s));
        }
        m.push(Message::new(
            "user",
            &self.user.replace("{dialogue}", dialogue),
        ));
        m
    }

    /// Render messages into the prompt text.
    pub fn render(&self, messages: &[Message]) -> Result<String> {
        match &self.template {
            Some(t) => t.render(messages, true, &self.template_kwargs),
            None => Ok(messages
                .iter()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>()
                .join("\n\n")),
        }
    }

    pub fn render_dialogue(&self, dialogue: &str) -> Result<String> {
        self.render(&self.messages(dialogue))
    }
}

/// A causal LM's answer as a summary: special tokens already skipped by decoding; drop a
/// leading `<think>…</think>` block (Qwen3) and surrounding whitespace.
pub fn clean_answer(text: &str) -> String {
    let t = text.trim_start();
    let t = match (t.strip_prefix("<think>"), t.find("</think>")) {
        (Some(_), Some(end)) => &t[end + "</think>".len()..],
        _ => t,
    };
    // A byte-level model cut off by max_new_tokens can end inside a character.
    t.trim().trim_end_matches('\u{FFFD}').trim_end().to_string()
}
