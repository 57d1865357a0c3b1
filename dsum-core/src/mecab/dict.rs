//! A compiled MeCab dictionary file (`sys.dic`, `unk.dic`), format version 102 as written by
//! mecab 0.996 / mecab-ko `mecab-dict-index`:
//!
//! ```text
//! header  (72 bytes)  magic (= file size ^ 0xef718f77), version, type, lexsize, lsize, rsize,
//!                     dsize, tsize, fsize, reserved (u32 each), charset (32 bytes, NUL padded)
//! trie    dsize bytes double-array units (see trie.rs)
//! tokens  tsize bytes 16-byte records: lcAttr u16, rcAttr u16, posid u16, wcost i16,
//!                     feature offset u32, compound u32
//! features fsize bytes NUL-terminated CSV strings
//! ```
//! A trie value packs `(first token index << 8) | token count`.

use std::string::String;
use std::vec::Vec;

use super::error::{read_u16, read_u32, MecabError};
use super::trie::{DoubleArray, TrieMatch};

const MAGIC: u32 = 0xef71_8f77;
pub(crate) const VERSION: u32 = 102;
const HEADER_LEN: usize = 4 * 10 + 32;
const TOKEN_LEN: usize = 16;

/// One dictionary entry: connection ids, part-of-speech id, word cost, feature string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    pub lc_attr: u16,
    pub rc_attr: u16,
    pub posid: u16,
    pub wcost: i16,
    pub feature: u32,
}

pub(crate) struct Dictionary {
    bytes: Vec<u8>,
    /// Byte ranges of the three sections inside `bytes`.
    trie: (usize, usize),
    tokens: (usize, usize),
    features: (usize, usize),
    pub lsize: u32,
    pub rsize: u32,
    pub kind: u32,
}

impl Dictionary {
    /// Validates the header and section sizes; `file` names the file in errors.
    pub(crate) fn parse(file: &str, bytes: Vec<u8>) -> Result<Self, MecabError> {
        let header = |i: usize| read_u32(&bytes, 4 * i);
        let Some(magic) = header(0) else {
            return Err(MecabError::truncated(file, HEADER_LEN as u64, bytes.len()));
        };
        if (magic ^ MAGIC) as u64 != bytes.len() as u64 {
            // MeCab checks `magic ^ id == file size`: a wrong magic and a truncated file look
            // the same to it. Tell them apart when the magic would fit a longer file.
            let claimed = (magic ^ MAGIC) as u64;
            if claimed > bytes.len() as u64 && claimed - (bytes.len() as u64) < 1 << 31 {
                if let Some(VERSION) = header(1) {
                    return Err(MecabError::truncated(file, claimed, bytes.len()));
                }
            }
            return Err(MecabError::BadMagic { file: file.into() });
        }
        if bytes.len() < HEADER_LEN {
            return Err(MecabError::truncated(file, HEADER_LEN as u64, bytes.len()));
        }
        let h = |i: usize| header(i).unwrap_or(0);
        let version = h(1);
        if version != VERSION {
            return Err(MecabError::Version {
                file: file.into(),
                found: version,
                expected: VERSION,
            });
        }
        let (kind, lsize, rsize) = (h(2), h(4), h(5));
        let (dsize, tsize, fsize) = (h(6) as usize, h(7) as usize, h(8) as usize);
        let needed = HEADER_LEN as u64 + dsize as u64 + tsize as u64 + fsize as u64;
        if needed != bytes.len() as u64 {
            return Err(MecabError::inconsistent(
                file,
                format!("section sizes ({dsize} + {tsize} + {fsize} bytes after the header) do not add up to the file size {}", bytes.len()),
            ));
        }
        if dsize % 8 != 0 || tsize % TOKEN_LEN != 0 {
            return Err(MecabError::inconsistent(
                file,
                "trie or token section size is not a whole number of records",
            ));
        }
        let trie = (HEADER_LEN, HEADER_LEN + dsize);
        let tokens = (trie.1, trie.1 + tsize);
        let features = (tokens.1, tokens.1 + fsize);
        Ok(Dictionary {
            bytes,
            trie,
            tokens,
            features,
            lsize,
            rsize,
            kind,
        })
    }

    pub(crate) fn trie(&self) -> DoubleArray<'_> {
        DoubleArray::new(&self.bytes[self.trie.0..self.trie.1])
    }

    pub(crate) fn token_count(&self) -> usize {
        (self.tokens.1 - self.tokens.0) / TOKEN_LEN
    }

    /// The token range a trie value points at, or `None` when it leaves the token table.
    pub(crate) fn token_range(&self, value: u32) -> Option<(usize, usize)> {
        let first = (value >> 8) as usize;
        let end = first + (value & 0xff) as usize;
        (end <= self.token_count()).then_some((first, end))
    }

    pub(crate) fn token(&self, i: usize) -> Option<Token> {
        let off = self.tokens.0 + i.checked_mul(TOKEN_LEN)?;
        if off + TOKEN_LEN > self.tokens.1 {
            return None;
        }
        let b = &self.bytes;
        Some(Token {
            lc_attr: read_u16(b, off)?,
            rc_attr: read_u16(b, off + 2)?,
            posid: read_u16(b, off + 4)?,
            wcost: read_u16(b, off + 6)? as i16,
            feature: read_u32(b, off + 8)?,
        })
    }

    /// The NUL-terminated feature string at `offset` (empty when out of range).
    pub(crate) fn feature(&self, offset: u32) -> &[u8] {
        let section = &self.bytes[self.features.0..self.features.1];
        let rest = section.get(offset as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    /// Checks that every token the trie can reach lies inside the token table and points at a
    /// feature inside the feature section, so lookups never need to fail later.
    pub(crate) fn validate_tokens(
        &self,
        file: &str,
        lsize: u32,
        rsize: u32,
    ) -> Result<(), MecabError> {
        let fsize = self.features.1 - self.features.0;
        for i in 0..self.token_count() {
            let Some(t) = self.token(i) else { break };
            if t.feature as usize >= fsize.max(1) {
                return Err(MecabError::inconsistent(
                    file,
                    format!(
                        "token {i}: feature offset {} is past the feature section ({fsize} bytes)",
                        t.feature
                    ),
                ));
            }
            if t.lc_attr as u32 >= rsize || t.rc_attr as u32 >= lsize {
                return Err(MecabError::inconsistent(
                    file,
                    format!(
                        "token {i}: context ids ({}, {}) out of the matrix ({lsize} x {rsize})",
                        t.lc_attr, t.rc_attr
                    ),
                ));
            }
        }
        Ok(())
    }

    /// All tokens stored for exactly `key` (used for the unknown-word categories).
    pub(crate) fn exact_tokens(&self, key: &[u8]) -> Option<(usize, usize)> {
        self.trie()
            .exact_match(key)
            .and_then(|v| self.token_range(v))
    }

    pub(crate) fn prefix_search(&self, key: &[u8], f: impl FnMut(TrieMatch)) {
        self.trie().common_prefix_search(key, f)
    }

    pub(crate) fn charset(&self) -> String {
        let raw = &self.bytes[40..HEADER_LEN];
        let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
        String::from_utf8_lossy(&raw[..end]).into_owned()
    }
}
