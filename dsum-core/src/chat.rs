//! Chat templates: the Jinja `chat_template` of `tokenizer_config.json` (or GGUF metadata)
//! rendered as transformers' `apply_chat_template` renders it — jinja2 with
//! `trim_blocks` and `lstrip_blocks`, `raise_exception`, `strftime_now`, Python-style
//! `tojson` and string methods — in a sandbox: no filesystem, no network, and a fuel limit
//! so a looping or recursive template stops with an error instead of hanging.

use minijinja::value::Value;
use minijinja::{Environment, Error as JinjaError, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Work budget of one render (instructions of minijinja's VM). Real chat templates use a
/// few thousand; this is generous but finite.
const FUEL: u64 = 5_000_000;
/// Largest rendered prompt. Fuel counts instructions, not bytes: `{{ 'x' * 90000000 }}` in
/// a loop is cheap in fuel but not in memory, so the output is capped as it is written.
pub const MAX_RENDER_BYTES: usize = 16 << 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    /// Where the template came from (tokenizer_config.json, a .gguf), for error messages.
    origin: String,
}

/// An `io::Write` sink that refuses to grow past [`MAX_RENDER_BYTES`].
struct Capped {
    out: String,
    full: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + buf.len() > MAX_RENDER_BYTES {
            self.full = true;
            return Err(std::io::Error::other("rendered prompt too large"));
        }
        // minijinja writes whole UTF-8 strings, so each chunk is valid on its own.
        self.out.push_str(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn raise_exception(msg: String) -> core::result::Result<Value, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
}

/// `strftime_now(fmt)`: transformers passes the local time; dsum uses a fixed date so that
/// renders are reproducible (templates only use it for "Today Date" lines).
fn strftime_now(fmt: String) -> String {
    fmt.replace("%d", "26")
        .replace("%b", "Jul")
        .replace("%B", "July")
        .replace("%Y", "2024")
        .replace("%m", "07")
}

/// Python's `json.dumps(value, ensure_ascii=False)` (what transformers' `tojson` does):
/// `", "` and `": "` separators, non-ASCII kept, no HTML escaping.
fn tojson(value: Value, indent: Option<usize>) -> core::result::Result<Value, JinjaError> {
    let v: serde_json::Value = serde_json::to_value(&value)
        .map_err(|e| JinjaError::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let mut out = String::new();
    write_py_json(&v, indent, 0, &mut out);
    Ok(Value::from_safe_string(out))
}

fn write_py_json(v: &serde_json::Value, indent: Option<usize>, depth: usize, out: &mut String) {
    use serde_json::Value as J;
    let nl = |out: &mut String, d: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * d));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Number(n) => out.push_str(&n.to_string()),
        J::String(s) => out.push_str(&serde_json::to_string(s).unwrap_or_default()),
        J::Array(a) if a.is_empty() => out.push_str("[]"),
        J::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                nl(out, depth + 1);
                write_py_json(x, indent, depth + 1, out);
            }
            nl(out, depth);
            out.push(']');
        }
        J::Object(o) if o.is_empty() => out.push_str("{}"),
        J::Object(o) => {
            out.push('{');
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                nl(out, depth + 1);
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push_str(": ");
                write_py_json(x, indent, depth + 1, out);
            }
            nl(out, depth);
            out.push('}');
        }
    }
}

impl ChatTemplate {
    /// Compile `source`; `bos_token` / `eos_token` are exposed to the template as transformers does.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        Self::new_named(source, bos_token, eos_token, "chat_template")
    }

    /// [`ChatTemplate::new`] with errors naming `origin` (the file the template came from).
    pub fn new_named(source: &str, bos_token: &str, eos_token: &str, origin: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(64);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| Error::Tokenizer {
                path: origin.into(),
                message: format!("chat template does not compile: {e}"),
            })?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
            origin: origin.into(),
        })
    }

    /// `apply_chat_template(messages, add_generation_prompt=.., tokenize=False, **extra)`.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        extra: &serde_json::Value,
    ) -> Result<String> {
        let mut ctx = serde_json::Map::new();
        if let Some(o) = extra.as_object() {
            ctx.extend(o.clone());
        }
        ctx.insert(
            "messages".into(),
            serde_json::to_value(messages).unwrap_or_default(),
        );
        ctx.insert("add_generation_prompt".into(), add_generation_prompt.into());
        ctx.insert("bos_token".into(), self.bos_token.clone().into());
        ctx.insert("eos_token".into(), self.eos_token.clone().into());
        let err = |message: String| Error::Tokenizer {
            path: self.origin.clone(),
            message,
        };
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| err(format!("chat template: {e}")))?;
        let mut sink = Capped {
            out: String::new(),
            full: false,
        };
        match tmpl.render_captured_to(serde_json::Value::Object(ctx), &mut sink) {
            Ok(_) => Ok(sink.out),
            Err(_) if sink.full => Err(err(format!(
                "chat template: the rendered prompt is too large (over {MAX_RENDER_BYTES} bytes)"
            ))),
            Err(e) => {
                // Nested failures (an include, a macro) keep the real cause at the bottom.
                let mut root: &dyn std::error::Error = &e;
                while let Some(s) = root.source() {
                    root = s;
                }
                Err(err(if core::ptr::addr_eq(root, &e) {
                    format!("chat template: {e}")
                } else {
                    format!("chat template: {e}: {root}")
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_renders_with_generation_prompt() {
        let src = "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
        let t = ChatTemplate::new(src, "", "<|im_end|>").unwrap();
        let out = t
            .render(
                &[Message::new("user", "안녕")],
                true,
                &serde_json::Value::Null,
            )
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\n안녕<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn looping_template_runs_out_of_fuel() {
        let src =
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        let err = t
            .render(&[], true, &serde_json::Value::Null)
            .unwrap_err()
            .to_string();
        assert!(err.contains("fuel") || err.contains("range"), "{err}");
    }

    #[test]
    fn tojson_is_python_style() {
        let t = ChatTemplate::new("{{ messages | tojson }}", "", "").unwrap();
        let out = t
            .render(
                &[Message::new("user", "<a> 한")],
                false,
                &serde_json::Value::Null,
            )
            .unwrap();
        assert_eq!(out, r#"[{"role": "user", "content": "<a> 한"}]"#);
    }
}
