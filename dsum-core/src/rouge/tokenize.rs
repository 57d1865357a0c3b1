//! Tokenizers for scoring, each reproducing the Python it stands in for: `str.split()`
//! (Python's own whitespace set), single characters, `rouge_score`'s default tokenizer
//! (`tokenize.py`: lowercase, `[^a-z0-9]+` to space), and a pluggable custom tokenizer
//! (Mecab-ko morphemes).

use std::string::String;
use std::sync::Arc;
use std::vec::Vec;

/// A tokenizer supplied by the caller (for example Mecab-ko morphemes). It returns the
/// tokens of one text.
pub type CustomTokenizer = Arc<dyn Fn(&str) -> Vec<String> + Send + Sync>;

/// How a text becomes tokens before scoring.
///
/// With the `rouge` (pltrdy) flavor the tokens are joined with single spaces and the
/// joined string is scored, exactly as the competition feeds Mecab morphemes to the
/// `rouge` package; so `.` still splits sentences. With the `rouge_score` flavor the
/// tokens are used as they are.
#[derive(Clone)]
pub enum Tokenize {
    /// Python's `str.split()`.
    Whitespace,
    /// Every character that is not Python whitespace is a token.
    Char,
    /// `rouge_score`'s `DefaultTokenizer(use_stemmer=False)`: deletes everything except
    /// `[a-z0-9]` after lowercasing (and so every Hangul character).
    RougeScoreDefault,
    /// Tokens from a caller-supplied function.
    Custom(CustomTokenizer),
}

impl Tokenize {
    /// Wraps a function as a custom tokenizer.
    pub fn custom<F>(f: F) -> Self
    where
        F: Fn(&str) -> Vec<String> + Send + Sync + 'static,
    {
        Tokenize::Custom(Arc::new(f))
    }

    /// A short name for messages: `whitespace`, `char`, `default`, `custom`.
    pub fn name(&self) -> &'static str {
        match self {
            Tokenize::Whitespace => "whitespace",
            Tokenize::Char => "char",
            Tokenize::RougeScoreDefault => "default",
            Tokenize::Custom(_) => "custom",
        }
    }

    /// Calls `emit` with each token of `text`, in order.
    pub fn for_each_token(&self, text: &str, mut emit: impl FnMut(&str)) {
        match self {
            Tokenize::Whitespace => py_split(text).for_each(emit),
            Tokenize::Char => {
                for (i, c) in text.char_indices() {
                    if !is_py_whitespace(c) {
                        emit(&text[i..i + c.len_utf8()]);
                    }
                }
            }
            Tokenize::RougeScoreDefault => {
                let mut buf = String::new();
                rouge_score_default_tokens(text, &mut buf, |t| emit(t));
            }
            Tokenize::Custom(f) => f(text).iter().for_each(|t| emit(t)),
        }
    }
}

impl core::fmt::Debug for Tokenize {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Python's `str.isspace()` for one character: Unicode White_Space plus the four
/// information separators U+001C..U+001F, which Python also splits on.
#[inline]
pub fn is_py_whitespace(c: char) -> bool {
    if c.is_ascii() {
        matches!(
            c,
            ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r' | '\x1c'..='\x1f'
        )
    } else {
        c.is_whitespace()
    }
}

/// Python's `text.split()` (no argument): runs of whitespace separate tokens, no empty
/// tokens.
pub fn py_split(text: &str) -> PySplit<'_> {
    PySplit { text, pos: 0 }
}

/// Iterator of [`py_split`]. Works on bytes: only the lead bytes 0xC2, 0xE1, 0xE2 and 0xE3
/// can start a non-ASCII Python whitespace character, so Hangul is never decoded.
pub struct PySplit<'a> {
    text: &'a str,
    pos: usize,
}

/// Byte classes of the splitters.
pub(crate) const TOKEN: u8 = 0; // inside a token
pub(crate) const SPACE: u8 = 1; // ASCII whitespace (Python's, with U+001C..U+001F)
pub(crate) const MAYBE: u8 = 2; // lead byte of a character that may be non-ASCII whitespace
pub(crate) const DOT: u8 = 3; // `.`, pltrdy's sentence end

pub(crate) static CLASS: [u8; 256] = {
    let mut t = [TOKEN; 256];
    let spaces = [
        b' ', b'\t', b'\n', 0x0b, 0x0c, b'\r', 0x1c, 0x1d, 0x1e, 0x1f,
    ];
    let mut k = 0;
    while k < spaces.len() {
        t[spaces[k] as usize] = SPACE;
        k += 1;
    }
    t[0xC2] = MAYBE;
    t[0xE1] = MAYBE;
    t[0xE2] = MAYBE;
    t[0xE3] = MAYBE;
    t[b'.' as usize] = DOT;
    t
};

/// Byte length of the Python whitespace character starting at `b[i]`, or 0.
#[inline]
pub(crate) fn whitespace_len(b: &[u8], i: usize) -> usize {
    let at = |k: usize| b.get(i + k).copied().unwrap_or(0);
    match CLASS[b[i] as usize] {
        SPACE => 1,
        MAYBE => match b[i] {
            0xC2 if matches!(at(1), 0x85 | 0xA0) => 2, // U+0085, U+00A0
            0xE1 if (at(1), at(2)) == (0x9A, 0x80) => 3, // U+1680
            0xE2 if matches!(
                (at(1), at(2)),
                (0x80, 0x80..=0x8A | 0xA8 | 0xA9 | 0xAF) | (0x81, 0x9F)
            ) =>
            {
                3
            }
            0xE3 if (at(1), at(2)) == (0x80, 0x80) => 3, // U+3000
            _ => 0,
        },
        _ => 0,
    }
}

/// End of the token starting at `b[i]`: the next whitespace (or `.` if `stop_at_dot`).
/// Token ends are character boundaries: continuation bytes are never whitespace or `.`.
#[inline]
pub(crate) fn token_end(b: &[u8], mut i: usize, stop_at_dot: bool) -> usize {
    while i < b.len() {
        match CLASS[b[i] as usize] {
            TOKEN => i += 1,
            DOT if !stop_at_dot => i += 1,
            MAYBE if whitespace_len(b, i) == 0 => i += 1,
            _ => break,
        }
    }
    i
}

impl<'a> Iterator for PySplit<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        let b = self.text.as_bytes();
        let mut i = self.pos;
        while i < b.len() {
            let w = whitespace_len(b, i);
            if w == 0 {
                break;
            }
            i += w;
        }
        if i >= b.len() {
            self.pos = i;
            return None;
        }
        let start = i;
        i = token_end(b, i, false);
        self.pos = i;
        self.text.get(start..i)
    }
}

/// `rouge_score.tokenize.tokenize(text, stemmer=None)`: lowercase, keep maximal runs of
/// `[a-z0-9]`. `buf` is scratch space (a lowercased non-ASCII character may expand, as
/// `İ` to `i` + U+0307).
pub fn rouge_score_default_tokens(text: &str, buf: &mut String, mut emit: impl FnMut(&str)) {
    buf.clear();
    for c in text.chars() {
        if c.is_ascii() {
            if c.is_ascii_alphanumeric() {
                buf.push(c.to_ascii_lowercase());
            } else if !buf.is_empty() {
                emit(buf);
                buf.clear();
            }
        } else {
            for l in c.to_lowercase() {
                if l.is_ascii_lowercase() || l.is_ascii_digit() {
                    buf.push(l);
                } else if !buf.is_empty() {
                    emit(buf);
                    buf.clear();
                }
            }
        }
    }
    if !buf.is_empty() {
        emit(buf);
    }
}

/// Whether `rouge_score`'s default tokenizer deletes letters or digits of `text` (Hangul,
/// for one): the score then ignores them, which is worth a warning.
pub fn default_tokenizer_deletes_text(text: &str) -> bool {
    text.chars().any(|c| {
        !c.is_ascii()
            && c.is_alphanumeric()
            && !c
                .to_lowercase()
                .any(|l| l.is_ascii_lowercase() || l.is_ascii_digit())
    })
}
