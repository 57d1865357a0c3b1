//! Script blocking: build a `suppress_tokens` list from the vocabulary so a model can only
//! write the scripts a user allows (e.g. `hangul,latin,digits,punct` keeps a Korean summary
//! free of Chinese, Japanese or Cyrillic). Every token's bytes are examined: complete
//! characters must all be allowed; a token ending in an incomplete UTF-8 sequence (byte-level
//! BPE splits Hangul syllables across tokens) is kept if some completion of its bytes could be
//! an allowed character, and a token made only of continuation bytes is kept (its script is
//! decided by the token before it). Whitespace and special tokens are never blocked.

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Script {
    Hangul,
    Latin,
    Digits,
    Punct,
    Han,
    Kana,
    Cyrillic,
    Greek,
    Emoji,
}

const ALL: [(&str, Script); 9] = [
    ("hangul", Script::Hangul),
    ("latin", Script::Latin),
    ("digits", Script::Digits),
    ("punct", Script::Punct),
    ("han", Script::Han),
    ("kana", Script::Kana),
    ("cyrillic", Script::Cyrillic),
    ("greek", Script::Greek),
    ("emoji", Script::Emoji),
];

/// Code point ranges of each script (inclusive).
fn ranges(s: Script) -> &'static [(u32, u32)] {
    match s {
        Script::Hangul => &[
            (0x1100, 0x11FF),
            (0x3130, 0x318F),
            (0xA960, 0xA97F),
            (0xAC00, 0xD7A3),
            (0xD7B0, 0xD7FF),
            (0xFFA0, 0xFFDC),
        ],
        Script::Latin => &[
            (0x41, 0x5A),
            (0x61, 0x7A),
            (0xC0, 0xD6),
            (0xD8, 0xF6),
            (0xF8, 0x24F),
            (0x1E00, 0x1EFF),
            (0xFF21, 0xFF3A),
            (0xFF41, 0xFF5A),
        ],
        Script::Digits => &[(0x30, 0x39), (0xFF10, 0xFF19)],
        Script::Punct => &[
            (0x21, 0x2F),
            (0x3A, 0x40),
            (0x5B, 0x60),
            (0x7B, 0x7E),
            (0xA1, 0xBF),
            (0xD7, 0xD7),
            (0xF7, 0xF7),
            (0x2010, 0x205E),
            (0x20A0, 0x20CF),
            (0x2100, 0x21FF),
            (0x2460, 0x24FF),
            (0x3000, 0x303F),
            (0xFF01, 0xFF0F),
            (0xFF1A, 0xFF20),
            (0xFF3B, 0xFF40),
            (0xFF5B, 0xFF65),
        ],
        Script::Han => &[
            (0x2E80, 0x2FDF),
            (0x3400, 0x4DBF),
            (0x4E00, 0x9FFF),
            (0xF900, 0xFAFF),
            (0x20000, 0x3134F),
        ],
        Script::Kana => &[(0x3040, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F)],
        Script::Cyrillic => &[(0x400, 0x52F)],
        Script::Greek => &[(0x370, 0x3FF)],
        Script::Emoji => &[
            (0x2600, 0x27BF),
            (0x1F000, 0x1FAFF),
            (0xFE0F, 0xFE0F),
            (0x200D, 0x200D),
        ],
    }
}

/// A set of allowed scripts, parsed from `hangul,latin,digits,punct`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptSet(pub Vec<Script>);

impl ScriptSet {
    pub fn parse(list: &str) -> Result<Self> {
        let mut v = Vec::new();
        for name in list
            .split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
        {
            let s = ALL
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, s)| *s)
                .ok_or_else(|| {
                    let names: Vec<&str> = ALL.iter().map(|(n, _)| *n).collect();
                    Error::Generation(format!(
                        "unknown script `{name}` (known: {})",
                        names.join(", ")
                    ))
                })?;
            v.push(s);
        }
        if v.is_empty() {
            return Err(Error::Generation(
                "--allow-scripts needs at least one script".into(),
            ));
        }
        Ok(ScriptSet(v))
    }

    /// Does any code point in [lo, hi] belong to an allowed script (or is it whitespace/control)?
    fn allows_range(&self, lo: u32, hi: u32) -> bool {
        if lo <= 0x20
            || (lo..=hi).contains(&0x20)
            || (0x2000..=0x200B).contains(&lo)
            || lo == 0x3000
        {
            return true;
        }
        self.0
            .iter()
            .any(|&s| ranges(s).iter().any(|&(a, b)| a <= hi && lo <= b))
    }

    pub fn allows_char(&self, c: char) -> bool {
        c.is_whitespace() || c.is_control() || self.allows_range(c as u32, c as u32)
    }

    /// Whether a token with these bytes may be generated.
    pub fn allows_bytes(&self, bytes: &[u8]) -> bool {
        let mut i = 0;
        // Leading continuation bytes finish a character started by an earlier token.
        while i < bytes.len() && (bytes[i] & 0xC0) == 0x80 {
            i += 1;
        }
        while i < bytes.len() {
            let b = bytes[i];
            let need = match b {
                0x00..=0x7F => 1,
                0xC2..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF4 => 4,
                _ => return false, // invalid lead byte
            };
            let avail = bytes.len() - i;
            if avail >= need {
                match core::str::from_utf8(&bytes[i..i + need])
                    .ok()
                    .and_then(|s| s.chars().next())
                {
                    Some(c) if self.allows_char(c) => i += need,
                    _ => return false,
                }
            } else {
                // Incomplete final character: the range of code points it could become.
                let mut lo: u32 = (b as u32) & (0x7F >> need);
                for &c in &bytes[i + 1..] {
                    if (c & 0xC0) != 0x80 {
                        return false;
                    }
                    lo = (lo << 6) | (c as u32 & 0x3F);
                }
                let missing = (need - avail) as u32;
                let hi = (lo << (6 * missing)) | ((1 << (6 * missing)) - 1);
                return self.allows_range(lo << (6 * missing), hi);
            }
        }
        true
    }
}

/// Ids of every non-special token of `tok` that writes a script outside `allow`.
pub fn blocked_tokens(tok: &Tokenizer, allow: &ScriptSet, vocab_size: usize) -> Vec<u32> {
    let special = tok.special_ids();
    (0..vocab_size as u32)
        .filter(|id| !special.contains(id))
        .filter(|&id| match tok.token_bytes(id) {
            Some(b) => !allow.allows_bytes(&b),
            None => false,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn korean_allowed_chinese_blocked() {
        let s = ScriptSet::parse("hangul,latin,digits,punct").unwrap();
        assert!(s.allows_bytes("요약: 11,500원 OK.".as_bytes()));
        assert!(!s.allows_bytes("中文".as_bytes()));
        assert!(!s.allows_bytes("привет".as_bytes()));
        assert!(!s.allows_bytes("カタ".as_bytes()));
        // '한' is ED 95 9C: its first two bytes can only become a Hangul syllable.
        assert!(s.allows_bytes(&[0xED, 0x95]));
        // 'は' (E3 81 AF) cut after E3 81: Hiragana, blocked; bare continuation bytes pass.
        assert!(!s.allows_bytes(&[0xE3, 0x81]));
        assert!(s.allows_bytes(&[0x9C]));
        assert!(ScriptSet::parse("hangul,klingon").is_err());
    }
}
